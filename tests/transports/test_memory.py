"""The simulated transport: timing, loss, duplication, reordering, partitions, limits, scale.

Every test runs on trio's autojump clock, so simulated seconds cost nothing and times can be
asserted exactly. Losses are decided when a packet is sent, so a test knows how many messages to
wait for without sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from kai_mesh.core.errors import TransportError, UsageError
from transports.base import MessageReceived, PeerLost, PeerSeen, Transport, TransportEvent
from transports.memory import LinkProfile, MemoryNetwork, MemoryTransport


def nid(i: int) -> bytes:
    return i.to_bytes(16, "big")


A, B, C = nid(1), nid(2), nid(3)


@asynccontextmanager
async def running(*transports: MemoryTransport) -> AsyncIterator[trio.Nursery]:
    """Run the transports for the body of the block, then stop them."""
    async with trio.open_nursery() as nursery:
        for t in transports:
            await nursery.start(t.run)
        yield nursery
        nursery.cancel_scope.cancel()


async def messages(t: MemoryTransport, n: int) -> list[tuple[float, MessageReceived]]:
    """The next `n` messages `t` receives (other events skipped), each with its arrival time."""
    got: list[tuple[float, MessageReceived]] = []
    with trio.fail_after(3600):
        while len(got) < n:
            event = await t.events.receive()
            if isinstance(event, MessageReceived):
                got.append((trio.current_time(), event))
    return got


def drain(t: MemoryTransport) -> list[TransportEvent]:
    """Every event already queued, without waiting."""
    out: list[TransportEvent] = []
    while True:
        try:
            out.append(t.events.receive_nowait())
        except trio.WouldBlock:
            return out


def pair(
    profile: LinkProfile, *, seed: int = 0, capacity: int = 1000
) -> tuple[MemoryNetwork, MemoryTransport, MemoryTransport]:
    net = MemoryNetwork(seed=seed)
    a = net.transport(A, "a", event_capacity=capacity)
    b = net.transport(B, "b", capabilities=frozenset({"echo"}), event_capacity=capacity)
    net.link(A, B, profile)
    return net, a, b


def test_memory_transport_satisfies_the_protocol() -> None:
    t: Transport = MemoryNetwork().transport(A)  # mypy checks the structural match
    assert t.name == "memory"


async def test_delivery_takes_the_link_latency(autojump_clock: trio.testing.MockClock) -> None:
    net, a, b = pair(LinkProfile(latency=0.25))
    async with running(a, b):
        start = trio.current_time()
        await a.send(B, b"hello")
        assert trio.current_time() == start  # send does not wait for delivery
        [(at, msg)] = await messages(b, 1)
    assert at - start == pytest.approx(0.25)
    assert (msg.node_id, msg.data, msg.interface) == (A, b"hello", "memory")
    assert a.counters()["sent"] == 1 and b.counters()["received"] == 1
    assert a.interfaces()[0].tx_bytes == 5 and b.interfaces()[0].rx_bytes == 5
    assert net.counters()["delivered"] == 1


async def test_bandwidth_queues_packets_behind_each_other(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 1000 bytes at 8000 bit/s is one second each: the tenth lands after ten seconds.
    _, a, b = pair(LinkProfile(bandwidth=8000, mtu=1000))
    async with running(a, b):
        start = trio.current_time()
        for i in range(10):
            await a.send(B, bytes([i]) * 1000)
        got = await messages(b, 10)
    assert [at - start for at, _ in got] == pytest.approx([float(i + 1) for i in range(10)])
    assert [m.data[0] for _, m in got] == list(range(10))
    assert a.interfaces()[0].bitrate == 8000


async def test_each_direction_has_its_own_queue(autojump_clock: trio.testing.MockClock) -> None:
    _, a, b = pair(LinkProfile(bandwidth=8000, mtu=1000))
    async with running(a, b):
        start = trio.current_time()
        for _ in range(5):
            await a.send(B, bytes(1000))
        await b.send(A, bytes(1000))
        [(at, _)] = await messages(a, 1)
    assert at - start == pytest.approx(1.0)


async def delivered_set(seed: int, n: int = 2000) -> tuple[set[int], int]:
    """Which of `n` numbered packets arrive over a 10 % loss link, and how many were lost."""
    net, a, b = pair(LinkProfile(latency=0.01, loss=0.1), seed=seed, capacity=n + 10)
    async with running(a, b):
        for i in range(n):
            await a.send(B, i.to_bytes(2, "big"))
        lost = a.counters()["lost"]
        got = await messages(b, n - lost)
    assert net.counters()["lost"] == lost
    return {int.from_bytes(m.data, "big") for _, m in got}, lost


async def test_loss_rate_is_roughly_right_and_reproducible(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, lost = await delivered_set(seed=7)
    assert 140 <= lost <= 260  # 200 expected; sd about 13
    assert len(first) == 2000 - lost
    again, _ = await delivered_set(seed=7)
    assert again == first
    other, _ = await delivered_set(seed=8)
    assert other != first


async def test_duplicates_arrive_twice(autojump_clock: trio.testing.MockClock) -> None:
    net, a, b = pair(LinkProfile(latency=0.1, duplicate=0.5))
    async with running(a, b):
        for i in range(200):
            await a.send(B, bytes([i]))
        dup = a.counters()["duplicated"]
        got = await messages(b, 200 + dup)
        await trio.sleep(1)  # nothing more is in flight: a third copy would show here
        assert not [e for e in drain(b) if isinstance(e, MessageReceived)]
    assert 70 <= dup <= 130
    counts = [0] * 200
    for _, m in got:
        counts[m.data[0]] += 1
    assert sorted(set(counts)) == [1, 2] and counts.count(2) == dup
    assert net.counters()["duplicated"] == dup


async def test_jitter_reorders_and_stays_in_bounds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _, a, b = pair(LinkProfile(latency=0.1, jitter=0.5))
    async with running(a, b):
        start = trio.current_time()
        for i in range(50):
            await a.send(B, bytes([i]))
        got = await messages(b, 50)
    order = [m.data[0] for _, m in got]
    assert order != list(range(50)) and sorted(order) == list(range(50))
    assert all(0.1 <= at - start <= 0.6 for at, _ in got)


async def test_no_jitter_keeps_order(autojump_clock: trio.testing.MockClock) -> None:
    _, a, b = pair(LinkProfile(latency=0.1))
    async with running(a, b):
        for i in range(50):
            await a.send(B, bytes([i]))
        got = await messages(b, 50)
    assert [m.data[0] for _, m in got] == list(range(50))


async def test_partition_cuts_links_and_heal_restores_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    a, b, c = (net.transport(n, name) for n, name in ((A, "a"), (B, "b"), (C, "c")))
    net.line([A, B, C])
    async with running(a, b, c):
        assert [e.peer.node_id for e in drain(b) if isinstance(e, PeerSeen)] == [A, C]
        drain(a)
        drain(c)
        with pytest.raises(TransportError, match="no path"):
            await a.send(C, b"x")  # not a neighbour: one hop only

        net.partition([A, B], [C])
        assert drain(b) == [PeerLost(node_id=C)]
        assert drain(c) == [PeerLost(node_id=B)]
        assert drain(a) == []
        with pytest.raises(TransportError, match="no path"):
            await b.send(C, b"x")
        with pytest.raises(TransportError, match="no path"):
            await c.ping(B)
        assert b.counters()["no_path"] == 1
        assert [p.node_id for p in b.peers()] == [A]
        await a.send(B, b"inside")
        [(_, m)] = await messages(b, 1)
        assert m.data == b"inside"

        net.heal()
        [seen] = drain(b)
        assert isinstance(seen, PeerSeen) and seen.peer.node_id == C and seen.peer.name == "c"
        assert [e.peer.node_id for e in drain(c) if isinstance(e, PeerSeen)] == [B]
        await b.send(C, b"again")
        [(_, m)] = await messages(c, 1)
        assert m.data == b"again"


async def test_packets_in_flight_across_a_new_partition_are_cut(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net, a, b = pair(LinkProfile(latency=1.0))
    async with running(a, b):
        await a.send(B, b"doomed")
        net.partition([A], [B])
        await trio.sleep(2)  # past the arrival time
        net.heal()
        assert not [e for e in drain(b) if isinstance(e, MessageReceived)]
    assert net.counters()["cut"] == 1


async def test_unlink_emits_peer_lost(autojump_clock: trio.testing.MockClock) -> None:
    net, a, _ = pair(LinkProfile())
    drain(a)
    net.unlink(A, B)
    assert drain(a) == [PeerLost(node_id=B)]
    with pytest.raises(UsageError):
        net.unlink(A, B)


async def test_oversize_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    _, a, b = pair(LinkProfile(mtu=100))
    assert a.max_payload == 100
    async with running(a, b):
        with pytest.raises(TransportError, match="max_payload"):
            await a.send(B, bytes(101))
        await a.send(B, bytes(100))
        [(_, m)] = await messages(b, 1)
    assert len(m.data) == 100
    assert a.counters()["oversize"] == 1 and a.counters()["sent"] == 1


async def test_full_event_channel_drops_newest_without_blocking(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _, a, b = pair(LinkProfile(latency=0.1), capacity=3)
    drain(b)  # the PeerSeen of the link
    async with running(a, b):
        with trio.fail_after(1):
            for i in range(5):
                await a.send(B, bytes([i]))
            await trio.sleep(0.5)  # let all five land on the full channel
    assert [e.data for e in drain(b) if isinstance(e, MessageReceived)] == [b"\0", b"\1", b"\2"]
    assert b.counters()["dropped_events"] == 2
    assert b.counters()["received"] == 5


async def test_a_stopped_transport_receives_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net, a, b = pair(LinkProfile(latency=0.1))
    with pytest.raises(TransportError, match="not running"):
        await a.send(B, b"early")
    async with running(a):
        await a.send(B, b"to nobody")
        await trio.sleep(1)
    assert not [e for e in drain(b) if isinstance(e, MessageReceived)]
    assert net.counters()["dropped_offline"] == 1


async def test_ping_measures_the_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    _, a, b = pair(LinkProfile(latency=0.2))
    async with running(a, b):
        result = await a.ping(B)
        assert result.rtt == pytest.approx(0.4) and result.hops == 1
        [peer] = a.peers()
        assert peer.rtt == pytest.approx(0.4) and peer.capabilities == frozenset({"echo"})
        assert peer.hops == 1 and peer.name == "b"


async def test_ping_over_a_dead_link_times_out(autojump_clock: trio.testing.MockClock) -> None:
    _, a, b = pair(LinkProfile(latency=0.2, loss=1.0))
    async with running(a, b):
        start = trio.current_time()
        with pytest.raises(TransportError, match="timed out"):
            await a.ping(B)
        assert trio.current_time() - start == pytest.approx(5 * 1.2)
    assert a.counters()["ping_timeout"] == 1


async def test_announce_reaches_neighbours_as_peer_seen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _, a, b = pair(LinkProfile(latency=0.3))
    drain(b)
    async with running(a, b):
        start = trio.current_time()
        await a.announce()
        with trio.fail_after(10):
            event = await b.events.receive()
        assert isinstance(event, PeerSeen)
        assert event.peer.node_id == A and event.peer.name == "a"
        assert event.peer.last_heard == pytest.approx(start + 0.3)
        assert b.peers()[0].last_heard == pytest.approx(start + 0.3)


async def test_fifty_nodes_on_a_sparse_graph_talk_to_each_neighbour(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(seed=3)
    ids = [nid(i) for i in range(50)]
    nodes = {i: net.transport(i, f"n{n}") for n, i in enumerate(ids)}
    edges = net.random_sparse(ids, degree=3, profile=LinkProfile(latency=0.05, jitter=0.05))
    assert len(edges) == 75 and len(set(edges)) == 75
    async with running(*nodes.values()):
        for node_id, t in nodes.items():
            for peer in net.neighbours(node_id):
                await t.send(peer, b"hi from " + node_id)
        for node_id, t in nodes.items():
            neighbours = net.neighbours(node_id)
            got = await messages(t, len(neighbours))
            assert sorted(m.node_id for _, m in got) == sorted(neighbours)
            assert all(m.data == b"hi from " + m.node_id for _, m in got)
    assert all(net.neighbours(i) for i in ids)


def test_random_sparse_is_connected_and_seeded() -> None:
    def graph(seed: int) -> list[tuple[bytes, bytes]]:
        net = MemoryNetwork()
        ids = [nid(i) for i in range(30)]
        for i in ids:
            net.transport(i)
        return net.random_sparse(ids, degree=2.5, seed=seed)

    edges = graph(1)
    reached, frontier = {nid(0)}, [nid(0)]
    while frontier:
        here = frontier.pop()
        for a, b in edges:
            other = b if a == here else a if b == here else None
            if other is not None and other not in reached:
                reached.add(other)
                frontier.append(other)
    assert len(reached) == 30
    assert graph(1) == edges and graph(2) != edges


def test_graph_building_mistakes_are_usage_errors() -> None:
    net = MemoryNetwork()
    net.transport(A)
    with pytest.raises(UsageError):
        net.transport(A)
    with pytest.raises(UsageError):
        net.link(A, B)
    with pytest.raises(UsageError):
        net.link(A, A)
    net.transport(B)
    with pytest.raises(UsageError):
        net.partition([A, B], [B])
    with pytest.raises(UsageError):
        LinkProfile(loss=1.5)
