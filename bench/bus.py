"""In-process bus round trips to `echo` per second (issue goal: >= 20,000/s).

Runs the real agent host (the `echo` entry point) and the real bus in one trio run, no sockets:
each round trip builds a `StandardMessage`, routes it, calls the agent and builds the reply.

    .venv/bin/python bench/bus.py [--seconds S] [--concurrency N] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import trio

from kai_mesh.core.mesh.address import AgentAddress, NodeRef, parse_address
from kai_mesh.runtime.agents.host import AgentHost, AgentSpec
from kai_mesh.runtime.messaging.bus import Bus, new_message


async def bench(seconds: float, concurrency: int) -> dict[str, float]:
    host = AgentHost([AgentSpec(name="echo", source="entry:echo")], on_event=lambda t, d: None)
    bus = Bus(
        node_id=bytes(16),
        name="bench",
        agents=host,
        queue_capacity=1024,
        on_event=lambda t, d: None,
    )
    sender = AgentAddress(NodeRef(node_id=bytes(16)), "bench")
    to = parse_address("kai://bench/echo")
    counts = [0] * concurrency

    async def worker(i: int, deadline: float) -> None:
        while time.perf_counter() < deadline:
            message = new_message(
                sender=sender, to=to, intent="echo", payload={"n": 1}, ttl=60, max_ttl=60
            )
            reply = await bus.request(message)
            assert reply.intent == "reply", reply.payload
            counts[i] += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(host.run)
        await nursery.start(bus.serve)
        start = time.perf_counter()
        async with trio.open_nursery() as workers:
            for i in range(concurrency):
                workers.start_soon(worker, i, start + seconds)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    total = sum(counts)
    return {
        "round_trips": total,
        "seconds": round(elapsed, 3),
        "round_trips_per_s": round(total / elapsed),
        "concurrency": concurrency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [trio.run(bench, args.seconds, c) for c in sorted({1, args.concurrency, 16})]
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        print(
            f"bus round trips to echo, {r['concurrency']:>2} concurrent senders: "
            f"{r['round_trips_per_s']:,}/s ({r['round_trips']:,} in {r['seconds']} s)"
        )


if __name__ == "__main__":
    main()
