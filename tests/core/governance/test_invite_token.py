"""Invite tokens: what `encode_token` makes decodes to the same invite; anything else is a
`BadToken` (never another exception), however it was damaged."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kai_mesh.core.codec import pack
from kai_mesh.core.errors import ProtocolError
from kai_mesh.core.governance.invite_token import PREFIX, BadToken, decode_token, encode_token
from kai_mesh.core.governance.wire import InviteSecret
from kai_mesh.core.mesh.genesis import Genesis
from kai_mesh.core.mesh.identity import NodeSecrets

ADMIN = NodeSecrets.generate(os.urandom)
GENESIS = Genesis.of_one(ADMIN, "team", os.urandom(16))
SEED = bytes(range(32))
TOKEN = encode_token(GENESIS, SEED, ["10.0.0.1:4242", "[fd00::1]:4242"])


def test_a_token_round_trips() -> None:
    token = decode_token(f"  {TOKEN}\n")
    assert token.genesis.mesh_id == GENESIS.mesh_id and token.seed == SEED
    assert token.tcp == ("10.0.0.1:4242", "[fd00::1]:4242") and token.relays == ()
    assert token.invite_key == InviteSecret(SEED).verify_key
    assert TOKEN.startswith(PREFIX) and "=" not in TOKEN and "\n" not in TOKEN


def test_clear_errors() -> None:
    cases = {
        "": "starts with",
        "kaimesh2:abcd": "starts with",
        PREFIX + "!!!!": "base64",
        PREFIX + TOKEN[len(PREFIX) : -10]: "damaged",
        TOKEN[:60] + ("A" if TOKEN[60] != "A" else "B") + TOKEN[61:]: "checksum",
    }
    for text, needle in cases.items():
        with pytest.raises(BadToken, match=needle):
            decode_token(text)


def test_a_genesis_that_does_not_verify_is_refused() -> None:
    unsigned = Genesis("team", GENESIS.admins, 1, os.urandom(16), {}, GENESIS.trusted_nodes)
    raw = pack([1, unsigned.to_bytes(), SEED, {"relays": [], "tcp": []}])
    raw += hashlib.sha256(b"kaimesh-invite" + raw).digest()[:4]
    text = PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    with pytest.raises(BadToken, match="does not verify"):
        decode_token(text)
    with pytest.raises(BadToken):
        encode_token(GENESIS, SEED, ["no-port"])


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_bad_token(data: bytes) -> None:
    text = PREFIX + base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    with pytest.raises(ProtocolError):
        decode_token(text)


@settings(max_examples=300)
@given(st.data())
def test_mutated_tokens_raise_only_bad_token_or_decode(data: st.DataObject) -> None:
    raw = bytearray(base64.urlsafe_b64decode(TOKEN[len(PREFIX) :] + "=="))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    text = PREFIX + base64.urlsafe_b64encode(bytes(raw[:cut])).rstrip(b"=").decode()
    try:
        token = decode_token(text)
    except BadToken:
        return
    assert token == decode_token(TOKEN)  # only an unchanged token decodes


@given(st.text(max_size=200))
def test_any_text_raises_only_bad_token(text: str) -> None:
    with pytest.raises(BadToken):
        decode_token(text)


def test_a_token_carries_relay_markers() -> None:
    relays = ["wss://both", "wss://out", "wss://in"]
    markers = {"wss://out": "write", "wss://in": "read"}
    token = decode_token(encode_token(GENESIS, SEED, [], relays, markers))
    assert token.relays == tuple(relays) and dict(token.markers) == markers
    plain = decode_token(encode_token(GENESIS, SEED, [], ["wss://a"]))
    assert plain.relays == ("wss://a",) and dict(plain.markers) == {}


@pytest.mark.parametrize(
    "item", [["wss://a", "both"], ["wss://a"], ["wss://a", "read", "x"], [1, "read"]]
)
def test_a_bad_relay_marker_in_a_token_is_refused(item: list[object]) -> None:
    raw = pack([1, GENESIS.to_bytes(), SEED, {"relays": [item], "tcp": []}])
    raw += hashlib.sha256(b"kaimesh-invite" + raw).digest()[:4]
    text = PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    with pytest.raises(BadToken, match="damaged"):
        decode_token(text)
