"""Who wants which events: soft state kept the way Yjs keeps awareness (sans-IO, `now` in).

Each node tells its peers the topics it wants (`want`), in an INTEREST frame that holds for
`ttl` seconds; it sends one to a peer when its own set changed, when the peer is new to it, and
again before the peer's copy runs out (every `refresh` seconds, `ttl` = 3 refreshes, so one lost
frame costs nothing). A publisher sends an event only to the peers whose unexpired interest
matches it: a node that wants nothing costs nothing, which on a radio is the point.

`Seen` drops an event a transport delivered twice, keyed by (origin, seq) and bounded (LRU).

`EventInterest.get_timer()` / `handle_timer(now)` say when interest is due to be sent again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from kai_mesh.core.events.wire import matches

SEEN_LIMIT = 4096


@dataclass(slots=True)
class EventInterest:
    """This node's interest, its peers', and when to tell whom."""

    refresh: float = 30.0
    want: frozenset[str] = frozenset()
    _peers: dict[bytes, tuple[frozenset[str], float]] = field(default_factory=dict)
    _told: dict[bytes, tuple[frozenset[str], float]] = field(default_factory=dict)

    @property
    def ttl(self) -> int:
        return max(1, round(self.refresh * 3))

    def set_want(self, topics: Iterable[str]) -> bool:
        """Change this node's own interest; True when it changed (tell every peer now)."""
        new = frozenset(topics)
        changed = new != self.want
        self.want = new
        return changed

    def heard(self, peer: bytes, topics: frozenset[str], ttl: int, now: float) -> None:
        """A peer's INTEREST arrived (an empty set withdraws it)."""
        if topics:
            self._peers[peer] = (topics, now + ttl)
        else:
            self._peers.pop(peer, None)

    def forget(self, peer: bytes) -> None:
        self._peers.pop(peer, None)
        self._told.pop(peer, None)

    def wanted_by(self, topic: str, alive: Iterable[bytes], now: float) -> list[bytes]:
        """The live peers whose unexpired interest matches `topic`."""
        out = []
        for peer in alive:
            got = self._peers.get(peer)
            if got is not None and got[1] > now and any(matches(p, topic) for p in got[0]):
                out.append(peer)
        return out

    def peer_topics(self, now: float) -> dict[bytes, frozenset[str]]:
        return {p: t for p, (t, until) in self._peers.items() if until > now}

    def due(self, alive: Iterable[bytes], now: float) -> list[bytes]:
        """The peers to send our INTEREST to now: new ones, ones told an older set, ones whose
        copy is due for refresh. A node that wants nothing tells only those it told before
        (so they stop sending), then nobody. Call `told` for each one sent."""
        out = []
        for peer in alive:
            told = self._told.get(peer)
            if told is None:
                if self.want:
                    out.append(peer)
            elif told[0] != self.want or (self.want and now >= told[1] + self.refresh):
                out.append(peer)
        return out

    def told(self, peer: bytes, now: float) -> None:
        if self.want:
            self._told[peer] = (self.want, now)
        else:
            self._told.pop(peer, None)

    def untold(self, peer: bytes) -> None:
        """Sending to `peer` failed: it counts as never told (tried again next round)."""
        self._told.pop(peer, None)

    def get_timer(self) -> float | None:
        if not self.want or not self._told:
            return None
        return min(at for _, at in self._told.values()) + self.refresh

    def expire(self, now: float) -> None:
        """Drop peers' interest that ran out (memory bound for peers that went away)."""
        for peer in [p for p, (_, until) in self._peers.items() if until <= now]:
            del self._peers[peer]


@dataclass(slots=True)
class Seen:
    """(origin, seq) pairs seen lately; `first` is True the first time only."""

    limit: int = SEEN_LIMIT
    _keys: OrderedDict[tuple[bytes, int], None] = field(default_factory=OrderedDict)

    def first(self, origin: bytes, seq: int) -> bool:
        key = (origin, seq)
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self.limit:
            self._keys.popitem(last=False)
        return True
