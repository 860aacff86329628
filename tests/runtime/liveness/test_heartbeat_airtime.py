"""Heartbeats on a radio: a node whose background airtime is spent still sends them, and nodes
started together do not send them in step (autojump clock, memory transport on a
bandwidth-limited link, so the node has an airtime lane).

Reticulum's own traffic (announces, link set-up, HELLOs) is charged to the background share from
the interface's transmit counter. On the emulated LoRa channel a node that set up a few links (a
sync at start, SWIM probes of a dead peer) spent that whole share, and its heartbeats were then
dropped for up to an hour: its peers stopped hearing it and probed it over links, spending more.
Heartbeats are paced to their own share by their interval, so they are held to the whole budget
only."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import trio

from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.retry import RetryPolicy
from kai_mesh.runtime.blocking import inline
from kai_mesh.runtime.liveness.service import Liveness, heartbeat_gap
from kai_mesh.runtime.messaging.remote import RemoteRouter
from kai_mesh.runtime.store import Store
from kai_mesh.runtime.wiring import wire_delivery
from tests.runtime.builders import memory_router
from transports.memory import LinkProfile, MemoryNetwork

MESH = b"h" * 32
RADIO = LinkProfile(latency=0.05, bandwidth=20_000)


def _ignore(topic: str, data: object) -> None:
    pass


async def _start(
    nursery: trio.Nursery,
    router: RemoteRouter,
    secrets: NodeSecrets,
    keys: dict[bytes, bytes],
    seed: int = 1,
) -> Liveness:
    liveness = wire_delivery(
        router,
        Store(Path(":memory:"), run_sync=inline),
        secrets=secrets,
        mesh_id=MESH,
        keys=keys,
        emit=_ignore,
        policy=RetryPolicy(),
        liveness_share=0.04,
        announce_share=0.01,
        rng=random.Random(seed),  # the node's own: each node draws its own jitter
    )
    await nursery.start(router.run)
    return liveness


async def test_heartbeats_go_out_when_background_airtime_is_spent(autojump_clock: object) -> None:
    net = MemoryNetwork(seed=3)
    secrets = [NodeSecrets.generate(os.urandom) for _ in range(2)]
    keys = {s.node_id: s.verify_key for s in secrets}
    a, b = [memory_router(net, s, MESH, keys) for s in secrets]
    net.full([s.node_id for s in secrets], RADIO)
    async with trio.open_nursery() as nursery:
        live_a = await _start(nursery, a, secrets[0], keys)
        live_b = await _start(nursery, b, secrets[1], keys)
        await trio.sleep(5)
        transport = a.transports[0]
        lane = a.egress._lane(transport, transport.interfaces()[0])
        assert lane is not None
        budget = lane.queue.budget
        # What Reticulum sent itself, charged as background: the whole background share.
        spent = int(budget.background_limit * budget.bitrate / 8) - budget.overhead_bytes
        budget.spend(spent, trio.current_time(), True)
        assert budget.background_used(trio.current_time()) >= budget.background_limit - 0.01
        sent, heard = live_a.counters["heartbeats_sent"], live_b.counters["heartbeats_heard"]
        await trio.sleep(10 * live_a.heartbeat_interval)
        assert live_a.counters["heartbeats_sent"] - sent >= 9
        assert live_b.counters["heartbeats_heard"] - heard >= 9
        nursery.cancel_scope.cancel()


def test_heartbeat_gaps_are_jittered_and_stay_inside_the_period() -> None:
    rng = random.Random(7)
    gaps = [heartbeat_gap(100.0, rng) for _ in range(1000)]
    assert 90.0 <= min(gaps) < 92.0 and 108.0 < max(gaps) <= 110.0
    assert abs(sum(gaps) / len(gaps) - 100.0) < 1.0  # the same airtime on average
    assert max(gaps) < 100.0 / 0.8  # a heartbeat always lands within the detector's period


async def test_nodes_started_together_do_not_heartbeat_in_step(autojump_clock: object) -> None:
    """Two nodes that start in the same instant: after a few intervals their heartbeats are
    seconds apart, not in the same instant (where a shared radio channel loses them)."""
    net = MemoryNetwork(seed=4)
    secrets = [NodeSecrets.generate(os.urandom) for _ in range(2)]
    keys = {s.node_id: s.verify_key for s in secrets}
    routers = [memory_router(net, s, MESH, keys) for s in secrets]
    net.full([s.node_id for s in secrets], RADIO)
    sent: dict[int, list[float]] = {0: [], 1: []}
    async with trio.open_nursery() as nursery:
        lives = [await _start(nursery, routers[k], secrets[k], keys, seed=k) for k in (0, 1)]
        for k, live in enumerate(lives):
            inner = live._broadcasts[0]

            async def recorded(frame: bytes, k: int = k, inner: Any = inner) -> None:
                sent[k].append(trio.current_time())
                await inner(frame)

            live._broadcasts = [recorded]
        interval = lives[0].heartbeat_interval
        await trio.sleep(6 * interval)
        nursery.cancel_scope.cancel()
    apart = [abs(a - b) for a, b in zip(sent[0][2:], sent[1][2:], strict=False)]
    assert apart and min(apart) > 0.01 * interval, apart
