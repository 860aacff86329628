"""Governance across nodes over the memory transport: three admins, threshold 2. A proposal and
one more vote certify on every node; an admin cut off alone certifies nothing; after the heal
every node holds the same chain; a restart rebuilds the fold from the store."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trio

from kai_mesh.core.governance.sync_wire import encode_ask, encode_records
from kai_mesh.core.governance.wire import Proposal, encode_proposal
from kai_mesh.core.mesh.genesis import DEFAULT_POLICY, Genesis
from kai_mesh.core.mesh.identity import NodeSecrets, node_id_of
from kai_mesh.core.messaging.envelope import Priority
from kai_mesh.runtime.blocking import inline
from kai_mesh.runtime.governance.service import GOV_DIGEST, GovernanceService
from kai_mesh.runtime.store import Store
from kai_mesh.runtime.wiring import alive_peers
from tests.runtime.builders import memory_router, wire_test_node
from transports.memory import LinkProfile, MemoryNetwork


def _ignore(topic: str, data: object) -> None:
    pass


def _genesis(admins: list[NodeSecrets], threshold: int) -> Genesis:
    keys = tuple(a.verify_key for a in admins)
    genesis = Genesis("lab", keys, threshold, bytes(16), dict(DEFAULT_POLICY), keys)
    for admin in admins:
        genesis = genesis.signed_by(admin)
    return genesis


@dataclass
class GovNode:
    gov: GovernanceService
    store: Store


async def start_node(
    nursery: trio.Nursery,
    net: MemoryNetwork,
    secrets: NodeSecrets,
    genesis: Genesis,
    seed: int,
    store: Store | None = None,
) -> GovNode:
    keys = {node_id_of(k): k for k in genesis.trusted_nodes}
    store = store or Store(Path(":memory:"), run_sync=inline)
    router = memory_router(net, secrets, genesis.mesh_id, keys)

    async def send(node_id: bytes, frame: bytes) -> None:
        await router.send_frame(node_id, frame, Priority.HIGH)

    gov = GovernanceService(
        secrets=secrets,
        genesis=genesis,
        send=send,
        peers=lambda: alive_peers(router),
        emit=_ignore,
    )
    await gov.start(store)
    wire_test_node(router, store, secrets, genesis.mesh_id, keys, seed, governance=gov)
    await nursery.start(router.run)
    await nursery.start(gov.run)
    return GovNode(gov, store)


def _heads(nodes: list[GovNode]) -> set[bytes]:
    return {n.gov.gov.head() for n in nodes if n.gov.gov is not None}


def _policy(node: GovNode) -> dict[str, object]:
    assert node.gov.gov is not None
    return dict(node.gov.gov.state.policy)


async def test_two_of_three_certify_everywhere_and_a_lone_admin_certifies_nothing(
    autojump_clock: object,
) -> None:
    net = MemoryNetwork(seed=11)
    secrets = [NodeSecrets.generate(os.urandom) for _ in range(3)]
    genesis = _genesis(secrets, 2)
    ids = [s.node_id for s in secrets]
    async with trio.open_nursery() as nursery:
        nodes = [await start_node(nursery, net, s, genesis, i) for i, s in enumerate(secrets)]
        a, b, c = nodes
        net.full(ids, LinkProfile(latency=0.02))
        await trio.sleep(5)  # the detectors hold each other alive

        pid = await a.gov.propose("policy_update", {"k": "v"})
        await trio.sleep(1)  # pushed to b and c at once
        assert b.gov.gov is not None and pid in {p.id for p in b.gov.gov.proposals()}
        assert all(_policy(n).get("k") is None for n in nodes)  # 1 of 2: open
        await b.gov.vote(pid)
        await trio.sleep(1)
        assert all(_policy(n)["k"] == "v" for n in nodes)
        assert len(_heads(nodes)) == 1 and pid in _heads(nodes)

        # a alone: its proposal stays open; b and c certify one of their own meanwhile.
        net.partition([ids[0]], ids[1:])
        lone = await a.gov.propose("policy_update", {"lone": True})
        await trio.sleep(30)
        assert a.gov.gov is not None and a.gov.gov.head() == pid
        assert "lone" not in _policy(a)
        other = await b.gov.propose("policy_update", {"k": "w"})
        await trio.sleep(1)
        await c.gov.vote(other)
        await trio.sleep(1)
        assert _policy(b)["k"] == _policy(c)["k"] == "w" and _policy(a)["k"] == "v"

        net.heal()
        with trio.fail_after(120):
            while len(_heads(nodes)) > 1:  # noqa: ASYNC110 - heartbeats carry the heads
                await trio.sleep(0.5)
        assert _heads(nodes) == {other}
        assert all(_policy(n) == _policy(b) for n in nodes) and "lone" not in _policy(a)
        statuses = {p.id: p.status for p in a.gov.gov.proposals()}
        assert statuses[lone] == "orphaned" and statuses[other] == "certified"
        assert all(n.gov.status()["evidence"] == 0 for n in nodes)
        nursery.cancel_scope.cancel()

    # A restart rebuilds the same fold from the stored records.
    async with trio.open_nursery() as nursery:
        again = await start_node(nursery, MemoryNetwork(seed=12), secrets[0], genesis, 7, a.store)
        assert again.gov.gov is not None and again.gov.gov.head() == other
        assert _policy(again) == _policy(b)
        nursery.cancel_scope.cancel()


async def test_a_push_is_one_broadcast_for_the_neighbours_and_a_missed_one_is_synced(
    autojump_clock: object,
) -> None:
    net = MemoryNetwork(seed=13)
    secrets = [NodeSecrets.generate(os.urandom) for _ in range(4)]
    keys = tuple(s.verify_key for s in secrets)  # node 0 the one admin, all four members
    genesis = Genesis("lab", keys[:1], 1, bytes(16), dict(DEFAULT_POLICY), keys).signed_by(
        secrets[0]
    )
    ids = [s.node_id for s in secrets]
    async with trio.open_nursery() as nursery:
        nodes = [await start_node(nursery, net, s, genesis, i) for i, s in enumerate(secrets)]
        net.full(ids, LinkProfile(latency=0.02))
        await trio.sleep(5)
        admin = nodes[0].gov
        pid = await admin.propose("policy_update", {"k": "v"})  # certified at once: 1 of 1
        await trio.sleep(1)
        assert all(_policy(n).get("k") == "v" for n in nodes)
        await trio.sleep(3)  # and once more, for a neighbour that lost the first
        assert admin.counters["broadcasts_sent"] == 2
        assert admin.counters["frames_sent"] == 0  # every peer is a neighbour: no link push
        for node in nodes[1:]:
            assert node.gov.counters["broadcasts_received"] == 2
            assert node.gov.counters["peer_records"] == 1  # the repeat is not kept again
            assert node.gov.counters["broadcasts_sent"] == 0  # not broadcast again
            assert node.gov.counters["frames_sent"] == 0

        # A neighbour cut off misses the broadcast; the digest on heartbeats brings it back.
        net.partition([ids[3]], ids[:3])
        second = await admin.propose("policy_update", {"k": "w"})
        await trio.sleep(1)
        assert _policy(nodes[3])["k"] == "v"
        net.heal()
        with trio.fail_after(60):
            while nodes[3].gov.gov is None or nodes[3].gov.gov.head() != second:  # noqa: ASYNC110
                await trio.sleep(0.5)
        assert _policy(nodes[3])["k"] == "w"
        assert pid != second

        # A stranger on the channel broadcasts its own signed proposal: not kept anywhere.
        stranger = NodeSecrets.generate(os.urandom)
        forged = encode_proposal(
            Proposal(second, "policy_update", {"k": "x"}, 2**31, stranger.verify_key, b"", 1),
            stranger,
            genesis.mesh_id,
        )
        assert admin.broadcast is not None
        await admin.broadcast(encode_records([forged]))
        await trio.sleep(1)
        for node in nodes[1:]:
            assert node.gov.counters["broadcast_unvouched"] == 1
            assert node.gov.counters["frames_refused"] == 0
        assert all(_policy(n)["k"] == "w" for n in nodes)
        nursery.cancel_scope.cancel()


async def test_digests_ask_at_most_once_per_gap(autojump_clock: object) -> None:
    admin = NodeSecrets.generate(os.urandom)
    peer = b"p" * 16
    sent: list[tuple[bytes, bytes]] = []

    async def send(node_id: bytes, frame: bytes) -> None:
        sent.append((node_id, frame))

    gov = GovernanceService(
        secrets=admin,
        genesis=_genesis([admin], 1),
        send=send,
        peers=lambda: [peer],
        emit=_ignore,
        min_round_gap=2.0,
    )
    await gov.start(Store(Path(":memory:"), run_sync=inline))
    other = b"x" * 8
    gov.on_digests(peer, {GOV_DIGEST: other})  # before `run`: nothing asked
    async with trio.open_nursery() as nursery:
        await nursery.start(gov.run)
        gov.on_digests(peer, gov.digests())
        gov.on_digests(peer, {GOV_DIGEST: other})
        await trio.sleep(1.0)
        gov.on_digests(peer, {GOV_DIGEST: other})  # within the gap
        await trio.sleep(0.1)
        assert gov.gov is not None
        assert sent == [(peer, encode_ask(gov.gov.head()))]
        await trio.sleep(1.0)
        gov.on_digests(peer, {GOV_DIGEST: other})
        await trio.sleep(0.1)
        assert len(sent) == 2 and gov.counters["asks_sent"] == 2
        nursery.cancel_scope.cancel()
