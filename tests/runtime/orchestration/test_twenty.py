"""Breadth: 20 nodes over the memory transport (issue 11's runtime test): several services
deployed at once are placed spread and agreed by every node; `least_connections` spreads load;
two hosting nodes die at once and their replicas come back elsewhere; a partition in which both
halves place replicas heals with no surplus."""

from __future__ import annotations

from collections import Counter

import trio

from kai_mesh.core.orchestration.manifest import parse_manifest
from tests.runtime.orchestration.svcmesh import SvcNode, ask, placed, svc_mesh, until_ready


def _manifest(name: str, count: int, strategy: str = "round_robin") -> bytes:
    return (
        f'name = "{name}"\nversion = "1"\nagent = "echo"\n'
        f'replicas = {{ min = {count}, max = {count + 2} }}\nstrategy = "{strategy}"\n'
    ).encode()


def _hosts(nodes: list[SvcNode], service: str) -> set[bytes]:
    return {n.node_id for n in nodes if service in n.hosting()}


async def test_twenty_nodes_place_balance_fail_over_and_heal(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        net, nodes = await svc_mesh(nursery, 20, seed=91)
        admin = nodes[0]
        services = {"alpha": 5, "beta": 3, "gamma": 8}
        for name, count in services.items():
            await admin.orch.deploy(
                parse_manifest(_manifest(name, count, "least_connections"), name)
            )
        for name, count in services.items():
            await until_ready(nodes, name, count, limit=120)
            assert len(placed(nodes, name)) == count  # spread: one per node while nodes last
        owners = {n.orch.describe(n.orch.services()["alpha"])["owner_id"] for n in nodes}
        assert len(owners) == 1  # every node names the same owner

        # least_connections over 5 replicas from one sender: nobody starves, nobody hogs.
        sender = next(n for n in nodes if not any(s in n.hosting() for s in services))
        served: Counter[bytes] = Counter()

        async def one(i: int) -> None:
            reply = await ask(sender, "alpha", i)
            assert reply.intent == "reply"
            served[reply.sender.node.node_id] += 1  # type: ignore[union-attr]

        for batch in range(20):
            async with trio.open_nursery() as inner:
                for i in range(10):
                    inner.start_soon(one, batch * 10 + i)
        assert len(served) == 5 and min(served.values()) >= 20, served

        # Two hosting nodes die at once.
        victims = [n for n in nodes[1:] if "gamma" in n.hosting() and n is not sender][:2]
        alive = [n for n in nodes if n not in victims]
        net.partition([n.node_id for n in alive])
        for v in victims:
            v.scope.cancel()
        for name, count in services.items():
            await until_ready(alive, name, count, limit=120)
            assert not {v.node_id for v in victims} & set(placed(alive, name))

        # A partition: both halves keep every service at its count; healed, no surplus.
        left, right = alive[: len(alive) // 2], alive[len(alive) // 2 :]
        net.partition([n.node_id for n in left], [n.node_id for n in right])
        for half in (left, right):
            for name, count in services.items():
                await until_ready(half, name, count, limit=180)
        net.partition([n.node_id for n in alive])  # heal (the dead stay cut off)
        for name, count in services.items():
            await until_ready(alive, name, count, limit=180)
        await trio.sleep(10)
        for name, count in services.items():
            assert len(placed(alive, name)) == count
            assert len(_hosts(alive, name)) == count, name
        nursery.cancel_scope.cancel()
