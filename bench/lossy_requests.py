"""Plain requests over a lossy 5 kbit/s link: how many are answered, how fast, what asks cost.

Two namespace nodes (needs root), the link shaped to 5 kbit/s with 5 % loss each way and both
nodes told `bitrate = 5000`. node1 sends `--requests` small echo requests to node2 one after
another (each with a `--timeout` deadline) and the figure is: how many were answered, their
latency (median, 90th percentile, max), and from both nodes' `status` the asks sent, requests
sent again and replies sent again (core/reply_asks.py). A request that needed an ask or a resend
is one that, without them, would have waited out its whole deadline and failed.

    sudo .venv/bin/python bench/lossy_requests.py [--requests 60] [--timeout 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from netns_common import harness, wait

from kai_mesh.client import ControlClient
from kai_mesh.config.settings import NodePaths
from kai_mesh.harness import cluster


def client(state: cluster.HarnessState, node: str, timeout: float) -> ControlClient:
    return ControlClient(NodePaths.resolve(state.node(node).home).socket, timeout=timeout)


def remote_counters(state: cluster.HarnessState, node: str) -> dict[str, int]:
    with client(state, node, 30) as c:
        return dict(c.call("status")["remote"])


def run(requests: int, timeout: float) -> dict[str, Any]:
    prefix = f"kml{os.getpid()}"
    latencies: list[float] = []
    failures: dict[str, int] = {}
    with harness(prefix, 2, link="lora", bitrate=5000) as state:
        cluster.shape(state, [nd.name for nd in state.nodes], "5kbit", 5.0)

        def listed() -> bool:
            with client(state, "node1", 30) as c:
                return any(p.get("name") == "node2" for p in c.call("peers"))

        wait(listed, 90, "node1 to hear node2")
        for i in range(requests):
            payload = {"n": i, "text": "x" * 100}
            with client(state, "node1", timeout + 30) as c:
                t0 = time.perf_counter()
                reply = c.call(
                    "send",
                    {"to": "kai://node2/echo", "intent": "echo", "payload": payload,
                     "timeout": timeout},
                )  # fmt: skip
                elapsed = time.perf_counter() - t0
            if reply.get("payload") == payload:
                latencies.append(elapsed)
            else:
                code = str((reply.get("payload") or {}).get("code", reply.get("intent")))
                failures[code] = failures.get(code, 0) + 1
        requester, answerer = remote_counters(state, "node1"), remote_counters(state, "node2")
    latencies.sort()
    p90 = latencies[int(0.9 * (len(latencies) - 1))] if latencies else None
    return {
        "rate": "5kbit",
        "loss_pct": 5,
        "requests": requests,
        "answered": len(latencies),
        "failed": failures,
        "latency_s_median": round(statistics.median(latencies), 2) if latencies else None,
        "latency_s_p90": None if p90 is None else round(p90, 2),
        "latency_s_max": round(latencies[-1], 2) if latencies else None,
        "asks_sent": requester.get("asks_sent", 0),
        "requests_resent": requester.get("requests_resent", 0),
        "replies_resent": answerer.get("replies_resent", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="echo requests to send")
    parser.add_argument("--timeout", type=float, default=60.0, help="each request's deadline, s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/lossy_requests.py needs root (the netns harness)")
    r = run(args.requests, args.timeout)
    if args.json:
        print(json.dumps(r))
        return
    print("plain echo requests over one 5 kbit/s link with 5 % loss each way (two namespaces)")
    print(f"  answered   {r['answered']} of {r['requests']} (failed: {r['failed'] or 'none'})")
    print(
        f"  latency    median {r['latency_s_median']} s, p90 {r['latency_s_p90']} s, "
        f"max {r['latency_s_max']} s"
    )
    print(
        f"  recovery   {r['asks_sent']} asks sent, {r['requests_resent']} requests sent again, "
        f"{r['replies_resent']} replies sent again"
    )


if __name__ == "__main__":
    main()
