"""kai-mesh's Nostr events and NIP-44 payloads against the real `nostr-tools` npm package, both
ways (tests/interop/nostr_check.mjs): nostr-tools verifies our events and decrypts our payloads,
and we verify and decrypt what it makes.

Needs `node` and `npm ci --prefix tests/interop`; skips without them, and fails instead when CI
sets KAI_MESH_REQUIRE_PRIVILEGED_TESTS=1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kai_mesh.core.nostr import nip44
from kai_mesh.core.nostr.event import parse_event, public_key, sign_event, verify_event
from tests.conftest import skip_unless_privileged

HERE = Path(__file__).parent
SCRIPT = HERE / "nostr_check.mjs"
VECTORS = HERE.parent / "core" / "nostr" / "nip44.vectors.json"

ALICE = bytes.fromhex("7f" * 32)
BOB = bytes.fromhex("5a" * 32)
CONTENTS = [
    "a",
    "héllo, wörld",
    'quotes " and \\ backslash, newline\n, tab\t, control \x01\x1f, DEL \x7f',
    "emoji 😀 and U+2028 \u2028 U+2029 \u2029",
    "x" * 5000,
    "ф" * 30000,  # 60,000 UTF-8 bytes: near the classic bound
]


@pytest.fixture
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        skip_unless_privileged("the Nostr interop tests need `node` (Node.js) on PATH")
    if not (HERE / "node_modules" / "nostr-tools" / "package.json").is_file():
        skip_unless_privileged("the Nostr interop tests need `npm ci --prefix tests/interop`")
    assert exe is not None
    return exe


def run(node: str, mode: str, job: dict[str, Any], tmp_path: Path) -> Any:
    file = tmp_path / f"{mode}.json"
    file.write_text(json.dumps(job), encoding="utf-8")
    done = subprocess.run(
        [node, str(SCRIPT), mode, str(file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_nostr_tools_accepts_ours(node: str, tmp_path: Path) -> None:
    bob_pub = bytes.fromhex(public_key(BOB))
    conv = nip44.conversation_key(ALICE, bob_pub)
    events, ciphers = [], []
    for i, text in enumerate(CONTENTS):
        payload = nip44.encrypt(text.encode(), conv, bytes([i + 1]) * 32)
        event = sign_event(
            ALICE,
            created_at=1_700_000_000 + i,
            kind=21059,
            tags=[["p", bob_pub.hex()], ["expiration", str(1_700_000_600 + i)]],
            content=text if i % 2 else payload,
            aux=bytes([i]) * 32,
        )
        events.append(event.to_json())
        ciphers.append({"sec": BOB.hex(), "pub": public_key(ALICE), "payload": payload})
    # A forged one must be refused by nostr-tools too, or the check proves nothing.
    events.append(dict(events[0], content=events[0]["content"] + "!"))
    long = json.loads(VECTORS.read_text())["v2"]["valid"]["encrypt_decrypt_long_msg"][0]
    out = run(node, "check", {"events": events, "ciphers": ciphers, "long": long}, tmp_path)
    assert [e["valid"] for e in out["events"]] == [True] * len(CONTENTS) + [False]
    assert [e["hash"] for e in out["events"][:-1]] == [e["id"] for e in events[:-1]]
    assert out["plaintexts"] == CONTENTS
    # The long-message vector has no checksum: nostr-tools' payload is the reference.
    plaintext = (long["letter"] * long["repeat"]).encode()
    ours = nip44.encrypt(
        plaintext,
        bytes.fromhex(long["conversation_key"]),
        bytes.fromhex(long["nonce"]),
        max_plaintext=len(plaintext),
    )
    assert ours == out["long_payload"]


def test_we_accept_nostr_tools(node: str, tmp_path: Path) -> None:
    bob_pub = public_key(BOB)
    out = run(
        node, "make", {"sec": ALICE.hex(), "peer_pub": bob_pub, "contents": CONTENTS}, tmp_path
    )
    conv = nip44.conversation_key(BOB, bytes.fromhex(public_key(ALICE)))
    for obj, text in zip(out["events"], CONTENTS, strict=True):
        event = parse_event(obj, kinds=range(20000, 30000))
        verify_event(event)
        assert event.content == text
        assert event.pubkey == public_key(ALICE)
    assert [nip44.decrypt(p, conv).decode() for p in out["ciphers"]] == CONTENTS


def test_gift_wraps_both_ways(node: str, tmp_path: Path) -> None:
    """NIP-59: nostr-tools unwraps our gift wraps (sender and rumor intact), we unwrap its."""
    import os

    from kai_mesh.core.nostr.giftwrap import unwrap, wrap

    bob_pub, alice_pub = public_key(BOB), public_key(ALICE)
    ours = [
        wrap(
            sender_secret=ALICE,
            recipient=bob_pub,
            kind=14,
            tags=[["m", "mesh"]],
            content=text,
            now=1_700_000_000,
            randbytes=os.urandom,
        )
        for text in CONTENTS[:4]
    ]
    job = {
        "wraps": [w.to_json() for w in ours],
        "recipient_sec": BOB.hex(),
        "contents": CONTENTS[:4],
        "sender_sec": BOB.hex(),
        "our_pub": alice_pub,
    }
    out = run(node, "giftwrap", job, tmp_path)
    assert [u["pubkey"] for u in out["unwrapped"]] == [alice_pub] * 4
    assert [u["content"] for u in out["unwrapped"]] == CONTENTS[:4]
    assert all(u["kind"] == 14 and u["tags"] == [["m", "mesh"]] for u in out["unwrapped"])
    for text, theirs in zip(CONTENTS[:4], out["wraps"], strict=True):
        event = parse_event(theirs)
        verify_event(event)
        sender, rumor = unwrap(event, ALICE)
        assert sender == bob_pub and rumor.content == text and rumor.kind == 14
