"""Revocations as the replicated state sees them: whose entries still count, and up to where.

A certified `node_revocation` names a node and a **cut**: Yjs client id -> the last seq of that
stream that stays valid. The replica takes the fold's revocations (`revocations_of`) and judges
every entry of a revoked node's streams by its seq alone: at or below the cut it is checked as
before, under the key the node had (the fold keeps it, since the node is no longer a member);
past the cut, or on a stream of that node the cut does not name, it is refused as "revoked".
Since the verdict depends on the entry and the fold only, never on when it arrived, every node
ends with the same logs, and so the same doc; one that applied more before it learned of the
revocation cuts its logs back (`keep_after_revocation`) and rebuilds.

A cut may name client ids the node never claimed; they are ignored, so a revocation cannot
reach into another node's streams.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kai_mesh.core.governance.machine import GovernanceState


@dataclass(frozen=True, slots=True)
class Revocation:
    """A revoked node: its key (None if it never was a member: nothing of it verifies) and its
    cut (Yjs client id -> last valid seq)."""

    key: bytes | None
    cut: Mapping[int, int]

    def last_valid(self, client_id: int) -> int:
        """The last seq of `client_id` (a stream of this node) that still counts; 0: none."""
        return self.cut.get(client_id, 0)


Revocations = Mapping[bytes, Revocation]


def revocations_of(state: GovernanceState) -> dict[bytes, Revocation]:
    """node id -> `Revocation`, from the governance fold."""
    return {
        node_id: Revocation(state.revoked_keys.get(node_id), dict(cut))
        for node_id, cut in state.revoked.items()
    }


def keep_after_revocation(
    owners: Mapping[int, bytes], lengths: Mapping[int, int], revoked: Revocations
) -> dict[int, int]:
    """client id -> how many entries to keep, for each stream held past its cut.

    `owners`: client id -> the node that claimed it; `lengths`: client id -> entries held."""
    out = {}
    for client_id, held in lengths.items():
        revocation = revoked.get(owners.get(client_id, b""))
        if revocation is not None and held > revocation.last_valid(client_id):
            out[client_id] = revocation.last_valid(client_id)
    return out
