"""Node keys, domain-separated signatures and the member record."""

from __future__ import annotations

import contextlib
import hashlib
import random

import pytest
import RNS
from coincurve import PublicKeyXOnly
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import AddressError, BadSignature, Malformed, ProtocolError
from kai_mesh.core.mesh.identity import (
    MemberRecord,
    NodeSecrets,
    node_id_of,
    signing_input,
    verify,
)
from tests.core.strategies import secrets_from_seed

MESH = bytes(range(32))
OTHER_MESH = bytes(32)


@pytest.fixture(scope="module")
def secrets() -> NodeSecrets:
    return secrets_from_seed(1)


@pytest.fixture(scope="module")
def record(secrets: NodeSecrets) -> MemberRecord:
    return MemberRecord.create(secrets, "pi1", MESH)


def test_generate_is_deterministic_in_its_random_bytes() -> None:
    a = NodeSecrets.generate(random.Random(7).randbytes)
    b = NodeSecrets.generate(random.Random(7).randbytes)
    c = NodeSecrets.generate(random.Random(8).randbytes)
    assert a == b
    assert a.node_id == b.node_id
    assert a.node_id != c.node_id


def test_generate_draws_again_for_an_invalid_nostr_key() -> None:
    draws = iter([b"\xff" * 32, bytes(32), b"\x01" * 32, b"\x02" * 32, b"\x03" * 64])
    secrets = NodeSecrets.generate(lambda n: next(draws))
    assert secrets.nostr_secret == b"\x01" * 32
    assert secrets.ed25519_seed == b"\x02" * 32


def test_secrets_round_trip(secrets: NodeSecrets) -> None:
    again = NodeSecrets.from_bytes(secrets.to_bytes())
    assert again == secrets
    assert again.node_id == secrets.node_id
    assert again.verify_key == secrets.verify_key


def test_node_id_is_a_16_byte_hash_of_the_verify_key(secrets: NodeSecrets) -> None:
    assert len(secrets.node_id) == 16
    assert secrets.node_id == node_id_of(secrets.verify_key)
    assert secrets.node_id == secrets_from_seed(1).node_id


@pytest.mark.parametrize(
    "args",
    [
        (bytes(31), bytes(64), b"\x01" * 32),
        (bytes(32), bytes(63), b"\x01" * 32),
        (bytes(32), bytes(64), bytes(32)),
        (bytes(32), bytes(64), b"\xff" * 32),
        (bytes(32), bytes(64), b"\x01" * 31),
        (bytes(32), bytes(64), b"\x00" + b"\x01" * 32),
    ],
)
def test_secrets_of_the_wrong_shape_are_refused(args: tuple[bytes, bytes, bytes]) -> None:
    with pytest.raises(Malformed):
        NodeSecrets(*args)


@given(st.binary(max_size=300))
def test_secrets_from_garbage_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        NodeSecrets.from_bytes(data)


def test_signing_input_layout() -> None:
    assert signing_input("member", b"M", b"body") == b"kai-mesh/v1/member\x00Mbody"


def test_signature_verifies_only_for_its_kind_and_mesh(secrets: NodeSecrets) -> None:
    sig = secrets.sign("envelope", MESH, b"body")
    verify(secrets.verify_key, "envelope", MESH, b"body", sig)
    with pytest.raises(BadSignature):
        verify(secrets.verify_key, "member", MESH, b"body", sig)
    with pytest.raises(BadSignature):
        verify(secrets.verify_key, "envelope", OTHER_MESH, b"body", sig)
    with pytest.raises(BadSignature):
        verify(secrets.verify_key, "envelope", MESH, b"bodY", sig)
    with pytest.raises(BadSignature):
        verify(secrets_from_seed(2).verify_key, "envelope", MESH, b"body", sig)


@pytest.mark.parametrize("key", [b"", bytes(31), "not bytes"])
@pytest.mark.parametrize("sig", [b"", bytes(63), bytes(64)])
def test_verify_refuses_bad_keys_and_signatures(key: bytes, sig: bytes) -> None:
    with pytest.raises(BadSignature):
        verify(key, "envelope", MESH, b"body", sig)


def test_member_record_checks_and_round_trips(record: MemberRecord, secrets: NodeSecrets) -> None:
    record.check(MESH)
    again = MemberRecord.from_bytes(record.to_bytes())
    assert again == record
    again.check(MESH)
    assert again.node_id == secrets.node_id


def test_member_record_is_bound_to_its_mesh(record: MemberRecord) -> None:
    with pytest.raises(BadSignature):
        record.check(OTHER_MESH)


def test_envelope_signature_does_not_pass_as_member(
    record: MemberRecord, secrets: NodeSecrets
) -> None:
    body = record.to_bytes()  # any bytes: the point is the kind
    sig = secrets.sign("envelope", MESH, body)
    with pytest.raises(BadSignature):
        verify(secrets.verify_key, "member", MESH, body, sig)
    forged = MemberRecord(
        record.name,
        record.verify_key,
        record.rns_public,
        record.nostr_public,
        (secrets.sign("envelope", MESH, b""), *record.signatures[1:]),  # type: ignore[arg-type]
    )
    with pytest.raises(BadSignature):
        forged.check(MESH)


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("bit", [0, 7, 100, 511])
def test_a_flipped_bit_in_any_signature_fails(record: MemberRecord, which: int, bit: int) -> None:
    sigs = list(record.signatures)
    flipped = bytearray(sigs[which])
    flipped[bit // 8] ^= 1 << (bit % 8)
    sigs[which] = bytes(flipped)
    bad = MemberRecord(
        record.name,
        record.verify_key,
        record.rns_public,
        record.nostr_public,
        tuple(sigs),  # type: ignore[arg-type]
    )
    with pytest.raises(BadSignature):
        bad.check(MESH)


def test_a_changed_name_fails(record: MemberRecord) -> None:
    bad = MemberRecord(
        "pi0", record.verify_key, record.rns_public, record.nostr_public, record.signatures
    )
    with pytest.raises(BadSignature):
        bad.check(MESH)


def test_another_nodes_keys_fail(record: MemberRecord) -> None:
    other = secrets_from_seed(3)
    for field_values in (
        (other.verify_key, record.rns_public, record.nostr_public),
        (record.verify_key, other.rns_public, record.nostr_public),
        (record.verify_key, record.rns_public, other.nostr_public),
    ):
        bad = MemberRecord(record.name, *field_values, record.signatures)
        with pytest.raises(BadSignature):
            bad.check(MESH)


def test_invalid_nostr_point_fails_as_bad_signature(record: MemberRecord) -> None:
    bad = MemberRecord(
        record.name, record.verify_key, record.rns_public, b"\xff" * 32, record.signatures
    )
    with pytest.raises(BadSignature):
        bad.check(MESH)


@pytest.mark.parametrize("name", ["svc", "Pi1", "0123456789abcdef0123456789abcdef", ""])
def test_member_record_refuses_names_that_cannot_address_a_node(
    secrets: NodeSecrets, name: str
) -> None:
    with pytest.raises(AddressError):
        MemberRecord.create(secrets, name, MESH)


def test_member_record_from_bytes_refuses_a_bad_name(secrets: NodeSecrets) -> None:
    # A peer can sign any name it likes; the decoder must still refuse one no address can hold.
    record = MemberRecord.create(secrets, "pi1", MESH)
    data = record.to_bytes().replace(b"\xa3pi1", b"\xa3svc")
    with pytest.raises(Malformed):
        MemberRecord.from_bytes(data)


@given(st.binary(max_size=400))
def test_member_from_garbage_raises_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        MemberRecord.from_bytes(data)


@given(st.data())
def test_member_mutations_raise_only_protocol_errors(data: st.DataObject) -> None:
    encoded = bytearray(MemberRecord.create(secrets_from_seed(1), "pi1", MESH).to_bytes())
    i = data.draw(st.integers(0, len(encoded) - 1))
    encoded[i] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(ProtocolError):
        MemberRecord.from_bytes(bytes(encoded)).check(MESH)


def test_rns_loads_our_private_key(secrets: NodeSecrets) -> None:
    identity = RNS.Identity(create_keys=False)
    assert identity.load_private_key(secrets.rns_private)
    assert identity.hash == secrets.rns_identity_hash
    assert identity.get_public_key() == secrets.rns_public


def test_rns_verifies_our_rns_signature(secrets: NodeSecrets) -> None:
    identity = RNS.Identity(create_keys=False)
    identity.load_private_key(secrets.rns_private)
    sig = secrets.sign_rns("member", MESH, b"body")
    assert identity.validate(sig, signing_input("member", MESH, b"body"))
    assert not identity.validate(sig, signing_input("envelope", MESH, b"body"))
    # And the other way: RNS's own signature is what sign_rns makes.
    assert identity.sign(signing_input("member", MESH, b"body")) == sig


def test_nostr_signature_verifies_with_coincurve(secrets: NodeSecrets) -> None:
    sig = secrets.sign_nostr("member", MESH, b"body")
    message = hashlib.sha256(signing_input("member", MESH, b"body")).digest()
    key = PublicKeyXOnly(secrets.nostr_public)
    assert key.verify(sig, message)
    other = hashlib.sha256(signing_input("member", OTHER_MESH, b"body")).digest()
    assert not key.verify(sig, other)


def test_admit_member_checks_signature_mesh_and_trust() -> None:
    from kai_mesh.core.errors import Untrusted
    from kai_mesh.core.mesh.identity import admit_member

    mesh = b"\x05" * 32
    friend, stranger = secrets_from_seed(11), secrets_from_seed(12)
    trusted = {friend.node_id: friend.verify_key}
    good = MemberRecord.create(friend, "friend", mesh).to_bytes()
    assert admit_member(good, mesh, trusted).node_id == friend.node_id
    with pytest.raises(Untrusted):
        admit_member(MemberRecord.create(stranger, "s", mesh).to_bytes(), mesh, trusted)
    with pytest.raises(BadSignature):
        admit_member(good, b"\x06" * 32, trusted)  # another mesh
    with pytest.raises(ProtocolError):
        admit_member(good[:-3], mesh, trusted)
