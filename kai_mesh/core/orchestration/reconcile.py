"""After a failure or a partition: which replicas to keep, by Nomad's disconnect rules.

**While a node is away.** The failure detector says when a node failed; the manifest's
`disconnect` block (Nomad's `DisconnectStrategy`, nomad/structs/group.go) says what that means for
its replicas: for `lost_after` seconds they are *unknown* (maybe still running behind a
partition), then *lost*. Unknown replicas are replaced at once when `replace` is true (the
default); lost ones always are. `lost_after = 0` (the default) makes them lost immediately.
`disconnect_status` and `lost_at` are the pure rules; the owner sets a timer at `lost_at`.

**When it returns** (the node comes back, or the partition heals), a replica number may run on two
nodes: the original and its replacement (placement keeps replica numbers, so they pair up by
number; the copy from the older placement epoch is the original). `pick_reconnecting` is Nomad's
`reconnectingPicker.pickReconnectingAlloc` (scheduler/reconcile/reconnecting_picker.go), ported
rule for rule:

- the replacement wins if its job is newer: a higher version, *or* a higher create index (here the
  manifest's `signed_at`) — Nomad's `||`, kept as is;
- else by `reconcile`: `best_score` keeps the replacement only if its placement score is better
  (a missing score loses to a present one) *and* it is running or the original is not;
  `keep_original`; `keep_replacement`; `longest_running` keeps the one that started earlier (a
  missing start loses; both missing falls back to `best_score`).

A lost original is not picked: its replacement stands (Nomad stops allocations that were lost).
Beyond Nomad, for a mesh without servers: when a lost original has no replacement (no room was
found), it is kept rather than stopped, since it is the only copy.

**Then the surplus goes** (`reconcile`): more distinct replicas than wanted (both halves of a
partition placed some) are stopped, not-running ones first, then the highest replica numbers (as
Nomad's `computeStop` stops the highest indexes), so no service is left above its count and no
replica number runs twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from kai_mesh.core.orchestration.manifest import Disconnect

Status = Literal["running", "unknown", "lost"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocation:
    """One running copy of a replica, as the owner sees it after the heal.

    `version`/`created`: the manifest's version key and `signed_at` it runs (Nomad's Job.Version
    and Job.CreateIndex); `epoch`: the placement epoch counter that put it there; `running`: its
    health check passes (Nomad's ClientStatus running); `score`: its placement score (Nomad's
    MaxNormScore; None when unknown); `started_at`: when it last started (None: never); `status`:
    "unknown" or "lost" for a copy on a node that was away, "running" otherwise."""

    node: bytes
    replica: int
    version: tuple[int, ...]
    created: int = 0
    epoch: int = 0
    running: bool = True
    score: float | None = None
    started_at: float | None = None
    status: Status = "running"


def lost_at(failed_at: float, ds: Disconnect) -> float:
    """When the replicas of a node that failed at `failed_at` become lost."""
    return failed_at + ds.lost_after


def disconnect_status(failed_at: float, now: float, ds: Disconnect) -> Status:
    """ "unknown" until `lost_after` has passed since the failure, then "lost"."""
    return "unknown" if now < lost_at(failed_at, ds) else "lost"


def should_replace(status: Status, ds: Disconnect) -> bool:
    """Whether the owner places a replacement for a replica in `status` now."""
    return status == "lost" or (status == "unknown" and ds.replace)


def pick_reconnecting(ds: Disconnect, original: Allocation, replacement: Allocation) -> Allocation:
    """Nomad's `pickReconnectingAlloc` (see the module docstring). Not commutative: the original
    is preferred when nothing else decides."""
    replacement_is_newer = (
        replacement.version > original.version or replacement.created > original.created
    )
    if replacement_is_newer:
        return replacement
    if ds.reconcile == "keep_original":
        return original
    if ds.reconcile == "keep_replacement":
        return replacement
    if ds.reconcile == "longest_running":
        return _pick_longest_running(original, replacement)
    return _pick_best_score(original, replacement)


def _pick_best_score(original: Allocation, replacement: Allocation) -> Allocation:
    o, r = original.score, replacement.score
    better = (o is None and r is not None) or (o is not None and r is not None and r > o)
    if better and (replacement.running or not original.running):
        return replacement
    return original


def _pick_longest_running(original: Allocation, replacement: Allocation) -> Allocation:
    o, r = original.started_at, replacement.started_at
    if o is None and r is not None:
        return replacement
    if o is not None and r is None:
        return original
    if o is None or r is None:  # neither has started: best score decides
        return _pick_best_score(original, replacement)
    return original if o < r else replacement


@dataclass(frozen=True, slots=True)
class Stop:
    allocation: Allocation
    reason: str  # "superseded" (lost the pick), "lost", "surplus"


@dataclass(frozen=True, slots=True)
class Reconciled:
    keep: tuple[Allocation, ...]
    stop: tuple[Stop, ...]


def reconcile(allocations: Iterable[Allocation], ds: Disconnect, wanted: int) -> Reconciled:
    """One copy per replica number, by `pick_reconnecting`; then at most `wanted` replicas."""
    groups: dict[int, list[Allocation]] = {}
    for a in allocations:
        groups.setdefault(a.replica, []).append(a)
    keep: list[Allocation] = []
    stop: list[Stop] = []
    for number in sorted(groups):
        copies = sorted(groups[number], key=lambda a: (a.epoch, a.node))
        current = copies[0]
        for other in copies[1:]:
            if current.status == "lost":
                winner = other
            elif other.status == "lost":
                winner = current
            else:
                winner = pick_reconnecting(ds, current, other)
            loser = other if winner is current else current
            reason = "lost" if loser.status == "lost" else "superseded"
            stop.append(Stop(loser, reason))
            current = winner
        keep.append(current)
    if len(keep) > wanted:
        order = sorted(keep, key=lambda a: (a.running, -a.replica))
        surplus = order[: len(keep) - wanted]
        keep = [a for a in keep if a not in surplus]
        stop.extend(Stop(a, "surplus") for a in surplus)
    return Reconciled(tuple(keep), tuple(stop))
