"""This node's own load as a telemetry `Sample`: what the autoscaler reads for the replicas this
node hosts (and what the telemetry stream would send for them).

Per replica of a service hosted here, `in_flight` is the requests its agent is serving plus the
messages waiting in its inbox: a queue is load the HPA must see, or a replica that keeps up only
by queueing would look idle. Replicas of one service on one node share an agent, so its load is
split evenly among them. `served` is requests per second (times 10, as the sample carries it)
since the previous sample; cpu and memory are the node's, from psutil, when `system` is on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import trio

from kai_mesh.core.orchestration.telemetry import ReplicaLoad, Sample

MAX_COUNT = 2**31


class LoadMeter:
    def __init__(
        self,
        *,
        agents: Callable[[], list[dict[str, Any]]],
        queues: Callable[[], Mapping[str, int]],
        hosted: Callable[[], Mapping[str, list[int]]],
        system: bool = False,
    ) -> None:
        self._agents = agents
        self._queues = queues
        self._hosted = hosted
        self._system = system
        self._last: tuple[float, int] | None = None
        self._rate = 0

    def sample(self) -> Sample:
        agents = {a["name"]: a for a in self._agents()}
        queues = self._queues()
        served = sum(int(a.get("served") or 0) for a in agents.values())
        now = trio.current_time()
        if self._last is not None and now > self._last[0]:
            rate = (served - self._last[1]) / (now - self._last[0])
            self._rate = max(0, min(MAX_COUNT, round(rate * 10)))
        if self._last is None or now - self._last[0] >= 1.0:
            self._last = (now, served)
        replicas = []
        for service, numbers in sorted(self._hosted().items()):
            a = agents.get(service, {})
            load = int(a.get("in_flight") or 0) + int(queues.get(service, 0))
            ready = a.get("state") == "ready"
            share, extra = divmod(load, max(1, len(numbers)))
            for i, number in enumerate(sorted(numbers)):
                replicas.append(
                    ReplicaLoad(service, number, in_flight=share + (i < extra), ready=ready)
                )
        cpu = memory = 0
        if self._system:
            import psutil

            cpu = max(0, min(100, round(psutil.cpu_percent(interval=None))))
            memory = max(0, min(100, round(psutil.virtual_memory().percent)))
        return Sample(
            cpu=cpu,
            memory=memory,
            queue=min(MAX_COUNT, sum(queues.values())),
            served=self._rate,
            errors=min(MAX_COUNT, sum(int(a.get("errors") or 0) for a in agents.values())),
            replicas=tuple(replicas[:64]),
        )
