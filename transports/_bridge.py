"""Handing callbacks from a library's threads (RNS, LXMF) to the trio thread, safely.

RNS and LXMF call back on threads of their own, and both start before trio does. A `ThreadBridge`
keeps what arrives before `bind()` (bounded), then forwards every callback with
`TrioToken.run_sync_soon`, so all transport state is touched on the trio thread only and needs no
lock. Two traps (LAB.md) are handled here once: an exception escaping a `run_sync_soon` callback is
a TrioInternalError that ends the whole node, so callbacks run guarded; and posting after trio has
finished raises `RunFinishedError`, which is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import trio

log = logging.getLogger(__name__)

EARLY_CALLBACKS = 1000


class ThreadBridge:
    """`post()` from any thread; `bind()` once, on the trio thread, when the transport runs."""

    def __init__(self, what: str, on_drop: Callable[[], None]) -> None:
        self.what = what
        self._on_drop = on_drop  # called (under the lock) for callbacks dropped before bind
        self._token: trio.lowlevel.TrioToken | None = None
        self._early: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._lock = threading.Lock()

    def bind(self) -> None:
        """Take the current trio token and run what arrived before, in order."""
        with self._lock:
            self._token = trio.lowlevel.current_trio_token()
            early, self._early = self._early, []
        for fn, args in early:
            self._guarded(fn, *args)

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn(*args)` on the trio thread soon. Never raises."""
        token = self._token
        if token is None:
            with self._lock:
                if self._token is None:
                    if len(self._early) < EARLY_CALLBACKS:
                        self._early.append((fn, args))
                    else:
                        self._on_drop()
                    return
                token = self._token
        with contextlib.suppress(trio.RunFinishedError):  # trio is shutting down: drop it
            token.run_sync_soon(self._guarded, fn, *args)

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("error handling a %s callback", self.what)
