"""NIP-44 v2 against every official vector (tests/core/nostr/nip44.vectors.json, copied from
../shared), valid and invalid, plus properties the vectors do not pin down."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import UsageError
from kai_mesh.core.nostr import nip44
from kai_mesh.core.nostr.nip44 import Nip44Error

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "nip44.vectors.json").read_text(encoding="utf-8")
)["v2"]
VALID, INVALID = VECTORS["valid"], VECTORS["invalid"]


def xonly(secret_hex: str) -> bytes:
    return bytes(PrivateKey(bytes.fromhex(secret_hex)).public_key_xonly.format())


@pytest.mark.parametrize("v", VALID["get_conversation_key"], ids=lambda v: v["sec1"][:8])
def test_conversation_key(v: dict[str, str]) -> None:
    key = nip44.conversation_key(bytes.fromhex(v["sec1"]), bytes.fromhex(v["pub2"]))
    assert key.hex() == v["conversation_key"]


def test_message_keys() -> None:
    conv = bytes.fromhex(VALID["get_message_keys"]["conversation_key"])
    keys = VALID["get_message_keys"]["keys"]
    assert keys
    for v in keys:
        chacha_key, chacha_nonce, hmac_key = nip44.message_keys(conv, bytes.fromhex(v["nonce"]))
        assert (chacha_key.hex(), chacha_nonce.hex(), hmac_key.hex()) == (
            v["chacha_key"],
            v["chacha_nonce"],
            v["hmac_key"],
        )


@pytest.mark.parametrize(("length", "padded"), VALID["calc_padded_len"])
def test_calc_padded_len(length: int, padded: int) -> None:
    assert nip44.calc_padded_len(length) == padded


@pytest.mark.parametrize("v", VALID["encrypt_decrypt"], ids=lambda v: v["sec1"][-8:])
def test_encrypt_decrypt(v: dict[str, str]) -> None:
    sec1, sec2 = bytes.fromhex(v["sec1"]), bytes.fromhex(v["sec2"])
    conv = nip44.conversation_key(sec1, xonly(v["sec2"]))
    assert conv.hex() == v["conversation_key"]
    assert nip44.conversation_key(sec2, xonly(v["sec1"])) == conv  # symmetric
    plaintext = v["plaintext"].encode("utf-8")
    payload = nip44.encrypt(plaintext, conv, bytes.fromhex(v["nonce"]))
    assert payload == v["payload"]
    assert nip44.decrypt(payload, conv) == plaintext


@pytest.mark.parametrize("v", VALID["encrypt_decrypt_long_msg"], ids=lambda v: v["note"][:8])
def test_long_message(v: dict[str, Any]) -> None:
    """The vector is "ф" × 65535 = 131,070 bytes (past the classic 65,535 bound, with an empty
    checksum): under the classic bound it is refused; with the 2026 extension it round-trips
    (and tests/interop checks the exact payload against nostr-tools)."""
    conv, nonce = bytes.fromhex(v["conversation_key"]), bytes.fromhex(v["nonce"])
    plaintext = (v["letter"] * v["repeat"]).encode("utf-8")
    if v["payload_checksum_sha256"]:
        payload = nip44.encrypt(plaintext, conv, nonce, max_plaintext=len(plaintext))
        digest = hashlib.sha256(payload.encode()).hexdigest()
        assert digest == v["payload_checksum_sha256"]
    if len(plaintext) > nip44.MAX_PLAINTEXT:
        with pytest.raises(UsageError):
            nip44.encrypt(plaintext, conv, nonce)
    payload = nip44.encrypt(plaintext, conv, nonce, max_plaintext=len(plaintext))
    assert nip44.decrypt(payload, conv, max_plaintext=len(plaintext)) == plaintext
    if len(plaintext) > nip44.MAX_PLAINTEXT:
        with pytest.raises(Nip44Error):
            nip44.decrypt(payload, conv)  # the classic bound refuses the extended prefix


@pytest.mark.parametrize("length", INVALID["encrypt_msg_lengths"])
def test_encrypt_refuses_lengths(length: int) -> None:
    with pytest.raises(UsageError):
        nip44.encrypt(b"a" * length, bytes(32), bytes(32))


@pytest.mark.parametrize("length", INVALID["decrypt_msg_lengths"])
def test_decrypt_refuses_lengths(length: int) -> None:
    payload = base64.b64encode(b"\x02" * length).decode()
    with pytest.raises(Nip44Error):
        nip44.decrypt(payload, bytes(32))
    with pytest.raises(Nip44Error):
        nip44.decrypt("A" * length, bytes(32))


@pytest.mark.parametrize("v", INVALID["get_conversation_key"], ids=lambda v: v["note"])
def test_conversation_key_refused(v: dict[str, str]) -> None:
    with pytest.raises((UsageError, Nip44Error)):
        nip44.conversation_key(bytes.fromhex(v["sec1"]), bytes.fromhex(v["pub2"]))


@pytest.mark.parametrize("v", INVALID["decrypt"], ids=lambda v: v["note"])
def test_decrypt_refused(v: dict[str, str]) -> None:
    with pytest.raises(Nip44Error) as info:
        nip44.decrypt(v["payload"], bytes.fromhex(v["conversation_key"]))
    assert str(info.value).startswith(v["note"])


def test_every_section_is_exercised() -> None:
    """A new section in a refreshed vectors file must get a test, not be silently skipped."""
    assert set(VALID) == {
        "get_conversation_key",
        "get_message_keys",
        "calc_padded_len",
        "encrypt_decrypt",
        "encrypt_decrypt_long_msg",
    }
    assert set(INVALID) == {
        "encrypt_msg_lengths",
        "decrypt_msg_lengths",
        "get_conversation_key",
        "decrypt",
    }


@given(st.binary(min_size=1, max_size=2000), st.binary(min_size=32, max_size=32))
def test_round_trip(plaintext: bytes, nonce: bytes) -> None:
    conv = bytes(range(32))
    assert nip44.decrypt(nip44.encrypt(plaintext, conv, nonce), conv) == plaintext


@given(st.binary(min_size=1, max_size=300), st.integers(min_value=0), st.integers(0, 7))
def test_any_flipped_bit_is_refused(plaintext: bytes, where: int, bit: int) -> None:
    conv = bytes(range(32))
    data = bytearray(base64.b64decode(nip44.encrypt(plaintext, conv, bytes(32))))
    data[where % len(data)] ^= 1 << bit
    with pytest.raises(Nip44Error):
        nip44.decrypt(base64.b64encode(data).decode(), conv)


@given(st.text(max_size=300))
def test_garbage_is_refused_not_crashed(payload: str) -> None:
    with pytest.raises(Nip44Error):
        nip44.decrypt(payload, bytes(32))
