"""Messages that must arrive, on the netns harness (needs root): outbox throughput and delivery
latency after a partition heals.

- outbox throughput: `--messages` must-arrive echoes from node1 to node2 over one control
  connection with `--in-flight` requests outstanding: messages/s committed (every `send` answered
  "queued", each after its sqlite commit) and messages/s acknowledged (until node1's outbox holds
  nothing waiting);
- delivery after heal: `--trials` times, partition node1 | node2, send one must-arrive message,
  wait `--partition-s`, heal, and time until node1's outbox shows it delivered.

    sudo .venv/bin/python bench/delivery.py [--messages 500] [--in-flight 32] [--trials 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from netns_common import harness, wait

from kai_mesh.client import ControlClient
from kai_mesh.config.settings import NodePaths
from kai_mesh.core.control.frames import Push, Request, encode_frame
from kai_mesh.harness import cluster

ECHO = "kai://node2/echo"


def client(state: cluster.HarnessState, node: str, timeout: float = 60) -> ControlClient:
    return ControlClient(NodePaths.resolve(state.node(node).home).socket, timeout=timeout)


def call(state: cluster.HarnessState, node: str, method: str, params: Any = None) -> Any:
    with client(state, node) as c:
        return c.call(method, params or {})


def ready(state: cluster.HarnessState) -> None:
    for a, b in (("node1", "node2"), ("node2", "node1")):
        wait(
            lambda a=a, b=b: any(  # type: ignore[misc]
                p["name"] == b and p["status"] == "alive" for p in call(state, a, "peers")
            ),
            30,
            f"{a} to see {b} alive",
        )


def outbox_throughput(state: cluster.HarnessState, messages: int, in_flight: int) -> dict[str, Any]:
    c = client(state, "node1")
    sent = answered = 0
    pending: set[int] = set()
    t0 = time.perf_counter()

    def submit() -> None:
        nonlocal sent
        sent += 1
        params = {"to": ECHO, "intent": "echo", "payload": {"i": sent}, "must_arrive": True}
        pending.add(sent)
        c._send(encode_frame(Request(id=sent, method="send", params=params).to_wire()), None)

    with c:
        for _ in range(min(in_flight, messages)):
            submit()
        while pending:
            message = c._receive(time.perf_counter() + 60)
            if isinstance(message, Push) or message.id not in pending:
                continue
            pending.discard(message.id)  # type: ignore[arg-type]
            answered += 1
            if sent < messages:
                submit()
    committed_s = time.perf_counter() - t0
    acked_s = committed_s + wait(
        lambda: call(state, "node1", "status")["outbox"]["waiting"] == 0,
        600,
        "every message to be acknowledged",
        step=0.02,
    )
    outbox = call(state, "node1", "status")["outbox"]
    return {
        "messages": messages,
        "committed_per_s": round(answered / committed_s, 1),
        "acknowledged_per_s": round(outbox["delivered"] / acked_s, 1),
        "attempts": outbox["attempts"],
        "delivered": outbox["delivered"],
    }


def heal_latency(state: cluster.HarnessState, trials: int, partition_s: float) -> dict[str, Any]:
    latencies = []
    for trial in range(trials):
        cluster.partition(state, [["node1"], ["node2"]])
        params = {"to": ECHO, "intent": "echo", "payload": trial, "must_arrive": True}
        message_id = call(state, "node1", "send", params)["message_id"]
        time.sleep(partition_s)
        cluster.heal(state)

        def delivered(message_id: str = message_id) -> bool:
            rows = call(state, "node1", "outbox", {"all": True})
            return any(r["message_id"] == message_id and r["state"] == "delivered" for r in rows)

        latencies.append(wait(delivered, 120, f"delivery of trial {trial}"))
    return {
        "trials": trials,
        "partition_s": partition_s,
        "after_heal_s": [round(x, 2) for x in latencies],
        "median_s": round(statistics.median(latencies), 2),
        "max_s": round(max(latencies), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--partition-s", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with harness("kmbd") as state:
        ready(state)
        results["outbox"] = outbox_throughput(state, args.messages, args.in_flight)
        results["heal"] = heal_latency(state, args.trials, args.partition_s)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return
    o, h = results["outbox"], results["heal"]
    print(
        f"outbox: {o['messages']} must-arrive messages, {o['committed_per_s']}/s committed, "
        f"{o['acknowledged_per_s']}/s acknowledged ({o['attempts']} attempts)"
    )
    print(
        f"after heal ({h['trials']} trials, {h['partition_s']:g} s partitions): "
        f"median {h['median_s']} s, max {h['max_s']} s  {h['after_heal_s']}"
    )


if __name__ == "__main__":
    main()
