"""What a node asks relays for, on real relays (nostr-sdk's LocalRelay, two of them, on ports
kept for this module). NIP-65 markers: a node publishes only to its write relays and
subscribes only on its read relays.

A writes to X and reads Y; B reads X and writes Y. They meet and exchange frames only because
each reads where the other writes; and a raw client's event that A's filters match, published
on X, reaches B (who reads X) but not A: A holds no subscription on X. Digest events: only the
other members', never one's own echo."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from kai_mesh.core.nostr.event import sign_event
from tests.transports.nostr.conftest import MESH, member, start_relay, stop_relay, trusted
from tests.transports.nostr.test_transport import meet, next_of, running
from transports.base import MessageReceived
from transports.nostr import NostrTransport
from transports.nostr.transport import KIND_DIGESTS, KIND_HELLO

PORTS = (47101, 47102)  # this module's relays (others' tests use free ports the OS picks)


@pytest.fixture
def two_relays() -> Iterator[tuple[str, str]]:
    procs = [start_relay("--port", str(port)) for port in PORTS]
    yield procs[0][1], procs[1][1]
    for proc, _ in procs:
        stop_relay(proc)


def node(seed: int, markers: dict[str, str], keys: dict[bytes, bytes]) -> NostrTransport:
    m = member(seed)
    return NostrTransport(
        relays=list(markers),
        markers=markers,
        nostr_secret=m.secrets.nostr_secret,
        mesh_id=MESH,
        node_id=m.node_id,
        member=m.record,
        trusted_keys=keys,
    )


async def test_write_only_and_read_only_relays(two_relays: tuple[str, str]) -> None:
    x, y = two_relays
    keys = trusted(member(1), member(2))
    ta = node(1, {x: "write", y: "read"}, keys)
    tb = node(2, {x: "read", y: "write"}, keys)
    a_x, a_y = ta.pool.relays
    b_x, _ = tb.pool.relays
    with trio.fail_after(30):
        async with running(ta, tb):
            await meet(ta, tb)
            await ta.send(tb.node_id, b"through X")
            got = await next_of(tb, MessageReceived)
            assert isinstance(got, MessageReceived) and got.data == b"through X"
            await tb.send(ta.node_id, b"through Y")
            back = await next_of(ta, MessageReceived)
            assert isinstance(back, MessageReceived) and back.data == b"through Y"

            # An event A's hello subscription would match, published on X by a stranger.
            bait = sign_event(
                os.urandom(32),
                created_at=int(time.time()),
                kind=KIND_HELLO,
                tags=[["m", ta.tag]],
                content="bait",
                aux=os.urandom(32),
            )
            before = b_x.stats.received
            async with open_websocket_url(x) as ws:
                await ws.send_message(json.dumps(["EVENT", bait.to_json()]))
                while b_x.stats.received == before:  # noqa: ASYNC110  # B, reading X, gets it
                    await trio.sleep(0.02)
            await trio.sleep(0.5)  # the relay would have sent it to A's X connection by now
    assert a_x.stats.received == 0 and a_x.stats.sent > 0  # X: written, never read
    assert a_y.stats.sent == 0 and a_y.stats.received > 0  # Y: read, never written
    states = {s["url"]: s for s in ta.describe()["relays"]}
    assert (states[x]["read"], states[x]["write"]) == (False, True)
    assert (states[y]["read"], states[y]["write"]) == (True, False)


async def test_our_own_digest_events_do_not_come_back(two_relays: tuple[str, str]) -> None:
    """The digest subscription names the bound members as authors: the relay sends each node
    the other's digest events, never its own (before, every one came back to its author)."""
    x, _ = two_relays
    keys = trusted(member(1), member(2))
    ta, tb = node(1, {x: "read"}, keys), node(2, {x: "read"}, keys)
    for t in (ta, tb):
        t.pool.relays[0].write = True  # read and write X (no marker)
    arrived: list[tuple[str, int]] = []  # (author, kind) of each EVENT the relay sent A

    def record(relay: object, sub_id: str, obj: Any) -> None:
        arrived.append((obj["pubkey"], obj["kind"]))
        ta._on_event(relay, sub_id, obj)  # type: ignore[arg-type]

    ta.pool.relays[0]._handler = record
    heard: list[bytes] = []
    ta.set_sync_digests(lambda: {1: b"a" * 8}, lambda node_id, d: heard.append(node_id))
    tb.set_sync_digests(lambda: {1: b"b" * 8}, lambda node_id, d: None)
    with trio.fail_after(30):
        async with running(ta, tb):
            await meet(ta, tb)
            for _ in range(3):  # a few digest events each way (the beacon's gap is 1 s)
                sent = ta.counters().get("digests_sent", 0)
                ta.sync_changed()
                tb.sync_changed()
                while ta.counters().get("digests_sent", 0) == sent:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            while not heard:  # noqa: ASYNC110
                await trio.sleep(0.05)
            await trio.sleep(0.5)  # an echo of A's last digest would be back by now
    assert ta.counters()["digests_sent"] >= 3 and tb.node_id in heard
    assert (tb.pubkey, KIND_DIGESTS) in arrived
    assert (ta.pubkey, KIND_DIGESTS) not in arrived
    assert ta.digest_filter() == {"kinds": [KIND_DIGESTS], "#m": [ta.tag], "authors": [tb.pubkey]}
