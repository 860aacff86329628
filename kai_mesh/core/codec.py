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


#: Nesting of arrays and maps a decoder accepts by default: far deeper than any wire object
#: (governance values nest 8, state values 32), yet shallow enough that a consumer that recurses
#: (json, repr, a checker) never meets Python's recursion limit. msgpack's own limit is 1024.
MAX_DEPTH = 100


def max_containers(max_len: int) -> int:
    """Arrays and maps one value may hold in all, by default: one per 16 bytes of the limit, at
    least 1024. Bytes alone do not bound the work: a 1 MiB frame of a million empty lists took
    0.66 s to decode (a million allocations); 65,536 of them take about 50 ms."""
    return max(1024, max_len // 16)


def _counting(limit: int) -> tuple[Any, list[int]]:
    """A msgpack hook that refuses a value once it has more than `limit` arrays and maps, and
    the count so far."""
    seen = [0]

    def count(value: Any) -> Any:
        seen[0] += 1
        if seen[0] > limit:
            raise Malformed(f"more than {limit} arrays and maps in one value")
        return value

    return count, seen


def _check_depth(value: Any, limit: int) -> None:
    """Refuse `value` if its arrays and maps nest deeper than `limit` (no recursion here)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise Malformed(f"arrays and maps nest more than {limit} deep")
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, list | dict):
                stack.append((child, depth + 1))


def unpack_prefix(
    data: bytes, max_len: int, *, containers: int | None = None, depth: int = MAX_DEPTH
) -> tuple[Any, int]:
    """Decode one msgpack value from the start of `data`; return it and the bytes it used.
    At most `containers` arrays and maps in all (by default `max_containers(max_len)`), nested
    at most `depth` deep.

    Raises:
        Truncated: the value does not end within `data`.
        Malformed: anything else wrong (bad types, ext types, containers larger than `max_len`,
            too many or too deeply nested).
    """
    hook, seen = _counting(max_containers(max_len) if containers is None else containers)
    unpacker = msgpack.Unpacker(
        list_hook=hook,
        object_hook=hook,
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
    if seen[0] > depth:  # fewer containers cannot nest deeper
        _check_depth(value, depth)
    return value, used


def unpack_exact(
    data: bytes, max_len: int, *, containers: int | None = None, depth: int = MAX_DEPTH
) -> Any:
    """Decode exactly one msgpack value that fills `data`; trailing bytes are `Malformed`.
    `containers` and `depth` as for `unpack_prefix`."""
    value, used = unpack_prefix(data, max_len, containers=containers, depth=depth)
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
