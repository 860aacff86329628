"""Autoscaling on a mesh of memory-transport nodes under the autojump clock (issue 12).

The owner of a service computes the HPA from the replicas' load, places the new count under its
epoch, and publishes `service.scaled`; other nodes host the replicas it places. Load reaches the
owner through `Mesh.samples` (the telemetry stream's stand-in): a load model in the ramp test,
every node's own `LoadMeter` in the scale-to-zero test, where real messages are the load."""

from __future__ import annotations

import trio

from kai_mesh.core.events.wire import Event
from kai_mesh.core.orchestration.manifest import parse_manifest
from kai_mesh.core.orchestration.telemetry import ReplicaLoad, Sample
from tests.runtime.scale_mesh import Mesh, ScaleNode, ask, build, placed, ready

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
idle = "60s"
metrics = [{ name = "in_flight", target = 4 }]
"""


def _load_model(mesh: Mesh, service: str, offered: list[float]) -> None:
    """`offered[0]` requests in flight in all, spread evenly over the replicas that are ready
    (an unready replica reports nothing: the HPA counts it as it says)."""

    def model() -> dict[bytes, Sample]:
        hosted = {n.node_id: n.autoscaler.hosted_here().get(service, []) for n in mesh.nodes}
        ready_at = {n.node_id for n in mesh.nodes if service in n.hosting()}
        count = sum(len(r) for node, r in hosted.items() if node in ready_at)
        each, extra = divmod(round(offered[0]), count) if count else (0, 0)
        out, i = {}, 0
        for node, numbers in sorted(hosted.items()):
            loads = []
            for r in numbers:
                if node in ready_at:
                    loads.append(ReplicaLoad(service, r, in_flight=each + (i < extra)))
                    i += 1
            out[node] = Sample(replicas=tuple(loads))
        return out

    mesh.model = model


def _owner(mesh: Mesh, service: str) -> ScaleNode:
    for n in mesh.nodes:
        report = {r["name"]: r for r in n.orch.report()}.get(service)
        if report and report["owner"] == n.name:
            return n
    raise AssertionError("no owner")


async def test_load_ramp_scales_up_fast_and_down_after_the_window(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        mesh = await build(nursery, 6, seed=12)
        offered = [2.0]
        _load_model(mesh, "work", offered)
        watcher = mesh.nodes[-1]
        scaled: list[Event] = []
        watcher.events.listen("service.scaled", scaled.append)
        await mesh.nodes[0].orch.deploy(parse_manifest(WORK, "work.toml"))
        with trio.fail_after(60):
            while ready(watcher, "work") != 1:  # noqa: ASYNC110
                await trio.sleep(0.5)
        owner = _owner(mesh, "work")
        await trio.sleep(60)
        assert placed(watcher, "work") == 1  # 2 in flight on one replica: below target

        history: list[tuple[float, int]] = []

        async def record() -> None:
            while True:
                history.append((trio.current_time(), placed(watcher, "work")))
                await trio.sleep(1)

        nursery.start_soon(record)
        step = trio.current_time()
        offered[0] = 20.0  # 20 in flight on 1 replica, target 4: ratio 5 -> 5 replicas
        with trio.fail_after(120):
            while placed(watcher, "work") < 2:  # noqa: ASYNC110
                await trio.sleep(0.1)
        first = trio.current_time() - step
        with trio.fail_after(120):
            while ready(watcher, "work") < 5:  # noqa: ASYNC110
                await trio.sleep(0.5)
        up = trio.current_time() - step
        # One HPA period (15 s) plus placement, sync and start: well under two periods.
        assert first <= 2 * 15, first
        print(
            f"load step -> first scale-up seen on another node: {first:.1f} s; 5 ready {up:.1f} s"
        )
        offered[0] = 40.0  # ratio 2 on 5 -> 10, bounded by max 8
        with trio.fail_after(120):
            while ready(watcher, "work") < 8:  # noqa: ASYNC110
                await trio.sleep(0.5)
        await trio.sleep(60)
        assert placed(watcher, "work") == 8  # never above max

        drop = trio.current_time()
        offered[0] = 2.0  # to 1 replica, but only after the 300 s down window
        with trio.fail_after(600):
            while placed(watcher, "work") > 1:  # noqa: ASYNC110
                await trio.sleep(0.5)
        down = trio.current_time() - drop
        # The window holds the highest recommendation of the last 300 s; the last high one was
        # made at the owner's last HPA pass before the drop, up to one period (15 s) earlier.
        assert 300 - 15 <= down <= 300 + 2 * 15 + 10, down
        await trio.sleep(30)  # the recorder sees the last step; nothing moves any more
        assert placed(watcher, "work") == 1
        counts = [c for t, c in history if t >= step]
        rises = [i for i in range(1, len(counts)) if counts[i] > counts[i - 1]]
        falls = [i for i in range(1, len(counts)) if counts[i] < counts[i - 1]]
        assert rises and falls and max(rises) < min(falls), counts  # up, then down: no flapping
        print(f"load drop -> back to 1 replica after {down:.0f} s (window 300 s)")
        topics = [(e.fields["from"], e.fields["to"]) for e in scaled]
        assert topics[0] == (1, 5) and topics[-1][1] == 1, topics
        assert all(e.origin == owner.node_id for e in scaled)
        nursery.cancel_scope.cancel()


async def test_scale_to_zero_and_the_first_message_wakes_it(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        mesh = await build(nursery, 6, seed=31)
        await mesh.nodes[0].orch.deploy(parse_manifest(LAZY, "lazy.toml"))
        await trio.sleep(30)
        assert all(placed(n, "lazy") == 0 for n in mesh.nodes)  # min 0: nothing until asked
        sender = mesh.nodes[3]
        started = trio.current_time()
        reply = await ask(sender, "lazy", "first")
        woke = trio.current_time() - started
        assert reply.intent == "reply" and reply.payload == "first", reply.payload
        print(
            f"wake from zero: the first message answered {woke:.2f} s (virtual) after it was sent"
        )
        assert woke < 10
        for i in range(5):
            assert (await ask(sender, "lazy", i)).payload == i
        assert placed(sender, "lazy") == 1
        # Idle: no message for 60 s -> back to zero (plus one period to notice).
        quiet = trio.current_time()
        with trio.fail_after(200):
            while placed(sender, "lazy") != 0:  # noqa: ASYNC110
                await trio.sleep(0.5)
        slept = trio.current_time() - quiet
        assert 60 <= slept <= 60 + 2 * 15 + 5, slept
        with trio.fail_after(30):
            while any("lazy" in n.hosting() for n in mesh.nodes):  # noqa: ASYNC110
                await trio.sleep(0.5)
        # Asleep again; a message from another node wakes it again and is answered, not lost.
        reply = await ask(mesh.nodes[5], "lazy", "again")
        assert reply.intent == "reply" and reply.payload == "again", reply.payload
        nursery.cancel_scope.cancel()
