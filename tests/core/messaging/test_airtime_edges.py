"""Airtime: the edges that `test_airtime.py` leaves open, each written against a mutant that
survived it (docs/mutation.md): depths and evictions across foreground and background, the hour
check for a transfer, and what the refusals name."""

from __future__ import annotations

import pytest

from kai_mesh.core.errors import UsageError
from kai_mesh.core.messaging.airtime import (
    EU868_DUTY,
    AirtimeBudget,
    InterfaceQueue,
    Shed,
    ShedReason,
    adaptive_interval,
)
from kai_mesh.core.messaging.envelope import Priority
from tests.core.messaging.test_airtime import DELAYS, Frame, fill, lora


def test_depth_counts_foreground_and_background_of_one_priority() -> None:
    queue: InterfaceQueue[Frame] = InterfaceQueue(lora(), 10, DELAYS)
    queue.push(Frame(1, 20), Priority.LOW, False, 0.0)
    queue.push(Frame(2, 20), Priority.LOW, True, 0.0)
    queue.push(Frame(3, 20), Priority.LOW, True, 0.0)
    queue.push(Frame(4, 20), Priority.HIGH, False, 0.0)
    assert queue.depth(Priority.LOW) == 3
    assert queue.depth(Priority.HIGH) == 1
    assert queue.depth(Priority.NORMAL) == 0


@pytest.mark.parametrize("older_background", [True, False])
def test_overflow_evicts_the_newest_lowest_whether_foreground_or_background(
    older_background: bool,
) -> None:
    budget = lora()
    fill(budget, 0.0)  # nothing leaves: the queue stays full
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, 2, DELAYS)
    older, newer = Frame(1, 20), Frame(2, 20)
    queue.push(older, Priority.LOW, older_background, 0.0)
    queue.push(newer, Priority.LOW, not older_background, 0.0)
    assert queue.push(Frame(3, 20), Priority.NORMAL, False, 1.0) == [
        Shed(newer, Priority.LOW, ShedReason.OVERFLOW, 0.0, 1.0)
    ]
    assert queue.depth(Priority.LOW) == 1 and queue.depth(Priority.NORMAL) == 1


def test_overflow_evicts_foreground_only_queues_too() -> None:
    budget = lora()
    fill(budget, 0.0)
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, 1, DELAYS)
    queue.push(Frame(1, 20), Priority.LOW, False, 0.0)
    shed = queue.push(Frame(2, 20), Priority.HIGH, False, 0.0)
    assert [(s.frame, s.reason) for s in shed] == [(Frame(1, 20), ShedReason.OVERFLOW)]


def test_the_hour_check_holds_background_to_its_share() -> None:
    budget = lora()
    while budget.can_send(200, 0.0, background=True):
        budget.spend(200, 0.0, background=True)
    assert not budget.fits_hour(200, 1.0, background=True)
    assert budget.fits_hour(200, 1.0, background=False)
    assert budget.fits_hour(200, 3600.0, background=True)  # the first spends expire


def test_the_hour_check_ignores_the_burst_window() -> None:
    budget = AirtimeBudget(5000, EU868_DUTY, short_window=15.0, short_duty_cycle=0.1)
    assert fill(budget, 0.0) == 4
    assert not budget.can_send(200, 0.0, background=False)
    assert budget.fits_hour(200, 0.0, background=False)


@pytest.mark.parametrize(("share", "base"), [(0.0, 1.0), (1.5, 1.0), (0.05, -1.0)])
def test_adaptive_interval_refusals_name_what_is_wrong(share: float, base: float) -> None:
    what = "target_share" if base >= 0 else "base interval"
    with pytest.raises(UsageError, match=what):
        adaptive_interval(base, 200, lora(), share)
