"""A hostile relay for tests: a websocket proxy in front of a real relay that drops, duplicates,
reorders, delays, replays old events, rewrites content and signatures, and sends garbage.

Seeded, so a failure can be replayed. What it does to each EVENT the relay hands a client (and,
for drops, to each EVENT a client publishes) is counted in `done`.
"""

from __future__ import annotations

import json
import random
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

GARBAGE = [
    "not json",
    "[]",
    '{"EVENT": 1}',
    '["EVENT"]',
    '["EVENT", "kai-in", {"id": "zz"}]',
    '["OK", 5]',
    '["EVENT", "kai-in", null]',
]


class HostileProxy:
    """`url = await nursery.start(proxy.serve)`; clients use `url` as their relay."""

    def __init__(self, upstream: str, seed: int = 1, *, drop: float = 0.1) -> None:
        self.upstream = upstream
        self.rng = random.Random(seed)
        self.drop = drop
        self.done: dict[str, int] = {}
        self._old: list[str] = []  # EVENT messages seen, for replays

    def _did(self, what: str) -> None:
        self.done[what] = self.done.get(what, 0) + 1

    async def serve(self, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, self._handle, "127.0.0.1", 0, None)
            task_status.started(f"ws://127.0.0.1:{server.port}")

    async def _handle(self, request: WebSocketRequest) -> None:
        client = await request.accept()
        authors: set[str] = set()  # keys this client published under: its own echoes
        try:
            async with open_websocket_url(self.upstream) as relay, trio.open_nursery() as n:
                n.start_soon(self._up, client, relay, n.cancel_scope, authors)
                n.start_soon(self._down, relay, client, n.cancel_scope, authors)
        except (ConnectionClosed, OSError):
            pass

    async def _up(
        self,
        client: WebSocketConnection,
        relay: WebSocketConnection,
        done: trio.CancelScope,
        authors: set[str],
    ) -> None:
        try:
            while True:
                text = await client.get_message()
                if text.startswith('["EVENT"'):
                    authors.add(str(json.loads(text)[1].get("pubkey")))
                if text.startswith('["EVENT"') and self.rng.random() < self.drop:
                    self._did("dropped_publish")
                    continue
                await relay.send_message(text)
        except ConnectionClosed:
            done.cancel()

    async def _down(
        self,
        relay: WebSocketConnection,
        client: WebSocketConnection,
        done: trio.CancelScope,
        authors: set[str],
    ) -> None:
        held: list[str] = []
        try:
            while True:
                text = await relay.get_message()
                for out in self._mutate(text, held, authors):
                    await client.send_message(out)
        except ConnectionClosed:
            done.cancel()

    def _mutate(self, text: str, held: list[str], authors: set[str]) -> list[str]:
        if not text.startswith('["EVENT"'):
            return [text]
        rng, out = self.rng, []
        if self._old and rng.random() < 0.15:
            out.append(rng.choice(self._old))
            self._did("replayed")
        self._old = [*self._old, text][-200:]
        roll = rng.random()
        if roll < self.drop:
            self._did("dropped")
        elif roll < self.drop + 0.15:
            out += [text, text]
            self._did("duplicated")
        elif roll < self.drop + 0.25:
            held.append(text)  # goes out after the next one: reordered
            self._did("reordered")
            return out
        elif roll < self.drop + 0.32:
            out.append(_rewrite(text, rng))
            self._did("rewritten")
            if str(json.loads(text)[2].get("pubkey")) not in authors:
                # Only these reach verification: a node drops its own echo unverified.
                self._did("rewritten_foreign")
            out.append(text)
        else:
            out.append(text)
        out += held
        held.clear()
        if rng.random() < 0.05:
            out.append(rng.choice(GARBAGE))
            self._did("garbage")
        return out


def _rewrite(text: str, rng: random.Random) -> str:
    msg: list[Any] = json.loads(text)
    event = dict(msg[2])
    if rng.random() < 0.5:
        event["content"] = event["content"][::-1]  # the id no longer matches
    else:
        sig = event["sig"]
        event["sig"] = sig[:-2] + ("00" if sig[-2:] != "00" else "11")
    return json.dumps([msg[0], msg[1], event])
