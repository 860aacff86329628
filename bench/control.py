"""Control-socket round trip to `echo` and the `kai-mesh send` command end to end.

Starts a real daemon (`kai-mesh run`) on a throw-away home, then measures (1) `send` requests to
`kai://NODE/echo` over one persistent client connection: p50/p99/mean latency (issue goal: p50 <=
2 ms), and (2) the whole `kai-mesh send` command (process start, import, connect, send, print).

    .venv/bin/python bench/control.py [--requests N] [--commands N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kai_mesh.client import ControlClient
from kai_mesh.config.settings import NodePaths

KAI_MESH = [sys.executable, "-m", "kai_mesh"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_node(home: Path) -> subprocess.Popen[bytes]:
    subprocess.run(
        [*KAI_MESH, "--home", str(home), "init", "--name", "bench", "--local-only"],
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen([*KAI_MESH, "--home", str(home), "run", "--log-level", "warning"])
    socket_path = NodePaths.resolve(home).socket
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with ControlClient(socket_path) as client:
                client.call("ping")
                return proc
        except Exception:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("the node did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--commands", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="km-bench-", dir="/tmp"))
    proc = start_node(home)
    try:
        params = {"to": "kai://bench/echo", "intent": "echo", "payload": {"x": 1}}
        with ControlClient(NodePaths.resolve(home).socket) as client:
            for _ in range(200):  # warm up
                client.call("send", params)
            socket_ms = []
            for _ in range(args.requests):
                t0 = time.perf_counter()
                client.call("send", params)
                socket_ms.append((time.perf_counter() - t0) * 1000)
        env = dict(os.environ)
        command_ms = []
        for _ in range(args.commands):
            t0 = time.perf_counter()
            subprocess.run(
                [*KAI_MESH, "--home", str(home), "send", "kai://bench/echo", "echo", '{"x": 1}'],
                check=True,
                capture_output=True,
                env=env,
            )
            command_ms.append((time.perf_counter() - t0) * 1000)
        script = Path(sys.executable).with_name("kai-mesh")
        script_ms = []
        if script.exists():
            for _ in range(args.commands):
                t0 = time.perf_counter()
                subprocess.run(
                    [
                        str(script),
                        "--home",
                        str(home),
                        "send",
                        "kai://bench/echo",
                        "echo",
                        '{"x": 1}',
                    ],
                    check=True,
                    capture_output=True,
                    env=env,
                )
                script_ms.append((time.perf_counter() - t0) * 1000)
        help_ms = []
        helper = [str(script), "--help"] if script.exists() else [*KAI_MESH, "--help"]
        for _ in range(args.commands):
            t0 = time.perf_counter()
            subprocess.run(
                helper,
                check=True,
                capture_output=True,
                env=env,
            )
            help_ms.append((time.perf_counter() - t0) * 1000)
        bare_ms = []  # the interpreter alone, for scale on a loaded machine
        for _ in range(args.commands):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
            bare_ms.append((time.perf_counter() - t0) * 1000)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        shutil.rmtree(home, ignore_errors=True)
    result = {
        "socket_requests": len(socket_ms),
        "socket_p50_ms": round(percentile(socket_ms, 0.5), 3),
        "socket_p99_ms": round(percentile(socket_ms, 0.99), 3),
        "socket_mean_ms": round(statistics.fmean(socket_ms), 3),
        "socket_requests_per_s": round(1000 / statistics.fmean(socket_ms)),
        "send_command_p50_ms": round(percentile(command_ms, 0.5), 1),
        "send_command_script_p50_ms": round(percentile(script_ms, 0.5), 1) if script_ms else None,
        "help_p50_ms": round(percentile(help_ms, 0.5), 1),
        "python_startup_p50_ms": round(percentile(bare_ms, 0.5), 1),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"control socket send->echo over one connection ({len(socket_ms)} requests): "
        f"p50 {result['socket_p50_ms']} ms, p99 {result['socket_p99_ms']} ms, "
        f"{result['socket_requests_per_s']:,}/s sequential"
    )
    print(f"`python -m kai_mesh send` end to end: p50 {result['send_command_p50_ms']} ms")
    if script_ms:
        print(
            f"`kai-mesh send` (console script) end to end: p50 "
            f"{result['send_command_script_p50_ms']} ms"
        )
    print(f"`kai-mesh --help` end to end: p50 {result['help_p50_ms']} ms (goal <= 60)")
    print(f"`python -c pass` (the interpreter alone): p50 {result['python_startup_p50_ms']} ms")


if __name__ == "__main__":
    main()
