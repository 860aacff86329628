"""The one timer driver: a trio task that calls a sans-IO machine back when its timer comes due.

A core machine (the failure detector, an airtime queue, the outbox scheduler …) says when it next
needs the clock — `get_timer()`, None for "not until an input comes" — and acts when called back
with `handle_timer(now)`. Between timer calls its shell feeds it inputs, which can move the timer
earlier; the shell then calls `moved()` and the driver reads the timer again instead of sleeping
on to the old one. Times are trio's clock (`trio.current_time()`), so under the autojump clock the
machines run on simulated time.

`handle_timer` is called synchronously: a machine's shell that must do I/O for what the machine
asks starts tasks for it, so one slow send never holds up the timers. A machine must leave its
timer past `now` once `handle_timer(now)` returns (else the driver would spin; it yields to trio on
every round all the same).
"""

from __future__ import annotations

import math
from typing import Protocol

import trio


class Timed(Protocol):
    """What the driver serves: aioquic's `get_timer`/`handle_timer` pair."""

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> object: ...


class TimerDriver:
    """Serves one `Timed` machine. `run()` in a nursery; `moved()` whenever an input may have
    changed the machine's timer."""

    def __init__(self, machine: Timed) -> None:
        self.machine = machine
        self._wake = trio.Event()

    def moved(self) -> None:
        """Read the machine's timer again now (safe before `run()` and from any task)."""
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            # A fresh event before the timer is read: a `moved()` from here on is not missed.
            self._wake = trio.Event()
            now = trio.current_time()
            due = self.machine.get_timer()
            if due is not None and due <= now:
                self.machine.handle_timer(now)
                await trio.lowlevel.checkpoint()
                continue
            with trio.move_on_at(math.inf if due is None else due):
                await self._wake.wait()
