"""Replicated state on the wire: stream headers, signed entries, and the sync messages.

A node writes the mesh's Yjs doc through **streams** (DESIGN.md, "Replicated state"). A stream is
declared once by a signed header, then grows by signed entries that form a hash chain::

    header   0x01 ‖ msgpack [node_id, client_id] ‖ 64-byte sig (kind "state-stream")
    entry    0x02 ‖ msgpack [client_id, seq, prev, update] ‖ 64-byte sig (kind "state-entry")

Each signature covers every byte before it, format byte included. On the wire a stream is named by
its Yjs client id alone: the header binds the client id to its node, so an entry spends no bytes
on a node id. `prev` is the `entry_hash` of the stream's previous entry (16 zero bytes before the
first), so two different entries with one `seq` cannot both extend a chain. Headers and entries are
canonical msgpack: one meaning, one encoding, so one entry has one hash.

Peers reconcile with a sync frame, `0x14 ‖ msgpack array`::

    BUCKETS [1, {bucket: hash4}]       a hash per bucket of streams (client_id % 16) over the
                                       sorted (client_id, seq, head); empty buckets left out
    VECTORS [2, {client_id: seq}, false, mask, hash4]            the sender's seqs of every
            [2, {client_id: seq}, false, mask, hash4, lo, hi]    stream it covers: bucket in
                                       `mask` (bit b = bucket b) and lo <= client_id <= hi (left
                                       out: all); a covered stream left out is one it lacks;
                                       hash4 is `streams_hash` of what it covers, heads included
            [2, {client_id: seq}, true]     a want list: "I have these streams up to seq (0:
                                       none at all), send what follows"
    ENTRIES [3, [header, ...], [entry, ...]]

Why this shape: on a LoRa link every byte is airtime. The 8-byte `state_digest` of the buckets
rides on heartbeats, so peers in sync exchange nothing more; when it differs, BUCKETS (at most 16
small hashes) narrows the difference to a few buckets, VECTORS lists only those, and a want list
names only the streams the asker lacks. Vectors carry seqs, not heads (6 bytes a stream, not 25):
a chain that forked below a seq is caught when the next entry's `prev` does not match, and two
chains forked at the same seq are caught by hash4 (equal seqs, different hashes: the receiver
sends its head entries, and whoever holds the other one sees the fork). `lo`/`hi` let one bucket
too large for a frame be split. Decoding is strict and every failure is a `ProtocolError`; the
records inside ENTRIES are only checked for their shape here (the replica judges each one and
counts why it refused it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pycrdt

from kai_mesh.core.codec import (
    FieldError,
    checked_bytes,
    checked_int,
    digest,
    pack,
    split_format,
    unpack_exact,
    unpack_prefix,
)
from kai_mesh.core.errors import (
    Malformed,
    Oversize,
    Truncated,
    UnknownVersion,
    Untrusted,
    UsageError,
)
from kai_mesh.core.mesh.address import NODE_ID_BYTES
from kai_mesh.core.mesh.identity import SIGNATURE_BYTES, NodeSecrets, verify
from kai_mesh.core.messaging.frames import FRAME_STATE

HEADER_FORMAT = 0x01
ENTRY_FORMAT = 0x02
HEADER_KIND = "state-stream"
ENTRY_KIND = "state-entry"

HASH_BYTES = 16
ZERO_HASH = bytes(HASH_BYTES)  # the head of an empty chain, and `prev` of every first entry
BUCKETS = 16
BUCKET_HASH_BYTES = 4
DIGEST_BYTES = 8
ALL_BUCKETS = (1 << BUCKETS) - 1
MAX_CLIENT_ID = 2**53  # exclusive: Yjs client ids are JavaScript numbers
MAX_SEQ = 2**63  # exclusive
MAX_MESSAGE = 65536  # a sync frame, format byte included
MAX_ITEMS = 4096  # entries of any one map or array in a sync frame
MAX_RECORD = MAX_MESSAGE - 32  # a header or entry: one alone always fits in an ENTRIES frame

_BUCKETS, _VECTORS, _ENTRIES = 1, 2, 3


def client_id_ok(value: object, error: FieldError = Malformed) -> int:
    return checked_int(value, "client_id", 0, MAX_CLIENT_ID, error)


def bucket_of(client_id: int) -> int:
    return client_id % BUCKETS


def entry_hash(data: bytes) -> bytes:
    """The 16-byte hash that names an entry (its whole bytes, signature included)."""
    return digest("state-entry", data)[:HASH_BYTES]


def _split_signed(data: bytes, fmt: int, what: str) -> tuple[Any, bytes, bytes]:
    """(value, body, signature) of a signed record; body is every byte before the signature."""
    rest = split_format(data, fmt, what)
    if len(rest) + 1 > MAX_RECORD:
        raise Oversize(f"{what}: {len(rest) + 1} bytes, at most {MAX_RECORD}")
    value, used = unpack_prefix(rest, MAX_RECORD)
    signature = rest[used:]
    if len(signature) != SIGNATURE_BYTES:
        error = Truncated if len(signature) < SIGNATURE_BYTES else Malformed
        raise error(f"{what}: {len(signature)} bytes after the body; a signature is 64")
    if pack(value) != rest[:used]:
        raise Malformed(f"{what}: not in canonical msgpack")
    return value, bytes([fmt]) + rest[:used], signature


# Headers ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """`node_id` writes the doc under Yjs client id `client_id`."""

    node_id: bytes
    client_id: int

    def __post_init__(self) -> None:
        checked_bytes(self.node_id, "header node_id", NODE_ID_BYTES, UsageError)
        client_id_ok(self.client_id, UsageError)


def encode_header(header: Header, secrets: NodeSecrets, mesh_id: bytes) -> bytes:
    if header.node_id != secrets.node_id:
        raise UsageError("state header: a node signs only its own streams")
    body = bytes([HEADER_FORMAT]) + pack([header.node_id, header.client_id])
    return body + secrets.sign(HEADER_KIND, mesh_id, body)


def parse_header(data: bytes) -> tuple[Header, bytes, bytes]:
    """(header, body, signature), structure only: the signature is not checked."""
    value, body, sig = _split_signed(data, HEADER_FORMAT, "state header")
    if not isinstance(value, list) or len(value) != 2:
        raise Malformed("state header: expected [node_id, client_id]")
    node_id = checked_bytes(value[0], "header node_id", NODE_ID_BYTES, Malformed)
    return Header(node_id, client_id_ok(value[1])), body, sig


def decode_header(
    data: bytes, mesh_id: bytes, verify_key_for: Callable[[bytes], bytes | None]
) -> Header:
    """A header whose signature verifies under `verify_key_for(node_id)`.

    Raises:
        Truncated, Malformed, Oversize, UnknownVersion: not a header.
        Untrusted: `verify_key_for` returns None for the node it names.
        BadSignature: forged, altered, or signed for another mesh.
    """
    header, body, sig = parse_header(data)
    key = verify_key_for(header.node_id)
    if key is None:
        raise Untrusted(f"state header: node {header.node_id.hex()} is not accepted")
    verify(key, HEADER_KIND, mesh_id, body, sig)
    return header


# Entries ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One transaction of stream `client_id`: its Yjs update, number `seq` in the chain."""

    client_id: int
    seq: int
    prev: bytes
    update: bytes

    def __post_init__(self) -> None:
        _check_entry(self.client_id, self.seq, self.prev, self.update, UsageError)


def _check_entry(
    client_id: object, seq: object, prev: object, update: object, e: FieldError
) -> None:
    client_id_ok(client_id, e)
    checked_int(seq, "entry seq", 1, MAX_SEQ, e)
    checked_bytes(prev, "entry prev", HASH_BYTES, e)
    if type(update) is not bytes or not update:
        raise e("entry update: must be non-empty bytes")
    if seq == 1 and prev != ZERO_HASH:
        raise e("entry prev: the first entry of a stream follows 16 zero bytes")


def encode_entry(entry: Entry, secrets: NodeSecrets, mesh_id: bytes) -> bytes:
    body = bytes([ENTRY_FORMAT]) + pack([entry.client_id, entry.seq, entry.prev, entry.update])
    if len(body) + SIGNATURE_BYTES > MAX_RECORD:
        raise UsageError(f"state entry: {len(body) + SIGNATURE_BYTES} bytes, at most {MAX_RECORD}")
    return body + secrets.sign(ENTRY_KIND, mesh_id, body)


def parse_entry(data: bytes) -> tuple[Entry, bytes, bytes]:
    """(entry, body, signature), structure only: who may sign it is the stream's header's business.

    Verify with `identity.verify(key, ENTRY_KIND, mesh_id, body, signature)`.
    """
    value, body, sig = _split_signed(data, ENTRY_FORMAT, "state entry")
    if not isinstance(value, list) or len(value) != 4:
        raise Malformed("state entry: expected [client_id, seq, prev, update]")
    client_id, seq, prev, update = value
    _check_entry(client_id, seq, prev, update, Malformed)
    return Entry(client_id, seq, prev, update), body, sig


# Sync messages ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Buckets:
    """A hash per non-empty bucket of streams (see `bucket_hashes`)."""

    hashes: Mapping[int, bytes]

    def __post_init__(self) -> None:
        object.__setattr__(self, "hashes", _bucket_map(self.hashes, UsageError))


@dataclass(frozen=True, slots=True)
class Vectors:
    """Stream seqs: `client_id -> seq`.

    `reply=False`: the sender's seq of every stream it covers (`covers`), a covered stream it
    lacks left out, and `streams_hash` of those streams (`check`). `reply=True`: a want list
    (seq 0: "none at all"); `mask`, `check`, `lo`, `hi` keep their defaults."""

    seqs: Mapping[int, int]
    reply: bool
    mask: int = 0
    check: bytes = b""
    lo: int = 0
    hi: int = MAX_CLIENT_ID - 1

    def __post_init__(self) -> None:
        clean = _clean_vectors(self, UsageError)
        object.__setattr__(self, "seqs", clean)

    def covers(self, client_id: int) -> bool:
        return bool(self.mask >> bucket_of(client_id) & 1) and self.lo <= client_id <= self.hi


@dataclass(frozen=True, slots=True)
class Entries:
    """Headers and entries, unchecked beyond their shape and format byte."""

    headers: Sequence[bytes]
    entries: Sequence[bytes]

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _records(self.headers, HEADER_FORMAT, UsageError))
        object.__setattr__(self, "entries", _records(self.entries, ENTRY_FORMAT, UsageError))


SyncMessage = Buckets | Vectors | Entries


def _bucket_map(value: object, e: FieldError) -> dict[int, bytes]:
    if not isinstance(value, Mapping):
        raise e("buckets: expected a map")
    for key, item in value.items():
        checked_int(key, "bucket", 0, BUCKETS, e)
        checked_bytes(item, "bucket hash", BUCKET_HASH_BYTES, e)
    return dict(sorted(value.items()))


def _clean_vectors(v: Vectors, e: FieldError) -> dict[int, int]:
    if type(v.reply) is not bool or not isinstance(v.seqs, Mapping):
        raise e("vectors: expected a map and a reply flag")
    if len(v.seqs) > MAX_ITEMS:
        raise e(f"vectors: at most {MAX_ITEMS} streams")
    for client_id, seq in v.seqs.items():
        client_id_ok(client_id, e)
        checked_int(seq, "vector seq", 0 if v.reply else 1, MAX_SEQ, e)
    checked_int(v.lo, "vectors lo", 0, MAX_CLIENT_ID, e)
    checked_int(v.hi, "vectors hi", 0, MAX_CLIENT_ID, e)
    if v.reply:
        if (v.mask, v.check, v.lo, v.hi) != (0, b"", 0, MAX_CLIENT_ID - 1) or not v.seqs:
            raise e("vectors: a want list names streams and covers nothing")
    else:
        checked_int(v.mask, "vectors mask", 1, ALL_BUCKETS + 1, e)
        checked_bytes(v.check, "vectors check", BUCKET_HASH_BYTES, e)
        if v.lo > v.hi:
            raise e("vectors: lo > hi")
        if not all(v.covers(c) for c in v.seqs):
            raise e("vectors: a stream outside what the message covers")
    return dict(sorted(v.seqs.items()))


def _records(value: object, fmt: int, e: FieldError) -> tuple[bytes, ...]:
    if not isinstance(value, list | tuple) or len(value) > MAX_ITEMS:
        raise e(f"entries: expected a list of at most {MAX_ITEMS} records")
    for record in value:
        if type(record) is not bytes or not 0 < len(record) <= MAX_RECORD or record[0] != fmt:
            raise e(f"entries: a record is bytes of format {fmt}, at most {MAX_RECORD} bytes")
    return tuple(value)


def encode_sync(message: SyncMessage) -> bytes:
    fields: list[object]
    match message:
        case Buckets(hashes=hashes):
            fields = [_BUCKETS, dict(hashes)]
        case Vectors(seqs=seqs, reply=reply, mask=mask, check=check, lo=lo, hi=hi):
            fields = [_VECTORS, dict(seqs), reply]
            if not reply:
                fields += [mask, check]
                if (lo, hi) != (0, MAX_CLIENT_ID - 1):
                    fields += [lo, hi]
        case Entries(headers=headers, entries=entries):
            fields = [_ENTRIES, list(headers), list(entries)]
        case _:
            raise UsageError(f"state sync: cannot encode {type(message).__name__}")
    data = bytes([FRAME_STATE]) + pack(fields)
    if len(data) > MAX_MESSAGE:
        raise UsageError(f"state sync: {len(data)} bytes, at most {MAX_MESSAGE}")
    return data


def decode_sync(data: bytes) -> SyncMessage:
    """The message in a sync frame. Raises a `ProtocolError` subclass, and nothing else."""
    rest = split_format(data, FRAME_STATE, "state sync")
    if len(rest) + 1 > MAX_MESSAGE:
        raise Oversize(f"state sync: {len(rest) + 1} bytes, at most {MAX_MESSAGE}")
    value = unpack_exact(rest, MAX_ITEMS)
    if not isinstance(value, list) or not value or type(value[0]) is not int:
        raise Malformed("state sync: expected an array starting with a message type")
    tag, args = value[0], value[1:]
    if tag == _BUCKETS and len(args) == 1:
        return Buckets(_bucket_map(args[0], Malformed))
    if tag == _VECTORS and len(args) in (2, 4, 6):
        seqs, reply, *coverage = args
        if (reply is True) != (len(args) == 2):
            raise Malformed("state sync: a want list has no coverage; vectors have one")
        if len(coverage) == 4 and (coverage[2], coverage[3]) == (0, MAX_CLIENT_ID - 1):
            raise Malformed("state sync: the full client id range is left out, not sent")
        try:
            return Vectors(seqs, reply, *coverage)
        except UsageError as exc:
            raise Malformed(f"state sync: {exc}") from None
    if tag == _ENTRIES and len(args) == 2:
        headers = _records(args[0], HEADER_FORMAT, Malformed)
        return Entries(headers, _records(args[1], ENTRY_FORMAT, Malformed))
    if tag in (_BUCKETS, _VECTORS, _ENTRIES):
        raise Malformed(f"state sync: wrong number of fields for message type {tag}")
    raise UnknownVersion(f"state sync: unknown message type {tag}")


# Yjs updates -------------------------------------------------------------------------------------


def _varuint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def foreign_items(update: bytes, client_id: int) -> bool:
    """Whether a Yjs v1 update adds items under a client id other than `client_id`.

    Not `pycrdt.get_state(update)`: like Y.encodeStateVectorFromUpdate it counts a client only
    when the update holds its items from clock 0, so it misses them in every later update.
    Instead, Yjs's diff against "all of `client_id`'s items" (`pycrdt.get_update`) must leave no
    items at all; its delete set may name anyone.

    Raises:
        ValueError: `update` is not a Yjs v1 update.
    """
    everything_of = _varuint(1) + _varuint(client_id) + _varuint(2**32 - 1)  # yrs clocks are u32
    rest = pycrdt.get_update(update, everything_of)
    return not rest or rest[0] != 0  # the number of clients with items: a varuint, 0 is one byte


# Digests ------------------------------------------------------------------------------------------


def streams_hash(streams: Iterable[tuple[int, tuple[int, bytes]]]) -> bytes:
    """4 bytes over `(client_id, (seq, head))` pairs, sorted by client id."""
    items = (c.to_bytes(8, "big") + s.to_bytes(8, "big") + h for c, (s, h) in sorted(streams))
    return digest("state-streams", *items)[:BUCKET_HASH_BYTES]


def bucket_hashes(vector: Mapping[int, tuple[int, bytes]]) -> dict[int, bytes]:
    """`client_id -> (seq, head)` -> the `streams_hash` of each non-empty bucket."""
    grouped: dict[int, list[tuple[int, tuple[int, bytes]]]] = {}
    for client_id, pos in vector.items():
        grouped.setdefault(bucket_of(client_id), []).append((client_id, pos))
    return {b: streams_hash(items) for b, items in sorted(grouped.items())}


def state_digest(buckets: Mapping[int, bytes]) -> bytes:
    """8 bytes over the sorted bucket hashes, for heartbeats: equal digests, equal vectors."""
    parts = (bytes([b]) + h for b, h in sorted(buckets.items()))
    return digest("state-digest", *parts)[:DIGEST_BYTES]
