"""The `sysinfo` agent: a snapshot of this machine's load, memory, disk and uptime.

psutil calls can touch /proc and the disk, which may stall on a slow SD card, so the agent runs in a
thread. `cpu_percent(interval=None)` measures since the previous call; the constructor primes it so
the first reply is not a meaningless 0.0.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import psutil

from kai_mesh.agents.base import Agent, AgentRequest, Isolation

__all__ = ["SysinfoAgent"]


class SysinfoAgent(Agent):
    """Returns a dict of numbers describing the host (see `snapshot`)."""

    name: ClassVar[str] = "sysinfo"
    intents: ClassVar[frozenset[str]] = frozenset({"sysinfo"})
    isolation: ClassVar[Isolation] = "thread"
    concurrency: ClassVar[int] = 4

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)
        self._process = psutil.Process()

    def handle(self, request: AgentRequest) -> Any:
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """cpu_percent, cpu_count, memory {total, available, percent}, disk {total, free, percent}
        of "/", uptime_s, load_avg [1, 5, 15 min], process_rss_bytes; all ints and floats."""
        mem = psutil.virtual_memory()
        disk = psutil.disk_usage("/")
        return {
            "cpu_percent": float(psutil.cpu_percent(interval=None)),
            "cpu_count": int(psutil.cpu_count() or 1),
            "memory": {
                "total": int(mem.total),
                "available": int(mem.available),
                "percent": float(mem.percent),
            },
            "disk": {
                "total": int(disk.total),
                "free": int(disk.free),
                "percent": float(disk.percent),
            },
            "uptime_s": float(time.time() - psutil.boot_time()),
            "load_avg": [float(x) for x in psutil.getloadavg()],
            "process_rss_bytes": int(self._process.memory_info().rss),
        }
