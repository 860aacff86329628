"""Autoscaling made real: the owner of a service computes the HPA and KEDA decision from load,
writes the count through the placement it alone may write, and says so with `service.scaled`.

Every node runs one `ServiceAutoscaler`; it acts only for the services with an `[autoscaling]`
section that this node owns (core.orchestration.ownership), every `period` seconds (the HPA's
sync period, 15 s) and at once when a waiting message asks a sleeping service to wake.

**From load to a count.** For each replica of the placement in force, the load its node reports
(`samples`: node id -> the newest telemetry `Sample`, core.orchestration.telemetry) and whether
its node says it is ready (the `replicas/NODE` record) become the core's `ReplicaSample`s:

=================  ===============================================================================
metric             reading
=================  ===============================================================================
``in_flight``      per replica: its in-flight requests (``average``)
``cpu``/``memory`` per replica: its node's percentage, over a request of 100 (``utilization``)
``queue_depth``    service-wide: the queued messages of the hosting nodes plus the messages
                   waiting for a replica to wake (``total``: per replica of the total)
``requests_per_s`` service-wide: requests served per second by the hosting nodes (``total``)
any other name     what agents report as mesh events ``service.metric`` {service, name, value}:
                   per replica from its node's newest report, or their sum for ``total``/``value``
=================  ===============================================================================

A replica whose node sent no sample has a missing value: the HPA then counts it at 100 % of the
target when scaling down and 0 % when scaling up, so silence never shrinks a service.
`core.orchestration.autoscale.Autoscaler` does the rest (tolerance, several metrics -> the max,
stabilization windows, policies per period, [min, max], KEDA's step between 0 and 1).

**Writing it.** The decided count is what the orchestrator places (`Orchestrator.wanted`), under
the owner's next epoch: the same authorized path as every placement. A new owner starts from the
count in force. The decision history (recommendations, scale events) lives on the owner and is
lost with it, as the HPA controller's is on a restart.

**Waking from zero** (KEDA's activation). A message for a service that has no ready replica and
scales to zero waits on the sender's node (`wait_for_replica`): it is held (core `WakeQueue`: at
most `limit` per service, for at most `bound` seconds and never past its expiry), the sender
publishes `service.wake` {service, waiting}, the owner wakes the service to max(min, 1) at once,
and the message goes as soon as a replica reports ready. Nothing is lost or refused while the
bound holds; past it the sender gets `no_replica` saying how long it waited.

**Idle** (KEDA's cooldownPeriod): a service is active while any replica has requests in flight,
its hosts serve requests, a message waits to wake it, or a metric is above
`activation_threshold`; a node that sent no sample counts as active (unknown is not idle). After
`idle` seconds inactive, a service with min = 0 goes to zero.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from kai_mesh.core.events.wire import Event
from kai_mesh.core.messaging.envelope import StandardMessage
from kai_mesh.core.orchestration.autoscale import (
    Autoscaler,
    AutoscaleSpec,
    MetricTarget,
    Reading,
    Recommendation,
    ReplicaSample,
    WakeQueue,
    is_active,
    replicas_for_metric,
)
from kai_mesh.core.orchestration.balancer import Replica
from kai_mesh.core.orchestration.telemetry import Sample
from kai_mesh.runtime.events.service import MeshEvents
from kai_mesh.runtime.orchestration.service import Orchestrator
from kai_mesh.runtime.orchestration.views import PlacementWrite, ServiceView

log = logging.getLogger(__name__)

PERIOD = 15.0  # the HPA's --horizontal-pod-autoscaler-sync-period
WAKE_TOPIC = "service.wake"
METRIC_TOPIC = "service.metric"
WAKE_FIRST_GAP = 1.0  # seconds before a waiting sender asks again (its ask may be lost) ...
WAKE_AGAIN = 8.0  # ... doubling up to this, so a long wait costs few events on a radio
STALE_PERIODS = 3  # an agent's report older than this many periods is missing

Samples = Callable[[], Mapping[bytes, Sample]]


@dataclass(slots=True)
class _Service:
    spec: AutoscaleSpec
    low: int
    high: int
    scaler: Autoscaler
    decided: int | None = None


@dataclass(slots=True)
class _Waiting:
    queue: WakeQueue
    changed: trio.Event = field(default_factory=trio.Event)


class ServiceAutoscaler:
    """See the module docstring. Call `attach` once, then run `run` in the node's nursery."""

    def __init__(
        self,
        *,
        orch: Orchestrator,
        events: MeshEvents,
        samples: Samples,
        period: float = PERIOD,
        wake_bound: float = 30.0,
        wake_limit: int = 1024,
    ) -> None:
        self.orch = orch
        self.events = events
        self.samples = samples
        self.period = period
        self.wake_bound = wake_bound
        self.wake_limit = wake_limit
        self._services: dict[str, _Service] = {}
        self._waiting: dict[str, _Waiting] = {}
        self._wake_asked: set[str] = set()  # services a waiting message asked to wake
        self._reports: dict[tuple[str, bytes, str], tuple[float, float]] = {}
        self._forced: dict[str, int] = {}  # services without [autoscaling] a rule scaled
        self._kick = trio.Event()
        self.counters = {"decisions": 0, "scaled": 0, "woken": 0, "held": 0, "wake_timeouts": 0}
        self.last: dict[str, dict[str, Any]] = {}  # service -> its newest decision, for `show`
        #: Called every period besides (the node checks its queues for `queue.backlog`).
        self.ticks: list[Callable[[], None]] = []

    def attach(self) -> None:
        """Hook into the orchestrator (what to place, how to route a sleeping service) and
        listen to the events that concern autoscaling."""
        self.orch.wanted = self.wanted
        self.orch.wake = self.wait_for_replica
        self.orch.state_changed.append(self._state_changed)
        self.events.listen(WAKE_TOPIC, self._on_wake)
        self.events.listen(METRIC_TOPIC, self._on_metric)

    # ---- what the orchestrator places ---------------------------------------------------------

    def wanted(self, view: ServiceView, current: PlacementWrite | None) -> int:
        spec = view.spec
        low, high = spec.replicas.min, spec.replicas.max
        if spec.autoscaling is None:
            forced = self._forced.get(view.name)
            return int(low if forced is None else max(low, min(high, forced)))
        got = self._services.get(view.name)
        if got is not None and got.decided is not None:
            return int(max(low, min(high, got.decided)))
        if current is not None:  # a new owner keeps the count in force
            return int(max(low, min(high, len(current.slots))))
        return int(low)

    # ---- events --------------------------------------------------------------------------------

    def _on_wake(self, event: Event) -> None:
        name = event.fields.get("service")
        if isinstance(name, str):
            self._wake_asked.add(name)
            self._kick.set()

    def _on_metric(self, event: Event) -> None:
        f = event.fields
        name, metric, value = f.get("service"), f.get("name"), f.get("value")
        if isinstance(name, str) and isinstance(metric, str) and isinstance(value, int | float):
            self._reports[(name, event.origin, metric)] = (float(value), trio.current_time())

    def _state_changed(self) -> None:
        for waiting in self._waiting.values():
            waiting.changed.set()

    # ---- the loop ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        next_at = trio.current_time()
        while True:
            with trio.move_on_at(next_at):
                await self._kick.wait()
            self._kick = trio.Event()
            now = trio.current_time()
            full = now >= next_at
            if full:
                next_at = now + self.period
                for tick in self.ticks:
                    tick()
            await self.step(only_wakes=not full)

    async def step(self, *, only_wakes: bool = False) -> None:
        """One pass over the services this node owns (or only those asked to wake)."""
        if self.orch.gov is None:
            return
        asked, self._wake_asked = self._wake_asked, set()
        infos = {n: self.orch._info(n) for n in self.orch.live()}
        services = self.orch.services()
        # A wake for a service this node has not synced yet is kept for the next pass: the
        # sender's ask can outrun the deploy (it asks again, but only every WAKE_AGAIN s).
        early = {n for n in asked if n not in services or not services[n].active}
        self._wake_asked |= set(sorted(early)[:64])
        for view in services.values():
            spec = view.spec if view.active else None
            if spec is None or spec.autoscaling is None:
                self._services.pop(view.name, None)
                continue
            if self.orch.owner_of(view, infos) != self.orch.node_id:
                self._services.pop(view.name, None)  # another node decides; history goes too
                continue
            if only_wakes and view.name not in asked:
                continue
            self._decide(view, self.orch.in_force(view, infos), view.name in asked)

    def _service(self, view: ServiceView) -> _Service:
        spec = view.spec
        a: AutoscaleSpec = spec.autoscaling
        low, high = spec.replicas.min, spec.replicas.max
        got = self._services.get(view.name)
        if got is None or (got.spec, got.low, got.high) != (a, low, high):
            got = _Service(a, low, high, Autoscaler(spec=a, low=low, high=high))
            self._services[view.name] = got
        return got

    def _decide(self, view: ServiceView, write: PlacementWrite | None, asked: bool) -> None:
        svc = self._service(view)
        now = trio.current_time()
        slots = write.slots if write is not None else ()
        current = len(slots)
        loads = self.samples()
        readings = {m.name: self._reading(view, m, slots, loads) for m in svc.spec.metrics}
        proposals = [
            replicas_for_metric(current, m, readings[m.name], svc.spec.tolerance)
            for m in svc.spec.metrics
        ]
        active = asked or self._active(view, svc.spec, slots, loads, readings)
        decision = svc.scaler.recommend(now, current, proposals, active)
        self.counters["decisions"] += 1
        self.last[view.name] = {
            "current": current,
            "desired": decision.replicas,
            "reason": decision.reason,
            "metric_replicas": decision.metric_replicas,
            "active": active,
        }
        if decision.replicas == current:
            svc.decided = current if write is not None else svc.decided
            return
        svc.decided = decision.replicas
        svc.scaler.scaled(now, current, decision.replicas)
        self.counters["scaled"] += 1
        if decision.reason == "woken":
            self.counters["woken"] += 1
        log.info(
            "service %s: %d -> %d replicas (%s)",
            view.name,
            current,
            decision.replicas,
            decision.reason,
        )
        self.events.publish(
            "service.scaled",
            {
                "service": view.name,
                "from": current,
                "to": decision.replicas,
                "reason": decision.reason,
            },
        )
        self.orch.kick()

    def force(self, view: ServiceView, target: int, reason: str) -> bool:
        """Scale `view` to `target` (bounded by its min and max) now, for a reactive rule; only
        on the owner. The count also enters the HPA's recommendations, so the scale-down window
        keeps it until the load says otherwise for that long. True if the count changed."""
        infos = {n: self.orch._info(n) for n in self.orch.live()}
        if not view.active or self.orch.owner_of(view, infos) != self.orch.node_id:
            return False
        write = self.orch.in_force(view, infos)
        current = len(write.slots) if write is not None else 0
        spec = view.spec
        target = max(spec.replicas.min, min(spec.replicas.max, target))
        if target == current:
            return False
        now = trio.current_time()
        if spec.autoscaling is None:
            self._forced[view.name] = target
        else:
            svc = self._service(view)
            svc.decided = target
            svc.scaler.scaled(now, current, target)
            svc.scaler.recommendations.append(Recommendation(target, now))
            svc.scaler.last_active = now  # KEDA: a rule's scale counts as activity
        self.counters["scaled"] += 1
        log.info("service %s: %d -> %d replicas (%s)", view.name, current, target, reason)
        fields = {"service": view.name, "from": current, "to": target, "reason": reason}
        self.events.publish("service.scaled", fields)
        self.orch.kick()
        return True

    # ---- readings ------------------------------------------------------------------------------

    def _ready(self, view: ServiceView, node: bytes, replica: int) -> bool:
        record = view.status.get(node) or {}
        return (
            record.get("state") == "ready"
            and replica in (record.get("replicas") or ())
            and record.get("manifest") == view.manifest_id
        )

    def _reading(
        self,
        view: ServiceView,
        metric: MetricTarget,
        slots: tuple[Any, ...],
        loads: Mapping[bytes, Sample],
    ) -> Reading:
        name = view.name
        hosts = sorted({s.node for s in slots})
        if metric.kind in ("average", "utilization"):
            out = []
            for s in slots:
                value = self._replica_value(name, metric.name, s.node, s.replica, loads)
                out.append(ReplicaSample(ready=self._ready(view, s.node, s.replica), value=value))
            return out
        total: float | None = None
        if metric.name in ("queue_depth", "requests_per_s"):
            values = [
                (loads[n].queue if metric.name == "queue_depth" else loads[n].served / 10)
                for n in hosts
                if n in loads
            ]
            total = float(sum(values)) if values else None
            if metric.name == "queue_depth":
                total = (total or 0.0) + self.waiting(name)
            return total
        reports = [self._report(name, n, metric.name) for n in hosts]
        known = [r for r in reports if r is not None]
        return float(sum(known)) if known else None

    def _replica_value(
        self, service: str, metric: str, node: bytes, replica: int, loads: Mapping[bytes, Sample]
    ) -> float | None:
        sample = loads.get(node)
        if metric == "in_flight":
            if sample is None:
                return None
            for r in sample.replicas:
                if r.ident == (service, replica):
                    return float(r.in_flight)
            return None
        if metric in ("cpu", "memory"):
            return None if sample is None else float(getattr(sample, metric))
        return self._report(service, node, metric)

    def _report(self, service: str, node: bytes, metric: str) -> float | None:
        got = self._reports.get((service, node, metric))
        if got is None or trio.current_time() - got[1] > STALE_PERIODS * self.period:
            return None
        return got[0]

    def _active(
        self,
        view: ServiceView,
        spec: AutoscaleSpec,
        slots: tuple[Any, ...],
        loads: Mapping[bytes, Sample],
        readings: Mapping[str, Reading],
    ) -> bool:
        if self.waiting(view.name):
            return True
        for node in {s.node for s in slots}:
            sample = loads.get(node)
            if sample is None:
                return True  # unknown is not idle
            if sample.served > 0:
                return True
            if any(r.service == view.name and r.in_flight > 0 for r in sample.replicas):
                return True
        for reading in readings.values():
            if isinstance(reading, int | float) and is_active(
                float(reading), spec.activation_threshold
            ):
                return True
        return False

    # ---- waking from zero ----------------------------------------------------------------------

    def waiting(self, service: str) -> int:
        got = self._waiting.get(service)
        return got.queue.pending if got is not None else 0

    async def wait_for_replica(
        self, name: str, message: StandardMessage
    ) -> tuple[ServiceView | None, list[Replica]]:
        """The orchestrator's `wake` hook: a message for `name` found no ready replica. If the
        service scales to zero, hold it until one is ready (see the module docstring)."""
        view, replicas = self.orch.candidates(name)
        if view is None or not view.active or any(r.ready for r in replicas):
            return view, replicas
        spec = view.spec
        if spec.autoscaling is None or spec.replicas.min != 0:
            return view, replicas
        waiting = self._waiting.setdefault(
            name, _Waiting(WakeQueue(bound=self.wake_bound, limit=self.wake_limit))
        )
        now = trio.current_time()
        if not waiting.queue.hold(message.message_id, now):
            return view, replicas  # the queue is full: `no_replica`, as before
        self.counters["held"] += 1
        wall_left = message.expires_at - self.orch._wall()
        deadline = min(now + self.wake_bound, now + max(0.0, wall_left))
        seen: dict[bytes, Any] = {n: r for n, r in view.status.items()}
        fresh: set[bytes] = set()
        ask_at, gap = trio.current_time(), WAKE_FIRST_GAP
        try:
            while trio.current_time() < deadline:
                if trio.current_time() >= ask_at:  # the ask is at most once: ask again, backing off
                    ask_at, gap = trio.current_time() + gap, min(gap * 2, WAKE_AGAIN)
                    fields = {"service": name, "waiting": waiting.queue.pending}
                    self.events.publish(WAKE_TOPIC, fields)
                with trio.move_on_at(min(deadline, ask_at)):
                    await waiting.changed.wait()
                waiting.changed = trio.Event()
                view, replicas = self.orch.candidates(name)
                if view is None or not view.active:
                    return view, replicas
                # A host's record from before the service slept can still say "ready" here
                # (its removal not synced yet): only a record rewritten while we waited counts.
                for node in set(seen) | set(view.status):
                    if seen.get(node) != view.status.get(node):
                        fresh.add(node)
                        seen[node] = view.status.get(node)
                usable = [
                    r if r.node in fresh else dataclasses.replace(r, ready=False) for r in replicas
                ]
                if any(r.ready for r in usable):
                    return view, usable
            self.counters["wake_timeouts"] += 1
            return view, replicas
        finally:
            waiting.queue.release(message.message_id)

    def hosted_here(self) -> dict[str, list[int]]:
        """Service -> the replica numbers the placement in force puts on this node."""
        orch = self.orch
        infos = {n: orch._info(n) for n in orch.live()}
        out: dict[str, list[int]] = {}
        for view in orch.services().values():
            write = orch.in_force(view, infos) if view.active else None
            mine = [s.replica for s in write.slots if s.node == orch.node_id] if write else []
            if mine:
                out[view.name] = mine
        return out

    def status(self) -> dict[str, Any]:
        return {
            **self.counters,
            "waiting": {n: w.queue.pending for n, w in self._waiting.items() if w.queue.pending},
            "services": dict(self.last),
        }
