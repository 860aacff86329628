"""Link packet callbacks without a thread per packet.

What RNS 1.5 does (`RNS/Link.py`, `Link.__receive`): for every DATA packet on a link it decrypts
the packet on the interface's reader thread and then starts a fresh `threading.Thread` to call
the link's packet callback. A thread start costs ~50-100 µs of CPU and takes the GIL from
the reader, so a receiver with a callback caps at a few thousand packets/s and drops the rest in
the socket buffer (LAB.md). RNS's `Channel` does not start threads (its handlers run on the
reader thread), but it asks for a proof of every packet (115 bytes back on the air, the cost of a
second packet) and holds the sender to a window of 2 to 48 packets: a reliability layer kai-mesh
already has at the application level (outbox acks, asks, anti-entropy).

Our packet callback does almost nothing: it copies the bytes and posts them to trio with
`TrioToken.run_sync_soon`, which never blocks. So it may run on the reader thread itself. RNS has
no switch for that; `install()` gives the `RNS.Link` module a stand-in for its `threading` module
whose `Thread(...)` runs a target marked with `inline()` at `start()`, on the calling thread, and
builds a real thread for every other target (watchdogs, resource proofs, request handlers):
RNS's own behaviour is untouched except for the callbacks we mark. `bench/raw_rns.py --mode`
measures the three ways (thread, inline, channel) side by side.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

_MARK = "_kai_mesh_inline"


def inline(fn: Callable[..., None]) -> Callable[..., None]:
    """Mark `fn` to run on RNS's thread when RNS would start a thread for it. `fn` must not
    block and must not raise."""

    def call(*args: Any) -> None:
        fn(*args)

    setattr(call, _MARK, True)
    return call


class _Now:
    """A `threading.Thread` look-alike that runs its target in `start()`, on the caller."""

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        self._target, self._args = target, args
        self.daemon = True

    def start(self) -> None:
        self._target(*self._args)


class _Threading:
    """Stands in for the `threading` module inside `RNS.Link` only (see the docstring)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def Thread(self, *args: Any, **kwargs: Any) -> Any:
        target = kwargs.get("target")
        if target is not None and getattr(target, _MARK, False) and not args:
            return _Now(target, tuple(kwargs.get("args", ())))
        return self._real.Thread(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def install() -> None:
    """Let `inline()` callbacks run on RNS's link reader thread. Idempotent; call after
    `import RNS`, before links exist."""
    module = sys.modules["RNS.Link"]
    if not isinstance(getattr(module, "threading", None), _Threading):
        setattr(module, "threading", _Threading(threading))  # noqa: B010 - an untyped module
