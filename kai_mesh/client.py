"""A blocking client of the node's control socket, for the CLI.

The CLI is synchronous and short-lived, so this is a plain `socket` client with no trio: one
request at a time, each answered before the next is sent. Frames arrive in the order the server
writes them, so event pushes may come between a request and its reply; `call` keeps them for
`events()`. A reply whose id is not the one awaited is a late answer to an earlier call that timed
out, and is dropped.

The exceptions both ends share live where both can import them without the node importing the
client: `ControlError` and `NodeNotRunning` in `kai_mesh.core.control.errors`, the socket path's
check in `kai_mesh.config.socket_path`.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import EllipsisType, TracebackType
from typing import Any, Final

from kai_mesh.config.socket_path import check_socket_path
from kai_mesh.core.control.errors import ControlError, NodeNotRunning
from kai_mesh.core.control.frames import (
    ErrorReply,
    FrameDecoder,
    FrameInvalid,
    FrameReceived,
    FrameTooLarge,
    PartsEnd,
    Push,
    Reply,
    ReplyPart,
    Request,
    encode_frame,
    join_parts,
    parse_server_message,
)
from kai_mesh.core.errors import KaiMeshError, Malformed

#: Replies may be larger than requests (a status dump, a log backlog), so the client accepts more.
CLIENT_MAX_FRAME: Final = 64 << 20
#: The largest result taken in parts (a state export of a big document).
CLIENT_MAX_RESULT: Final = 1 << 30


class ControlConnectionLost(KaiMeshError):
    """The node closed the control connection, or sent something that is not the protocol."""


class ControlTimeout(KaiMeshError, TimeoutError):
    """The node did not answer in time."""


class ControlClient:
    """A connection to a running node's control socket.

    Raises (from the constructor):
        NodeNotRunning: the socket file is missing or nothing listens on it.
        SocketPathTooLong: the path cannot be a Unix socket address.
        ControlTimeout: connecting took longer than `timeout`.
        OSError: anything else, e.g. PermissionError when the socket belongs to another user.
    """

    def __init__(
        self,
        path: Path,
        timeout: float | None = 10.0,
        *,
        max_frame: int = CLIENT_MAX_FRAME,
    ) -> None:
        check_socket_path(path)
        self.path = path
        self.timeout = timeout
        self._decoder = FrameDecoder(max_frame)
        self._pending: deque[Reply | ErrorReply | Push | ReplyPart | PartsEnd] = deque()
        self._events: deque[tuple[str, Any]] = deque()
        self._next_id = 1
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            raise NodeNotRunning(
                f"no kai-mesh node is running (control socket {str(path)!r}: {exc.strerror}); "
                "start one with `kai-mesh run`"
            ) from None
        except TimeoutError:
            self._sock.close()
            raise ControlTimeout(f"connecting to {str(path)!r} timed out") from None
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        self._sock.close()

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        timeout: float | EllipsisType | None = ...,
    ) -> Any:
        """Send one request and wait for its reply; `timeout=...` means the client's default.

        Raises:
            ControlError: the node answered with an error.
            ControlTimeout: no answer within the timeout.
            ControlConnectionLost: the node closed the connection or broke the protocol.
        """
        limit = self.timeout if isinstance(timeout, EllipsisType) else timeout
        deadline = None if limit is None else time.monotonic() + limit
        request_id = self._next_id
        self._next_id += 1
        # `parts`: a result too large for one of the node's frames comes in pieces (a node that
        # predates parts ignores the key and answers `response_too_large` as before).
        request = Request(id=request_id, method=method, params=params or {}, parts=True)
        self._send(encode_frame(request.to_wire()), deadline)
        parts: list[bytes] = []
        size = 0
        while True:
            message = self._receive(deadline)
            if isinstance(message, Push):
                self._events.append((message.topic, message.data))
            elif isinstance(message, ErrorReply) and message.id in (request_id, None):
                # An id-less error answers the frame we just sent: nothing else is in flight.
                raise ControlError(message.code, message.message)
            elif isinstance(message, Reply) and message.id == request_id:
                return message.result
            elif isinstance(message, ReplyPart) and message.id == request_id:
                size += len(message.data)
                if size > CLIENT_MAX_RESULT:
                    raise ControlConnectionLost(f"a reply over {CLIENT_MAX_RESULT} bytes")
                parts.append(message.data)
            elif isinstance(message, PartsEnd) and message.id == request_id:
                try:
                    return join_parts(parts, message)
                except Malformed as exc:
                    raise ControlConnectionLost(f"the node sent a bad reply: {exc}") from None

    def subscribe(self, topics: list[str]) -> None:
        """Ask for pushes on `topics`; read them with `events()`."""
        self.call("subscribe", {"topics": topics})

    def unsubscribe(self, topics: list[str]) -> None:
        """Stop pushes on `topics`."""
        self.call("unsubscribe", {"topics": topics})

    def events(self, timeout: float | None = None) -> Iterator[tuple[str, Any]]:
        """Yield `(topic, data)` pushes as they arrive, waiting up to `timeout` for each.

        Raises:
            ControlTimeout: no event arrived within `timeout`.
            ControlConnectionLost: the node closed the connection.
        """
        while True:
            while self._events:
                yield self._events.popleft()
            deadline = None if timeout is None else time.monotonic() + timeout
            message = self._receive(deadline)
            if isinstance(message, Push):
                yield message.topic, message.data

    def _send(self, frame: bytes, deadline: float | None) -> None:
        self._sock.settimeout(_remaining(deadline))
        try:
            self._sock.sendall(frame)
        except TimeoutError:
            raise ControlTimeout("sending to the node timed out") from None
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.EBADF):
                raise ControlConnectionLost("the node closed the control connection") from None
            raise

    def _receive(self, deadline: float | None) -> Reply | ErrorReply | Push | ReplyPart | PartsEnd:
        while not self._pending:
            self._sock.settimeout(_remaining(deadline))
            try:
                data = self._sock.recv(1 << 16)
            except TimeoutError:
                raise ControlTimeout("the node did not answer in time") from None
            except ConnectionResetError:
                data = b""
            if not data:
                raise ControlConnectionLost("the node closed the control connection")
            for event in self._decoder.feed(data):
                if isinstance(event, FrameReceived):
                    try:
                        self._pending.append(parse_server_message(event.value))
                    except Malformed as exc:
                        raise ControlConnectionLost(f"the node sent a bad message: {exc}") from None
                elif isinstance(event, FrameInvalid | FrameTooLarge):
                    raise ControlConnectionLost(f"the node sent a bad frame: {event}")
        return self._pending.popleft()


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    # Zero would switch the socket to non-blocking mode; a tiny positive value times out instead.
    return max(deadline - time.monotonic(), 1e-6)
