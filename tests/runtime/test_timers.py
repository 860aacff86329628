"""The one timer driver, on the autojump clock: it calls a machine back when its timer comes due,
not before, reads the timer again on `moved()`, and leaves a machine with no timer alone."""

from __future__ import annotations

import trio
from trio.testing import MockClock

from kai_mesh.runtime.timers import TimerDriver


class Alarm:
    """A machine with one alarm: `handle_timer` records the call and clears it."""

    def __init__(self, at: float | None = None) -> None:
        self.at = at
        self.calls: list[float] = []

    def get_timer(self) -> float | None:
        return self.at

    def handle_timer(self, now: float) -> None:
        self.calls.append(now)
        self.at = None


async def test_the_machine_is_called_back_when_its_timer_comes_due(
    autojump_clock: MockClock,
) -> None:
    alarm = Alarm(at=10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(TimerDriver(alarm).run)
        await trio.sleep(9.9)
        assert alarm.calls == []
        await trio.sleep(0.2)
        assert alarm.calls == [10.0]
        nursery.cancel_scope.cancel()


async def test_moved_wakes_the_driver_for_an_earlier_timer(autojump_clock: MockClock) -> None:
    alarm = Alarm(at=100.0)
    driver = TimerDriver(alarm)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        await trio.sleep(1.0)
        alarm.at = 5.0
        driver.moved()
        await trio.sleep(4.5)
        assert alarm.calls == [5.0]
        alarm.at = 2.0  # already past: served at once
        driver.moved()
        await trio.testing.wait_all_tasks_blocked()
        assert alarm.calls == [5.0, 5.5]
        nursery.cancel_scope.cancel()


async def test_a_machine_without_a_timer_is_left_alone(autojump_clock: MockClock) -> None:
    alarm = Alarm(at=None)
    driver = TimerDriver(alarm)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        await trio.sleep(80_000.0)
        assert alarm.calls == []
        alarm.at = trio.current_time() + 1
        driver.moved()
        await trio.sleep(2)
        assert alarm.calls == [80_001.0]
        nursery.cancel_scope.cancel()
