"""Payloads larger than one event: content-addressed chunks, and their bounded reassembly.

A relay caps one message (NIP-11 `limitation.max_message_length`; strfry 64 KiB per event,
nostr-rs-relay 128 KiB, and LAB.md: nostr-sdk refuses NIP-44 plaintexts over 65,408 bytes). A
payload that does not fit one event is split here into pieces, each sent as its own event (its
own NIP-44 encryption and signature). A piece's plaintext is::

    digest (16) ‖ index (u16) ‖ total (u16) ‖ piece

where `digest` is the first 16 bytes of SHA-256 over the whole payload: the chunks are named by
their content, so a piece of one payload can never complete another, and the receiver checks
the joined payload against the digest before handing it on (`chunk_mismatch` otherwise).

Relays are untrusted carriers that drop, duplicate, reorder and replay. Here: a duplicate piece
changes nothing (pieces are kept by index), order does not matter, a replayed payload is
reassembled again and is the caller's to refuse (the transport's seen-id LRU drops a replayed
event before it gets here; the runtime drops a replayed message by its id), and a dropped piece
leaves a half-done payload that is dropped after `ttl` seconds. What is held half-done is
bounded: at most `max_partial` payloads and `max_bytes` bytes in all, `per_sender` payloads per
sender; past a bound the oldest half-done payload goes first (`chunks_evicted`). Pure: `now` is
passed in.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from kai_mesh.core.errors import ProtocolError, UsageError
from kai_mesh.core.nostr.nip44 import calc_padded_len

DIGEST_BYTES = 16
HEAD = struct.Struct(">HH")
HEADER_BYTES = DIGEST_BYTES + HEAD.size
MAX_PIECES = 4096
#: nostr-sdk 0.45 refuses NIP-44 plaintexts past this (LAB.md), below the spec's 65,535.
INTEROP_PLAINTEXT = 65_408
#: An event's JSON without its content, with the ["EVENT", …] frame around it: id (64), pubkey
#: (64), sig (128), created_at, kind, three short tags (p, m, expiration) and punctuation come to
#: ~520 bytes; the rest is room for a relay that counts differently.
EVENT_OVERHEAD = 1024


class ChunkError(ProtocolError):
    """A chunk's plaintext is not one: too short, a bad index or total."""

    reason = "bad_chunk"


def payload_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:DIGEST_BYTES]


def nip44_chars(plaintext_len: int) -> int:
    """Base64 characters of the NIP-44 v2 payload of a plaintext this long."""
    raw = 1 + 32 + 2 + calc_padded_len(plaintext_len) + 32
    return 4 * ((raw + 2) // 3)


def max_plaintext(message_limit: int) -> int:
    """The longest plaintext whose event fits a relay message of `message_limit` bytes (0 when
    none does). The padded length only grows with the plaintext, so a bisection finds it."""
    room = message_limit - EVENT_OVERHEAD
    low, high = 0, INTEROP_PLAINTEXT  # nip44_chars(low) fits (or low is 0); find the last that does
    while low < high:
        mid = (low + high + 1) // 2
        if nip44_chars(mid) <= room:
            low = mid
        else:
            high = mid - 1
    return low


def split(data: bytes, piece_size: int) -> list[bytes]:
    """The chunk plaintexts of `data`, each at most `piece_size` bytes of plaintext.

    Raises:
        UsageError: `piece_size` leaves no room for a piece, or `data` needs too many.
    """
    room = piece_size - HEADER_BYTES
    if room < 1:
        raise UsageError(f"a chunk of {piece_size} bytes leaves no room for data")
    total = max(1, -(-len(data) // room))
    if total > MAX_PIECES:
        raise UsageError(f"{len(data)} bytes would take {total} chunks (at most {MAX_PIECES})")
    digest = payload_digest(data)
    return [digest + HEAD.pack(i, total) + data[i * room : (i + 1) * room] for i in range(total)]


@dataclass
class _Partial:
    total: int
    started: float
    pieces: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """See the module docstring. `add` returns a whole payload once its last piece arrived."""

    def __init__(
        self,
        *,
        max_partial: int = 32,
        per_sender: int = 4,
        max_bytes: int = 2 * 1024 * 1024,
        max_payload: int = 256 * 1024,
        ttl: float = 120.0,
    ) -> None:
        self.max_partial = max_partial
        self.per_sender = per_sender
        self.max_bytes = max_bytes
        self.max_payload = max_payload
        self.ttl = ttl
        self._partial: OrderedDict[tuple[str, bytes], _Partial] = OrderedDict()
        self.held_bytes = 0
        self.counters: dict[str, int] = {}

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    def __len__(self) -> int:
        return len(self._partial)

    def add(self, sender: str, plaintext: bytes, now: float) -> bytes | None:
        """Take one piece from `sender`; the whole payload when this piece completed it.

        Raises:
            ChunkError: the plaintext is not a chunk, or its payload would be too large.
        """
        self.expire(now)
        if len(plaintext) <= HEADER_BYTES:
            raise ChunkError("a chunk shorter than its header")
        digest = plaintext[:DIGEST_BYTES]
        index, total = HEAD.unpack_from(plaintext, DIGEST_BYTES)
        piece = plaintext[HEADER_BYTES:]
        if not 0 <= index < total <= MAX_PIECES:
            raise ChunkError(f"chunk {index} of {total}")
        key = (sender, digest)
        partial = self._partial.get(key)
        if partial is None:
            partial = self._start(key, total, now)
        elif partial.total != total:
            raise ChunkError("a chunk whose total differs from its siblings'")
        if index in partial.pieces:
            self._count("chunk_duplicate")
            return None
        if partial.size + len(piece) > self.max_payload:
            self._drop(key)
            raise ChunkError("chunks add up to more than the largest payload")
        partial.pieces[index] = piece
        partial.size += len(piece)
        self.held_bytes += len(piece)
        self._bound(keep=key)
        if len(partial.pieces) < partial.total or key not in self._partial:
            return None
        self._drop(key)
        data = b"".join(partial.pieces[i] for i in range(partial.total))
        if payload_digest(data) != digest:
            self._count("chunk_mismatch")
            return None
        return data

    def _start(self, key: tuple[str, bytes], total: int, now: float) -> _Partial:
        mine = [k for k in self._partial if k[0] == key[0]]
        if len(mine) >= self.per_sender:
            self._drop(mine[0])
            self._count("chunks_evicted")
        partial = self._partial[key] = _Partial(total=total, started=now)
        return partial

    def _bound(self, keep: tuple[str, bytes]) -> None:
        """Past a bound, the oldest half-done payloads go (the one just added to last)."""
        while len(self._partial) > self.max_partial or self.held_bytes > self.max_bytes:
            oldest = next(iter(self._partial))
            if oldest == keep and len(self._partial) > 1:
                self._partial.move_to_end(keep)
                oldest = next(iter(self._partial))
            self._drop(oldest)
            self._count("chunks_evicted")

    def _drop(self, key: tuple[str, bytes]) -> None:
        partial = self._partial.pop(key, None)
        if partial is not None:
            self.held_bytes -= partial.size

    def expire(self, now: float) -> None:
        """Drop half-done payloads older than `ttl` (their missing pieces are not coming)."""
        for key in [k for k, p in self._partial.items() if now - p.started > self.ttl]:
            self._drop(key)
            self._count("chunks_expired")
