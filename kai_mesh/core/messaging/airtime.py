"""Per-interface airtime budgets and the priority queues held to them.

A radio may transmit only a share of the time: in the EU 868 MHz band 1 % of an hour, which on a
5 kbit/s LoRa link leaves 36 s, about a hundred 200-byte frames. `AirtimeBudget` charges each frame
`(len + overhead_bytes) × 8 / bitrate` seconds and keeps a sliding window of what was spent (one
hour by default, optionally also a short window, as RNode's `airtime_limit_long`/`_short`). All
accounting is in whole bits, so sums and limits are exact; a frame spent at `t` counts until
`t + window`. Background traffic (announces, heartbeats, probes, sync, telemetry) may use at most
`background_share` of the long window's budget.

`InterfaceQueue` holds frames by `Priority`, FIFO within one priority, and releases them in
priority order as the budget allows; no frame overtakes a higher-priority frame that is waiting
for budget (it would only delay it further), except that a background frame blocked by the
background share does not block foreground frames. A frame that waits its priority's `max_delay`
is shed, as is the newest lowest-priority frame when the queue overflows; the caller turns every
`Shed` into an error to the sender. `critical` is never shed and never waits: it goes out at once,
over budget if it must, and what it spends beyond the budget is counted as overdraft.

`pop_packets` releases the same frames packed into packets: beside each frame it releases it puts
every other queued frame for the same peer that fits the packet (highest priority first, then
oldest) and that the budget allows now, and charges the packet once (`core.messaging.batch`
sizes, one header). Packing only takes what is already waiting, so it delays nothing; a
non-critical frame never rides a packet that would overdraw the budget.

The machine reads no clock: every entry point takes `now` (monotonic seconds, never going back);
`get_timer()` says when to call `handle_timer(now)` and `pop_ready(now)` again.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sized
from dataclasses import dataclass
from typing import Generic, TypeVar

from kai_mesh.core.errors import UsageError
from kai_mesh.core.messaging.batch import batch_size
from kai_mesh.core.messaging.envelope import Priority

#: EU 868 MHz (ETSI EN 300 220): 1 % duty cycle in the common LoRa sub-bands, counted per hour.
EU868_DUTY = 0.01
#: US 902–928 MHz (FCC part 15.247) sets no duty cycle. It does limit dwell time: a
#: frequency-hopping system may stay at most 400 ms on one channel per 20 s (so at most 400 ms
#: per frame), while digital modulation of 500 kHz bandwidth or more has no dwell limit. Neither
#: is modelled here.
US915_DUTY = 1.0
#: Reticulum's smallest packet header: 2 bytes of flags and hops, one 16-byte destination hash and a
#: context byte. LoRa's preamble and PHY header are not counted; the bitrate is the payload rate.
RNS_HEADER_BYTES = 19

F = TypeVar("F", bound=Sized)


class _Window:
    """Spends that still count: `(expires_at, bits)` in order of expiry."""

    __slots__ = ("_spends", "length", "limit_bits", "used_bits")

    def __init__(self, length: float, limit_bits: int) -> None:
        self.length = length
        self.limit_bits = limit_bits
        self.used_bits = 0
        self._spends: deque[tuple[float, int]] = deque()

    def prune(self, now: float) -> None:
        spends = self._spends
        while spends and spends[0][0] <= now:
            self.used_bits -= spends.popleft()[1]

    def add(self, now: float, bits: int) -> None:
        self._spends.append((now + self.length, bits))
        self.used_bits += bits

    def fits_at(self, bits: int) -> float:
        """The earliest instant from which `bits` more fit, given no further spends.

        `-inf` when they fit now, `inf` when they never can. The answer is an expiry time as stored,
        so `prune(answer)` is exactly what makes the frame fit (no float round trip)."""
        room = self.limit_bits - bits
        if room < 0:
            return math.inf
        used = self.used_bits
        if used <= room:
            return -math.inf
        for expires_at, spent in self._spends:
            used -= spent
            if used <= room:
                return expires_at
        raise AssertionError("unreachable: an empty window fits any frame under its limit")


class AirtimeBudget:
    """How much a radio interface may still transmit: see the module docstring.

    `duty_cycle` is the share of `window` seconds the interface may transmit; `short_window` and
    `short_duty_cycle` (both or neither) add a burst limit, as RNode's `airtime_limit_short`. The
    background share applies to the long window only. Limits are rounded down to whole bits.
    Raises `UsageError` for a non-positive bitrate or window, or a share outside its range.
    """

    def __init__(
        self,
        bitrate: int,
        duty_cycle: float,
        window: float = 3600.0,
        background_share: float = 0.25,
        overhead_bytes: int = RNS_HEADER_BYTES,
        *,
        short_window: float | None = None,
        short_duty_cycle: float | None = None,
    ) -> None:
        if bitrate <= 0:
            raise UsageError(f"bitrate must be positive, not {bitrate}")
        if window <= 0:
            raise UsageError(f"airtime window must be positive, not {window}")
        _check_share("duty_cycle", duty_cycle, allow_zero=False)
        _check_share("background_share", background_share, allow_zero=True)
        if overhead_bytes < 0:
            raise UsageError(f"overhead_bytes must not be negative, not {overhead_bytes}")
        self.bitrate = bitrate
        self.duty_cycle = duty_cycle
        self.window = window
        self.background_share = background_share
        self.overhead_bytes = overhead_bytes
        self._long = _Window(window, _bits(duty_cycle * window * bitrate))
        self._background = _Window(window, _bits(background_share * self._long.limit_bits))
        self._short: _Window | None = None
        if (short_window is None) != (short_duty_cycle is None):
            raise UsageError("give both short_window and short_duty_cycle, or neither")
        if short_window is not None and short_duty_cycle is not None:
            if not 0 < short_window < window:
                raise UsageError(f"short_window must be in (0, {window}), not {short_window}")
            _check_share("short_duty_cycle", short_duty_cycle, allow_zero=False)
            self._short = _Window(short_window, _bits(short_duty_cycle * short_window * bitrate))
        self.overdraft_bits = 0
        self._now = -math.inf

    # -- arithmetic ---------------------------------------------------------------------------

    def frame_bits(self, size: int) -> int:
        """Bits on the air for a frame of `size` bytes, overhead included."""
        if size < 0:
            raise UsageError(f"frame size must not be negative, not {size}")
        return (size + self.overhead_bytes) * 8

    def airtime(self, size: int) -> float:
        """Seconds on the air for a frame of `size` bytes, overhead included."""
        return self.frame_bits(size) / self.bitrate

    @property
    def limit(self) -> float:
        """Seconds of airtime allowed per (long) window."""
        return self._long.limit_bits / self.bitrate

    @property
    def background_limit(self) -> float:
        """Seconds of background airtime allowed per (long) window."""
        return self._background.limit_bits / self.bitrate

    @property
    def overdraft(self) -> float:
        """Seconds spent beyond the long window's limit, all time (only critical frames do)."""
        return self.overdraft_bits / self.bitrate

    def can_ever_send(self, size: int, background: bool) -> bool:
        """Whether a frame this large fits an empty window at all."""
        bits = self.frame_bits(size)
        return all(w.limit_bits >= bits for w in self._windows(background))

    # -- the window -----------------------------------------------------------------------------

    def used(self, now: float) -> float:
        """Seconds of airtime spent within the long window ending at `now`."""
        self._advance(now)
        return self._long.used_bits / self.bitrate

    def fraction(self, now: float) -> float:
        """`used(now)` as a fraction of the limit (above 1 after a critical overdraft)."""
        self._advance(now)
        return self._long.used_bits / self._long.limit_bits

    def background_used(self, now: float) -> float:
        """Seconds of background airtime spent within the long window ending at `now`."""
        self._advance(now)
        return self._background.used_bits / self.bitrate

    def can_send(self, size: int, now: float, background: bool) -> bool:
        """Whether a frame of `size` bytes fits the budget at `now`."""
        return self.next_allowed(size, now, background) <= self._now

    def next_allowed(self, size: int, now: float, background: bool) -> float:
        """The earliest time from `now` on when the frame fits, if nothing else is sent.

        `now` itself when it fits already; `math.inf` when it never can (`can_ever_send`)."""
        self._advance(now)
        bits = self.frame_bits(size)
        return max(self._now, *(w.fits_at(bits) for w in self._windows(background)))

    def fits_hour(self, size: int, now: float, background: bool) -> bool:
        """Whether the frame fits the long window (and the background share) at `now`, ignoring
        the short window: for a transfer the transport paces itself (a Reticulum Resource),
        which may be larger than a burst window could ever hold."""
        self._advance(now)
        bits = self.frame_bits(size)
        windows = [self._long, self._background] if background else [self._long]
        return all(w.fits_at(bits) <= self._now for w in windows)

    def spend(self, size: int, now: float, background: bool = False) -> float:
        """Charge a frame sent at `now`, whether or not it fits; return its overdraft in seconds.

        The overdraft is the part of the frame's airtime beyond the long window's limit."""
        self._advance(now)
        bits = self.frame_bits(size)
        over = max(0, min(bits, self._long.used_bits + bits - self._long.limit_bits))
        self.overdraft_bits += over
        for w in self._windows(background):
            w.add(self._now, bits)
        return over / self.bitrate

    def _windows(self, background: bool) -> list[_Window]:
        windows = [self._long]
        if self._short is not None:
            windows.append(self._short)
        if background:
            windows.append(self._background)
        return windows

    def _advance(self, now: float) -> None:
        # A clock that steps back is held at its last value: later expiry is the safe side.
        self._now = max(self._now, now)
        for w in (self._long, self._short, self._background):
            if w is not None:
                w.prune(self._now)


def adaptive_interval(
    base: float, bytes_per_event: int, budget: AirtimeBudget, target_share: float
) -> float:
    """The interval for a periodic background message: `base`, or longer if needed to keep the
    message to at most `target_share` of the budget (a share of the whole budget, not of the
    background share).

    On a 5 kbit/s link with the EU 1 % duty cycle (36 s an hour) and Reticulum's 19-byte header:
    a 200-byte announce takes 0.3504 s, so at 5 % of the budget (1.8 s an hour) it may go every
    700.8 s (about 12 minutes); a 40-byte heartbeat takes 0.0944 s, so at 5 % it may go every
    188.8 s. On a link with no duty cycle (`US915_DUTY`) the same announce at 5 % may go every 7 s.
    Raises `UsageError` if `target_share` is not in (0, 1] or `base` is negative.
    """
    _check_share("target_share", target_share, allow_zero=False)
    if base < 0:
        raise UsageError(f"base interval must not be negative, not {base}")
    needed = budget.airtime(bytes_per_event) * budget.window / (target_share * budget.limit)
    return max(base, needed)


def _bits(value: float) -> int:
    # Round down, forgiving the float error in products like 0.01 * 3600 * 5000.
    return math.floor(value + 1e-6)


def _check_share(name: str, value: float, *, allow_zero: bool) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= 1):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise UsageError(f"{name} must be in {interval}, not {value}")


# -- the queue ----------------------------------------------------------------------------------


class ShedReason(enum.Enum):
    """Why a frame was given up; the caller says so to its sender."""

    EXPIRED = "expired"  # waited its priority's max_delay for airtime
    OVERFLOW = "overflow"  # the queue was full and the frame was lowest and newest
    TOO_LARGE = "too_large"  # larger than the whole budget of a window: it could never go


@dataclass(frozen=True, slots=True)
class Shed(Generic[F]):
    """A frame the queue gave up, at which priority, why, and when."""

    frame: F
    priority: Priority
    reason: ShedReason
    queued_at: float
    shed_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStats:
    """Counters since the queue was made. `overdraft` is in seconds, `overdraft_bits` exact."""

    sent: Mapping[Priority, int]
    shed: Mapping[Priority, int]
    overdraft: float
    overdraft_bits: int


@dataclass(slots=True)
class _Entry(Generic[F]):
    frame: F
    priority: Priority
    background: bool
    size: int
    queued_at: float
    deadline: float
    seq: int


class InterfaceQueue(Generic[F]):
    """Frames waiting for airtime on one interface: see the module docstring.

    `max_delay` maps a non-critical priority to how long its frames may wait (no entry: no limit).
    `capacity` counts queued frames; critical frames are admitted past it. Raises `UsageError` for a
    capacity below 1, a non-positive delay, or a delay given for `critical`.
    """

    def __init__(
        self, budget: AirtimeBudget, capacity: int, max_delay: Mapping[Priority, float]
    ) -> None:
        if capacity < 1:
            raise UsageError("queue capacity must be at least 1")
        if Priority.CRITICAL in max_delay:
            raise UsageError("critical frames are never shed: give no max_delay for them")
        for priority, delay in max_delay.items():
            if not delay > 0:
                raise UsageError(f"max_delay for {priority.name.lower()} must be positive")
        self.budget = budget
        self.capacity = capacity
        self._max_delay = dict(max_delay)
        self._queues: dict[tuple[Priority, bool], deque[_Entry[F]]] = {
            (p, bg): deque() for p in Priority for bg in (False, True)
        }
        self._len = 0
        self._seq = 0
        self._now = -math.inf
        self._expired: list[Shed[F]] = []
        self._sent = dict.fromkeys(Priority, 0)
        self._shed = dict.fromkeys(Priority, 0)
        self._overdraft_bits = 0

    def __len__(self) -> int:
        return self._len

    def depth(self, priority: Priority) -> int:
        return sum(len(self._queues[priority, bg]) for bg in (False, True))

    @property
    def stats(self) -> QueueStats:
        return QueueStats(
            sent=dict(self._sent),
            shed=dict(self._shed),
            overdraft=self._overdraft_bits / self.budget.bitrate,
            overdraft_bits=self._overdraft_bits,
        )

    def push(self, frame: F, priority: Priority, background: bool, now: float) -> list[Shed[F]]:
        """Queue `frame`; return what was shed for it: the frame itself or an older, lower one.

        A non-critical frame too large for the budget is shed at once (`TOO_LARGE`). When the
        queue is full, the newest frame of the lowest priority below the newcomer's makes room
        (`OVERFLOW`), or else the newcomer is refused, unless it is critical."""
        self._advance(now)
        size = len(frame)
        if priority is not Priority.CRITICAL and not self.budget.can_ever_send(size, background):
            return [self._shed_one(frame, priority, ShedReason.TOO_LARGE, self._now)]
        shed: list[Shed[F]] = []
        if self._len >= self.capacity:
            victim = self._evict_below(priority)
            if victim is not None:
                shed.append(self._shed_entry(victim, ShedReason.OVERFLOW))
            elif priority is not Priority.CRITICAL:
                return [self._shed_one(frame, priority, ShedReason.OVERFLOW, self._now)]
        deadline = self._now + self._max_delay.get(priority, math.inf)
        entry = _Entry(frame, priority, background, size, self._now, deadline, self._seq)
        self._seq += 1
        self._queues[priority, background].append(entry)
        self._len += 1
        return shed

    def pop_ready(self, now: float) -> list[F]:
        """Charge to the budget and return, in order, every frame that may be sent at `now`.

        Frames past their deadline are never sent: they wait for `handle_timer` to report them."""
        self._advance(now)
        out: list[F] = []
        while (entry := self._scan()[0]) is not None:
            self._queues[entry.priority, entry.background].popleft()
            self._len -= 1
            before = self.budget.overdraft_bits
            self.budget.spend(entry.size, self._now, entry.background)
            self._overdraft_bits += self.budget.overdraft_bits - before
            self._sent[entry.priority] += 1
            out.append(entry.frame)
        return out

    def pop_packets(
        self, now: float, peer: Callable[[F], Hashable], room: Callable[[F], int]
    ) -> list[list[F]]:
        """As `pop_ready`, with frames for one peer packed into packets (see the module
        docstring): each list is one packet, its first frame the one the budget released.
        `peer(frame)` names a frame's peer; `room(frame)` is what one packet to it carries."""
        self._advance(now)
        out: list[list[F]] = []
        while (head := self._scan()[0]) is not None:
            self._queues[head.priority, head.background].popleft()
            group, key, limit = [head], peer(head.frame), room(head.frame)
            for entry in self._release_order():
                if peer(entry.frame) != key:
                    continue
                grown = batch_size([e.size for e in group] + [entry.size])
                background = entry.background and all(e.background for e in group)
                if grown > limit or (
                    entry.priority is not Priority.CRITICAL
                    and self.budget.next_allowed(grown, self._now, background) > self._now
                ):
                    continue
                self._queues[entry.priority, entry.background].remove(entry)
                group.append(entry)
            self._len -= len(group)
            before = self.budget.overdraft_bits
            size = batch_size([e.size for e in group])
            self.budget.spend(size, self._now, all(e.background for e in group))
            self._overdraft_bits += self.budget.overdraft_bits - before
            for entry in group:
                self._sent[entry.priority] += 1
            out.append([e.frame for e in group])
        return out

    def _release_order(self) -> list[_Entry[F]]:
        """Every queued frame, highest priority first, then oldest."""
        entries = [e for queue in self._queues.values() for e in queue]
        return sorted(entries, key=lambda e: (-e.priority, e.seq))

    def handle_timer(self, now: float) -> list[Shed[F]]:
        """Shed every frame that has waited its `max_delay`; each is reported exactly once."""
        self._advance(now)
        expired, self._expired = self._expired, []
        return expired

    def get_timer(self) -> float | None:
        """When to call `handle_timer` and `pop_ready` next; None when there is nothing to do.

        At or before the last `now` seen when something is due already."""
        if self._expired:
            return self._now
        if not self._len:
            return None
        deadline = min(q[0].deadline for q in self._queues.values() if q)
        at = min(deadline, self._scan()[1])
        return None if at == math.inf else at

    # -- internals --------------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        self._now = max(self._now, now)
        for queue in self._queues.values():
            while queue and queue[0].deadline <= self._now:
                self._len -= 1
                self._expired.append(self._shed_entry(queue.popleft(), ShedReason.EXPIRED))

    def _scan(self) -> tuple[_Entry[F] | None, float]:
        """Walk the queue heads in release order: the first that may be sent now, if any, and the
        earliest time at which one of the heads blocked on the way will fit (`inf` if none)."""
        budget, now = self.budget, self._now
        wait = math.inf
        background_blocked = False
        for priority in reversed(Priority):
            heads = [
                q[0]
                for bg in (False, True)
                if (q := self._queues[priority, bg]) and not (bg and background_blocked)
            ]
            for entry in sorted(heads, key=lambda e: e.seq):
                if priority is Priority.CRITICAL:
                    return entry, now
                if budget.next_allowed(entry.size, now, False) > now:
                    # The budget itself is short: nothing lower may overtake this frame.
                    at = budget.next_allowed(entry.size, now, entry.background)
                    return None, min(wait, at)
                if entry.background:
                    at = budget.next_allowed(entry.size, now, True)
                    if at > now:  # only the background share is short: foreground may go
                        wait = min(wait, at)
                        background_blocked = True
                        continue
                return entry, now
        return None, wait

    def _evict_below(self, priority: Priority) -> _Entry[F] | None:
        for candidate in Priority:
            if candidate >= priority:
                return None
            tails = [q for bg in (False, True) if (q := self._queues[candidate, bg])]
            if tails:
                newest = max(tails, key=lambda q: q[-1].seq)
                self._len -= 1
                return newest.pop()
        return None

    def _shed_entry(self, entry: _Entry[F], reason: ShedReason) -> Shed[F]:
        self._shed[entry.priority] += 1
        return Shed(entry.frame, entry.priority, reason, entry.queued_at, self._now)

    def _shed_one(self, frame: F, priority: Priority, reason: ShedReason, now: float) -> Shed[F]:
        self._shed[priority] += 1
        return Shed(frame, priority, reason, now, now)
