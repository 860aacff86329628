"""A pool of relays: one `Relay` task each, shared subscriptions, publish to all at once.

`publish` hands the event to every connected relay in the pool's own nursery and returns as soon
as one relay that is not demoted accepted it (or, when every connected relay is demoted, any
one), or when all have answered, or after `timeout`: a relay that refuses or answers slowly costs
only itself, and the others' answers are still counted when they arrive.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

import trio

from kai_mesh.core.errors import TransportError
from kai_mesh.core.nostr.event import Event
from transports.nostr._relay import OK_TIMEOUT, AuthSigner, EventHandler, Published, Relay


class RelayPool:
    """See the module docstring. `await nursery.start(pool.run)`."""

    def __init__(
        self,
        urls: Iterable[str],
        *,
        handler: EventHandler,
        signer: AuthSigner,
        rng: random.Random | None = None,
        ok_timeout: float = OK_TIMEOUT,
    ) -> None:
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self._changed = trio.Event()
        rng = rng or random.Random()
        self.relays = [
            Relay(
                url,
                handler=handler,
                signer=signer,
                subscriptions=self.subscriptions,
                rng=rng,
                ok_timeout=ok_timeout,
                on_change=self._on_change,
            )
            for url in dict.fromkeys(urls)
        ]
        self._ok_timeout = ok_timeout
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for relay in self.relays:
                nursery.start_soon(relay.run)
            task_status.started()
            await trio.sleep_forever()

    @property
    def connected(self) -> list[Relay]:
        return [r for r in self.relays if r.is_connected]

    async def wait_connected(self, count: int = 1) -> None:
        """Return once `count` relays (at most all of them) are connected."""
        count = min(count, len(self.relays))
        while len(self.connected) < count:
            await self._changed.wait()

    async def next_change(self) -> None:
        """Return at the next connect or disconnect of any relay."""
        await self._changed.wait()

    def _on_change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def subscribe(self, sub_id: str, flt: dict[str, Any]) -> None:
        """Keep `flt` under `sub_id` on every relay, now and after every reconnect."""
        self.subscriptions[sub_id] = flt
        for relay in self.connected:
            await relay.subscribe(sub_id, flt)

    async def publish(self, event: Event) -> list[Published]:
        """Publish to every connected relay; returns the answers in by the time one healthy
        relay accepted (see the module docstring).

        Raises:
            TransportError: no relay is connected.
        """
        relays = self.connected
        if not relays or self._nursery is None:
            raise TransportError("no Nostr relay is connected")
        length = len(json.dumps(["EVENT", event.to_json()], ensure_ascii=False).encode())
        healthy = {r.url for r in relays if not r.demoted} or {r.url for r in relays}
        answers: list[Published] = []
        enough = trio.Event()

        async def one(relay: Relay) -> None:
            answer = await relay.publish(event, length)
            answers.append(answer)
            if (answer.accepted and relay.url in healthy) or len(answers) == len(relays):
                enough.set()

        for relay in relays:
            self._nursery.start_soon(one, relay)
        with trio.move_on_after(self._ok_timeout + 1):
            await enough.wait()
        return list(answers)
