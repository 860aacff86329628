"""Simulated links, so tests can run many nodes in one process on trio's mock clock.

A `MemoryNetwork` is the simulated world: a graph of bidirectional links, each with a `LinkProfile`
(latency, jitter, bandwidth, loss, duplication, MTU). A `MemoryTransport` is one node's endpoint in
it and implements `transports.base.Transport`.

**One hop only.** `send` reaches a *direct neighbour* over the link between the two nodes, like one
radio hop; sending to anyone else, or across a partition, raises `TransportError` ("no path").
Multi-hop routing is the runtime's business, so tests on sparse graphs exercise the runtime's
relaying rather than a shortcut in the transport.

Timing. Each direction of a link is a queue: a packet starts serialising when the one before it
has finished (`8 * len / bandwidth` seconds each), then flies for `latency` plus a uniform
`0..jitter` (so jitter reorders packets). Packets in flight wait in a heap owned by the *sender*;
one carrier task in the sender's `run` sleeps until the earliest arrival time and hands packets
over in (arrival time, send order) — so a link without jitter is strictly FIFO, which one task per
packet would not be (trio shuffles tasks that wake together). Everything waits on trio timers, so
it runs under pytest-trio's `autojump_clock` and hours of simulated time cost nothing. A packet in
flight when its sender stops vanishes, as when a radio is switched off mid-transmission.

Arrival. A packet is delivered only if, at arrival time, the link still carries traffic (else it is
counted as `cut`) and the receiver is running (else `dropped_offline`); both are network counters.
Lost packets vanish silently, as on radio; they still occupied the link while being sent.

Randomness. Every random draw comes from a `random.Random` derived from the network seed and the
direction of the link, so a run is reproducible, and one link's traffic does not shift the draws of
another (trio shuffles task order, so a single shared generator would not be).

Events. Link state changes (`link`, `unlink`, `partition`, `heal`) reach both ends at once, without
loss, as carrier detect would: `PeerSeen` when a link starts carrying traffic, `PeerLost` when it
stops. `announce` instead sends a packet to every neighbour (subject to loss). Each transport's
event channel is bounded; when it is full the newest event is dropped and counted in
`counters()["dropped_events"]` — the network never blocks and never raises on a slow reader.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

import trio

from kai_mesh.core.errors import TransportError, UsageError
from transports.base import (
    Abilities,
    BroadcastReceived,
    InterfaceInfo,
    MessageReceived,
    PeerInfo,
    PeerLost,
    PeerSeen,
    PingResult,
    TransportBase,
    TransportEvent,
)

#: The name of the one interface every memory transport has.
INTERFACE = "memory"
#: Bytes a ping or its answer occupies on the link (they queue behind data like any packet).
PROBE_BYTES = 16
#: Bytes an announce occupies on the link.
ANNOUNCE_BYTES = 64
#: MTU of a link with the default profile, and `max_payload` of a node with no links.
DEFAULT_MTU = 500
#: Default capacity of each transport's event channel.
DEFAULT_EVENT_CAPACITY = 1000

Edge = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """How one link behaves; the same in both directions (each direction queues separately)."""

    latency: float = 0.0  # seconds, one way
    jitter: float = 0.0  # extra uniform random delay 0..jitter, which reorders packets
    bandwidth: int | None = None  # bits/s; None is instantaneous serialisation
    loss: float = 0.0  # probability a packet is dropped
    duplicate: float = 0.0  # probability a packet is delivered twice
    mtu: int = DEFAULT_MTU  # largest payload, bytes

    def __post_init__(self) -> None:
        if self.latency < 0 or self.jitter < 0:
            raise UsageError("latency and jitter must be >= 0")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise UsageError("bandwidth must be > 0 bits/s, or None")
        if not (0.0 <= self.loss <= 1.0 and 0.0 <= self.duplicate <= 1.0):
            raise UsageError("loss and duplicate are probabilities in 0..1")
        if self.mtu <= 0:
            raise UsageError("mtu must be > 0")

    def serialisation(self, size: int) -> float:
        """Seconds `size` bytes occupy the link."""
        return 0.0 if self.bandwidth is None else 8 * size / self.bandwidth


class _Kind(Enum):
    DATA = "data"
    ANNOUNCE = "announce"
    PING = "ping"
    PONG = "pong"
    BROADCAST = "broadcast"


@dataclass(frozen=True, slots=True)
class _Packet:
    kind: _Kind
    src: bytes
    dst: bytes
    data: bytes = b""
    probe: int = 0  # ping id, echoed in the pong

    @property
    def size(self) -> int:
        if self.kind in (_Kind.DATA, _Kind.BROADCAST):
            return len(self.data)
        return ANNOUNCE_BYTES if self.kind is _Kind.ANNOUNCE else PROBE_BYTES


@dataclass(slots=True)
class _PeerState:
    last_heard: float
    rtt: float | None = None


def _now() -> float:
    # Graphs are often built before trio.run starts; time 0 is when the mock clock starts too.
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0


def _edge(a: bytes, b: bytes) -> Edge:
    # One canonical key per undirected link; sorted so iteration order never depends on hashing.
    return (a, b) if a < b else (b, a)


class MemoryNetwork:
    """The simulated world: nodes, the links between them, and partitions.

    Raises `UsageError` for a mistake in building the graph (unknown node, self link, a node in two
    partition groups, a node id registered twice).
    """

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed
        self._nodes: dict[bytes, MemoryTransport] = {}
        self._links: dict[Edge, LinkProfile] = {}
        self._groups: dict[bytes, int] | None = None
        self._busy_until: dict[Edge, float] = {}  # per direction (src, dst): link free again at
        self._rngs: dict[Edge, random.Random] = {}  # per direction (src, dst)
        self._counters: dict[str, int] = dict.fromkeys(
            ("delivered", "lost", "duplicated", "cut", "dropped_offline"), 0
        )

    # -- building the graph ------------------------------------------------------------------

    def transport(
        self,
        node_id: bytes,
        name: str | None = None,
        *,
        capabilities: frozenset[str] = frozenset(),
        event_capacity: int = DEFAULT_EVENT_CAPACITY,
    ) -> MemoryTransport:
        """A new endpoint for `node_id`; `name` and `capabilities` are what its peers see."""
        if node_id in self._nodes:
            raise UsageError(f"node {node_id.hex()} already has a transport")
        t = MemoryTransport(self, node_id, name, capabilities, event_capacity)
        self._nodes[node_id] = t
        return t

    def link(self, a: bytes, b: bytes, profile: LinkProfile | None = None) -> None:
        """Join `a` and `b` (both directions); on an existing link, change its profile."""
        self._known(a, b)
        if a == b:
            raise UsageError("a node cannot link to itself")
        self._change(lambda: self._links.__setitem__(_edge(a, b), profile or LinkProfile()))

    def unlink(self, a: bytes, b: bytes) -> None:
        """Remove the link between `a` and `b`; raises `UsageError` if there is none."""
        if _edge(a, b) not in self._links:
            raise UsageError(f"no link between {a.hex()} and {b.hex()}")
        self._change(lambda: self._links.pop(_edge(a, b)))

    def partition(self, *groups: Iterable[bytes]) -> None:
        """From now on only links inside one group carry traffic; nodes in no group are cut off.

        Replaces any earlier partition. Links are kept, so `heal` restores them.
        """
        assignment: dict[bytes, int] = {}
        for i, group in enumerate(groups):
            for node in group:
                self._known(node)
                if assignment.setdefault(node, i) != i:
                    raise UsageError(f"node {node.hex()} is in two partition groups")
        self._change(lambda: setattr(self, "_groups", assignment))

    def heal(self) -> None:
        """End the partition: every link carries traffic again."""
        self._change(lambda: setattr(self, "_groups", None))

    def line(self, ids: Sequence[bytes], profile: LinkProfile | None = None) -> list[Edge]:
        """Link consecutive ids: a - b - c - …; returns the links made."""
        return self._link_all(list(itertools.pairwise(ids)), profile)

    def ring(self, ids: Sequence[bytes], profile: LinkProfile | None = None) -> list[Edge]:
        """A line closed into a ring (needs at least three ids to differ from a line)."""
        pairs = list(itertools.pairwise(ids))
        if len(ids) > 2:
            pairs.append((ids[-1], ids[0]))
        return self._link_all(pairs, profile)

    def full(self, ids: Sequence[bytes], profile: LinkProfile | None = None) -> list[Edge]:
        """Link every pair."""
        return self._link_all(list(itertools.combinations(ids, 2)), profile)

    def random_sparse(
        self,
        ids: Sequence[bytes],
        degree: float,
        *,
        seed: int | None = None,
        profile: LinkProfile | None = None,
    ) -> list[Edge]:
        """A connected random graph with average degree about `degree` (at least a tree).

        A random spanning tree guarantees connectivity (so a runtime can relay to everyone); random
        extra links then bring the edge count to `round(len(ids) * degree / 2)`. `seed` defaults to
        the network's seed.
        """
        rng = random.Random(self.seed if seed is None else seed)
        order = list(ids)
        rng.shuffle(order)
        chosen: dict[Edge, None] = {}
        for i in range(1, len(order)):
            chosen[_edge(order[i], rng.choice(order[:i]))] = None
        n = len(order)
        target = min(max(n - 1, round(n * degree / 2)), n * (n - 1) // 2)
        while len(chosen) < target:
            a, b = rng.sample(order, 2)
            chosen[_edge(a, b)] = None
        return self._link_all(list(chosen), profile)

    # -- looking at it ---------------------------------------------------------------------

    def neighbours(self, node_id: bytes) -> list[bytes]:
        """Nodes `node_id` can reach now: linked and not separated by a partition."""
        return [b if a == node_id else a for a, b in self._carrying() if node_id in (a, b)]

    def profile(self, a: bytes, b: bytes) -> LinkProfile | None:
        """The link between `a` and `b`, or None (whether or not a partition cuts it)."""
        return self._links.get(_edge(a, b))

    def counters(self) -> dict[str, int]:
        """Network-wide: `delivered`, `lost`, `duplicated`, `cut` (link went down in flight),
        `dropped_offline` (receiver not running at arrival)."""
        return dict(self._counters)

    # -- internals -----------------------------------------------------------------------------

    def _known(self, *ids: bytes) -> None:
        for node in ids:
            if node not in self._nodes:
                raise UsageError(f"node {node.hex()} has no transport in this network")

    def _link_all(self, pairs: list[Edge], profile: LinkProfile | None) -> list[Edge]:
        for a, b in pairs:
            self.link(a, b, profile)
        return [_edge(a, b) for a, b in pairs]

    def _carries(self, a: bytes, b: bytes) -> bool:
        if _edge(a, b) not in self._links:
            return False
        if self._groups is None:
            return True
        ga = self._groups.get(a)
        return ga is not None and ga == self._groups.get(b)

    def _carrying(self) -> list[Edge]:
        return [e for e in self._links if self._carries(*e)]

    def _change(self, mutate: Callable[[], object]) -> None:
        # Every topology change goes through here so both ends hear of exactly the links that
        # started or stopped carrying traffic, whatever the change was.
        before = self._carrying()
        mutate()
        after = self._carrying()
        before_set, after_set = set(before), set(after)
        for a, b in before:
            if (a, b) not in after_set:
                self._nodes[a]._link_down(b)
                self._nodes[b]._link_down(a)
        for a, b in after:
            if (a, b) not in before_set:
                self._nodes[a]._link_up(b)
                self._nodes[b]._link_up(a)

    def _rng(self, src: bytes, dst: bytes) -> random.Random:
        rng = self._rngs.get((src, dst))
        if rng is None:
            # A str seed is hashed with SHA-512, stable across processes (unlike hash()).
            rng = random.Random(f"{self.seed}:{src.hex()}:{dst.hex()}")
            self._rngs[(src, dst)] = rng
        return rng

    def _transmit(self, sender: MemoryTransport, packet: _Packet) -> None:
        """Queue `packet` on its link and schedule its arrival (and its duplicate's)."""
        src, dst = packet.src, packet.dst
        profile = self._links[_edge(src, dst)]
        now = trio.current_time()
        done = max(now, self._busy_until.get((src, dst), now)) + profile.serialisation(packet.size)
        self._busy_until[(src, dst)] = done
        sender._tx_bytes += packet.size
        rng = self._rng(src, dst)
        # Always four draws per packet, so changing one probability keeps the others' streams.
        lost = rng.random() < profile.loss
        duplicated = rng.random() < profile.duplicate
        arrivals = [done + profile.latency + rng.uniform(0.0, profile.jitter)]
        second = done + profile.latency + rng.uniform(0.0, profile.jitter)
        if lost:
            self._counters["lost"] += 1
            sender._counters["lost"] += 1
            return
        if duplicated:
            self._counters["duplicated"] += 1
            sender._counters["duplicated"] += 1
            arrivals.append(second)
        for at in arrivals:
            sender._schedule(packet, at)

    def _land(self, packet: _Packet) -> None:
        receiver = self._nodes[packet.dst]
        if not self._carries(packet.src, packet.dst):
            self._counters["cut"] += 1
        elif not receiver.online:
            self._counters["dropped_offline"] += 1
        else:
            self._counters["delivered"] += 1
            receiver._arrive(packet)


class MemoryTransport(TransportBase):
    """One node's endpoint in a `MemoryNetwork`; see the module docstring for the model.

    Make one with `MemoryNetwork.transport`. `send`, `announce` and `ping` raise `TransportError`
    when the transport is not running, the peer is not a neighbour now ("no path"), or the data
    is larger than `max_payload`.
    """

    #: Live links and broadcast, as a LAN or a radio; no link state to reset, nothing stored.
    abilities = Abilities(live_links=True, broadcast=True, packets=True)

    def __init__(
        self,
        network: MemoryNetwork,
        node_id: bytes,
        node_name: str | None,
        capabilities: frozenset[str],
        event_capacity: int,
    ) -> None:
        self.name = INTERFACE
        self.network = network
        self.node_id = node_id
        self.node_name = node_name
        self.capabilities = capabilities
        self.online = False
        self._send_events, self._events = trio.open_memory_channel[TransportEvent](event_capacity)
        self._in_flight: list[tuple[float, int, _Packet]] = []  # heap of (arrival, seq, packet)
        self._flight_seq = itertools.count()
        self._wakeup = trio.Event()
        self._peers: dict[bytes, _PeerState] = {}
        self._pings: dict[int, trio.Event] = {}
        self._probe_ids = itertools.count(1)
        self._tx_bytes = 0
        self._rx_bytes = 0
        self._counters: dict[str, int] = dict.fromkeys(
            (
                "sent",
                "received",
                "lost",
                "duplicated",
                "dropped_events",
                "no_path",
                "oversize",
                "ping_timeout",
            ),
            0,
        )

    def __repr__(self) -> str:
        return f"<MemoryTransport {self.node_id.hex()[:8]} {self.node_name or ''}>"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Go online and carry packets until cancelled; raises `TransportError` if already running.

        Packets this node sent that are still in flight vanish when it stops.
        """
        if self.online:
            raise TransportError(f"{self!r} is already running")
        try:
            self.online = True
            task_status.started()
            await self._carry()
        finally:
            self.online = False
            self._in_flight.clear()

    async def send(self, node_id: bytes, data: bytes) -> None:
        """Queue `data` for the neighbour `node_id`; returns at once (delivery is not awaited)."""
        await trio.lowlevel.checkpoint()
        if len(data) > self.max_payload:
            self._counters["oversize"] += 1
            raise TransportError(f"{len(data)} bytes exceeds max_payload {self.max_payload}")
        self._check_path(node_id)
        self._counters["sent"] += 1
        self.network._transmit(self, _Packet(_Kind.DATA, self.node_id, node_id, data))

    async def announce(self) -> None:
        """Send an announce to every current neighbour; each arrives as a `PeerSeen` there."""
        await trio.lowlevel.checkpoint()
        self._check_running()
        for peer in self.network.neighbours(self.node_id):
            self.network._transmit(self, _Packet(_Kind.ANNOUNCE, self.node_id, peer))

    async def broadcast(self, data: bytes) -> None:
        """`data` to every current neighbour, each copy lost or delayed on its own link as any
        packet; arrives as `BroadcastReceived` (the sender is not proven, as on a radio)."""
        await trio.lowlevel.checkpoint()
        self._check_running()
        for peer in self.network.neighbours(self.node_id):
            self.network._transmit(self, _Packet(_Kind.BROADCAST, self.node_id, peer, data))

    async def ping(self, node_id: bytes) -> PingResult:
        """Round trip a probe to the neighbour; raises `TransportError` on no path or timeout.

        The probe is given up after `5 * (latency + jitter + 1)` seconds plus whatever is already
        queued on the link, so a probe stuck behind a long backlog is not taken for lost. Wrap the
        call in `trio.fail_after` for a shorter bound.
        """
        self._check_path(node_id)
        profile = self.network._links[_edge(self.node_id, node_id)]
        backlog = self.network._busy_until.get((self.node_id, node_id), 0.0) - trio.current_time()
        timeout = 5 * (profile.latency + profile.jitter + 1) + max(0.0, backlog)
        probe = next(self._probe_ids)
        answered = self._pings[probe] = trio.Event()
        start = trio.current_time()
        try:
            self.network._transmit(self, _Packet(_Kind.PING, self.node_id, node_id, probe=probe))
            with trio.move_on_after(timeout):
                await answered.wait()
        finally:
            del self._pings[probe]
        if not answered.is_set():
            self._counters["ping_timeout"] += 1
            raise TransportError(f"ping to {node_id.hex()} timed out after {timeout:g} s")
        rtt = trio.current_time() - start
        self._peers.setdefault(node_id, _PeerState(last_heard=trio.current_time())).rtt = rtt
        return PingResult(rtt=rtt, hops=1)

    @property
    def events(self) -> trio.MemoryReceiveChannel[TransportEvent]:
        """Link changes, announces and messages, in order. Full: the newest event is dropped."""
        return self._events

    def packet_room(self, node_id: bytes) -> int:
        """The MTU of the link to `node_id` (the default MTU when there is none)."""
        profile = self.network._links.get(_edge(self.node_id, node_id))
        return DEFAULT_MTU if profile is None else profile.mtu

    @property
    def max_payload(self) -> int:
        """The smallest MTU of this node's links (the default MTU when it has none)."""
        mtus = [p.mtu for e, p in self.network._links.items() if self.node_id in e]
        return min(mtus, default=DEFAULT_MTU)

    def interfaces(self) -> list[InterfaceInfo]:
        """One interface, "memory"; its bitrate is the slowest of this node's limited links."""
        rates = [
            p.bandwidth
            for e, p in self.network._links.items()
            if self.node_id in e and p.bandwidth is not None
        ]
        return [
            InterfaceInfo(
                name=INTERFACE,
                kind="memory",
                mtu=self.max_payload,
                bitrate=min(rates, default=None),
                online=self.online,
                tx_bytes=self._tx_bytes,
                rx_bytes=self._rx_bytes,
            )
        ]

    def peers(self) -> list[PeerInfo]:
        """Current neighbours, with when each was last heard and the last ping's rtt."""
        result = []
        for node_id in self.network.neighbours(self.node_id):
            state = self._peers.get(node_id) or _PeerState(last_heard=_now())
            result.append(self._peer_info(node_id, state))
        return result

    def counters(self) -> dict[str, int]:
        """`sent`, `received` (data messages), `lost` and `duplicated` (of packets this node sent),
        `dropped_events`, and refusals: `no_path`, `oversize`, `ping_timeout`."""
        return dict(self._counters)

    # -- internals -----------------------------------------------------------------------------

    def _check_running(self) -> None:
        if not self.online:
            raise TransportError(f"{self!r} is not running")

    def _check_path(self, node_id: bytes) -> None:
        self._check_running()
        if not self.network._carries(self.node_id, node_id):
            self._counters["no_path"] += 1
            raise TransportError(f"no path to {node_id.hex()}: not a neighbour now")

    def _schedule(self, packet: _Packet, at: float) -> None:
        heapq.heappush(self._in_flight, (at, next(self._flight_seq), packet))
        self._wakeup.set()

    async def _carry(self) -> None:
        """Hand each in-flight packet to the network at its arrival time, forever."""
        while True:
            while self._in_flight and self._in_flight[0][0] <= trio.current_time():
                self.network._land(heapq.heappop(self._in_flight)[2])
            # A fresh event per wait: _schedule may have put an earlier arrival at the top.
            self._wakeup = trio.Event()
            with trio.move_on_at(self._in_flight[0][0] if self._in_flight else math.inf):
                await self._wakeup.wait()

    def _emit(self, event: TransportEvent) -> None:
        try:
            self._send_events.send_nowait(event)
        except (trio.WouldBlock, trio.BrokenResourceError):
            # Policy: never block the network on a slow reader; drop the newest and count it.
            self._counters["dropped_events"] += 1

    def _peer_info(self, node_id: bytes, state: _PeerState) -> PeerInfo:
        peer = self.network._nodes[node_id]
        return PeerInfo(
            node_id=node_id,
            name=peer.node_name,
            hops=1,
            interface=INTERFACE,
            last_heard=state.last_heard,
            rtt=state.rtt,
            capabilities=peer.capabilities,
        )

    def _heard(self, node_id: bytes) -> _PeerState:
        state = self._peers.setdefault(node_id, _PeerState(last_heard=_now()))
        state.last_heard = _now()
        return state

    def _link_up(self, node_id: bytes) -> None:
        self._emit(PeerSeen(peer=self._peer_info(node_id, self._heard(node_id))))

    def _link_down(self, node_id: bytes) -> None:
        self._emit(PeerLost(node_id=node_id))

    def _arrive(self, packet: _Packet) -> None:
        self._rx_bytes += packet.size
        state = self._heard(packet.src)
        if packet.kind is _Kind.DATA:
            self._counters["received"] += 1
            self._emit(MessageReceived(node_id=packet.src, data=packet.data, interface=INTERFACE))
        elif packet.kind is _Kind.BROADCAST:
            self._emit(BroadcastReceived(data=packet.data, interface=INTERFACE))
        elif packet.kind is _Kind.ANNOUNCE:
            self._emit(PeerSeen(peer=self._peer_info(packet.src, state)))
        elif packet.kind is _Kind.PING:
            # Answered by the transport itself, as a Reticulum path probe would be.
            self.network._transmit(
                self, _Packet(_Kind.PONG, self.node_id, packet.src, probe=packet.probe)
            )
        else:
            answered = self._pings.get(packet.probe)
            if answered is not None:
                answered.set()
