"""Issue 12's figures for autoscaling, waking from zero and mesh events.

In process, on the memory transport under trio's mock clock (times are simulated seconds; the
links are a LAN-like profile, 0.5 ms one way, unless `--radio`: 5 kbit/s, 40 ms):

- reaction from a load step to the first scale-up, as a node other than the owner sees the new
  placement, and until the new replicas are ready (goal: one telemetry period + one sync; the
  HPA period is 15 s and the load step falls at a random point of it);
- latency of the first message to a service at zero replicas, until its reply (goal <= 2 s);
- mesh event bytes: frame sizes of the built-in events with typical fields, what a run sends,
  and what events and interest cost on a 5 kbit/s, 1 % duty radio link.

With root, `--netns`: 3 namespace nodes on a veth bridge, real Reticulum; each trial deploys a
fresh service at zero replicas (placed on another node than the sender's) and times
`kai-mesh send kai://svc/NAME` from the first message to its reply (goal <= 2 s on veth).

    nice .venv/bin/python bench/scale.py [--trials 5] [--radio] [--netns] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for the tests' mesh builder

from kai_mesh.core.events.wire import encode_event, encode_interest
from kai_mesh.core.orchestration.manifest import parse_manifest
from kai_mesh.core.orchestration.telemetry import ReplicaLoad, Sample
from kai_mesh.runtime.messaging.egress import LINK_OVERHEAD
from transports.memory import LinkProfile

WORK = """
name = "work"
version = "1"
agent = "echo"
replicas = { min = 1, max = 8 }

[autoscaling]
metrics = [{ name = "in_flight", target = 4 }]
"""

LAZY = """
name = "lazy"
version = "1"
agent = "echo"
replicas = { min = 0, max = 2 }

[autoscaling]
idle = "30s"
metrics = [{ name = "in_flight", target = 4 }]
"""

LAN = LinkProfile(latency=0.0005, mtu=2048)
RADIO = LinkProfile(latency=0.04, bandwidth=5000, mtu=500)


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


async def _scale_up(trials: int, profile: LinkProfile, seed: int) -> dict[str, Any]:
    from tests.runtime.scale_mesh import build, placed, ready

    first, all_ready = [], []
    rng = random.Random(seed)
    for trial in range(trials):
        async with trio.open_nursery() as nursery:
            mesh = await build(nursery, 6, seed=seed + trial, profile=profile)
            offered = [2]

            def model(mesh: Any = mesh, offered: list[int] = offered) -> dict[bytes, Sample]:
                hosted = {n.node_id: n.autoscaler.hosted_here().get("work", []) for n in mesh.nodes}
                up = {n.node_id for n in mesh.nodes if "work" in n.hosting()}
                count = sum(len(r) for node, r in hosted.items() if node in up) or 1
                each = offered[0] // count
                return {
                    node: Sample(
                        replicas=tuple(ReplicaLoad("work", r, in_flight=each) for r in numbers)
                    )
                    for node, numbers in hosted.items()
                    if node in up
                }

            mesh.model = model
            watcher = mesh.nodes[-1]
            await mesh.nodes[0].orch.deploy(parse_manifest(WORK, "work.toml"))
            with trio.fail_after(300):
                while ready(watcher, "work") != 1:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            await trio.sleep(30 + rng.uniform(0, 15))  # the step falls anywhere in a period
            step = trio.current_time()
            offered[0] = 20
            with trio.fail_after(300):
                while placed(watcher, "work") < 2:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            first.append(trio.current_time() - step)
            with trio.fail_after(300):
                while ready(watcher, "work") < 5:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            all_ready.append(trio.current_time() - step)
            nursery.cancel_scope.cancel()
    return {"first_scale_up_s": _stats(first), "replicas_ready_s": _stats(all_ready)}


async def _wake(trials: int, profile: LinkProfile, seed: int) -> dict[str, Any]:
    from tests.runtime.scale_mesh import ask, build, placed

    latencies = []
    async with trio.open_nursery() as nursery:
        mesh = await build(nursery, 6, seed=seed, profile=profile)
        await mesh.nodes[0].orch.deploy(parse_manifest(LAZY, "lazy.toml"))
        await trio.sleep(20)
        for trial in range(trials):
            sender = mesh.nodes[1 + trial % 5]
            started = trio.current_time()
            reply = await ask(sender, "lazy", trial)
            assert reply.intent == "reply", reply.payload
            latencies.append(trio.current_time() - started)
            with trio.fail_after(600):
                while any(placed(n, "lazy") for n in mesh.nodes) or any(  # noqa: ASYNC110
                    "lazy" in n.hosting() for n in mesh.nodes
                ):
                    await trio.sleep(0.5)
            await trio.sleep(5)
        sent = {
            k: sum(n.events.counters[k] for n in mesh.nodes)
            for k in ("sent_frames", "sent_bytes", "interest_frames", "interest_bytes")
        }
        nursery.cancel_scope.cancel()
    return {"wake_latency_s": _stats(latencies), "events_sent_in_run": sent}


def _event_bytes() -> dict[str, Any]:
    samples = {
        "service.scaled": {"service": "vision", "from": 1, "to": 3, "reason": "ScaleUpLimit"},
        "node.failed": {"node": "9f" * 16, "name": "pi-gate", "incarnation": 3},
        "agent.overloaded": {"agent": "vision", "node": "pi-gate"},
        "queue.backlog": {"agent": "vision", "node": "pi-gate", "depth": 12},
        "task.created": {"task": "t-0042", "capability": "ocr"},
        "service.wake": {"service": "vision", "waiting": 1},
        "camera.motion": {"zone": 3},
    }
    frames = {t: len(encode_event(t, 123_456, 1_765_000_000, f)) for t, f in samples.items()}
    interest = len(encode_interest({"service.scaled", "node.failed", "service.wake"}, 1800))
    # A 5 kbit/s radio at 1 % duty: 36 s of airtime an hour; one frame is one packet.
    bitrate, budget_s = 5000, 36.0
    on_air = {t: b + LINK_OVERHEAD for t, b in frames.items()}
    airtime_ms = {t: round(b * 8 / bitrate * 1000, 1) for t, b in on_air.items()}
    interest_hour = 6 * (interest + LINK_OVERHEAD)  # refreshed every 600 s on radio, per peer
    return {
        "frame_bytes": frames,
        "on_air_bytes": on_air,
        "airtime_ms_at_5kbit": airtime_ms,
        "interest_frame_bytes": interest,
        "interest_bytes_per_peer_hour_radio": interest_hour,
        "events_per_hour_in_1pct_budget": int(budget_s * 1000 / airtime_ms["service.scaled"]),
    }


def netns_wake(trials: int) -> dict[str, Any]:
    import time

    from netns_common import harness, wait

    from kai_mesh.client import ControlClient
    from kai_mesh.config.settings import NodePaths

    with harness("kasc", 3) as state:

        def call(node: str, method: str, params: dict[str, Any]) -> Any:
            socket = NodePaths.resolve(state.node(node).home).socket
            with ControlClient(socket, timeout=60) as c:
                return c.call(method, params)

        def alive(node: str) -> int:
            return int(call(node, "status", {})["liveness"]["peers"]["alive"])

        wait(lambda: all(alive(n) >= 2 for n in ("node1", "node2", "node3")), 60, "peers")
        times: list[float] = []
        failed: list[str] = []
        for trial in range(trials):
            name = f"lazy{trial}"
            text = LAZY.replace('"lazy"', f'"{name}"') + "\n"
            text = text.replace(
                "[autoscaling]", 'placement = { nodes = ["node2"] }\n\n[autoscaling]'
            )
            call("node1", "services_deploy", {"manifest": text})

            def seen(name: str = name) -> bool:
                try:
                    shown = call("node3", "services_show", {"name": name})
                except Exception:  # not synced yet
                    return False
                return bool(shown["status"] == "active" and shown["owner"])

            wait(seen, 60, f"{name} on node3")
            t0 = time.perf_counter()
            try:
                reply = call(
                    "node3",
                    "send",
                    {"to": f"kai://svc/{name}", "intent": "echo", "payload": trial, "timeout": 30},
                )
                assert reply["payload"] == trial, reply
                times.append(time.perf_counter() - t0)
            except Exception as exc:  # counted and shown: a failed wake is a finding
                failed.append(f"{name}: {exc} after {time.perf_counter() - t0:.2f} s")
            # Removed, so node2's capacity (cpu 1.0 by default, 0.1 a replica) does not fill up.
            call("node1", "services_remove", {"name": name})
    return {"trials": trials, "wake_s": _stats(times) if times else None, "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--radio", action="store_true", help="5 kbit/s links instead of a LAN")
    parser.add_argument("--netns", action="store_true", help="the wake figure on veth (root)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.netns:
        got = netns_wake(args.trials)
        print(json.dumps(got) if args.json else f"veth, real Reticulum: wake from zero {got}")
        return
    profile = RADIO if args.radio else LAN

    async def run() -> dict[str, Any]:
        return {
            "links": "radio 5 kbit/s, 40 ms" if args.radio else "LAN 0.5 ms",
            "scale_up": await _scale_up(args.trials, profile, 100),
            "wake": await _wake(args.trials, profile, 200),
            "events": _event_bytes(),
        }

    result = trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    up, wake, ev = result["scale_up"], result["wake"], result["events"]
    print(f"links: {result['links']} (memory transport, simulated seconds)")
    print(f"load step -> first scale-up seen elsewhere: {up['first_scale_up_s']} s")
    print(f"load step -> new replicas ready:            {up['replicas_ready_s']} s")
    print(f"first message to a service at zero, reply:  {wake['wake_latency_s']} s")
    print(f"event frames sent in the wake run:          {wake['events_sent_in_run']}")
    print(f"event frame bytes:   {ev['frame_bytes']}")
    print(f"on air (+{LINK_OVERHEAD} B link header): {ev['on_air_bytes']}")
    print(f"airtime at 5 kbit/s: {ev['airtime_ms_at_5kbit']} ms")
    print(
        f"interest: {ev['interest_frame_bytes']} B a frame, "
        f"{ev['interest_bytes_per_peer_hour_radio']} B per peer per hour on radio; "
        f"a 1 % duty budget carries ~{ev['events_per_hour_in_1pct_budget']} events an hour"
    )


if __name__ == "__main__":
    main()
