"""The kai-mesh operator console: a Textual app that is a client of the node's control socket.

The app owns a `NodeView` (what is known) and a `NodeLink` (the connection that keeps it fresh,
run as a worker). A 10 Hz interval repaints the current screen when the view's version moved:
events are coalesced into the view and never repaint by themselves (LAB.md: per-event repaints
starve input). Screens are Textual modes, one per tab, switched by 1-7 or F2-F8.

Keys: only letters, digits and F-keys (no Ctrl-S/Ctrl-Q/Ctrl-W, which terminals, multiplexers
and flow control may eat); every binding has an id, and `tui.toml` rebinds them (tui/config.py).
Mouse is off unless asked for: over SSH split mouse sequences leak into inputs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar
from weakref import WeakKeyDictionary

from textual.app import App, ScreenStackError
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen

from tui.commands import MeshCommands
from tui.config import TuiConfig
from tui.help import HelpScreen
from tui.link import NodeLink
from tui.model import NodeView
from tui.screens.agents import AgentsScreen
from tui.screens.base import TABS, MeshScreen
from tui.screens.governance import GovernanceScreen
from tui.screens.log import LogScreen
from tui.screens.messages import MessagesScreen
from tui.screens.overview import OverviewScreen
from tui.screens.peers import PeersScreen
from tui.screens.state import StateScreen

log = logging.getLogger(__name__)

#: Repaint period: at most 10 paints a second, whatever the event rate.
PAINT_PERIOD = 0.1

CSS = """
#tabs { height: 1; background: $panel; }
#banner { background: $error-muted; color: $text; padding: 0 1; height: auto; }
#body { height: 1fr; }
.panel { padding: 0 1; height: auto; }
.-wide .panel { border: round $primary; }
.warning { background: $warning-muted; color: $text; padding: 0 1; height: auto; }
#ov-grid { grid-size: 1; grid-gutter: 0 1; height: auto; }
.-wide #ov-grid { grid-size: 2; }
#peers-split, #msg-split { height: 1fr; }
#peers-side { width: 30; height: auto; }
.-narrow #peers-split, .-narrow #msg-split { layout: vertical; }
.-narrow #peers-side { width: 100%; max-height: 7; }
#peers-filter, #log-state, #gov-head, #msg-check, #msg-options { height: 1; }
.field { height: 1; }
.field > Static { width: 9; }
#msg-form { width: 1fr; }
#msg-outbox-box { width: 1fr; }
.-narrow #msg-outbox-box { width: 100%; height: 7; }
#msg-reply-box { height: 1fr; border: round $primary; }
KeyInput { height: 1; border: none; padding: 0 1; margin-bottom: 0; width: 1fr; }
KeyInput:focus { background: $boost; }
#log { height: 1fr; }
#agents-table { height: auto; max-height: 8; }
#svc-title { height: 1; }
#svc-table { height: 1fr; }
#gov-proposals { height: 1fr; }
#gov-log { height: 1fr; }
.dialog { width: 76; max-width: 100%; height: auto; max-height: 90%; border: thick $primary;
          background: $surface; padding: 0 1; }
PeerDetail, ServiceDetail, ProposalDetail, InviteScreen, HelpScreen {
    align: center middle;
}
#invite-dialog { width: auto; min-width: 60; }
#invite-qr { width: auto; text-wrap: nowrap; }
"""


class MeshApp(App[None], inherit_bindings=False):
    """`link=None` draws a fixed `view` (snapshot tests); otherwise the link keeps it live."""

    TITLE = "kai-mesh"
    CSS = CSS
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012 (Textual's type)
    COMMANDS = App.COMMANDS | {MeshCommands}
    MODES: ClassVar[dict[str, type[MeshScreen]]] = {  # type: ignore[assignment]
        "overview": OverviewScreen,
        "peers": PeersScreen,
        "messages": MessagesScreen,
        "log": LogScreen,
        "agents": AgentsScreen,
        "state": StateScreen,
        "governance": GovernanceScreen,
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(
                f"{n},f{n + 1}", f"switch_mode('{mode}')", label, id=f"screen.{mode}", show=False
            )
            for n, (mode, label) in enumerate(TABS, 1)
        ),
        Binding("question_mark,f1", "help", "Help", id="app.help"),
        Binding("q,f10", "quit", "Quit", id="app.quit"),
        Binding("ctrl+c", "quit", "Quit", id="app.interrupt", show=False, priority=True),
        Binding(
            "ctrl+p", "command_palette", "Commands", id="app.palette", show=False, priority=True
        ),
    ]

    def __init__(
        self,
        socket: Path | None,
        *,
        start_command: str = "kai-mesh run",
        config: TuiConfig | None = None,
        view: NodeView | None = None,
    ) -> None:
        super().__init__()
        self.view = view or NodeView()
        self.view.start_command = start_command
        self.view.socket = "" if socket is None else str(socket)
        self.link = None if socket is None else NodeLink(socket, self.view)
        self.config = config or TuiConfig()
        self.painted = -1
        self.painted_lines = -1
        self.paints = 0
        #: What the CSS was last refreshed for (`refresh_css`).
        self._css_state: object = None
        self._css_seen: WeakKeyDictionary[Screen[object], object] = WeakKeyDictionary()
        if self.config.keys:
            self.set_keymap(self.config.keys)
        if self.config.theme:
            self.theme = self.config.theme

    def on_mount(self) -> None:
        self.switch_mode("overview")
        if self.link is not None:
            self.run_worker(self.link.run(), name="link", group="link", exclusive=True)
        self.set_interval(PAINT_PERIOD, self._tick)

    def _tick(self) -> None:
        if self.view.version != self.painted:
            self.paint_now()
            return
        screen = self._current_mesh_screen()
        lines_moved = self.view.lines_added != self.painted_lines
        if screen is not None and screen.SHOWS_LINES and lines_moved:
            self.paint_now()

    def paint_now(self) -> None:
        screen = self._current_mesh_screen()
        if screen is None:
            return
        if not screen.composed:  # a mode just switched to: its widgets are not mounted yet
            self.painted = -1  # so the next tick paints it
            return
        self.painted = self.view.version
        self.painted_lines = self.view.lines_added
        self.paints += 1
        try:
            with self.batch_update():
                screen.paint_frame(self.view)
                screen.paint(self.view)
        except NoMatches:
            # Seen once in the live tests since switches stopped waiting 50 ms (delay_update):
            # a screen found mounted whose frame was not queryable yet. Paint it next tick.
            log.debug("%s not ready to paint", type(screen).__name__)
            self.painted = -1

    def delay_update(self, delay: float = 0.05) -> None:
        """Textual's `switch_mode` holds every repaint for 50 ms, to mask a new screen's first
        layout. These screens are painted from the view as they resume (`on_screen_resume`), so
        there is nothing to mask, and on a pty those 50 ms were most of key → repaint
        (bench/tui.py traced it: paint done 2 ms after the key, first byte out 55 ms after).
        A millisecond still ends the batch after the switch (Textual's timers refuse 0)."""
        super().delay_update(0.001)

    def refresh_css(self, animate: bool = True) -> None:
        """Textual calls this on the first show of every mode's screen (its stamp of the CSS
        state is older than the app's), and each call re-tokenizes every stylesheet from
        scratch and restyles every widget: ~20 ms, twice per first visit, and its cleared parse
        cache made the new screen's widgets parse it all a third time (bench/tui.py: the first
        visits were the p99). A screen not mounted yet gets the current styles as its widgets
        mount, so it needs none of that. A full refresh still runs when the theme moved (a new
        theme, dark/light, the terminal's ANSI colours) and for a mounted screen that has not
        seen the current theme: a hidden mode's screen as it is shown again
        (tests/tui/test_widgets.py checks a theme changed on another screen)."""
        state = (
            self.get_css_variables(),
            self.theme,
            self.ansi_theme_dark,
            self.ansi_theme_light,
        )
        try:
            screen = self.screen
        except ScreenStackError:
            super().refresh_css(animate)
            return
        if state == self._css_state and (
            self._css_seen.get(screen) == state or not screen.is_mounted
        ):
            self._css_seen[screen] = state
            return
        self._css_state = state
        super().refresh_css(animate)
        for shown in self.screen_stack:
            self._css_seen[shown] = state

    def _current_mesh_screen(self) -> MeshScreen | None:
        for screen in reversed(self.screen_stack):
            if isinstance(screen, MeshScreen):
                return screen
        return None

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
            return
        self.push_screen(HelpScreen(self.screen, self.focused))

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"
