"""Services figures (issue 11), in one process over the memory transport (no root needed).

- `spread`: the balancer alone, 10,000 requests over 5 ready replicas for each strategy: the
  max/min requests per replica (1.0 is perfect); `least_connections` with requests that overlap
  (random service times), `weighted` with equal weights and with weights 4:2:1:1:1 (ideal shares
  given), `round_robin`.
- `placement`: `place()` CPU time for one service of 50 replicas over 100 nodes, and for 100
  services of 3 over 100 nodes (ms, wall clock); then, on a 20-node mesh under trio's MockClock,
  the virtual time from `deploy` to every replica ready and agreed on every node.
- `failover`: the virtual time from a hosting node's death (cut off and stopped) to the service
  back at its count, ready elsewhere, on LAN-like links and on 5 kbit/s links (the detector's
  period stretches to the link).
- `telemetry`: 3 nodes hosting 3 replicas each, with requests flowing, for a virtual quarter
  hour on LAN-like links and a virtual hour on 5 kbit/s links:
  telemetry bytes sent per node (samples and facts, every peer counted) on LAN-like links and on
  5 kbit/s links (radio profile, budget 500 B/h per peer link).
- `throughput`: wall-clock messages/s through `kai://svc/echo` (3 replicas) against one direct
  replica (`kai://NODE/echo2`), same run, zero-latency links (goal: ratio >= 0.9); also the
  CPU time per request of each path (all nodes run in this one process) and their ratio. Five
  alternating rounds of 1,000 requests per path; each path's best round is given.

    nice .venv/bin/python bench/services.py [spread] [placement] [failover] [telemetry] \
        [throughput] [--json]

The runtime parts reuse the test mesh builder (tests/runtime/orchestration/svcmesh.py).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kai_mesh.core.mesh.address import AgentAddress, NodeRef
from kai_mesh.core.orchestration.balancer import Balancer, Replica
from kai_mesh.core.orchestration.manifest import Strategy, parse_manifest
from kai_mesh.core.orchestration.placement import NodeInfo, place
from kai_mesh.core.orchestration.telemetry import radio_profile
from kai_mesh.runtime.messaging.bus import new_message
from kai_mesh.runtime.orchestration.telemetry import RADIO_BITRATE
from tests.runtime.orchestration.svcmesh import (
    SvcNode,
    ask,
    placed,
    svc_mesh,
    until_ready,
)
from transports.memory import LinkProfile

N = 10_000


def _echo(replicas: int, name: str = "echo2", strategy: str = "round_robin") -> bytes:
    return (
        f'name = "{name}"\nversion = "1"\nagent = "echo"\nreplicas = {replicas}\n'
        f'strategy = "{strategy}"\n'
    ).encode()


# ---- spread ----------------------------------------------------------------------------------


def spread() -> dict[str, Any]:
    rng = random.Random(1)
    nodes = [bytes([i]) * 16 for i in range(5)]
    out: dict[str, Any] = {}

    def run(strategy: Strategy, weights: list[float], overlap: bool) -> Counter[bytes]:
        b = Balancer()
        reps = [Replica(node=n, replica=0, weight=w) for n, w in zip(nodes, weights, strict=True)]
        counts: Counter[bytes] = Counter()
        busy: list[tuple[int, tuple[bytes, int]]] = []
        for t in range(N):
            while overlap and busy and busy[0][0] <= t:
                b.end(busy.pop(0)[1])
            pick = b.pick("svc", strategy, reps, rng)
            assert isinstance(pick, Replica)
            counts[pick.node] += 1
            if overlap:  # each request lasts 1..20 ticks: in-flight counts differ
                b.begin(pick.key)
                busy.append((t + rng.randint(1, 20), pick.key))
                busy.sort()
        return counts

    cases: list[tuple[str, Strategy, list[float], bool]] = [
        ("round_robin", "round_robin", [1] * 5, False),
        ("least_connections", "least_connections", [1] * 5, True),
        ("weighted (equal)", "weighted", [1] * 5, False),
        ("weighted (4:2:1:1:1)", "weighted", [4, 2, 1, 1, 1], False),
    ]
    for label, strategy, weights, overlap in cases:
        counts = run(strategy, weights, overlap)
        shares = [counts[n] / N for n in nodes]
        ideal = [w / sum(weights) for w in weights]
        out[label] = {
            "max_over_min": round(max(counts.values()) / min(counts.values()), 3),
            "shares": [round(s, 4) for s in shares],
            "ideal": [round(s, 4) for s in ideal],
        }
    return out


# ---- placement -------------------------------------------------------------------------------


def placement_cpu() -> dict[str, Any]:
    nodes = {
        bytes([i // 256, i % 256]) * 8: NodeInfo(
            node_id=bytes([i // 256, i % 256]) * 8, name=f"n{i}", cpu=8.0, memory_mb=16384
        )
        for i in range(100)
    }
    big = parse_manifest(_echo(50), "big.toml")
    t0 = time.perf_counter()
    plan = place(big, nodes, ())
    one = time.perf_counter() - t0
    assert len(plan.slots) == 50
    t0 = time.perf_counter()
    for k in range(100):
        place(parse_manifest(_echo(3, f"s{k}"), "s.toml"), nodes, ())
    many = time.perf_counter() - t0
    return {
        "place_50_replicas_100_nodes_ms": round(one * 1000, 2),
        "place_100_services_x3_100_nodes_ms": round(many * 1000, 2),
    }


async def _deploy_time(count: int) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        _, nodes = await svc_mesh(nursery, count, seed=101)
        started = trio.current_time()
        await nodes[0].orch.deploy(parse_manifest(_echo(5), "echo2.toml"))
        took = await until_ready(nodes, "echo2", 5, limit=600)
        nursery.cancel_scope.cancel()
    return {
        "nodes": count,
        "replicas": 5,
        "deploy_to_ready_virtual_s": round(took, 2),
        "since": round(started, 1),
    }


# ---- failover --------------------------------------------------------------------------------


async def _failover(profile: LinkProfile, count: int, label: str) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        net, nodes = await svc_mesh(nursery, count, seed=102, profile=profile)
        await nodes[0].orch.deploy(parse_manifest(_echo(2), "echo2.toml"))
        await until_ready(nodes, "echo2", 2, limit=1800)
        victim = next(n for n in nodes[1:] if "echo2" in n.hosting())
        others = [n for n in nodes if n is not victim]
        period = victim.orch.tick
        killed = trio.current_time()
        net.partition([n.node_id for n in others])
        victim.scope.cancel()
        took = await until_ready(others, "echo2", 2, limit=7200)
        sender = others[-1]
        reply = await ask(sender, "echo2", "after")
        assert reply.intent == "reply"
        nursery.cancel_scope.cancel()
    return {
        "link": label,
        "kill_to_back_at_count_virtual_s": round(took, 2),
        "orchestrator_tick_s": period,
        "killed_at": round(killed, 1),
    }


# ---- telemetry -------------------------------------------------------------------------------


async def _telemetry(profile: LinkProfile, label: str, hours: float = 1.0) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        _, nodes = await svc_mesh(nursery, 3, seed=103, profile=profile)
        if profile.bandwidth is not None and profile.bandwidth <= RADIO_BITRATE:
            for n in nodes:  # as the node daemon does from its interfaces (policy_for)
                n.telemetry.policy = radio_profile()
        for k in range(3):
            await nodes[0].orch.deploy(parse_manifest(_echo(3, f"svc{k}"), "s.toml"))
        for k in range(3):
            await until_ready(nodes, f"svc{k}", 3, limit=3600)
        for n in nodes:
            for key in n.telemetry.counters:
                if key.endswith(("_sent", "_bytes")):
                    n.telemetry.counters[key] = 0
        policy = nodes[0].telemetry.policy
        stop = trio.Event()

        async def load(n: SvcNode) -> None:
            rng = random.Random(n.node_id)
            while not stop.is_set():
                await ask(n, f"svc{rng.randrange(3)}", 1)
                await trio.sleep(rng.expovariate(1 / 20))  # a request every 20 s per node

        for n in nodes:
            nursery.start_soon(load, n)
        await trio.sleep(hours * 3600)
        stop.set()
        per_node = [
            (n.telemetry.counters["sample_bytes"] + n.telemetry.counters["facts_bytes"]) / hours
            for n in nodes
        ]
        frames = [n.telemetry.counters["samples_sent"] / hours for n in nodes]
        nursery.cancel_scope.cancel()
    peers = len(nodes) - 1
    return {
        "link": label,
        "profile": {"keepalive_s": policy.keepalive, "budget_B_per_h": policy.budget},
        "bytes_per_node_per_hour_all_peers": round(max(per_node)),
        "bytes_per_node_per_hour_per_peer_link": round(max(per_node) / peers),
        "frames_per_node_per_hour": round(max(frames)),
    }


# ---- throughput ------------------------------------------------------------------------------


async def _throughput(requests: int, rounds: int = 5) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        _, nodes = await svc_mesh(nursery, 5, seed=104, profile=LinkProfile(mtu=2048))
        await nodes[0].orch.deploy(parse_manifest(_echo(3), "echo2.toml"))
        await until_ready(nodes, "echo2", 3)
        hosts = set(placed(nodes, "echo2"))
        sender = next(n for n in nodes if n.node_id not in hosts)
        target = sorted(hosts)[0]

        async def rate(send: Callable[[int], Awaitable[Any]]) -> tuple[float, float]:
            # Wall clock, and CPU time per request (every node runs in this process, so it is
            # the whole path's CPU; steadier than wall time on a loaded machine).
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(requests):
                reply = await send(i)
                assert reply.intent == "reply", reply.payload
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            return requests / wall, cpu / requests

        async def direct(i: int) -> Any:
            message = new_message(
                sender=AgentAddress(NodeRef(node_id=sender.node_id), "cli"),
                to=AgentAddress(NodeRef(node_id=target), "echo2"),
                intent="echo",
                payload=i,
                ttl=30,
                max_ttl=3600,
            )
            return await sender.bus.request(message, 10.0)

        async def via_svc(i: int) -> Any:
            return await ask(sender, "echo2", i)

        await rate(via_svc)  # warm up both paths
        await rate(direct)
        # Alternate the two paths and keep each one's best round (as timeit does): the machine
        # is shared, and another process's burst would otherwise land on one path only.
        svc_rounds, one_rounds = [], []
        for _ in range(rounds):
            svc_rounds.append(await rate(via_svc))
            one_rounds.append(await rate(direct))
        nursery.cancel_scope.cancel()
    svc, one = max(r for r, _ in svc_rounds), max(r for r, _ in one_rounds)
    svc_cpu, one_cpu = min(c for _, c in svc_rounds), min(c for _, c in one_rounds)
    return {
        "svc_msgs_per_s": round(svc),
        "direct_msgs_per_s": round(one),
        "ratio": round(svc / one, 3),
        "svc_cpu_us_per_request": round(svc_cpu * 1e6),
        "direct_cpu_us_per_request": round(one_cpu * 1e6),
        "cpu_ratio": round(one_cpu / svc_cpu, 3),
        "rounds": rounds,
        "requests_per_round": requests,
    }


def _virtual(fn: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    try:
        return trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))
    except (trio.TooSlowError, BaseExceptionGroup) as exc:  # a figure missed is a figure too
        return {"error": f"did not finish: {type(exc).__name__}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parts = ["spread", "placement", "failover", "telemetry", "throughput"]
    parser.add_argument("parts", nargs="*", choices=parts, default=parts)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {}
    lan = LinkProfile(latency=0.005, mtu=2048)
    radio = LinkProfile(latency=0.05, bandwidth=5000, mtu=2048)
    if "spread" in args.parts:
        out["spread"] = spread()
    if "placement" in args.parts:
        out["placement"] = {**placement_cpu(), **_virtual(lambda: _deploy_time(20))}
    if "failover" in args.parts:
        out["failover"] = [
            _virtual(lambda: _failover(lan, 5, "LAN-like")),
            _virtual(lambda: _failover(radio, 5, "5 kbit/s")),
        ]
    if "telemetry" in args.parts:
        out["telemetry"] = [
            _virtual(lambda: _telemetry(lan, "LAN-like", 0.25)),
            _virtual(lambda: _telemetry(radio, "5 kbit/s")),
        ]
    if "throughput" in args.parts:
        out["throughput"] = trio.run(_throughput, 1000)
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
