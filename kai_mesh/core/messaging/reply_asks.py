"""Getting back a lost reply: the requester asks, the answerer sends the reply again.

A plain request (not must-arrive) and its reply go as single packets where they fit, and a packet
on a lossy radio can vanish: at 5 % loss one reply in twenty never came back, and the caller
waited out its whole deadline for nothing. Re-sending the request on a timer would fix that at the
price of sending every request, however large, again while a slow agent is still working on it.
Instead the requester asks, with a 10-byte ASK frame, and the answerer, who knows what became of
the request, says which of three things happened::

    0x16 ‖ op ‖ 8-byte message id
      op 0 WHERE     requester: where is the reply to this request?
      op 1 WORKING   answerer: still working on it, or the reply left a moment ago
      op 2 UNKNOWN   answerer: never got it (the request was lost): send it again
    and a reply that was sent and is asked for again is simply sent again (an envelope).

Nothing is sent while packets arrive: the first ask waits a few round trips after the request
left, and asks back off to `AskSchedule.cap`. So a mesh without loss pays nothing, and a lossy one
pays about 80 bytes on the air per ask (the frame in a Reticulum link packet). A reply that left
less than a `grace` before the ask came (a round trip and a reply's airtime: the shell derives it
from the link) is not sent again: the ask crossed it on the way, and sending a large reply twice
would cost the radio a whole Resource.

A resent request reaches an answerer that never saw it (that is what UNKNOWN means), so the agent
still runs once per answerer run; an answerer that restarted between the two copies runs it again
(plain requests are at-least-once; `must_arrive` is exactly-once through the store's replay
table). Both machines are pure: the shell passes `now` (monotonic seconds) and the wall clock
where a message's `expires_at` is compared.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import IntEnum

from kai_mesh.core.codec import split_format
from kai_mesh.core.errors import Malformed, Truncated, UsageError
from kai_mesh.core.messaging.envelope import MESSAGE_ID_BYTES
from kai_mesh.core.messaging.frames import FRAME_ASK

ASK_BYTES = 2 + MESSAGE_ID_BYTES
MAX_ANSWERED = 512  # requests remembered per node run
MAX_ANSWERED_BYTES = 2 * 1024 * 1024  # replies kept to be sent again


class AskOp(IntEnum):
    WHERE = 0
    WORKING = 1
    UNKNOWN = 2


def encode_ask(op: AskOp, message_id: bytes) -> bytes:
    if type(message_id) is not bytes or len(message_id) != MESSAGE_ID_BYTES:
        raise UsageError(f"ask: a message id is {MESSAGE_ID_BYTES} bytes")
    return bytes([FRAME_ASK, int(op)]) + message_id


def decode_ask(data: bytes) -> tuple[AskOp, bytes]:
    """The op and message id; raises a `ProtocolError` subclass for anything else."""
    rest = split_format(data, FRAME_ASK, "ask")
    if len(rest) != 1 + MESSAGE_ID_BYTES:
        raise Truncated(f"ask: {len(rest) + 1} bytes, an ask is {ASK_BYTES}")
    if rest[0] not in AskOp._value2member_map_:
        raise Malformed(f"ask: op {rest[0]} is not known")
    return AskOp(rest[0]), rest[1:]


@dataclass(slots=True, kw_only=True)
class AskSchedule:
    """When a requester that has not heard its reply asks next, and whether it may resend.

    `first` is the wait after the request left (a few round trips: the caller derives it from
    the link); each ask doubles the wait up to `cap`. `resends` bounds how often an UNKNOWN
    answer sends the request again: a request the answerer refuses (expired, malformed) is
    answered UNKNOWN every time, and must not loop."""

    first: float
    cap: float = 60.0
    resends: int = 2
    next_at: float = 0.0
    _wait: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise UsageError("ask: the first wait must be positive and at most the cap")
        if self.resends < 0:
            raise UsageError("ask: resends must not be negative")

    def start(self, now: float) -> None:
        """The request (or a resent copy) left at `now`."""
        self._wait = self.first
        self.next_at = now + self.first

    def asked(self, now: float) -> None:
        """An ask left at `now`: back off."""
        self._wait = min(self.cap, self._wait * 2)
        self.next_at = now + self._wait

    def may_resend(self) -> bool:
        """The answerer never got the request: True (once per allowed resend) to send it again."""
        if self.resends == 0:
            return False
        self.resends -= 1
        return True


@dataclass(frozen=True, slots=True)
class Resend:
    """Send this reply again, at the request's priority."""

    reply: bytes
    priority: int


@dataclass(slots=True)
class _Served:
    expires_at: int
    priority: int
    reply: bytes | None = None
    sent_at: float | None = None  # None while the reply is being sent


Key = tuple[bytes, bytes]  # (node id the link proved, message id)


class AnsweredRequests:
    """What this node did with the requests it got, until they expire, to answer an ask.

    Bounded: at most `MAX_ANSWERED` requests and `MAX_ANSWERED_BYTES` of replies; the oldest
    are forgotten first (an ask for one of those is answered UNKNOWN and costs a resend)."""

    def __init__(
        self, *, max_entries: int = MAX_ANSWERED, max_bytes: int = MAX_ANSWERED_BYTES
    ) -> None:
        self._served: OrderedDict[Key, _Served] = OrderedDict()
        self._bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._served)

    def serving(self, key: Key, expires_at: int, priority: int, wall: float) -> None:
        """A request arrived and goes to the agent."""
        self._prune(wall)
        self._served[key] = _Served(expires_at=expires_at, priority=priority)
        self._served.move_to_end(key)
        self._bound()

    def replying(self, key: Key, reply: bytes) -> None:
        """The reply is being sent now (asks are told WORKING until `sent`)."""
        served = self._served.get(key)
        if served is None:
            return
        self._bytes += len(reply) - len(served.reply or b"")
        served.reply = reply
        served.sent_at = None
        self._bound()

    def sent(self, key: Key, now: float) -> None:
        """The reply left (or the transport gave up on it: an ask will send it again)."""
        served = self._served.get(key)
        if served is not None and served.reply is not None:
            served.sent_at = now

    def answer(self, key: Key, now: float, wall: float, grace: float) -> AskOp | Resend:
        """What to say to an ask: WORKING, UNKNOWN, or the reply to send again. An ask that
        comes within `grace` of the reply leaving crossed it, and is told WORKING."""
        self._prune(wall)
        served = self._served.get(key)
        if served is None:
            return AskOp.UNKNOWN
        if served.reply is None or served.sent_at is None or now - served.sent_at < grace:
            return AskOp.WORKING
        served.sent_at = now  # sent again now: the next ask gets the same grace
        return Resend(served.reply, served.priority)

    def _prune(self, wall: float) -> None:
        for key in [k for k, s in self._served.items() if s.expires_at <= wall]:
            self._drop(key)

    def _bound(self) -> None:
        while self._served and (
            len(self._served) > self._max_entries or self._bytes > self._max_bytes
        ):
            self._drop(next(iter(self._served)))

    def _drop(self, key: Key) -> None:
        served = self._served.pop(key)
        self._bytes -= len(served.reply or b"")
