"""A pool of relays: one `Relay` task each, shared subscriptions, publish to all at once.

Each relay is read (subscribed on), written (published to) or both: NIP-65's markers
(`core.nostr.markers`), from `[nostr] relays`. A write-only relay gets no REQ at all, so the
relay sends it nothing but OKs; a read-only one is never published to.

`publish` hands the event to every connected write relay in the pool's own nursery and returns
as soon as one relay that is not demoted accepted it (or, when every connected relay is demoted,
any one), or when all have answered, or after `timeout`: a relay that refuses or answers slowly
costs only itself, and the others' answers are still counted when they arrive.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping
from typing import Any

import trio

from kai_mesh.core.errors import TransportError
from kai_mesh.core.nostr.event import Event
from kai_mesh.core.nostr.markers import reads, writes
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
        markers: Mapping[str, str] | None = None,
    ) -> None:
        markers = markers or {}
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
                read=reads(markers, url),
                write=writes(markers, url),
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

    @property
    def writers(self) -> list[Relay]:
        """The connected relays we publish to."""
        return [r for r in self.relays if r.is_connected and r.write]

    async def wait_connected(self, count: int = 1) -> None:
        """Return once `count` relays (at most all of them) are connected."""
        count = min(count, len(self.relays))
        while len(self.connected) < count:
            await self._changed.wait()

    async def wait_writable(self) -> None:
        """Return once a relay we publish to is connected (at once if the pool has none: a
        publish then says so)."""
        while not self.writers and any(r.write for r in self.relays):
            await self._changed.wait()

    async def next_change(self) -> None:
        """Return at the next connect or disconnect of any relay."""
        await self._changed.wait()

    def _on_change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def subscribe(self, sub_id: str, flt: dict[str, Any]) -> None:
        """Keep `flt` under `sub_id` on every read relay, now and after every reconnect (the
        same id again replaces the filter, as NIP-01 says a REQ does)."""
        self.subscriptions[sub_id] = flt
        for relay in self.connected:
            await relay.subscribe(sub_id, flt)

    async def publish(self, event: Event) -> list[Published]:
        """Publish to every connected write relay; returns the answers in by the time one
        healthy relay accepted (see the module docstring).

        Raises:
            TransportError: no write relay is connected.
        """
        relays = self.writers
        if not relays or self._nursery is None:
            raise TransportError("no Nostr relay we write to is connected")
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
