"""Issue 12's task figure: 1,000 tasks through 5 nodes, completed, none twice.

In process, on the memory transport (LAN-like links, 0.5 ms one way) under trio's mock clock, so
times are simulated seconds (link latency and protocol round trips, not CPU). Five nodes each host
a ready replica of an echo service; the tasks are submitted from the five nodes in turn, all at
once, and the bench prints:

- the time from the first submit until every task is claimed, done as one node sees it, and done
  as every node sees it (the results have synced everywhere);
- how many times the agents ran each task (goal: every one exactly once) and how many results the
  doc holds per task;
- bytes per task: every byte the network carried while the tasks ran (state sync of the records,
  claims and results; task.created events), less what the idle mesh sends in as long (heartbeats,
  telemetry, anti-entropy), divided by the number of tasks.

    nice .venv/bin/python bench/tasks.py [--tasks 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for the tests' mesh builder

from kai_mesh.core.messaging.envelope import StandardMessage
from kai_mesh.core.orchestration.manifest import parse_manifest
from kai_mesh.core.tasks.claims import parse_spec, status
from tests.runtime.scale_mesh import ScaleNode, build, ready
from transports.memory import LinkProfile, MemoryNetwork

LAN = LinkProfile(latency=0.0005, mtu=2048)
ECHO = 'name = "echo2"\nversion = "1"\nagent = "echo"\nreplicas = { min = 5, max = 5 }\n'


def _count_bytes(net: MemoryNetwork, carried: list[int]) -> None:
    transmit = net._transmit

    def counting(sender: Any, packet: Any) -> None:
        carried[0] += len(packet.data)
        transmit(sender, packet)

    net._transmit = counting  # type: ignore[method-assign]


def _count_runs(node: ScaleNode, runs: Counter[str]) -> None:
    inner = node.tasks.request

    async def request(message: StandardMessage, within: float | None) -> StandardMessage:
        runs[str((message.context or {}).get("task"))] += 1
        return await inner(message, within)

    node.tasks.request = request


def _state_counters(nodes: list[ScaleNode]) -> Counter[str]:
    total: Counter[str] = Counter()
    for node in nodes:
        total.update(node.state.counters)
    return total


def _states(node: ScaleNode, ids: list[str]) -> Counter[str]:
    records = node.tasks.records()
    live, now = node.orch.live(), time.time()
    got: Counter[str] = Counter()
    for task_id in ids:
        record = records.get(task_id)
        got["missing" if parse_spec(record) is None else status(record, live, now).state] += 1
    return got


async def _run(count: int) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        mesh = await build(nursery, 5, seed=71, profile=LAN)
        carried = [0]
        _count_bytes(mesh.net, carried)
        await mesh.nodes[0].orch.deploy(parse_manifest(ECHO, "echo2.toml"))
        while any(ready(n, "echo2") != 5 for n in mesh.nodes):  # noqa: ASYNC110
            await trio.sleep(0.5)
        runs: Counter[str] = Counter()
        for node in mesh.nodes:
            _count_runs(node, runs)
        await trio.sleep(10)
        idle_from, idle_bytes = trio.current_time(), carried[0]
        await trio.sleep(60)
        idle_rate = (carried[0] - idle_bytes) / (trio.current_time() - idle_from)

        started, before = trio.current_time(), carried[0]
        state_before = _state_counters(mesh.nodes)
        ids = []
        for i in range(count):
            task = await mesh.nodes[i % 5].tasks.submit("echo2", "echo", {"n": i})
            ids.append(task["id"])
        observer = mesh.nodes[0]
        claimed = done_one = None
        while True:
            got = _states(observer, ids)
            now = trio.current_time() - started
            if claimed is None and got["open"] == 0 and got["missing"] == 0:
                claimed = now
            if got["done"] == count:
                done_one = now
                break
            await trio.sleep(1)
        while any(_states(n, ids)["done"] != count for n in mesh.nodes[1:]):  # noqa: ASYNC110
            await trio.sleep(1)
        done_all = trio.current_time() - started
        task_bytes = carried[0] - before - idle_rate * done_all
        state_after = _state_counters(mesh.nodes)
        state_sync = {k: state_after[k] - state_before[k] for k in state_after}
        results = Counter(observer.tasks.show(i)["runs"] for i in ids)
        nursery.cancel_scope.cancel()
    return {
        "tasks": count,
        "nodes": 5,
        "all_claimed_s": round(claimed or 0.0, 1),
        "all_done_one_node_s": round(done_one, 1),
        "all_done_every_node_s": round(done_all, 1),
        "agent_runs_per_task": dict(Counter(runs[i] for i in ids)),
        "results_per_task": dict(results),
        "bytes_per_task": round(task_bytes / count),
        "idle_mesh_bytes_per_s": round(idle_rate),
        "state_sync_bytes_per_task": round(state_sync["bytes_sent"] / count),
        "state_sync_frames_per_task": round(state_sync["frames_sent"] / count, 1),
        "anti_entropy_rounds": state_sync["rounds"],
        "local_writes_per_task": round(state_sync["local_entries"] / count, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    wall = time.monotonic()
    result = trio.run(_run, args.tasks, clock=trio.testing.MockClock(autojump_threshold=0))
    result["wall_s"] = round(time.monotonic() - wall, 1)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['tasks']} tasks through {result['nodes']} nodes (memory, LAN, simulated s)")
    print(f"all claimed:                 {result['all_claimed_s']} s")
    print(f"all done (one node's view):  {result['all_done_one_node_s']} s")
    print(f"all done (every node):       {result['all_done_every_node_s']} s")
    print(f"agent runs per task:         {result['agent_runs_per_task']}  (runs: count of tasks)")
    print(f"results per task in the doc: {result['results_per_task']}")
    print(
        f"bytes per task on the links: {result['bytes_per_task']} (idle mesh: "
        f"{result['idle_mesh_bytes_per_s']} B/s subtracted)"
    )
    print(
        f"of which state sync:         {result['state_sync_bytes_per_task']} B, "
        f"{result['state_sync_frames_per_task']} frames per task; "
        f"{result['local_writes_per_task']} writes per task; "
        f"{result['anti_entropy_rounds']} anti-entropy rounds"
    )
    print(f"wall time: {result['wall_s']} s")


if __name__ == "__main__":
    main()
