"""Router frames: round trips, the radio byte budget, hostile bytes, signatures and replays."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.codec import pack
from kai_mesh.core.errors import (
    BadSignature,
    Malformed,
    Oversize,
    ProtocolError,
    Replay,
    Truncated,
    UnknownVersion,
    Untrusted,
    UsageError,
)
from kai_mesh.core.liveness import membership as mb
from kai_mesh.core.messaging.envelope import MESSAGE_ID_BYTES
from kai_mesh.core.messaging.frames import (
    FRAME_ACKS,
    FRAME_DELIVER,
    FRAME_ENVELOPE,
    FRAME_HEARTBEAT,
    FRAME_SWIM,
    HEARTBEAT_KIND,
    MAX_ACKS,
    MAX_FRAME,
    Heartbeat,
    HeartbeatGuard,
    SwimCommand,
    decode_acks,
    decode_busy,
    decode_deliver,
    decode_heartbeat,
    decode_swim,
    encode_acks,
    encode_busy,
    encode_deliver,
    encode_heartbeat,
    encode_swim,
    frame_kind,
)
from tests.core.strategies import node_ids, secrets_from_seed

MESH = b"M" * 32
A = secrets_from_seed(21)
B = secrets_from_seed(22)
KEYS = {A.node_id: A.verify_key, B.node_id: B.verify_key}
PEER = b"P" * 16

uints = st.integers(min_value=0, max_value=2**63 - 1)
message_ids = st.binary(min_size=MESSAGE_ID_BYTES, max_size=MESSAGE_ID_BYTES)
digest_maps = st.dictionaries(st.integers(0, 255), st.binary(max_size=32), max_size=8).map(
    lambda d: dict(sorted(d.items()))
)


def _heartbeat(counter: int = 7, digests: dict[int, bytes] | None = None) -> Heartbeat:
    return Heartbeat(node_id=A.node_id, counter=counter, digests=digests or {})


# Round trips -------------------------------------------------------------------------------------


@given(st.binary(min_size=1, max_size=300))
def test_deliver_round_trip(envelope: bytes) -> None:
    data = encode_deliver(envelope)
    assert frame_kind(data) == FRAME_DELIVER
    assert decode_deliver(data) == envelope


@given(st.lists(message_ids, min_size=1, max_size=MAX_ACKS))
def test_acks_round_trip(ids: list[bytes]) -> None:
    data = encode_acks(ids)
    assert frame_kind(data) == FRAME_ACKS
    assert decode_acks(data) == ids


@st.composite
def swim_pairs(draw: st.DrawFn) -> tuple[SwimCommand, mb.Input]:
    """A command and the input it becomes at the receiver, which got it from `PEER`."""
    seq, node, inc = draw(uints), draw(node_ids), draw(uints)
    to = draw(node_ids)
    pairs: list[tuple[SwimCommand, mb.Input]] = [
        (mb.SendProbe(to=to, seq=seq), mb.ProbeReceived(from_id=PEER, seq=seq)),
        (
            mb.SendProbe(to=to, seq=seq, suspect=True),
            mb.ProbeReceived(from_id=PEER, seq=seq, suspect=True),
        ),
        (mb.SendAck(to=to, seq=seq), mb.ProbeAcked(from_id=PEER, seq=seq)),
        (
            mb.SendIndirectProbe(via=to, target=node, seq=seq),
            mb.IndirectProbeRequested(from_id=PEER, target=node, seq=seq),
        ),
        (
            mb.SendIndirectAck(to=to, target=node, seq=seq),
            mb.IndirectAckReceived(from_id=PEER, target=node, seq=seq),
        ),
        (
            mb.SendNack(to=to, target=node, seq=seq),
            mb.NackReceived(from_id=PEER, target=node, seq=seq),
        ),
        (
            mb.SendAlive(to=(to, PEER), node_id=node, incarnation=inc),
            mb.AliveReceived(node_id=node, incarnation=inc),
        ),
        (
            mb.SendSuspect(to=(to,), node_id=node, incarnation=inc),
            mb.SuspectReceived(node_id=node, incarnation=inc, from_id=PEER),
        ),
    ]
    return draw(st.sampled_from(pairs))


@given(swim_pairs())
def test_swim_round_trip(pair: tuple[SwimCommand, mb.Input]) -> None:
    command, expected = pair
    data = encode_swim(command)
    assert frame_kind(data) == FRAME_SWIM
    assert decode_swim(data, PEER) == expected


def test_addressing_does_not_go_on_the_wire() -> None:
    one = encode_swim(mb.SendAlive(to=(PEER,), node_id=A.node_id, incarnation=3))
    many = encode_swim(mb.SendAlive(to=(PEER, B.node_id), node_id=A.node_id, incarnation=3))
    assert one == many
    assert encode_swim(mb.SendAck(to=PEER, seq=5)) == encode_swim(mb.SendAck(to=A.node_id, seq=5))


@given(uints, digest_maps)
def test_heartbeat_round_trip(counter: int, digests: dict[int, bytes]) -> None:
    heartbeat = Heartbeat(node_id=A.node_id, counter=counter, digests=digests)
    data = encode_heartbeat(heartbeat, A, MESH)
    assert frame_kind(data) == FRAME_HEARTBEAT
    assert len(data) <= MAX_FRAME
    assert decode_heartbeat(data, MESH, KEYS) == heartbeat


def test_heartbeat_copies_and_sorts_its_digests() -> None:
    digests = {9: b"x", 1: b"y"}
    heartbeat = _heartbeat(digests=digests)
    digests[3] = b"z"
    assert list(heartbeat.digests.items()) == [(1, b"y"), (9, b"x")]


# The radio budget --------------------------------------------------------------------------------


def test_frame_sizes() -> None:
    assert len(encode_acks([b"\x01" * 8])) == 9
    assert len(encode_acks([b"\x01" * 8] * MAX_ACKS)) == 1 + 8 * MAX_ACKS
    assert len(encode_deliver(b"\x01" * 50)) == 51
    for seq in (0, 127):
        assert len(encode_swim(mb.SendProbe(to=PEER, seq=seq))) <= 4
        assert len(encode_swim(mb.SendAck(to=PEER, seq=seq))) <= 4
    assert len(encode_swim(mb.SendProbe(to=PEER, seq=127, suspect=True))) <= 5
    big = 2**63 - 1
    assert len(encode_swim(mb.SendNack(to=PEER, target=PEER, seq=big))) <= 30
    assert len(encode_swim(mb.SendSuspect(to=(), node_id=PEER, incarnation=big))) <= 30
    for counter in (0, 2**32 - 1):
        assert len(encode_heartbeat(_heartbeat(counter), A, MESH)) <= 100
    full = {k: b"d" * 32 for k in range(248, 256)}
    assert len(encode_heartbeat(_heartbeat(big, full), A, MESH)) < MAX_FRAME


# Hostile bytes -----------------------------------------------------------------------------------


def _dispatch(data: bytes) -> object:
    kind = frame_kind(data)
    if kind == FRAME_DELIVER:
        return decode_deliver(data)
    if kind == FRAME_ACKS:
        return decode_acks(data)
    if kind == FRAME_SWIM:
        return decode_swim(data, PEER)
    if kind == FRAME_HEARTBEAT:
        return decode_heartbeat(data, MESH, KEYS)
    return None  # an envelope: EnvelopeDecoder's business


_DECODERS: list[Any] = [
    _dispatch,
    decode_deliver,
    decode_acks,
    lambda d: decode_swim(d, PEER),
    lambda d: decode_heartbeat(d, MESH, KEYS),
]


@pytest.mark.parametrize("decoder", _DECODERS)
@given(data=st.binary(max_size=MAX_FRAME + 20), first=st.sampled_from([0x01, *range(0x10, 0x14)]))
def test_random_bytes_raise_only_protocol_errors(decoder: Any, data: bytes, first: int) -> None:
    for candidate in (data, bytes([first]) + data):
        with contextlib.suppress(ProtocolError):
            decoder(candidate)


_msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_msgpack_scalars = st.none() | st.booleans() | _msgpack_ints | st.binary() | st.text() | st.floats()


@given(st.recursive(_msgpack_scalars, st.lists))
def test_random_swim_values_raise_only_protocol_errors(value: object) -> None:
    with contextlib.suppress(ProtocolError):
        decode_swim(b"\x12" + pack(value), PEER)


def test_frame_kind_refusals() -> None:
    assert frame_kind(b"\x01anything") == FRAME_ENVELOPE
    assert frame_kind(b"\x14") == 0x14  # state sync (core.state_wire)
    assert frame_kind(b"\x15") == 0x15  # governance sync (runtime.governance)
    assert frame_kind(b"\x16") == 0x16  # asking for a lost reply (core.reply_asks)
    with pytest.raises(Truncated):
        frame_kind(b"")
    assert frame_kind(b"\x17") == 0x17  # several frames in one packet (core.batch)
    assert frame_kind(b"\x18") == 0x18  # members' signed names (core.name_claims)
    for first in (0x00, 0x02, 0x0F, 0x7F, 0xFF):
        with pytest.raises(UnknownVersion):
            frame_kind(bytes([first]))


def test_deliver_and_acks_refusals() -> None:
    with pytest.raises(Truncated):
        decode_deliver(b"\x10")
    with pytest.raises(UnknownVersion):
        decode_deliver(b"\x11" + b"\x01" * 8)
    for bad in (b"\x11", b"\x11" + b"\x01" * 7, b"\x11" + b"\x01" * 9):
        with pytest.raises(Truncated):
            decode_acks(bad)
    with pytest.raises(Malformed):
        decode_acks(b"\x11" + b"\x01" * 8 * (MAX_ACKS + 1))
    with pytest.raises(UnknownVersion):
        decode_acks(b"\x10" + b"\x01" * 8)


@pytest.mark.parametrize(
    "ids", [[], [b"\x01" * 8] * (MAX_ACKS + 1), [b"\x01" * 7], [b"\x01" * 16], ["x" * 8]]
)
def test_encode_acks_usage_errors(ids: list[Any]) -> None:
    with pytest.raises(UsageError):
        encode_acks(ids)


def test_encode_deliver_usage_error() -> None:
    with pytest.raises(UsageError):
        encode_deliver(b"")


_NODE = b"N" * 16


@pytest.mark.parametrize(
    "value",
    [
        [],
        {},
        1,
        [True, 1],  # a bool is not a message type
        [0, 1],
        [8, 1],
        [1],
        [1, True],  # nor a seq
        [1, -1],
        [1, 2**63],
        [1, 1.0],
        [1, 1, False],  # the flag is left out when false
        [1, 1, 1],
        [1, 1, True, True],
        [2, 1, True],
        [3, 1],
        [3, 1, b"short"],
        [3, 1, "N" * 16],
        [4, 1, _NODE, 0],
        [5, _NODE, 1],
        [6, 1, _NODE],
        [6, _NODE + b"x", 1],
        [7, _NODE, -5],
        [7, _NODE],
    ],
)
def test_swim_refusals(value: object) -> None:
    with pytest.raises(Malformed):
        decode_swim(b"\x12" + pack(value), PEER)


def test_swim_trailing_truncated_and_oversize() -> None:
    data = encode_swim(mb.SendAck(to=PEER, seq=300))
    with pytest.raises(Malformed):
        decode_swim(data + b"\x00", PEER)
    with pytest.raises(Truncated):
        decode_swim(data[:-1], PEER)
    with pytest.raises(Oversize):
        decode_swim(b"\x12" + pack([2, 1, b"x" * MAX_FRAME]), PEER)


@pytest.mark.parametrize(
    "command",
    [
        mb.SendProbe(to=PEER, seq=-1),
        mb.SendProbe(to=PEER, seq=2**63),
        mb.SendAck(to=PEER, seq=True),
        mb.SendIndirectProbe(via=PEER, target=b"short", seq=1),
        mb.SendAlive(to=(), node_id=_NODE, incarnation=2**64),
        mb.SendSuspect(to=(), node_id=_NODE, incarnation=1.5),  # type: ignore[arg-type]
    ],
)
def test_encode_swim_usage_errors(command: SwimCommand) -> None:
    with pytest.raises(UsageError):
        encode_swim(command)


def test_encode_swim_refuses_other_objects() -> None:
    with pytest.raises(UsageError):
        encode_swim(mb.PeerFailed(node_id=_NODE, incarnation=1))  # type: ignore[arg-type]


# Heartbeat signatures ----------------------------------------------------------------------------


def test_every_single_byte_change_of_a_heartbeat_is_refused() -> None:
    data = encode_heartbeat(_heartbeat(300, {1: b"s" * 32, 200: b""}), A, MESH)
    for i in range(len(data)):
        for value in range(256):
            if value == data[i]:
                continue
            with pytest.raises(ProtocolError):
                decode_heartbeat(data[:i] + bytes([value]) + data[i + 1 :], MESH, KEYS)


def test_every_truncation_and_extension_of_a_heartbeat_is_refused() -> None:
    data = encode_heartbeat(_heartbeat(), A, MESH)
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            decode_heartbeat(data[:cut], MESH, KEYS)
    for extra in (b"\x00", b"\xff" * 64):
        with pytest.raises(Malformed):
            decode_heartbeat(data + extra, MESH, KEYS)


def test_heartbeat_of_another_mesh_is_bad_signature() -> None:
    data = encode_heartbeat(_heartbeat(), A, b"O" * 32)
    with pytest.raises(BadSignature):
        decode_heartbeat(data, MESH, KEYS)


def test_heartbeat_of_an_unknown_signer_is_untrusted() -> None:
    data = encode_heartbeat(_heartbeat(), A, MESH)
    with pytest.raises(Untrusted):
        decode_heartbeat(data, MESH, {B.node_id: B.verify_key})


def test_heartbeat_signed_by_one_node_naming_another_is_refused() -> None:
    body = b"\x13" + pack([B.node_id, 1, {}])
    data = body + A.sign(HEARTBEAT_KIND, MESH, body)
    with pytest.raises(BadSignature):
        decode_heartbeat(data, MESH, KEYS)
    with pytest.raises(UsageError):
        encode_heartbeat(Heartbeat(node_id=B.node_id, counter=1, digests={}), A, MESH)


@pytest.mark.parametrize(
    "fields",
    [
        [A.node_id, 1],
        [A.node_id, 1, {}, 0],
        [A.node_id, True, {}],
        [A.node_id, -1, {}],
        [A.node_id, 2**63, {}],
        [A.node_id[:15], 1, {}],
        [A.node_id, 1, []],
        [A.node_id, 1, {256: b""}],
        [A.node_id, 1, {True: b""}],
        [A.node_id, 1, {1: b"x" * 33}],
        [A.node_id, 1, {1: "text"}],
        [A.node_id, 1, {k: b"" for k in range(9)}],
        {0: A.node_id},
    ],
)
def test_heartbeat_structure_refusals(fields: object) -> None:
    """Refused as malformed even though correctly signed."""
    body = b"\x13" + pack(fields)
    with pytest.raises(Malformed):
        decode_heartbeat(body + A.sign(HEARTBEAT_KIND, MESH, body), MESH, KEYS)


def test_oversize_heartbeat() -> None:
    body = b"\x13" + pack([A.node_id, 1, {1: b"x" * MAX_FRAME}])
    with pytest.raises(Oversize):
        decode_heartbeat(body + A.sign(HEARTBEAT_KIND, MESH, body), MESH, KEYS)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"node_id": b"short", "counter": 1, "digests": {}},
        {"node_id": _NODE, "counter": -1, "digests": {}},
        {"node_id": _NODE, "counter": False, "digests": {}},
        {"node_id": _NODE, "counter": 1, "digests": {300: b""}},
        {"node_id": _NODE, "counter": 1, "digests": {1: b"x" * 33}},
        {"node_id": _NODE, "counter": 1, "digests": [(1, b"")]},
    ],
)
def test_heartbeat_usage_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Heartbeat(**kwargs)


# The replay guard --------------------------------------------------------------------------------


def _hb(node: bytes, counter: int) -> Heartbeat:
    return Heartbeat(node_id=node, counter=counter, digests={})


def test_guard_refuses_replays_and_older_counters() -> None:
    guard = HeartbeatGuard()
    assert guard.last(A.node_id) is None
    guard.admit(_hb(A.node_id, 5))
    with pytest.raises(Replay):
        guard.admit(_hb(A.node_id, 5))
    with pytest.raises(Replay):
        guard.admit(_hb(A.node_id, 4))
    assert guard.last(A.node_id) == 5
    guard.admit(_hb(B.node_id, 1))  # per node: B's low counter is fine
    guard.admit(_hb(A.node_id, 9))  # gaps are fine: heartbeats get lost on a radio
    assert (guard.last(A.node_id), guard.last(B.node_id)) == (9, 1)


def test_guard_evicts_the_least_recently_admitted() -> None:
    guard = HeartbeatGuard(capacity=2)
    n1, n2, n3 = (bytes([i]) * 16 for i in (1, 2, 3))
    guard.admit(_hb(n1, 1))
    guard.admit(_hb(n2, 1))
    guard.admit(_hb(n1, 2))  # n1 is now the more recent
    guard.admit(_hb(n3, 1))
    assert (guard.last(n1), guard.last(n2), guard.last(n3)) == (2, None, 1)
    assert len(guard) == 2
    assert guard.evicted == 1
    guard.admit(_hb(n2, 1))  # forgotten, so admitted again: the price of bounded memory


@given(st.lists(st.tuples(st.sampled_from([b"a" * 16, b"b" * 16]), uints), max_size=30))
def test_guard_admits_exactly_the_increasing_counters(events: list[tuple[bytes, int]]) -> None:
    guard = HeartbeatGuard()
    highest: dict[bytes, int] = {}
    for node, counter in events:
        fresh = node not in highest or counter > highest[node]
        if fresh:
            guard.admit(_hb(node, counter))
            highest[node] = counter
        else:
            with pytest.raises(Replay):
                guard.admit(_hb(node, counter))
        assert guard.last(node) == highest[node]


def test_guard_capacity_must_be_positive() -> None:
    with pytest.raises(UsageError):
        HeartbeatGuard(capacity=0)


def test_busy_is_nine_bytes_and_refuses_anything_else() -> None:
    frame = encode_busy(b"\x07" * 8)
    assert frame == b"\x19" + b"\x07" * 8 and frame_kind(frame) == 0x19
    assert decode_busy(frame) == b"\x07" * 8
    for bad in (b"\x19", b"\x19" + bytes(7), b"\x19" + bytes(9)):
        with pytest.raises(Truncated):
            decode_busy(bad)
    with pytest.raises(UnknownVersion):
        decode_busy(b"\x11" + bytes(8))
    with pytest.raises(UsageError):
        encode_busy(bytes(16))
