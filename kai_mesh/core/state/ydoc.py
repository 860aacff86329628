"""Values in the mesh's shared Doc: what may be stored, and how to read, write and import them.

The doc (a pycrdt `Doc`, byte-compatible with Yjs) has three root Maps, `ROOTS`: `services`
(each `{"spec": {...}, "placement": [node id hex, ...]}`), `tasks` (task id -> spec) and
`shared`, a free area for agents. Members are not in the doc: they come from governance.

A path names a place in the doc, as text `"shared/notes/today"` or as a tuple of segments; it
goes through Maps only, and its first segment is a root.

Values are JSON-like and checked before they are written (`check_value`), because Yjs and pycrdt
have traps: pycrdt stores every int as a float (so `read` turns integral floats back into ints)
and panics at 2**64, so ints are limited to ±(2**53 - 1). A dict becomes a Map, a list an Array,
and the special dict `{"$text": s}` a Text. `read` gives a Text as its plain string;
`read(..., keep_text=True)` and `import_values` give it as `{"$text": s}`, so what they return can
be written back with `write` and stays a Text. (Text formatting and embeds are not kept.)

Writing a list item by item costs O(n) per item in pycrdt (quadratic in all), even through a
prelim `Array(list)`; lists up to `FORWARD_MAX` items are still written in order, which gives the
most compact update, and longer ones back to front, each item at index 0, which is linear.

`import_values` reads an update made by another Yjs program into plain values; the caller writes
them as a local transaction of its own node. Foreign structs are never applied to the mesh's doc.

`update_refs` reads what a Yjs v1 update adds (each client's clock range) and what it builds on
(the items named as origins, right origins and parents, and the items it deletes), without
applying it. The replica hands pycrdt only updates whose references the doc already holds: what
pycrdt shows of an update it must keep pending depends on the order updates arrived in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Doc, Map, Text

from kai_mesh.core.errors import Malformed, UsageError
from kai_mesh.core.mesh.address import NODE_ID_BYTES, check_name

ROOTS = ("services", "tasks", "shared")
MAX_SAFE_INT = 2**53 - 1
MAX_STRING_BYTES = 64 * 1024
MAX_KEY_BYTES = 256
MAX_DEPTH = 32  # containers from a root Map (counted) down to the deepest value
TEXT_KEY = "$text"
FORWARD_MAX = 512
SPEC = "spec"
PLACEMENT = "placement"

PathLike = str | Sequence[str]
_HEX = frozenset("0123456789abcdef")


def check_value(value: Any, *, path: str = "") -> None:
    """Raise `UsageError`, naming the path, unless `value` can be stored in the doc.

    Accepted: None, bool, int within ±(2**53 - 1), finite float, str of at most 64 KiB (UTF-8),
    list, dict with str keys (non-empty, no "/", at most 256 bytes), at most `MAX_DEPTH`
    containers deep, and `{"$text": str}` (a Text).
    """
    _check(value, path, MAX_DEPTH)


def _check(value: Any, path: str, budget: int) -> None:
    where = path or "the top level"
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            raise UsageError(
                f"integer at {where} is beyond ±(2**53 - 1), which Yjs cannot hold exactly: "
                "store larger numbers as strings"
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise UsageError(f"number at {where} is {value}: only finite numbers can be stored")
    elif isinstance(value, str):
        if problem := _str_problem(value, MAX_STRING_BYTES):
            raise UsageError(f"string at {where} {problem}")
    elif isinstance(value, list | dict):
        if budget <= 0:
            raise UsageError(f"value at {where} is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, list):
            for i, item in enumerate(value):
                _check(item, f"{path}[{i}]", budget - 1)
        elif TEXT_KEY in value:
            if len(value) != 1 or not isinstance(value[TEXT_KEY], str):
                raise UsageError(
                    f"{TEXT_KEY!r} at {where} marks a Text: use exactly {{{TEXT_KEY!r}: str}}"
                )
            _check(value[TEXT_KEY], path, budget)
        else:
            for key, item in value.items():
                if problem := _key_problem(key):
                    raise UsageError(f"key {key!r} at {where} {problem}")
                _check(item, f"{path}/{key}" if path else key, budget - 1)
    else:
        raise UsageError(
            f"value at {where} is a {type(value).__name__}, which is not JSON-like: "
            "use None, bool, int, float, str, list or dict"
        )


def _key_problem(key: Any) -> str | None:
    if not isinstance(key, str):
        return "is not a string"
    if not key or "/" in key:
        return "must be non-empty and contain no '/'"
    if key in (".", ".."):  # a key named '..' reads as a path part everywhere it is shown
        return "cannot be '.' or '..'"
    return _str_problem(key, MAX_KEY_BYTES)


def _str_problem(text: str, limit: int) -> str | None:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode (lone surrogate)"
    return f"is {size} bytes long; the limit is {limit}" if size > limit else None


def parse_path(text: str) -> tuple[str, ...]:
    """`"shared/notes/today"` -> `("shared", "notes", "today")`; `UsageError` if not a path."""
    if not isinstance(text, str):
        raise UsageError(f"a path is a string, got {type(text).__name__}")
    return _segments(text.split("/"), text)


def _segments(path: Sequence[str], shown: str) -> tuple[str, ...]:
    segments = tuple(path)
    if not segments or segments[0] not in ROOTS:
        raise UsageError(
            f"invalid path {shown!r}: it starts with one of {', '.join(ROOTS)}, "
            "as in shared/notes/today"
        )
    if len(segments) > MAX_DEPTH:
        raise UsageError(f"invalid path {shown!r}: more than {MAX_DEPTH} segments")
    for segment in segments[1:]:
        if problem := _key_problem(segment):
            raise UsageError(f"invalid path {shown!r}: segment {segment!r} {problem}")
    return segments


def _path(path: PathLike) -> tuple[str, ...]:
    if isinstance(path, str):
        return parse_path(path)
    return _segments(path, "/".join(map(str, path)))


def _root(doc: Doc[Any], name: str) -> Map[Any]:
    root: Map[Any] = doc.get(name, type=Map)
    return root


def _parent(doc: Doc[Any], segments: tuple[str, ...], *, create: bool) -> Map[Any]:
    """The Map holding the last segment; with `create`, missing Maps on the way are made."""
    node = _root(doc, segments[0])
    for i, key in enumerate(segments[1:-1], start=2):
        if key not in node:
            if not create:
                raise UsageError(f"no such path {'/'.join(segments[:i])!r}")
            node[key] = Map()
        child = node[key]
        if not isinstance(child, Map):
            raise UsageError(f"{'/'.join(segments[:i])!r} is not a map")
        node = child
    return node


def read(doc: Doc[Any], path: PathLike = (), *, keep_text: bool = False) -> Any:
    """The plain Python value at `path`, or `{root: dict}` for the whole doc (empty path).

    Maps become dicts, Arrays lists, Texts str (`{"$text": s}` with `keep_text`), and integral
    floats within ±(2**53 - 1) ints. Raises `UsageError` for a missing path, `Malformed` for
    content `write` could not have made (too deep, bytes, XML, sub-documents).
    """
    if not isinstance(path, str) and not path:
        return {name: _plain(_root(doc, name), name, MAX_DEPTH, keep_text) for name in ROOTS}
    segments = _path(path)
    if len(segments) == 1:
        return _plain(_root(doc, segments[0]), segments[0], MAX_DEPTH, keep_text)
    parent = _parent(doc, segments, create=False)
    if segments[-1] not in parent:
        raise UsageError(f"no such path {'/'.join(segments)!r}")
    budget = MAX_DEPTH - len(segments) + 1
    return _plain(parent[segments[-1]], "/".join(segments), budget, keep_text)


def _plain(value: Any, where: str, budget: int, keep_text: bool) -> Any:
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= MAX_SAFE_INT else value
    if isinstance(value, Text):
        return {TEXT_KEY: str(value)} if keep_text else str(value)
    if isinstance(value, Map | Array | dict | list) and budget <= 0:
        raise Malformed(f"value at {where} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, Map | dict):
        return {k: _plain(v, f"{where}/{k}", budget - 1, keep_text) for k, v in value.items()}
    if isinstance(value, Array | list):
        return [_plain(v, f"{where}[{i}]", budget - 1, keep_text) for i, v in enumerate(value)]
    raise Malformed(f"value at {where} is a {type(value).__name__}, which kai-mesh does not use")


def keys(doc: Doc[Any], path: PathLike) -> list[str]:
    """The keys of the Map at `path` (a root or deeper), without reading their values: a reader
    that skips most entries (finished tasks) does not convert the whole tree each time."""
    segments = _path(path)
    node: Any = _root(doc, segments[0])
    if len(segments) > 1:
        parent = _parent(doc, segments, create=False)
        node = parent.get(segments[-1])
    if not isinstance(node, Map):
        raise UsageError(f"{'/'.join(segments)!r} is not a map")
    return list(node.keys())


def write(doc: Doc[Any], path: PathLike, value: Any) -> None:
    """Store `value` (checked by `check_value`) at `path`, making missing Maps on the way.

    Runs in the caller's transaction if one is open, else in one of its own. The path has a
    root and at least one key; `UsageError` if a segment on the way is not a Map.
    """
    segments = _path(path)
    if len(segments) < 2:
        raise UsageError(f"cannot replace the root {segments[0]!r}: write under a key in it")
    _check(value, "/".join(segments), MAX_DEPTH - len(segments) + 1)
    with doc.transaction():
        parent = _parent(doc, segments, create=True)
        fills: list[tuple[Array[Any], list[Any]]] = []
        parent[segments[-1]] = _build(value, fills)
        while fills:  # long lists, back to front (see the module docstring)
            array, items = fills.pop()
            for item in reversed(items):
                array.insert(0, _build(item, fills))


def _build(value: Any, fills: list[tuple[Array[Any], list[Any]]]) -> Any:
    """A prelim pycrdt value; Arrays longer than FORWARD_MAX are left empty and queued to fill."""
    if isinstance(value, dict):
        if TEXT_KEY in value:
            return Text(value[TEXT_KEY])
        return Map({k: _build(v, fills) for k, v in value.items()})
    if isinstance(value, list):
        if len(value) <= FORWARD_MAX:
            return Array([_build(v, fills) for v in value])
        array: Array[Any] = Array()
        fills.append((array, value))
        return array
    return value


def delete(doc: Doc[Any], path: PathLike) -> None:
    """Remove the value at `path` (root and at least one key); `UsageError` if there is none."""
    segments = _path(path)
    if len(segments) < 2:
        raise UsageError(f"cannot delete the root {segments[0]!r}")
    with doc.transaction():
        parent = _parent(doc, segments, create=False)
        if segments[-1] not in parent:
            raise UsageError(f"no such path {'/'.join(segments)!r}")
        del parent[segments[-1]]


def put_service(doc: Doc[Any], name: str, spec: dict[str, Any]) -> None:
    """Create or update service `name`'s spec; a new service gets an empty placement list."""
    check_name("service", name)
    if not isinstance(spec, dict):
        raise UsageError(f"a service spec is a dict, got {type(spec).__name__}")
    with doc.transaction():
        write(doc, ("services", name, SPEC), spec)
        service = _root(doc, "services")[name]
        if PLACEMENT not in service:
            service[PLACEMENT] = Array()


def place_service(doc: Doc[Any], name: str, node_id_hex: str) -> None:
    """Add a node (id as 32 hex digits) to service `name`'s placement, unless it is there."""
    with doc.transaction():
        placement = _placement(doc, name, node_id_hex)
        if node_id_hex not in list(placement):
            placement.append(node_id_hex)


def _placement(doc: Doc[Any], name: str, node_id_hex: str) -> Array[Any]:
    """Service `name`'s placement Array (made if missing); call it inside a transaction."""
    check_name("service", name)
    if not (
        isinstance(node_id_hex, str)
        and len(node_id_hex) == 2 * NODE_ID_BYTES
        and _HEX.issuperset(node_id_hex)
    ):
        raise UsageError(f"a node id is {2 * NODE_ID_BYTES} lower-case hex digits")
    service = _root(doc, "services").get(name)
    if not isinstance(service, Map):
        raise UsageError(f"no such service {name!r}")
    if not isinstance(service.get(PLACEMENT), Array):
        service[PLACEMENT] = Array()
    placement: Array[Any] = service[PLACEMENT]
    return placement


def services(doc: Doc[Any]) -> dict[str, Any]:
    """Name -> `{"spec": dict, "placement": [node id hex]}`; a node placed twice appears once."""
    result = dict(read(doc, ("services",)))
    for service in result.values():
        if isinstance(service, dict) and isinstance(service.get(PLACEMENT), list):
            service[PLACEMENT] = list(dict.fromkeys(service[PLACEMENT]))
    return result


def put_task(doc: Doc[Any], task_id: str, spec: dict[str, Any]) -> None:
    """Create or replace task `task_id`."""
    if not isinstance(spec, dict):
        raise UsageError(f"a task spec is a dict, got {type(spec).__name__}")
    write(doc, ("tasks", task_id), spec)


def tasks(doc: Doc[Any]) -> dict[str, Any]:
    """Task id -> spec."""
    return dict(read(doc, ("tasks",)))


def shared(doc: Doc[Any]) -> dict[str, Any]:
    """The agents' shared area, Texts as plain strings."""
    return dict(read(doc, ("shared",)))


def export_update(doc: Doc[Any]) -> bytes:
    """The whole doc as one Yjs v1 update, which `Y.applyUpdate` of the `yjs` package loads."""
    return doc.get_update()


def import_values(update: bytes) -> dict[str, Any]:
    """The values of the `ROOTS` in a Yjs v1 update made by another program, ready for `write`.

    A root the update lacks is `{}`; Texts come back as `{"$text": s}` so that writing them
    keeps them Texts (so does a Map or plain object that is exactly `{"$text": str}`).
    Raises `Malformed` for bytes that are not an update, and for content `check_value` refuses.
    """
    if not isinstance(update, bytes):
        raise UsageError(f"an update is bytes, got {type(update).__name__}")
    scratch: Doc[Any] = Doc()
    try:
        scratch.apply_update(update)
        values = {name: _plain(_root(scratch, name), name, MAX_DEPTH, True) for name in ROOTS}
    except (KeyboardInterrupt, SystemExit, GeneratorExit, Malformed):
        raise
    except BaseException as exc:  # ValueError, or pyo3's PanicException (a BaseException)
        raise Malformed(f"not a Yjs update: {type(exc).__name__}: {exc}") from None
    for name, value in values.items():
        try:
            check_value(value, path=name)
        except UsageError as exc:
            raise Malformed(f"update holds a value kai-mesh refuses: {exc}") from None
    return values


# What an update builds on ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpdateRefs:
    """A Yjs v1 update's shape: `items`, client -> (first clock, end clock) of the items it adds;
    `needs`, client -> the clock a doc must have reached for every item the update refers to
    (origins, right origins, parents, deleted items) to be there."""

    items: dict[int, tuple[int, int]]
    needs: dict[int, int]

    def lacks(self, clocks: dict[int, int]) -> int | None:
        """A client whose items a doc with state vector `clocks` lacks for this update to
        integrate at once (its own items must also start where the doc's end), or None."""
        for client, (start, _) in self.items.items():
            if start != clocks.get(client, 0):
                return client
        for client, need in self.needs.items():
            own = self.items.get(client)
            if need > (own[1] if own else clocks.get(client, 0)):
                return client
        return None


_TYPE_WITH_NAME = (3, 5)  # YXmlElement, YXmlHook: their type ref is followed by a name
_TYPE_REFS = 7  # Array, Map, Text, XmlElement, XmlFragment, XmlHook, XmlText


def update_refs(update: bytes) -> UpdateRefs:
    """Read `update` (Yjs v1: structs, then the delete set) for `UpdateRefs`.

    Raises:
        Malformed: not a v1 update; or one Yjs could not integrate whole even in a doc holding
            everything it names (a gap in its clocks, an item naming a later item of its own
            client); or one holding content kai-mesh never makes and this reader does not know
            (yrs's move and weak-link extensions).
    """
    reader = _Reader(update)
    items: dict[int, tuple[int, int]] = {}
    needs: dict[int, int] = {}

    def need(client: int, clock: int, before: tuple[int, int] | None = None) -> None:
        if before is not None and client == before[0] and clock >= before[1]:
            raise Malformed("an item in an update names a later item of its own client")
        needs[client] = max(needs.get(client, 0), clock + 1)

    for _ in range(reader.uint()):
        count, client = reader.uint(), reader.uint()
        start = clock = reader.uint()
        for _ in range(count):
            info = reader.byte()
            if info & 0x1F == 10:
                raise Malformed("an update with a gap in its clocks (a skip)")
            if info & 0x1F == 0:  # garbage-collected items: a length, nothing named
                clock += reader.uint()
                continue
            if info & 0x80:
                need(reader.uint(), reader.uint(), (client, clock))
            if info & 0x40:
                need(reader.uint(), reader.uint(), (client, clock))
            if not info & 0xC0:  # no origin to take the parent from: it is named
                if reader.uint() == 1:
                    reader.string()  # a root type's name
                else:
                    need(reader.uint(), reader.uint(), (client, clock))
                if info & 0x20:
                    reader.string()  # the key in a Map
            clock += _content_length(reader, info & 0x1F)
        if client in items:
            raise Malformed("an update lists a client twice")
        items[client] = (start, clock)
    for _ in range(reader.uint()):
        client = reader.uint()
        for _ in range(reader.uint()):
            clock, length = reader.uint(), reader.uint()
            if length:
                need(client, clock + length - 1)
    if reader.pos != len(update):
        raise Malformed("bytes after the end of an update")
    return UpdateRefs(items, needs)


def _content_length(reader: _Reader, kind: int) -> int:
    """Skip one item's content; its length in clocks (a string counts UTF-16 code units)."""
    if kind == 1:  # deleted
        return reader.uint()
    if kind == 2:  # JSON
        count = reader.uint()
        for _ in range(count):
            reader.string()
        return count
    if kind == 3:  # binary
        reader.skip(reader.uint())
    elif kind == 4:  # string
        return len(reader.string().encode("utf-16-le", "surrogatepass")) // 2
    elif kind == 5:  # embed
        reader.string()
    elif kind == 6:  # format: key, JSON value
        reader.string()
        reader.string()
    elif kind == 7:  # type
        ref = reader.uint()
        if ref >= _TYPE_REFS:
            raise Malformed(f"unknown type ref {ref} in an update")
        if ref in _TYPE_WITH_NAME:
            reader.string()
    elif kind == 8:  # Any values
        count = reader.uint()
        for _ in range(count):
            reader.any()
        return count
    elif kind == 9:  # sub-document: guid, options
        reader.string()
        reader.any()
    else:
        raise Malformed(f"unknown item content {kind} in an update")
    return 1


class _Reader:
    """lib0 decoding, only as far as skipping over values goes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise Malformed("an update ends early")
        self.pos += 1
        return self.data[self.pos - 1]

    def uint(self) -> int:
        value = shift = 0
        while (byte := self.byte()) & 0x80:
            value |= (byte & 0x7F) << shift
            shift += 7
            if shift > 63:
                raise Malformed("a number in an update is too long")
        return value | byte << shift

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise Malformed("an update ends early")
        self.pos += n

    def string(self) -> str:
        n = self.uint()
        start = self.pos
        self.skip(n)
        try:
            return self.data[start : self.pos].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise Malformed("a string in an update is not UTF-8") from None

    def any(self) -> None:
        """Skip one lib0 `Any` value; iterative, so no nesting depth can exhaust the stack."""
        stack = [(False, 1)]  # (inside an object: keys come first, values left to read)
        while stack:
            in_object, left = stack.pop()
            if not left:
                continue
            stack.append((in_object, left - 1))
            if in_object:
                self.skip(self.uint())
            kind = self.byte()
            if kind == 125:  # varint
                while self.byte() & 0x80:
                    pass
            elif kind in (124, 123, 122):  # float32, float64, bigint64
                self.skip(4 if kind == 124 else 8)
            elif kind in (119, 116):  # string, bytes
                self.skip(self.uint())
            elif kind in (118, 117):  # object, array
                stack.append((kind == 118, self.uint()))
            elif kind not in (127, 126, 121, 120):  # undefined, null, false, true
                raise Malformed(f"unknown value type {kind} in an update")
