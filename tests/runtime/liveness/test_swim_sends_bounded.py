"""A member flooding SWIM probes cannot make this node hold a send task and a frame for each
(issue 15): at most `SENDS_PER_PEER` acks are in flight to it, the rest are dropped and counted,
and once the link moves again the node answers as before."""

from __future__ import annotations

import os

import trio

from kai_mesh.core.liveness.membership import DetectorConfig, SendProbe
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.frames import encode_swim
from kai_mesh.runtime.liveness.service import SENDS_PER_PEER, Liveness


async def test_acks_in_flight_to_one_peer_are_bounded(autojump_clock: object) -> None:
    me, evil = (NodeSecrets.generate(os.urandom) for _ in range(2))
    stuck = trio.Event()
    sent: list[bytes] = []

    async def send(node_id: bytes, frame: bytes) -> None:
        await stuck.wait()  # a link that takes nothing: every send waits
        sent.append(node_id)

    live = Liveness(
        secrets=me,
        mesh_id=b"m" * 32,
        keys={me.node_id: me.verify_key, evil.node_id: evil.verify_key},
        config=DetectorConfig(),
        heartbeat_interval=60.0,
        send=send,
        broadcasts=[],
        emit=lambda topic, data: None,
        run_number=1,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(live.run)
        for seq in range(1, 201):
            live.on_swim(evil.node_id, encode_swim(SendProbe(to=me.node_id, seq=seq)))
        await trio.sleep(0.1)
        assert live._in_flight[evil.node_id] == SENDS_PER_PEER < 200
        assert live.counters["send_busy"] == 200 - SENDS_PER_PEER
        stuck.set()
        await trio.sleep(0.1)
        assert sent.count(evil.node_id) == SENDS_PER_PEER
        assert evil.node_id not in live._in_flight  # every task ended and gave its place back
        before = sent.count(evil.node_id)
        live.on_swim(evil.node_id, encode_swim(SendProbe(to=me.node_id, seq=999)))
        await trio.sleep(0.1)
        assert sent.count(evil.node_id) == before + 1  # answered again
        nursery.cancel_scope.cancel()
