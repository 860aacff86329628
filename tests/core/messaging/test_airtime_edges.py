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


# -- the budget at its boundaries --


def test_a_frame_of_exactly_the_limit_fits_an_empty_window() -> None:
    budget = AirtimeBudget(80, 1.0, window=1.0, overhead_bytes=0)  # 80 bits a second
    assert budget.can_ever_send(10, background=False)
    assert budget.can_send(10, 0.0, background=False)
    budget.spend(10, 0.0)
    assert budget.next_allowed(10, 0.5, background=False) == 1.0


def test_a_frame_fits_once_exactly_enough_has_expired() -> None:
    budget = AirtimeBudget(80, 1.0, window=10.0, overhead_bytes=0)  # 800 bits per 10 s
    budget.spend(50, 0.0)  # 400 bits until 10.0
    budget.spend(50, 1.0)  # 400 bits until 11.0
    assert budget.next_allowed(50, 2.0, background=False) == 10.0  # 400 + 400 = the limit


def test_the_smallest_settings_are_valid_and_kept() -> None:
    budget = AirtimeBudget(1, 0.5, window=1.0, background_share=0.0)
    assert (budget.bitrate, budget.duty_cycle, budget.window) == (1, 0.5, 1.0)
    assert budget.background_share == 0.0
    assert budget.frame_bits(0) == 19 * 8
    InterfaceQueue(budget, 1, {Priority.LOW: 0.5})  # a delay under a second is fine
    burst = AirtimeBudget(5000, 0.01, short_window=0.5, short_duty_cycle=0.1)
    assert not burst.can_ever_send(200, background=False)  # 0.35 s > 10 % of 0.5 s


def test_spend_is_foreground_unless_said() -> None:
    budget = lora()
    budget.spend(200, 0.0)
    assert budget.background_used(0.0) == 0.0
    budget.spend(200, 0.0, background=True)
    assert budget.background_used(0.0) == pytest.approx(0.3504)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AirtimeBudget(0, 0.01), "bitrate must be positive, not 0"),
        (lambda: AirtimeBudget(5000, 0.01, window=0), "airtime window must be positive, not 0"),
        (lambda: AirtimeBudget(5000, 0.0), "duty_cycle must be in (0, 1], not 0.0"),
        (
            lambda: AirtimeBudget(5000, 0.01, background_share=2.0),
            "background_share must be in [0, 1], not 2.0",
        ),
        (
            lambda: AirtimeBudget(5000, 0.01, overhead_bytes=-1),
            "overhead_bytes must not be negative, not -1",
        ),
        (
            lambda: AirtimeBudget(5000, 0.01, short_window=10.0),
            "give both short_window and short_duty_cycle, or neither",
        ),
        (
            lambda: AirtimeBudget(5000, 0.01, short_window=0.0, short_duty_cycle=0.1),
            "short_window must be in (0, 3600.0), not 0.0",
        ),
        (
            lambda: AirtimeBudget(5000, 0.01, short_window=3600.0, short_duty_cycle=0.1),
            "short_window must be in (0, 3600.0), not 3600.0",
        ),
        (
            lambda: AirtimeBudget(5000, 0.01, short_window=15.0, short_duty_cycle=0.0),
            "short_duty_cycle must be in (0, 1], not 0.0",
        ),
        (
            lambda: adaptive_interval(1.0, 200, lora(), 0.0),
            "target_share must be in (0, 1], not 0.0",
        ),
        (lambda: lora().frame_bits(-1), "frame size must not be negative, not -1"),
        (lambda: InterfaceQueue(lora(), 0, {}), "queue capacity must be at least 1"),
        (
            lambda: InterfaceQueue(lora(), 1, {Priority.CRITICAL: 1.0}),
            "critical frames are never shed: give no max_delay for them",
        ),
        (
            lambda: InterfaceQueue(lora(), 1, {Priority.LOW: 0.0}),
            "max_delay for low must be positive",
        ),
    ],
)
def test_each_refusal_says_what_and_which_value(make: object, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        make()  # type: ignore[operator]
    assert str(caught.value) == message


# -- the queue --


def test_a_frame_too_large_is_shed_as_itself_at_once() -> None:
    queue: InterfaceQueue[Frame] = InterfaceQueue(lora(), 4, DELAYS)
    big = Frame(1, 30_000)  # more than the 36 s an hour allows
    assert queue.push(big, Priority.LOW, False, 5.0) == [
        Shed(big, Priority.LOW, ShedReason.TOO_LARGE, 5.0, 5.0)
    ]


def test_background_frames_the_queue_releases_are_held_to_the_share() -> None:
    queue: InterfaceQueue[Frame] = InterfaceQueue(lora(), 100, {})
    for i in range(30):
        queue.push(Frame(i, 200), Priority.LOW, True, 0.0)
    assert len(queue.pop_ready(0.0)) == 25  # 9 s of background airtime, 0.3504 s each
    assert queue.budget.background_used(0.0) == pytest.approx(25 * 0.3504)


def test_a_background_frame_short_of_both_budgets_waits_for_the_later() -> None:
    budget = lora()
    for _ in range(77):  # foreground at 0: expires at 3600
        budget.spend(200, 0.0)
    for _ in range(25):  # the whole background share at 1000: expires at 4600
        budget.spend(200, 1000.0, background=True)
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, 10, {})
    queue.push(Frame(1, 200), Priority.HIGH, True, 1001.0)
    assert queue.pop_ready(1001.0) == []
    assert queue.get_timer() == 4600.0


def _share_nearly_spent() -> AirtimeBudget:
    budget = lora()
    for _ in range(25):  # 43,800 of the 45,000 background bits: room for 150 bytes, not 200
        budget.spend(200, 0.0, background=True)
    return budget


def test_a_smaller_lower_background_frame_does_not_overtake_a_blocked_one() -> None:
    queue: InterfaceQueue[Frame] = InterfaceQueue(_share_nearly_spent(), 10, {})
    queue.push(Frame(1, 200), Priority.HIGH, True, 1.0)
    queue.push(Frame(2, 10), Priority.LOW, True, 1.0)
    assert queue.pop_ready(1.0) == []


def test_foreground_behind_a_blocked_background_frame_of_its_priority_goes() -> None:
    queue: InterfaceQueue[Frame] = InterfaceQueue(_share_nearly_spent(), 10, {})
    queue.push(Frame(1, 200), Priority.HIGH, True, 1.0)
    queue.push(Frame(2, 200), Priority.HIGH, False, 1.0)
    assert queue.pop_ready(1.0) == [Frame(2, 200)]
    assert len(queue) == 1


def test_evictions_and_expiries_are_counted_one_by_one() -> None:
    budget = lora()
    fill(budget, 0.0)
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, 3, DELAYS)
    for i in range(3):
        queue.push(Frame(i, 20), Priority.LOW, False, 0.0)
    queue.push(Frame(3, 20), Priority.HIGH, False, 0.0)
    queue.push(Frame(4, 20), Priority.HIGH, False, 0.0)
    assert len(queue) == 3 and queue.stats.shed[Priority.LOW] == 2
    shed = queue.handle_timer(DELAYS[Priority.LOW])
    assert [s.reason for s in shed] == [ShedReason.EXPIRED]
    assert len(queue) == 2 and queue.stats.shed[Priority.LOW] == 3
