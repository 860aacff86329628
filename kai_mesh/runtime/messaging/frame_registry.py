"""Which service handles each router frame type, and how much work one peer may start at once.

The router (`remote.RemoteRouter`) reads the type byte of every frame a transport hands it
(`core.messaging.frames`) and passes the frame to the handler the owning service registered here:
the state service registers STATE, governance GOVERNANCE, liveness SWIM and HEARTBEAT, the outbox
ACKS, the router itself ENVELOPE, DELIVER and ASK. A type nobody registered is refused and counted
by name (`frame.unregistered.<NAME>`), as is a broadcast of a type nobody takes.

Handlers are of two kinds:

- **inline** (`on`): called on the transport's pump; they must not block (a SWIM step, a
  heartbeat check).
- **task** (`on_task`): async work (a store commit, a sync round, an agent) in a task of its own,
  at most `per_peer` at once for one peer and frame type (`PeerTasks`).

Policy when a peer's tasks are full: the frame is **dropped and counted** (`busy.<name>`), never
queued. Every frame that goes through a task has a sender that repeats it — the outbox retries
DELIVER until acked (a dropped DELIVER is answered with a 9-byte BUSY, so that the sender's
outbox slows down instead of retrying at its usual pace: core.messaging.outbox),
anti-entropy repeats STATE and GOVERNANCE rounds, ASK backs off and asks
again, a requester asks for a reply it lacks and resends the request — so dropping bounds the
memory and tasks one member can make this node hold without losing anything acknowledged.
Broadcasts have no proven sender: they share one bucket (`BROADCAST_PEER`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from kai_mesh.core.messaging.frames import FRAME_NAMES
from transports.base import Transport

log = logging.getLogger(__name__)

Inline = Callable[[Transport, bytes, bytes], None]  # (transport, node id, frame)
Task = Callable[[Transport, bytes, bytes], Awaitable[None]]
BroadcastInline = Callable[[bytes], None]
BroadcastTask = Callable[[bytes], Awaitable[None]]
Contact = Callable[[bytes], None]

BROADCAST_PEER = b""  # the PeerTasks key of broadcasts: their sender is not proven


class PeerTasks:
    """Tasks started for what peers sent, at most `limit` per (peer, kind) at once.

    `start` returns False, and counts `busy.<kind>`, when that peer already has `limit` of that
    kind running (see the module docstring for why dropping is the policy)."""

    def __init__(self, count: Callable[[str], None]) -> None:
        self._count = count
        self._running: dict[tuple[bytes, str], int] = {}
        self.nursery: trio.Nursery | None = None  # set by the router when it runs

    def running(self, node_id: bytes, kind: str) -> int:
        return self._running.get((node_id, kind), 0)

    def start(
        self,
        node_id: bytes,
        kind: str,
        limit: int,
        work: Callable[[], Awaitable[None]],
    ) -> bool:
        key = (node_id, kind)
        if self.nursery is None or self._running.get(key, 0) >= limit:
            self._count(f"busy.{kind}")
            return False
        self._running[key] = self._running.get(key, 0) + 1
        self.nursery.start_soon(self._run, key, work)
        return True

    async def _run(self, key: tuple[bytes, str], work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        finally:
            left = self._running[key] - 1
            if left:
                self._running[key] = left
            else:
                del self._running[key]


@dataclass(frozen=True, slots=True)
class _Route:
    name: str
    inline: Inline | None
    task: Task | None
    per_peer: int


@dataclass(frozen=True, slots=True)
class _BroadcastRoute:
    name: str
    inline: BroadcastInline | None
    task: BroadcastTask | None
    limit: int


class FrameRegistry:
    """Frame type -> handler, filled by the services that own the types; see the module
    docstring. Registering a type twice is a programming error (`ValueError`)."""

    def __init__(self, tasks: PeerTasks, refuse: Callable[[str], None]) -> None:
        self.tasks = tasks
        self._refuse = refuse
        self._routes: dict[int, _Route] = {}
        self._broadcasts: dict[int, _BroadcastRoute] = {}
        #: Called with the node id of every peer a frame proved alive (not for heartbeats,
        #: which prove their sender by signature, in the liveness service).
        self.contact: list[Contact] = []

    def on(self, kind: int, handler: Inline) -> None:
        """`handler` runs inline for every frame of `kind` that arrives over a link."""
        self._add(kind, _Route(_name(kind), handler, None, 0))

    def on_task(self, kind: int, handler: Task, *, per_peer: int) -> None:
        """`handler` runs in a task for every frame of `kind`, at most `per_peer` at once."""
        if per_peer < 1:
            raise ValueError("per_peer must be at least 1")
        self._add(kind, _Route(_name(kind), None, handler, per_peer))

    def on_broadcast(
        self,
        kind: int,
        *,
        inline: BroadcastInline | None = None,
        task: BroadcastTask | None = None,
        limit: int = 1,
    ) -> None:
        """A broadcast of `kind` (sender unproven) goes to `inline`, or to `task` with at most
        `limit` running for all broadcasters together."""
        if (inline is None) == (task is None):
            raise ValueError("give exactly one of inline and task")
        if kind in self._broadcasts:
            raise ValueError(f"broadcast frame {_name(kind)} is registered twice")
        self._broadcasts[kind] = _BroadcastRoute(_name(kind), inline, task, limit)

    def _add(self, kind: int, route: _Route) -> None:
        if kind in self._routes:
            raise ValueError(f"frame {route.name} is registered twice")
        self._routes[kind] = route

    def registered(self) -> list[str]:
        return sorted(route.name for route in self._routes.values())

    def dispatch(self, transport: Transport, node_id: bytes, kind: int, data: bytes) -> None:
        route = self._routes.get(kind)
        if route is None:
            self._refuse(f"frame.unregistered.{_name(kind)}")
            return
        if route.inline is not None:
            route.inline(transport, node_id, data)
            return
        assert route.task is not None
        handler = route.task
        self.tasks.start(
            node_id, route.name, route.per_peer, lambda: handler(transport, node_id, data)
        )

    def dispatch_broadcast(self, kind: int | None, data: bytes) -> None:
        route = None if kind is None else self._broadcasts.get(kind)
        if route is None:
            self._refuse("broadcast.unknown")
            return
        if route.inline is not None:
            route.inline(data)
            return
        assert route.task is not None
        handler = route.task
        self.tasks.start(BROADCAST_PEER, route.name, route.limit, lambda: handler(data))


def _name(kind: int) -> str:
    return FRAME_NAMES.get(kind, f"0x{kind:02x}")
