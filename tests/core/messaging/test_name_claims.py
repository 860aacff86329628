"""Name claims: a node's own signed name, checked only under its member's key."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import BadSignature, ProtocolError
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.frames import FRAME_NAME_CLAIMS, frame_kind
from kai_mesh.core.messaging.name_claims import (
    MAX_CLAIMS,
    NameClaim,
    claim_name,
    decode_claims,
    encode_claims,
)

MESH = b"m" * 32
A = NodeSecrets.generate(os.urandom)
B = NodeSecrets.generate(os.urandom)


def test_a_claim_round_trips_and_verifies_under_its_own_key_only() -> None:
    claim = claim_name(A, "gateway-1", MESH)
    frame = encode_claims([claim])
    assert frame_kind(frame) == FRAME_NAME_CLAIMS
    assert len(frame) == 1 + 1 + 1 + (2 + 16) + (1 + 9) + (2 + 64)  # 97 bytes, a 9-char name
    (back,) = decode_claims(frame)
    assert back == claim
    back.check(MESH, A.verify_key)
    with pytest.raises(BadSignature):
        back.check(MESH, B.verify_key)  # not this node id's key
    with pytest.raises(BadSignature):
        back.check(b"o" * 32, A.verify_key)  # another mesh


def test_a_claim_for_another_node_or_renamed_does_not_verify() -> None:
    theirs = claim_name(B, "b", MESH)
    renamed = NameClaim(theirs.node_id, "mallory", theirs.signature)
    with pytest.raises(BadSignature):
        renamed.check(MESH, B.verify_key)
    made_by_a = NameClaim(B.node_id, "b", A.sign("node-name", MESH, theirs.body()))
    with pytest.raises(BadSignature):
        made_by_a.check(MESH, B.verify_key)


def test_frames_hold_at_most_max_claims_and_a_name_an_address_can_hold() -> None:
    claim = claim_name(A, "a", MESH)
    with pytest.raises(ValueError, match="1 to 16"):
        encode_claims([claim] * (MAX_CLAIMS + 1))
    too_many = encode_claims([claim] * MAX_CLAIMS)[:1] + bytes([0xDC, 0, MAX_CLAIMS + 1])
    with pytest.raises(ProtocolError):
        decode_claims(too_many + b"\x90" * (MAX_CLAIMS + 1))
    bad = encode_claims([NameClaim(A.node_id, "BAD NAME", claim.signature)])
    with pytest.raises(ProtocolError, match="invalid node name"):
        decode_claims(bad)


@given(st.binary(max_size=600))
def test_decoding_garbage_raises_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_claims(bytes([FRAME_NAME_CLAIMS]) + data)
