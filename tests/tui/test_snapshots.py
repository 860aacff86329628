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
from tui.config import TuiConfig
from tui.screens.base import TABS
from tui.screens.invite import InviteScreen

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


@pytest.mark.parametrize("theme", ["textual-light", "ansi-dark"])
@pytest.mark.parametrize("number", [1, 2, 5], ids=lambda n: TABS[n - 1][0])
@on_asyncio
async def test_light_and_16_colour_snapshot(number: int, theme: str) -> None:
    """A light terminal, and the 16 ANSI colours of the terminal's own palette (`ansi-dark`
    draws with the terminal's colours only: what a 16-colour terminal or `TERM=linux` shows)."""
    app = MeshApp(None, view=fixture_view(), config=TuiConfig(theme=theme))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(str(number))
        await pilot.pause(0.25)
        app.paint_now()
        await pilot.pause()
        check(f"{TABS[number - 1][0]}_{theme}_80x24", app.export_screenshot())


@on_asyncio
async def test_invite_qr_snapshot() -> None:
    """The invite's QR code with room to scan it (an invite token needs ~40 lines)."""
    app = MeshApp(None, view=fixture_view())
    async with app.run_test(size=(100, 50)) as pilot:
        await pilot.press("7", "i")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, InviteScreen)
        screen.show_invite(
            {"id": "ab" * 32, "status": "certified", "role": "member", "token": TOKEN}
        )
        await pilot.pause()
        check("invite_100x50", app.export_screenshot())


@on_asyncio
async def test_service_detail_snapshot() -> None:
    app = MeshApp(None, view=fixture_view())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("5", "tab", "enter")
        await pilot.pause()
        check("service_detail_80x24", app.export_screenshot())


@on_asyncio
async def test_proposal_votes_snapshot() -> None:
    app = MeshApp(None, view=fixture_view())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("7", "enter")
        await pilot.pause()
        check("proposal_votes_80x24", app.export_screenshot())


#: The shape of a real invite token (tests/tui/test_live.py makes real ones), fixed here.
TOKEN = "kaimesh1:" + "Az09-_" * 70
