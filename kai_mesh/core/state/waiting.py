"""Entries waiting until what they build on arrives, with the memory each peer may fill.

An entry waits when its stream's header has not come yet (it cannot even be verified) or its
predecessors have not. Anyone can send such entries, so what they cost is bounded twice:

- per peer (the node whose link delivered the record; None for our own store, which is not
  counted per peer): at most `per_peer` records and `per_peer_bytes` bytes;
- for everyone together: at most `total` records and `total_bytes` bytes.

Policy when full: the record is **refused** (`waiting_full.peer` when its deliverer's share is
full, `pending_full` when everyone's is), never kept by evicting another. Nothing acknowledged
is lost: the record is still in its writer's log and in every peer that applied it, and
anti-entropy offers it again once its predecessors are here and it applies at once. A member
that floods invented entries fills only its own share; honest peers keep theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Defaults: a peer's share holds a long out-of-order burst of honest entries (a sync round
#: carries a few hundred), and 4 MiB of them; together at most 10,000 and 64 MiB.
PER_PEER = 1_000
PER_PEER_BYTES = 4 * 1024 * 1024
TOTAL = 10_000
TOTAL_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class _Held:
    seq: int
    peer: bytes | None


@dataclass
class Waiting:
    """Stream (client id) -> record -> its seq and deliverer; sans-IO, no clock."""

    per_peer: int = PER_PEER
    per_peer_bytes: int = PER_PEER_BYTES
    total: int = TOTAL
    total_bytes: int = TOTAL_BYTES
    _streams: dict[int, dict[bytes, _Held]] = field(default_factory=dict)
    _by_peer: dict[bytes, list[int]] = field(default_factory=dict)  # peer -> [records, bytes]
    count: int = 0
    size: int = 0

    def add(self, client_id: int, seq: int, record: bytes, peer: bytes | None) -> str | None:
        """Hold `record`; None if held, else why not: `duplicate`, `waiting_full.peer` or
        `pending_full` (see the module docstring)."""
        waiting = self._streams.get(client_id, {})
        if record in waiting:
            return "duplicate"
        if peer is not None:
            used = self._by_peer.get(peer, [0, 0])
            if used[0] >= self.per_peer or used[1] + len(record) > self.per_peer_bytes:
                return "waiting_full.peer"
        if self.count >= self.total or self.size + len(record) > self.total_bytes:
            return "pending_full"
        self._streams.setdefault(client_id, {})[record] = _Held(seq, peer)
        self._charge(peer, 1, len(record))
        return None

    def take_ready(self, client_id: int, top: int) -> list[tuple[int, bytes]]:
        """Remove and return, by seq, the stream's records with seq <= `top`."""
        waiting = self._streams.get(client_id)
        if not waiting:
            return []
        ready = sorted((h.seq, r) for r, h in waiting.items() if h.seq <= top)
        for _, record in ready:
            self._remove(client_id, record)
        return ready

    def drop(self, client_id: int, after: int = 0) -> int:
        """Forget the stream's records with seq > `after`; how many."""
        waiting = self._streams.get(client_id, {})
        gone = [r for r, h in waiting.items() if h.seq > after]
        for record in gone:
            self._remove(client_id, record)
        return len(gone)

    def streams(self) -> list[int]:
        return list(self._streams)

    def held_by(self, peer: bytes) -> tuple[int, int]:
        """Records and bytes held for what `peer` delivered."""
        used = self._by_peer.get(peer, [0, 0])
        return used[0], used[1]

    def _remove(self, client_id: int, record: bytes) -> None:
        waiting = self._streams[client_id]
        held = waiting.pop(record)
        if not waiting:
            del self._streams[client_id]
        self._charge(held.peer, -1, -len(record))

    def _charge(self, peer: bytes | None, records: int, size: int) -> None:
        self.count += records
        self.size += size
        if peer is None:
            return
        used = self._by_peer.setdefault(peer, [0, 0])
        used[0] += records
        used[1] += size
        if not used[0]:
            del self._by_peer[peer]
