"""Services across a mesh in one process (svcmesh.py builds it): a deploy places replicas and
they become ready; `kai://svc/NAME` is balanced across them; a killed node's replicas come back
elsewhere; scale up and down; remove; a member that is not an admin deploys and nothing runs
anywhere."""

from __future__ import annotations

from collections import Counter

import trio

from kai_mesh.core.orchestration.manifest import parse_manifest
from tests.runtime.orchestration.svcmesh import ECHO, ask, placed, svc_mesh, until_ready


async def test_deploy_balance_failover_scale_remove(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        net, nodes = await svc_mesh(nursery, 7, seed=21)
        admin = nodes[0]
        filed = await admin.orch.deploy(parse_manifest(ECHO, "echo2.toml"))
        assert filed["refused"] is None
        took = await until_ready(nodes, "echo2", 3)
        print(f"3 replicas ready on 7 nodes {took:.1f} s (virtual) after the deploy")

        # Balanced: round robin over the three ready replicas, from a node that hosts none.
        sender = next(n for n in nodes if "echo2" not in n.hosting())
        served: Counter[str] = Counter()
        for i in range(30):
            reply = await ask(sender, "echo2", i)
            assert reply.intent == "reply" and reply.payload == i, reply.payload
            served[str(reply.sender.node)] += 1
        assert len(served) == 3 and set(served.values()) == {10}, served

        # A node hosting a replica dies: its replica comes back elsewhere.
        victim = next(n for n in nodes[1:] if "echo2" in n.hosting() and n is not sender)
        others = [n for n in nodes if n is not victim]
        net.partition([n.node_id for n in others])
        victim.scope.cancel()
        took = await until_ready(others, "echo2", 3)
        assert victim.node_id not in placed(others, "echo2")
        print(f"re-placed {took:.1f} s (virtual) after the kill")
        reply = await ask(sender, "echo2", "after")
        assert reply.intent == "reply" and reply.payload == "after"

        # Scale up, then down.
        await admin.orch.command("scale", "echo2", 5)
        await until_ready(others, "echo2", 5)
        await admin.orch.command("scale", "echo2", 2)
        await until_ready(others, "echo2", 2)

        # Remove: nothing runs, svc says why.
        await others[3].orch.command("remove", "echo2")  # filed by a non-admin: refused
        await trio.sleep(5)
        assert len(placed(others, "echo2")) == 2
        await admin.orch.command("remove", "echo2")
        with trio.fail_after(30):
            while any("echo2" in n.hosting() for n in others):  # noqa: ASYNC110
                await trio.sleep(0.25)
        reply = await ask(sender, "echo2", "gone")
        assert reply.intent == "error" and reply.payload["code"] == "no_replica"
        nursery.cancel_scope.cancel()


async def test_an_unauthorized_deploy_is_refused_everywhere(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        _, nodes = await svc_mesh(nursery, 5, seed=22)
        filed = await nodes[2].orch.deploy(parse_manifest(ECHO, "echo2.toml"))
        assert filed["refused"] is not None and filed["refused"]["reason"] == "unauthorized"
        with trio.fail_after(30):
            while not all(  # noqa: ASYNC110
                any(r["refused"] for r in n.orch.report()) for n in nodes
            ):
                await trio.sleep(0.25)
        await trio.sleep(5)
        for n in nodes:
            (report,) = n.orch.report()
            assert report["status"] == "refused" and report["replicas"] == []
            assert report["refused"][0]["reason"] == "unauthorized"
            assert n.hosting() == set()
        reply = await ask(nodes[1], "echo2", "x")
        assert reply.intent == "error" and reply.payload["code"] == "no_replica"
        nursery.cancel_scope.cancel()
