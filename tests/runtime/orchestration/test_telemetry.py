"""Telemetry and node facts on the wire (issue 11, items 3, 6, 7, 8): peers learn each other's
capabilities and capacity, so an owner places replicas on other nodes that have what a manifest
requires; `weighted` balances by advertised cpus; the load each node reports reaches senders; a
replica whose node stops reporting past its TTL gets no traffic."""

from __future__ import annotations

from collections import Counter

import trio

from kai_mesh.core.orchestration.facts import NodeFacts
from kai_mesh.core.orchestration.manifest import parse_manifest
from tests.runtime.orchestration.svcmesh import ask, placed, svc_mesh, until_ready


def _facts(cpus: int, *caps: str, arch: str = "amd64") -> NodeFacts:
    return NodeFacts(arch=arch, cpus=cpus, memory_mb=4096, capabilities=frozenset(caps))


GPU = b"""
name = "vision"
version = "1"
agent = "echo"
capabilities = ["gpu", "arm64"]
replicas = 2
strategy = "weighted"
"""


async def test_capabilities_cross_the_wire_and_weighted_follows_cpus(
    autojump_clock: object,
) -> None:
    facts = {3: _facts(4, "gpu", arch="arm64"), 4: _facts(1, "gpu", arch="arm64")}
    async with trio.open_nursery() as nursery:
        _, nodes = await svc_mesh(nursery, 6, seed=71, facts=facts)
        gpu = {nodes[3].node_id, nodes[4].node_id}
        # Every node learns the two gpu nodes' facts from their telemetry.
        with trio.fail_after(30):
            while not all(  # noqa: ASYNC110
                gpu - {n.node_id} <= set(n.telemetry.peer_facts) for n in nodes
            ):
                await trio.sleep(0.5)
        assert nodes[0].telemetry.peer_facts[nodes[3].node_id].capabilities == {"gpu"}
        await nodes[0].orch.deploy(parse_manifest(GPU, "vision.toml"))
        await until_ready(nodes, "vision", 2)
        # The owner (one gpu node) placed the other replica on the other gpu node, which it can
        # only know as eligible from that node's advertised facts.
        assert set(placed(nodes, "vision")) == gpu
        served: Counter[bytes] = Counter()
        for i in range(50):
            reply = await ask(nodes[0], "vision", i)
            assert reply.intent == "reply"
            served[reply.sender.node.node_id] += 1  # type: ignore[union-attr]
        # Envoy's EDF by weight: 4 cpus against 1.
        assert served == {nodes[3].node_id: 40, nodes[4].node_id: 10}, served
        # Their reported load reaches the sender: each gpu node's sample lists its replica.
        for node in (nodes[3], nodes[4]):
            sample = nodes[0].telemetry.load(node.node_id)
            assert sample is not None
            assert [(r.service, r.ready) for r in sample.replicas] == [("vision", True)]
        nursery.cancel_scope.cancel()


ONE = b"""
name = "solo"
version = "1"
agent = "echo"
replicas = 1
health = { ttl = "20s" }
"""


async def test_a_replica_whose_node_falls_silent_past_its_ttl_gets_no_traffic(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        _, nodes = await svc_mesh(nursery, 4, seed=72)
        await nodes[0].orch.deploy(parse_manifest(ONE, "solo.toml"))
        await until_ready(nodes, "solo", 1)
        (where,) = placed(nodes, "solo")
        host = next(n for n in nodes if n.node_id == where)
        sender = next(n for n in nodes if n is not host)
        await trio.sleep(10)
        assert (await ask(sender, "solo", 1)).intent == "reply"
        assert sender.telemetry.silent_for(where, trio.current_time()) is not None
        host.telemetry.send = None  # its node still answers probes, but reports nothing
        await trio.sleep(25)  # past the TTL (20 s) and two keepalives (5 s) and a change (1 s)
        reply = await ask(sender, "solo", 2)
        assert reply.intent == "error" and "none ready" in reply.payload["message"]
        nursery.cancel_scope.cancel()
