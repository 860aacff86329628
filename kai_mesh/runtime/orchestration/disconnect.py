"""Nomad's `disconnect` block in the owner's placement (issue 11, item 9; the rules are
`kai_mesh.core.orchestration.reconcile`).

A node that holds replicas and stops being live (the failure detector declared it failed, or a
partition hides it) is *away* from the moment this node first sees it missing (`AwayClock`). Its
replicas are then *unknown* for the manifest's `disconnect.lost_after`, then *lost*. The owner
re-places a replica when `should_replace` says so: at once with `replace = true` (the default),
else only once lost. Until then the slot stays in the placement (`held`): the owner gives
placement a stand-in for the away node that keeps what it has and takes nothing new (no
capacity), so the replica keeps its number and is not doubled; senders skip it meanwhile, as its
node is not reachable.

When the node returns within `lost_after` nothing was replaced and nothing moves. When it returns
after its replicas were replaced, the placement in force no longer lists them there and the node
stops them: no service is left with two copies of a replica or above its count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

from kai_mesh.core.orchestration.manifest import Manifest
from kai_mesh.core.orchestration.placement import NodeInfo, Slot
from kai_mesh.core.orchestration.reconcile import Status, disconnect_status, should_replace


class AwayClock:
    """When each node that holds replicas was first seen missing (monotonic seconds)."""

    def __init__(self) -> None:
        self.since: dict[bytes, float] = {}

    def update(self, holders: Iterable[bytes], live: Iterable[bytes], now: float) -> None:
        """`holders`: the nodes the placements in force put replicas on."""
        alive = set(live)
        wanted = set(holders) - alive
        for node in list(self.since):
            if node not in wanted:
                del self.since[node]  # back, or no longer holding anything
        for node in wanted:
            self.since.setdefault(node, now)

    def status(self, node: bytes, now: float, manifest: Manifest) -> Status | None:
        """ "unknown" or "lost" for an away node's replicas of `manifest`; None if not away."""
        since = self.since.get(node)
        return None if since is None else disconnect_status(since, now, manifest.disconnect)


def held(
    manifest: Manifest,
    infos: Mapping[bytes, NodeInfo],
    current: Iterable[Slot],
    clock: AwayClock,
    now: float,
    info_of: Callable[[bytes], NodeInfo],
) -> dict[bytes, NodeInfo]:
    """`infos` (the live nodes) plus a stand-in for every away node whose replicas of `manifest`
    are not to be replaced yet: placement keeps its slots there and adds none."""
    out = dict(infos)
    for slot in current:
        if slot.node in out:
            continue
        status = clock.status(slot.node, now, manifest)
        if status is None or should_replace(status, manifest.disconnect):
            continue
        out[slot.node] = dataclasses.replace(
            info_of(slot.node),
            capabilities=frozenset(manifest.capabilities),  # it had them: it runs the replica
            cpu=0.0,
            memory_mb=0,
            max_replicas=0,
        )
    return out
