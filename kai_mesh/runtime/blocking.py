"""How the runtime calls blocking code (sqlite) from trio.

In the daemon a store call runs in a worker thread (`in_thread`), so a slow disk never stalls the
node. A simulation under trio's autojump clock calls it inline instead (`inline`): while a worker
thread runs every trio task looks blocked, so the mock clock would jump to the next deadline in
the middle of a commit and the simulated timings would no longer mean anything. A `Store` carries
the one it is called with (`Store.run_sync`), chosen by whoever opens it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import trio

T = TypeVar("T")


class RunSync(Protocol):
    """Run a blocking call to completion and return its result (or raise what it raised)."""

    async def __call__(self, fn: Callable[[], T], /) -> T: ...


async def in_thread(fn: Callable[[], T], /) -> T:
    """In a trio worker thread: the daemon's choice."""
    return await trio.to_thread.run_sync(fn)


async def inline(fn: Callable[[], T], /) -> T:
    """In the calling task, with a checkpoint after: for simulations under the autojump clock."""
    result = fn()
    await trio.lowlevel.checkpoint()
    return result
