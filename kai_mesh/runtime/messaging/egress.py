"""Everything this node sends to a peer leaves through here: per-interface priority queues held
to airtime budgets (`core.airtime`).

An interface gets a queue ("lane") when it has a known bitrate below `FAST_LINK` or a duty cycle
set in its config; faster interfaces send at once (a LAN has no airtime to save and the bus
already orders by priority). A lane's budget is the interface's duty cycle over an hour (EU 868:
1 % for RNode interfaces unless configured) plus a 2-second pacing window at 90 % of the bitrate,
so frames wait here, in priority order, instead of piling up in a radio's or a kernel's queue
where a `critical` frame would wait behind them. A frame larger than one packet goes out as the
transport's own paced transfer (an RNS Resource, which has its own window): it is held only to the
hour's budget, and charged whole. `critical` is never held or shed; lower
priorities wait up to their `MAX_DELAY`, then fail with an error the sender sees.

Frames a lane releases to one peer leave in the order it released them: each peer has one
sender task draining a queue (`_send_in_order`), so a frame never overtakes an earlier one of its
priority while the first waits for a link; different peers still go in parallel, so one slow link
holds up no other peer.

Coalescing: on a transport that declares `packets`, frames to a peer that queue while a packet
to it is being sent (its link opened, a transfer, a slow transport's send) leave together in one
BATCH frame up to `packet_room` (`core.messaging.batch`: highest priority first). A lone frame
leaves at once, as itself, from its caller's own task (no hop through another task). After each
packet the peer stays busy for one pass of the scheduler (a Reticulum send returns at once, so
this is the "in flight" that lets a queue form on a LAN): the frames other tasks produce in it
join the next packet, and the receiver's per-packet costs (RNS decrypts and hands over each
packet) are paid once for all of them. A lane packs too, when it releases
(`InterfaceQueue.pop_packets`), and charges the packet once. A frame whose sender stopped
waiting (cancelled) is left out; when a send fails, the frames in it and those queued behind it
fail with the same error at once, rather than each waiting out its own link attempt.

What the lane does not send itself (Reticulum's announces, link setup, keepalives, proofs, and
frames relayed for others) is charged too: every few seconds the interface's transmit counter is
compared with what went through the lane, and the difference is spent as background traffic, so
the budget tracks what the radio really sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from kai_mesh.core.errors import TransportError
from kai_mesh.core.messaging.airtime import AirtimeBudget, InterfaceQueue, Shed
from kai_mesh.core.messaging.batch import Queued, batch_size, encode_batch, take_packet
from kai_mesh.core.messaging.envelope import Priority
from kai_mesh.runtime.timers import TimerDriver
from transports.base import InterfaceInfo, Transport

log = logging.getLogger(__name__)

FAST_LINK = 1_000_000  # bit/s: at or above this, no lane
LINK_OVERHEAD = 83  # an RNS link packet: 19-byte header + 64 bytes of link encryption
PACING_WINDOW = 2.0
PACING_SHARE = 0.9
MAX_DELAY = {Priority.LOW: 30.0, Priority.NORMAL: 60.0, Priority.HIGH: 120.0}
CAPACITY = 512
SYNC_EVERY = 5.0
PACKET_BYTES = 430  # RNS Link.MDU (431) less our frame-type byte: larger frames are Resources

#: Duty cycle for an interface with no `duty_cycle` in its config, by RNS interface class.
DEFAULT_DUTY = {"RNodeInterface": 0.01}

DutyFor = Callable[[InterfaceInfo], float | None]


class AirtimeShed(TransportError):
    """The frame waited too long for airtime, or the lane was full: given up, not sent."""


@dataclass(eq=False)
class _Frame:
    transport: Transport
    node_id: bytes
    data: bytes
    priority: Priority = Priority.NORMAL
    done: trio.Event = field(default_factory=trio.Event)
    error: str | None = None
    shed: bool = False
    abandoned: bool = False  # its sender stopped waiting: not worth a byte any more

    def __len__(self) -> int:
        return len(self.data)

    async def wait(self) -> None:
        """Wait until sent; raises `AirtimeShed` or `TransportError` when it was not."""
        try:
            await self.done.wait()
        finally:
            if not self.done.is_set():
                self.abandoned = True
        if self.shed:
            raise AirtimeShed(self.error or "shed")
        if self.error is not None:
            raise TransportError(self.error)


@dataclass(eq=False)
class _PeerQueue:
    """Frames released to one peer, not yet handed to the transport."""

    waiting: list[Queued[_Frame]] = field(default_factory=list)
    seq: int = 0

    def add(self, frame: _Frame) -> None:
        self.waiting.append(Queued(frame, len(frame.data), frame.priority, self.seq))
        self.seq += 1


@dataclass(eq=False)
class _Lane:
    """One interface's queue, served by the timer driver: frames go when the budget lets them
    (`start_send` queues each behind the frames already released to its peer), and are shed
    when they waited too long."""

    transport: Transport
    interface: str
    queue: InterfaceQueue[_Frame]
    start_send: Callable[[_Frame], None]
    room: Callable[[_Frame], int]
    tx_seen: int | None = None  # the interface's tx counter at the last sync
    lane_bytes: int = 0  # bytes (with overhead) the lane sent since the last sync
    charged_extra: int = 0  # bytes charged for traffic the lane did not send
    timer: TimerDriver = field(init=False)

    def __post_init__(self) -> None:
        self.timer = TimerDriver(self)

    def get_timer(self) -> float | None:
        return self.queue.get_timer()

    def handle_timer(self, now: float) -> None:
        _fail(self.queue.handle_timer(now))
        for packet in self.queue.pop_packets(now, _peer_of, self.room):
            self.lane_bytes += batch_size([len(f.data) for f in packet]) + LINK_OVERHEAD
            for frame in packet:
                self.start_send(frame)


def _peer_of(frame: _Frame) -> bytes:
    return frame.node_id


def _fail_all(queue: _PeerQueue, error: str) -> None:
    for frame in [q.item for q in queue.waiting]:
        frame.error = error
        frame.done.set()
    queue.waiting.clear()


def _fail(shed: list[Shed[_Frame]]) -> None:
    for item in shed:
        waited = item.shed_at - item.queued_at
        item.frame.error = (
            f"no airtime on this interface ({item.reason.value} after {waited:.1f} s)"
        )
        item.frame.shed = True
        item.frame.done.set()


class Egress:
    """See the module docstring. `run()` in the node's nursery; `send()` from anywhere."""

    def __init__(
        self, transports: list[Transport], duty_for: DutyFor, background_share: float = 0.25
    ) -> None:
        self.transports = transports
        self._duty_for = duty_for
        self.background_share = background_share
        self._lanes: dict[tuple[str, str], _Lane | None] = {}
        self._nursery: trio.Nursery | None = None
        # (transport name, node id) -> frames released to the peer, not yet handed over
        self._to_peer: dict[tuple[str, bytes], _PeerQueue] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._sync_loop)
                task_status.started()
        finally:
            self._nursery = None

    async def send(
        self,
        transport: Transport,
        node_id: bytes,
        data: bytes,
        priority: Priority,
        *,
        background: bool = False,
    ) -> None:
        """Send through the peer's interface lane; raises `TransportError` when the frame was
        shed (waited too long for airtime, or the queue overflowed) or the send failed."""
        lane = self._lane_for(transport, node_id)
        if lane is None:
            # A frame larger than a packet is a transfer (an RNS Resource) that may take long:
            # it goes from its caller's task, beside the peer's queue, never blocking it.
            if (
                not transport.abilities.packets
                or self._nursery is None
                or len(data) > transport.packet_room(node_id)
            ):
                await transport.send(node_id, data)
                return
            await self._send_now(_Frame(transport, node_id, data, priority))
            return
        if len(data) > PACKET_BYTES:
            await self._send_transfer(lane, node_id, data, priority, background)
            return
        frame = _Frame(transport, node_id, data, priority)
        shed = lane.queue.push(frame, priority, background, trio.current_time())
        _fail(shed)
        lane.timer.moved()
        await frame.wait()

    async def _send_transfer(
        self, lane: _Lane, node_id: bytes, data: bytes, priority: Priority, background: bool
    ) -> None:
        """More than one packet: the transport sends it as a paced, windowed transfer (an RNS
        Resource), so it does not queue behind the burst window; it must fit the hour's budget
        (critical always goes) and is charged whole."""
        budget, now = lane.queue.budget, trio.current_time()
        if priority < Priority.CRITICAL and not budget.fits_hour(len(data), now, background):
            raise AirtimeShed(f"no airtime this hour for {len(data)} bytes on {lane.interface}")
        budget.spend(len(data), now, background)
        lane.lane_bytes += len(data) + budget.overhead_bytes
        await lane.transport.send(node_id, data)

    async def broadcast(
        self, transport: Transport, data: bytes, *, background: bool = True, wait: float = 0.0
    ) -> None:
        """One frame on every interface of `transport`. It goes once every interface with a
        lane has airtime for it (background airtime for a heartbeat, the whole budget for a
        governance record), waiting at most `wait` seconds for that; else it is dropped
        (raises `TransportError`), never queued: a heartbeat that must wait is worth nothing."""
        if not transport.abilities.broadcast:
            raise TransportError(f"{transport.name} cannot broadcast")
        lanes = [lane for i in transport.interfaces() if (lane := self._lane(transport, i))]
        now = trio.current_time()
        at = max(
            (lane.queue.budget.next_allowed(len(data), now, background) for lane in lanes),
            default=now,
        )
        if at > now + wait:
            kind = "background " if background else ""
            raise TransportError(f"no {kind}airtime left for a broadcast now")
        if at > now:
            await trio.sleep_until(at)
            now = trio.current_time()
        for lane in lanes:
            lane.queue.budget.spend(len(data), now, background)
            lane.lane_bytes += len(data) + lane.queue.budget.overhead_bytes
        await transport.broadcast(data)

    def status(self) -> list[dict[str, Any]]:
        """Airtime used against the budget, per interface with a lane."""
        now = trio.current_time()
        out = []
        for lane in self._lanes.values():
            if lane is None:
                continue
            budget, stats = lane.queue.budget, lane.queue.stats
            out.append(
                {
                    "transport": lane.transport.name,
                    "interface": lane.interface,
                    "bitrate": budget.bitrate,
                    "duty_cycle": budget.duty_cycle,
                    "used_s": round(budget.used(now), 3),
                    "budget_s": round(budget.limit, 3),
                    "used_fraction": round(budget.fraction(now), 4),
                    "background_used_s": round(budget.background_used(now), 3),
                    "overdraft_s": round(budget.overdraft, 3),
                    "queued": len(lane.queue),
                    "sent": {p.name.lower(): n for p, n in stats.sent.items()},
                    "shed": {p.name.lower(): n for p, n in stats.shed.items()},
                }
            )
        return out

    def budget_for(self, transport: Transport, interface: InterfaceInfo) -> AirtimeBudget | None:
        duty = self._duty_for(interface)
        if duty is None:
            duty = DEFAULT_DUTY.get(interface.kind)
        if interface.bitrate is None or (duty is None and interface.bitrate >= FAST_LINK):
            return None
        return AirtimeBudget(
            interface.bitrate,
            duty if duty is not None else 1.0,
            background_share=self.background_share,
            overhead_bytes=LINK_OVERHEAD,
            short_window=PACING_WINDOW,
            short_duty_cycle=PACING_SHARE,
        )

    # ---- lanes ------------------------------------------------------------------------------

    def _lane_for(self, transport: Transport, node_id: bytes) -> _Lane | None:
        interfaces = transport.interfaces()
        peer = next((p for p in transport.peers() if p.node_id == node_id), None)
        wanted = peer.interface if peer is not None else None
        interface = next((i for i in interfaces if i.name == wanted), None)
        if interface is None and len(interfaces) == 1:
            interface = interfaces[0]
        if interface is None:
            return None
        return self._lane(transport, interface)

    def _lane(self, transport: Transport, interface: InterfaceInfo) -> _Lane | None:
        key = (transport.name, interface.name)
        if key not in self._lanes and self._nursery is not None:  # not before `run()`
            self._lanes[key] = self._open_lane(transport, interface)
        return self._lanes.get(key)

    def _open_lane(self, transport: Transport, interface: InterfaceInfo) -> _Lane | None:
        budget = self.budget_for(transport, interface)
        if budget is None or self._nursery is None:
            return None
        log.info(
            "airtime: %s at %d bit/s, duty cycle %.4g, budget %.1f s/h",
            interface.name,
            budget.bitrate,
            budget.duty_cycle,
            budget.limit,
        )
        nursery = self._nursery
        queue = InterfaceQueue[_Frame](budget, CAPACITY, MAX_DELAY)
        lane = _Lane(transport, interface.name, queue, self._send_in_order, self._room)
        lane.tx_seen = interface.tx_bytes
        nursery.start_soon(lane.timer.run)
        return lane

    @staticmethod
    def _room(frame: _Frame) -> int:
        """Bytes one packet to the frame's peer carries (no packing: the frame alone)."""
        if not frame.transport.abilities.packets:
            return 0
        return min(PACKET_BYTES, frame.transport.packet_room(frame.node_id))

    def _send_in_order(self, frame: _Frame) -> None:
        """Queue `frame` for its peer's sender, starting one if none runs (see the docstring)."""
        key = (frame.transport.name, frame.node_id)
        waiting = self._to_peer.get(key)
        if waiting is not None:  # the peer's sender is running: it takes this one in turn
            waiting.add(frame)
            return
        self._to_peer[key] = queue = _PeerQueue()
        queue.add(frame)
        self._start_drain(key, frame.transport, frame.node_id)

    async def _send_now(self, frame: _Frame) -> None:
        """No lane: a frame for a peer with nothing queued or being sent leaves at once, from
        the caller's own task (no hop through another); while it is being sent (a link being
        opened, a transfer), frames for that peer queue, and a sender then takes them packed.
        Raises `TransportError` when the send failed."""
        key = (frame.transport.name, frame.node_id)
        if key in self._to_peer:
            self._send_in_order(frame)
            await frame.wait()
            return
        self._to_peer[key] = queue = _PeerQueue()
        try:
            if await self._send(frame.transport, frame.node_id, [frame]):
                # Ours is on its way. Hold the peer for one pass of the scheduler, so the frames
                # other tasks make in it queue and leave packed (a Reticulum send returns at
                # once: without this, nothing would ever queue on a LAN). Shielded: ours went.
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            if not queue.waiting:
                del self._to_peer[key]
            elif frame.error is not None:  # the peer is unreachable now: they fail with it
                _fail_all(queue, frame.error)
                del self._to_peer[key]
            else:  # sent, or its sender gave up: the frames that queued go on without it
                self._start_drain(key, frame.transport, frame.node_id)
        if frame.error is not None:
            raise TransportError(frame.error)

    def _start_drain(self, key: tuple[str, bytes], transport: Transport, node_id: bytes) -> None:
        try:
            if self._nursery is None:
                raise RuntimeError("not running")
            self._nursery.start_soon(self._drain, key, transport, node_id)
        except RuntimeError:  # the node is stopping: its nursery takes no new task
            _fail_all(self._to_peer.pop(key), "the node is stopping")

    async def _drain(self, key: tuple[str, bytes], transport: Transport, node_id: bytes) -> None:
        queue = self._to_peer[key]
        try:
            while True:
                queue.waiting[:] = [q for q in queue.waiting if not q.item.abandoned]
                if not queue.waiting:
                    return
                room = transport.packet_room(node_id) if transport.abilities.packets else 0
                packet = [q.item for q in take_packet(queue.waiting, room)]
                if not await self._send(transport, node_id, packet):
                    # The peer is unreachable now: those queued behind fail with it.
                    _fail_all(queue, packet[0].error or "not sent")
                # Let the frames other tasks make now queue up, to leave in one packet.
                await trio.lowlevel.checkpoint()
        finally:
            del self._to_peer[key]

    @staticmethod
    async def _send(transport: Transport, node_id: bytes, packet: list[_Frame]) -> bool:
        data = packet[0].data if len(packet) == 1 else encode_batch([f.data for f in packet])
        try:
            await transport.send(node_id, data)
        except TransportError as exc:
            for frame in packet:
                frame.error = str(exc)
            return False
        finally:
            for frame in packet:
                frame.done.set()
        return True

    async def _sync_loop(self) -> None:
        """Charge what the interface sent beyond the lane's own frames (see the docstring)."""
        while True:
            await trio.sleep(SYNC_EVERY)
            for lane in [lane for lane in self._lanes.values() if lane is not None]:
                info = next(
                    (i for i in lane.transport.interfaces() if i.name == lane.interface), None
                )
                if info is None or lane.tx_seen is None:
                    continue
                sent, lane.tx_seen = info.tx_bytes - lane.tx_seen, info.tx_bytes
                extra = sent - lane.lane_bytes
                lane.lane_bytes = 0
                if extra > LINK_OVERHEAD:
                    budget = lane.queue.budget
                    budget.spend(extra - budget.overhead_bytes, trio.current_time(), True)
                    lane.charged_extra += extra
