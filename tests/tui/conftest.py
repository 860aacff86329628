"""Fixtures of the TUI tests: a real node on a throw-away home, the developer's own tui.toml kept
out (as Harlequin's tests do), and a waiting helper for Pilot."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Log, Static, Tree

from tests.cli.helpers import Home, fresh_home, stop


@pytest.fixture(autouse=True)
def _own_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAI_MESH_TUI_CONFIG", str(tmp_path / "tui.toml"))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.fixture
def home() -> Iterator[Home]:
    with fresh_home() as h:
        done = h.run("init", "--local-only", "--name", "alpha")
        assert done.returncode == 0, done.stderr
        yield h


@pytest.fixture
def node(home: Home) -> Iterator[Home]:
    proc = home.start()
    try:
        yield home
    finally:
        home.run("stop")
        stop(proc)


def socket_of(home: Home) -> Path:
    return home.path / "run" / "control.sock"


async def until(pilot: Pilot[None], cond: Callable[[], bool], wait: float = 10.0) -> None:
    """Let the app run until `cond()` holds; fail after `wait` seconds."""
    deadline = time.monotonic() + wait
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {wait} s; the screen shows:\n{text_of(pilot)}")
        await pilot.pause(0.05)


def text_of(pilot: Pilot[None]) -> str:
    """What the current screen shows, as plain text: statics, table cells, tree labels, log."""
    screen = pilot.app.screen
    parts: list[str] = [str(w.render()) for w in screen.query(Static) if w.display]
    for table in screen.query(DataTable):
        for row in range(table.row_count):
            parts.append(" ".join(str(c) for c in table.get_row_at(row)))
    for tree in screen.query(Tree):
        stack = [tree.root]
        while stack:
            node = stack.pop()
            parts.append(str(node.label))
            stack.extend(node.children)
    for log in screen.query(Log):
        parts.extend(str(line) for line in log.lines)
    return "\n".join(parts)


def on_asyncio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on asyncio (Textual's loop): the project's pytest runs async tests on
    trio (`trio_mode`), so TUI tests are plain functions that run their body here."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run
