"""Router frames: what one node says to the next, sharing a transport with envelopes.

A transport carries opaque byte strings; the first byte says what each one is::

    0x01 envelope    kai_mesh.core.messaging.envelope (ENVELOPE_FORMAT); not parsed here
    0x10 DELIVER     0x10 ‖ envelope bytes: a message that must arrive; the receiver acks it
    0x11 ACKS        0x11 ‖ n × 8-byte message ids, 1 <= n <= MAX_ACKS
    0x12 SWIM        0x12 ‖ msgpack array:
                       PROBE [1, seq] or [1, seq, true]   (suspect flag, left out when false)
                       ACK [2, seq]   INDIRECT [3, seq, target]   INDIRECT_ACK [4, seq, target]
                       NACK [5, seq, target]   ALIVE [6, node_id, incarnation]
                       SUSPECT [7, node_id, incarnation]
    0x13 HEARTBEAT   0x13 ‖ msgpack array [node_id, counter, digests] ‖ 64-byte Ed25519 signature
    0x14 STATE, 0x15 GOVERNANCE   sync (core.state.wire, core.governance.sync_wire)
    0x16 ASK         0x16 ‖ op ‖ 8-byte message id: a lost reply (core.messaging.reply_asks)
    0x17 BATCH       0x17 ‖ (varint length ‖ frame)+: frames to one peer in one packet
                       (core.messaging.batch)
    0x18 NAME_CLAIMS 0x18 ‖ msgpack [[node_id, name, signature], ...]: members' own signed names
                       (core.messaging.name_claims)
    0x19 BUSY        0x19 ‖ 8-byte message id: a DELIVER dropped because the receiver's delivery
                       slots for this peer were full (no ack will come; the sender slows down)
    0x1E EVENT       mesh events and interest in them (core.events.wire)
    0x1A TELEMETRY   0x1A ‖ a telemetry sample (core.orchestration.telemetry, format 0x51) or
                     node facts (core.orchestration.facts, format 0x52); ephemeral, never stored

Node ids are 16 bytes; seq, incarnation and counter are integers 0 <= x < 2**63. Heartbeat
`digests` maps a small int (0..255) to at most 32 bytes, at most 8 entries: room for the state and
governance digests later layers add (empty today).

Why this shape: on a LoRa radio every byte is airtime, so ids are raw binary, acks are bare
concatenated ids with no msgpack around them, SWIM messages are positional arrays of small ints
(a probe is 4 bytes), and nothing is signed that need not be. A link has already authenticated its
peer, so DELIVER, ACKS and SWIM frames carry no signature: the transport hands `decode_swim` the
proven `from_id`. A heartbeat is different: it goes out as a broadcast the medium does not
authenticate, so it is signed (`NodeSecrets.sign("heartbeat", mesh_id, every byte before the
signature, 0x13 included)`) and carries a counter that only grows, which `HeartbeatGuard` uses to
refuse replays. Every decoder raises a `ProtocolError` subclass for bad input, and nothing else.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kai_mesh.core.codec import pack, split_format, unpack_exact, unpack_prefix
from kai_mesh.core.errors import (
    Malformed,
    Oversize,
    ProtocolError,
    Replay,
    Truncated,
    UnknownVersion,
    Untrusted,
    UsageError,
)
from kai_mesh.core.liveness.membership import (
    AliveReceived,
    IndirectAckReceived,
    IndirectProbeRequested,
    Input,
    NackReceived,
    ProbeAcked,
    ProbeReceived,
    SendAck,
    SendAlive,
    SendIndirectAck,
    SendIndirectProbe,
    SendNack,
    SendProbe,
    SendSuspect,
    SuspectReceived,
)
from kai_mesh.core.mesh.address import NODE_ID_BYTES
from kai_mesh.core.mesh.identity import SIGNATURE_BYTES, NodeSecrets, verify
from kai_mesh.core.messaging.envelope import MESSAGE_ID_BYTES

FRAME_ENVELOPE = 0x01
FRAME_DELIVER = 0x10
FRAME_ACKS = 0x11
FRAME_SWIM = 0x12
FRAME_HEARTBEAT = 0x13
FRAME_STATE = 0x14  # replicated-state sync (core.state.wire)
FRAME_GOVERNANCE = 0x15  # governance sync: [1, records] or [2, head] (core.governance.sync_wire)
FRAME_ASK = 0x16  # asking for a lost reply: op ‖ 8-byte message id (core.messaging.reply_asks)
FRAME_BATCH = 0x17  # several frames in one packet (core.messaging.batch)
FRAME_NAME_CLAIMS = 0x18  # members' signed names (core.messaging.name_claims)
FRAME_BUSY = 0x19  # a DELIVER dropped as busy: 0x19 ‖ 8-byte message id (9 bytes in all)
FRAME_EVENT = 0x1E  # mesh events and the interest in them (core.events.wire)
FRAME_TELEMETRY = 0x1A  # node telemetry and facts (core.orchestration.telemetry, .facts)
_KINDS = frozenset(
    {
        FRAME_ENVELOPE,
        FRAME_DELIVER,
        FRAME_ACKS,
        FRAME_SWIM,
        FRAME_HEARTBEAT,
        FRAME_STATE,
        FRAME_GOVERNANCE,
        FRAME_ASK,
        FRAME_BATCH,
        FRAME_NAME_CLAIMS,
        FRAME_BUSY,
        FRAME_EVENT,
        FRAME_TELEMETRY,
    }
)
#: Names for counters and logs (`frame.unregistered.STATE`, `busy.DELIVER`).
FRAME_NAMES: Mapping[int, str] = {
    FRAME_ENVELOPE: "ENVELOPE",
    FRAME_DELIVER: "DELIVER",
    FRAME_ACKS: "ACKS",
    FRAME_SWIM: "SWIM",
    FRAME_HEARTBEAT: "HEARTBEAT",
    FRAME_STATE: "STATE",
    FRAME_GOVERNANCE: "GOVERNANCE",
    FRAME_ASK: "ASK",
    FRAME_BATCH: "BATCH",
    FRAME_NAME_CLAIMS: "NAME_CLAIMS",
    FRAME_BUSY: "BUSY",
    FRAME_EVENT: "EVENT",
    FRAME_TELEMETRY: "TELEMETRY",
}

MAX_ACKS = 64
MAX_FRAME = 512  # SWIM and heartbeat frames; the largest valid heartbeat is well under 400 bytes
HEARTBEAT_KIND = "heartbeat"
MAX_UINT = 2**63  # exclusive; msgpack would carry up to 2**64, but peers in other languages use i64
MAX_DIGESTS = 8
MAX_DIGEST_BYTES = 32

_PROBE, _ACK, _INDIRECT, _INDIRECT_ACK, _NACK, _ALIVE, _SUSPECT = range(1, 8)

_ARITY = {_PROBE: (1, 2), _ACK: (1,), **dict.fromkeys(range(_INDIRECT, _SUSPECT + 1), (2,))}
_VIA_INPUTS: dict[int, type[IndirectProbeRequested | IndirectAckReceived | NackReceived]] = {
    _INDIRECT: IndirectProbeRequested,
    _INDIRECT_ACK: IndirectAckReceived,
    _NACK: NackReceived,
}

SwimCommand = (
    SendProbe | SendAck | SendIndirectProbe | SendIndirectAck | SendNack | SendAlive | SendSuspect
)

# Shared by encoding (our mistake: UsageError) and decoding (their bytes: Malformed).
_Error = type[UsageError] | type[Malformed]


def _uint(value: object, name: str, error: _Error) -> int:
    # `type(...) is int`: msgpack's true is a bool, and bool is an int subclass in Python.
    if type(value) is not int or not 0 <= value < MAX_UINT:
        raise error(f"{name}: must be an integer 0 <= x < 2**63")
    return value


def _node_id(value: object, name: str, error: _Error) -> bytes:
    if type(value) is not bytes or len(value) != NODE_ID_BYTES:
        raise error(f"{name}: a node id is {NODE_ID_BYTES} bytes")
    return value


def frame_kind(data: bytes) -> int:
    """The kind of frame `data` is (one of the FRAME_* constants)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Malformed(f"frame: expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise Truncated("frame: empty input")
    if data[0] not in _KINDS:
        raise UnknownVersion(f"frame: kind {data[0]:#04x} is not known")
    return int(data[0])


# DELIVER and ACKS ---------------------------------------------------------------------------------


def encode_deliver(envelope: bytes) -> bytes:
    if not isinstance(envelope, bytes) or not envelope:
        raise UsageError("deliver: the envelope must be non-empty bytes")
    return bytes([FRAME_DELIVER]) + envelope


def decode_deliver(data: bytes) -> bytes:
    """The envelope bytes inside; the caller hands them to `EnvelopeDecoder`, which checks them."""
    envelope = split_format(data, FRAME_DELIVER, "deliver")
    if not envelope:
        raise Truncated("deliver: no envelope follows")
    return envelope


def encode_acks(ids: Sequence[bytes]) -> bytes:
    if not 1 <= len(ids) <= MAX_ACKS:
        raise UsageError(f"acks: 1 to {MAX_ACKS} message ids per frame, got {len(ids)}")
    for message_id in ids:
        if type(message_id) is not bytes or len(message_id) != MESSAGE_ID_BYTES:
            raise UsageError(f"acks: a message id is {MESSAGE_ID_BYTES} bytes")
    return bytes([FRAME_ACKS]) + b"".join(ids)


def decode_acks(data: bytes) -> list[bytes]:
    rest = split_format(data, FRAME_ACKS, "acks")
    if not rest or len(rest) % MESSAGE_ID_BYTES:
        raise Truncated(f"acks: {len(rest)} bytes is not a whole number of message ids")
    n = len(rest) // MESSAGE_ID_BYTES
    if n > MAX_ACKS:
        raise Malformed(f"acks: {n} ids, at most {MAX_ACKS} per frame")
    return [rest[i : i + MESSAGE_ID_BYTES] for i in range(0, len(rest), MESSAGE_ID_BYTES)]


def encode_busy(message_id: bytes) -> bytes:
    """9 bytes: on a radio the answer to a dropped DELIVER must cost next to nothing."""
    if type(message_id) is not bytes or len(message_id) != MESSAGE_ID_BYTES:
        raise UsageError(f"busy: a message id is {MESSAGE_ID_BYTES} bytes")
    return bytes([FRAME_BUSY]) + message_id


def decode_busy(data: bytes) -> bytes:
    rest = split_format(data, FRAME_BUSY, "busy")
    if len(rest) != MESSAGE_ID_BYTES:
        raise Truncated(f"busy: {len(rest)} bytes, expected a {MESSAGE_ID_BYTES}-byte message id")
    return rest


# SWIM ---------------------------------------------------------------------------------------------


def encode_swim(command: SwimCommand) -> bytes:
    """`to`/`via` are addressing for the shell and do not go on the wire."""
    fields: list[object]
    match command:
        case SendProbe(seq=seq, suspect=suspect):
            fields = [_PROBE, seq, True] if suspect else [_PROBE, seq]
        case SendAck(seq=seq):
            fields = [_ACK, seq]
        case SendIndirectProbe(seq=seq, target=target):
            fields = [_INDIRECT, seq, target]
        case SendIndirectAck(seq=seq, target=target):
            fields = [_INDIRECT_ACK, seq, target]
        case SendNack(seq=seq, target=target):
            fields = [_NACK, seq, target]
        case SendAlive(node_id=node_id, incarnation=incarnation):
            fields = [_ALIVE, node_id, incarnation]
        case SendSuspect(node_id=node_id, incarnation=incarnation):
            fields = [_SUSPECT, node_id, incarnation]
        case _:
            raise UsageError(f"swim: cannot encode {type(command).__name__}")
    try:
        data = bytes([FRAME_SWIM]) + pack(fields)
        # Decoding our own frame keeps one definition of "valid" (the decoder's) on both sides.
        decode_swim(data, bytes(NODE_ID_BYTES))
    except (ProtocolError, TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"swim: cannot encode {command!r}: {exc}") from None
    return data


def decode_swim(data: bytes, from_id: bytes) -> Input:
    """The membership input a SWIM frame from `from_id` (proven by the link) stands for."""
    rest = split_format(data, FRAME_SWIM, "swim")
    if len(rest) >= MAX_FRAME:
        raise Oversize(f"swim: {len(rest) + 1} bytes, at most {MAX_FRAME}")
    value = unpack_exact(rest, MAX_FRAME)
    if not isinstance(value, list) or not value or type(value[0]) is not int:
        raise Malformed("swim: expected an array starting with a message type")
    tag, args, m = value[0], value[1:], Malformed
    if tag not in _ARITY:
        raise Malformed(f"swim: unknown message type {tag}")
    if len(args) not in _ARITY[tag]:
        raise Malformed(f"swim: wrong number of fields for message type {tag}")
    if tag == _PROBE:
        # One encoding per meaning: a false flag is left out, never sent.
        if len(args) == 2 and args[1] is not True:
            raise Malformed("swim probe: the suspect flag is true or left out")
        return ProbeReceived(from_id=from_id, seq=_uint(args[0], "seq", m), suspect=len(args) == 2)
    if tag == _ACK:
        return ProbeAcked(from_id=from_id, seq=_uint(args[0], "seq", m))
    if tag in _VIA_INPUTS:
        seq, target = _uint(args[0], "seq", m), _node_id(args[1], "target", m)
        return _VIA_INPUTS[tag](from_id=from_id, target=target, seq=seq)
    node, inc = _node_id(args[0], "node_id", m), _uint(args[1], "incarnation", m)
    if tag == _ALIVE:
        return AliveReceived(node_id=node, incarnation=inc)
    return SuspectReceived(node_id=node, incarnation=inc, from_id=from_id)


# HEARTBEAT ----------------------------------------------------------------------------------------


def _digests(value: object, error: _Error) -> dict[int, bytes]:
    if not isinstance(value, Mapping) or len(value) > MAX_DIGESTS:
        raise error(f"heartbeat digests: a map of at most {MAX_DIGESTS} entries")
    for key, digest in value.items():
        if type(key) is not int or not 0 <= key <= 255:
            raise error("heartbeat digests: keys are integers 0..255")
        if type(digest) is not bytes or len(digest) > MAX_DIGEST_BYTES:
            raise error(f"heartbeat digests: values are at most {MAX_DIGEST_BYTES} bytes")
    return dict(sorted(value.items()))


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """A node's signed "I am here", with the digests peers compare to notice they differ.

    `counter` must grow with every heartbeat the node sends, restarts included, or its peers
    refuse the heartbeat as a replay."""

    node_id: bytes
    counter: int
    digests: Mapping[int, bytes]

    def __post_init__(self) -> None:
        _node_id(self.node_id, "heartbeat node_id", UsageError)
        _uint(self.counter, "heartbeat counter", UsageError)
        # A private sorted copy: later changes to the caller's dict cannot reach a frozen object.
        object.__setattr__(self, "digests", _digests(self.digests, UsageError))


def encode_heartbeat(heartbeat: Heartbeat, secrets: NodeSecrets, mesh_id: bytes) -> bytes:
    if heartbeat.node_id != secrets.node_id:
        raise UsageError("heartbeat: a node signs only its own heartbeat")
    body = bytes([FRAME_HEARTBEAT]) + pack(
        [heartbeat.node_id, heartbeat.counter, dict(heartbeat.digests)]
    )
    return body + secrets.sign(HEARTBEAT_KIND, mesh_id, body)


def decode_heartbeat(data: bytes, mesh_id: bytes, keys: Mapping[bytes, bytes]) -> Heartbeat:
    """A heartbeat whose signature verifies under the key `keys` holds for the node it names.

    Does not check the counter: pass the result to `HeartbeatGuard.admit`.

    Raises:
        Truncated, Malformed, Oversize, UnknownVersion: the bytes are not a heartbeat.
        Untrusted: the named node is not in `keys`.
        BadSignature: forged, altered, or signed for another mesh.
    """
    rest = split_format(data, FRAME_HEARTBEAT, "heartbeat")
    if len(rest) >= MAX_FRAME:
        raise Oversize(f"heartbeat: {len(rest) + 1} bytes, at most {MAX_FRAME}")
    value, used = unpack_prefix(rest, MAX_FRAME)
    signature = rest[used:]
    if len(signature) != SIGNATURE_BYTES:
        error = Truncated if len(signature) < SIGNATURE_BYTES else Malformed
        raise error(f"heartbeat: {len(signature)} bytes after the body; a signature is 64")
    if not isinstance(value, list) or len(value) != 3:
        raise Malformed("heartbeat: expected [node_id, counter, digests]")
    node_id = _node_id(value[0], "heartbeat node_id", Malformed)
    counter = _uint(value[1], "heartbeat counter", Malformed)
    digests = _digests(value[2], Malformed)
    key = keys.get(node_id)
    if key is None:
        raise Untrusted(f"heartbeat: node {node_id.hex()} is not a member of this mesh")
    verify(key, HEARTBEAT_KIND, mesh_id, bytes([FRAME_HEARTBEAT]) + rest[:used], signature)
    return Heartbeat(node_id=node_id, counter=counter, digests=digests)


class HeartbeatGuard:
    """The highest counter admitted per node; an equal or lower one is a replay.

    Bounded: past `capacity` nodes the least recently admitted is forgotten (counted in `evicted`),
    after which an old heartbeat of that node could pass once. Admit only what `decode_heartbeat`
    accepted: then every node id here is a member, and a capacity above the mesh's size means
    nothing is ever evicted.
    """

    def __init__(self, capacity: int = 4096) -> None:
        if type(capacity) is not int or capacity < 1:
            raise UsageError("heartbeat guard: capacity must be a positive integer")
        self.capacity = capacity
        self.evicted = 0
        self._last: OrderedDict[bytes, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def last(self, node_id: bytes) -> int | None:
        return self._last.get(node_id)

    def admit(self, heartbeat: Heartbeat) -> None:
        """Record `heartbeat`'s counter; raise `Replay` unless it is above the last admitted."""
        last = self._last.get(heartbeat.node_id)
        if last is not None and heartbeat.counter <= last:
            raise Replay(
                f"heartbeat {heartbeat.counter} from {heartbeat.node_id.hex()}: already at {last}"
            )
        self._last[heartbeat.node_id] = heartbeat.counter
        self._last.move_to_end(heartbeat.node_id)
        while len(self._last) > self.capacity:
            self._last.popitem(last=False)
            self.evicted += 1
