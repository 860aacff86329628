"""SWIM failure detection with Lifeguard's refinements, as a pure state machine.

Each protocol period the detector probes the next peer of a shuffled round-robin (`SendProbe`). No
ack by the probe timeout: it asks up to `indirect_probes` other alive peers to probe the target for
it (`SendIndirectProbe`); they answer `SendIndirectAck`, or `SendNack` when the target was silent
to them too. No ack by the end of the period: the target becomes *suspect* and every member is told
(`SendSuspect`, the target included, so that it can refute). A suspicion times out into *failed*;
any direct contact with the peer, or an alive message carrying a newer incarnation, takes it back to
*alive*. A node that hears it is suspected bumps its incarnation and says so (`SendAlive`).

Lifeguard, on top (memberlist's `awareness.go` and `suspicion.go` are the model):

- local health, a counter 0..`max_local_health`: up on a failed probe whose vias did not even nack
  (our own links are the likelier culprit) and when we had to refute a suspicion of ourselves, down
  on an answered probe. Our probe timeout and interval are multiplied by `1 + local_health`, so a
  slow or deaf node slows down instead of accusing its peers.
- the suspicion timeout starts at `max` and shrinks, log-scaled, towards `min` as independent
  members (`SuspectReceived` from a new `from_id`, or our own failed probe) confirm it.
- the buddy system: a probe of a non-alive peer carries `suspect=True`, so it refutes at once.

Timeouts are scaled to each link (DESIGN.md, "Airtime"); see `DetectorConfig` for the formula.
Everything is in memory and driven by the caller: `receive(event, now)`, `get_timer()`,
`handle_timer(now)`, each returning commands for the shell to send and events for it to act on.
"""

from __future__ import annotations

import enum
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from kai_mesh.core.errors import UsageError
from kai_mesh.core.liveness.swim_config import DetectorConfig
from kai_mesh.core.liveness.swim_messages import (
    AliveReceived,
    Command,
    Event,
    Heard,
    IndirectAckReceived,
    IndirectProbeRequested,
    Input,
    NackReceived,
    Output,
    PeerFailed,
    PeerRecovered,
    PeerSuspected,
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
    _check_id,
)

__all__ = [
    "AliveReceived",
    "Command",
    "DetectorConfig",
    "Event",
    "FailureDetector",
    "Heard",
    "IndirectAckReceived",
    "IndirectProbeRequested",
    "Input",
    "NackReceived",
    "Output",
    "PeerFailed",
    "PeerRecovered",
    "PeerState",
    "PeerSuspected",
    "ProbeAcked",
    "ProbeReceived",
    "RandomSource",
    "SendAck",
    "SendAlive",
    "SendIndirectAck",
    "SendIndirectProbe",
    "SendNack",
    "SendProbe",
    "SendSuspect",
    "Status",
    "SuspectReceived",
]

_T = TypeVar("_T")
_MAX_RELAYS = 256  # indirect probes we run for others at once; more are refused, not queued
#: ... and for one requester: a member asking for relays in a flood takes its share, not all 256
#: (an honest peer asks for at most `indirect_probes` per probe period).
_MAX_RELAYS_PER_PEER = 16


class RandomSource(Protocol):
    """What the detector needs of a `random.Random`, which the caller seeds and passes in."""

    def random(self) -> float: ...
    def shuffle(self, x: MutableSequence[Any], /) -> None: ...
    def sample(self, population: Sequence[_T], k: int, /) -> list[_T]: ...


class Status(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PeerState:
    """What this node believes about a peer, since when, at which of the peer's incarnations."""

    status: Status
    since: float
    incarnation: int


class _Signal(enum.Enum):
    PROBE_FAILED = "our probe, direct and indirect, went unanswered"
    SUSPECT_HEARD = "another member accuses it"
    SUSPICION_EXPIRED = "nobody refuted in time"
    CONTACT = "it answered us or spoke to us"
    REFUTED = "an alive message with a newer incarnation"


_A, _S, _F = Status.ALIVE, Status.SUSPECT, Status.FAILED
# Every change of a peer's status, and nothing else: a (status, signal) pair not listed is no-op.
_TRANSITIONS: dict[tuple[Status, _Signal], Status] = {
    (_A, _Signal.PROBE_FAILED): _S,
    (_A, _Signal.SUSPECT_HEARD): _S,
    (_S, _Signal.SUSPICION_EXPIRED): _F,
    (_S, _Signal.CONTACT): _A,
    (_S, _Signal.REFUTED): _A,
    (_F, _Signal.CONTACT): _A,
    (_F, _Signal.REFUTED): _A,
}
_ANNOUNCE: dict[Status, type[PeerSuspected | PeerFailed | PeerRecovered]] = {
    _S: PeerSuspected,
    _F: PeerFailed,
    _A: PeerRecovered,
}


@dataclass(slots=True)
class _Suspicion:
    started: float
    members: int
    interval: float
    accusers: list[bytes]
    deadline: float = 0.0


@dataclass(slots=True)
class _Peer:
    link_rtt: float | None
    bitrate: int | None
    status: Status
    since: float
    incarnation: int = 0
    suspicion: _Suspicion | None = None
    heard_at: float | None = None  # last `Heard` from it


@dataclass(slots=True)
class _Probe:
    target: bytes
    seq: int
    timeout_at: float
    indirect: bool = False
    vias: tuple[bytes, ...] = ()
    nacked: set[bytes] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Relay:
    requester: bytes
    requester_seq: int
    target: bytes
    nack_at: float


class FailureDetector:
    """See the module docstring. `incarnation` should not go backwards across restarts (a
    persisted counter or a clock reading), or peers that declared us failed ignore our alives
    until they hear from us directly."""

    def __init__(
        self, self_id: bytes, config: DetectorConfig, rng: RandomSource, *, incarnation: int = 0
    ) -> None:
        _check_id("self_id", self_id)
        self.self_id = self_id
        self.config = config
        self._rng = rng
        self._incarnation = incarnation
        self._health = 0
        self._peers: dict[bytes, _Peer] = {}
        self._order: list[bytes] = []
        self._index = 0
        self._seq = 0
        self._probe: _Probe | None = None
        self._next_probe_at: float | None = None
        self._relays: dict[int, _Relay] = {}
        self._generation = 0

    # -- queries --

    @property
    def generation(self) -> int:
        """Counts every change of the peer set or of a peer's status: whoever caches what it
        derives from them (the services' candidate replicas) compares this, not the peers."""
        return self._generation

    @property
    def local_health(self) -> int:
        """Lifeguard's local health multiplier: 0 is healthy; timeouts scale by 1 + this."""
        return self._health

    @property
    def incarnation(self) -> int:
        return self._incarnation

    def peers(self) -> list[bytes]:
        return list(self._peers)

    def state_of(self, node_id: bytes) -> PeerState:
        """Raises `UsageError` for a node that is not a peer."""
        peer = self._get(node_id)
        return PeerState(peer.status, peer.since, peer.incarnation)

    def suspicion_deadline(self, node_id: bytes) -> float | None:
        """When a suspect peer will be declared failed, or None if it is not suspect."""
        suspicion = self._get(node_id).suspicion
        return None if suspicion is None else suspicion.deadline

    def _get(self, node_id: bytes) -> _Peer:
        try:
            return self._peers[node_id]
        except KeyError:
            raise UsageError(f"{node_id.hex()} is not a peer") from None

    # -- membership, driven by the caller --

    def add_peer(
        self, node_id: bytes, now: float, link_rtt: float | None = None, bitrate: int | None = None
    ) -> None:
        """Start watching `node_id` (alive from `now`), or update its link if already watched.

        Raises `UsageError` for this node's own id."""
        if node_id == self.self_id:
            raise UsageError("a node does not probe itself")
        peer = self._peers.get(node_id)
        if peer is not None:
            peer.link_rtt, peer.bitrate = link_rtt, bitrate
            return
        self._peers[node_id] = _Peer(link_rtt, bitrate, Status.ALIVE, now)
        self._generation += 1
        # A random place in the round (memberlist does the same), so joins are not probed in order.
        position = int(self._rng.random() * (len(self._order) + 1))
        self._order.insert(position, node_id)
        if position < self._index:
            self._index += 1
        if self._next_probe_at is None:
            self._next_probe_at = now

    def remove_peer(self, node_id: bytes, now: float) -> None:
        """Stop watching `node_id`; no event. Unknown ids are ignored."""
        if self._peers.pop(node_id, None) is None:
            return
        self._generation += 1
        position = self._order.index(node_id)
        del self._order[position]
        if position < self._index:
            self._index -= 1
        if self._probe is not None and self._probe.target == node_id:
            self._probe = None
        if not self._peers:
            self._next_probe_at = None

    # -- time --

    def get_timer(self) -> float | None:
        """When `handle_timer` wants to be called next, or None when nothing is scheduled."""
        times = [relay.nack_at for relay in self._relays.values()]
        times += [p.suspicion.deadline for p in self._peers.values() if p.suspicion is not None]
        if self._probe is not None and not self._probe.indirect:
            times.append(self._probe.timeout_at)
        if self._next_probe_at is not None:
            times.append(self._next_probe_at)
        return min(times, default=None)

    def handle_timer(self, now: float) -> list[Output]:
        """Run every timer due at `now`: nacks for relays, expired suspicions, the indirect round,
        the end of the period and the start of the next."""
        out: list[Output] = []
        for seq in [s for s, r in self._relays.items() if r.nack_at <= now]:
            relay = self._relays.pop(seq)
            out.append(SendNack(to=relay.requester, target=relay.target, seq=relay.requester_seq))
        for node_id, peer in list(self._peers.items()):
            if peer.suspicion is not None and peer.suspicion.deadline <= now:
                self._transition(node_id, _Signal.SUSPICION_EXPIRED, now, out)
        probe = self._probe
        if probe is not None and not probe.indirect and probe.timeout_at <= now:
            self._go_indirect(probe, out)
        if self._next_probe_at is not None and self._next_probe_at <= now:
            self._end_period(now, out)
            self._start_period(now, out)
        return out

    def _start_period(self, now: float, out: list[Output]) -> None:
        if not self._order:
            self._next_probe_at = None
            return
        scale = 1 + self._health
        examined: set[bytes] = set()
        while len(examined) < len(self._order):  # each peer once, across a reshuffle too
            if self._index >= len(self._order):
                self._rng.shuffle(self._order)
                self._index = 0
            target = self._order[self._index]
            self._index += 1
            examined.add(target)
            peer = self._peers[target]
            interval = self.config.probe_interval(peer.link_rtt, peer.bitrate) * scale
            if peer.heard_at is not None and now - peer.heard_at < interval:
                # Heard within a period (its heartbeat): a probe would only repeat what we
                # know. Go on to the next peer at once, so a silent one is reached soon.
                continue
            seq = self._next_seq()
            timeout = self.config.probe_timeout(peer.link_rtt, peer.bitrate) * scale
            self._probe = _Probe(target, seq, now + timeout)
            self._next_probe_at = now + interval
            out.append(SendProbe(to=target, seq=seq, suspect=peer.status is not Status.ALIVE))
            return
        # Everyone spoke within its period: on a broadcast medium an idle mesh sends nothing but
        # heartbeats. Look again after the shortest period.
        self._probe = None
        self._next_probe_at = now + scale * min(
            self.config.probe_interval(p.link_rtt, p.bitrate) for p in self._peers.values()
        )

    def _go_indirect(self, probe: _Probe, out: list[Output]) -> None:
        probe.indirect = True
        if self._peers[probe.target].status is Status.FAILED:
            return  # a failed peer is still probed directly, so a healed partition heals
        candidates = [
            n for n in self._order if n != probe.target and self._peers[n].status is Status.ALIVE
        ]
        count = min(self.config.indirect_probes, len(candidates))
        probe.vias = tuple(self._rng.sample(candidates, count))
        out.extend(SendIndirectProbe(via=v, target=probe.target, seq=probe.seq) for v in probe.vias)

    def _end_period(self, now: float, out: list[Output]) -> None:
        probe, self._probe = self._probe, None
        if probe is None or self._peers[probe.target].status is Status.FAILED:
            return  # answered, or nothing to learn
        if probe.vias:
            # Lifeguard: vias that did not even nack point at our own links, not the target's.
            self._adjust_health(sum(1 for v in probe.vias if v not in probe.nacked))
        else:
            self._adjust_health(1)
        self._accuse(probe.target, now, out)

    # -- messages --

    def receive(self, event: Input, now: float) -> list[Output]:
        """Take one message the shell received; return what to send and what changed."""
        out: list[Output] = []
        match event:
            case Heard():
                peer = self._peers.get(event.from_id)
                if peer is not None:
                    peer.heard_at = now
                    if self._probe is not None and self._probe.target == event.from_id:
                        self._probe = None  # answered as well as an ack would
                    self._contact(event.from_id, now, out)
            case ProbeReceived():
                out.append(SendAck(to=event.from_id, seq=event.seq))
                if event.suspect:
                    self._refute(event.from_id, out)
                self._contact(event.from_id, now, out)
            case ProbeAcked():
                self._on_ack(event, now, out)
            case IndirectProbeRequested():
                self._on_relay_request(event, now, out)
            case IndirectAckReceived():
                probe = self._probe
                if self._matches(probe, event.from_id, event.target, event.seq):
                    self._probe = None
                    self._adjust_health(-1)
                    self._contact(event.target, now, out)
            case NackReceived():
                if self._probe and self._matches(
                    self._probe, event.from_id, event.target, event.seq
                ):
                    self._probe.nacked.add(event.from_id)
            case AliveReceived():
                self._on_alive(event, now, out)
            case SuspectReceived():
                self._on_suspect(event, now, out)
        return out

    @staticmethod
    def _matches(probe: _Probe | None, via: bytes, target: bytes, seq: int) -> bool:
        return (
            probe is not None and probe.seq == seq and probe.target == target and via in probe.vias
        )

    def _on_ack(self, event: ProbeAcked, now: float, out: list[Output]) -> None:
        probe = self._probe
        if probe is not None and probe.seq == event.seq and probe.target == event.from_id:
            self._probe = None
            self._adjust_health(-1)
            self._contact(event.from_id, now, out)
            return
        relay = self._relays.get(event.seq)
        if relay is not None and relay.target == event.from_id:
            del self._relays[event.seq]
            out.append(
                SendIndirectAck(to=relay.requester, target=relay.target, seq=relay.requester_seq)
            )
            self._contact(event.from_id, now, out)

    def _on_relay_request(
        self, event: IndirectProbeRequested, now: float, out: list[Output]
    ) -> None:
        if event.target == self.self_id:
            out.append(SendIndirectAck(to=event.from_id, target=event.target, seq=event.seq))
            return
        if len(self._relays) >= _MAX_RELAYS:
            return
        if sum(r.requester == event.from_id for r in self._relays.values()) >= _MAX_RELAYS_PER_PEER:
            return
        peer = self._peers.get(event.target)
        rtt, bitrate = (peer.link_rtt, peer.bitrate) if peer else (None, None)
        seq = self._next_seq()
        nack_at = now + self.config.probe_timeout(rtt, bitrate)
        self._relays[seq] = _Relay(event.from_id, event.seq, event.target, nack_at)
        suspect = peer is not None and peer.status is not Status.ALIVE
        out.append(SendProbe(to=event.target, seq=seq, suspect=suspect))

    def _on_alive(self, event: AliveReceived, now: float, out: list[Output]) -> None:
        peer = self._peers.get(event.node_id)
        if peer is None or event.incarnation <= peer.incarnation:
            return  # unknown, ourselves, or stale
        peer.incarnation = event.incarnation
        self._transition(event.node_id, _Signal.REFUTED, now, out)

    def _on_suspect(self, event: SuspectReceived, now: float, out: list[Output]) -> None:
        if event.node_id == self.self_id:
            if event.incarnation >= self._incarnation:
                self._incarnation = event.incarnation
                self._refute(event.from_id, out)
            else:  # an old suspicion: our refutation was lost on the way to this accuser
                out.append(
                    SendAlive(
                        to=(event.from_id,), node_id=self.self_id, incarnation=self._incarnation
                    )
                )
            return
        peer = self._peers.get(event.node_id)
        if peer is None or event.incarnation < peer.incarnation or event.from_id == self.self_id:
            return
        peer.incarnation = event.incarnation
        if peer.status is Status.ALIVE:
            self._transition(event.node_id, _Signal.SUSPECT_HEARD, now, out, event.from_id)
        elif peer.suspicion is not None:
            self._confirm(peer.suspicion, event.from_id)

    # -- the one place where statuses change --

    def _transition(
        self,
        node_id: bytes,
        signal: _Signal,
        now: float,
        out: list[Output],
        accuser: bytes | None = None,
    ) -> None:
        peer = self._peers[node_id]
        new = _TRANSITIONS.get((peer.status, signal))
        if new is None:
            return
        peer.status, peer.since, peer.suspicion = new, now, None
        self._generation += 1
        if new is Status.SUSPECT:
            members = 1 + sum(1 for p in self._peers.values() if p.status is not Status.FAILED)
            interval = self.config.probe_interval(peer.link_rtt, peer.bitrate)
            # Lifeguard: while we are slow ourselves, we also wait longer before declaring.
            interval *= 1 + self._health
            peer.suspicion = _Suspicion(now, members, interval, [accuser or self.self_id])
            self._confirm(peer.suspicion, None)
        out.append(_ANNOUNCE[new](node_id=node_id, incarnation=peer.incarnation))

    def _confirm(self, suspicion: _Suspicion, accuser: bytes | None) -> bool:
        """Count `accuser` (None: only recompute) and move the deadline; False if not new."""
        if accuser is not None:
            if accuser in suspicion.accusers:
                return False
            suspicion.accusers.append(accuser)
        timeout = self.config.suspicion_timeout(
            suspicion.members, suspicion.interval, len(suspicion.accusers) - 1
        )
        suspicion.deadline = suspicion.started + timeout
        return True

    def _accuse(self, node_id: bytes, now: float, out: list[Output]) -> None:
        peer = self._peers[node_id]
        if peer.status is Status.ALIVE:
            self._transition(node_id, _Signal.PROBE_FAILED, now, out)
        elif peer.suspicion is None or not self._confirm(peer.suspicion, self.self_id):
            return
        to = tuple(n for n in self._order if self._peers[n].status is not Status.FAILED)
        out.append(SendSuspect(to=to, node_id=node_id, incarnation=peer.incarnation))

    def _contact(self, node_id: bytes, now: float, out: list[Output]) -> None:
        if node_id in self._peers:
            self._transition(node_id, _Signal.CONTACT, now, out)

    def _refute(self, accuser: bytes, out: list[Output]) -> None:
        self._incarnation += 1
        self._adjust_health(1)  # Lifeguard: being suspected says our own links are slow
        to = tuple(self._order) if accuser in self._peers else (*self._order, accuser)
        out.append(SendAlive(to=to, node_id=self.self_id, incarnation=self._incarnation))

    def _adjust_health(self, delta: int) -> None:
        self._health = min(self.config.max_local_health, max(0, self._health + delta))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq
