"""msgpack framing shared by every wire object.

Every object we put on a wire or on disk starts with a one-byte format number, then one msgpack
value. Decoding is strict: ext types, oversized containers and trailing bytes are refused, and
whatever the msgpack library raises on hostile input is mapped onto the `ProtocolError` family, so a
caller catches one kind of exception for "the bytes were bad".
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from kai_mesh.core.errors import Malformed, Truncated, UnknownVersion, UsageError


def pack(value: object) -> bytes:
    """Canonical msgpack: binary as bin, text as str, smallest integer encodings."""
    out: bytes = msgpack.packb(value, use_bin_type=True, strict_types=False)
    return out


_NO_EXT = "msgpack ext types are not allowed (the timestamp, type -1, is one)"


def _refuse_ext(code: int, data: bytes) -> object:
    raise Malformed(f"msgpack ext type {code} is not allowed")


def unpack_prefix(data: bytes, max_len: int) -> tuple[Any, int]:
    """Decode one msgpack value from the start of `data`; return it and the bytes it used.

    Raises:
        Truncated: the value does not end within `data`.
        Malformed: anything else wrong (bad types, ext types, containers larger than `max_len`).
    """
    unpacker = msgpack.Unpacker(
        raw=False,
        strict_map_key=False,
        ext_hook=_refuse_ext,
        # msgpack decodes ext type -1 as a Timestamp without calling ext_hook: an ext of any
        # length above 0 is refused here instead, timestamps included.
        max_ext_len=0,
        timestamp=0,
        max_buffer_size=max(len(data), 1),
        max_str_len=max_len,
        max_bin_len=max_len,
        max_array_len=max_len,
        max_map_len=max_len,
    )
    unpacker.feed(data)
    try:
        value = unpacker.unpack()
    except msgpack.OutOfData:
        raise Truncated("input ended inside a msgpack value") from None
    except Malformed:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        # ValueError: FormatError, StackError, bad UTF-8, an ext. TypeError: unhashable map keys.
        if "max_ext_len" in str(exc):
            raise Malformed(_NO_EXT) from None
        raise Malformed(f"not valid msgpack: {exc}") from None
    used: int = unpacker.tell()
    return value, used


def unpack_exact(data: bytes, max_len: int) -> Any:
    """Decode exactly one msgpack value that fills `data`; trailing bytes are `Malformed`."""
    value, used = unpack_prefix(data, max_len)
    if used != len(data):
        raise Malformed(f"{len(data) - used} unexpected bytes after the value")
    return value


def split_format(data: bytes, expected: int, what: str) -> bytes:
    """Check the leading format byte and return the rest."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Malformed(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise Truncated(f"{what}: empty input")
    if data[0] != expected:
        raise UnknownVersion(f"{what}: format {data[0]} is not known (this node speaks {expected})")
    return bytes(data[1:])


def digest(domain: str, *parts: bytes) -> bytes:
    """SHA-256 over a domain tag and the parts, for ids that must not collide across kinds."""
    h = hashlib.sha256(b"kai-mesh/v1/" + domain.encode() + b"\x00")
    for part in parts:
        h.update(part)
    return h.digest()


# Field checks shared by the wire codecs: `error` is UsageError when we encode (our mistake) and
# Malformed when we decode (their bytes).
FieldError = type[UsageError] | type[Malformed]


def checked_int(value: object, name: str, low: int, high: int, error: FieldError) -> int:
    """`value` if it is an int with low <= value < high (msgpack's true is a bool, not an int)."""
    if type(value) is not int or not low <= value < high:
        raise error(f"{name}: must be an integer {low} <= x < {high}")
    return value


def checked_bytes(value: object, name: str, size: int, error: FieldError) -> bytes:
    """`value` if it is exactly `size` bytes."""
    if type(value) is not bytes or len(value) != size:
        raise error(f"{name}: must be {size} bytes")
    return value
