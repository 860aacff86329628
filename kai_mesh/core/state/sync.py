"""Reconciliation for the replica: which buckets differ, what to send, and frames that fit a link.

Pure functions over version vectors (`client_id -> (seq, head)`); `Replica.on_sync` feeds them
and turns their answers into records. A session between peers A and B whose heartbeats carry
different `state_digest`s::

    A -> B  BUCKETS    at most 16 bucket hashes
    B -> A  VECTORS    B's seqs in the buckets that differ (reply=false)
    A -> B  ENTRIES    what B lacks; and VECTORS (reply=true) naming only the streams where
                       A is behind
    B -> A  ENTRIES    what A asked for

Frames are sized exactly against the link's `max_bytes`: a bucket too big for one frame is split
into client id ranges, and a record larger than the limit travels alone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from kai_mesh.core.codec import pack
from kai_mesh.core.state.wire import (
    BUCKET_HASH_BYTES,
    BUCKETS,
    HEADER_FORMAT,
    MAX_CLIENT_ID,
    MAX_ITEMS,
    MAX_MESSAGE,
    Entries,
    Vectors,
    bucket_of,
    encode_sync,
    streams_hash,
)

Vector = Mapping[int, tuple[int, bytes]]
_NONE = (0, b"")


def differing_buckets(mine: Mapping[int, bytes], theirs: Mapping[int, bytes]) -> list[int]:
    """Buckets whose hashes differ, a bucket only one side has included."""
    return [b for b in range(BUCKETS) if mine.get(b) != theirs.get(b)]


def plan(message: Vectors, mine: Vector) -> tuple[dict[int, int], dict[int, int]]:
    """(serve, want) for a VECTORS message: `serve` maps each stream we should send entries of
    to the seq the peer has (we send what follows); `want` maps each stream where the peer is
    ahead to our seq (a want list). A want list itself is all `serve`.

    When neither side lacks anything in what the message covers, yet its hash differs from ours,
    some chain forked at the very seq both hold: we serve our head entry of each covered stream,
    and the peer holding the other entry of a fork sees it."""
    if message.reply:
        return dict(message.seqs), {}
    covered = {c: pos for c, pos in mine.items() if message.covers(c)}
    serve = {c: message.seqs.get(c, 0) for c, (seq, _) in covered.items()}
    serve = {c: theirs for c, theirs in serve.items() if theirs < covered[c][0]}
    want = {c: mine.get(c, _NONE)[0] for c, seq in message.seqs.items()}
    want = {c: ours for c, ours in want.items() if ours < message.seqs[c]}
    if not serve and not want and streams_hash(covered.items()) != message.check:
        serve = {c: seq - 1 for c, (seq, _) in covered.items()}
    return serve, want


# Exact msgpack sizes, so that frames are filled to the limit and never past it ------------------


def _container(n: int) -> int:
    return 1 if n < 16 else 3 if n < 65536 else 5


def _bin(n: int) -> int:
    return n + (2 if n < 256 else 3 if n < 65536 else 5)


def _item(client_id: int, seq: int) -> int:
    return len(pack(client_id)) + len(pack(seq))


def _vectors_size(sizes: int, count: int, tail: Iterable[int]) -> int:
    # frame byte, array header, tag, the map, the reply flag, then mask, check, lo, hi
    check = 2 + BUCKET_HASH_BYTES if tail else 0
    return 3 + _container(count) + sizes + 1 + check + sum(len(pack(t)) for t in tail)


def _frame(items: Vector, mask: int, lo: int = 0, hi: int = MAX_CLIENT_ID - 1) -> bytes:
    seqs = {c: seq for c, (seq, _) in items.items()}
    return encode_sync(Vectors(seqs, False, mask, streams_hash(items.items()), lo, hi))


def vector_frames(mine: Vector, buckets: Collection[int], max_bytes: int) -> list[bytes]:
    """VECTORS (reply=False) frames covering `buckets`: our seqs there."""
    limit = min(max_bytes, MAX_MESSAGE)
    frames: list[bytes] = []
    items: dict[int, tuple[int, bytes]] = {}
    sizes, mask = 0, 0
    for b in sorted(buckets):
        mine_b = {c: p for c, p in sorted(mine.items()) if bucket_of(c) == b}
        size_b = sum(_item(c, seq) for c, (seq, _) in mine_b.items())
        count = len(items) + len(mine_b)
        if count <= MAX_ITEMS and _vectors_size(sizes + size_b, count, [mask | 1 << b]) <= limit:
            items.update(mine_b)
            sizes, mask = sizes + size_b, mask | 1 << b
            continue
        if mask:
            frames.append(_frame(items, mask))
            items, sizes, mask = {}, 0, 0
        if len(mine_b) <= MAX_ITEMS and _vectors_size(size_b, len(mine_b), [1 << b]) <= limit:
            items, sizes, mask = mine_b, size_b, 1 << b
        else:
            frames += _split_bucket(b, mine_b, limit)
    if mask:
        frames.append(_frame(items, mask))
    return frames


def _split_bucket(b: int, mine_b: Vector, limit: int) -> list[bytes]:
    frames: list[bytes] = []
    top = MAX_CLIENT_ID - 1
    tail = [1 << b, top, top]  # the largest lo/hi encodings: sizes stay an upper bound
    chunk: dict[int, tuple[int, bytes]] = {}
    lo, sizes = 0, 0
    for client_id, pos in mine_b.items():
        size = _item(client_id, pos[0])
        if chunk and (
            len(chunk) == MAX_ITEMS or _vectors_size(sizes + size, len(chunk) + 1, tail) > limit
        ):
            hi = max(chunk)
            frames.append(_frame(chunk, 1 << b, lo, hi))
            lo, chunk, sizes = hi + 1, {}, 0
        chunk[client_id] = pos
        sizes += size
    frames.append(_frame(chunk, 1 << b, lo, top))
    return frames


def want_frames(want: Mapping[int, int], max_bytes: int) -> list[bytes]:
    """VECTORS (reply=True) frames: our seqs where the peer has more."""
    limit = min(max_bytes, MAX_MESSAGE)
    frames: list[bytes] = []
    chunk: dict[int, int] = {}
    sizes = 0
    for client_id, seq in sorted(want.items()):
        size = _item(client_id, seq)
        if chunk and (
            len(chunk) == MAX_ITEMS or _vectors_size(sizes + size, len(chunk) + 1, []) > limit
        ):
            frames.append(encode_sync(Vectors(chunk, True)))
            chunk, sizes = {}, 0
        chunk[client_id] = seq
        sizes += size
    if chunk:
        frames.append(encode_sync(Vectors(chunk, True)))
    return frames


def entries_frames(records: Iterable[bytes], max_bytes: int) -> list[bytes]:
    """ENTRIES frames carrying headers and entries in the order given (a stream's header before
    its entries), each within `max_bytes` unless one record alone is larger."""
    limit = min(max_bytes, MAX_MESSAGE)
    frames: list[bytes] = []
    lists: tuple[list[bytes], list[bytes]] = ([], [])
    sizes = [0, 0]

    def size() -> int:
        return 3 + sum(_container(len(lists[i])) + sizes[i] for i in (0, 1))

    for record in records:
        i = 0 if record[0] == HEADER_FORMAT else 1
        lists[i].append(record)
        sizes[i] += _bin(len(record))
        if len(lists[i]) > MAX_ITEMS or (size() > limit and len(lists[0]) + len(lists[1]) > 1):
            lists[i].pop()
            sizes[i] -= _bin(len(record))
            frames.append(encode_sync(Entries(*lists)))
            lists, sizes = ([], []), [0, 0]
            lists[i].append(record)
            sizes[i] += _bin(len(record))
    if lists[0] or lists[1]:
        frames.append(encode_sync(Entries(*lists)))
    return frames
