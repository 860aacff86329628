"""The control socket: the daemon's local API, and the hub that pushes its events.

`ControlServer` listens on a Unix socket (mode 0600) and runs one task per connection. That task
reads frames (`kai_mesh.core.control.frames`) and starts each request in a task of its own, so a
slow request never holds up a quick one on the same connection; a semaphore bounds the requests
in flight, and when it is exhausted the reader stops reading, which pushes back on the client.
Replies and event pushes share the socket, so every write takes one lock. The built-in methods
(`ping`, `subscribe`, `unsubscribe`) are answered by the reader itself, so a subscribe's reply
always precedes its first event; every other method goes to the node's handler.

Hostile or broken input costs only its own connection: a body that is not a request gets an error
reply and the connection goes on; a frame longer than the limit gets an error reply and a close,
since the stream cannot be resynchronised. Each refusal is counted in `ControlServer.refused`.

Connections are bounded (`max_clients`), and one that neither asks nor subscribes cannot hold a
slot: it is closed after `idle_timeout` s without a request (nothing in flight, no topics), and
when every slot is taken a new client takes the slot of the connection idle longest. Only when
every connection is busy (a request in flight, or subscribed) is a new one refused with
`too_many_clients`. So idle connections never lock the owner's CLI out.

`EventHub` fans events out to subscribers through bounded queues that drop their oldest entries
when full, so a slow client (a TUI over a congested SSH link) never blocks the node: it gets a
`lagged` notice saying how many events it missed instead.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import trio

from kai_mesh.config.socket_path import SocketPathTooLong, check_socket_path
from kai_mesh.core.control.errors import ControlError, NodeNotRunning
from kai_mesh.core.control.frames import (
    BAD_PARAMS,
    BAD_REQUEST,
    DEFAULT_MAX_FRAME,
    FRAME_TOO_LARGE,
    INTERNAL,
    LAGGED_TOPIC,
    RESPONSE_TOO_LARGE,
    TOO_MANY_CLIENTS,
    UNKNOWN_METHOD,
    BadRequest,
    ErrorReply,
    FrameDecoder,
    FrameInvalid,
    FrameReceived,
    FrameTooLarge,
    Push,
    Reply,
    Request,
    StreamTruncated,
    encode_frame,
    parse_request,
    split_result,
)
from kai_mesh.core.errors import Oversize, UsageError

__all__ = [
    "ControlError",
    "ControlServer",
    "EventHub",
    "Handler",
    "NodeNotRunning",
    "SocketPathTooLong",
    "Subscription",
]

logger = logging.getLogger(__name__)

#: `(method, params) -> result`. Raise `ControlError` to send an error reply; raise
#: `ControlError(UNKNOWN_METHOD, ...)` for a method the node does not have.
Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]

_TMP_SUFFIX: Final = ".new"
_READ_SIZE: Final = 1 << 16
#: How long a refused extra client may take to read its error reply.
_REFUSE_SEND_SECONDS: Final = 1.0
#: How long one write may wait for a client that does not read before the connection is closed.
_WRITE_SECONDS: Final = 10.0
_ACCEPT_RETRY_SECONDS: Final = 0.1
#: How long a connection that neither asks nor subscribes is kept.
IDLE_SECONDS: Final = 60.0
#: Longest error message sent (characters): one naming hostile input must not echo all of it.
MAX_ERROR_MESSAGE: Final = 1024
# Out of file descriptors or memory: wait and accept again, as trio.serve_listeners does.
_ACCEPT_RESOURCE_ERRNOS: Final = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class Subscription:
    """One subscriber's topics and its bounded queue of events waiting to be sent."""

    def __init__(self, hub: EventHub, topics: Iterable[str], maxlen: int) -> None:
        self.topics: set[str] = set(topics)
        self.dropped_total = 0
        self._hub = hub
        self._maxlen = maxlen
        self._queue: deque[tuple[str, Any]] = deque()
        self._dropped = 0
        self._lot = trio.lowlevel.ParkingLot()

    def _put(self, topic: str, data: Any) -> None:
        if len(self._queue) >= self._maxlen:
            # Drop the oldest: a subscriber that catches up wants the present, not the backlog.
            self._queue.popleft()
            self._dropped += 1
            self.dropped_total += 1
            self._hub.dropped += 1
        self._queue.append((topic, data))
        self._lot.unpark_all()

    async def receive(self) -> tuple[str, Any]:
        """Wait for the next event; a `lagged` notice comes first if events were dropped."""
        while not self._queue and not self._dropped:
            await self._lot.park()
        if self._dropped:
            notice = (LAGGED_TOPIC, {"dropped": self._dropped})
            self._dropped = 0
            return notice
        return self._queue.popleft()

    def close(self) -> None:
        """Stop receiving events."""
        self._hub._subscriptions.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventHub:
    """Fan-out of events to subscribers, never blocking the publisher.

    Each subscriber has a queue of `queue_size` events; when it is full the oldest are dropped,
    counted in `dropped`, and the subscriber receives `{"event": "lagged", "data": {"dropped": n}}`
    before its next event, so a slow TUI never blocks the node.
    """

    def __init__(self, *, queue_size: int = 1024) -> None:
        if queue_size < 1:
            raise UsageError("queue_size must be at least 1")
        self.queue_size = queue_size
        #: Events dropped across all subscribers, for `kai-mesh status`.
        self.dropped = 0
        #: Events from other threads lost because trio was not running.
        self.lost_threadsafe = 0
        self._subscriptions: set[Subscription] = set()
        #: Called with every event published, subscribed or not (mesh events watch the node's
        #: own reports this way: runtime/events/sources.py).
        self.taps: list[Callable[[str, Any], None]] = []
        self._token: trio.lowlevel.TrioToken | None = None
        # Made outside trio, `bind` or `ControlServer.serve` supplies the token later.
        with contextlib.suppress(RuntimeError):
            self._token = trio.lowlevel.current_trio_token()

    def bind(self, token: trio.lowlevel.TrioToken) -> None:
        """Name the trio run that `publish_threadsafe` hands events to."""
        self._token = token

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, topics: Iterable[str] = ()) -> Subscription:
        """Add a subscriber; change its `topics` set at will; `close()` it when done."""
        subscription = Subscription(self, topics, self.queue_size)
        self._subscriptions.add(subscription)
        return subscription

    def topics(self) -> set[str]:
        """Every topic some subscriber follows now."""
        return {t for s in self._subscriptions for t in s.topics}

    def publish(self, topic: str, data: Any) -> None:
        """Queue an event for every subscriber of `topic`; never blocks. Trio thread only."""
        for tap in self.taps:
            try:
                tap(topic, data)
            except Exception:  # a tap's bug must not fail the code that reported
                logger.exception("event tap failed on %r", topic)
        for subscription in self._subscriptions:
            if topic in subscription.topics:
                subscription._put(topic, data)

    def publish_threadsafe(self, topic: str, data: Any) -> None:
        """`publish` from any thread (e.g. a logging handler). Never raises; events published
        while trio is not running are counted in `lost_threadsafe` and dropped."""
        token = self._token
        if token is None:
            self.lost_threadsafe += 1
            return
        try:
            token.run_sync_soon(self._publish_guarded, topic, data)
        except trio.RunFinishedError:
            self.lost_threadsafe += 1

    def _publish_guarded(self, topic: str, data: Any) -> None:
        # An exception escaping a run_sync_soon callback would crash the whole trio run.
        try:
            self.publish(topic, data)
        except Exception:
            logger.exception("publishing %r from another thread failed", topic)


class ControlServer:
    """Serves the control protocol (docs/control-protocol.md) on a Unix socket at `path`.

    `refused` counts refused input by reason and `clients` is the number of open connections;
    `internal_errors` counts handler failures other than `ControlError`.
    """

    def __init__(
        self,
        path: Path,
        handler: Handler,
        hub: EventHub,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_clients: int = 64,
        max_in_flight: int = 64,
        idle_timeout: float = IDLE_SECONDS,
    ) -> None:
        self.path = path
        self.handler = handler
        self.hub = hub
        self.max_frame = max_frame
        self.max_clients = max_clients
        self.max_in_flight = max_in_flight
        self.idle_timeout = idle_timeout
        self._connections: set[_Connection] = set()
        FrameDecoder(max_frame)  # validates the limit now rather than at the first connection
        self.refused: dict[str, int] = dict.fromkeys(
            (
                FRAME_TOO_LARGE,
                BAD_REQUEST,
                BAD_PARAMS,
                UNKNOWN_METHOD,
                TOO_MANY_CLIENTS,
                "truncated",
            ),
            0,
        )
        self.internal_errors = 0
        self.clients = 0
        self.idle_closed = 0  # connections closed for idleness, or to make room

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report ready through `task_status`, serve until cancelled, remove the socket.

        Raises:
            SocketPathTooLong: the path does not fit in a Unix socket address.
            OSError: the socket cannot be created or bound.
        """
        check_socket_path(self.path, spare=len(_TMP_SUFFIX))
        self.hub.bind(trio.lowlevel.current_trio_token())
        listener, ino = await self._bind()
        try:
            with listener:
                async with trio.open_nursery() as nursery:
                    task_status.started()
                    await self._accept_loop(listener, nursery)
        finally:
            self._remove_socket_file(ino)

    async def _bind(self) -> tuple[trio.socket.SocketType, int]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Bind under a temporary name, restrict it, then rename over the real one: the socket is
        # never reachable with looser permissions, and a stale file from a crashed daemon is
        # replaced atomically (a lock elsewhere ensures only one daemon per home).
        tmp = self.path.with_name(self.path.name + _TMP_SUFFIX)
        tmp.unlink(missing_ok=True)
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        try:
            await sock.bind(os.fspath(tmp))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            sock.listen(self.max_clients)
            ino = os.stat(self.path).st_ino
        except BaseException:
            sock.close()
            tmp.unlink(missing_ok=True)
            raise
        return sock, ino

    def _remove_socket_file(self, ino: int) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        # Only remove our own socket, not one a later daemon has bound since.
        if stat.S_ISSOCK(st.st_mode) and st.st_ino == ino:
            self.path.unlink(missing_ok=True)

    async def _accept_loop(self, listener: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            try:
                sock, _ = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RESOURCE_ERRNOS:
                    raise
                logger.warning("control socket cannot accept: %s; retrying", exc)
                await trio.sleep(_ACCEPT_RETRY_SECONDS)
                continue
            nursery.start_soon(self._serve_connection, trio.SocketStream(sock))

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            if self.clients >= self.max_clients and not self._make_room():
                self.refuse(TOO_MANY_CLIENTS)
                message = f"the node already serves {self.max_clients} control clients"
                frame = encode_frame(
                    ErrorReply(id=None, code=TOO_MANY_CLIENTS, message=message).to_wire()
                )
                with (
                    trio.move_on_after(_REFUSE_SEND_SECONDS),
                    contextlib.suppress(trio.BrokenResourceError),
                ):
                    await stream.send_all(frame)
                return
            self.clients += 1
            connection = _Connection(self, stream)
            self._connections.add(connection)
            try:
                await connection.run()
            finally:
                self._connections.discard(connection)
                self.clients -= 1

    def _make_room(self) -> bool:
        """Close the connection idle longest, if any is idle (it leaves at its next checkpoint:
        the new client may briefly make one more than `max_clients`)."""
        idle = [c for c in self._connections if c.idle() and not c.scope.cancel_called]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.last_active)
        self.idle_closed += 1
        logger.info("control: all %d clients connected; closing the one idle longest", self.clients)
        oldest.scope.cancel()
        return True


class _Connection:
    """One client: a reader, a task per request, and an event writer, sharing one send lock."""

    def __init__(self, server: ControlServer, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.decoder = FrameDecoder(server.max_frame)
        self.slots = trio.Semaphore(server.max_in_flight)
        self.send_lock = trio.StrictFIFOLock()
        self.subscription = server.hub.subscribe()
        self.scope = trio.CancelScope()
        self.last_active = trio.current_time()

    def idle(self) -> bool:
        """Neither a request in flight nor a subscription."""
        busy = self.slots.value < self.server.max_in_flight
        return not busy and not self.subscription.topics

    async def run(self) -> None:
        with self.subscription, self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._push_events)
                nursery.start_soon(self._close_when_idle)
                await self._read(nursery)
                # The client hung up or broke the stream: in-flight requests have nobody to
                # answer, so they are cancelled with the event writer.
                nursery.cancel_scope.cancel()

    async def _close_when_idle(self) -> None:
        while True:
            await trio.sleep_until(self.last_active + self.server.idle_timeout)
            if not self.idle():
                self.last_active = trio.current_time()  # busy: its idleness starts later
            elif trio.current_time() >= self.last_active + self.server.idle_timeout:
                self.server.idle_closed += 1
                logger.debug("control client idle for %s s; closing it", self.server.idle_timeout)
                self.scope.cancel()
                return

    async def _read(self, nursery: trio.Nursery) -> None:
        """Read and dispatch until EOF or a frame too large to skip."""
        while True:
            try:
                data = await self.stream.receive_some(_READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self.last_active = trio.current_time()
            events = self.decoder.feed(data) if data else self.decoder.feed_eof()
            for event in events:
                if isinstance(event, FrameReceived):
                    await self._dispatch(event.value, nursery)
                elif isinstance(event, FrameInvalid):
                    self.server.refuse(BAD_REQUEST)
                    await self._send_error(
                        None, BAD_REQUEST, f"frame is not msgpack: {event.error}"
                    )
                elif isinstance(event, FrameTooLarge):
                    self.server.refuse(FRAME_TOO_LARGE)
                    message = f"frame of {event.declared} bytes exceeds the limit of {event.limit}"
                    await self._send_error(None, FRAME_TOO_LARGE, message)
                    # Closing with unread input is safe on a Unix socket: unlike TCP, the reply
                    # already queued at the client is still delivered before the reset.
                    return
                elif isinstance(event, StreamTruncated):
                    self.server.refuse("truncated")
            if not data:
                return

    async def _dispatch(self, value: Any, nursery: trio.Nursery) -> None:
        try:
            request = parse_request(value)
        except BadRequest as exc:
            self.server.refuse(BAD_REQUEST)
            await self._send_error(exc.request_id, BAD_REQUEST, str(exc))
            return
        if request.method in _BUILTINS:
            await self._builtin(request)
            return
        # Blocks the reader while the connection has `max_in_flight` requests running.
        await self.slots.acquire()
        nursery.start_soon(self._handle, request)

    async def _builtin(self, request: Request) -> None:
        if request.method == "ping":
            await self._send_reply(request.id, "pong")
            return
        topics = request.params.get("topics")
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            self.server.refuse(BAD_PARAMS)
            await self._send_error(request.id, BAD_PARAMS, "topics must be a list of strings")
            return
        if request.method == "subscribe":
            self.subscription.topics.update(topics)
        else:
            self.subscription.topics.difference_update(topics)
        await self._send_reply(request.id, {"topics": sorted(self.subscription.topics)})

    async def _handle(self, request: Request) -> None:
        try:
            try:
                result = await self.server.handler(request.method, request.params)
            except ControlError as exc:
                if exc.code == UNKNOWN_METHOD:
                    self.server.refuse(UNKNOWN_METHOD)
                await self._send_error(request.id, exc.code, exc.message)
                return
            except Exception as exc:
                self.server.internal_errors += 1
                logger.exception("control method %r failed", request.method)
                await self._send_error(request.id, INTERNAL, f"{type(exc).__name__}: {exc}")
                return
            await self._send_reply(request.id, result, parts=request.parts)
        finally:
            self.slots.release()
            self.last_active = trio.current_time()

    async def _send_reply(self, request_id: int, result: Any, parts: bool = False) -> None:
        try:
            frame = encode_frame(
                Reply(id=request_id, result=result).to_wire(), self.server.max_frame
            )
        except Oversize as exc:
            if parts:  # the client takes it in pieces: one frame each, in order
                await self._send_parts(request_id, result)
                return
            logger.warning("control reply to request %d is too large: %s", request_id, exc)
            await self._send_error(request_id, RESPONSE_TOO_LARGE, str(exc))
            return
        except UsageError as exc:
            self.server.internal_errors += 1
            logger.error("control reply to request %d cannot be encoded: %s", request_id, exc)
            await self._send_error(request_id, INTERNAL, str(exc))
            return
        await self._send(frame)

    async def _send_parts(self, request_id: int, result: Any) -> None:
        """A result too large for one frame, as `ReplyPart`s then a `PartsEnd`. Each part goes
        out as the client reads it (`_send`'s bound applies per part); the parts of the
        encoding are held until the last is sent (twice the result's size, briefly)."""
        try:
            pieces = split_result(result, self.server.max_frame)
        except UsageError as exc:
            self.server.internal_errors += 1
            await self._send_error(request_id, INTERNAL, str(exc))
            return
        for piece in pieces:
            await self._send(encode_frame(replace(piece, id=request_id).to_wire()))
            await trio.lowlevel.checkpoint()  # others' replies and events go between parts

    async def _send_error(self, request_id: int | None, code: str, message: str) -> None:
        if len(message) > MAX_ERROR_MESSAGE:  # a reply must fit the client's max_frame too
            cut = len(message) - MAX_ERROR_MESSAGE
            message = f"{message[:MAX_ERROR_MESSAGE]}… ({cut} more characters)"
        await self._send(
            encode_frame(ErrorReply(id=request_id, code=code, message=message).to_wire())
        )

    async def _push_events(self) -> None:
        while True:
            topic, data = await self.subscription.receive()
            try:
                frame = encode_frame(Push(topic=topic, data=data).to_wire(), self.server.max_frame)
            except (UsageError, Oversize) as exc:
                logger.warning("dropping %r event that cannot be sent: %s", topic, exc)
                continue
            await self._send(frame)

    async def _send(self, frame: bytes) -> None:
        # Shielded, so a reply already computed still goes out when the node is shutting down
        # (the `shutdown` method's own reply); bounded, so a client that stops reading cannot
        # hold a task forever. A write cut short leaves the stream unusable: close it.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + _WRITE_SECONDS) as cs:
            async with self.send_lock:
                try:
                    await self.stream.send_all(frame)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    # The client is gone; nothing on this connection has anyone to talk to.
                    self.scope.cancel()
        if cs.cancelled_caught:
            logger.info("control client read nothing for %s s; closing it", _WRITE_SECONDS)
            self.scope.cancel()


_BUILTINS: Final = frozenset({"ping", "subscribe", "unsubscribe"})
