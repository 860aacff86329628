"""State pushes by broadcast (issue 17, item 6): on a shared channel a local change goes out as
one packet every neighbour hears, not one link frame per peer; entries heard so are checked as
entries from a link are; a neighbour that lost the packet is repaired by the digest round.
Memory transport (its broadcast reaches every current neighbour), autojump clock."""

from __future__ import annotations

import os

import trio

from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.state.wire import Buckets, encode_sync
from kai_mesh.runtime.state.service import StateService
from tests.runtime.builders import start_state_node
from transports.memory import LinkProfile, MemoryNetwork, MemoryTransport

MESH = b"b" * 32


async def start_node(
    nursery: trio.Nursery,
    net: MemoryNetwork,
    secrets: NodeSecrets,
    keys: dict[bytes, bytes],
    seed: int,
) -> tuple[StateService, MemoryTransport]:
    state, router = await start_state_node(nursery, net, secrets, MESH, keys, seed)
    transport = router.transports[0]
    assert isinstance(transport, MemoryTransport)
    return state, transport


async def five(
    nursery: trio.Nursery, profile: LinkProfile, members: int = 5
) -> tuple[MemoryNetwork, list[NodeSecrets], list[StateService], list[MemoryTransport]]:
    net = MemoryNetwork(seed=11)
    secrets = [NodeSecrets.generate(os.urandom) for _ in range(5)]
    keys = {s.node_id: s.verify_key for s in secrets[:members]}
    started = [await start_node(nursery, net, s, keys, i) for i, s in enumerate(secrets)]
    net.full([s.node_id for s in secrets], profile)
    await trio.sleep(5)  # heard each other: alive, one hop
    return net, secrets, [s for s, _ in started], [t for _, t in started]


async def test_a_local_change_goes_to_every_neighbour_in_one_broadcast(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        _, _, states, _ = await five(nursery, LinkProfile(latency=0.02))
        writer = states[0]
        links_before = writer.counters["frames_sent"]
        await writer.write(("shared", "k"), "over the air once")
        with trio.fail_after(2):  # well within a heartbeat: no digest round needed
            while any(s.read(("shared",)) != {"k": "over the air once"} for s in states):  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert writer.counters["broadcasts_sent"] == 1
        assert writer.counters["frames_sent"] == links_before  # no push over any link
        assert all(s.counters["broadcasts_received"] == 1 for s in states[1:])
        assert all(s.counters["peer_entries"] == 1 for s in states[1:])
        nursery.cancel_scope.cancel()


async def test_a_neighbour_that_lost_the_broadcast_is_repaired_by_the_digest(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        net, secrets, states, _ = await five(nursery, LinkProfile(latency=0.02))
        writer, deaf = secrets[0].node_id, secrets[4].node_id
        net.link(writer, deaf, LinkProfile(latency=0.02, loss=1.0))  # node 4 hears none of it
        await states[0].write(("shared", "k"), 1)
        await trio.sleep(0.5)
        net.link(writer, deaf, LinkProfile(latency=0.02))
        with trio.fail_after(60):
            while states[4].read(("shared",)) != {"k": 1}:  # noqa: ASYNC110
                await trio.sleep(0.1)
        assert all(s.counters["broadcasts_received"] == 1 for s in states[1:4])
        assert states[4].counters["broadcasts_received"] == 0  # a digest round brought it
        assert states[4].counters["peer_entries"] == 1
        nursery.cancel_scope.cancel()


async def test_broadcast_entries_of_a_stranger_and_sync_asks_are_refused(
    autojump_clock: object,
) -> None:
    """Node 4 is not a member: its entries, broadcast to all, are not taken. A BUCKETS frame
    (a sync step meant for one peer) heard by broadcast is refused."""
    async with trio.open_nursery() as nursery:
        _, _, states, transports = await five(nursery, LinkProfile(latency=0.02), members=4)
        stranger = states[4]
        await stranger.write(("shared", "intruder"), True)
        await trio.sleep(2)
        assert stranger.counters["broadcasts_sent"] == 1
        assert all(s.read(("shared",)) in (None, {}) for s in states[:4])
        ask = encode_sync(Buckets(hashes={0: b"\0" * 4}))
        await transports[4].broadcast(ask)
        await trio.sleep(1)
        assert all(s.counters["broadcasts_refused"] >= 1 for s in states[:4])
        nursery.cancel_scope.cancel()
