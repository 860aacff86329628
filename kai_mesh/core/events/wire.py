"""Mesh events on the wire: one frame type, two shapes, small enough for one radio packet.

::

    EVENT     0x1E ‖ msgpack [1, topic, seq, at, fields]
    INTEREST  0x1E ‖ msgpack [2, [topic, ...], ttl]

`topic` is a small integer for the built-in topics (`BUILTIN`: `task.created` is 1 byte on the
wire instead of 13) and the text for user topics. `seq` numbers the sender's events (the receiver
drops a duplicate the transport delivered twice), `at` is the sender's wall time in whole seconds
(for people: nothing is decided by it), `fields` a small map from names to plain values. The
sender is not on the wire: an event goes straight to each interested node over a link that
proves who sent it (DESIGN.md: one authentication is enough), so 16 bytes of node id are saved.

An INTEREST lists the topics a node wants (`*`: all) and for how many seconds the list holds;
peers keep it that long and send that node only what it asked for.

Why these limits: an EVENT frame is at most `MAX_EVENT` (400) bytes so it always leaves as one
packet on a Reticulum link (430 bytes of payload) instead of a Resource transfer; `fields` holds at
most 32 entries nested at most 4 deep. Every decoder raises a `ProtocolError` subclass for bad
input, and nothing else (tests/core/events: Hypothesis).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kai_mesh.core.codec import pack, split_format, unpack_exact
from kai_mesh.core.errors import Malformed, Oversize, UsageError
from kai_mesh.core.messaging.frames import FRAME_EVENT

_EVENT, _INTEREST = 1, 2
MAX_EVENT = 400  # bytes of an EVENT frame: one radio packet
MAX_INTEREST = 400
MAX_TOPICS = 32  # topics one INTEREST names
MAX_FIELDS = 32  # entries in `fields`, at every level
MAX_FIELD_DEPTH = 4
MAX_TTL = 86_400
MAX_UINT = 2**63
ALL = "*"

#: Built-in topics and their wire codes (never renumber: peers of older versions read them).
BUILTIN: Mapping[str, int] = {
    "task.created": 1,
    "agent.overloaded": 2,
    "queue.backlog": 3,
    "node.failed": 4,
    "service.scaled": 5,
}
_BY_CODE = {code: name for name, code in BUILTIN.items()}
#: Topics that ask for must-arrive delivery by default (policy `must_arrive_topics` adds more):
#: a task that nobody hears of waits for the next reconciliation to be seen.
MUST_ARRIVE: frozenset[str] = frozenset({"task.created"})

TOPIC_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")


def check_topic(topic: object, *, pattern: bool = False) -> str:
    """A topic (or, with `pattern`, also `*`).

    Raises:
        UsageError: one line saying what a topic looks like.
    """
    if isinstance(topic, str) and (TOPIC_RE.fullmatch(topic) or (pattern and topic == ALL)):
        return topic
    raise UsageError(
        f"topic {topic!r}: 1-64 characters of letters, digits and . _ : / -, "
        "starting with a letter or digit" + (" (or * for all)" if pattern else "")
    )


def matches(pattern: str, topic: str) -> bool:
    return pattern in (ALL, topic)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One event as a receiver knows it: `origin` is the node the link proved."""

    topic: str
    origin: bytes
    seq: int
    at: int
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Interest:
    topics: frozenset[str]
    ttl: int


def check_fields(fields: object, depth: int = 1) -> dict[str, Any]:
    """Validate an event's fields: a map of names to None, booleans, integers within ±2**63,
    finite floats, text, bytes, lists and maps of the same.

    Raises:
        Malformed: one line saying which field is wrong.
    """
    if not isinstance(fields, Mapping):
        raise Malformed("event fields: must be a map")
    if len(fields) > MAX_FIELDS:
        raise Malformed(f"event fields: more than {MAX_FIELDS} entries")
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            raise Malformed("event fields: names are 1-64 characters of text")
        out[key] = _check_value(key, value, depth)
    return out


def _check_value(key: str, value: object, depth: int) -> Any:
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, int):
        if not -MAX_UINT <= value < MAX_UINT:
            raise Malformed(f"event field {key}: integer out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Malformed(f"event field {key}: not a finite number")
        return value
    if depth >= MAX_FIELD_DEPTH and isinstance(value, list | tuple | Mapping):
        raise Malformed(f"event field {key}: nested deeper than {MAX_FIELD_DEPTH}")
    if isinstance(value, list | tuple):
        if len(value) > MAX_FIELDS:
            raise Malformed(f"event field {key}: more than {MAX_FIELDS} items")
        return [_check_value(key, v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        return check_fields(value, depth + 1)
    raise Malformed(f"event field {key}: {type(value).__name__} is not a plain value")


def encode_event(topic: str, seq: int, at: int, fields: Mapping[str, Any]) -> bytes:
    """The EVENT frame.

    Raises:
        UsageError: a bad topic or seq; Malformed: bad fields; Oversize: over `MAX_EVENT`.
    """
    check_topic(topic)
    if type(seq) is not int or not 0 <= seq < MAX_UINT:
        raise UsageError("event seq: an integer 0 <= seq < 2**63")
    at = max(0, min(int(at), MAX_UINT - 1))
    wire_topic: int | str = BUILTIN.get(topic, topic)
    frame = bytes([FRAME_EVENT]) + pack([_EVENT, wire_topic, seq, at, check_fields(fields)])
    if len(frame) > MAX_EVENT:
        raise Oversize(f"event {topic}: {len(frame)} bytes, more than {MAX_EVENT}")
    return frame


def encode_interest(topics: frozenset[str] | set[str], ttl: int) -> bytes:
    """The INTEREST frame (topics sorted, so one set has one encoding).

    Raises:
        UsageError: a bad topic, too many, or a ttl out of range.
    """
    names = sorted(check_topic(t, pattern=True) for t in topics)
    if len(names) > MAX_TOPICS:
        raise UsageError(f"interest: more than {MAX_TOPICS} topics")
    if type(ttl) is not int or not 1 <= ttl <= MAX_TTL:
        raise UsageError(f"interest ttl: 1 to {MAX_TTL} seconds")
    wire = [BUILTIN.get(t, t) for t in names]
    return bytes([FRAME_EVENT]) + pack([_INTEREST, wire, ttl])


def _topic(value: object) -> str:
    if type(value) is int:
        name = _BY_CODE.get(value)
        if name is None:
            raise Malformed(f"event: unknown topic code {value}")
        return name
    if isinstance(value, str) and (TOPIC_RE.fullmatch(value) or value == ALL):
        return value
    raise Malformed("event: a topic is a built-in code or 1-64 characters of text")


def decode(data: bytes, origin: bytes) -> Event | Interest:
    """An EVENT (as an `Event` from `origin`, the node the link proved) or an INTEREST.

    Raises:
        ProtocolError: Truncated, Malformed, Oversize, UnknownVersion: nothing else.
    """
    if isinstance(data, bytes | bytearray) and len(data) > max(MAX_EVENT, MAX_INTEREST):
        raise Oversize(f"event frame: more than {max(MAX_EVENT, MAX_INTEREST)} bytes")
    rest = split_format(data, FRAME_EVENT, "event frame")
    value = unpack_exact(rest, MAX_EVENT, depth=MAX_FIELD_DEPTH + 2)
    if not isinstance(value, list) or not value or type(value[0]) is not int:
        raise Malformed("event frame: expected [kind, ...]")
    if value[0] == _EVENT:
        if len(value) != 5:
            raise Malformed("event: expected [1, topic, seq, at, fields]")
        _, topic, seq, at, fields = value
        name = _topic(topic)
        if name == ALL:
            raise Malformed("event: * is not a topic to publish")
        for what, n in (("seq", seq), ("at", at)):
            if type(n) is not int or not 0 <= n < MAX_UINT:
                raise Malformed(f"event {what}: an integer 0 <= x < 2**63")
        return Event(topic=name, origin=origin, seq=seq, at=at, fields=check_fields(fields))
    if value[0] == _INTEREST:
        if len(value) != 3 or not isinstance(value[1], list):
            raise Malformed("interest: expected [2, [topics], ttl]")
        if len(value[1]) > MAX_TOPICS:
            raise Malformed(f"interest: more than {MAX_TOPICS} topics")
        ttl = value[2]
        if type(ttl) is not int or not 1 <= ttl <= MAX_TTL:
            raise Malformed(f"interest ttl: 1 to {MAX_TTL} seconds")
        return Interest(topics=frozenset(_topic(t) for t in value[1]), ttl=ttl)
    raise Malformed(f"event frame: unknown kind {value[0]}")
