"""`StandardMessage` on the wire: round trips, every refusal by its class, and the replay guard."""

from __future__ import annotations

import contextlib
import dataclasses

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kai_mesh.core.codec import pack, unpack_exact
from kai_mesh.core.errors import (
    BadSignature,
    ClockSkew,
    Expired,
    Malformed,
    Oversize,
    ProtocolError,
    Replay,
    Truncated,
    UnknownVersion,
    UsageError,
)
from kai_mesh.core.mesh.address import AgentAddress, NodeRef, parse_address
from kai_mesh.core.messaging.envelope import (
    K_CONTEXT,
    K_FROM,
    K_PAYLOAD,
    K_PRIORITY,
    K_TIMESTAMP,
    K_TTL,
    EnvelopeDecoder,
    Priority,
    ReplayGuard,
    StandardMessage,
    encode,
)
from tests.core.strategies import MAX_TTL, messages, secrets_from_seed

MESH = b"M" * 32
SIGNER = secrets_from_seed(11)
NOW = 1_700_000_000


def _decoder(**overrides: object) -> EnvelopeDecoder:
    keys = {SIGNER.node_id: SIGNER.verify_key}
    kwargs: dict[str, object] = {
        "mesh_id": MESH,
        "max_bytes": 100_000,
        "max_ttl": MAX_TTL,
        "verify_key_for": keys.get,
    }
    kwargs.update(overrides)
    return EnvelopeDecoder(**kwargs)  # type: ignore[arg-type]


def _message(
    *,
    sender: str | None = None,
    message_id: bytes = b"\x01" * 8,
    timestamp: int = NOW,
    ttl: int = 60,
    **kw: object,
) -> StandardMessage:
    kwargs: dict[str, object] = {
        "sender": parse_address(sender or f"kai://{SIGNER.node_id.hex()}/cli"),
        "to": parse_address("kai://pi1/echo"),
        "intent": "echo",
        "payload": {"text": "hello"},
        "timestamp": timestamp,
        "message_id": message_id,
        "expires_at": timestamp + ttl,
    }
    kwargs.update(kw)
    return StandardMessage(**kwargs)  # type: ignore[arg-type]


def _raw(fields: dict[object, object]) -> bytes:
    return b"\x01" + pack(fields)


def _fields(message: StandardMessage) -> dict[object, object]:
    value = unpack_exact(encode(message)[1:], 10_000)
    assert isinstance(value, dict)
    return value


# Round trips -------------------------------------------------------------------------------------


@given(messages())
def test_unsigned_round_trip(message: StandardMessage) -> None:
    decoded = _decoder(max_bytes=10**6).decode(encode(message), now=message.timestamp)
    assert decoded.message == message
    assert not decoded.signed


@given(messages().map(lambda m: dataclasses.replace(m, sender=_signer_address(m.sender))))
def test_signed_round_trip(message: StandardMessage) -> None:
    data = encode(message, SIGNER, MESH)
    decoded = _decoder(max_bytes=10**6, require_signature=True).decode(data, now=message.timestamp)
    assert decoded.message == message
    assert decoded.signed


def _signer_address(sender: AgentAddress) -> AgentAddress:
    return AgentAddress(NodeRef(node_id=SIGNER.node_id), sender.agent)


def test_defaults_are_left_off_the_wire() -> None:
    fields = _fields(_message(payload=None))
    assert set(fields) == {1, 2, 3, 8, 9, 11}


def test_ttl_above_max_ttl_is_capped() -> None:
    message = _message(ttl=10_000)
    decoded = _decoder(max_ttl=600).decode(encode(message), now=NOW).message
    assert decoded.expires_at == NOW + 600
    assert decoded == dataclasses.replace(message, expires_at=NOW + 600)


def test_unencodable_payload_is_a_usage_error() -> None:
    for payload in ({1, 2}, 2**64, object(), "\ud800"):
        with pytest.raises(UsageError):
            encode(_message(payload=payload))


# Hostile bytes -----------------------------------------------------------------------------------


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        _decoder().decode(data, now=NOW)


@given(st.binary(max_size=400))
def test_random_bytes_after_the_format_byte_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        _decoder().decode(b"\x01" + data, now=NOW)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    message = draw(messages())
    data = bytearray(encode(message, SIGNER, MESH) if draw(st.booleans()) else encode(message))
    action = draw(st.sampled_from(["flip", "truncate", "extend", "set", "insert", "delete"]))
    i = draw(st.integers(0, len(data) - 1))
    if action == "flip":
        data[i] ^= 1 << draw(st.integers(0, 7))
    elif action == "truncate":
        del data[i:]
    elif action == "extend":
        data += draw(st.binary(min_size=1, max_size=80))
    elif action == "set":
        data[i] = draw(st.integers(0, 255))
    elif action == "insert":
        data[i:i] = draw(st.binary(min_size=1, max_size=4))
    else:
        del data[i : i + draw(st.integers(1, 4))]
    return bytes(data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutations_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        _decoder(max_bytes=10**6).decode(data, now=NOW)


# One test per refusal ----------------------------------------------------------------------------


def test_unknown_version() -> None:
    data = encode(_message())
    with pytest.raises(UnknownVersion):
        _decoder().decode(b"\x02" + data[1:], now=NOW)


def test_empty_input_is_truncated() -> None:
    with pytest.raises(Truncated):
        _decoder().decode(b"", now=NOW)


@pytest.mark.parametrize("cut", [1, 2, 10, 30])
def test_truncated(cut: int) -> None:
    data = encode(_message())
    with pytest.raises(Truncated):
        _decoder().decode(data[:cut], now=NOW)


@pytest.mark.parametrize("key", [1, 2, 3, 8, 9, 11])
def test_missing_field(key: int) -> None:
    fields = _fields(_message())
    del fields[key]
    with pytest.raises(Malformed, match="missing"):
        _decoder().decode(_raw(fields), now=NOW)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (1, "kai://pi1/cli"),
        (1, ["echo"]),  # a service cannot send
        (2, 5),
        (3, b"echo"),
        (3, "Echo"),
        (4 + 1, ["not", "a", "map"]),
        (5, {1: "int key"}),
        (6, True),
        (6, "high"),
        (7, [1]),
        (7, {2: "x"}),
        (8, -1),
        (8, 2**40),
        (8, 1.5),
        (8, True),
        (9, b"short"),
        (9, "12345678"),
        (10, b"\x00" * 17),
        (11, "60"),
    ],
)
def test_mistyped_field(key: int, value: object) -> None:
    fields = _fields(_message())
    fields[key] = value
    with pytest.raises(Malformed):
        _decoder().decode(_raw(fields), now=NOW)


@pytest.mark.parametrize("key", [0, 12, "from", -1, b"\x01"])
def test_unknown_key(key: object) -> None:
    fields = _fields(_message())
    fields[key] = 1
    with pytest.raises(Malformed, match="unknown"):
        _decoder().decode(_raw(fields), now=NOW)


@pytest.mark.parametrize("priority", [7, -1, 4])
def test_priority_out_of_range(priority: int) -> None:
    fields = _fields(_message())
    fields[K_PRIORITY] = priority
    with pytest.raises(Malformed, match="priority"):
        _decoder().decode(_raw(fields), now=NOW)


@pytest.mark.parametrize("ttl", [0, -5])
def test_ttl_not_positive(ttl: int) -> None:
    fields = _fields(_message())
    fields[K_TTL] = ttl
    with pytest.raises(Malformed, match="ttl"):
        _decoder().decode(_raw(fields), now=NOW)


@pytest.mark.parametrize("extra", [1, 10, 63, 65])
def test_trailing_bytes_that_are_not_a_signature(extra: int) -> None:
    with pytest.raises(Malformed, match="bytes after"):
        _decoder().decode(encode(_message()) + bytes(extra), now=NOW)


def test_non_map_envelope() -> None:
    with pytest.raises(Malformed):
        _decoder().decode(b"\x01" + pack([1, 2, 3]), now=NOW)


def test_ext_type_is_refused() -> None:
    fields = _fields(_message())
    data = _raw(fields)
    ext = b"\xd4\x05\x00"  # fixext 1
    fields[K_CONTEXT] = {"x": 1}
    with pytest.raises(Malformed, match="ext"):
        _decoder().decode(_raw(fields).replace(b"\xa1x\x01", b"\xa1x" + ext), now=NOW)
    assert _decoder().decode(data, now=NOW)


@pytest.mark.parametrize("seconds", [5, 2**33, 2**40])  # timestamp 32, 64 and 96
def test_a_msgpack_timestamp_in_a_payload_is_refused(seconds: int) -> None:
    fields = _fields(_message())
    fields[K_PAYLOAD] = [1, msgpack.Timestamp(seconds, 1 if seconds > 2**34 else 0)]
    with pytest.raises(Malformed, match="ext types are not allowed"):
        _decoder().decode(_raw(fields), now=NOW)


def test_oversize() -> None:
    data = encode(_message())
    with pytest.raises(Oversize):
        _decoder(max_bytes=len(data) - 1).decode(data, now=NOW)
    assert _decoder(max_bytes=len(data)).decode(data, now=NOW)


def test_bad_signature_flipped_bit() -> None:
    data = bytearray(encode(_message(), SIGNER, MESH))
    data[-10] ^= 0x04
    with pytest.raises(BadSignature):
        _decoder().decode(bytes(data), now=NOW)


def test_bad_signature_flipped_bit_in_body() -> None:
    message = _message(payload={"text": "hello"})
    data = encode(message, SIGNER, MESH).replace(b"hello", b"hellp")
    with pytest.raises(BadSignature):
        _decoder().decode(data, now=NOW)


def test_bad_signature_unknown_signer() -> None:
    data = encode(_message(), SIGNER, MESH)
    with pytest.raises(BadSignature, match="not a known node"):
        _decoder(verify_key_for=lambda node_id: None).decode(data, now=NOW)


def test_bad_signature_signer_is_not_the_sender() -> None:
    other = secrets_from_seed(12)
    data = encode(_message(), other, MESH)  # names SIGNER as sender, signed by another key
    with pytest.raises(BadSignature):
        _decoder().decode(data, now=NOW)


def test_bad_signature_another_mesh() -> None:
    data = encode(_message(), SIGNER, b"N" * 32)
    with pytest.raises(BadSignature):
        _decoder().decode(data, now=NOW)


def test_bad_signature_sender_named_by_name() -> None:
    data = encode(_message(sender="kai://pi2/cli"), SIGNER, MESH)
    with pytest.raises(BadSignature, match="node id"):
        _decoder().decode(data, now=NOW)


def test_bad_signature_required_but_unsigned() -> None:
    with pytest.raises(BadSignature, match="must be signed"):
        _decoder(require_signature=True).decode(encode(_message()), now=NOW)


def test_signature_of_another_kind_does_not_verify() -> None:
    body = encode(_message())
    data = body + SIGNER.sign("member", MESH, body)
    with pytest.raises(BadSignature):
        _decoder().decode(data, now=NOW)


def test_expired() -> None:
    data = encode(_message(ttl=60))
    assert _decoder().decode(data, now=NOW + 60)  # the last second is still good
    with pytest.raises(Expired):
        _decoder().decode(data, now=NOW + 61)


def test_expired_uses_the_capped_ttl() -> None:
    data = encode(_message(ttl=10_000))
    with pytest.raises(Expired):
        _decoder(max_ttl=600).decode(data, now=NOW + 601)


def test_a_timestamp_too_far_ahead_is_refused_before_the_replay_guard() -> None:
    decoder = _decoder(max_skew=300)
    assert decoder.decode(encode(_message(timestamp=NOW + 300)), now=NOW)  # within the bound
    with pytest.raises(ClockSkew, match="301s ahead"):
        decoder.decode(encode(_message(timestamp=NOW + 301, message_id=b"\x02" * 8)), now=NOW)
    with pytest.raises(ClockSkew):  # would never expire, and its guard entry never be pruned
        decoder.decode(encode(_message(timestamp=NOW + 10**9, message_id=b"\x03" * 8)), now=NOW)
    assert len(decoder.replays) == 1


def test_a_flood_of_future_stamps_cannot_evict_the_replay_guard() -> None:
    decoder = _decoder(replay_capacity=3)
    mine = encode(_message(message_id=b"\x01" * 8))
    decoder.decode(mine, now=NOW)
    for i in range(10):
        with contextlib.suppress(ClockSkew):
            late = _message(timestamp=NOW + 10**9, message_id=bytes([9, i]) * 4)
            decoder.decode(encode(late), now=NOW)
    assert decoder.replays.evicted == 0
    with pytest.raises(Replay):
        decoder.decode(mine, now=NOW + 1)


# Replay ------------------------------------------------------------------------------------------


def test_replay_of_the_same_bytes() -> None:
    decoder = _decoder()
    data = encode(_message())
    decoder.decode(data, now=NOW)
    with pytest.raises(Replay):
        decoder.decode(data, now=NOW + 30)


def test_replay_signed_then_stripped() -> None:
    decoder = _decoder()
    message = _message()
    decoder.decode(encode(message, SIGNER, MESH), now=NOW)
    with pytest.raises(Replay):
        decoder.decode(encode(message), now=NOW)


def test_replay_is_per_sender() -> None:
    decoder = _decoder()
    decoder.decode(encode(_message(sender="kai://pi2/cli")), now=NOW)
    decoder.decode(encode(_message(sender="kai://pi3/cli")), now=NOW)
    decoder.decode(encode(_message(sender="kai://pi2/other")), now=NOW)
    assert len(decoder.replays) == 3


def test_same_expiry_from_different_senders() -> None:
    # The guard's heap must never have to order two addresses.
    guard = ReplayGuard()
    for name in ("a", "b", "c", "d"):
        guard.admit(_message(sender=f"kai://{name}/cli"), now=NOW)
    assert len(guard) == 4


def test_guard_remembers_until_expiry_then_forgets() -> None:
    guard = ReplayGuard()
    first = _message(ttl=60)
    guard.admit(first, now=NOW)
    assert guard.seen(first, now=NOW + 60)
    # A new message reusing the id, sent later: refused while the first could still be accepted...
    later = _message(timestamp=NOW + 50, ttl=600)
    with pytest.raises(Replay):
        guard.admit(later, now=NOW + 60)
    # ...and accepted once the first has expired, since the first itself would now be Expired.
    assert not guard.seen(first, now=NOW + 61)
    guard.admit(later, now=NOW + 61)
    assert len(guard) == 1
    with pytest.raises(Replay):
        guard.admit(later, now=NOW + 100)


def test_decoder_accepts_a_reused_id_after_the_first_expired() -> None:
    decoder = _decoder()
    first = encode(_message(ttl=60))
    decoder.decode(first, now=NOW)
    with pytest.raises(Expired):
        decoder.decode(first, now=NOW + 61)
    later = encode(_message(timestamp=NOW + 61, ttl=60))
    assert decoder.decode(later, now=NOW + 61)


def test_prune_drops_expired_entries() -> None:
    guard = ReplayGuard()
    for i in range(10):
        guard.admit(_message(message_id=bytes([i]) * 8, ttl=10 + i), now=NOW)
    guard.prune(NOW + 15)
    assert len(guard) == 5


def test_capacity_bound_evicts_the_soonest_to_expire() -> None:
    guard = ReplayGuard(capacity=3)
    msgs = [_message(message_id=bytes([i]) * 8, ttl=100 + i) for i in range(5)]
    for m in msgs:
        guard.admit(m, now=NOW)
    assert len(guard) == 3
    assert guard.evicted == 2
    assert [guard.seen(m, now=NOW) for m in msgs] == [False, False, True, True, True]
    guard.admit(msgs[0], now=NOW)  # forgotten early: accepted again, the price of a bound
    assert guard.evicted == 3


def test_decoder_replay_capacity() -> None:
    decoder = _decoder(replay_capacity=2)
    for i in range(5):
        decoder.decode(encode(_message(message_id=bytes([i]) * 8)), now=NOW)
    assert len(decoder.replays) == 2
    assert decoder.replays.evicted == 3


def test_forged_message_does_not_occupy_a_replay_slot() -> None:
    decoder = _decoder()
    genuine = encode(_message(), SIGNER, MESH)
    forged = genuine[:-64] + secrets_from_seed(12).sign("envelope", MESH, genuine[:-64])
    with pytest.raises(BadSignature):
        decoder.decode(forged, now=NOW)
    assert len(decoder.replays) == 0
    assert decoder.decode(genuine, now=NOW).signed


def test_expired_message_does_not_occupy_a_replay_slot() -> None:
    decoder = _decoder()
    with pytest.raises(Expired):
        decoder.decode(encode(_message(ttl=1)), now=NOW + 2)
    assert len(decoder.replays) == 0


# The value type ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"sender": "kai://svc/echo"},
        {"intent": ""},
        {"intent": "Echo"},
        {"intent": "x" * 65},
        {"context": {1: "x"}},
        {"auth": {b"k": "v"}},
        {"priority": 1},
        {"message_id": b"1234567"},
        {"message_id": b"1" * 17},
        {"reply_to": b""},
        {"timestamp": -1},
        {"timestamp": True},
        {"expires_at": NOW},
        {"expires_at": NOW - 1},
        {"expires_at": 2**40},
    ],
)
def test_message_validates_itself(overrides: dict[str, object]) -> None:
    with pytest.raises(Malformed):
        _message(**overrides)


def test_priority_parse() -> None:
    assert Priority.parse("Critical") is Priority.CRITICAL
    with pytest.raises(UsageError, match="low, normal, high, critical"):
        Priority.parse("urgent")


def test_explicit_defaults_on_the_wire_are_accepted() -> None:
    fields = _fields(_message())
    fields[K_PRIORITY] = 1
    fields[K_CONTEXT] = {}
    decoded = _decoder().decode(_raw(fields), now=NOW).message
    assert decoded == _message()


def test_wire_timestamp_is_the_message_timestamp() -> None:
    fields = _fields(_message())
    assert fields[K_TIMESTAMP] == NOW
    assert fields[K_TTL] == 60
    assert fields[K_FROM] == [SIGNER.node_id, "cli"]


@given(st.lists(messages(), max_size=12))
def test_one_decoder_many_messages_raises_only_protocol_errors(
    batch: list[StandardMessage],
) -> None:
    decoder = _decoder(max_bytes=10**6, replay_capacity=4)
    now = 0
    for message in sorted(batch, key=lambda m: m.timestamp):
        now = max(now, message.timestamp)
        with contextlib.suppress(Replay, Expired):
            assert decoder.decode(encode(message), now=now).message == message
    assert len(decoder.replays) <= 4
