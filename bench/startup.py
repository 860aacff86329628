"""`kai-mesh run` start to ready, and the idle daemon's resident memory.

"Ready" is the first moment the control socket answers a `ping`, measured from just before the
process is spawned (issue 17 goals: <= 0.5 s with UDP/TCP interfaces, <= 64 MB RSS idle with every
transport on). RSS is read after the node has been idle for a few seconds.

Profiles: `local` (no Reticulum, `init --local-only`), `udp` (Reticulum with a UDP and a TCP server
interface on loopback, no LXMF), `full` (`udp` plus LXMF and one Nostr relay: a local relay in its
own process, kai_mesh/harness/relay.py).

    .venv/bin/python bench/startup.py [--profile local|udp|full] [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
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
ROOT = Path(__file__).resolve().parent.parent


def write_config(home: Path, profile: str, relay: str | None) -> None:
    """Replace the local-only config `init` wrote with the profile's transports."""
    if profile == "local":
        return
    port = random.randrange(20000, 60000)
    text = f"""[node]
name = "bench"
log_level = "warning"

[reticulum]
enabled = true

[lxmf]
enabled = {"true" if profile == "full" else "false"}

[nostr]
relays = [{f'"{relay}"' if relay else ""}]

[[interfaces]]
name = "udp"
type = "udp"
listen_ip = "127.0.0.1"
listen_port = {port}
forward_ip = "127.0.0.1"
forward_port = {port + 1}

[[interfaces]]
name = "tcp-in"
type = "tcp_server"
listen_ip = "127.0.0.1"
listen_port = {port + 2}
"""
    NodePaths.resolve(home).config_file.write_text(text)


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
    parser.add_argument("--profile", choices=["local", "udp", "full"], default="local")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="km-bench-", dir="/tmp"))
    relay_proc = None
    try:
        subprocess.run(
            [*KAI_MESH, "--home", str(home), "init", "--name", "bench", "--local-only"],
            check=True,
            capture_output=True,
        )
        relay = None
        if args.profile == "full":
            sys.path.insert(0, str(ROOT))
            from tests.transports.nostr.conftest import start_relay

            relay_proc, relay = start_relay()
        write_config(home, args.profile, relay)
        times = [one_run(home) for _ in range(args.runs)]
        rss = idle_rss(home, args.settle)
    finally:
        if relay_proc is not None:
            from tests.transports.nostr.conftest import stop_relay

            stop_relay(relay_proc)
        shutil.rmtree(home, ignore_errors=True)
    result = {
        "profile": args.profile,
        "runs": args.runs,
        "ready_median_s": round(statistics.median(times), 3),
        "ready_max_s": round(max(times), 3),
        "idle_rss_mib": round(rss / 2**20, 1),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"[{args.profile}] kai-mesh run start->ready over {args.runs} runs: "
        f"median {result['ready_median_s']} s, max {result['ready_max_s']} s"
    )
    print(f"idle RSS after {args.settle} s: {result['idle_rss_mib']} MiB")


if __name__ == "__main__":
    main()
