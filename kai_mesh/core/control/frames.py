"""Framing and message shapes of the control socket, without I/O.

A control-socket stream is a sequence of frames: a 4-byte big-endian length, then that many bytes
of one msgpack value. `FrameDecoder` is fed whatever bytes arrive, in any split, and returns
events in the h11 manner (bytes in, events out); `encode_frame` is the way back. The decoder
never raises on what it is fed: a body that is not msgpack is a `FrameInvalid` event, and the
stream stays in sync because its length was honest; a declared length above the limit is a
`FrameTooLarge` event, after which the decoder is broken (there is no way to find the next
frame) and ignores further input.

On top of frames sit four message shapes: `Request` (client to server), `Reply`, `ErrorReply`
and `Push` (server to client). `parse_request` and `parse_server_message` check a decoded value
against those shapes and raise `BadRequest` / `Malformed`; each message's `to_wire()` gives the
map to encode. docs/control-protocol.md is the prose version of this module.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Final

from kai_mesh.core.codec import pack, unpack_exact
from kai_mesh.core.errors import Malformed, Oversize, ProtocolError, UsageError

#: Default largest frame body, in bytes, either side accepts.
DEFAULT_MAX_FRAME: Final = 1 << 20
#: The header is an unsigned 32-bit length, so no limit can exceed this.
MAX_FRAME_LIMIT: Final = (1 << 32) - 1
_HEADER: Final = struct.Struct(">I")
HEADER_SIZE: Final = _HEADER.size

# Error codes the server itself sends. Handlers may send codes of their own.
FRAME_TOO_LARGE: Final = "frame_too_large"
BAD_REQUEST: Final = "bad_request"
BAD_PARAMS: Final = "bad_params"
UNKNOWN_METHOD: Final = "unknown_method"
INTERNAL: Final = "internal"
RESPONSE_TOO_LARGE: Final = "response_too_large"
TOO_MANY_CLIENTS: Final = "too_many_clients"

#: The topic of the notice a subscriber gets after the server dropped events it was too slow for.
LAGGED_TOPIC: Final = "lagged"


def _check_limit(max_frame: int) -> None:
    if isinstance(max_frame, bool) or not isinstance(max_frame, int):
        raise UsageError(f"max_frame must be an int, not {type(max_frame).__name__}")
    if not HEADER_SIZE <= max_frame <= MAX_FRAME_LIMIT:
        raise UsageError(f"max_frame must be between {HEADER_SIZE} and {MAX_FRAME_LIMIT}")


def _short(value: object, limit: int = 80) -> str:
    """A bounded repr, so a hostile value is never echoed back at length."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- framing -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class FrameReceived:
    """A whole frame arrived and its body is one msgpack value."""

    value: Any


@dataclass(frozen=True, kw_only=True, slots=True)
class FrameInvalid:
    """A whole frame arrived but its body is not one msgpack value; later frames are unaffected."""

    error: ProtocolError

    def __post_init__(self) -> None:
        if not isinstance(self.error, ProtocolError):
            raise TypeError("FrameInvalid.error must be a ProtocolError")


@dataclass(frozen=True, kw_only=True, slots=True)
class FrameTooLarge:
    """A header declared a body longer than the limit.

    Fatal: there is no way to find the next frame, so the decoder ignores all later input.
    """

    declared: int
    limit: int

    def __post_init__(self) -> None:
        if self.declared <= self.limit:
            raise ValueError("FrameTooLarge needs declared > limit")


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamTruncated:
    """The input ended inside a frame (returned by `FrameDecoder.feed_eof`)."""

    buffered: int

    def __post_init__(self) -> None:
        if self.buffered <= 0:
            raise ValueError("StreamTruncated needs buffered > 0")


FrameEvent = FrameReceived | FrameInvalid | FrameTooLarge | StreamTruncated


@dataclass(slots=True)
class FrameDecoder:
    """Turns a byte stream into frame events; pure, so it can be fuzzed.

    `feed(data)` appends bytes and returns the events of every frame now complete, in order.
    `feed_eof()` says the stream ended and returns `[StreamTruncated]` if a frame was cut short.
    Neither raises on any input. After a `FrameTooLarge` event, `broken` is true and all later
    input is dropped: the caller should report the error and close the stream.
    """

    max_frame: int = DEFAULT_MAX_FRAME
    _buffer: bytearray = field(default_factory=bytearray, init=False, repr=False)
    _broken: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        _check_limit(self.max_frame)

    @property
    def broken(self) -> bool:
        """True once a frame declared a length above the limit."""
        return self._broken

    @property
    def buffered(self) -> int:
        """Bytes held of a frame that is not complete yet."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[FrameEvent]:
        """Add received bytes; return the events of the frames they complete."""
        if self._broken:
            return []
        buf = self._buffer
        buf += data
        events: list[FrameEvent] = []
        pos = 0
        while len(buf) - pos >= HEADER_SIZE:
            (length,) = _HEADER.unpack_from(buf, pos)
            if length > self.max_frame:
                events.append(FrameTooLarge(declared=length, limit=self.max_frame))
                self._broken = True
                buf.clear()
                return events
            end = pos + HEADER_SIZE + length
            if len(buf) < end:
                break
            body = bytes(buf[pos + HEADER_SIZE : end])
            pos = end
            try:
                value = unpack_exact(body, self.max_frame)
            except ProtocolError as exc:
                events.append(FrameInvalid(error=exc))
            else:
                events.append(FrameReceived(value=value))
        # One deletion per feed keeps a large frame arriving in small pieces linear, not quadratic.
        del buf[:pos]
        return events

    def feed_eof(self) -> list[FrameEvent]:
        """The stream ended: report a frame cut short, if any, and forget it."""
        if self._broken or not self._buffer:
            return []
        event = StreamTruncated(buffered=len(self._buffer))
        self._buffer.clear()
        return [event]


def encode_frame(value: object, max_frame: int = MAX_FRAME_LIMIT) -> bytes:
    """Encode one value as a frame.

    Raises:
        UsageError: the value holds something msgpack cannot encode.
        Oversize: the encoded body is longer than `max_frame`.
    """
    try:
        body = pack(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"cannot encode as msgpack: {exc}") from None
    if len(body) > max_frame:
        raise Oversize(f"frame body of {len(body)} bytes exceeds the limit of {max_frame}")
    return _HEADER.pack(len(body)) + body


# --- messages ----------------------------------------------------------------------------------


class BadRequest(Malformed):
    """A frame decoded but is not a well-formed request.

    `request_id` is the request's id if that much was valid, else None.
    """

    reason = BAD_REQUEST

    def __init__(self, message: str, *, request_id: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


def _is_int(value: object) -> bool:
    # msgpack booleans decode to bool, which Python counts as int; an id must be a real integer.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """Call `method` with `params`; the reply carries the same `id`."""

    id: int
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    #: The client takes a result too large for one frame in parts (`ReplyPart`, `PartsEnd`).
    parts: bool = False

    def to_wire(self) -> dict[str, Any]:
        wire = {"id": self.id, "method": self.method, "params": self.params}
        if self.parts:
            wire["parts"] = True
        return wire


@dataclass(frozen=True, kw_only=True, slots=True)
class Reply:
    """The result of request `id`."""

    id: int
    result: Any

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "result": self.result}


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorReply:
    """Request `id` failed; `id` is None when the request's id could not be read."""

    id: int | None
    code: str
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplyPart:
    """A piece of the result of request `id`, too large for one frame; sent only to a request
    that said `parts: true`. The pieces, in order, are the msgpack encoding of the result."""

    id: int
    data: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "part": self.data}


@dataclass(frozen=True, kw_only=True, slots=True)
class PartsEnd:
    """The result of request `id` was the `count` `ReplyPart`s before, `size` bytes in all."""

    id: int
    count: int
    size: int

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "parts_end": {"count": self.count, "size": self.size}}


#: Room a part's frame needs besides its bytes: the map, the id and the bin header.
PART_OVERHEAD: Final = 32


def split_result(result: object, max_frame: int) -> list[ReplyPart | PartsEnd]:
    """`result` (already known not to fit one frame) as parts for request `id` 0: the caller
    sets the id. Raises `UsageError` if it cannot be encoded."""
    try:
        body = pack(result)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"cannot encode as msgpack: {exc}") from None
    step = max_frame - PART_OVERHEAD
    if step <= 0:
        raise UsageError(f"max_frame {max_frame} leaves no room for a part")
    out: list[ReplyPart | PartsEnd] = [
        ReplyPart(id=0, data=body[i : i + step]) for i in range(0, len(body), step)
    ]
    out.append(PartsEnd(id=0, count=len(out), size=len(body)))
    return out


def join_parts(parts: list[bytes], end: PartsEnd) -> Any:
    """The result the parts carry. Raises `Malformed` if they do not add up or decode."""
    body = b"".join(parts)
    if len(parts) != end.count or len(body) != end.size:
        raise Malformed(
            f"reply parts: {len(parts)} parts of {len(body)} bytes, "
            f"announced {end.count} of {end.size}"
        )
    # From the node the client asked: a big document may hold a map per byte or two.
    return unpack_exact(body, max(len(body), 1), containers=len(body))


@dataclass(frozen=True, kw_only=True, slots=True)
class Push:
    """An event the server sends unasked, on a topic the client subscribed to."""

    topic: str
    data: Any

    def to_wire(self) -> dict[str, Any]:
        return {"event": self.topic, "data": self.data}


def parse_request(value: Any) -> Request:
    """Check a decoded frame against the request shape. Keys other than the three are ignored.

    Raises:
        BadRequest: not a map, or `id`, `method` or `params` missing or of the wrong type.
    """
    if not isinstance(value, dict):
        raise BadRequest(f"a request must be a map, not {type(value).__name__}")
    request_id = value.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise BadRequest(f"request id must be an integer, got {_short(request_id)}")
    method = value.get("method")
    if not isinstance(method, str) or not method:
        raise BadRequest(
            f"method must be a non-empty string, got {_short(method)}", request_id=request_id
        )
    params = value.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise BadRequest("params must be a map with string keys", request_id=request_id)
    return Request(id=request_id, method=method, params=params, parts=value.get("parts") is True)


def parse_server_message(value: Any) -> Reply | ErrorReply | Push | ReplyPart | PartsEnd:
    """Check a decoded frame from the server against the reply and push shapes.

    Raises:
        Malformed: it is none of them.
    """
    if not isinstance(value, dict):
        raise Malformed(f"server message must be a map, not {type(value).__name__}")
    if "event" in value:
        topic = value["event"]
        if not isinstance(topic, str):
            raise Malformed(f"event topic must be a string, got {_short(topic)}")
        return Push(topic=topic, data=value.get("data"))
    if "id" not in value:
        raise Malformed("server message has neither id nor event")
    raw_id = value["id"]
    if raw_id is not None and not _is_int(raw_id):
        raise Malformed(f"reply id must be an integer or nil, got {_short(raw_id)}")
    if "error" in value:
        error = value["error"]
        if not isinstance(error, dict):
            raise Malformed("error must be a map")
        code, message = error.get("code"), error.get("message", "")
        if not isinstance(code, str) or not isinstance(message, str):
            raise Malformed("error code and message must be strings")
        return ErrorReply(id=raw_id, code=code, message=message)
    if raw_id is None:
        raise Malformed("a result reply needs an id")
    if "part" in value:
        if not isinstance(value["part"], bytes):
            raise Malformed("a reply part must be bytes")
        return ReplyPart(id=raw_id, data=value["part"])
    if "parts_end" in value:
        end = value["parts_end"]
        count, size = (end.get("count"), end.get("size")) if isinstance(end, dict) else (0, 0)
        if not (isinstance(count, int) and isinstance(size, int)):
            raise Malformed("parts_end: {count, size} as whole numbers")
        if not (_is_int(count) and _is_int(size) and count > 0 and size >= 0):
            raise Malformed("parts_end: {count, size} as whole numbers")
        return PartsEnd(id=raw_id, count=count, size=size)
    if "result" not in value:
        raise Malformed("reply has neither result nor error")
    return Reply(id=raw_id, result=value["result"])
