"""Active health checks across a mesh (issue 11, item 8): a replica is ready only once its health
intent answers; one whose checks keep failing gets no traffic ("none ready"), is restarted by its
node with backoff, and after repeated failure its node gives it up and the owner places it on
another node, where it serves once healthy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from kai_mesh.core.orchestration.manifest import parse_manifest
from tests.runtime.agents_for_tests import SickableEcho
from tests.runtime.orchestration.svcmesh import SvcNode, ask, placed, svc_mesh, until_ready

MANIFEST = b"""
name = "hecho"
version = "1"
agent = "tests.runtime.agents_for_tests:SickableEcho"
replicas = 1
health = { intent = "ping", interval = "1s" }
"""


@pytest.fixture
def sickness() -> Iterator[None]:
    SickableEcho.sick = False
    yield
    SickableEcho.sick = False


async def _until(nodes: list[SvcNode], check: object, limit: float = 120) -> None:
    with trio.fail_after(limit):
        while True:
            try:
                if check(placed(nodes, "hecho")):  # type: ignore[operator]
                    return
            except AssertionError:  # views still differ between nodes
                pass
            await trio.sleep(0.25)


async def test_failing_checks_take_a_replica_out_then_elsewhere(
    autojump_clock: object, sickness: None
) -> None:
    async with trio.open_nursery() as nursery:
        _, nodes = await svc_mesh(nursery, 4, seed=41)
        await nodes[0].orch.deploy(parse_manifest(MANIFEST, "hecho.toml"))
        await until_ready(nodes, "hecho", 1)
        (first,) = placed(nodes, "hecho")
        host = next(n for n in nodes if n.node_id == first)
        sender = next(n for n in nodes if n is not host)
        assert (await ask(sender, "hecho", 1)).payload == 1
        assert host.orch.health.counters["probes"] >= 1

        SickableEcho.sick = True
        await _until(nodes, lambda p: p.get(first) in ("unhealthy", "restarting", "starting"))
        reply = await ask(sender, "hecho", 2)
        assert reply.intent == "error" and reply.payload["code"] == "no_replica"
        assert "none ready" in reply.payload["message"]

        # Restarts do not cure it: the node gives up, the owner places it elsewhere.
        await _until(nodes, lambda p: first not in p and len(p) == 1)
        SickableEcho.sick = False
        counters = host.orch.health.counters
        assert counters["restarts"] == 3 and counters["gave_up"] == 1
        await until_ready(nodes, "hecho", 1)
        (second,) = placed(nodes, "hecho")
        assert second != first
        reply = await ask(sender, "hecho", 3)
        assert reply.intent == "reply" and reply.sender.node.node_id == second  # type: ignore[union-attr]
        # The node that gave up keeps saying so for this manifest, and hosts nothing.
        record = next(n for n in nodes).orch.services()["hecho"].status[first]
        assert record["state"] == "failed" and record["replicas"] == []
        assert "hecho" not in host.hosting()
        nursery.cancel_scope.cancel()
