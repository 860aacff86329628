"""Services across a mesh in one process: nodes over the memory transport with inline stores,
the replicated state, governance (one admin) and an orchestrator each, under the autojump
clock. A deploy places replicas and they become ready; `kai://svc/NAME` is balanced across them;
a killed node's replicas come back elsewhere; scale up and down; remove; a member that is not
an admin deploys and nothing runs anywhere."""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import trio

from kai_mesh.core.mesh.address import AgentAddress, NodeRef, ServiceAddress
from kai_mesh.core.mesh.genesis import DEFAULT_POLICY, Genesis
from kai_mesh.core.mesh.identity import NodeSecrets, node_id_of
from kai_mesh.core.messaging.envelope import EnvelopeDecoder, Priority, StandardMessage
from kai_mesh.core.messaging.retry import RetryPolicy
from kai_mesh.core.orchestration.manifest import parse_manifest
from kai_mesh.runtime.agents.host import AgentHost
from kai_mesh.runtime.blocking import inline
from kai_mesh.runtime.governance.service import GovernanceService
from kai_mesh.runtime.messaging.bus import Bus, new_message
from kai_mesh.runtime.messaging.remote import RemoteRouter
from kai_mesh.runtime.orchestration.service import Orchestrator
from kai_mesh.runtime.state.service import StateService
from kai_mesh.runtime.store import Store
from kai_mesh.runtime.wiring import alive_peers, wire_delivery
from transports.memory import LinkProfile, MemoryNetwork

ECHO = b"""
name = "echo2"
version = "1"
agent = "echo"
replicas = { min = 3, max = 6 }
strategy = "round_robin"
"""


def _ignore(topic: str, data: object) -> None:
    pass


@dataclass
class SvcNode:
    secrets: NodeSecrets
    orch: Orchestrator
    bus: Bus
    host: AgentHost
    state: StateService
    gov: GovernanceService
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def node_id(self) -> bytes:
        return self.secrets.node_id

    def hosting(self) -> set[str]:
        return {a["name"] for a in self.host.info() if a["state"] == "ready"}


def _genesis(admin: NodeSecrets, everyone: list[NodeSecrets]) -> Genesis:
    keys = tuple(s.verify_key for s in everyone)
    genesis = Genesis("lab", (admin.verify_key,), 1, bytes(16), dict(DEFAULT_POLICY), keys)
    return genesis.signed_by(admin)


async def _node(
    nursery: trio.Nursery, net: MemoryNetwork, secrets: NodeSecrets, genesis: Genesis, seed: int
) -> SvcNode:
    mesh = genesis.mesh_id
    keys = {node_id_of(k): k for k in genesis.trusted_nodes}
    store = Store(Path(":memory:"), run_sync=inline)
    host = AgentHost([], on_event=_ignore)
    bus = Bus(
        node_id=secrets.node_id, name=f"n{seed}", agents=host, queue_capacity=16, on_event=_ignore
    )
    decoder = EnvelopeDecoder(mesh_id=mesh, max_bytes=4096, max_ttl=3600, verify_key_for=keys.get)
    router = RemoteRouter(
        node_id=secrets.node_id,
        transports=[net.transport(secrets.node_id, None)],
        decoder=decoder,
        local=bus.request,
        error_reply=bus.error_reply,
    )
    bus.remote = router.request

    async def send(node_id: bytes, frame: bytes) -> None:
        await router.send_frame(node_id, frame, Priority.NORMAL, background=True)

    state = StateService(
        secrets=secrets,
        mesh_id=mesh,
        keys=keys,
        send=send,
        peers=lambda: alive_peers(router),
        emit=_ignore,
        rng=random.Random(seed),
    )
    gov = GovernanceService(
        secrets=secrets, genesis=genesis, send=send, peers=lambda: alive_peers(router), emit=_ignore
    )
    await state.start(store)
    await gov.start(store)
    wire_delivery(
        router,
        store,
        secrets=secrets,
        mesh_id=mesh,
        keys=keys,
        emit=_ignore,
        policy=RetryPolicy(),
        liveness_share=1.0,
        announce_share=1.0,
        rng=random.Random(seed),
        state=state,
        governance=gov,
    )
    orch = Orchestrator(
        secrets=secrets,
        mesh_id=mesh,
        state=state,
        host=host,
        alive=lambda: alive_peers(router),
        name=f"n{seed}",
        rng=random.Random(seed),
    )
    orch.request, orch.error_reply = bus.request, bus.error_reply
    bus.services = orch.route
    gov.watch(state.on_governance)
    gov.watch(orch.on_governance)
    node = SvcNode(secrets, orch, bus, host, state, gov)

    async def run_all(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with node.scope:
            async with trio.open_nursery() as inner:
                for service in (host.run, bus.serve, router.run, state.run, gov.run, orch.run):
                    await inner.start(service)
                task_status.started()

    await nursery.start(run_all)
    return node


async def _mesh(
    nursery: trio.Nursery, count: int, seed: int
) -> tuple[MemoryNetwork, list[SvcNode]]:
    net = MemoryNetwork(seed=seed)
    secrets = [NodeSecrets.generate(os.urandom) for _ in range(count)]
    genesis = _genesis(secrets[0], secrets)
    nodes = [await _node(nursery, net, s, genesis, i) for i, s in enumerate(secrets)]
    net.full([s.node_id for s in secrets], LinkProfile(latency=0.01, mtu=2048))
    await trio.sleep(5)  # the detectors hold each other alive
    return net, nodes


def _placed(nodes: list[SvcNode], service: str) -> dict[bytes, str]:
    """node id -> replica state, as every node sees it (asserted equal)."""
    seen = []
    for n in nodes:
        reports = {r["name"]: r for r in n.orch.report()}
        report = reports.get(service)
        seen.append(
            {}
            if report is None
            else {bytes.fromhex(r["node_id"]): r["state"] for r in report["replicas"]}
        )
    assert all(s == seen[0] for s in seen), seen
    return seen[0]


async def _until_ready(nodes: list[SvcNode], service: str, count: int, limit: float = 60) -> float:
    started = trio.current_time()
    with trio.fail_after(limit):
        while True:
            try:
                placed = _placed(nodes, service)
            except AssertionError:
                placed = {}
            hosting = {n.node_id for n in nodes if service in n.hosting()}
            if (
                len(placed) == count
                and set(placed.values()) == {"ready"}
                and hosting == set(placed)
            ):
                return trio.current_time() - started
            await trio.sleep(0.25)


async def _ask(node: SvcNode, service: str, payload: object) -> StandardMessage:
    message = new_message(
        sender=AgentAddress(NodeRef(node_id=node.node_id), "cli"),
        to=ServiceAddress(service),
        intent="echo",
        payload=payload,
        ttl=30,
        max_ttl=3600,
    )
    return await node.bus.request(message, 10.0)


async def test_deploy_balance_failover_scale_remove(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        net, nodes = await _mesh(nursery, 7, seed=21)
        admin = nodes[0]
        filed = await admin.orch.deploy(parse_manifest(ECHO, "echo2.toml"))
        assert filed["refused"] is None
        took = await _until_ready(nodes, "echo2", 3)
        print(f"3 replicas ready on 7 nodes {took:.1f} s (virtual) after the deploy")

        # Balanced: round robin over the three ready replicas, from a node that hosts none.
        sender = next(n for n in nodes if "echo2" not in n.hosting())
        served: Counter[str] = Counter()
        for i in range(30):
            reply = await _ask(sender, "echo2", i)
            assert reply.intent == "reply" and reply.payload == i, reply.payload
            served[str(reply.sender.node)] += 1
        assert len(served) == 3 and set(served.values()) == {10}, served

        # A node hosting a replica dies: its replica comes back elsewhere.
        victim = next(n for n in nodes[1:] if "echo2" in n.hosting() and n is not sender)
        others = [n for n in nodes if n is not victim]
        net.partition([n.node_id for n in others])
        victim.scope.cancel()
        took = await _until_ready(others, "echo2", 3)
        assert victim.node_id not in _placed(others, "echo2")
        print(f"re-placed {took:.1f} s (virtual) after the kill")
        reply = await _ask(sender, "echo2", "after")
        assert reply.intent == "reply" and reply.payload == "after"

        # Scale up, then down.
        await admin.orch.command("scale", "echo2", 5)
        await _until_ready(others, "echo2", 5)
        await admin.orch.command("scale", "echo2", 2)
        await _until_ready(others, "echo2", 2)

        # Remove: nothing runs, svc says why.
        await others[3].orch.command("remove", "echo2")  # filed by a non-admin: refused
        await trio.sleep(5)
        assert len(_placed(others, "echo2")) == 2
        await admin.orch.command("remove", "echo2")
        with trio.fail_after(30):
            while any("echo2" in n.hosting() for n in others):  # noqa: ASYNC110
                await trio.sleep(0.25)
        reply = await _ask(sender, "echo2", "gone")
        assert reply.intent == "error" and reply.payload["code"] == "no_replica"
        nursery.cancel_scope.cancel()


async def test_an_unauthorized_deploy_is_refused_everywhere(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        _, nodes = await _mesh(nursery, 5, seed=22)
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
        reply = await _ask(nodes[1], "echo2", "x")
        assert reply.intent == "error" and reply.payload["code"] == "no_replica"
        nursery.cancel_scope.cancel()
