"""`kai-mesh run` start to ready, and the idle daemon's resident memory.

"Ready" is the first moment the control socket answers a `ping`, measured from just before the
process is spawned (issue goals: <= 1 s, and <= 60 MB RSS idle before Reticulum is added). RSS is
read after the node has been idle for a few seconds.

    .venv/bin/python bench/startup.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from kai_mesh.client import ControlClient
from kai_mesh.config.settings import NodePaths

KAI_MESH = [sys.executable, "-m", "kai_mesh"]


def one_run(home: Path) -> float:
    socket_path = NodePaths.resolve(home).socket
    t0 = time.perf_counter()
    proc = subprocess.Popen([*KAI_MESH, "--home", str(home), "run", "--log-level", "warning"])
    try:
        while True:
            try:
                with ControlClient(socket_path, timeout=1) as client:
                    client.call("ping")
                return time.perf_counter() - t0
            except Exception:
                if proc.poll() is not None or time.perf_counter() - t0 > 20:
                    raise SystemExit("the node did not start") from None
                time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def idle_rss(home: Path, settle: float) -> int:
    proc = subprocess.Popen([*KAI_MESH, "--home", str(home), "run", "--log-level", "warning"])
    try:
        time.sleep(settle)
        with ControlClient(NodePaths.resolve(home).socket) as client:
            status = client.call("status")
        rss = int(psutil.Process(proc.pid).memory_info().rss)
        assert status["pid"] == proc.pid
        return rss
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="km-bench-", dir="/tmp"))
    try:
        subprocess.run(
            [*KAI_MESH, "--home", str(home), "init", "--name", "bench", "--local-only"],
            check=True,
            capture_output=True,
        )
        times = [one_run(home) for _ in range(args.runs)]
        rss = idle_rss(home, args.settle)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    result = {
        "runs": args.runs,
        "ready_median_s": round(statistics.median(times), 3),
        "ready_max_s": round(max(times), 3),
        "idle_rss_mib": round(rss / 2**20, 1),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"kai-mesh run start->ready over {args.runs} runs: median {result['ready_median_s']} s, "
        f"max {result['ready_max_s']} s"
    )
    print(f"idle RSS after {args.settle} s: {result['idle_rss_mib']} MiB")


if __name__ == "__main__":
    main()
