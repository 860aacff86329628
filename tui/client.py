"""An asyncio client of the node's control socket, for the TUI (Textual runs on asyncio).

The same protocol as the blocking `kai_mesh.client` (docs/control-protocol.md) and the same pure
frame codec (`kai_mesh.core.control.frames`), but concurrent: one reader task owns the socket's
read side, matches replies to waiting calls by id (the server answers requests in any order),
and hands every push to `on_event` synchronously, in arrival order. The callback must be cheap:
the TUI only records the event in its model and repaints later, on its own clock.

When the stream ends (the node stopped, or broke the protocol) every waiting call fails with
`ControlConnectionLost` and `closed` is set, which is how the TUI learns to reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from kai_mesh.client import CLIENT_MAX_FRAME, ControlConnectionLost, ControlTimeout
from kai_mesh.config.socket_path import check_socket_path
from kai_mesh.core.control.errors import ControlError, NodeNotRunning
from kai_mesh.core.control.frames import (
    ErrorReply,
    FrameDecoder,
    FrameInvalid,
    FrameReceived,
    FrameTooLarge,
    Push,
    Reply,
    Request,
    encode_frame,
    parse_server_message,
)
from kai_mesh.core.errors import Malformed

__all__ = [
    "AsyncControlClient",
    "ControlConnectionLost",
    "ControlError",
    "ControlTimeout",
    "NodeNotRunning",
]

EventCallback = Callable[[str, Any], None]
_READ_SIZE: Final = 1 << 16


class AsyncControlClient:
    """One connection to a running node. Build it with `await AsyncControlClient.connect(...)`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: EventCallback | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self._decoder = FrameDecoder(CLIENT_MAX_FRAME)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 1
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(
        cls, path: Path, on_event: EventCallback | None = None, wait: float = 5.0
    ) -> AsyncControlClient:
        """Connect to the socket at `path`.

        Raises:
            NodeNotRunning: no socket file, or nothing listens on it.
            SocketPathTooLong: the path cannot be a Unix socket address.
            ControlTimeout: connecting took longer than `wait` seconds.
        """
        check_socket_path(path)
        try:
            async with asyncio.timeout(wait):
                reader, writer = await asyncio.open_unix_connection(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NodeNotRunning(f"no node listens on {str(path)!r}: {exc.strerror}") from None
        except TimeoutError:
            raise ControlTimeout(f"connecting to {str(path)!r} timed out") from None
        return cls(reader, writer, on_event)

    async def call(
        self, method: str, params: dict[str, Any] | None = None, wait: float | None = 10.0
    ) -> Any:
        """Send one request and wait for its reply.

        Raises:
            ControlError: the node answered with an error.
            ControlTimeout: no answer within `wait` seconds (None: no limit).
            ControlConnectionLost: the connection ended before the answer.
        """
        if self.closed.is_set():
            raise ControlConnectionLost(self.close_reason or "the control connection is closed")
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        frame = encode_frame(Request(id=request_id, method=method, params=params or {}).to_wire())
        try:
            self._writer.write(frame)
            await self._writer.drain()
            async with asyncio.timeout(wait):
                return await future
        except TimeoutError:
            raise ControlTimeout(f"the node did not answer {method!r} in time") from None
        except (ConnectionError, BrokenPipeError):
            raise ControlConnectionLost("the node closed the control connection") from None
        finally:
            self._waiting.pop(request_id, None)

    async def subscribe(self, topics: list[str]) -> list[str]:
        """Ask for pushes on `topics`; they arrive through `on_event`."""
        result = await self.call("subscribe", {"topics": topics})
        return list(result.get("topics", []))

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        self._finish("closed by the client")
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await self._task
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    self._finish("the node closed the control connection")
                    return
                for event in self._decoder.feed(data):
                    if isinstance(event, FrameReceived):
                        self._dispatch(event.value)
                    elif isinstance(event, FrameInvalid | FrameTooLarge):
                        self._finish(f"the node sent a bad frame: {event}")
                        return
        except (ConnectionError, OSError) as exc:
            self._finish(f"the control connection failed: {exc}")
        except Malformed as exc:
            self._finish(f"the node sent a bad message: {exc}")

    def _dispatch(self, value: Any) -> None:
        message = parse_server_message(value)
        if isinstance(message, Push):
            if self._on_event is not None:
                self._on_event(message.topic, message.data)
            return
        future = self._waiting.get(message.id) if message.id is not None else None
        if future is None or future.done():
            return  # a late answer to a call that timed out
        if isinstance(message, ErrorReply):
            future.set_exception(ControlError(message.code, message.message))
        elif isinstance(message, Reply):
            future.set_result(message.result)

    def _finish(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ControlConnectionLost(reason))
