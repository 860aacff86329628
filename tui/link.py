"""The TUI's one connection to the node, kept alive for as long as the TUI runs.

`NodeLink.run()` is a loop the app starts as a worker: connect, subscribe to every topic, fetch
what the screens show, then wait for a push or the next poll (uptime, last-heard and airtime move
without events, so `status`, `peers` and `agents` are refetched every `poll` seconds). A push
only marks the parts it touches stale; a burst of pushes is let settle for `settle` seconds, and
a part is refetched at most once every `gap` seconds, however many pushes name it. One loop does
every fetch, so at most one refetch per part is ever in flight. A storm of 100 events a second
thus costs about one fetch of each part it touches every `gap`, and the event loop stays free for
keys (bench/tui.py times key → repaint on a pty under such a storm). A `state` push that names
the paths this node wrote refetches those paths alone, not the whole document. When the
connection ends (the node stopped or restarted) the view says so, and the loop connects again
with a capped backoff: the operator never restarts the TUI.

Nothing here knows Textual: it writes into a `NodeView` and the app repaints on its own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
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
    "state": {"doc", "services"},
    "governance": {"governance"},
    "logs": set(),
}
ALL_PARTS: Final = frozenset(
    {"status", "peers", "agents", "outbox", "doc", "governance", "services"}
)
#: Refetched every poll: they move without events (uptime, last heard, airtime, counters, a
#: replica's health, which a node reports into the document it may not have synced yet).
POLLED: Final = frozenset({"status", "peers", "agents", "services"})
#: More paths than this in pending `state` pushes: refetch the whole document instead.
MAX_DOC_PATHS: Final = 16
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
        gap: float = 0.5,
        retry: tuple[float, float] = (0.25, 2.0),
    ) -> None:
        self.socket = socket
        self.view = view
        self.poll = poll
        self.settle = settle
        self.gap = gap
        self.retry = retry
        self.client: AsyncControlClient | None = None
        self._stale: set[str] = set(ALL_PARTS)
        #: Paths of the document named by `state` pushes since its last fetch.
        self._doc_paths: set[str] = set()
        #: When each part was last fetched (loop time), for `gap`.
        self._fetched_at: dict[str, float] = {}
        #: Calls made by part, for the tests and the bench: what a storm costs.
        self.fetches: dict[str, int] = {}
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
        """Mark parts stale and wake the loop, which refetches them soon (an operator's action:
        at once, without waiting out `gap`)."""
        self._stale.update(parts)
        for part in parts:
            self._fetched_at.pop(part, None)
        self._wake.set()

    def _on_event(self, topic: str, data: Any) -> None:
        self.view.record_event(topic, data)
        if topic == "lagged":  # the node dropped pushes we were too slow for: refetch everything
            self._stale.update(ALL_PARTS)
        elif topic == "state" and (paths := _paths_of(data)) is not None:
            self._doc_paths.update(paths)
            if len(self._doc_paths) > MAX_DOC_PATHS:
                self._stale.add("doc")
            if any(p.split("/", 1)[0] == "services" for p in paths):
                self._stale.add("services")
        else:
            self._stale.update(_STALE_BY_TOPIC.get(topic, set()))
        if self._stale or self._doc_paths:
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
        self._doc_paths = set()
        self._fetched_at = {}
        await self._fetch(client)
        self.view.connected = True
        self.view.problem = ""
        self.view.touch()
        closed = asyncio.ensure_future(client.closed.wait())
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self.poll
        try:
            while not client.closed.is_set():
                wait = max(0.0, min(next_poll, self._next_due()) - loop.time())
                wake = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({wake, closed}, timeout=wait, return_when="FIRST_COMPLETED")
                wake.cancel()
                if client.closed.is_set():
                    return
                if self._wake.is_set():
                    await asyncio.sleep(self.settle)  # let a burst of pushes settle into one fetch
                    self._wake.clear()
                if loop.time() >= next_poll:
                    self._stale.update(POLLED)
                    next_poll = loop.time() + self.poll
                await self._fetch(client)
        finally:
            closed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closed

    def _due(self, part: str, now: float) -> float:
        """When `part` may be fetched again (`gap` after its last fetch)."""
        return self._fetched_at.get(part, -self.gap) + self.gap

    def _next_due(self) -> float:
        """The earliest time a stale part may be fetched (infinity if none is stale)."""
        pending = set(self._stale) | ({"doc"} if self._doc_paths else set())
        now = asyncio.get_running_loop().time()
        return min((self._due(p, now) for p in pending), default=float("inf"))

    async def _fetch(self, client: AsyncControlClient) -> None:
        """Fetch the stale parts that are due; the others stay stale for a later round."""
        now = asyncio.get_running_loop().time()
        pending = set(self._stale) | ({"doc"} if self._doc_paths else set())
        ready = {p for p in pending if self._due(p, now) <= now}
        if not ready:
            return
        whole_doc = "doc" in self._stale
        self._stale -= ready
        for part in ready:
            self._fetched_at[part] = now
            self.fetches[part] = self.fetches.get(part, 0) + 1
        view = self.view
        if "status" in ready:
            view.set_status(await client.call("status"))
        if "peers" in ready:
            view.set_peers(await _quiet(client, "peers", default=[]), now=time.time())
        if "agents" in ready:
            view.agents = await _quiet(client, "agents", default=[])
        if "outbox" in ready and view.status.get("outbox") is not None:
            rows = await _quiet(client, "outbox", {"all": True}, default=[])
            view.outbox = rows[-OUTBOX_ROWS:]
        if "doc" in ready:
            paths, self._doc_paths = self._doc_paths, set()
            await self._fetch_doc(client, None if whole_doc else paths)
        if "services" in ready:
            listed = await _quiet(client, "services_list", default={})
            view.services = list(listed.get("services") or []) if isinstance(listed, dict) else []
        if "governance" in ready:
            view.proposals = await _quiet(client, "gov_proposals", default=[])
            view.gov_log = await _quiet(client, "gov_log", default=[])
        view.touch()

    async def _fetch_doc(self, client: AsyncControlClient, paths: set[str] | None) -> None:
        """The whole document (`paths` None, or nothing fetched yet), else only `paths`,
        patched into the copy held. A path that cannot be patched refetches the whole: one
        whose parent is not held, and one deleted (`state_show` refuses a missing path)."""
        view = self.view
        if paths is not None and isinstance(view.doc, dict):
            doc = copy.deepcopy(view.doc)  # a new value: screens compare it with what they drew
            for path in sorted(paths):
                shown = await _quiet(client, "state_show", {"path": path}, default=_MISSING)
                if shown is _MISSING or not _patch(doc, path.split("/"), shown.get("value")):
                    break
            else:
                view.doc = doc
                return
        self.fetches["doc_whole"] = self.fetches.get("doc_whole", 0) + 1
        shown = await _quiet(client, "state_show", {"path": ""}, default=None)
        view.doc = None if shown is None else shown.get("value")


_MISSING: Final[Any] = object()


def _paths_of(data: Any) -> list[str] | None:
    """The paths a `state` push names (this node's own writes), or None: refetch it all."""
    paths = data.get("paths") if isinstance(data, dict) else None
    if isinstance(paths, list) and paths and all(isinstance(p, str) and p for p in paths):
        return paths
    return None


def _patch(doc: dict[str, Any], path: list[str], value: Any) -> bool:
    """Put `value` at `path` in `doc`; False if a parent is not a map."""
    node: Any = doc
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return False
    node[path[-1]] = value
    return True


async def _quiet(
    client: AsyncControlClient, method: str, params: dict[str, Any] | None = None, *, default: Any
) -> Any:
    """A fetch whose error reply (a method this node lacks) leaves the part empty."""
    try:
        return await client.call(method, params)
    except ControlError as exc:
        log.debug("%s: %s", method, exc)
        return default
