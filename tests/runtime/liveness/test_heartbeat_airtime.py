"""A node whose background airtime is spent still sends its heartbeats (autojump clock, memory
transport on a bandwidth-limited link, so the node has an airtime lane).

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

import trio

from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.retry import RetryPolicy
from kai_mesh.runtime.liveness.service import Liveness
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
    nursery: trio.Nursery, router: RemoteRouter, secrets: NodeSecrets, keys: dict[bytes, bytes]
) -> Liveness:
    liveness = wire_delivery(
        router,
        Store(Path(":memory:")),
        secrets=secrets,
        mesh_id=MESH,
        keys=keys,
        emit=_ignore,
        policy=RetryPolicy(),
        liveness_share=0.04,
        announce_share=0.01,
        rng=random.Random(1),
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
