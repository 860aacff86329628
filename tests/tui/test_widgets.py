"""The repaint economies (tui/widgets.py, the app's switch): each keeps what the screen shows
right while doing less. bench/tui.py measures what they buy; these check they lose nothing."""

from __future__ import annotations

from typing import Any

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Static

from tests.tui.conftest import on_asyncio
from tests.tui.fixture_view import fixture_view
from tui.app import MeshApp
from tui.screens.peers import PeersScreen
from tui.widgets import KeyBar, cell, show, sync_rows


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        table: DataTable[Text] = DataTable(id="t", cursor_type="row")
        table.add_column("a", key="a")
        table.add_column("b", key="b")
        yield table
        yield Static("x", id="s")


def rows(*items: tuple[str, str, str]) -> list[tuple[str, tuple[Text, ...]]]:
    return [(key, (cell(a), cell(b, "red" if b == "bad" else ""))) for key, a, b in items]


def shown(table: DataTable[Text]) -> list[tuple[str, str, str]]:
    return [
        (str(key.value), *(str(c) for c in table.get_row(key)))  # type: ignore[misc]
        for key in table.rows
    ]


@on_asyncio
async def test_sync_rows_updates_in_place_and_keeps_the_cursor() -> None:
    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(DataTable)
        sync_rows(table, rows(("k1", "1", "ok"), ("k2", "2", "ok"), ("k3", "3", "ok")))
        table.move_cursor(row=1)
        calls: list[Any] = []
        original = table.update_cell
        table.update_cell = lambda *a, **k: calls.append(a) or original(*a, **k)  # type: ignore[method-assign]
        sync_rows(table, rows(("k1", "1", "ok"), ("k2", "2", "bad"), ("k3", "3", "ok")))
        assert [c[:2] for c in calls] == [("k2", "b")]  # only the changed cell
        plain = rows(("k1", "1", "ok"), ("k2", "2", "ok"), ("k3", "3", "ok"))
        plain[1] = ("k2", (cell("2"), cell("bad")))  # the same text without its style
        sync_rows(table, plain)
        assert len(calls) == 2  # a change of style alone is a change (Text == ignores it)
        sync_rows(table, rows(("k2", "2", "ok"), ("k3", "3", "ok"), ("k4", "4", "new")))
        assert shown(table) == [("k2", "2", "ok"), ("k3", "3", "ok"), ("k4", "4", "new")]
        assert table.cursor_row == 0 and _cursor(table) == "k2"  # k1 went: still on k2
        sync_rows(table, rows(("k4", "4", "new"), ("k2", "2", "ok")))  # a new order: rebuilt
        assert shown(table) == [("k4", "4", "new"), ("k2", "2", "ok")]
        assert _cursor(table) == "k2"
        await pilot.pause()


def _cursor(table: DataTable[Text]) -> str:
    return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)


@on_asyncio
async def test_show_leaves_an_unchanged_widget_alone() -> None:
    app = TableApp()
    async with app.run_test() as pilot:
        static = app.query_one("#s", Static)
        updates: list[object] = []
        original = static.update
        static.update = lambda *a, **k: updates.append(a) or original(*a, **k)  # type: ignore[method-assign]
        show(static, "x")
        assert updates == []
        show(static, "y")
        assert updates == [("y",)] and static.content == "y"
        await pilot.pause()


@on_asyncio
async def test_the_key_bar_follows_the_screen_and_its_rebound_keys() -> None:
    app = MeshApp(None, view=fixture_view())
    async with app.run_test(size=(80, 24)) as pilot:
        bar = lambda: str(app.screen.query_one(KeyBar).render())  # noqa: E731
        assert "Help" in bar() and "Heard" not in bar()
        await pilot.press("2")
        await pilot.pause()
        assert isinstance(app.screen, PeersScreen)
        assert "f Heard" in bar() and "t Transport" in bar() and "q Quit" in bar()
        app.set_keymap({"peers.heard_filter": "h"})
        await pilot.pause()
        assert "h Heard" in bar()


@on_asyncio
async def test_a_switch_holds_repaints_only_until_the_next_turn() -> None:
    """Textual holds repaints 50 ms after `switch_mode`; the TUI ends the hold at once."""
    app = MeshApp(None, view=fixture_view())
    async with app.run_test(size=(80, 24)) as pilot:
        app.switch_mode("peers")
        assert app._batch_count == 1
        await pilot.pause(0.01)
        assert app._batch_count == 0


@pytest.mark.parametrize(("start", "then", "wide"), [((120, 36), (80, 24), False)])
@on_asyncio
async def test_a_screen_resumed_after_a_resize_elsewhere_takes_the_new_width(
    start: tuple[int, int], then: tuple[int, int], wide: bool
) -> None:
    """Only the visible screen gets the width classes on a resize; the others get them as they
    resume (their styles are not recomputed wholesale any more)."""
    app = MeshApp(None, view=fixture_view())
    async with app.run_test(size=start) as pilot:
        await pilot.press("2")
        await pilot.pause()
        assert app.screen.has_class("-wide")
        await pilot.press("1")
        await pilot.resize_terminal(*then)
        await pilot.pause()
        await pilot.press("2")
        await pilot.pause()
        assert app.screen.has_class("-wide") is wide
        assert app.screen.has_class("-narrow") is not wide


@on_asyncio
async def test_a_theme_chosen_on_one_screen_restyles_the_others_as_they_resume() -> None:
    app = MeshApp(None, view=fixture_view())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        await pilot.pause()
        table_before = app.screen.query_one(DataTable).styles.background
        await pilot.press("1")
        await pilot.pause()
        app.action_toggle_dark()  # on the Overview; the Peers screen is hidden
        await pilot.pause()
        overview_now = app.screen.styles.background
        await pilot.press("2")
        await pilot.pause()
        assert isinstance(app.screen, PeersScreen)
        assert app.screen.styles.background == overview_now
        assert app.screen.query_one(DataTable).styles.background != table_before


@on_asyncio
async def test_showing_each_screen_the_first_time_does_not_reparse_the_stylesheet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Textual re-tokenizes every stylesheet when a mode's screen is first shown (twice); that
    was most of a first visit's cost. A theme change still reparses (and restyles)."""
    from textual.css.stylesheet import Stylesheet

    reparses: list[int] = []
    original = Stylesheet.reparse

    def counted(self: Stylesheet) -> None:
        reparses.append(1)
        original(self)

    monkeypatch.setattr(Stylesheet, "reparse", counted)
    app = MeshApp(None, view=fixture_view())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        at_start = len(reparses)
        for key in "2345671":
            await pilot.press(key)
            await pilot.pause()
        assert app.current_mode == "overview"
        assert len(reparses) == at_start
        assert app.screen.has_class("-narrow")
        app.action_toggle_dark()
        await pilot.pause()
        assert len(reparses) > at_start
