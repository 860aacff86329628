"""A router over the simulated transport, as the runtime tests build many of them."""

from __future__ import annotations

from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.envelope import EnvelopeDecoder
from kai_mesh.runtime.agents.host import AgentHost
from kai_mesh.runtime.messaging.bus import Bus
from kai_mesh.runtime.messaging.remote import RemoteRouter
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
