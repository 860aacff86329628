"""Frames through a real Nostr relay: latency against the relay's own raw round trip, and echoes.

Run from the repository root (needs the dev extra, for nostr-sdk's LocalRelay)::

    .venv/bin/python bench/nostr.py            # plain text, one figure a line
    .venv/bin/python bench/nostr.py --json     # one JSON object
    .venv/bin/python bench/nostr.py --count 300

One LocalRelay in its own process on loopback (kai_mesh/harness/relay.py), in the
same run:

- raw: one bare websocket client subscribed to a kind, publishing a pre-signed ephemeral event of
  that kind with a 100-byte content and timing until the relay hands it back — the relay's own
  round trip, with no signing, encryption or checks on our side;
- deliver: `NostrTransport.send` of a 100-byte frame from node A until node B's transport emits
  the `MessageReceived` (sign, NIP-44 encrypt, relay, id/signature check, decrypt);
- echo: A sends, B answers each frame on receipt; round trips per second, one at a time.
Medians and 95th percentiles, milliseconds.

Measured here: a relay's answer written right after another on one connection waits for the
client's delayed ACK (~40 ms: Nagle on the relay's side), which is what limits echoes, where the
OK of A's send and B's echo reach A in turn on A's one connection.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio
from trio_websocket import open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kai_mesh.core.nostr.event import sign_event
from tests.transports.nostr.conftest import (
    MESH,
    member,
    start_relay,
    stop_relay,
    trusted,
)
from transports.base import MessageReceived, PeerSeen
from transports.nostr import NostrTransport

PAYLOAD = 100


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {
        "median_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
    }


async def raw_round_trip(url: str, count: int) -> list[float]:
    """Publish on one connection, receive on another (as between two nodes): one connection
    for both would add the relay's Nagle delay (~40 ms here, see the docstring)."""
    secret = os.urandom(32)
    samples = []
    async with open_websocket_url(url) as sub, open_websocket_url(url) as pub:
        await sub.send_message(json.dumps(["REQ", "raw", {"kinds": [28999]}]))
        await trio.sleep(0.2)  # the REQ is in place before the first event
        for i in range(count):
            event = sign_event(
                secret,
                created_at=int(time.time()),
                kind=28999,
                tags=[["n", str(i)]],
                content="x" * PAYLOAD,
                aux=os.urandom(32),
            )
            text = json.dumps(["EVENT", event.to_json()])
            start = trio.current_time()
            await pub.send_message(text)
            while True:
                msg = json.loads(await sub.get_message())
                if msg[0] == "EVENT" and msg[2]["id"] == event.id:
                    break
            samples.append(trio.current_time() - start)
            await pub.get_message()  # its OK
    return samples


def node(m: Any, url: str, keys: dict[bytes, bytes]) -> NostrTransport:
    return NostrTransport(
        relays=[url],
        nostr_secret=m.secrets.nostr_secret,
        mesh_id=MESH,
        node_id=m.node_id,
        member=m.record,
        trusted_keys=keys,
    )


async def received(t: NostrTransport) -> MessageReceived:
    while True:
        event = await t.events.receive()
        if isinstance(event, MessageReceived):
            return event


async def through_transports(url: str, count: int) -> dict[str, Any]:
    a, b = member(1), member(2)
    keys = trusted(a, b)
    ta, tb = node(a, url, keys), node(b, url, keys)
    async with trio.open_nursery() as nursery:
        await nursery.start(ta.run)
        await nursery.start(tb.run)
        for t, other in ((ta, tb), (tb, ta)):
            while other.node_id not in {p.node_id for p in t.peers()}:
                event = await t.events.receive()
                assert isinstance(event, PeerSeen | MessageReceived)
        deliver = []
        for i in range(count):
            data = i.to_bytes(4, "big") + os.urandom(PAYLOAD - 4)
            start = trio.current_time()
            await ta.send(b.node_id, data)
            got = await received(tb)
            deliver.append(trio.current_time() - start)
            assert got.data == data

        async def echo() -> None:
            while True:
                got = await received(tb)
                await tb.send(a.node_id, got.data)

        nursery.start_soon(echo)
        start = trio.current_time()
        for i in range(count):
            await ta.send(b.node_id, i.to_bytes(4, "big") + bytes(PAYLOAD - 4))
            await received(ta)
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    return {"deliver": deliver, "echo_per_s": count / elapsed}


async def main(count: int) -> dict[str, Any]:
    proc, url = start_relay()
    try:
        raw = await raw_round_trip(url, count)
        ours = await through_transports(url, count)
    finally:
        stop_relay(proc)
    raw_s, deliver_s = summary(raw), summary(ours["deliver"])
    return {
        "count": count,
        "payload_bytes": PAYLOAD,
        "raw_round_trip": raw_s,
        "publish_to_deliver": deliver_s,
        "overhead_median_ms": round(deliver_s["median_ms"] - raw_s["median_ms"], 3),
        "echo_round_trips_per_s": round(ours["echo_per_s"], 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = trio.run(main, args.count)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
