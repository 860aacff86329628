"""The genesis: mesh id, quorum rule, admin signatures, and hostile bytes."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import BadSignature, Malformed, ProtocolError
from kai_mesh.core.mesh.genesis import DEFAULT_POLICY, Genesis, check_quorum
from kai_mesh.core.mesh.identity import NodeSecrets
from tests.core.strategies import secrets_from_seed

NONCE = bytes(range(16))
ADMINS = [secrets_from_seed(100 + i) for i in range(3)]


def _unsigned(admins: list[NodeSecrets], threshold: int, nonce: bytes = NONCE) -> Genesis:
    keys = tuple(a.verify_key for a in admins)
    return Genesis("lab", keys, threshold, nonce, dict(DEFAULT_POLICY), keys)


def _signed(admins: list[NodeSecrets], threshold: int, signers: list[NodeSecrets]) -> Genesis:
    genesis = _unsigned(admins, threshold)
    for signer in signers:
        genesis = genesis.signed_by(signer)
    return genesis


@pytest.fixture(scope="module")
def one() -> Genesis:
    return Genesis.of_one(ADMINS[0], "home", NONCE)


def test_of_one_checks(one: Genesis) -> None:
    one.check()
    assert one.admins == (ADMINS[0].verify_key,)
    assert one.threshold == 1
    assert one.trusted_nodes == (ADMINS[0].verify_key,)
    assert len(one.mesh_id) == 32


def test_round_trip_preserves_mesh_id(one: Genesis) -> None:
    again = Genesis.from_bytes(one.to_bytes())
    assert again == one
    assert again.mesh_id == one.mesh_id
    again.check()


def test_a_different_nonce_is_a_different_mesh() -> None:
    a = Genesis.of_one(ADMINS[0], "home", NONCE)
    b = Genesis.of_one(ADMINS[0], "home", bytes(16))
    assert a.mesh_id != b.mesh_id


def test_signatures_do_not_change_the_mesh_id() -> None:
    assert _unsigned(ADMINS, 2).mesh_id == _signed(ADMINS, 2, ADMINS[:2]).mesh_id


@pytest.mark.parametrize(
    ("admins", "threshold", "ok"),
    [
        (1, 1, True),
        (1, 0, False),
        (1, 2, False),
        (2, 1, False),
        (2, 2, True),
        (3, 1, False),
        (3, 2, True),
        (3, 3, True),
        (3, 4, False),
        (4, 2, False),
        (4, 3, True),
        (0, 0, False),
    ],
)
def test_quorum_rule(admins: int, threshold: int, ok: bool) -> None:
    if ok:
        check_quorum(admins, threshold)
    else:
        with pytest.raises(Malformed):
            check_quorum(admins, threshold)


def test_two_admins_threshold_one_is_refused() -> None:
    with pytest.raises(Malformed, match="majority"):
        _unsigned(ADMINS[:2], 1)


def test_three_admins_threshold_two_checks() -> None:
    _signed(ADMINS, 2, ADMINS[:2]).check()
    _signed(ADMINS, 2, ADMINS[1:]).check()
    _signed(ADMINS, 2, ADMINS).check()


@pytest.mark.parametrize("threshold", [0, 4, -1])
def test_threshold_outside_one_to_n_is_refused(threshold: int) -> None:
    with pytest.raises(Malformed):
        _unsigned(ADMINS, threshold)


def test_duplicate_admin_is_refused() -> None:
    key = ADMINS[0].verify_key
    with pytest.raises(Malformed):
        Genesis("lab", (key, key), 1, NONCE, {}, ())


def test_too_few_signatures_fail() -> None:
    with pytest.raises(BadSignature, match="needs 2"):
        _signed(ADMINS, 2, ADMINS[:1]).check()
    with pytest.raises(BadSignature):
        _unsigned(ADMINS, 2).check()


def test_signing_twice_counts_once() -> None:
    with pytest.raises(BadSignature):
        _signed(ADMINS, 2, [ADMINS[0], ADMINS[0]]).check()


def test_a_non_admin_cannot_sign() -> None:
    with pytest.raises(Malformed):
        _unsigned(ADMINS, 2).signed_by(secrets_from_seed(999))


def test_a_signature_by_a_non_admin_fails_check() -> None:
    outsider = secrets_from_seed(999)
    genesis = _signed(ADMINS, 2, ADMINS[:2])
    sigs = dict(genesis.signatures)
    sigs[outsider.verify_key] = outsider.sign(Genesis.KIND, genesis.mesh_id, b"")
    with pytest.raises(BadSignature, match="not an admin"):
        dataclasses.replace(genesis, signatures=sigs).check()


def test_a_forged_admin_signature_fails_check() -> None:
    genesis = _signed(ADMINS, 2, ADMINS[:2])
    sigs = dict(genesis.signatures)
    key = ADMINS[1].verify_key
    sigs[key] = bytes([sigs[key][0] ^ 1]) + sigs[key][1:]
    with pytest.raises(BadSignature):
        dataclasses.replace(genesis, signatures=sigs).check()


def test_a_signature_for_another_genesis_fails_check() -> None:
    other = Genesis.of_one(ADMINS[0], "home", bytes(16))
    mine = Genesis.of_one(ADMINS[0], "home", NONCE)
    swapped = dataclasses.replace(mine, signatures=dict(other.signatures))
    with pytest.raises(BadSignature):
        swapped.check()


def test_wrong_length_nonce_and_keys_are_refused() -> None:
    key = ADMINS[0].verify_key
    with pytest.raises(Malformed):
        Genesis("lab", (key,), 1, bytes(15), {}, ())
    with pytest.raises(Malformed):
        Genesis("lab", (key,), 1, NONCE, {}, (bytes(31),))


def test_from_bytes_refuses_a_bad_mesh_name(one: Genesis) -> None:
    data = one.to_bytes().replace(b"\xa4home", b"\xa4Home")
    with pytest.raises(Malformed):
        Genesis.from_bytes(data)


@given(st.binary(max_size=500))
def test_garbage_raises_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        Genesis.from_bytes(data)


@given(st.binary(max_size=500))
def test_garbage_after_the_format_byte_raises_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        Genesis.from_bytes(b"\x01" + data)


@given(st.data())
def test_mutations_raise_only_protocol_errors(data: st.DataObject) -> None:
    encoded = bytearray(_signed(ADMINS, 2, ADMINS[:2]).to_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(ProtocolError):
        Genesis.from_bytes(bytes(encoded)).check()
