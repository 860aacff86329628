"""Airtime budgets and interface queues: the arithmetic, the sliding window, the background share,
release order, delay then shedding, critical overdraft, and an hour of simulated mixed traffic."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kai_mesh.core.errors import UsageError
from kai_mesh.core.messaging.airtime import (
    EU868_DUTY,
    US915_DUTY,
    AirtimeBudget,
    InterfaceQueue,
    Shed,
    ShedReason,
    adaptive_interval,
)
from kai_mesh.core.messaging.envelope import Priority

DELAYS = {Priority.HIGH: 600.0, Priority.NORMAL: 300.0, Priority.LOW: 120.0}


@dataclass(frozen=True)
class Frame:
    ident: int
    size: int

    def __len__(self) -> int:
        return self.size


def lora() -> AirtimeBudget:
    """5 kbit/s, EU 1 %: 36 s an hour."""
    return AirtimeBudget(5000, EU868_DUTY)


def fill(budget: AirtimeBudget, now: float, size: int = 200) -> int:
    """Spend foreground frames at `now` until the next would not fit; return how many."""
    n = 0
    while budget.can_send(size, now, background=False):
        budget.spend(size, now)
        n += 1
    return n


# -- the budget --------------------------------------------------------------------------------


def test_airtime_arithmetic() -> None:
    budget = lora()
    assert budget.frame_bits(200) == (200 + 19) * 8 == 1752
    assert budget.airtime(200) == pytest.approx(0.3504)
    assert budget.limit == 36.0
    assert budget.background_limit == 9.0
    assert AirtimeBudget(5000, EU868_DUTY, overhead_bytes=0).airtime(200) == pytest.approx(0.32)
    assert fill(budget, 0.0) == 102 == 180_000 // 1752
    assert budget.used(0.0) == pytest.approx(102 * 0.3504)
    assert budget.fraction(0.0) == pytest.approx(102 * 1752 / 180_000)
    assert budget.overdraft == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bitrate": 0, "duty_cycle": 0.01},
        {"bitrate": 5000, "duty_cycle": 0.0},
        {"bitrate": 5000, "duty_cycle": 1.5},
        {"bitrate": 5000, "duty_cycle": 0.01, "window": 0.0},
        {"bitrate": 5000, "duty_cycle": 0.01, "background_share": -0.1},
        {"bitrate": 5000, "duty_cycle": 0.01, "short_window": 15.0},
        {"bitrate": 5000, "duty_cycle": 0.01, "short_window": 7200.0, "short_duty_cycle": 0.1},
    ],
)
def test_bad_budget_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        AirtimeBudget(**kwargs)  # type: ignore[arg-type]


def test_sliding_window_frees_airtime_as_time_passes() -> None:
    budget = lora()
    budget.spend(200, 0.0)
    fill(budget, 100.0)
    assert not budget.can_send(200, 100.0, background=False)
    # The first frame leaves the window at 3600 s, and that makes room for one more.
    assert budget.next_allowed(200, 100.0, background=False) == 3600.0
    assert not budget.can_send(200, 3599.999, background=False)
    assert budget.can_send(200, 3600.0, background=False)
    budget.spend(200, 3600.0)
    assert budget.next_allowed(200, 3600.0, background=False) == 3700.0
    assert budget.used(3700.0) == pytest.approx(budget.airtime(200))
    assert budget.used(7300.0) == 0.0


def test_short_window_limits_bursts() -> None:
    budget = AirtimeBudget(5000, EU868_DUTY, short_window=15.0, short_duty_cycle=0.1)
    assert fill(budget, 0.0) == 4  # 1.5 s per 15 s holds four 0.3504 s frames
    assert budget.next_allowed(200, 0.0, background=False) == 15.0
    assert fill(budget, 15.0) == 4
    assert not budget.can_ever_send(1000, background=False)  # 1.63 s > 1.5 s
    assert budget.next_allowed(1000, 0.0, background=False) == math.inf


def test_background_share_caps_background_but_not_foreground() -> None:
    budget = lora()
    n = 0
    while budget.can_send(200, 0.0, background=True):
        budget.spend(200, 0.0, background=True)
        n += 1
    assert n == 25 == 45_000 // 1752  # 9 s of the 36
    assert budget.background_used(0.0) <= budget.background_limit
    assert budget.can_send(200, 0.0, background=False)
    assert budget.next_allowed(200, 0.0, background=True) == 3600.0


def test_spending_over_the_limit_is_counted_as_overdraft() -> None:
    budget = lora()
    fill(budget, 0.0)  # 102 frames: 178,704 of 180,000 bits
    over = budget.spend(200, 0.0)
    assert over == pytest.approx((178_704 + 1752 - 180_000) / 5000)
    assert budget.spend(200, 0.0) == pytest.approx(0.3504)  # wholly over
    assert budget.overdraft_bits == 456 + 1752
    assert budget.fraction(0.0) > 1


def test_adaptive_interval_gives_the_documented_numbers() -> None:
    budget = lora()
    assert adaptive_interval(60.0, 200, budget, 0.05) == pytest.approx(700.8)
    assert adaptive_interval(60.0, 40, budget, 0.05) == pytest.approx(188.8)
    assert adaptive_interval(900.0, 200, budget, 0.05) == 900.0  # base already slow enough
    unlimited = AirtimeBudget(5000, US915_DUTY)
    assert adaptive_interval(1.0, 200, unlimited, 0.05) == pytest.approx(7.008)
    # At the adapted interval the messages use the target share of an hour, no more.
    interval = adaptive_interval(0.0, 200, budget, 0.05)
    assert (3600 / interval) * budget.airtime(200) == pytest.approx(0.05 * budget.limit)
    with pytest.raises(UsageError):
        adaptive_interval(60.0, 200, budget, 0.0)


# -- the queue ---------------------------------------------------------------------------------


def test_release_in_priority_order_fifo_within_a_priority() -> None:
    queue: InterfaceQueue[Frame] = InterfaceQueue(lora(), 10, DELAYS)
    pushes = [
        (Frame(1, 10), Priority.LOW, False),
        (Frame(2, 10), Priority.NORMAL, True),
        (Frame(3, 10), Priority.HIGH, False),
        (Frame(4, 10), Priority.NORMAL, False),
        (Frame(5, 10), Priority.CRITICAL, False),
        (Frame(6, 10), Priority.NORMAL, True),
    ]
    for frame, priority, background in pushes:
        assert queue.push(frame, priority, background, 0.0) == []
    assert [f.ident for f in queue.pop_ready(0.0)] == [5, 3, 2, 4, 6, 1]
    assert queue.get_timer() is None and len(queue) == 0
    assert queue.stats.sent == {
        Priority.LOW: 1,
        Priority.NORMAL: 3,
        Priority.HIGH: 1,
        Priority.CRITICAL: 1,
    }


def test_low_priority_is_delayed_then_shed_once() -> None:
    budget = lora()
    fill(budget, 0.0)
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, 10, DELAYS)
    low = Frame(1, 200)
    assert queue.push(low, Priority.LOW, False, 10.0) == []
    assert queue.pop_ready(10.0) == []
    assert queue.get_timer() == 130.0  # its deadline comes before the window frees (3600 s)
    assert queue.handle_timer(129.0) == []
    assert queue.pop_ready(130.0) == []  # never sent late, even if asked first
    shed = queue.handle_timer(130.0)
    assert shed == [Shed(low, Priority.LOW, ShedReason.EXPIRED, 10.0, 130.0)]
    assert queue.handle_timer(131.0) == []
    assert queue.get_timer() is None
    assert queue.stats.shed[Priority.LOW] == 1 and queue.stats.sent[Priority.LOW] == 0


def test_delayed_frame_goes_when_the_window_frees() -> None:
    budget = lora()
    fill(budget, 0.0)
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, 10, {Priority.NORMAL: 7200.0})
    queue.push(Frame(1, 200), Priority.NORMAL, False, 5.0)
    assert queue.get_timer() == 3600.0
    assert queue.pop_ready(3599.0) == []
    assert queue.pop_ready(3600.0) == [Frame(1, 200)]


def test_critical_goes_out_over_an_exhausted_budget_and_is_accounted() -> None:
    budget = lora()
    fill(budget, 0.0)
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, 1, DELAYS)
    frames = [Frame(i, 200) for i in range(3)]
    for frame in frames:  # past the capacity of 1, and over budget
        assert queue.push(frame, Priority.CRITICAL, False, 1.0) == []
    assert queue.pop_ready(1.0) == frames
    assert queue.stats.overdraft_bits == 456 + 2 * 1752
    assert queue.stats.overdraft == pytest.approx((456 + 2 * 1752) / 5000)
    assert queue.stats.sent[Priority.CRITICAL] == 3


def test_a_full_queue_sheds_the_newest_lowest_or_the_newcomer() -> None:
    budget = lora()
    fill(budget, 0.0)
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, 2, DELAYS)
    a, b, c, d = (Frame(i, 20) for i in range(4))
    queue.push(a, Priority.LOW, False, 0.0)
    queue.push(b, Priority.LOW, True, 0.0)
    assert queue.push(c, Priority.NORMAL, False, 0.0) == [
        Shed(b, Priority.LOW, ShedReason.OVERFLOW, 0.0, 0.0)
    ]
    assert queue.push(d, Priority.LOW, False, 1.0) == [
        Shed(d, Priority.LOW, ShedReason.OVERFLOW, 1.0, 1.0)
    ]
    assert len(queue) == 2 and queue.stats.shed[Priority.LOW] == 2


def test_a_frame_larger_than_the_budget_is_shed_at_once_unless_critical() -> None:
    budget = AirtimeBudget(5000, EU868_DUTY, background_share=0.0)
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, 4, DELAYS)
    announce = Frame(1, 50)
    assert [s.reason for s in queue.push(announce, Priority.LOW, True, 0.0)] == [
        ShedReason.TOO_LARGE
    ]
    assert queue.push(Frame(2, 50), Priority.CRITICAL, True, 0.0) == []
    assert queue.pop_ready(0.0) == [Frame(2, 50)]


def test_background_blocked_by_its_share_does_not_block_foreground() -> None:
    budget = lora()
    while budget.can_send(200, 0.0, background=True):
        budget.spend(200, 0.0, background=True)
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, 10, {})
    queue.push(Frame(1, 200), Priority.HIGH, True, 1.0)
    queue.push(Frame(2, 200), Priority.LOW, False, 1.0)
    assert queue.pop_ready(1.0) == [Frame(2, 200)]
    assert queue.get_timer() == 3600.0


def test_a_lower_frame_never_overtakes_one_waiting_for_budget() -> None:
    budget = lora()
    fill(budget, 0.0)  # 1296 bits left: room for a small frame, not a 200-byte one
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, 10, {})
    queue.push(Frame(1, 200), Priority.HIGH, False, 1.0)
    queue.push(Frame(2, 10), Priority.LOW, False, 1.0)
    assert queue.pop_ready(1.0) == []
    assert queue.pop_ready(3600.0) == [Frame(1, 200), Frame(2, 10)]


# -- an hour of mixed traffic ------------------------------------------------------------------

Arrival = tuple[float, int, Priority, bool]


@st.composite
def traffic(draw: st.DrawFn) -> list[Arrival]:
    """Bursts of frames over an hour: each burst has a start, a count, a spacing, a priority and
    a background flag, and sizes that vary within it; together they ask for more than the budget."""
    out: list[Arrival] = []
    for _ in range(draw(st.integers(3, 20))):
        start = draw(st.one_of(st.floats(0, 3600), st.integers(0, 360).map(lambda m: m * 10.0)))
        count = draw(st.integers(1, 20))
        spacing = draw(st.sampled_from([0.0, 0.1, 1.0, 7.5, 60.0]))
        size = draw(st.integers(0, 250))
        priority = draw(st.sampled_from(list(Priority)))
        background = draw(st.booleans())
        out.extend(
            (start + k * spacing, (size + 37 * k) % 251, priority, background) for k in range(count)
        )
    return out


@settings(max_examples=200, deadline=None)
@given(
    arrivals=traffic(),
    window=st.sampled_from([3600.0, 300.0]),
    short=st.booleans(),
    capacity=st.integers(1, 30),
)
def test_budget_holds_over_an_hour_of_mixed_traffic(
    arrivals: list[Arrival], window: float, short: bool, capacity: int
) -> None:
    bitrate, duty, share = 5000, 0.01, 0.25
    short_kw: dict[str, float] = {"short_window": 15.0, "short_duty_cycle": 0.15} if short else {}
    budget = AirtimeBudget(bitrate, duty, window, share, **short_kw)  # type: ignore[arg-type]
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, capacity, DELAYS)
    limit = round(duty * window * bitrate)
    background_limit = math.floor(share * limit)
    short_limit = round(0.15 * 15.0 * bitrate) if short else None

    kinds: dict[int, tuple[Priority, bool, float]] = {}
    sent: list[tuple[float, Frame]] = []
    shed: list[Shed[Frame]] = []
    clock = 0.0

    def service(now: float) -> None:
        shed.extend(queue.handle_timer(now))
        released = queue.pop_ready(now)
        order = [kinds[f.ident][0] for f in released]
        assert order == sorted(order, reverse=True)  # released in priority order
        sent.extend((now, f) for f in released)

    def run_timers(until: float) -> None:
        nonlocal clock
        while (timer := queue.get_timer()) is not None and timer <= until:
            before = (len(sent), len(shed))
            clock = max(clock, timer)
            service(clock)
            assert (len(sent), len(shed)) != before or (queue.get_timer() or math.inf) > timer

    for ident, (at, size, priority, background) in enumerate(sorted(arrivals)):
        run_timers(at)
        clock = max(clock, at)
        kinds[ident] = (priority, background, clock)
        shed.extend(queue.push(Frame(ident, size), priority, background, clock))
        service(clock)
    run_timers(math.inf)

    # Every frame is sent or shed, exactly once; critical ones are sent on arrival.
    assert len(queue) == 0
    outcomes = [f.ident for _, f in sent] + [s.frame.ident for s in shed]
    assert sorted(outcomes) == sorted(kinds)
    for now, frame in sent:
        priority, _, queued_at = kinds[frame.ident]
        if priority is Priority.CRITICAL:
            assert now == queued_at
        else:
            assert now < queued_at + DELAYS[priority]
    for s in shed:
        assert s.priority is not Priority.CRITICAL
        if s.reason is ShedReason.EXPIRED:
            assert s.shed_at >= s.queued_at + DELAYS[s.priority]

    # Replay the sends against our own ledger: outside critical frames the budget, the background
    # share and the short window are never exceeded, and the overdraft is exactly what critical
    # frames spent beyond the limit.
    overdraft = used = background_used = recent = 0
    ledger: deque[tuple[float, int, bool]] = deque()
    short_ledger: deque[tuple[float, int]] = deque()
    for now, frame in sent:
        while ledger and ledger[0][0] + window <= now:
            _, bits, background = ledger.popleft()
            used -= bits
            background_used -= bits if background else 0
        while short_ledger and short_ledger[0][0] + 15.0 <= now:
            recent -= short_ledger.popleft()[1]
        bits = (len(frame) + 19) * 8
        priority, background, _ = kinds[frame.ident]
        if priority is Priority.CRITICAL:
            overdraft += max(0, min(bits, used + bits - limit))
        else:
            assert used + bits <= limit
            assert not background or background_used + bits <= background_limit
            assert short_limit is None or recent + bits <= short_limit
        ledger.append((now, bits, background))
        short_ledger.append((now, bits))
        used += bits
        background_used += bits if background else 0
        recent += bits
    assert queue.stats.overdraft_bits == budget.overdraft_bits == overdraft
    assert sum(queue.stats.sent.values()) == len(sent)
    assert sum(queue.stats.shed.values()) == len(shed)
    event(f"sent {len(sent) // 50 * 50}+, shed {len(shed) // 10 * 10}+, overdraft {overdraft > 0}")


def test_a_transfer_larger_than_the_burst_window_is_judged_by_the_hour() -> None:
    budget = AirtimeBudget(20_000, 1.0, short_window=2.0, short_duty_cycle=0.9)
    assert not budget.can_ever_send(20_000, False)  # 20 KB never fits a 2 s burst window
    assert budget.fits_hour(20_000, 0.0, False)  # but the hour holds it
    lora = AirtimeBudget(5000, 0.01)  # 36 s an hour: 22 KB
    assert lora.fits_hour(20_000, 0.0, False)
    lora.spend(20_000, 0.0)
    assert not lora.fits_hour(20_000, 1.0, False)  # the second one must wait for the hour
    assert lora.fits_hour(20_000, 3601.0, False)
