"""What a hostile relay can hand a NostrTransport, fed straight into its receive path (the same
call a relay's read loop makes): nothing forged, replayed, foreign or undecryptable becomes a
`MessageReceived`, and each refusal is counted by its reason."""

from __future__ import annotations

import os
from typing import Any

import trio

from kai_mesh.core.codec import pack
from kai_mesh.core.nostr import chunks, nip44
from kai_mesh.core.nostr.event import Event, sign_event
from tests.transports.nostr.conftest import MESH, member, trusted
from transports.base import MessageReceived, PeerSeen
from transports.nostr import KIND_FRAME, KIND_HELLO, NostrTransport
from transports.nostr.transport import (
    HELD_FRAMES,
    KIND_CHUNK,
    KIND_DIGESTS,
    hello_key,
    mesh_tag,
)

A, B, OUTSIDER = member(1), member(2), member(3)
NOW = 1_800_000_000


def make(m: Any, keys: dict[bytes, bytes], mesh: bytes = MESH) -> NostrTransport:
    return NostrTransport(
        relays=[],
        nostr_secret=m.secrets.nostr_secret,
        mesh_id=mesh,
        node_id=m.node_id,
        member=m.record,
        trusted_keys=keys,
        clock=lambda: NOW,
    )


def hello(m: Any, mesh: bytes = MESH, *, pubkey_of: Any = None, created: int = NOW) -> Event:
    signer = pubkey_of or m
    content = nip44.encrypt(m.record.to_bytes(), hello_key(mesh), os.urandom(32))
    tags = [["m", mesh_tag(mesh)], ["expiration", str(created + 600)]]
    return sign_event(
        signer.secrets.nostr_secret,
        created_at=created,
        kind=KIND_HELLO,
        tags=tags,
        content=content,
        aux=bytes(32),
    )


def frame(sender: Any, to: Any, data: bytes, **over: Any) -> Event:
    conv = nip44.conversation_key(sender.secrets.nostr_secret, to.record.nostr_public)
    tags = over.pop(
        "tags",
        [
            ["p", to.record.nostr_public.hex()],
            ["m", mesh_tag(MESH)],
            ["expiration", str(over.pop("expires", NOW + 60))],
        ],
    )
    content = over.pop("content", None) or nip44.encrypt(data, conv, os.urandom(32))
    return sign_event(
        sender.secrets.nostr_secret,
        created_at=NOW,
        kind=over.pop("kind", KIND_FRAME),
        tags=tags,
        content=content,
        aux=bytes(32),
    )


def feed(t: NostrTransport, event: Event | dict[str, Any]) -> None:
    obj = event.to_json() if isinstance(event, Event) else event
    t._on_event(None, "kai-in", obj)  # type: ignore[arg-type]


def drain(t: NostrTransport) -> list[Any]:
    out = []
    while True:
        try:
            out.append(t.events.receive_nowait())
        except trio.WouldBlock:
            return out


async def test_hostile_input_is_refused_and_counted() -> None:
    tb = make(B, trusted(A, B))
    # Before a's hello: a's frame is held, not delivered.
    early = frame(A, B, b"early")
    feed(tb, early)
    assert drain(tb) == []
    # a's hello binds a, releases the held frame.
    feed(tb, hello(A))
    got = drain(tb)
    assert [type(e) for e in got] == [PeerSeen, MessageReceived]
    assert got[1].node_id == A.node_id and got[1].data == b"early"

    good = frame(A, B, b"good")
    feed(tb, good)
    feed(tb, good)  # replayed by the relay, or from a second relay
    tampered = dict(frame(A, B, b"x").to_json(), content=good.content)
    feed(tb, tampered)
    bad_sig = frame(A, B, b"y").to_json()
    bad_sig["sig"] = bad_sig["sig"][:-2] + ("00" if bad_sig["sig"][-2:] != "00" else "11")
    feed(tb, bad_sig)
    feed(tb, frame(A, B, b"late", expires=NOW - 1))
    feed(
        tb,
        frame(A, B, b"forever", tags=[["p", B.record.nostr_public.hex()], ["m", mesh_tag(MESH)]]),
    )
    feed(
        tb, frame(A, B, b"other", tags=[["p", B.record.nostr_public.hex()], ["m", mesh_tag(b"x")]])
    )
    feed(tb, frame(A, OUTSIDER, b"not mine"))
    feed(tb, frame(A, B, b"", content="A" * 200))  # undecryptable
    feed(tb, frame(A, B, b"k", kind=1))
    feed(tb, {"id": "zz"})
    # Hellos: an outsider (a valid record, an untrusted key), another mesh's, a record signed
    # off by someone else's Nostr key.
    feed(tb, hello(OUTSIDER))
    feed(tb, hello(A, b"another mesh".ljust(32, b"\0")))
    feed(tb, hello(A, pubkey_of=OUTSIDER))
    got = drain(tb)
    assert [(type(e), getattr(e, "data", None)) for e in got] == [(MessageReceived, b"good")]
    c = tb.counters()
    expected = {
        "duplicate": 1,
        "bad_id": 1,
        "bad_signature": 1,
        "expired": 1,
        "other_mesh": 2,
        "not_for_us": 1,
        "undecryptable": 1,
        "wrong_kind": 1,
        "malformed": 2,
        "untrusted": 1,
        "key_mismatch": 1,
    }
    assert {k: c.get(k, 0) for k in expected} == expected


async def test_the_held_frames_are_bounded() -> None:
    tb = make(B, trusted(A, B))
    for i in range(HELD_FRAMES + 10):
        feed(tb, frame(A, B, i.to_bytes(4, "big")))
    assert tb.counters()["unknown_key"] == 10
    feed(tb, hello(A))
    assert len([e for e in drain(tb) if isinstance(e, MessageReceived)]) == HELD_FRAMES


async def test_chunks_reordered_duplicated_or_forged_give_one_payload_or_nothing() -> None:
    tb = make(B, trusted(A, B))
    feed(tb, hello(A))
    drain(tb)
    data = bytes(range(256)) * 20
    pieces = [frame(A, B, p, kind=KIND_CHUNK) for p in chunks.split(data, 1000)]
    for event in [*reversed(pieces), pieces[0], pieces[3]]:  # reordered, replayed
        feed(tb, event)
    # A chunk whose bytes are not a chunk; a whole set joined from two payloads.
    feed(tb, frame(A, B, b"short", kind=KIND_CHUNK))
    # Pieces of another payload under this payload's digest (a member's bug, or a forgery):
    # the join does not hash to the digest it claims.
    real = chunks.split(data, 1000)
    other = chunks.split(b"q" * len(data), 1000)
    forged = [
        r[: chunks.HEADER_BYTES] + o[chunks.HEADER_BYTES :]
        for r, o in zip(real, other, strict=True)
    ]
    for plaintext in forged:
        feed(tb, frame(A, B, plaintext, kind=KIND_CHUNK))
    got = [e for e in drain(tb) if isinstance(e, MessageReceived)]
    assert [e.data for e in got] == [data]
    c = tb.counters()
    assert c["duplicate"] == 2 and c["bad_chunk"] == 1 and c["chunk_mismatch"] == 1


def digests_event(m: Any, body: bytes, mesh: bytes = MESH) -> Event:
    content = nip44.encrypt(body, hello_key(mesh), os.urandom(32))
    tags = [["m", mesh_tag(mesh)], ["expiration", str(NOW + 60)]]
    return sign_event(
        m.secrets.nostr_secret,
        created_at=NOW,
        kind=KIND_DIGESTS,
        tags=tags,
        content=content,
        aux=bytes(32),
    )


async def test_digests_are_heard_only_from_bound_members_and_well_formed() -> None:
    tb = make(B, trusted(A, B))
    heard: list[tuple[bytes, dict[int, bytes]]] = []
    tb.set_sync_digests(dict, lambda node_id, d: heard.append((node_id, d)))
    good = pack({1: b"s" * 8, 2: b"g" * 8})
    feed(tb, digests_event(A, good))  # before a's hello: not bound
    feed(tb, hello(A))
    feed(tb, digests_event(A, good))
    feed(tb, digests_event(A, pack({1: "text"})))
    feed(tb, digests_event(A, pack(list(range(3)))))
    feed(tb, digests_event(A, good, b"another mesh".ljust(32, b"\0")))
    feed(tb, digests_event(OUTSIDER, good))
    assert heard == [(A.node_id, {1: b"s" * 8, 2: b"g" * 8})]
    c = tb.counters()
    assert (c["unknown_key"], c["malformed"], c["other_mesh"]) == (2, 2, 1)
