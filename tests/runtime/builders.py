"""A router over the simulated transport, and the sync services and wiring of a test node, as the
runtime tests build many of them."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.envelope import EnvelopeDecoder, Priority
from kai_mesh.core.messaging.retry import RetryPolicy
from kai_mesh.runtime.agents.host import AgentHost
from kai_mesh.runtime.blocking import inline
from kai_mesh.runtime.governance.service import GovernanceService
from kai_mesh.runtime.liveness.service import Liveness
from kai_mesh.runtime.messaging.bus import Bus
from kai_mesh.runtime.messaging.remote import RemoteRouter
from kai_mesh.runtime.state.service import StateService
from kai_mesh.runtime.store import Store
from kai_mesh.runtime.wiring import alive_peers, wire_delivery
from transports.memory import MemoryNetwork


def ignore(topic: str, data: object) -> None:
    pass


def memory_router(
    net: MemoryNetwork, secrets: NodeSecrets, mesh_id: bytes, keys: dict[bytes, bytes]
) -> RemoteRouter:
    """A router with a bus and no agents, on a fresh endpoint of `net`. Start `router.run`."""
    host = AgentHost([], on_event=ignore)
    bus = Bus(node_id=secrets.node_id, name=None, agents=host, queue_capacity=8, on_event=ignore)
    decoder = EnvelopeDecoder(
        mesh_id=mesh_id, max_bytes=4096, max_ttl=3600, verify_key_for=keys.get
    )
    return RemoteRouter(
        node_id=secrets.node_id,
        transports=[net.transport(secrets.node_id, None)],
        decoder=decoder,
        local=bus.request,
        error_reply=bus.error_reply,
    )


def background_send(router: RemoteRouter) -> Callable[[bytes, bytes], Awaitable[None]]:
    """How the runtime's sync services send a frame: normal priority, background share."""

    async def send(node_id: bytes, frame: bytes) -> None:
        await router.send_frame(node_id, frame, Priority.NORMAL, background=True)

    return send


def state_service(
    router: RemoteRouter,
    secrets: NodeSecrets,
    mesh_id: bytes,
    keys: dict[bytes, bytes],
    seed: int,
    *,
    send: Callable[[bytes, bytes], Awaitable[None]] | None = None,
    peers: Callable[[], list[bytes]] | None = None,
) -> StateService:
    """The replicated state of a test node (`send`: `background_send`; `peers`: alive ones)."""
    return StateService(
        secrets=secrets,
        mesh_id=mesh_id,
        keys=keys,
        send=send or background_send(router),
        peers=peers or (lambda: alive_peers(router)),
        emit=ignore,
        rng=random.Random(seed),
    )


def wire_test_node(
    router: RemoteRouter,
    store: Store,
    secrets: NodeSecrets,
    mesh_id: bytes,
    keys: dict[bytes, bytes],
    seed: int,
    *,
    state: StateService | None = None,
    governance: GovernanceService | None = None,
) -> Liveness:
    """`wire_delivery` as the tests use it: default retry policy, whole airtime shares, a seeded
    rng, events ignored."""
    return wire_delivery(
        router,
        store,
        secrets=secrets,
        mesh_id=mesh_id,
        keys=keys,
        emit=ignore,
        policy=RetryPolicy(),
        liveness_share=1.0,
        announce_share=1.0,
        rng=random.Random(seed),
        state=state,
        governance=governance,
    )


async def start_state_node(
    nursery: trio.Nursery,
    net: MemoryNetwork,
    secrets: NodeSecrets,
    mesh_id: bytes,
    keys: dict[bytes, bytes],
    seed: int,
) -> tuple[StateService, RemoteRouter]:
    """A running router with the replicated state wired in, on an in-memory store."""
    store = Store(Path(":memory:"), run_sync=inline)
    router = memory_router(net, secrets, mesh_id, keys)
    state = state_service(router, secrets, mesh_id, keys, seed)
    await state.start(store)
    wire_test_node(router, store, secrets, mesh_id, keys, seed, state=state)
    await nursery.start(router.run)
    await nursery.start(state.run)
    return state, router
