"""Tasks on a memory-transport mesh (issue 12, item 5): each task runs once across five capable
nodes, a claimer that dies mid-run is replaced after failure detection, and a task nobody can run
says so, then runs once a rule wakes a service that can."""

from __future__ import annotations

from collections import Counter
from typing import Any

import trio

from kai_mesh.core.messaging.envelope import StandardMessage
from kai_mesh.core.orchestration.manifest import parse_manifest
from kai_mesh.core.tasks.claims import kept
from tests.runtime.orchestration.test_reactive_rules import OCR
from tests.runtime.scale_mesh import Mesh, ScaleNode, build, ready

ECHO = """
name = "echo"
version = "1"
agent = "echo"
replicas = { min = 5, max = 5 }
"""


def count_runs(node: ScaleNode, runs: Counter[tuple[bytes, str]], block: list[bytes]) -> None:
    """Count every task run the node's agents get; while `block` is empty, the first run
    anywhere hangs (its node is the one the test kills) and names its node in `block`."""
    inner = node.tasks.request

    async def request(message: StandardMessage, within: float | None) -> StandardMessage:
        task = str((message.context or {}).get("task"))
        runs[(node.node_id, task)] += 1
        if block == [b""]:
            block[0] = node.node_id
            await trio.sleep_forever()
        return await inner(message, within)

    node.tasks.request = request


async def deploy_echo(mesh: Mesh) -> None:
    await mesh.nodes[0].orch.deploy(parse_manifest(ECHO, "echo.toml"))
    with trio.fail_after(120):
        while any(ready(n, "echo") != 5 for n in mesh.nodes):  # noqa: ASYNC110
            await trio.sleep(0.5)


def state_at(node: ScaleNode, task_id: str) -> str | None:
    record = node.tasks.records().get(task_id)
    return None if record is None else node.tasks.show(task_id)["state"]


async def until_all(nodes: list[ScaleNode], ids: list[str], state: str, limit: float) -> None:
    with trio.fail_after(limit):
        while any(state_at(n, i) != state for n in nodes for i in ids):  # noqa: ASYNC110
            await trio.sleep(0.5)


async def test_each_task_runs_once_across_five_capable_nodes(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        mesh = await build(nursery, 5, seed=61)
        await deploy_echo(mesh)
        runs: Counter[tuple[bytes, str]] = Counter()
        for node in mesh.nodes:
            count_runs(node, runs, [])
        created: list[Any] = []
        mesh.nodes[2].events.listen("task.created", created.append)
        await trio.sleep(5)  # its interest has reached the others
        ids = []
        for i in range(20):
            task = await mesh.nodes[i % 5].tasks.submit("echo", "echo", {"n": i})
            assert task["state"] == "open"
            ids.append(task["id"])
        await until_all(mesh.nodes, ids, "done", 60)
        per_task = Counter(task for (_, task), n in runs.items() for _ in range(n))
        assert per_task == dict.fromkeys(ids, 1)  # every task run exactly once, mesh-wide
        assert len({node for node, _ in runs}) >= 3  # spread by the rendezvous, not one node
        for i, task_id in enumerate(ids):
            shown = mesh.nodes[4].tasks.show(task_id)
            assert shown["result"] == {"n": i} and shown["runs"] == 1
        assert {e.fields["task"] for e in created} == set(ids)  # task.created reached a peer
        nursery.cancel_scope.cancel()


async def test_a_claimer_that_dies_is_replaced(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        mesh = await build(nursery, 5, seed=62)
        await deploy_echo(mesh)
        runs: Counter[tuple[bytes, str]] = Counter()
        block = [b""]
        for node in mesh.nodes:
            count_runs(node, runs, block)
        task_id = (await mesh.nodes[0].tasks.submit("echo", "echo", "again"))["id"]
        with trio.fail_after(30):
            while block == [b""]:  # noqa: ASYNC110
                await trio.sleep(0.1)
        victim = next(n for n in mesh.nodes if n.node_id == block[0])
        others = [n for n in mesh.nodes if n is not victim]
        await trio.sleep(2)  # its claim has reached the others
        assert others[0].tasks.show(task_id)["state"] == "claimed"
        mesh.net.partition([n.node_id for n in others])
        victim.scope.cancel()
        await until_all(others, [task_id], "done", 180)
        shown = others[0].tasks.show(task_id)
        assert shown["result"] == "again" and shown["runs"] == 1
        assert shown["claimed_by"] != victim.orch.label(victim.node_id)
        reruns = [node for (node, t), n in runs.items() if t == task_id and node != victim.node_id]
        assert len(reruns) == 1  # one other node ran it, once
        nursery.cancel_scope.cancel()


async def test_a_task_nobody_can_run_says_so_then_a_rule_creates_a_runner(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        mesh = await build(nursery, 5, seed=63)
        await mesh.nodes[0].orch.deploy(parse_manifest(OCR, "ocr.toml"))
        await trio.sleep(20)  # deployed, asleep (min 0), the rule's owner follows task.created
        orphan = (await mesh.nodes[1].tasks.submit("translate", "echo", "hola"))["id"]
        await trio.sleep(30)
        shown = mesh.nodes[3].tasks.show(orphan)
        assert shown["state"] == "open" and shown["claimed_by"] is None
        assert "no live node has a ready agent offering 'translate'" in shown["waiting"]

        task_id = (await mesh.nodes[1].tasks.submit("ocr", "echo", {"page": 1}))["id"]
        await until_all(mesh.nodes, [task_id], "done", 120)
        assert mesh.nodes[4].tasks.show(task_id)["result"] == {"page": 1}
        assert mesh.nodes[4].tasks.show(orphan)["state"] == "open"
        nursery.cancel_scope.cancel()


async def test_both_halves_of_a_partition_run_it_and_the_merge_keeps_one(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        mesh = await build(nursery, 5, seed=64)
        await deploy_echo(mesh)
        gate = trio.Event()
        ran: list[bytes] = []
        for node in mesh.nodes:
            inner = node.tasks.request

            async def request(
                message: StandardMessage,
                within: float | None,
                node: ScaleNode = node,
                inner: Any = inner,
            ) -> StandardMessage:
                ran.append(node.node_id)
                await gate.wait()
                return await inner(message, within)

            node.tasks.request = request
        task_id = (await mesh.nodes[0].tasks.submit("echo", "echo", "split"))["id"]
        with trio.fail_after(30):
            while not ran:  # noqa: ASYNC110
                await trio.sleep(0.1)
        await trio.sleep(2)  # the claim is everywhere
        first = ran[0]
        half = [first, next(n.node_id for n in mesh.nodes if n.node_id != first)]
        rest = [n.node_id for n in mesh.nodes if n.node_id not in half]
        mesh.net.partition(half, rest)
        with trio.fail_after(120):  # the other half declares the claimer dead and runs it too
            while len(ran) < 2:  # noqa: ASYNC110
                await trio.sleep(0.5)
        assert ran[1] in rest
        gate.set()
        await trio.sleep(10)
        mesh.net.heal()
        with trio.fail_after(120):
            while any(n.tasks.show(task_id)["runs"] != 2 for n in mesh.nodes):  # noqa: ASYNC110
                await trio.sleep(0.5)
        shown = [n.tasks.show(task_id) for n in mesh.nodes]
        assert {s["state"] for s in shown} == {"done"}
        # every node keeps the same result, the rendezvous winner's among the two runners
        assert {s["claimer"] for s in shown} == {kept(task_id, ran).hex()}  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()
