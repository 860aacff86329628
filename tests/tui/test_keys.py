"""Key rules of the issue: no binding needs Ctrl-S, Ctrl-Q or Ctrl-W, in any screen or widget the
TUI shows; every binding of ours has an id; tui.toml rebinds keys by id."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.binding import Binding

from tests.tui.conftest import on_asyncio, text_of
from tests.tui.fixture_view import fixture_view
from tui.app import MeshApp
from tui.config import load_tui_config
from tui.screens.base import TABS
from tui.screens.overview import OverviewScreen
from tui.screens.peers import PeersScreen
from tui.widgets import KeyInput

FORBIDDEN = {"ctrl+s", "ctrl+q", "ctrl+w"}


@on_asyncio
async def test_no_forbidden_keys_and_every_binding_has_an_id() -> None:
    app = MeshApp(None, view=fixture_view())
    async with app.run_test(size=(80, 24)) as pilot:
        for number in range(1, len(TABS) + 1):
            await pilot.press(str(number))
            await pilot.pause()
            for node in [app, app.screen, *app.screen.walk_children()]:
                for key, _binding in node._bindings:
                    assert key not in FORBIDDEN, f"{node} binds {key}"
                for cls in type(node).__mro__:
                    if not cls.__module__.startswith("tui.") or cls is KeyInput:
                        continue  # KeyInput keeps Textual's own Input bindings (minus Ctrl-W)
                    for binding in cls.__dict__.get("BINDINGS", []):
                        assert isinstance(binding, Binding)
                        assert binding.id, f"{cls.__name__} {binding.key} has no id"


@on_asyncio
async def test_keys_are_rebound_from_tui_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "rebind.toml"
    config.write_text('[keys]\n"screen.peers" = "x"\n')
    monkeypatch.setenv("KAI_MESH_TUI_CONFIG", str(config))
    app = MeshApp(None, view=fixture_view(), config=load_tui_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, PeersScreen)
        await pilot.press("1", "2")  # the old key no longer switches
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen)


@on_asyncio
async def test_peers_filter_by_transport_and_by_interface() -> None:
    view = fixture_view()
    view.peers[0] = {**view.peers[0], "transport": "nostr", "interface": "relay.example"}
    app = MeshApp(None, view=view)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, PeersScreen)
        names = lambda: [p["name"] for p in screen.shown_peers(view)]  # noqa: E731
        assert names() == ["barn", "mill", "ridge"]
        await pilot.press("t")  # transports sorted: nostr, then reticulum
        assert names() == ["ridge"] and "via nostr" in text_of(pilot)
        await pilot.press("t")
        assert names() == ["barn", "mill"]
        await pilot.press("t", "i")  # back to every transport; interfaces: lora0 first
        assert names() == ["barn", "mill"] and "iface lora0" in text_of(pilot)


@on_asyncio
async def test_a_screen_switched_to_is_not_painted_before_its_widgets_exist() -> None:
    """On a real terminal the 10 Hz tick could paint a mode switched to before its body was
    mounted, and the TUI died with NoMatches (found by bench/tui.py on a pty)."""
    app = MeshApp(None, view=fixture_view())
    async with app.run_test(size=(80, 24)) as pilot:
        for mode in ("peers", "agents", "state", "governance", "messages", "log"):
            app.switch_mode(mode)  # not awaited: the screen exists, its widgets may not yet
            app.paint_now()
            app.view.touch()
            await pilot.pause()
        await pilot.pause(0.25)
        assert app.painted == app.view.version  # the tick painted it once it was mounted
