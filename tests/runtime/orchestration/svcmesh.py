"""A mesh of service nodes in one process, for the orchestration runtime tests: nodes over the
memory transport with inline stores, the replicated state, governance (node 0 the one admin) and
an orchestrator each, under the autojump clock."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import trio

from kai_mesh.core.mesh.address import AgentAddress, NodeRef, ServiceAddress
from kai_mesh.core.mesh.genesis import DEFAULT_POLICY, Genesis
from kai_mesh.core.mesh.identity import NodeSecrets, node_id_of
from kai_mesh.core.messaging.envelope import EnvelopeDecoder, Priority, StandardMessage
from kai_mesh.core.orchestration.facts import NodeFacts
from kai_mesh.core.orchestration.telemetry import lan_profile
from kai_mesh.runtime.agents.host import AgentHost
from kai_mesh.runtime.blocking import inline
from kai_mesh.runtime.governance.service import GovernanceService
from kai_mesh.runtime.messaging.bus import Bus, new_message
from kai_mesh.runtime.messaging.remote import RemoteRouter
from kai_mesh.runtime.orchestration.local import Sampler
from kai_mesh.runtime.orchestration.service import Orchestrator
from kai_mesh.runtime.orchestration.telemetry import TelemetryService
from kai_mesh.runtime.state.service import StateService
from kai_mesh.runtime.store import Store
from kai_mesh.runtime.wiring import alive_peers, liveness_generation
from tests.runtime.builders import background_send, state_service, wire_test_node
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
    telemetry: TelemetryService
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def node_id(self) -> bytes:
        return self.secrets.node_id

    def hosting(self) -> set[str]:
        return {a["name"] for a in self.host.info() if a["state"] == "ready"}


def genesis_of(admin: NodeSecrets, everyone: list[NodeSecrets]) -> Genesis:
    keys = tuple(s.verify_key for s in everyone)
    genesis = Genesis("lab", (admin.verify_key,), 1, bytes(16), dict(DEFAULT_POLICY), keys)
    return genesis.signed_by(admin)


DEFAULT_FACTS = NodeFacts(arch="amd64", cpus=1, memory_mb=256)


async def svc_node(
    nursery: trio.Nursery,
    net: MemoryNetwork,
    secrets: NodeSecrets,
    genesis: Genesis,
    seed: int,
    facts: NodeFacts = DEFAULT_FACTS,
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

    send = background_send(router)

    state = state_service(router, secrets, mesh, keys, seed)
    gov = GovernanceService(
        secrets=secrets, genesis=genesis, send=send, peers=lambda: alive_peers(router), emit=_ignore
    )
    await state.start(store)
    await gov.start(store)
    wire_test_node(router, store, secrets, mesh, keys, seed, state=state, governance=gov)
    orch = Orchestrator(
        secrets=secrets,
        mesh_id=mesh,
        state=state,
        host=host,
        alive=lambda: alive_peers(router),
        alive_generation=lambda: liveness_generation(router),
        name=f"n{seed}",
        rng=random.Random(seed),
    )
    orch.request, orch.error_reply = bus.request, bus.error_reply
    bus.services = orch.route
    gov.watch(state.on_governance)
    gov.watch(orch.on_governance)
    telemetry = TelemetryService(
        facts=facts,
        sample=Sampler(host, orch.hosting.loads),
        peers=lambda: alive_peers(router),
        policy=lan_profile(),
        rng=random.Random(seed),
    )
    telemetry.register_frames(router.frames)

    async def send_telemetry(node_id: bytes, frame: bytes) -> None:
        await router.send_frame(node_id, frame, Priority.LOW, background=True)

    telemetry.send = send_telemetry
    orch.telemetry = telemetry
    node = SvcNode(secrets, orch, bus, host, state, gov, telemetry)

    async def run_all(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with node.scope:
            async with trio.open_nursery() as inner:
                for service in (host.run, bus.serve, router.run, state.run, gov.run, orch.run):
                    await inner.start(service)
                await inner.start(telemetry.run)
                task_status.started()

    await nursery.start(run_all)
    return node


async def svc_mesh(
    nursery: trio.Nursery,
    count: int,
    seed: int,
    facts: dict[int, NodeFacts] | None = None,
    profile: LinkProfile | None = None,
    keys_seed: int | None = None,
) -> tuple[MemoryNetwork, list[SvcNode]]:
    """`count` nodes, node 0 the admin, fully linked; `facts` by node index (else defaults)."""
    net = MemoryNetwork(seed=seed)
    # Node ids decide rendezvous ranks, so placement; `keys_seed` fixes them for a test that
    # must see one particular draw.
    draw = os.urandom if keys_seed is None else random.Random(keys_seed).randbytes
    secrets = [NodeSecrets.generate(draw) for _ in range(count)]
    genesis = genesis_of(secrets[0], secrets)
    facts = facts or {}
    nodes = [
        await svc_node(nursery, net, s, genesis, i, facts.get(i, DEFAULT_FACTS))
        for i, s in enumerate(secrets)
    ]
    net.full([s.node_id for s in secrets], profile or LinkProfile(latency=0.01, mtu=2048))
    await trio.sleep(5)  # the detectors hold each other alive
    return net, nodes


def placed(nodes: list[SvcNode], service: str) -> dict[bytes, str]:
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


async def until_ready(nodes: list[SvcNode], service: str, count: int, limit: float = 60) -> float:
    started = trio.current_time()
    with trio.fail_after(limit):
        while True:
            try:
                where = placed(nodes, service)
            except AssertionError:
                where = {}
            hosting = {n.node_id for n in nodes if service in n.hosting()}
            if len(where) == count and set(where.values()) == {"ready"} and hosting == set(where):
                return trio.current_time() - started
            await trio.sleep(0.25)


def ask_message(node: SvcNode, service: str, payload: object) -> StandardMessage:
    return new_message(
        sender=AgentAddress(NodeRef(node_id=node.node_id), "cli"),
        to=ServiceAddress(service),
        intent="echo",
        payload=payload,
        ttl=30,
        max_ttl=3600,
    )


async def ask(node: SvcNode, service: str, payload: object) -> StandardMessage:
    return await node.bus.request(ask_message(node, service, payload), 10.0)
