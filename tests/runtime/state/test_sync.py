"""The replicated state across many nodes: 50 routers on a sparse simulated graph (so most pairs
are not neighbours and entries must be relayed by anti-entropy), in-memory stores, trio's
autojump clock. A burst of edits on a few nodes reaches every node; contents and version vectors
end identical."""

from __future__ import annotations

import os
import random
from pathlib import Path

import trio

from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.frames import FRAME_STATE
from kai_mesh.runtime.blocking import inline
from kai_mesh.runtime.state.service import STATE_DIGEST, StateService
from kai_mesh.runtime.store import Store
from tests.runtime.builders import start_state_node
from transports.memory import LinkProfile, MemoryNetwork

MESH = b"s" * 32


def _ignore(topic: str, data: object) -> None:
    pass


async def start_node(
    nursery: trio.Nursery,
    net: MemoryNetwork,
    secrets: NodeSecrets,
    keys: dict[bytes, bytes],
    seed: int,
) -> StateService:
    state, _ = await start_state_node(nursery, net, secrets, MESH, keys, seed)
    return state


async def test_fifty_nodes_on_a_sparse_graph_converge_after_a_burst(autojump_clock: object) -> None:
    net = MemoryNetwork(seed=5)
    secrets = [NodeSecrets.generate(os.urandom) for _ in range(50)]
    keys = {s.node_id: s.verify_key for s in secrets}
    async with trio.open_nursery() as nursery:
        states = [await start_node(nursery, net, s, keys, i) for i, s in enumerate(secrets)]
        edges = net.random_sparse(
            [s.node_id for s in secrets], degree=3, profile=LinkProfile(latency=0.02)
        )
        assert len(edges) < 50 * 49 / 2 / 5  # sparse: most pairs must relay
        await trio.sleep(5)
        rng = random.Random(9)
        writers = rng.sample(states, 8)
        for k, state in enumerate(writers):
            for j in range(3):
                await state.write(("shared", f"w{k}"), {"edit": j, "by": k})
        started = trio.current_time()
        with trio.fail_after(300):
            # Polling the digests is the measurement: rounds are counted in heartbeat periods.
            while len({s.replica.digest() for s in states if s.replica}) > 1:  # noqa: ASYNC110
                await trio.sleep(0.5)
        took = trio.current_time() - started
        print(f"50 nodes converged {took:.1f} s (virtual) after the burst")
        contents = [s.read(("shared",)) for s in states]
        assert all(c == contents[0] for c in contents)
        assert contents[0] == {f"w{k}": {"edit": 2, "by": k} for k in range(8)}
        vectors = [s.replica.vector() for s in states if s.replica]
        assert all(v == vectors[0] for v in vectors) and len(vectors[0]) == 8
        nursery.cancel_scope.cancel()


async def test_sync_now_reports_what_each_side_lacked(autojump_clock: object) -> None:
    net = MemoryNetwork(seed=6)
    secrets = [NodeSecrets.generate(os.urandom) for _ in range(2)]
    keys = {s.node_id: s.verify_key for s in secrets}
    async with trio.open_nursery() as nursery:
        a, b = [await start_node(nursery, net, s, keys, i) for i, s in enumerate(secrets)]
        net.full([s.node_id for s in secrets], LinkProfile(latency=0.01))
        await trio.sleep(3)
        net.partition([secrets[0].node_id], [secrets[1].node_id])
        await a.write(("shared", "a1"), 1)
        await a.write(("shared", "a2"), 2)
        await b.write(("shared", "b1"), 3)
        await trio.sleep(1)  # the pushes run, and fail, while the two are still apart
        net.heal()
        assert b.sync_now() == 1  # before any heartbeat could start a round of its own
        await trio.sleep(3)
        report = b.sync_report(lambda node_id: None)
        assert [(r["we_lacked"], r["they_lacked"], r["in_sync"]) for r in report] == [(2, 1, True)]
        assert a.read(("shared",)) == b.read(("shared",)) == {"a1": 1, "a2": 2, "b1": 3}
        nursery.cancel_scope.cancel()


async def test_digests_start_rounds_at_most_once_per_gap_and_sync_now_forces_one(
    autojump_clock: object,
) -> None:
    secrets = NodeSecrets.generate(os.urandom)
    peer = b"p" * 16
    sent: list[tuple[bytes, bytes]] = []

    async def send(node_id: bytes, frame: bytes) -> None:
        sent.append((node_id, frame))

    state = StateService(
        secrets=secrets,
        mesh_id=MESH,
        keys={secrets.node_id: secrets.verify_key},
        send=send,
        peers=lambda: [peer],
        emit=_ignore,
        round_interval=1000.0,  # no idle round during the test
        min_round_gap=2.0,
        rng=random.Random(1),
    )
    await state.start(Store(Path(":memory:"), run_sync=inline))
    other = b"x" * 8
    state.on_digests(peer, {STATE_DIGEST: other})  # before `run`: kept, nothing asked
    async with trio.open_nursery() as nursery:
        await nursery.start(state.run)
        state.on_digests(peer, {STATE_DIGEST: state.digests()[STATE_DIGEST]})
        await trio.sleep(0.1)
        assert sent == []  # in sync: nothing to ask
        state.on_digests(peer, {STATE_DIGEST: other})
        await trio.sleep(1.0)
        state.on_digests(peer, {STATE_DIGEST: other})  # within the gap
        await trio.sleep(0.1)
        assert [(n, f[0]) for n, f in sent] == [(peer, FRAME_STATE)]
        await trio.sleep(1.0)
        state.on_digests(peer, {STATE_DIGEST: other})
        assert state.sync_now() == 1  # forced, whatever the gap
        await trio.sleep(0.1)
        assert len(sent) == 3 and state.counters["rounds"] == 3
        report = state.sync_report(lambda node_id: None)
        assert [(r["their_digest"], r["in_sync"]) for r in report] == [(other.hex(), False)]
        nursery.cancel_scope.cancel()
