"""A hostile relay on the wire (tests/transports/nostr/hostile_proxy.py: drops, duplicates,
reorders, replays old events, rewrites content and signatures, sends garbage) between two nodes
that share replicated state through it alone: they converge, accept every entry exactly once,
and count what they refused. Real time, bounded."""

from __future__ import annotations

import os

import trio

from kai_mesh.core.mesh.identity import NodeSecrets
from tests.runtime.test_islands import _genesis, start_node, until
from tests.transports.nostr.conftest import relay_url  # noqa: F401 - the fixture
from tests.transports.nostr.hostile_proxy import HostileProxy
from transports.memory import MemoryNetwork

WRITES = 12


async def test_a_hostile_relay_makes_nodes_neither_diverge_nor_accept_twice(
    relay_url: str,  # noqa: F811
) -> None:
    a, b = NodeSecrets.generate(os.urandom), NodeSecrets.generate(os.urandom)
    genesis = _genesis([a], [a, b])
    proxy = HostileProxy(relay_url, seed=7)
    net = MemoryNetwork(seed=1)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(proxy.serve)
            # Short hello and digest intervals: what the relay drops is repaired sooner.
            na, nb = [
                await start_node(
                    nursery, net, s, genesis, i, [url], hello_interval=5, digest_interval=3
                )
                for i, s in enumerate((a, b))
            ]
            nodes = [na, nb]
            # Write in rounds of WRITES until the proxy has done every kind of harm (fewer
            # events cross a relay now that nodes do not read their own digests back).
            kinds = {"dropped", "duplicated", "reordered", "replayed", "rewritten"}
            written = 0
            while written == 0 or not kinds <= set(proxy.done):
                for i in range(written, written + WRITES):
                    await (na if i % 2 else nb).state.write(("shared", f"k{i}"), i)
                written += WRITES
                want = {f"k{i}": i for i in range(written)}
                await until(
                    lambda want=want: (  # type: ignore[misc]
                        len({n.state.replica.digest() for n in nodes if n.state.replica}) == 1
                        and na.state.read(("shared",)) == want
                    )
                )
            # Each side's log holds each stream's entries once, in one chain, however often and
            # in whatever order they came: two streams of WRITES/2 entries, no fork, nothing
            # quarantined or kept as evidence of forgery.
            for n in nodes:
                replica = n.state.replica
                assert replica is not None
                assert sorted(seq for seq, _ in replica.vector().values()) == [written // 2] * 2
                assert not replica.evidence() and not replica.quarantined
            nursery.cancel_scope.cancel()
    counted: dict[str, int] = {}
    for n in nodes:
        assert n.nostr is not None
        for key, value in n.nostr.counters().items():
            counted[key] = counted.get(key, 0) + value
        for relay in n.nostr.pool.relays:
            for key, value in relay.stats.refused.items():
                counted[key] = counted.get(key, 0) + value
    assert counted.get("duplicate", 0) > 0
    if proxy.done.get("rewritten_foreign"):  # a rewrite of a node's own echo is not verified
        assert counted.get("bad_id", 0) + counted.get("bad_signature", 0) > 0
    if proxy.done.get("garbage"):
        assert counted.get("relay_malformed", 0) + counted.get("malformed", 0) > 0
