"""Nomad's reconnecting-picker cases, one by one (hashicorp/nomad
scheduler/reconcile/reconnecting_picker_test.go), then the disconnect timing and the surplus trim.

Nomad's allocations become `Allocation`s: Job.Version -> version, Job.CreateIndex -> created,
ClientStatus running -> running, MaxNormScore -> score, the (leader or oldest) task's last start
(LastRestart when it restarted, else StartedAt) -> started_at."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kai_mesh.core.orchestration.manifest import Disconnect
from kai_mesh.core.orchestration.reconcile import (
    Allocation,
    disconnect_status,
    lost_at,
    pick_reconnecting,
    reconcile,
    should_replace,
)

NOW = 1_000_000.0
HOUR, MINUTE = 3600.0, 60.0


def nid(i: int) -> bytes:
    return i.to_bytes(16, "big")


def alloc(node: int = 1, **kw: object) -> Allocation:
    defaults: dict[str, object] = {"replica": 0, "version": (1,), "created": 1}
    return Allocation(node=nid(node), **{**defaults, **kw})  # type: ignore[arg-type]


# TestPickReconnectingAlloc_NewerVersion: replacement is Version 2, CreateIndex 2.
@pytest.mark.parametrize(
    ("name", "version", "create_index"),
    [
        ("original_is_older", 1, 1),
        ("original_has_older_version", 1, 2),
        ("original_has_older_create_index", 2, 1),
    ],
)
def test_newer_version(name: str, version: int, create_index: int) -> None:
    replacement = alloc(2, version=(2,), created=2)
    original = alloc(1, version=(version,), created=create_index)
    ds = Disconnect(reconcile="best_score")
    assert pick_reconnecting(ds, original, replacement) is replacement


# TestPickReconnectingAlloc_DifferentStrategies: original started 1h ago with score 10, the
# replacement 30 min ago with score 20; ClientStatus unset on both (not running).
ORIGINAL = alloc(1, started_at=NOW - HOUR, score=10.0, running=False)
REPLACEMENT = alloc(2, started_at=NOW - 30 * MINUTE, score=20.0, running=False)


@pytest.mark.parametrize(
    ("name", "strategy", "expected"),
    [
        ("keep_the_allocation_with_the_best_score", "best_score", REPLACEMENT),
        ("keep_the_original_allocation", "keep_original", ORIGINAL),
        ("keep_the_replacement_allocation", "keep_replacement", REPLACEMENT),
        ("keep_the_longest_running_allocation", "longest_running", ORIGINAL),
    ],
)
def test_different_strategies(name: str, strategy: str, expected: Allocation) -> None:
    ds = Disconnect(reconcile=strategy)  # type: ignore[arg-type]
    assert pick_reconnecting(ds, ORIGINAL, REPLACEMENT) is expected


# TestPickReconnectingAlloc_BestScore: the original's score is 10.
@pytest.mark.parametrize(
    ("name", "original_running", "replacement_running", "replacement_score", "keep"),
    [
        ("replacement_has_better_score_and_running", True, True, 20.0, "replacement"),
        ("original_has_better_score_and_running", True, True, 5.0, "original"),
        ("replacement_has_better_score_but_replacement_not_running", True, False, 20.0, "original"),
        ("replacement_has_better_score_and_original_not_running", False, True, 20.0, "replacement"),
        ("original_has_better_score_but_not_running", False, True, 5.0, "original"),
        ("original_has_better_score_and_replacement_not_running", True, False, 5.0, "original"),
    ],
)
def test_best_score(
    name: str,
    original_running: bool,
    replacement_running: bool,
    replacement_score: float,
    keep: str,
) -> None:
    original = alloc(1, score=10.0, running=original_running)
    replacement = alloc(2, score=replacement_score, running=replacement_running)
    picked = pick_reconnecting(Disconnect(reconcile="best_score"), original, replacement)
    assert picked is (original if keep == "original" else replacement)


def test_best_score_missing_scores() -> None:
    """Nomad: if a score is unavailable, pick the replacement only if it has one."""
    ds = Disconnect(reconcile="best_score")
    assert pick_reconnecting(ds, alloc(1, score=None), alloc(2, score=1.0)).node == nid(2)
    assert pick_reconnecting(ds, alloc(1, score=1.0), alloc(2, score=None)).node == nid(1)
    assert pick_reconnecting(ds, alloc(1, score=None), alloc(2, score=None)).node == nid(1)


# TestPickReconnectingAlloc_LongestRunning: scores 10 (original) and 20 (replacement), status
# unset. The replacement restarted twice, last 10 min ago. Task groups with and without a leader
# reduce to one start time here; "empty_task_group" means no start time on either side.
@pytest.mark.parametrize(
    ("name", "original_start", "replacement_start", "keep"),
    [
        ("original_with_no_restart", NOW - HOUR, NOW - 10 * MINUTE, "original"),
        ("original_with_no_restart_on_leader", NOW - HOUR, NOW - 10 * MINUTE, "original"),
        ("empty_task_group", None, None, "replacement"),
        ("original_with_older_restarts", NOW - 50 * MINUTE, NOW - 10 * MINUTE, "original"),
        ("original_with_newer_restarts", NOW - 5 * MINUTE, NOW - 10 * MINUTE, "replacement"),
        ("original_with_zero_start_time", None, NOW - 10 * MINUTE, "replacement"),
        ("replacement_with_zero_start_time", NOW - 10 * MINUTE, None, "original"),
        ("both_with_zero_start_time_pick_best_score", None, None, "replacement"),
    ],
)
def test_longest_running(
    name: str, original_start: float | None, replacement_start: float | None, keep: str
) -> None:
    original = alloc(1, score=10.0, running=False, started_at=original_start)
    replacement = alloc(2, score=20.0, running=False, started_at=replacement_start)
    picked = pick_reconnecting(Disconnect(reconcile="longest_running"), original, replacement)
    assert picked is (original if keep == "original" else replacement)


def test_disconnect_timing() -> None:
    ds = Disconnect(lost_after=600.0, replace=False)
    assert lost_at(100.0, ds) == 700.0
    assert disconnect_status(100.0, 699.0, ds) == "unknown"
    assert disconnect_status(100.0, 700.0, ds) == "lost"
    assert not should_replace("unknown", ds) and should_replace("lost", ds)
    assert should_replace("unknown", Disconnect(lost_after=600.0))  # replace defaults to true
    assert disconnect_status(100.0, 100.0, Disconnect()) == "lost"  # lost_after 0: at once


def test_heal_keeps_one_copy_per_replica_and_at_most_wanted() -> None:
    """Both halves of a partition placed replicas of a 2-replica service: the left kept 0 and 1
    on nodes 1, 2; the right (epoch 5) replaced 0 and 1 on nodes 3, 4 and also started 2."""
    ds = Disconnect(lost_after=3600.0)
    left = [
        alloc(1, replica=0, epoch=1, score=0.5, status="unknown"),
        alloc(2, replica=1, epoch=1, score=0.9, status="unknown"),
    ]
    right = [
        alloc(3, replica=0, epoch=5, score=0.7),
        alloc(4, replica=1, epoch=5, score=0.2),
        alloc(5, replica=2, epoch=5, score=0.8),
    ]
    out = reconcile(left + right, ds, wanted=2)
    assert [(a.replica, a.node) for a in out.keep] == [(0, nid(3)), (1, nid(2))]
    assert {(s.allocation.node, s.reason) for s in out.stop} == {
        (nid(1), "superseded"),
        (nid(4), "superseded"),
        (nid(5), "surplus"),
    }


def test_lost_original_gives_way_but_is_kept_when_alone() -> None:
    ds = Disconnect()
    lost = alloc(1, replica=0, epoch=1, status="lost", score=1.0)
    repl = alloc(2, replica=0, epoch=2, score=0.1)
    out = reconcile([lost, repl], ds, wanted=1)
    assert out.keep == (repl,) and out.stop[0].reason == "lost"
    assert reconcile([lost], ds, wanted=1).keep == (lost,)


def test_newer_version_wins_whatever_the_strategy() -> None:
    for option in ("best_score", "keep_original", "keep_replacement", "longest_running"):
        ds = Disconnect(reconcile=option)  # type: ignore[arg-type]
        original = alloc(1, version=(2,), epoch=1, score=1.0, status="unknown")
        older_replacement = alloc(2, version=(1,), created=0, epoch=2, score=0.1)
        newer_original = reconcile([original, older_replacement], ds, wanted=1)
        # The original runs the newer version: the replacement is not newer, so the strategy
        # decides, except that keep_replacement keeps an older copy (Nomad does the same).
        expected = nid(2) if option == "keep_replacement" else nid(1)
        assert newer_original.keep[0].node == expected
        newer = replace(older_replacement, version=(3,))
        assert reconcile([original, newer], ds, wanted=1).keep == (newer,)


def test_surplus_stops_not_running_first_then_highest_numbers() -> None:
    allocs = [alloc(i, replica=i, running=i != 1) for i in range(5)]
    out = reconcile(allocs, Disconnect(), wanted=2)
    assert [a.replica for a in out.keep] == [0, 2]
    assert [s.allocation.replica for s in out.stop] == [1, 4, 3]
