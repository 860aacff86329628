"""RNS's link packet callbacks run on its reader thread, not a thread per packet, for the
callbacks kai-mesh marks, and only for those (`transports/reticulum/_inline.py`)."""

from __future__ import annotations

import sys
import threading

import RNS  # noqa: F401 - RNS.Link must be loaded for install() to patch it

from transports.reticulum._inline import _Threading, inline, install


def test_a_marked_target_runs_at_start_on_the_calling_thread() -> None:
    ran: list[tuple[bytes, str]] = []

    def callback(message: bytes, packet: object) -> None:
        ran.append((message, threading.current_thread().name))

    shim = _Threading(threading)
    thread = shim.Thread(target=inline(callback), args=(b"m", None))
    thread.daemon = True
    assert not ran
    thread.start()
    assert ran == [(b"m", threading.current_thread().name)]


def test_other_targets_still_get_a_real_thread_and_the_module_is_patched_once() -> None:
    shim = _Threading(threading)
    done = threading.Event()
    thread = shim.Thread(target=done.set)
    assert isinstance(thread, threading.Thread)
    thread.start()
    assert done.wait(5)
    assert shim.Lock is threading.Lock  # everything else is the real module
    install()
    install()
    patched = sys.modules["RNS.Link"].threading
    assert isinstance(patched, _Threading) and patched._real is threading
