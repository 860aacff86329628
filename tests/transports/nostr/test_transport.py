"""Two NostrTransports exchanging frames through a real relay (nostr-sdk's LocalRelay, in its own
process on loopback): hellos bind members, frames cross both ways, stored frames wait for a node
that was away, NIP-42 relays are answered. Real time: each test is bounded by `fail_after`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from trio_websocket import open_websocket_url

from kai_mesh.core.errors import TransportError
from tests.transports.nostr.conftest import MESH, Member, member, trusted
from transports.base import MessageReceived, PeerSeen, Transport, TransportEvent
from transports.nostr import NostrTransport


def transport(
    m: Member, urls: list[str], keys: dict[bytes, bytes], *, gift_wrap: bool = False
) -> NostrTransport:
    return NostrTransport(
        relays=urls,
        nostr_secret=m.secrets.nostr_secret,
        mesh_id=MESH,
        node_id=m.node_id,
        member=m.record,
        trusted_keys=keys,
        gift_wrap=gift_wrap,
    )


@asynccontextmanager
async def running(*transports: NostrTransport) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        for t in transports:
            await nursery.start(t.run)
        yield nursery
        nursery.cancel_scope.cancel()


async def next_of(t: NostrTransport, kind: type[TransportEvent]) -> TransportEvent:
    while True:
        event = await t.events.receive()
        if isinstance(event, kind):
            return event


async def meet(a: NostrTransport, b: NostrTransport) -> None:
    for t, other in ((a, b), (b, a)):
        while other.node_id not in {p.node_id for p in t.peers()}:
            await next_of(t, PeerSeen)


def test_it_is_a_transport_that_stores_and_is_no_live_link() -> None:
    a = member(1)
    t: Transport = transport(a, [], trusted(a))
    assert t.abilities.relay_stores and t.abilities.store_and_forward
    assert not t.abilities.live_links


async def test_two_nodes_exchange_frames_through_a_relay(relay_url: str) -> None:
    a, b = member(1), member(2)
    keys = trusted(a, b)
    ta, tb = transport(a, [relay_url], keys), transport(b, [relay_url], keys)
    with trio.fail_after(20):
        async with running(ta, tb):
            await meet(ta, tb)
            payloads = [bytes([i]) * (1 + 997 * i) for i in range(20)] + [b"x" * ta.max_payload]
            for data in payloads:
                await ta.send(b.node_id, data)
            got = [await next_of(tb, MessageReceived) for _ in payloads]
            assert all(isinstance(g, MessageReceived) and g.node_id == a.node_id for g in got)
            assert sorted(g.data for g in got if isinstance(g, MessageReceived)) == sorted(payloads)
            await tb.send(a.node_id, b"back")
            reply = await next_of(ta, MessageReceived)
            assert isinstance(reply, MessageReceived) and reply.data == b"back"
    assert tb.counters()["received"] >= len(payloads)
    quiet = ("received", "sent", "own_echo")
    refused = {k: v for k, v in tb.counters().items() if k not in quiet}
    assert not any(refused.values()), refused


async def test_frames_past_a_relays_limit_go_as_chunks(relay_url: str) -> None:
    a, b = member(1), member(2)
    keys = trusted(a, b)
    ta, tb = transport(a, [relay_url], keys), transport(b, [relay_url], keys)
    # As if the relay's NIP-11 said so (LocalRelay has no NIP-11 document).
    ta.pool.relays[0].max_message_length = 6000
    with trio.fail_after(20):
        async with running(ta, tb):
            await meet(ta, tb)
            assert ta.event_plaintext() < 6000
            payloads = [bytes(range(256)) * 400, b"small", b"y" * ta.max_payload]
            for data in payloads:
                await ta.send(b.node_id, data)
            got = [await next_of(tb, MessageReceived) for _ in payloads]
            assert [g.data for g in got if isinstance(g, MessageReceived)] == payloads
            assert await ta.store_and_forward(b.node_id, b"s" * 20_000)
            stored = await next_of(tb, MessageReceived)
            assert isinstance(stored, MessageReceived) and stored.data == b"s" * 20_000
    assert ta.counters()["chunked"] == 3
    assert ta.pool.relays[0].stats.refused.get("too_large_for_relay", 0) == 0


async def test_send_refuses_unknown_nodes_and_oversize(relay_url: str) -> None:
    a, b = member(1), member(2)
    ta = transport(a, [relay_url], trusted(a, b))
    with trio.fail_after(10):
        async with running(ta):
            with pytest.raises(TransportError, match="not known"):
                await ta.send(b.node_id, b"hi")
            ta._keys[b.node_id] = b.record.nostr_public.hex()
            with pytest.raises(TransportError, match="frame is"):
                await ta.send(b.node_id, b"x" * (ta.max_payload + 1))


async def test_a_node_that_was_away_finds_stored_frames(relay_url: str) -> None:
    a, b = member(1), member(2)
    keys = trusted(a, b)
    ta = transport(a, [relay_url], keys)
    with trio.fail_after(30):
        async with running(ta):
            tb = transport(b, [relay_url], keys)
            async with running(tb):
                await meet(ta, tb)
            # b is gone; a leaves two frames with the relay.
            assert await ta.store_and_forward(b.node_id, b"while you were out 1")
            assert await ta.store_and_forward(b.node_id, b"while you were out 2")
            tb2 = transport(b, [relay_url], keys)
            async with running(tb2):
                got = {(await next_of(tb2, MessageReceived)).data for _ in range(2)}  # type: ignore[attr-defined]
                assert got == {b"while you were out 1", b"while you were out 2"}
    assert tb2.counters().get("held_unknown_key", 0) >= 1  # arrived before a's hello


async def test_nip42_relay(auth_relay_url: str) -> None:
    a, b = member(1), member(2)
    keys = trusted(a, b)
    ta, tb = transport(a, [auth_relay_url], keys), transport(b, [auth_relay_url], keys)
    with trio.fail_after(20):
        async with running(ta, tb):
            await meet(ta, tb)
            await ta.send(b.node_id, b"authenticated")
            got = await next_of(tb, MessageReceived)
            assert isinstance(got, MessageReceived) and got.data == b"authenticated"


async def test_a_dead_relay_costs_only_itself(relay_url: str) -> None:
    a, b = member(1), member(2)
    keys = trusted(a, b)
    dead = "ws://127.0.0.1:9"  # discard port: connection refused
    ta, tb = transport(a, [dead, relay_url], keys), transport(b, [relay_url, dead], keys)
    with trio.fail_after(20):
        async with running(ta, tb):
            await meet(ta, tb)
            await ta.send(b.node_id, b"still here")
            got = await next_of(tb, MessageReceived)
            assert isinstance(got, MessageReceived) and got.data == b"still here"
            states = {r["url"]: r for r in ta.describe()["relays"]}
            assert not states[dead]["connected"] and states[dead]["demoted"]
            assert states[relay_url]["connected"] and not states[relay_url]["demoted"]


async def test_gift_wrapped_frames_hide_their_sender_from_the_relay(relay_url: str) -> None:
    """With gift_wrap, frames (small, chunked, stored) arrive as before, and what the relay
    carries for them is kind 21059/1059 from one-time keys, with no mesh tag."""
    a, b = member(1), member(2)
    keys = trusted(a, b)
    ta = transport(a, [relay_url], keys, gift_wrap=True)
    tb = transport(b, [relay_url], keys, gift_wrap=True)
    ta.pool.relays[0].max_message_length = 8000  # chunks, as a relay's NIP-11 might ask
    with trio.fail_after(30):
        async with open_websocket_url(relay_url) as watcher, running(ta, tb):
            await watcher.send_message(json.dumps(["REQ", "w", {"kinds": [21059, 1059]}]))
            await meet(ta, tb)
            payloads = [b"small", bytes(range(256)) * 40]
            for data in payloads:
                await ta.send(b.node_id, data)
            got = [await next_of(tb, MessageReceived) for _ in payloads]
            assert sorted(g.data for g in got if isinstance(g, MessageReceived)) == sorted(payloads)
            assert all(isinstance(g, MessageReceived) and g.node_id == a.node_id for g in got)
            assert await ta.store_and_forward(b.node_id, b"kept")
            stored = await next_of(tb, MessageReceived)
            assert isinstance(stored, MessageReceived) and stored.data == b"kept"
            seen = []
            while len(seen) < 4:
                msg = json.loads(await watcher.get_message())
                if msg[0] == "EVENT":
                    seen.append(msg[2])
    senders = {e["pubkey"] for e in seen}
    assert not senders & {ta.pubkey, tb.pubkey}
    assert all(not any(t[0] == "m" for t in e["tags"]) for e in seen)
    assert ta.counters()["chunked"] == 1


async def test_a_relay_back_after_a_drop_gets_our_digests_at_once(relay_url: str) -> None:
    """Not at the next keepalive (an hour here): the other side hears at once that a gateway
    that was away is back, and what it lacks."""
    a, b = member(1), member(2)
    keys = trusted(a, b)
    ta = NostrTransport(
        relays=[relay_url],
        nostr_secret=a.secrets.nostr_secret,
        mesh_id=MESH,
        node_id=a.node_id,
        member=a.record,
        trusted_keys=keys,
        digest_interval=3600,
    )
    tb = transport(b, [relay_url], keys)
    heard: list[dict[int, bytes]] = []
    ta.set_sync_digests(lambda: {1: b"a" * 8}, lambda node_id, d: None)
    tb.set_sync_digests(lambda: {1: b"b" * 8}, lambda node_id, d: heard.append(d))
    with trio.fail_after(40):
        async with running(ta, tb):
            await meet(ta, tb)
            while not heard:  # noqa: ASYNC110 - the first publication, at start
                await trio.sleep(0.05)
            sent = ta.counters()["digests_sent"]
            relay = ta.pool.relays[0]
            await relay._ws.aclose()  # the connection drops; the pool reconnects (~10 s)
            while ta.counters()["digests_sent"] == sent:  # noqa: ASYNC110
                await trio.sleep(0.1)
            assert relay.stats.attempts == 2 and relay.is_connected
