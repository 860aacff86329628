"""A mesh of service nodes with mesh events and the autoscaler, in one process over the memory
transport (the arrangement of tests/runtime/orchestration/test_services.py, plus issue 12's
parts). Each node's telemetry is read through `Mesh.samples`, which stands in for the telemetry
stream: by default every node's own `LoadMeter`, or a load model a test sets."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from kai_mesh.core.mesh.address import AgentAddress, NodeRef, ServiceAddress
from kai_mesh.core.mesh.genesis import DEFAULT_POLICY, Genesis
from kai_mesh.core.mesh.identity import NodeSecrets, node_id_of
from kai_mesh.core.messaging.envelope import EnvelopeDecoder, Priority, StandardMessage
from kai_mesh.core.messaging.frames import FRAME_EVENT
from kai_mesh.core.orchestration.telemetry import Sample
from kai_mesh.runtime.agents.host import AgentHost
from kai_mesh.runtime.blocking import inline
from kai_mesh.runtime.events.agent import WithEventsAgent
from kai_mesh.runtime.events.service import MeshEvents
from kai_mesh.runtime.governance.service import GovernanceService
from kai_mesh.runtime.messaging.bus import Bus, new_message
from kai_mesh.runtime.messaging.remote import RemoteRouter
from kai_mesh.runtime.orchestration.autoscaler import ServiceAutoscaler
from kai_mesh.runtime.orchestration.load import LoadMeter
from kai_mesh.runtime.orchestration.reactive import ReactiveRules
from kai_mesh.runtime.orchestration.service import Orchestrator
from kai_mesh.runtime.state.service import StateService
from kai_mesh.runtime.store import Store
from kai_mesh.runtime.supervision.service import Supervised, WithSuperviseAgent
from kai_mesh.runtime.tasks.service import TaskService
from kai_mesh.runtime.wiring import alive_peers, liveness_generation
from tests.runtime.builders import background_send, state_service, wire_test_node
from transports.memory import LinkProfile, MemoryNetwork


def _ignore(topic: str, data: object) -> None:
    pass


@dataclass
class ScaleNode:
    secrets: NodeSecrets
    name: str
    orch: Orchestrator
    bus: Bus
    host: AgentHost
    state: StateService
    router: RemoteRouter
    events: MeshEvents
    autoscaler: ServiceAutoscaler
    load: LoadMeter
    rules: ReactiveRules
    supervised: Supervised
    tasks: TaskService
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def node_id(self) -> bytes:
        return self.secrets.node_id

    def hosting(self) -> set[str]:
        return {a["name"] for a in self.host.info() if a["state"] == "ready"}


@dataclass
class Mesh:
    net: MemoryNetwork
    nodes: list[ScaleNode]
    #: node id -> Sample; None: every node's own LoadMeter (the telemetry stream's stand-in)
    model: Callable[[], Mapping[bytes, Sample]] | None = None

    def samples(self) -> Mapping[bytes, Sample]:
        if self.model is not None:
            return self.model()
        return {n.node_id: n.load.sample() for n in self.nodes if not n.scope.cancel_called}


def _genesis(admin: NodeSecrets, everyone: list[NodeSecrets]) -> Genesis:
    keys = tuple(s.verify_key for s in everyone)
    genesis = Genesis("lab", (admin.verify_key,), 1, bytes(16), dict(DEFAULT_POLICY), keys)
    return genesis.signed_by(admin)


async def _node(
    nursery: trio.Nursery,
    mesh: Mesh,
    secrets: NodeSecrets,
    genesis: Genesis,
    seed: int,
    period: float,
) -> ScaleNode:
    mesh_id = genesis.mesh_id
    name = f"n{seed}"
    keys = {node_id_of(k): k for k in genesis.trusted_nodes}
    store = Store(Path(":memory:"), run_sync=inline)
    host = AgentHost([], on_event=_ignore)
    decoder = EnvelopeDecoder(
        mesh_id=mesh_id, max_bytes=4096, max_ttl=3600, verify_key_for=keys.get
    )
    bus_ref: list[Bus] = []
    router_ref: list[RemoteRouter] = []

    async def send_event(node_id: bytes, frame: bytes) -> None:
        await router_ref[0].send_frame(node_id, frame, Priority.LOW, background=True)

    events = MeshEvents(
        node_id=secrets.node_id,
        send_frame=send_event,
        alive=lambda: alive_peers(router_ref[0]),
        rng=random.Random(seed),
    )
    orch_ref: list[Orchestrator] = []
    state_ref: list[StateService] = []
    supervised = Supervised(
        secrets=secrets,
        mesh_id=mesh_id,
        gov=lambda: orch_ref[0].gov,
        host=host,
        sync_now=lambda: state_ref[0].sync_now(),
    )
    bus = Bus(
        node_id=secrets.node_id,
        name=name,
        agents=WithSuperviseAgent(
            WithEventsAgent(host, events, lambda node: bus_ref[0].is_local(node)), supervised
        ),
        queue_capacity=16,
        on_event=_ignore,
    )
    bus_ref.append(bus)
    router = RemoteRouter(
        node_id=secrets.node_id,
        transports=[mesh.net.transport(secrets.node_id, None)],
        decoder=decoder,
        local=bus.request,
        error_reply=bus.error_reply,
    )
    router_ref.append(router)
    router.frames.on(FRAME_EVENT, events.on_frame)
    bus.remote = router.request
    events.submit = router.submit

    send = background_send(router)

    state = state_service(router, secrets, mesh_id, keys, seed)
    gov = GovernanceService(
        secrets=secrets,
        genesis=genesis,
        send=send,
        peers=lambda: alive_peers(router),
        emit=_ignore,
    )
    state_ref.append(state)
    await state.start(store)
    await gov.start(store)
    wire_test_node(router, store, secrets, mesh_id, keys, seed, state=state, governance=gov)
    orch = Orchestrator(
        secrets=secrets,
        mesh_id=mesh_id,
        state=state,
        host=host,
        alive=lambda: alive_peers(router),
        alive_generation=lambda: liveness_generation(router),
        name=name,
        rng=random.Random(seed),
    )
    orch_ref.append(orch)
    orch.request, orch.error_reply = bus.request, bus.error_reply
    bus.services = orch.route
    gov.watch(state.on_governance)
    gov.watch(orch.on_governance)
    autoscaler = ServiceAutoscaler(orch=orch, events=events, samples=mesh.samples, period=period)
    autoscaler.attach()
    load = LoadMeter(agents=host.info, queues=bus.queue_depths, hosted=autoscaler.hosted_here)
    rules = ReactiveRules(orch=orch, events=events, autoscaler=autoscaler)
    tasks = TaskService(
        orch=orch, state=state, events=events, request=bus.request, rng=random.Random(seed)
    )
    node = ScaleNode(
        secrets,
        name,
        orch,
        bus,
        host,
        state,
        router,
        events,
        autoscaler,
        load,
        rules,
        supervised,
        tasks,
    )

    async def run_all(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with node.scope:
            async with trio.open_nursery() as inner:
                for service in (
                    host.run,
                    bus.serve,
                    router.run,
                    state.run,
                    gov.run,
                    orch.run,
                    events.run,
                    autoscaler.run,
                    rules.run,
                    tasks.run,
                ):
                    await inner.start(service)
                task_status.started()

    await nursery.start(run_all)
    return node


async def build(
    nursery: trio.Nursery,
    count: int,
    seed: int,
    period: float = 15.0,
    profile: LinkProfile | None = None,
) -> Mesh:
    net = MemoryNetwork(seed=seed)
    mesh = Mesh(net, [])
    secrets = [NodeSecrets.generate(os.urandom) for _ in range(count)]
    genesis = _genesis(secrets[0], secrets)
    for i, s in enumerate(secrets):
        mesh.nodes.append(await _node(nursery, mesh, s, genesis, i, period))
    net.full([s.node_id for s in secrets], profile or LinkProfile(latency=0.01, mtu=2048))
    await trio.sleep(5)  # the detectors hold each other alive
    return mesh


def placed(node: ScaleNode, service: str) -> int:
    """How many replicas the placement in force gives `service`, as `node` sees it."""
    report = {r["name"]: r for r in node.orch.report()}.get(service)
    return 0 if report is None else len(report["replicas"])


def ready(node: ScaleNode, service: str) -> int:
    report = {r["name"]: r for r in node.orch.report()}.get(service)
    return 0 if report is None else int(report["ready"])


async def ask(node: ScaleNode, service: str, payload: object, ttl: int = 60) -> StandardMessage:
    message = new_message(
        sender=AgentAddress(NodeRef(node_id=node.node_id), "cli"),
        to=ServiceAddress(service),
        intent="echo",
        payload=payload,
        ttl=ttl,
        max_ttl=3600,
    )
    return await node.bus.request(message, 10.0)
