"""One LoRa channel as a sans-IO machine: frames in with `now`, deliveries out.

Theory of operation. Every node attached to the channel has a transmit queue. A frame submitted
at `now` is put on the air when the node's radio is free: not already transmitting (half-duplex
radios send one frame at a time), not holding back for its duty-cycle limit (when the channel
enforces one, as RNode firmware's `airtime_limit_long` does) and, with carrier sense on, not
hearing another transmission (then it waits for the channel to clear, a DIFS and a random number
of slots, as RNode's CSMA does). A frame occupies the air for its time on air (`airtime`).

When a frame's air time ends, every other attached node that hears the sender decides its fate
there: lost if that node itself transmitted at any moment of it (half-duplex); lost if another
frame it hears overlapped it in time (a collision: both are lost, unless `capture_db` is set and
this frame was that much stronger than every overlapping one); lost with probability `loss`
(seeded); else delivered. Because a frame can only overlap frames that began before it ended,
deciding at its end sees everything. Carrier sense needs `sense_symbols` of a preamble, so two
nodes that start within that time of each other still collide — and nodes that cannot hear each
other (`Hearing`: the hidden-node case) collide at a receiver between them however careful.

The machine never reads a clock: `submit` and `handle_timer` take `now`, `get_timer` says when
to call back. The physics uses the scheduled times, not `now`, so a late shell delivers late but
decides the same; the daemon reports how late.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kai_mesh.harness.radio.airtime import Modem, packet_time

WINDOW = 3600.0  # seconds: duty cycle is reported (and enforced) over the last hour
QUEUE_LIMIT = 64  # frames waiting per node; a full queue drops the new frame (counted)


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """`payload`, sent by `sender` on the air from `start` to `end`, reached node `to`."""

    to: str
    sender: str
    payload: bytes
    start: float
    end: float


@dataclass(frozen=True)
class Hearing:
    """Who hears whom. By default everyone hears everyone at 0 dB; `deaf` pairs (either order)
    do not hear each other; `levels[(sender, receiver)]` gives a signal level in dB for the
    capture effect."""

    deaf: frozenset[frozenset[str]] = frozenset()
    levels: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def hidden(cls, pairs: Iterable[tuple[str, str]]) -> Hearing:
        return cls(deaf=frozenset(frozenset(p) for p in pairs))

    def level(self, sender: str, receiver: str) -> float | None:
        """The sender's level at the receiver in dB, or None when it is not heard at all."""
        if sender == receiver or frozenset((sender, receiver)) in self.deaf:
            return None
        return self.levels.get((sender, receiver), 0.0)


@dataclass(frozen=True, kw_only=True)
class ChannelConfig:
    modem: Modem
    loss: float = 0.0  # probability that a frame that survived the air is lost anyway
    capture_db: float | None = None  # a frame this much stronger survives an overlap
    duty_limit: float | None = None  # fraction of WINDOW a node may transmit (enforced)
    csma: bool = True
    sense_symbols: int = 4  # preamble symbols before a carrier is sensed
    slot_symbols: int = 6  # CSMA slot, clamped to 10..100 ms
    contention_slots: int = 8  # random backoff of 0..N-1 slots
    queue_limit: int = QUEUE_LIMIT

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss {self.loss}: expected a probability in [0, 1)")
        if self.duty_limit is not None and not 0.0 < self.duty_limit <= 1.0:
            raise ValueError(f"duty limit {self.duty_limit}: expected a fraction in (0, 1]")

    @property
    def slot(self) -> float:
        return min(max(self.slot_symbols * self.modem.symbol_time, 0.010), 0.100)

    @property
    def sense_time(self) -> float:
        return self.sense_symbols * self.modem.symbol_time


@dataclass
class NodeStats:
    frames_sent: int = 0
    bytes_sent: int = 0
    airtime: float = 0.0  # seconds on air, all time
    received: int = 0
    bytes_received: int = 0
    lost_collision: int = 0  # frames heard here that collided
    lost_half_duplex: int = 0  # frames missed here while this node transmitted
    lost_random: int = 0
    queue_dropped: int = 0
    duty_waits: int = 0  # frames held back for the duty-cycle limit
    deferrals: int = 0  # times carrier sense found the channel busy

    @property
    def lost(self) -> int:
        return self.lost_collision + self.lost_half_duplex + self.lost_random


@dataclass(frozen=True)
class _Tx:
    seq: int
    sender: str
    payload: bytes
    start: float
    end: float


@dataclass
class _Radio:
    name: str
    queue: deque[bytes] = field(default_factory=deque)
    tx: _Tx | None = None
    wake: float | None = None  # when to try the head of the queue again
    airlog: deque[tuple[float, float]] = field(default_factory=deque)  # (start, end), 1 h
    stats: NodeStats = field(default_factory=NodeStats)
    held: bool = False  # the head frame was already counted as held for duty


class Channel:
    """The channel. `attach` nodes, `submit` their frames, drive with `get_timer` and
    `handle_timer`; read `stats`."""

    def __init__(
        self, config: ChannelConfig, rng: random.Random, hearing: Hearing | None = None
    ) -> None:
        self.config = config
        self.hearing = hearing or Hearing()
        self._rng = rng
        self._radios: dict[str, _Radio] = {}
        self._recent: list[_Tx] = []  # on the air now, or could overlap one that is
        self._done: set[int] = set()  # frames in `_recent` already resolved
        self._seq = 0

    # ---- membership -----------------------------------------------------------------------

    def attach(self, node: str) -> None:
        self._radios.setdefault(node, _Radio(node))

    def detach(self, node: str) -> None:
        """The node leaves: its queue is dropped; a frame already on the air finishes."""
        radio = self._radios.pop(node, None)
        if radio is not None:
            radio.queue.clear()

    @property
    def nodes(self) -> list[str]:
        return list(self._radios)

    # ---- input ----------------------------------------------------------------------------

    def airtime(self, payload: bytes) -> float:
        return packet_time(self.config.modem, len(payload))

    def submit(self, node: str, payload: bytes, now: float) -> list[Delivery]:
        """`node` hands the radio a frame at `now`. Returns deliveries due by `now` (none
        unless the shell was late)."""
        out = self.handle_timer(now)
        radio = self._radios[node]
        if len(radio.queue) >= self.config.queue_limit:
            radio.stats.queue_dropped += 1
            return out
        self.airtime(payload)  # refuse a packet RNode could not carry, before it queues
        radio.queue.append(payload)
        if radio.tx is None and radio.wake is None:
            self._try_start(radio, now)
        return out

    # ---- timers ---------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        times = [tx.end for tx in self._recent if tx.seq not in self._done]
        times += [r.wake for r in self._radios.values() if r.wake is not None]
        return min(times, default=None)

    def handle_timer(self, now: float) -> list[Delivery]:
        """Run every event due at or before `now`, in time order; return the deliveries."""
        out: list[Delivery] = []
        while True:
            event = self._next_event(now)
            if event is None:
                break
            at, kind, item = event
            if kind == "end":
                assert isinstance(item, _Tx)
                out += self._finish(item, at)
            else:
                assert isinstance(item, _Radio)
                item.wake = None
                self._try_start(item, at)
        return out

    def _next_event(self, now: float) -> tuple[float, str, Any] | None:
        best: tuple[float, str, Any] | None = None
        for tx in self._recent:
            if tx.seq not in self._done and tx.end <= now and (best is None or tx.end < best[0]):
                best = (tx.end, "end", tx)
        for radio in self._radios.values():
            # a frame ending at the same instant is resolved first: its sender is then free
            wake = radio.wake
            if wake is not None and wake <= now and (best is None or wake < best[0]):
                best = (wake, "wake", radio)
        return best

    # ---- transmitting ---------------------------------------------------------------------

    def _try_start(self, radio: _Radio, at: float) -> None:
        if radio.tx is not None or not radio.queue:
            return
        payload = radio.queue[0]
        duration = self.airtime(payload)
        ready = self._duty_ready(radio, duration, at)
        if ready > at:
            if not radio.held:
                radio.stats.duty_waits += 1
                radio.held = True
            radio.wake = ready
            return
        if self.config.csma:
            busy_until = self._carrier(radio.name, at)
            if busy_until is not None:
                radio.stats.deferrals += 1
                radio.wake = busy_until + self._backoff()
                return
        radio.queue.popleft()
        radio.held = False
        self._seq += 1
        tx = _Tx(self._seq, radio.name, payload, at, at + duration)
        radio.tx = tx
        self._recent.append(tx)
        radio.airlog.append((tx.start, tx.end))
        radio.stats.frames_sent += 1
        radio.stats.bytes_sent += len(payload)
        radio.stats.airtime += duration

    def _backoff(self) -> float:
        slot = self.config.slot
        return 2 * slot + self._rng.randrange(self.config.contention_slots) * slot

    def _carrier(self, node: str, at: float) -> float | None:
        """When the transmissions `node` senses at `at` end, or None if it senses none."""
        sensed = [
            tx.end
            for tx in self._recent
            if tx.start + self.config.sense_time <= at < tx.end
            and self.hearing.level(tx.sender, node) is not None
        ]
        return max(sensed, default=None)

    def _duty_ready(self, radio: _Radio, duration: float, at: float) -> float:
        """The earliest time from `at` when sending `duration` keeps the node within its limit,
        counting whole past frames (conservative: a frame counts until it has fully aged out)."""
        limit = self.config.duty_limit
        while radio.airlog and radio.airlog[0][1] <= at - WINDOW:
            radio.airlog.popleft()
        if limit is None:
            return at
        budget = limit * WINDOW
        used = sum(end - start for start, end in radio.airlog)
        ready = at
        for start, end in radio.airlog:
            if used + duration <= budget:
                break
            used -= end - start
            ready = max(ready, end + WINDOW)
        return ready

    # ---- receiving ------------------------------------------------------------------------

    def _finish(self, tx: _Tx, at: float) -> list[Delivery]:
        self._done.add(tx.seq)
        out = []
        for radio in list(self._radios.values()):
            fate = self._fate(tx, radio)
            if fate == "delivered":
                radio.stats.received += 1
                radio.stats.bytes_received += len(tx.payload)
                out.append(
                    Delivery(
                        to=radio.name,
                        sender=tx.sender,
                        payload=tx.payload,
                        start=tx.start,
                        end=tx.end,
                    )
                )
            elif fate is not None:
                setattr(radio.stats, f"lost_{fate}", getattr(radio.stats, f"lost_{fate}") + 1)
        sender = self._radios.get(tx.sender)
        if sender is not None and sender.tx is tx:
            sender.tx = None
            if sender.queue:
                # the sender's next frame contends like everyone else's after the channel clears
                sender.wake = at + self._backoff() if self.config.csma else at
        self._prune()
        return out

    def _fate(self, tx: _Tx, radio: _Radio) -> str | None:
        level = self.hearing.level(tx.sender, radio.name)
        if level is None:
            return None  # not heard at all: nothing to count
        overlapping = [
            o for o in self._recent if o is not tx and o.start < tx.end and tx.start < o.end
        ]
        if any(o.sender == radio.name for o in overlapping):
            return "half_duplex"
        rivals = [self.hearing.level(o.sender, radio.name) for o in overlapping]
        heard = [r for r in rivals if r is not None]
        if heard:
            capture = self.config.capture_db
            if capture is None or level - max(heard) < capture:
                return "collision"
        if self.config.loss and self._rng.random() < self.config.loss:
            return "random"
        return "delivered"

    def _prune(self) -> None:
        """Forget frames that ended before every frame still unresolved began."""
        done = self._done
        pending = [tx.start for tx in self._recent if tx.seq not in done]
        cutoff = min(pending, default=float("inf"))
        keep = [tx for tx in self._recent if tx.end > cutoff or tx.seq not in done]
        self._done = {tx.seq for tx in keep if tx.seq in done}
        self._recent = keep

    # ---- output ---------------------------------------------------------------------------

    def duty_used(self, node: str, now: float) -> float:
        """The share of the last hour `node` spent transmitting."""
        radio = self._radios[node]
        since = now - WINDOW
        used = sum(max(0.0, min(end, now) - max(start, since)) for start, end in radio.airlog)
        return used / WINDOW

    def stats(self, now: float) -> dict[str, dict[str, Any]]:
        out = {}
        for name, radio in self._radios.items():
            s = radio.stats
            out[name] = {
                "frames_sent": s.frames_sent,
                "bytes_sent": s.bytes_sent,
                "airtime_s": round(s.airtime, 4),
                "duty_cycle_hour_pct": round(100 * self.duty_used(name, now), 4),
                "received": s.received,
                "bytes_received": s.bytes_received,
                "collisions": s.lost_collision,
                "lost_half_duplex": s.lost_half_duplex,
                "lost_random": s.lost_random,
                "lost": s.lost,
                "queue_dropped": s.queue_dropped,
                "queued": len(radio.queue),
                "duty_waits": s.duty_waits,
                "deferrals": s.deferrals,
            }
        return out
