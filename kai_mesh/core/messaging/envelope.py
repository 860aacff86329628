"""`StandardMessage`, the envelope every message on the bus travels in, and its wire format.

Wire format (format byte 1)::

    0x01 ‖ msgpack map {short int key: value} ‖ [64-byte Ed25519 signature]

Keys: 1 from, 2 to, 3 intent, 4 payload, 5 context, 6 priority, 7 auth, 8 timestamp,
9 message_id, 10 reply_to, 11 ttl. Fields at their default (empty context, normal priority, no auth,
no reply_to, null payload) are left out. Addresses are short arrays with binary node ids
(`address.to_wire`); `expires_at` travels as `ttl = expires_at - timestamp`, three bytes instead of
five. The signature, when present, covers every byte before it under the `envelope` kind, so there
is no canonicalisation step and no second encoding. It is needed only where a third party carries a
message onward (DESIGN.md, "The message bus"); in-process messages and messages on an identified
link are not signed.

`EnvelopeDecoder` is a pure machine: limits and keys in, `now` passed per call, and a replay guard
that remembers `(from, message_id)` until the message expires. A message stamped more than
`max_skew` seconds ahead of `now` is refused (`ClockSkew`): otherwise a stamp of now + 10^9 s
would never expire, and its replay-guard entry, never pruned, would outlive everyone else's (the
guard evicts the soonest-expiring first). So every entry leaves the guard within
`max_skew + max_ttl` seconds.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kai_mesh.core.codec import pack, split_format, unpack_prefix
from kai_mesh.core.errors import (
    AddressError,
    BadSignature,
    ClockSkew,
    Expired,
    Malformed,
    Oversize,
    Replay,
    UsageError,
)
from kai_mesh.core.mesh.address import Address, AgentAddress, NodeRef, from_wire, to_wire
from kai_mesh.core.mesh.identity import SIGNATURE_BYTES, NodeSecrets, verify
from kai_mesh.core.messaging.priority import Priority as Priority  # re-exported

ENVELOPE_FORMAT = 1
ENVELOPE_KIND = "envelope"
MESSAGE_ID_BYTES = 8
MAX_TIMESTAMP = 2**40  # seconds; far beyond any real clock, small enough to stay an exact int
DEFAULT_MAX_SKEW = 300  # seconds a message's timestamp may be ahead of ours (policy max_clock_skew)
_INTENT_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

K_FROM, K_TO, K_INTENT, K_PAYLOAD, K_CONTEXT, K_PRIORITY = 1, 2, 3, 4, 5, 6
K_AUTH, K_TIMESTAMP, K_MESSAGE_ID, K_REPLY_TO, K_TTL = 7, 8, 9, 10, 11
_KNOWN_KEYS = frozenset(range(1, 12))


@dataclass(frozen=True, slots=True, kw_only=True)
class StandardMessage:
    """One message on the bus. Validates itself on construction (raises `Malformed`)."""

    sender: AgentAddress
    to: Address
    intent: str
    payload: Any = None
    context: Mapping[str, Any] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    auth: Mapping[str, Any] | None = None
    timestamp: int
    message_id: bytes
    reply_to: bytes | None = None
    expires_at: int

    def __post_init__(self) -> None:
        if not isinstance(self.sender, AgentAddress):
            raise Malformed("from: must be an agent address kai://NODE/AGENT")
        if not isinstance(self.intent, str) or not _INTENT_RE.fullmatch(self.intent):
            raise Malformed(
                f"intent {self.intent!r}: 1-64 characters a-z 0-9 . _ -, starting alphanumeric"
            )
        if not isinstance(self.context, Mapping) or not all(
            isinstance(k, str) for k in self.context
        ):
            raise Malformed("context: must be a map with string keys")
        if self.auth is not None and (
            not isinstance(self.auth, Mapping) or not all(isinstance(k, str) for k in self.auth)
        ):
            raise Malformed("auth: must be a map with string keys")
        if not isinstance(self.priority, Priority):
            raise Malformed("priority: must be a Priority")
        _check_id("message_id", self.message_id)
        if self.reply_to is not None:
            _check_id("reply_to", self.reply_to)
        for name in ("timestamp", "expires_at"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value < MAX_TIMESTAMP:
                raise Malformed(f"{name}: must be whole seconds since the epoch")
        if self.expires_at <= self.timestamp:
            raise Malformed("expires_at: must be later than timestamp")

    @property
    def ttl(self) -> int:
        return self.expires_at - self.timestamp


def _check_id(name: str, value: object) -> None:
    if not isinstance(value, bytes) or not 8 <= len(value) <= 16:
        raise Malformed(f"{name}: must be 8 to 16 bytes")


@dataclass(frozen=True, slots=True)
class LinkEnds:
    """The two node ids an authenticated link has already proven to both of its ends.

    Over such a link an unsigned envelope leaves them out: `from` and `to` become bare agent
    names, meaning "on the node that sent this" and "on the node receiving it" — 38 bytes fewer
    per message, which on a radio is airtime. Signed envelopes never elide (a third party carrying
    one must see every field the signature covers).
    """

    sender: bytes
    receiver: bytes


def _address_out(address: Address, node_id: bytes | None) -> list[bytes | str] | str:
    if isinstance(address, AgentAddress) and node_id and address.node.node_id == node_id:
        return address.agent
    return to_wire(address)


def _address_in(value: object, node_id: bytes | None, name: str) -> Address:
    if isinstance(value, str):
        if node_id is None:
            raise Malformed(f"{name}: a bare agent name is only valid on an authenticated link")
        try:
            return AgentAddress(NodeRef(node_id=node_id), value)
        except AddressError as exc:
            raise Malformed(f"{name}: {exc}") from None
    if not isinstance(value, list):
        raise Malformed(f"field {name} has the wrong type ({type(value).__name__})")
    return from_wire(value)


def encode(
    message: StandardMessage,
    signer: NodeSecrets | None = None,
    mesh_id: bytes = b"",
    *,
    link: LinkEnds | None = None,
) -> bytes:
    """Serialize `message`; with `signer`, append its signature bound to `mesh_id`; with `link`
    (and no signer), leave out the node ids the link proves (see `LinkEnds`).

    Raises:
        UsageError: the payload, context or auth holds something msgpack cannot carry.
    """
    ends = None if signer is not None else link
    fields: dict[int, Any] = {
        K_FROM: _address_out(message.sender, ends.sender if ends else None),
        K_TO: _address_out(message.to, ends.receiver if ends else None),
        K_INTENT: message.intent,
        K_TIMESTAMP: message.timestamp,
        K_MESSAGE_ID: message.message_id,
        K_TTL: message.ttl,
    }
    if message.payload is not None:
        fields[K_PAYLOAD] = message.payload
    if message.context:
        fields[K_CONTEXT] = dict(message.context)
    if message.priority is not Priority.NORMAL:
        fields[K_PRIORITY] = int(message.priority)
    if message.auth is not None:
        fields[K_AUTH] = dict(message.auth)
    if message.reply_to is not None:
        fields[K_REPLY_TO] = message.reply_to
    try:
        data = bytes([ENVELOPE_FORMAT]) + pack(fields)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"message cannot be encoded: {exc}") from None
    if signer is not None:
        data += signer.sign(ENVELOPE_KIND, mesh_id, data)
    return data


def _field(
    fields: dict[Any, Any], key: int, kind: type | tuple[type, ...], name: str, default: Any = ...
) -> Any:
    if key not in fields:
        if default is ...:
            raise Malformed(f"missing field {name}")
        return default
    value = fields[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Malformed(f"field {name} has the wrong type ({type(value).__name__})")
    return value


def parse_fields(fields: object, max_ttl: int, link: LinkEnds | None = None) -> StandardMessage:
    """Build a message from a decoded field map; `expires_at` is capped at `max_ttl`; bare agent
    names in `from`/`to` resolve through `link` (see `LinkEnds`)."""
    if not isinstance(fields, dict):
        raise Malformed("an envelope is a map")
    unknown = set(fields) - _KNOWN_KEYS
    if unknown:
        raise Malformed(f"unknown field keys {sorted(map(repr, unknown))}")
    if K_FROM not in fields or K_TO not in fields:
        raise Malformed(f"missing field {'from' if K_FROM not in fields else 'to'}")
    sender = _address_in(fields[K_FROM], link.sender if link else None, "from")
    if not isinstance(sender, AgentAddress):
        raise Malformed("from: must be an agent address, not a service")
    timestamp = _field(fields, K_TIMESTAMP, int, "timestamp")
    ttl = _field(fields, K_TTL, int, "ttl")
    if ttl <= 0:
        raise Malformed("ttl: must be positive")
    priority_value = _field(fields, K_PRIORITY, int, "priority", int(Priority.NORMAL))
    try:
        priority = Priority(priority_value)
    except ValueError:
        raise Malformed(f"priority {priority_value} is not 0..3") from None
    return StandardMessage(
        sender=sender,
        to=_address_in(fields[K_TO], link.receiver if link else None, "to"),
        intent=_field(fields, K_INTENT, str, "intent"),
        payload=fields.get(K_PAYLOAD),
        context=_field(fields, K_CONTEXT, dict, "context", {}),
        priority=priority,
        auth=_field(fields, K_AUTH, dict, "auth", None),
        timestamp=timestamp,
        message_id=_field(fields, K_MESSAGE_ID, bytes, "message_id"),
        reply_to=_field(fields, K_REPLY_TO, bytes, "reply_to", None),
        expires_at=timestamp + min(ttl, max_ttl),
    )


class ReplayGuard:
    """Remembers `(from, message_id)` of accepted messages until they expire.

    Bounded: past `capacity` entries the one that expires soonest is forgotten early (counted in
    `evicted`), so a flood of messages cannot grow memory without limit.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self.evicted = 0
        self._expiry: dict[tuple[AgentAddress, bytes], int] = {}
        # The sequence number breaks ties between equal expiries, so the heap never compares two
        # addresses (they have no order: that raised TypeError out of `decode`).
        self._heap: list[tuple[int, int, AgentAddress, bytes]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._expiry)

    def seen(self, message: StandardMessage, now: int) -> bool:
        expiry = self._expiry.get((message.sender, message.message_id))
        return expiry is not None and expiry >= now

    def admit(self, message: StandardMessage, now: int) -> None:
        """Record `message`; raise `Replay` if it was admitted before and has not expired."""
        self.prune(now)
        key = (message.sender, message.message_id)
        if key in self._expiry:
            raise Replay(f"message {message.message_id.hex()} from {message.sender} seen before")
        self._expiry[key] = message.expires_at
        heapq.heappush(self._heap, (message.expires_at, next(self._seq), *key))
        while len(self._expiry) > self.capacity:
            _, _, sender, mid = heapq.heappop(self._heap)
            if self._expiry.pop((sender, mid), None) is not None:
                self.evicted += 1

    def forget(self, message: StandardMessage) -> None:
        """Take back an `admit`: the message was refused after decoding (its peer's requests
        were full), so the copy its sender sends again must not be taken for a replay."""
        self._expiry.pop((message.sender, message.message_id), None)

    def prune(self, now: int) -> None:
        while self._heap and self._heap[0][0] < now:
            expiry, _, sender, mid = heapq.heappop(self._heap)
            if self._expiry.get((sender, mid)) == expiry:
                del self._expiry[(sender, mid)]


@dataclass(frozen=True, slots=True)
class Decoded:
    message: StandardMessage
    signed: bool


class EnvelopeDecoder:
    """Bytes in, a checked `StandardMessage` out, or a `ProtocolError` subclass saying why not.

    Checks, in order: size, format byte, msgpack, fields, signature, expiry, clock skew,
    replay. The replay guard is consulted last so that a forged, expired or future message
    cannot occupy a slot in it. `verify_key_for(node_id)` returns the Ed25519 key of a node this
    mesh knows, or None. `max_skew`: seconds a timestamp may be ahead of `now` (the governance
    policy's `max_clock_skew` sets it live).
    """

    def __init__(
        self,
        *,
        mesh_id: bytes,
        max_bytes: int,
        max_ttl: int,
        verify_key_for: Callable[[bytes], bytes | None],
        require_signature: bool = False,
        replay_capacity: int = 100_000,
        max_skew: int = DEFAULT_MAX_SKEW,
    ) -> None:
        self.mesh_id = mesh_id
        self.max_bytes = max_bytes
        self.max_ttl = max_ttl
        self.verify_key_for = verify_key_for
        self.require_signature = require_signature
        self.max_skew = max_skew
        self.replays = ReplayGuard(replay_capacity)

    def decode(
        self, data: bytes, now: int, *, link: LinkEnds | None = None, remember: bool = True
    ) -> Decoded:
        """Raises a `ProtocolError` subclass for every kind of bad input, and nothing else.

        `link`: the node ids the transport proved, for envelopes that leave them out.
        `remember=False` skips the replay guard, for a caller that de-duplicates durably itself
        (messages that must arrive are retried on purpose)."""
        if len(data) > self.max_bytes:
            raise Oversize(f"envelope of {len(data)} bytes exceeds the limit of {self.max_bytes}")
        rest = split_format(data, ENVELOPE_FORMAT, "envelope")
        fields, used = unpack_prefix(rest, self.max_bytes)
        trailer = rest[used:]
        if trailer and len(trailer) != SIGNATURE_BYTES:
            raise Malformed(f"{len(trailer)} bytes after the envelope; a signature is 64")
        message = parse_fields(fields, self.max_ttl, None if trailer else link)
        if trailer:
            self._check_signature(message, data[: 1 + used], trailer)
        elif self.require_signature:
            raise BadSignature("this envelope must be signed and is not")
        if message.expires_at < now:
            raise Expired(
                f"message {message.message_id.hex()} expired {now - message.expires_at}s ago"
            )
        if message.timestamp > now + self.max_skew:
            raise ClockSkew(
                f"message {message.message_id.hex()} is stamped {message.timestamp - now}s ahead "
                f"of this node's clock (at most {self.max_skew}s): one of the two clocks is wrong"
            )
        if remember:
            self.replays.admit(message, now)
        return Decoded(message, bool(trailer))

    def _check_signature(self, message: StandardMessage, body: bytes, signature: bytes) -> None:
        node_id = message.sender.node.node_id
        if node_id is None:
            raise BadSignature("a signed envelope must name its sender by node id")
        key = self.verify_key_for(node_id)
        if key is None:
            raise BadSignature(f"signer {node_id.hex()} is not a known node of this mesh")
        verify(key, ENVELOPE_KIND, self.mesh_id, body, signature)
