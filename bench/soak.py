"""Soak under a hostile member (issue 15): one member floods every endpoint it may legally reach
on a target node for as long as asked; the target's RSS is printed over time.

    sudo nice .venv/bin/python bench/soak.py [--minutes 60] [--every 60] [--prefix khs]

Three nodes in network namespaces over real Reticulum: node1 is the target, node2 the hostile
member (trusted, so everything below is allowed to it), node3 an honest peer that asks node1's
echo once every few seconds, to show the target still serves others. node2's workers, each a
loop on node2's control socket, as fast as node1 answers:

- `echo`: 2 KB requests to kai://node1/echo, 12 at once (more than node1 serves per peer);
- `oversize`: kai://node1/state `set` with a 15,000-int list, refused as too large (finding 1);
- `must_arrive`: must-arrive requests to kai://node1/echo (DELIVER frames, node1's inbox);
- `state_get`: kai://node1/state `get` of all of `shared`;
- `sysinfo`, `unknown`: node1's sysinfo agent, and an agent that does not exist (refused);
- `ping`: node1, over a link;
- `write`: node2's own state writes over 200 keys, which node1 takes by anti-entropy (state
  grows with them: that is data the mesh keeps, not a leak; the line shows the entries).

Every `--every` seconds one line: minutes, node1's RSS (with its agent workers), node1's state
entries, what each worker got (ok/refused), the honest peer's echoes and their median time.
At the end: RSS at start (after the first minute's warm-up) and at the end, and the peak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))  # netns_common, run as a script or not

from netns_common import harness, wait

from kai_mesh.client import ControlClient
from kai_mesh.config.settings import NodePaths
from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.errors import KaiMeshError
from kai_mesh.harness import cluster

TARGET = "kai://node1"


def rss_mb(pid: int) -> float:
    """The node's resident memory with its agent workers', in MB."""
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 1e6


class Flood:
    def __init__(self, state: cluster.HarnessState) -> None:
        self.state = state
        self.stop = threading.Event()
        self.outcomes: dict[str, Counter[str]] = {}
        self.honest: list[float] = []
        self.honest_failed = 0
        self._lock = threading.Lock()

    def socket(self, node: str) -> Path:
        return NodePaths.resolve(Path(self.state.node(node).home)).socket

    def worker(self, name: str, node: str, call: Callable[[ControlClient, int], Any]) -> None:
        """Call `call` in a loop on `node`'s control socket, counting outcomes under `name`."""
        counts = self.outcomes.setdefault(name, Counter())
        n = 0
        while not self.stop.is_set():
            try:
                with ControlClient(self.socket(node), timeout=60) as client:
                    while not self.stop.is_set():
                        n += 1
                        try:
                            call(client, n)
                            outcome = "ok"
                        except ControlError as exc:
                            outcome = exc.code
                        with self._lock:
                            counts[outcome] += 1
            except (KaiMeshError, OSError) as exc:
                with self._lock:
                    counts[type(exc).__name__] += 1
                time.sleep(1)

    def honest_peer(self) -> None:
        params = {"to": f"{TARGET}/echo", "intent": "echo", "payload": "honest", "timeout": 30}
        while not self.stop.wait(3):
            t0 = time.perf_counter()
            try:
                with ControlClient(self.socket("node3"), timeout=40) as client:
                    client.call("send", params)
                self.honest.append(time.perf_counter() - t0)
            except (ControlError, KaiMeshError, OSError):
                self.honest_failed += 1

    def start(self) -> None:
        def send(to: str, intent: str, payload: Any, **extra: Any) -> Callable[..., Any]:
            params = {"to": to, "intent": intent, "payload": payload, "timeout": 30, **extra}
            return lambda client, n: client.call("send", params)

        big = {"path": "shared/big", "value": list(range(15_000))}
        jobs: list[tuple[str, Callable[[ControlClient, int], Any], int]] = [
            ("echo", send(f"{TARGET}/echo", "echo", "x" * 2048), 12),
            ("oversize", send(f"{TARGET}/state", "set", big), 2),
            ("must_arrive", send(f"{TARGET}/echo", "echo", "m" * 200, must_arrive=True), 2),
            ("state_get", send(f"{TARGET}/state", "get", {"path": "shared"}), 1),
            ("sysinfo", send(f"{TARGET}/sysinfo", "sysinfo", None), 1),
            ("unknown", send(f"{TARGET}/nope", "nope", None), 1),
            ("ping", lambda client, n: client.call("ping", {"node": "node1"}), 1),
            (
                "write",
                lambda client, n: client.call(
                    "state_set", {"path": f"shared/flood_{n % 200}", "value": {"n": n}}
                ),
                1,
            ),
        ]
        for name, call, threads in jobs:
            for _ in range(threads):
                threading.Thread(
                    target=self.worker, args=(name, "node2", call), daemon=True
                ).start()
        threading.Thread(target=self.honest_peer, daemon=True).start()

    def line(self, minutes: float, rss: float, entries: int) -> str:
        with self._lock:
            got = {name: dict(c.most_common()) for name, c in sorted(self.outcomes.items())}
            honest = statistics.median(self.honest) if self.honest else float("nan")
        return (
            f"{minutes:6.1f} min  rss {rss:7.1f} MB  entries {entries:6d}  "
            f"honest {len(self.honest)} ok/{self.honest_failed} failed, median {honest:.2f} s  "
            f"{json.dumps(got)}"
        )


def outbox_line(state: cluster.HarnessState) -> str:
    """The flooder's outbox: attempts per delivered must-arrive message (the retry storm a busy
    recipient caused: 63,648 attempts for 1,722 messages before it answered BUSY)."""
    try:
        box = status(state, "node2")["outbox"] or {}
    except (ControlError, KaiMeshError, OSError) as exc:
        return f"         node2 outbox: {exc}"
    attempts, delivered = box.get("attempts", 0), box.get("delivered", 0)
    per = attempts / delivered if delivered else float("nan")
    return (
        f"         node2 outbox: committed {box.get('committed', 0)}, delivered {delivered}, "
        f"waiting {box.get('waiting', 0)}, attempts {attempts} ({per:.2f} per delivered), "
        f"busy answers {box.get('busy', 0)}"
    )


def status(state: cluster.HarnessState, node: str) -> Any:
    with ControlClient(NodePaths.resolve(Path(state.node(node).home)).socket, timeout=60) as c:
        return c.call("status", {})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=60.0, help="seconds between lines")
    parser.add_argument("--prefix", default="khs", help="namespace prefix")
    args = parser.parse_args()

    with harness(args.prefix, 3) as state:
        for name in ("node1", "node2", "node3"):
            wait(
                lambda n=name: status(state, n)["liveness"]["peers"]["alive"] == 2,
                90,
                f"{name} to hear both peers",
            )
        pid = state.node("node1").pid
        assert pid is not None
        print(f"node1 pid {pid}, rss {rss_mb(pid):.1f} MB before the flood")
        flood = Flood(state)
        flood.start()
        started = time.monotonic()
        samples: list[tuple[float, float]] = []
        while (elapsed := time.monotonic() - started) < args.minutes * 60:
            time.sleep(min(args.every, max(0.0, args.minutes * 60 - elapsed)))
            minutes = (time.monotonic() - started) / 60
            rss = rss_mb(pid)
            samples.append((minutes, rss))
            try:
                entries = int(status(state, "node1")["state"]["entries"])
            except (ControlError, KaiMeshError, OSError):
                entries = -1
            print(flood.line(minutes, rss, entries), flush=True)
            print(outbox_line(state), flush=True)
        flood.stop.set()
        if not cluster.alive(state.node("node1")):
            print("node1 DIED during the soak")
            return 1
    warm = next((rss for minutes, rss in samples if minutes >= 1.0), samples[0][1])
    print(
        f"\nrss: {warm:.1f} MB after the first minute, {samples[-1][1]:.1f} MB at the end "
        f"({samples[-1][0]:.0f} min), peak {max(r for _, r in samples):.1f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
