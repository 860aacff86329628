"""Who belongs to the mesh right now: node id -> Ed25519 key, read from the governance fold.

One `Members` object is shared by everything that admits a peer (the transports' handshakes and
announces, the envelope decoder, heartbeats, the replicated state), so an authorization or a
revocation takes effect everywhere the moment the fold changes, with no copy left behind. It
starts as the genesis's trusted nodes, the fold's initial members, and `update` replaces it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from kai_mesh.core.governance.machine import GovernanceState

Removed = Callable[[bytes], None]


class Members(Mapping[bytes, bytes]):
    """A read-only mapping for its users; `update(state)` is the one writer."""

    def __init__(self, initial: Mapping[bytes, bytes]) -> None:
        self._keys: dict[bytes, bytes] = dict(initial)
        self._roles: dict[bytes, str] = {}
        self._on_removed: list[Removed] = []

    def __getitem__(self, node_id: bytes) -> bytes:
        return self._keys[node_id]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def role(self, node_id: bytes) -> str | None:
        """The member's role in the fold; None for a non-member (or before the first update)."""
        return self._roles.get(node_id)

    def on_removed(self, callback: Removed) -> None:
        """Call `callback(node_id)` for every member a later update drops (revoked)."""
        self._on_removed.append(callback)

    def update(self, state: GovernanceState) -> list[bytes]:
        """Take the fold's members; return the node ids dropped, after telling the callbacks."""
        keys = {node_id: m.key for node_id, m in state.members.items()}
        gone = [node_id for node_id in self._keys if node_id not in keys]
        self._keys = keys
        self._roles = {node_id: m.role for node_id, m in state.members.items()}
        for node_id in gone:
            for callback in self._on_removed:
                callback(node_id)
        return gone
