"""This node's own facts and load, read from the machine (issue 11, item 3).

`detect_facts`: the architecture (`platform.machine()`, named as manifests name it: `arm64`,
`amd64`, ...), the cpu count, the memory, `gpu` when a compute GPU's device node is present (an
NVIDIA `/dev/nvidia0` or AMD's `/dev/kfd`: a display-only `/dev/dri` does not count), and the
capabilities the config lists.

`Sampler`: the telemetry sample of this node — cpu and memory use (psutil), the bus's queue
depth, requests served per second and errors since start (summed over the agent host's
counters), and each hosted replica's in-flight count and readiness (replicas of one service on
one node share their agent, so each reports the agent's count).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil
import trio

from kai_mesh.core.orchestration.facts import NodeFacts, arch_capability
from kai_mesh.core.orchestration.telemetry import MAX_ITEMS, MAX_NAME, ReplicaLoad, Sample
from kai_mesh.runtime.agents.host import AgentHost

GPU_DEVICES = ("/dev/nvidia0", "/dev/kfd")


def detect_facts(configured: Iterable[str] = (), *, root: Path = Path("/")) -> NodeFacts:
    """This machine's facts; `configured`: the config's `[node] capabilities`."""
    caps = set(configured)
    if any((root / d.lstrip("/")).exists() for d in GPU_DEVICES):
        caps.add("gpu")
    return NodeFacts(
        arch=arch_capability(platform.machine()),
        cpus=max(1, min(4096, os.cpu_count() or 1)),
        memory_mb=max(1, psutil.virtual_memory().total // 2**20),
        capabilities=frozenset(sorted(caps)[:32]),
    )


class Sampler:
    """Builds the node's `Sample`; call it once per telemetry period."""

    def __init__(
        self,
        host: AgentHost,
        replicas: Callable[[], list[tuple[str, int, str, bool]]],
        queue_depth: Callable[[], int] = lambda: 0,
        airtime: Callable[[], list[tuple[str, int]]] = list,
        tasks_done: Callable[[], int] = lambda: 0,
    ) -> None:
        """`replicas`: (service, replica number, agent, ready) for each replica hosted here;
        `airtime`: (interface, permille of its budget used) for each budgeted interface;
        `tasks_done`: tasks this node has run to a result since it started."""
        self._host = host
        self._replicas = replicas
        self._queue = queue_depth
        self._airtime = airtime
        self._tasks_done = tasks_done
        self._served: tuple[float, int] | None = None
        self._rate = 0
        psutil.cpu_percent(None)  # the first call only starts the measurement

    def __call__(self) -> Sample:
        agents = {a["name"]: a for a in self._host.info()}
        served = sum(a["served"] for a in agents.values())
        errors = sum(a["errors"] + a["timeouts"] for a in agents.values())
        now = trio.current_time()
        if self._served is not None and now - self._served[0] >= 1.0:
            per_s = max(0, served - self._served[1]) / (now - self._served[0])
            self._rate = round(per_s * 10)
            self._served = (now, served)
        elif self._served is None:
            self._served = (now, served)
        loads = tuple(
            ReplicaLoad(service, replica, agents.get(agent, {}).get("in_flight", 0), ready)
            for service, replica, agent, ready in self._replicas()[:MAX_ITEMS]
        )
        return Sample(
            cpu=min(100, round(psutil.cpu_percent(None))),
            memory=min(100, round(psutil.virtual_memory().percent)),
            queue=max(0, self._queue()),
            served=self._rate,
            errors=errors,
            tasks_done=max(0, self._tasks_done()),
            replicas=loads,
            airtime=tuple((name[:MAX_NAME], max(0, p)) for name, p in self._airtime()[:MAX_ITEMS]),
        )
