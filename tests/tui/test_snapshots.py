"""Snapshots of every screen at 80×24 and 120×36, on Textual's own SVG export (the way Harlequin
does it: pytest-textual-snapshot pins pytest < 9). The app draws a fixed view (no node, no clock),
so the pictures only change when the TUI does. `TUI_SNAPSHOT_UPDATE=1` rewrites them; a missing
snapshot fails until then."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tui.conftest import on_asyncio
from tests.tui.fixture_view import fixture_view
from tui.app import MeshApp
from tui.screens.base import TABS

SNAPSHOTS = Path(__file__).parent / "snapshots"
SIZES = [(80, 24), (120, 36)]


def check(name: str, svg: str) -> None:
    path = SNAPSHOTS / f"{name}.svg"
    if os.environ.get("TUI_SNAPSHOT_UPDATE"):
        path.write_text(svg)
        return
    assert path.exists(), f"no snapshot {path.name}: run with TUI_SNAPSHOT_UPDATE=1 and review it"
    assert svg == path.read_text(), f"{path.name} changed: review, then TUI_SNAPSHOT_UPDATE=1"


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("number", range(1, len(TABS) + 1), ids=lambda n: TABS[n - 1][0])
@on_asyncio
async def test_screen_snapshot(number: int, size: tuple[int, int]) -> None:
    app = MeshApp(None, view=fixture_view())
    async with app.run_test(size=size) as pilot:
        await pilot.press(str(number))
        await pilot.pause(0.25)  # one paint tick
        app.paint_now()
        await pilot.pause()
        check(f"{TABS[number - 1][0]}_{size[0]}x{size[1]}", app.export_screenshot())


@on_asyncio
async def test_not_running_snapshot() -> None:
    app = MeshApp(None, start_command="kai-mesh --home /srv/node run")
    app.view.problem = "the node is not running (no node listens on '/srv/node/run/control.sock')"
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.25)
        check("not_running_80x24", app.export_screenshot())
