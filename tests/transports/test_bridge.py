"""ThreadBridge: callbacks from foreign threads reach trio in order, early ones kept, none raise."""

from __future__ import annotations

import threading

import trio

from transports import _bridge
from transports._bridge import ThreadBridge


async def test_early_callbacks_are_kept_then_run_in_order() -> None:
    seen: list[int] = []
    drops: list[int] = []
    bridge = ThreadBridge("test", lambda: drops.append(1))
    thread = threading.Thread(target=lambda: [bridge.post(seen.append, i) for i in range(5)])
    thread.start()
    thread.join()
    assert seen == []  # nothing runs before bind
    bridge.bind()
    assert seen == [0, 1, 2, 3, 4]
    done = trio.Event()
    later = threading.Thread(target=lambda: (bridge.post(seen.append, 5), bridge.post(done.set)))
    later.start()
    with trio.fail_after(5):
        await done.wait()
    later.join()
    assert seen[-1] == 5 and drops == []


async def test_a_raising_callback_is_logged_not_raised_and_overflow_is_counted(
    monkeypatch: object,
) -> None:
    drops: list[int] = []
    bridge = ThreadBridge("test", lambda: drops.append(1))
    for _ in range(_bridge.EARLY_CALLBACKS + 3):
        bridge.post(lambda: None)
    assert len(drops) == 3

    def boom() -> None:
        raise RuntimeError("callback bug")

    bridge.bind()
    done = trio.Event()
    bridge.post(boom)
    bridge.post(done.set)
    with trio.fail_after(5):
        await done.wait()  # the node is still alive after the raising callback
