"""Two islands with no link between them converge through a Nostr relay: each island is two nodes
on the memory transport, and one node of each (its gateway) also has a Nostr transport on a real
relay (nostr-sdk's LocalRelay, its own process). Writes on both sides reach all four nodes, and a
2-of-2 governance proposal made on one island is voted on the other and certified everywhere.
The gateways carry their islands' traffic by anti-entropy alone: no node of one island ever talks
to a node of the other except the gateways, through the relay. Real time, bounded."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from kai_mesh.core.mesh.genesis import DEFAULT_POLICY, Genesis
from kai_mesh.core.mesh.identity import MemberRecord, NodeSecrets, node_id_of
from kai_mesh.core.messaging.envelope import EnvelopeDecoder, Priority
from kai_mesh.runtime.agents.host import AgentHost
from kai_mesh.runtime.blocking import inline
from kai_mesh.runtime.governance.service import GovernanceService
from kai_mesh.runtime.messaging.bus import Bus
from kai_mesh.runtime.messaging.remote import RemoteRouter
from kai_mesh.runtime.state.service import StateService
from kai_mesh.runtime.store import Store
from kai_mesh.runtime.wiring import sync_peers
from tests.runtime.builders import wire_test_node
from tests.transports.nostr.conftest import relay_url  # noqa: F401 - the fixture
from transports.base import Transport
from transports.memory import LinkProfile, MemoryNetwork
from transports.nostr import NostrTransport


def _ignore(topic: str, data: object) -> None:
    pass


@dataclass
class IslandNode:
    secrets: NodeSecrets
    router: RemoteRouter
    state: StateService
    gov: GovernanceService
    nostr: NostrTransport | None


async def start_node(
    nursery: trio.Nursery,
    net: MemoryNetwork,
    secrets: NodeSecrets,
    genesis: Genesis,
    seed: int,
    relays: list[str],
    *,
    hello_interval: float = 300.0,
    digest_interval: float = 30.0,
) -> IslandNode:
    mesh = genesis.mesh_id
    keys = {node_id_of(k): k for k in genesis.trusted_nodes}
    transports: list[Transport] = [net.transport(secrets.node_id, f"n{seed}")]
    nostr = None
    if relays:
        nostr = NostrTransport(
            relays=relays,
            nostr_secret=secrets.nostr_secret,
            mesh_id=mesh,
            node_id=secrets.node_id,
            member=MemberRecord.create(secrets, f"n{seed}", mesh),
            trusted_keys=keys,
            hello_interval=hello_interval,
            digest_interval=digest_interval,
        )
        transports.append(nostr)
    host = AgentHost([], on_event=_ignore)
    bus = Bus(node_id=secrets.node_id, name=None, agents=host, queue_capacity=8, on_event=_ignore)
    decoder = EnvelopeDecoder(mesh_id=mesh, max_bytes=4096, max_ttl=3600, verify_key_for=keys.get)
    router = RemoteRouter(
        node_id=secrets.node_id,
        transports=transports,
        decoder=decoder,
        local=bus.request,
        error_reply=bus.error_reply,
    )

    async def send_state(node_id: bytes, frame: bytes) -> None:
        await router.send_frame(node_id, frame, Priority.NORMAL, background=True)

    async def send_gov(node_id: bytes, frame: bytes) -> None:
        await router.send_frame(node_id, frame, Priority.HIGH)

    state = StateService(
        secrets=secrets,
        mesh_id=mesh,
        keys=keys,
        send=send_state,
        peers=lambda: sync_peers(router),
        emit=_ignore,
        rng=random.Random(seed),
        # No rounds "now and then": what crosses the relay is started by the digests the
        # gateways publish there (without them, this test times out).
        round_interval=3600.0,
    )
    gov = GovernanceService(
        secrets=secrets,
        genesis=genesis,
        send=send_gov,
        peers=lambda: sync_peers(router),
        emit=_ignore,
    )
    store = Store(Path(":memory:"), run_sync=inline)
    await state.start(store)
    await gov.start(store)
    wire_test_node(router, store, secrets, mesh, keys, seed, state=state, governance=gov)
    await nursery.start(router.run)
    await nursery.start(state.run)
    await nursery.start(gov.run)
    return IslandNode(secrets, router, state, gov, nostr)


async def until(condition: Callable[[], object]) -> None:
    """Poll what the nodes hold (the bound is the caller's `fail_after`)."""
    while not condition():  # noqa: ASYNC110 - state of four services, no single event to wait on
        await trio.sleep(0.05)


def _genesis(admins: list[NodeSecrets], members: list[NodeSecrets]) -> Genesis:
    keys = tuple(a.verify_key for a in admins)
    trusted = tuple(m.verify_key for m in members)
    genesis = Genesis("islands", keys, len(admins), bytes(16), dict(DEFAULT_POLICY), trusted)
    for admin in admins:
        genesis = genesis.signed_by(admin)
    return genesis


async def test_two_islands_converge_through_a_relay(relay_url: str) -> None:  # noqa: F811
    net = MemoryNetwork(seed=3)
    a1, a2, b1, b2 = (NodeSecrets.generate(os.urandom) for _ in range(4))
    genesis = _genesis([a2, b2], [a1, a2, b1, b2])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nodes = [
                await start_node(nursery, net, s, genesis, i, [relay_url] if s in (a1, b1) else [])
                for i, s in enumerate((a1, a2, b1, b2))
            ]
            ga, na, gb, nb = nodes
            net.full([a1.node_id, a2.node_id], LinkProfile(latency=0.005))
            net.full([b1.node_id, b2.node_id], LinkProfile(latency=0.005))
            await na.state.write(("shared", "from_a"), 1)
            await nb.state.write(("shared", "from_b"), 2)
            await until(
                lambda: len({n.state.replica.digest() for n in nodes if n.state.replica}) == 1
            )
            want = {"from_a": 1, "from_b": 2}
            assert all(n.state.read(("shared",)) == want for n in nodes)

            pid = await na.gov.propose("policy_update", {"k": "v"})
            await until(
                lambda: nb.gov.gov is not None and pid in {p.id for p in nb.gov.gov.proposals()}
            )
            await nb.gov.vote(pid)
            await until(
                lambda: all(n.gov.gov and n.gov.gov.state.policy.get("k") == "v" for n in nodes)
            )
            assert len({n.gov.gov.head() for n in nodes if n.gov.gov}) == 1
            # The islands' other nodes never met anyone across: only the gateways did.
            assert {p.node_id for p in na.router.peers()} == {a1.node_id}
            assert {p.node_id for p in nb.router.peers()} == {b1.node_id}
            assert ga.nostr is not None and ga.nostr.counters().get("digests_received", 0) > 0
            assert gb.nostr is not None and b1.node_id != a1.node_id
            nursery.cancel_scope.cancel()
