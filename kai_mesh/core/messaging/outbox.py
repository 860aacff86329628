"""The outbox scheduler: when to send a message that must arrive again, and when to stop.

Sans-IO in the manner of aioquic's connection: every entry point takes `now` (seconds on one
monotonic clock the caller chooses; the runtime uses trio's), `get_timer()` says when to call
`handle_timer(now)` next, and the machine answers each input with commands for the shell
(`SendNow`, `CancelSend`, `HandOff`, `Record`, `MarkDelivered`, `Expire`). It holds no message
bytes, reads no clock, draws no randomness of its own (the jitter comes from the rng it is given)
and does no I/O: the shell (runtime/messaging/outbox.py) keeps the rows, the store and the links.

Each message is in one phase; these are all the transitions the code below makes:

    phase        input                    next phase    commands
    WAITING      timer (due, expired)     (gone)        Expire
    WAITING      timer (due)              SENDING       SendNow (fresh_link after a first try)
    WAITING      heard from its peer      WAITING       (due now, see below)
    SENDING      timer (attempt_timeout)  SENDING       CancelSend
    SENDING      heard from its peer      SENDING       CancelSend, if begun `policy.cap` ago
    SENDING      sent                     HANDING_OFF   HandOff, if the hand-off is due
    SENDING      sent                     WAITING       Record (due after the backoff)
    HANDING_OFF  handed_off               WAITING       Record (due after the backoff)
    WAITING      busy (recipient)         WAITING       (due after its backoff, same link)
    any          acked                    (gone)        MarkDelivered

Decisions, with their reasons:

- Backoff (`core.retry`): after the `a`-th attempt went unacknowledged the next is due
  `policy.delay(a, rng.random())` later — or at once when the attempt was cancelled because the
  recipient was heard again.
- Heard from the recipient (a heartbeat, any message): a message already tried is due now, which is
  what bounds delivery after a partition heals, unless its last attempt left without an error less
  than `policy.base` ago (its ack may still be on the way). An attempt still in flight that began
  `policy.cap` or more ago began before the heal, over a link that may swallow it: it is
  cancelled and begun again.
- An attempt that cannot even hand the frame over in `attempt_timeout` is cancelled; it counts
  as a failed attempt.
- Hand-off: the first attempt that ends `policy.handoff_after` or more after the message was
  committed, while it is not handed off yet, leaves it with store-and-forward (when the shell has
  one) before the next attempt is scheduled; a hand-off not taken is tried after the next attempt.
- Expiry is judged when an attempt comes due: a message past its expiry is given up, not sent.
- Each finished attempt is recorded (`Record`) so that a restart resumes its count; a message
  added again after a restart (`add` with its `attempts`) is due at once, over a fresh link.
- A recipient that answers BUSY (its DELIVER slots are full: it dropped the frame, so no ack
  will come) is reachable and slow, not lost, so the scheduler treats it as TCP treats
  congestion: the peer gets a **window** of attempts in flight (sent, and neither acked nor
  past the message's backoff), halved on every BUSY (at least 1) and grown by one per ack;
  past `MAX_WINDOW` the peer is unlimited again, as every peer starts. Attempts past the window
  wait for an answer to open it; a message answered BUSY keeps its place in the window until
  it is due again after its backoff, over the same link (the link works: resetting it would
  cost a handshake for nothing), and hearing from a congested peer does not make its messages
  due at once (hearing it is no news).
  Without this, a recipient with 8 slots and a sender with 1,722 messages saw 63,648 attempts
  (the soak: every heartbeat made every waiting message due, each on a fresh link).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from kai_mesh.core.errors import UsageError
from kai_mesh.core.messaging.retry import RetryPolicy

__all__ = [
    "ATTEMPT_TIMEOUT",
    "CancelSend",
    "Command",
    "Expire",
    "HandOff",
    "MarkDelivered",
    "OutboxScheduler",
    "Phase",
    "RandomSource",
    "Record",
    "SendNow",
]

ATTEMPT_TIMEOUT = 60.0  # an attempt that cannot even hand the frame over in this long has failed
#: A congested peer's window grows past this back to unlimited. 64: several times a recipient's
#: DELIVER slots (8), so a peer that has caught up is not held to a window it no longer needs.
MAX_WINDOW = 64

INTERRUPTED = "interrupted: the recipient was heard again"
BUSY = "busy: the recipient's deliveries were full"


class RandomSource(Protocol):
    """What the scheduler needs of a `random.Random`, which the caller seeds and passes in."""

    def random(self) -> float: ...


def _check_id(message_id: bytes) -> None:
    if not message_id:
        raise UsageError("a message id is required")


# ---- commands (imperative: what the shell must do) ----------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SendNow:
    """Send the message to `peer` now, and call `sent()` when the attempt is over. With
    `fresh_link`, over a newly opened link: one that already lost this message is not trusted."""

    message_id: bytes
    peer: bytes
    fresh_link: bool

    def __post_init__(self) -> None:
        _check_id(self.message_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelSend:
    """Interrupt the attempt under way; then call `sent(..., cancelled=True)` as usual."""

    message_id: bytes

    def __post_init__(self) -> None:
        _check_id(self.message_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class HandOff:
    """Leave the message with store-and-forward; then call `handed_off()` with whether it was
    taken."""

    message_id: bytes
    peer: bytes

    def __post_init__(self) -> None:
        _check_id(self.message_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """Persist the message's progress: attempts so far, why the last one failed, handed off."""

    message_id: bytes
    attempts: int
    last_error: str | None
    handed_off: bool

    def __post_init__(self) -> None:
        _check_id(self.message_id)
        if self.attempts < 1:
            raise UsageError("a record follows an attempt")


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkDelivered:
    """The recipient acknowledged the message: it is settled, the scheduler forgot it."""

    message_id: bytes

    def __post_init__(self) -> None:
        _check_id(self.message_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Expire:
    """The message expired unacknowledged: give it up. The scheduler forgot it."""

    message_id: bytes

    def __post_init__(self) -> None:
        _check_id(self.message_id)


Command = SendNow | CancelSend | HandOff | Record | MarkDelivered | Expire


# ---- per-message state -------------------------------------------------------------------------


class Phase(enum.Enum):
    WAITING = "waiting"  # for `due`
    SENDING = "sending"  # an attempt is under way
    HANDING_OFF = "handing_off"  # store-and-forward is being offered the message


class _Cancel(enum.Enum):
    HEARD = "heard"  # the recipient came back: begin again at once
    TIMEOUT = "timeout"  # the attempt took too long: a failed attempt


@dataclass(slots=True)
class _Message:
    peer: bytes
    created_at: float
    expires_at: float
    attempts: int
    last_error: str | None
    handed_off: bool
    phase: Phase = Phase.WAITING
    due: float = 0.0  # WAITING: when the next attempt is due
    started: float = 0.0  # SENDING: when the attempt began
    cancel: _Cancel | None = None  # SENDING: why it was cancelled, once it was
    tried_at: float | None = None  # when the last attempt ended, if one did since `add`
    again_now: bool = False  # HANDING_OFF: the next attempt goes at once
    awaiting: bool = False  # WAITING: sent without error, its answer may still come (window)
    busy: bool = False  # the last answer was BUSY: the link works, keep it
    held: bool = False  # WAITING: due, but its peer's window is full
    busy_answer: bool = False  # SENDING: BUSY came back before the send was over


class OutboxScheduler:
    """See the module docstring. Raises `UsageError` for a message id added twice."""

    def __init__(
        self,
        policy: RetryPolicy,
        rng: RandomSource,
        *,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
        can_hand_off: bool = False,
    ) -> None:
        if attempt_timeout <= 0:
            raise UsageError("attempt_timeout must be positive")
        self.policy = policy
        self.attempt_timeout = attempt_timeout
        self.can_hand_off = can_hand_off
        self._rng = rng
        self._messages: dict[bytes, _Message] = {}
        #: Peers that answered BUSY: attempts that may await an answer at once (module doc).
        self._windows: dict[bytes, int] = {}

    # ---- inputs -------------------------------------------------------------------------------

    def add(
        self,
        message_id: bytes,
        peer: bytes,
        *,
        now: float,
        created_at: float,
        expires_at: float,
        attempts: int = 0,
        last_error: str | None = None,
        handed_off: bool = False,
    ) -> None:
        """A message committed now, or found waiting at a start (with its progress so far);
        its next attempt is due at once. `created_at`, `expires_at` on the scheduler's clock."""
        _check_id(message_id)
        if message_id in self._messages:
            raise UsageError(f"message {message_id.hex()} is in the outbox already")
        if attempts < 0:
            raise UsageError("attempts must not be negative")
        self._messages[message_id] = _Message(
            peer, created_at, expires_at, attempts, last_error, handed_off, due=now
        )

    def heard_from(self, peer: bytes, now: float) -> list[Command]:
        """The recipient `peer` is back: retry what waits for it now (see the docstring)."""
        out: list[Command] = []
        for message_id, m in self._messages.items():
            if m.peer != peer:
                continue
            if m.phase is Phase.SENDING:
                if m.cancel is None and now - m.started >= self.policy.cap:
                    m.cancel = _Cancel.HEARD
                    out.append(CancelSend(message_id=message_id))
                continue
            if m.phase is not Phase.WAITING or not m.attempts or peer in self._windows:
                continue
            recent = m.tried_at is not None and now - m.tried_at < self.policy.base
            if m.last_error is None and recent:
                continue  # its ack may still be on the way
            m.due = min(m.due, now)
        return out

    def acked(self, peer: bytes, message_ids: Iterable[bytes], now: float) -> list[Command]:
        """`peer` acknowledged these messages (an ACKS frame, or a reply to one). An id not
        waiting, or not sent to `peer`, is ignored: settled already, or not its to settle."""
        out: list[Command] = []
        for message_id in message_ids:
            m = self._messages.get(message_id)
            if m is None or m.peer != peer:
                continue
            del self._messages[message_id]
            out.append(MarkDelivered(message_id=message_id))
            window = self._windows.get(peer)
            if window is not None:
                self._windows[peer] = window + 1
                if window + 1 > MAX_WINDOW:
                    del self._windows[peer]
        if out:
            self._release(peer, now)
        return out

    def busy(self, peer: bytes, message_id: bytes, now: float) -> list[Command]:
        """`peer` dropped this message's DELIVER because its slots were full (a BUSY answer):
        halve the peer's window and try the message again after its backoff on the same link.
        Ignored for a message not waiting for `peer`."""
        m = self._messages.get(message_id)
        if m is None or m.peer != peer:
            return []
        window = self._windows.get(peer)
        if window is None:  # first BUSY: start from what is awaiting an answer now
            window = max(1, self._outstanding(peer))
        self._windows[peer] = max(1, window // 2)
        if m.phase is Phase.SENDING:
            m.busy_answer = True  # the answer overtook the end of the send: `sent` applies it
        elif m.phase is Phase.WAITING:
            self._busy_wait(m, now)
        return []

    def _busy_wait(self, m: _Message, now: float) -> None:
        # It keeps its place in the window until it is due again: were a BUSY to open the
        # window, the next message would go at once and be dropped in turn, a ping-pong at the
        # link's round trip (seen: 1,198 attempts for 60 messages).
        m.busy, m.awaiting, m.held, m.busy_answer = True, True, False, False
        m.last_error = BUSY
        m.due = now + self.policy.delay(max(1, m.attempts), self._rng.random())

    def sent(
        self,
        message_id: bytes,
        now: float,
        *,
        error: str | None = None,
        cancelled: bool = False,
    ) -> list[Command]:
        """The attempt `SendNow` began is over: `error` when the transport refused it,
        `cancelled` when a `CancelSend` interrupted it. Ignored for a message settled meanwhile."""
        m = self._messages.get(message_id)
        if m is None or m.phase is not Phase.SENDING:
            return []
        again_now = cancelled and m.cancel is _Cancel.HEARD
        if cancelled:
            error = (
                INTERRUPTED
                if again_now
                else f"could not hand the message over in {self.attempt_timeout:.0f} s"
            )
        m.attempts += 1
        m.last_error = error
        m.tried_at = now
        m.cancel = None
        m.awaiting = error is None
        m.busy = False
        if error is not None:
            self._release(m.peer, now)
        if self.can_hand_off and not m.handed_off and self.policy.handoff_due(m.created_at, now):
            m.phase = Phase.HANDING_OFF
            m.again_now = again_now
            return [HandOff(message_id=message_id, peer=m.peer)]
        return [self._wait(message_id, m, now, again_now)]

    def handed_off(self, message_id: bytes, now: float, *, taken: bool) -> list[Command]:
        """The `HandOff` is over; `taken` when store-and-forward accepted the message."""
        m = self._messages.get(message_id)
        if m is None or m.phase is not Phase.HANDING_OFF:
            return []
        m.handed_off = taken
        return [self._wait(message_id, m, now, m.again_now)]

    def handle_timer(self, now: float) -> list[Command]:
        """Begin the attempts that are due, give up the expired, cancel the attempts that
        overran."""
        out: list[Command] = []
        for m in list(self._messages.values()):
            if m.phase is Phase.WAITING and m.due <= now and m.awaiting:
                m.awaiting = False  # no answer in its backoff: lost, out of the window
                self._release(m.peer, now)
        for message_id, m in list(self._messages.items()):
            if m.phase is Phase.WAITING and m.due <= now:
                if m.expires_at <= now:
                    del self._messages[message_id]
                    out.append(Expire(message_id=message_id))
                    continue
                if m.held:
                    continue
                window = self._windows.get(m.peer)
                if window is not None and self._outstanding(m.peer) >= window:
                    m.held = True  # `_release` makes it due when an answer opens the window
                    continue
                m.phase, m.started = Phase.SENDING, now
                fresh = m.attempts > 0 and not m.busy
                out.append(SendNow(message_id=message_id, peer=m.peer, fresh_link=fresh))
            elif self._overran(m, now):
                m.cancel = _Cancel.TIMEOUT
                out.append(CancelSend(message_id=message_id))
        return out

    def get_timer(self) -> float | None:
        """When `handle_timer` has something to do next; None when nothing waits on time."""
        times = [
            m.due if m.phase is Phase.WAITING else m.started + self.attempt_timeout
            for m in self._messages.values()
            if (m.phase is Phase.WAITING and not m.held)
            or (m.phase is Phase.SENDING and m.cancel is None)
        ]
        # A held message waits for an answer, but still expires on time.
        times += [m.expires_at for m in self._messages.values() if m.held]
        return min(times, default=None)

    # ---- views --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._messages)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._messages

    def phase(self, message_id: bytes) -> Phase | None:
        """The message's phase, or None when it is not waiting (settled, or never added)."""
        m = self._messages.get(message_id)
        return None if m is None else m.phase

    def due(self, message_id: bytes) -> float | None:
        """When the message's next attempt is due, if it waits for one."""
        m = self._messages.get(message_id)
        return m.due if m is not None and m.phase is Phase.WAITING else None

    # ---- internals ----------------------------------------------------------------------------

    def window(self, peer: bytes) -> int | None:
        """The peer's window of attempts awaiting an answer; None when unlimited."""
        return self._windows.get(peer)

    def _outstanding(self, peer: bytes) -> int:
        """The peer's attempts under way or awaiting an answer."""
        return sum(
            1
            for m in self._messages.values()
            if m.peer == peer and (m.phase is not Phase.WAITING or m.awaiting)
        )

    def _release(self, peer: bytes, now: float) -> None:
        """An answer may have opened the peer's window: its held messages are due now (the
        next `handle_timer` sends as many as the window lets through)."""
        for m in self._messages.values():
            if m.peer == peer and m.held:
                m.held, m.due = False, min(m.due, now)

    def _overran(self, m: _Message, now: float) -> bool:
        return (
            m.phase is Phase.SENDING
            and m.cancel is None
            and m.started + self.attempt_timeout <= now
        )

    def _wait(self, message_id: bytes, m: _Message, now: float, again_now: bool) -> Record:
        m.phase = Phase.WAITING
        m.due = now if again_now else now + self.policy.delay(m.attempts, self._rng.random())
        if m.busy_answer:
            self._busy_wait(m, now)
        return Record(
            message_id=message_id,
            attempts=m.attempts,
            last_error=m.last_error,
            handed_off=m.handed_off,
        )
