"""Who is alive: heartbeats and the SWIM/Lifeguard failure detector, wired to the transports.

Heartbeats: every `interval` the node broadcasts one signed heartbeat (`core.frames`) on every
transport that can broadcast — one frame per node and interface, however many peers hear it —
carrying a counter that never goes back (the store's run count in the high bits) and the digests
other services ask for (the replicated state's, slot 1), which are handed to them on arrival. A
heartbeat that verifies and is newer than the last one from its node is proof of life (`Heard`);
so is any message over a verified link.

The detector (`core.membership`) probes, in a shuffled round, only the peers it has not heard
from within their period: on a broadcast medium an idle mesh sends nothing but heartbeats and
announces; a peer out of broadcast range (behind a transport node) is probed over a link. Probes,
acks and gossip go as SWIM frames, charged to the background share of the budget. Timeouts come
from each peer's link (bitrate, RTT): `DetectorConfig`'s formulas.

Transitions become events on the control socket's `peers` topic (`peer_suspect`, `peer_failed`,
`peer_recovered`), for `kai-mesh events` and for failover in later issues.

Each SWIM frame leaves in a task of its own; at most `SENDS_PER_PEER` are in flight to one peer.
Past that the frame is dropped and counted (`send_busy`), never queued: a SWIM frame stuck
behind four others on a slow link is late anyway, the detector treats a lost frame as a lost
probe, and a member that floods pings or ping-reqs cannot make this node hold a task and a
frame for each.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from kai_mesh.core.errors import ProtocolError, TransportError
from kai_mesh.core.liveness.membership import (
    DetectorConfig,
    FailureDetector,
    Heard,
    Output,
    PeerFailed,
    PeerRecovered,
    PeerSuspected,
    SendAlive,
    SendIndirectProbe,
    SendSuspect,
    Status,
)
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.frames import (
    FRAME_HEARTBEAT,
    FRAME_SWIM,
    Heartbeat,
    HeartbeatGuard,
    decode_heartbeat,
    decode_swim,
    encode_heartbeat,
    encode_swim,
)
from kai_mesh.runtime.messaging.frame_registry import FrameRegistry
from kai_mesh.runtime.timers import TimerDriver

log = logging.getLogger(__name__)

SENDS_PER_PEER = 4  # SWIM frames in flight to one peer (see the module docstring)

SendFrame = Callable[[bytes, bytes], Awaitable[None]]
Broadcast = Callable[[bytes], Awaitable[None]]
Emit = Callable[[str, dict[str, Any]], None]

_EVENT_NAMES = {PeerSuspected: "peer_suspect", PeerFailed: "peer_failed"}
HEARTBEAT_JITTER = 0.1  # each gap between heartbeats is drawn from interval × (1 ± this)


class Liveness:
    """See the module docstring. `run()` in the node's nursery."""

    def __init__(
        self,
        *,
        secrets: NodeSecrets,
        mesh_id: bytes,
        keys: Mapping[bytes, bytes],
        config: DetectorConfig,
        heartbeat_interval: float,
        send: SendFrame,
        broadcasts: list[Broadcast],
        emit: Emit,
        run_number: int,
        on_contact: Callable[[bytes], None] = lambda node_id: None,
        names: Callable[[bytes], str | None] = lambda node_id: None,
        rng: random.Random | None = None,
        digests: Callable[[], Mapping[int, bytes]] = dict,
        on_digests: Callable[[bytes, Mapping[int, bytes]], None] = lambda node_id, d: None,
    ) -> None:
        self.node_id = secrets.node_id
        self._secrets = secrets
        self.mesh_id = mesh_id
        self._keys = keys
        self.heartbeat_interval = heartbeat_interval
        self._send = send
        self._broadcasts = broadcasts
        self._emit = emit
        self._on_contact = on_contact
        self._names = names
        self._digests = digests  # what other services put on our heartbeats (state, governance)
        self._on_digests = on_digests
        # The counter and the incarnation must not go back across restarts (replay protection,
        # and SWIM ignores an alive older than what it knows): the run count is persisted.
        self._counter = run_number << 32
        self._rng = rng or random.Random()
        self.detector = FailureDetector(self.node_id, config, self._rng, incarnation=run_number)
        self._guard = HeartbeatGuard()
        self._heard_at: dict[bytes, float] = {}
        self._timer = TimerDriver(self)
        self._nursery: trio.Nursery | None = None
        self.counters = {"heartbeats_sent": 0, "heartbeats_heard": 0, "swim_sent": 0}
        self.counters.update({"swim_received": 0, "send_failed": 0, "send_busy": 0})
        self._in_flight: dict[bytes, int] = {}  # SWIM frames being sent, per peer
        self.counters.update({"declared_suspect": 0, "declared_failed": 0, "recovered": 0})
        self.refused: dict[str, int] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._heartbeat_loop)
            await nursery.start(self._timer.run)
            task_status.started()

    # ---- what the router calls --------------------------------------------------------------

    def watch(self, node_id: bytes, link_rtt: float | None, bitrate: int | None) -> None:
        """A peer of this mesh was seen (or its link changed): watch it."""
        if node_id == self.node_id:
            return
        now = trio.current_time()
        new = node_id not in self.detector.peers()
        self.detector.add_peer(node_id, now, link_rtt, bitrate)
        heard = self._heard_at.get(node_id)
        if new and heard is not None:
            # Its heartbeats came before its announce: do not probe what we already hear.
            self._act(self.detector.receive(Heard(from_id=node_id), heard))
        self._timer.moved()

    def forget(self, node_id: bytes) -> None:
        """`node_id` left the mesh (revoked): stop probing it, and do not report it failed."""
        self._heard_at.pop(node_id, None)
        if node_id in self.detector.peers():
            self.detector.remove_peer(node_id, trio.current_time())
        self._timer.moved()

    def heard(self, node_id: bytes) -> None:
        """Authenticated traffic from `node_id` (a message on a verified link)."""
        self._heard_at[node_id] = trio.current_time()
        if node_id in self.detector.peers():
            self._act(self.detector.receive(Heard(from_id=node_id), trio.current_time()))
        self._on_contact(node_id)

    def on_heartbeat(self, data: bytes) -> None:
        try:
            heartbeat = decode_heartbeat(data, self.mesh_id, self._keys)
            self._guard.admit(heartbeat)
        except ProtocolError as exc:
            self._refuse(f"heartbeat.{exc.reason}")
            return
        if heartbeat.node_id == self.node_id:
            return  # our own, echoed by a shared medium
        self.counters["heartbeats_heard"] += 1
        self.heard(heartbeat.node_id)
        if heartbeat.digests:
            self._on_digests(heartbeat.node_id, heartbeat.digests)

    def register_frames(self, frames: FrameRegistry) -> None:
        """SWIM and heartbeats (over a link, or by broadcast) come here, inline; every frame a
        link proves counts as contact."""
        frames.on(FRAME_SWIM, lambda transport, node_id, data: self.on_swim(node_id, data))
        frames.on(FRAME_HEARTBEAT, lambda transport, node_id, data: self.on_heartbeat(data))
        frames.on_broadcast(FRAME_HEARTBEAT, inline=self.on_heartbeat)
        frames.contact.append(self.heard)

    def on_swim(self, node_id: bytes, data: bytes) -> None:
        try:
            event = decode_swim(data, node_id)
        except ProtocolError as exc:
            self._refuse(f"swim.{exc.reason}")
            return
        self.counters["swim_received"] += 1
        self._act(self.detector.receive(event, trio.current_time()))
        self.heard(node_id)

    def state(self, node_id: bytes) -> dict[str, Any] | None:
        """`{"status", "since"}` (since: wall-clock seconds) for a watched peer, else None."""
        if node_id not in self.detector.peers():
            return None
        state = self.detector.state_of(node_id)
        since = time.time() - (trio.current_time() - state.since)
        return {"status": state.status.value, "since": round(since, 3)}

    def heard_at(self, node_id: bytes) -> float | None:
        """`trio.current_time()` of the last heartbeat or message from the node, if any."""
        return self._heard_at.get(node_id)

    def statuses(self) -> dict[str, int]:
        counts = dict.fromkeys((s.value for s in Status), 0)
        for node_id in self.detector.peers():
            counts[self.detector.state_of(node_id).status.value] += 1
        return counts

    # ---- loops ------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            if self._broadcasts:
                self._counter += 1
                frame = encode_heartbeat(
                    Heartbeat(node_id=self.node_id, counter=self._counter, digests=self._digests()),
                    self._secrets,
                    self.mesh_id,
                )
                for broadcast in self._broadcasts:
                    try:
                        await broadcast(frame)
                        self.counters["heartbeats_sent"] += 1
                    except TransportError as exc:
                        log.debug("heartbeat not sent: %s", exc)
            await trio.sleep(heartbeat_gap(self.heartbeat_interval, self._rng))

    # ---- the timer driver's side --------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self.detector.get_timer()

    def handle_timer(self, now: float) -> None:
        self._act(self.detector.handle_timer(now))

    # ---- outputs ----------------------------------------------------------------------------

    def _act(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, PeerSuspected | PeerFailed | PeerRecovered):
                self._announce(output)
                continue
            if isinstance(output, SendAlive | SendSuspect):
                targets: tuple[bytes, ...] = output.to
            elif isinstance(output, SendIndirectProbe):
                targets = (output.via,)
            else:
                targets = (output.to,)
            frame = encode_swim(output)
            for target in targets:
                if target == self.node_id or self._nursery is None:
                    continue
                if self._in_flight.get(target, 0) >= SENDS_PER_PEER:
                    self.counters["send_busy"] += 1
                    continue
                self._in_flight[target] = self._in_flight.get(target, 0) + 1
                self._nursery.start_soon(self._send_one, target, frame)
        self._timer.moved()

    async def _send_one(self, node_id: bytes, frame: bytes) -> None:
        try:
            await self._send(node_id, frame)
            self.counters["swim_sent"] += 1
        except TransportError as exc:
            # A probe that cannot leave is a probe that gets no ack: the detector sees to that.
            self.counters["send_failed"] += 1
            log.debug("SWIM frame to %s not sent: %s", node_id.hex(), exc)
        finally:
            left = self._in_flight[node_id] - 1
            if left:
                self._in_flight[node_id] = left
            else:
                del self._in_flight[node_id]

    def _announce(self, event: PeerSuspected | PeerFailed | PeerRecovered) -> None:
        name = _EVENT_NAMES.get(type(event), "peer_recovered")
        key = {"peer_suspect": "declared_suspect", "peer_failed": "declared_failed"}
        self.counters[key.get(name, "recovered")] += 1
        who = self._names(event.node_id) or event.node_id.hex()
        level = logging.WARNING if isinstance(event, PeerFailed) else logging.INFO
        log.log(level, "%s: %s (incarnation %d)", name.replace("_", " "), who, event.incarnation)
        self._emit(
            "peers",
            {
                "event": name,
                "node_id": event.node_id.hex(),
                "name": self._names(event.node_id),
                "incarnation": event.incarnation,
                "time": time.time(),
            },
        )
        if isinstance(event, PeerRecovered):
            self._on_contact(event.node_id)

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


def heartbeat_gap(interval: float, rng: random.Random) -> float:
    """The wait before the next heartbeat: `interval` ± `HEARTBEAT_JITTER`, the same on average.

    Nodes started together (a power cut, the harness) would otherwise heartbeat in the same
    instant every interval for ever: on a shared radio channel they collide or are lost to
    half-duplex (seen on the emulated channel: five heartbeats within 70 ms), peers miss them and
    probe over links. Even the longest gap stays below the detector's period (1.25 intervals)."""
    return interval * rng.uniform(1 - HEARTBEAT_JITTER, 1 + HEARTBEAT_JITTER)


def heartbeat_interval(config: DetectorConfig, slowest_bitrate: int | None) -> float:
    """Heartbeats come a little more often than the detector's period on the slowest interface,
    so that a neighbour heard by its heartbeats is never probed as well."""
    return 0.8 * config.probe_interval(None, slowest_bitrate)


def detector_config(duty_cycle: float, liveness_share: float) -> DetectorConfig:
    """Detector tuning for a node whose slowest interface may transmit `duty_cycle` of the time,
    of which `liveness_share` (of that budget) goes to heartbeats and probes.

    On a duty-cycled radio a period lasts many minutes and every neighbour hears every heartbeat,
    so a suspicion is refuted within a period or not at all: it lasts 2 to 4 periods there
    instead of SWIM's 4 to 24 (which assume gossip needs many cheap periods to spread)."""
    if duty_cycle < 1:
        return DetectorConfig(
            airtime_share=duty_cycle * liveness_share, suspicion_mult=2.0, suspicion_max_mult=2.0
        )
    return DetectorConfig(airtime_share=duty_cycle * liveness_share)
