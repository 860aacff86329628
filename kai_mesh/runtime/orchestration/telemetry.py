"""Telemetry and node facts on the wire (issue 11, items 3 and 6; the rules and formats are
`kai_mesh.core.orchestration.telemetry` and `.facts`).

Every `period` the service takes this node's sample (cpu and memory use, queue depth, served/s,
errors, each hosted replica's in-flight count and readiness) and hands it to the core
`TelemetrySender`, which decides whether anything goes: a full sample at each keepalive, a delta
when something moved beyond its threshold, and on a radio profile only within the byte budget.
What goes is sent, as a TELEMETRY frame, to every live peer over its link (background priority:
it yields to messages and keeps to the airtime share). Received samples go to a `TelemetryView`
(last writer wins per node, never stored) with the time they were heard.

Facts (capabilities, cpus, memory) go to a peer the first time its telemetry is heard from a new
boot (it restarted, or is new), and to everyone when they change; a node with no telemetry from
a peer yet still places with the `NodeInfo` defaults.

Bytes are counted (`counters`): samples and facts sent, in frames and bytes, so a bench can put
telemetry bytes per node per hour beside the budget.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from kai_mesh.core.errors import KaiMeshError
from kai_mesh.core.messaging.frames import FRAME_TELEMETRY
from kai_mesh.core.orchestration.facts import FACTS_FORMAT, NodeFacts, decode_facts
from kai_mesh.core.orchestration.telemetry import (
    TELEMETRY_FORMAT,
    Sample,
    TelemetryPolicy,
    TelemetrySender,
    TelemetryView,
    decode,
    lan_profile,
    radio_profile,
)
from kai_mesh.runtime.messaging.frame_registry import FrameRegistry
from transports.base import Transport

log = logging.getLogger(__name__)

Send = Callable[[bytes, bytes], Awaitable[None]]
SAMPLE_PERIOD = 1.0  # seconds between looks at the node's own state
# An interface at or below this bitrate is a radio: telemetry keeps to the radio budget.
RADIO_BITRATE = 100_000


def policy_for(transports: list[Transport]) -> TelemetryPolicy:
    """The radio profile (500 B/h) when any interface is radio-slow, else the LAN profile:
    the slowest link sets the pace, as for heartbeats."""
    slow = any(
        i.bitrate is not None and i.bitrate <= RADIO_BITRATE
        for t in transports
        for i in t.interfaces()
    )
    return radio_profile() if slow else lan_profile()


class TelemetryService:
    """See the module docstring. Set `send` (node id, frame), then run `run`."""

    def __init__(
        self,
        *,
        facts: NodeFacts,
        sample: Callable[[], Sample],
        peers: Callable[[], list[bytes]],
        policy: TelemetryPolicy,
        rng: random.Random | None = None,
        period: float = SAMPLE_PERIOD,
    ) -> None:
        self.facts = facts
        self._sample = sample
        self._peers = peers
        self.policy = policy
        self.boot = (rng or random.Random()).randrange(1 << 16)
        self.period = period
        self.send: Send | None = None
        self.view = TelemetryView()
        self.peer_facts: dict[bytes, NodeFacts] = {}
        self.heard: dict[bytes, float] = {}  # node -> when its last sample arrived
        self._boots: dict[bytes, int] = {}
        self._owe_facts: set[bytes] = set()
        self._wake = trio.Event()
        self.started_at: float | None = None
        self._last: Sample | None = None
        #: Counts every change of what balancing reads here (a peer's sample or facts, this
        #: node's facts): the orchestrator's candidate cache compares it.
        self.generation = 0
        self.counters = {
            "samples_sent": 0,
            "sample_bytes": 0,
            "facts_sent": 0,
            "facts_bytes": 0,
            "received": 0,
            "refused": 0,
            "send_failed": 0,
        }

    # ---- receiving --------------------------------------------------------------------------

    def register_frames(self, frames: FrameRegistry) -> None:
        frames.on(FRAME_TELEMETRY, self._on_frame)

    def _on_frame(self, transport: Transport, node_id: bytes, frame: bytes) -> None:
        body = frame[1:]
        self.generation += 1  # even a refused frame: a spurious rebuild costs less than a stale one
        try:
            if body[:1] == bytes([TELEMETRY_FORMAT]):
                boot = decode(body).boot
                self.view.receive(node_id, body)
                self.heard[node_id] = trio.current_time()
                if self._boots.get(node_id) != boot:
                    self._boots[node_id] = boot
                    self._owe_facts.add(node_id)  # new to us, or restarted: it lacks our facts
                    self._wake.set()
            elif body[:1] == bytes([FACTS_FORMAT]):
                self.peer_facts[node_id] = decode_facts(body)
            else:
                raise KaiMeshError("telemetry frame: unknown body format")
        except KaiMeshError as exc:
            self.counters["refused"] += 1
            log.debug("telemetry from %s refused: %s", node_id.hex()[:8], exc)
            return
        self.counters["received"] += 1

    def current(self) -> Sample | None:
        """This node's own latest sample (taken now if telemetry has not run)."""
        if self._last is None:
            self._last = self._sample()
        return self._last

    def load(self, node: bytes) -> Sample | None:
        return self.view.samples.get(node)

    def silent_for(self, node: bytes, now: float) -> float | None:
        """Seconds since `node`'s last sample (None: never heard)."""
        at = self.heard.get(node)
        return None if at is None else now - at

    def past_ttl(self, node: bytes, ttl: float | None) -> bool:
        """Consul's TTL check across nodes: `node` has sent telemetry before and has been silent
        longer than `ttl` — but never less than two keepalives and a change interval, the most
        its links may let it stay silent (on radio the byte budget sets that pace)."""
        if ttl is None:
            return False
        silent = self.silent_for(node, trio.current_time())
        return silent is not None and silent > self._ttl_limit(ttl)

    def ttl_deadline(self, node: bytes, ttl: float | None) -> float | None:
        """When `past_ttl(node, ttl)` turns true unless a sample comes first (None: it cannot,
        no TTL or never heard). What is cached from `past_ttl` holds until then."""
        at = self.heard.get(node)
        if ttl is None or at is None:
            return None
        return at + self._ttl_limit(ttl)

    def _ttl_limit(self, ttl: float) -> float:
        return max(ttl, 2 * self.policy.keepalive + self.policy.min_interval)

    # ---- sending ----------------------------------------------------------------------------

    def set_facts(self, facts: NodeFacts) -> None:
        if facts != self.facts:
            self.facts = facts
            self.generation += 1
            self._owe_facts.update(self._peers())
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        now = trio.current_time()
        self.started_at = now
        sender = TelemetrySender(self.policy, self.boot, now)
        task_status.started()
        while True:
            now = trio.current_time()
            if sender.policy is not self.policy:  # the shell chose the profile after the start
                sender = TelemetrySender(self.policy, self.boot, now)
            self._last = self._sample()
            data = sender.observe(self._last, now)
            if data is not None:
                await self._to_all(data, "samples_sent", "sample_bytes")
            owed, self._owe_facts = self._owe_facts, set()
            facts = self.facts.encode()
            for node in sorted(owed):
                await self._to(node, facts, "facts_sent", "facts_bytes")
            due = sender.get_timer()
            wake_at = min(now + self.period, due if due is not None else math.inf)
            self._wake = trio.Event()
            with trio.move_on_at(max(wake_at, now + 1e-3)):
                await self._wake.wait()

    async def _to_all(self, data: bytes, frames: str, nbytes: str) -> None:
        for node in self._peers():
            await self._to(node, data, frames, nbytes)

    async def _to(self, node: bytes, data: bytes, frames: str, nbytes: str) -> None:
        if self.send is None:
            return
        frame = bytes([FRAME_TELEMETRY]) + data
        try:
            await self.send(node, frame)
        except KaiMeshError as exc:
            self.counters["send_failed"] += 1
            log.debug("telemetry to %s not sent: %s", node.hex()[:8], exc)
            return
        self.counters[frames] += 1
        self.counters[nbytes] += len(frame)

    def status(self) -> dict[str, Any]:
        now = trio.current_time()
        hours = (now - self.started_at) / 3600 if self.started_at is not None else 0.0
        sent = self.counters["sample_bytes"] + self.counters["facts_bytes"]
        return {
            "policy": {
                "keepalive_s": self.policy.keepalive,
                "min_interval_s": self.policy.min_interval,
                "budget_bytes_per_hour": self.policy.budget,
            },
            "facts": {
                "arch": self.facts.arch,
                "cpus": self.facts.cpus,
                "memory_mb": self.facts.memory_mb,
                "capabilities": sorted(self.facts.capabilities),
            },
            "bytes_per_hour": round(sent / hours, 1) if hours > 0 else None,
            **self.counters,
        }
