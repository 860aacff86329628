"""The TUI's one connection to the node, kept alive for as long as the TUI runs.

`NodeLink.run()` is a loop the app starts as a worker: connect, subscribe to every topic, fetch
what the screens show, then wait for a push or the next poll (uptime, last-heard and airtime move
without events). A push marks the parts it touches stale rather than fetching at once, and a
burst of pushes is let settle for `settle` seconds, so a storm costs a few fetches a second, not
one per event. When the connection ends (the node stopped or restarted) the view says so, and
the loop connects again with a capped backoff: the operator never restarts the TUI.

Nothing here knows Textual: it writes into a `NodeView` and the app repaints on its own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, Final

from tui.client import (
    AsyncControlClient,
    ControlConnectionLost,
    ControlError,
    ControlTimeout,
    NodeNotRunning,
)
from tui.model import NodeView

log = logging.getLogger(__name__)

TOPICS: Final = ["peers", "outbox", "messages", "agents", "logs", "state", "governance"]
#: What each topic's push makes stale (everything also refreshes `status`).
_STALE_BY_TOPIC: Final[dict[str, set[str]]] = {
    "peers": {"peers"},
    "outbox": {"outbox"},
    "messages": {"outbox"},
    "agents": {"agents"},
    "state": {"doc"},
    "governance": {"governance"},
    "logs": set(),
}
ALL_PARTS: Final = frozenset({"status", "peers", "agents", "outbox", "doc", "governance"})
#: Shown in the outbox: the newest rows, finished ones included.
OUTBOX_ROWS: Final = 50


class NotConnected(ControlConnectionLost):
    """An action was asked for while the node is not reachable."""


class NodeLink:
    """Keeps `view` in step with the node whose control socket is `socket`."""

    def __init__(
        self,
        socket: Path,
        view: NodeView,
        *,
        poll: float = 1.0,
        settle: float = 0.1,
        retry: tuple[float, float] = (0.25, 2.0),
    ) -> None:
        self.socket = socket
        self.view = view
        self.poll = poll
        self.settle = settle
        self.retry = retry
        self.client: AsyncControlClient | None = None
        self._stale: set[str] = set(ALL_PARTS)
        self._wake = asyncio.Event()
        self._ever_connected = False

    async def run(self) -> None:
        """Connect, follow, reconnect; returns only when cancelled."""
        delay = self.retry[0]
        while True:
            try:
                client = await AsyncControlClient.connect(self.socket, self._on_event)
            except (NodeNotRunning, ControlTimeout, OSError) as exc:
                self._down(f"the node is not running ({exc})")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry[1])
                continue
            delay = self.retry[0]
            self.client = client
            try:
                await self._follow(client)
            except (ControlConnectionLost, ControlTimeout) as exc:
                log.info("control connection lost: %s", exc)
            finally:
                self.client = None
                await client.close()
            self._down("the node stopped: waiting for it to come back")

    async def call(
        self, method: str, params: dict[str, Any] | None = None, wait: float = 15.0
    ) -> Any:
        """One request on the live connection (an action of a screen), then a refresh.

        Raises:
            NotConnected: the node is not reachable now.
            ControlError: the node answered with an error.
            ControlTimeout: no answer within `wait` seconds.
        """
        client = self.client
        if client is None:
            raise NotConnected(
                f"the node is not running; start it with `{self.view.start_command}`"
            )
        try:
            return await client.call(method, params, wait=wait)
        finally:
            self.refresh(*ALL_PARTS)

    def refresh(self, *parts: str) -> None:
        """Mark parts stale and wake the loop, which refetches them soon."""
        self._stale.update(parts)
        self._wake.set()

    def _on_event(self, topic: str, data: Any) -> None:
        self.view.record_event(topic, data)
        if topic == "lagged":  # the node dropped pushes we were too slow for: refetch everything
            self._stale.update(ALL_PARTS)
        else:
            self._stale.update(_STALE_BY_TOPIC.get(topic, set()))
        if self._stale:
            self._wake.set()

    def _down(self, problem: str) -> None:
        if self.view.connected or self.view.problem != problem:
            self.view.connected = False
            self.view.problem = problem
            self.view.touch()

    async def _follow(self, client: AsyncControlClient) -> None:
        await client.subscribe(TOPICS)
        if self._ever_connected:
            self.view.reconnects += 1
        self._ever_connected = True
        self._stale = set(ALL_PARTS)
        await self._fetch(client)
        self.view.connected = True
        self.view.problem = ""
        self.view.touch()
        closed = asyncio.ensure_future(client.closed.wait())
        try:
            while not client.closed.is_set():
                wake = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({wake, closed}, timeout=self.poll, return_when="FIRST_COMPLETED")
                wake.cancel()
                if client.closed.is_set():
                    return
                if self._wake.is_set():
                    await asyncio.sleep(self.settle)  # let a burst of pushes settle into one fetch
                self._wake.clear()
                self._stale.update({"status", "peers", "agents"})
                await self._fetch(client)
        finally:
            closed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closed

    async def _fetch(self, client: AsyncControlClient) -> None:
        stale, self._stale = self._stale, set()
        view = self.view
        stale.add("status")
        if "status" in stale:
            view.set_status(await client.call("status"))
        if "peers" in stale:
            view.peers = await _quiet(client, "peers", default=[])
        if "agents" in stale:
            view.agents = await _quiet(client, "agents", default=[])
        if "outbox" in stale and view.status.get("outbox") is not None:
            rows = await _quiet(client, "outbox", {"all": True}, default=[])
            view.outbox = rows[-OUTBOX_ROWS:]
        if "doc" in stale:
            shown = await _quiet(client, "state_show", {"path": ""}, default=None)
            view.doc = None if shown is None else shown.get("value")
        if "governance" in stale:
            view.proposals = await _quiet(client, "gov_proposals", default=[])
            view.gov_log = await _quiet(client, "gov_log", default=[])
        view.touch()


async def _quiet(
    client: AsyncControlClient, method: str, params: dict[str, Any] | None = None, *, default: Any
) -> Any:
    """A fetch whose error reply (a method this node lacks) leaves the part empty."""
    try:
        return await client.call(method, params)
    except ControlError as exc:
        log.debug("%s: %s", method, exc)
        return default
