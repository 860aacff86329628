"""Messages between nodes: the remote router over the simulated transport.

Two or three complete buses (real agent host with the inline `echo`) joined by
`transports.memory`, under trio's autojump clock: replies come back, names resolve to peers,
refusals are counted by reason and never raised.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from kai_mesh.core.mesh.address import AgentAddress, NodeRef, parse_address
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.envelope import EnvelopeDecoder, StandardMessage, encode
from kai_mesh.runtime.agents.host import AgentHost, AgentSpec
from kai_mesh.runtime.messaging.bus import Bus, new_message
from kai_mesh.runtime.messaging.remote import RemoteRouter
from transports.memory import LinkProfile, MemoryNetwork, MemoryTransport

MESH = b"m" * 32


@dataclass
class Peer:
    name: str
    node_id: bytes
    bus: Bus
    router: RemoteRouter
    transport: MemoryTransport


@asynccontextmanager
async def mesh(names: list[str], profile: LinkProfile) -> AsyncIterator[dict[str, Peer]]:
    net = MemoryNetwork(seed=1)
    secrets = {n: NodeSecrets.generate(os.urandom) for n in names}
    keys = {s.node_id: s.verify_key for s in secrets.values()}
    peers: dict[str, Peer] = {}
    async with trio.open_nursery() as nursery:
        for name in names:
            node_id = secrets[name].node_id
            host = AgentHost([AgentSpec(name="echo", source="entry:echo")], on_event=_ignore)
            bus = Bus(node_id=node_id, name=name, agents=host, queue_capacity=8, on_event=_ignore)
            transport = net.transport(node_id, name)
            decoder = EnvelopeDecoder(
                mesh_id=MESH, max_bytes=4096, max_ttl=3600, verify_key_for=keys.get
            )
            router = RemoteRouter(
                node_id=node_id,
                transports=[transport],
                decoder=decoder,
                local=bus.request,
                error_reply=bus.error_reply,
            )
            bus.remote = router.request
            await nursery.start(host.run)
            await nursery.start(bus.serve)
            await nursery.start(router.run)
            peers[name] = Peer(name, node_id, bus, router, transport)
        net.line([peers[n].node_id for n in names], profile)
        yield peers
        nursery.cancel_scope.cancel()


def _ignore(topic: str, data: object) -> None:
    pass


def ask(src: Peer, to: str, payload: object = None, intent: str = "echo") -> StandardMessage:
    return new_message(
        sender=AgentAddress(NodeRef(node_id=src.node_id), "cli"),
        to=parse_address(to),
        intent=intent,
        payload=payload,
        ttl=600,
        max_ttl=3600,
    )


async def test_echo_across_a_link_by_name_and_by_id(autojump_clock: object) -> None:
    async with mesh(["a", "b"], LinkProfile(latency=0.05)) as peers:
        a, b = peers["a"], peers["b"]
        start = trio.current_time()
        reply = await a.bus.request(ask(a, "kai://b/echo", {"x": 1}), 10)
        assert reply.intent == "reply" and reply.payload == {"x": 1}
        assert reply.sender.node.node_id == b.node_id
        assert trio.current_time() - start >= 0.1  # one round trip over the link
        by_id = await a.bus.request(ask(a, f"kai://{b.node_id.hex()}/echo", 7), 10)
        assert by_id.payload == 7
        refused = await a.bus.request(ask(a, "kai://b/echo", intent="shout"), 10)
        assert refused.intent == "error" and refused.payload["code"] == "unknown_intent"
        assert a.router.counters["replies"] == 3 and b.router.counters["received"] == 3


async def test_unknown_node_and_unreachable_node(autojump_clock: object) -> None:
    async with mesh(["a", "b", "c"], LinkProfile(latency=0.01)) as peers:
        a = peers["a"]
        unknown = await a.bus.request(ask(a, "kai://zed/echo"), 10)
        assert unknown.payload["code"] == "unknown_node" and "b" in unknown.payload["message"]
        # c is not a's neighbour: the memory transport models one hop, so there is no route.
        far = await a.bus.request(ask(a, "kai://c/echo"), 10)
        assert far.payload["code"] == "unknown_node"


async def test_lost_reply_is_a_timeout_not_a_hang(autojump_clock: object) -> None:
    async with mesh(["a", "b"], LinkProfile(latency=0.01, loss=1.0)) as peers:
        a = peers["a"]
        reply = await a.bus.request(ask(a, "kai://b/echo", 1), 5)
        assert reply.payload["code"] == "timeout"


async def test_bad_envelopes_are_counted_by_reason(autojump_clock: object) -> None:
    async with mesh(["a", "b"], LinkProfile(latency=0.01)) as peers:
        a, b = peers["a"], peers["b"]
        await a.transport.send(b.node_id, b"\x09garbage")
        await a.transport.send(b.node_id, b"\x01\xc1")
        spoof = new_message(
            sender=AgentAddress(NodeRef(node_id=b"\x07" * 16), "cli"),
            to=parse_address("kai://b/echo"),
            intent="echo",
            payload=None,
            ttl=600,
            max_ttl=3600,
        )
        await a.transport.send(b.node_id, encode(spoof))
        genuine = ask(a, "kai://b/echo", 1)
        await a.transport.send(b.node_id, encode(genuine))
        await a.transport.send(b.node_id, encode(genuine))  # the same bytes again: a replay
        stray = b.bus.reply(genuine, "reply", 1)  # a reply nobody is waiting for
        await b.transport.send(a.node_id, encode(stray))
        await trio.sleep(1)
        assert b.router.refused == {
            "frame.unknown_version": 1,
            "envelope.malformed": 1,
            "envelope.spoofed_sender": 1,
            "envelope.replay": 1,
        }
        assert a.router.refused["envelope.unexpected_reply"] >= 1
        ok = await a.bus.request(ask(a, "kai://b/echo", 2), 10)  # b serves on, unharmed
        assert ok.payload == 2


# A lost reply or request is asked for (core.reply_asks) rather than waited out.


def _drop_first(peer: Peer, kind: int) -> list[bytes]:
    """Make `peer`'s transport lose the first frame of `kind` it sends; returns what it lost."""
    real = peer.transport.send
    lost: list[bytes] = []

    async def lossy(node_id: bytes, data: bytes) -> None:
        if data[0] == kind and not lost:
            lost.append(data)
            return
        await real(node_id, data)

    peer.transport.send = lossy  # type: ignore[method-assign]
    return lost


async def test_a_lost_reply_is_asked_for_and_sent_again(autojump_clock: object) -> None:
    async with mesh(["a", "b"], LinkProfile(latency=0.05)) as peers:
        a, b = peers["a"], peers["b"]
        lost = _drop_first(b, 0x01)
        start = trio.current_time()
        reply = await a.bus.request(ask(a, "kai://b/echo", {"x": 1}), 60)
        assert reply.payload == {"x": 1} and lost
        assert trio.current_time() - start < 10  # the first ask goes after 2 s, not the deadline
        assert a.router.counters["asks_sent"] == 1
        assert b.router.counters["replies_resent"] == 1
        assert b.router.counters["received"] == 1  # the agent ran once
        assert "requests_resent" not in a.router.counters


async def test_a_lost_request_is_sent_again_when_the_peer_never_got_it(
    autojump_clock: object,
) -> None:
    async with mesh(["a", "b"], LinkProfile(latency=0.05)) as peers:
        a, b = peers["a"], peers["b"]
        lost = _drop_first(a, 0x01)
        reply = await a.bus.request(ask(a, "kai://b/echo", 5), 60)
        assert reply.payload == 5 and lost
        assert a.router.counters["requests_resent"] == 1
        assert b.router.counters["received"] == 1
        assert "replies_resent" not in b.router.counters


async def test_a_slow_agent_is_asked_after_but_never_sent_the_request_twice(
    autojump_clock: object,
) -> None:
    async with mesh(["a", "b"], LinkProfile(latency=0.05)) as peers:
        a, b = peers["a"], peers["b"]
        served = 0
        fast = b.router.local

        async def slow(message: StandardMessage, within: float | None) -> StandardMessage:
            nonlocal served
            served += 1
            await trio.sleep(40)
            return await fast(message, within)

        b.router.local = slow
        start = trio.current_time()
        reply = await a.bus.request(ask(a, "kai://b/echo", "late"), 120)
        assert reply.payload == "late" and served == 1
        assert 40 <= trio.current_time() - start < 41  # the reply went at once when ready
        # Asks backed off (2, 4, 8, 16 s...): a handful, each told WORKING.
        assert 2 <= a.router.counters["asks_sent"] <= 5
        assert "requests_resent" not in a.router.counters
        assert "replies_resent" not in b.router.counters


async def test_a_request_the_peer_refuses_is_resent_a_bounded_number_of_times(
    autojump_clock: object,
) -> None:
    async with mesh(["a", "b"], LinkProfile(latency=0.05)) as peers:
        a, b = peers["a"], peers["b"]
        real = b.router._serve_request

        async def deaf(transport: object, node_id: bytes, message: object) -> None:
            pass  # b drops every request: neither served nor remembered as served

        b.router._serve_request = deaf  # type: ignore[method-assign,assignment]
        reply = await a.bus.request(ask(a, "kai://b/echo", 1), 120)
        assert reply.payload["code"] == "timeout"
        assert a.router.counters["requests_resent"] == 2
        b.router._serve_request = real  # type: ignore[method-assign]
