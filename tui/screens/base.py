"""What every screen has: a tab line naming the screens and the node, a banner that says plainly
when the node is not running (and how to start it), the body, and the footer of keys.

A screen draws from the `NodeView` in `paint()`; the app calls it at most ten times a second, and
only when the view changed. Screens never talk to the socket themselves: actions go through
`self.link` (tui/link.py), whose replies land in the view like everything else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import events
from textual.app import App, ComposeResult
from textual.containers import Vertical
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Input, Static

from tui.model import NodeView
from tui.widgets import KeyBar, show

if TYPE_CHECKING:
    from tui.app import MeshApp
    from tui.link import NodeLink

#: (mode name, tab label) in key order: 1 Overview … 7 Governance.
TABS: tuple[tuple[str, str], ...] = (
    ("overview", "Overview"),
    ("peers", "Peers"),
    ("messages", "Messages"),
    ("log", "Log"),
    ("agents", "Agents"),
    ("state", "State"),
    ("governance", "Gov"),
)


def width_classes(app: App[object]) -> dict[str, bool]:
    """The app's horizontal breakpoint classes for its width now, as Textual's screen sets
    them on resize: the widest breakpoint the width reaches, and none of the others."""
    points = sorted(app.HORIZONTAL_BREAKPOINTS or [])
    reached = [name for at, name in points if app.size.width >= at]
    return {name: bool(reached) and name == reached[-1] for _, name in points}


class MeshScreen(Screen[None]):
    """The frame around one screen's body."""

    MODE: ClassVar[str] = ""
    HELP = "Screens: 1-7 or F2-F8. ? or F1: help. Ctrl+P: commands. q: quit."
    #: Set once the body is mounted: a screen switched to is resumed (and the clock may tick)
    #: before its widgets exist, and painting then would find none (found on a real pty).
    composed = False
    #: Draws the view's lines (events and logs): repainted when lines come, not only on data.
    SHOWS_LINES: ClassVar[bool] = False

    def compose(self) -> ComposeResult:
        # The width class (-narrow/-wide) is set before the widgets mount, not after: Textual
        # sets it on the screen's first resize, and a class that changes then restyles every
        # widget of the screen again (a fifth of a first visit, profiled).
        self.update_classes(width_classes(self.app))
        yield Static(id="tabs")
        yield Static(id="banner")
        with Vertical(id="body"):
            yield from self.compose_body()
        yield KeyBar(id="keys")

    def compose_body(self) -> ComposeResult:
        yield from ()

    @property
    def mesh_app(self) -> MeshApp:
        from tui.app import MeshApp

        assert isinstance(self.app, MeshApp)
        return self.app

    @property
    def link(self) -> NodeLink | None:
        return self.mesh_app.link

    @property
    def view(self) -> NodeView:
        return self.mesh_app.view

    def on_mount(self) -> None:
        self.composed = True
        self.mesh_app.paint_now()

    def _on_screen_resume(self, event: events.ScreenResume) -> None:
        """Runs before Textual's own handler (Screen's, further up the MRO), which re-applies
        the CSS of every widget of a resumed screen: 6 ms a switch, a third of key → repaint.
        Nothing here changes while the screen is hidden but what Textual tracks by itself: a
        new theme or stylesheet (`switch_mode` applies it through `_css_update_count`) and the
        width classes after a resize (tests/tui/test_widgets.py checks both)."""
        event.refresh_styles = False

    def on_screen_resume(self) -> None:
        self.mesh_app.paint_now()

    def paint_frame(self, view: NodeView) -> None:
        tabs = []
        for number, (mode, label) in enumerate(TABS, 1):
            text = f"{number} {label}"
            tabs.append(f"[reverse b] {text} [/]" if mode == self.MODE else f" {text} ")
        name = escape(str(view.status.get("name") or "kai-mesh"))
        state = "[$success]●[/]" if view.connected else "[$error]○[/]"
        show(self.query_one("#tabs", Static), "".join(tabs) + f" {state} {name}", layout=False)
        banner = self.query_one("#banner", Static)
        if view.connected:
            banner.display = False
        else:
            banner.display = True
            show(
                banner,
                f"[b]{escape(view.problem)}[/b]\nStart it with: [b]{escape(view.start_command)}[/b]"
                f"  (socket {escape(view.socket)}). This screen reconnects by itself.",
            )

    def paint(self, view: NodeView) -> None:
        """Draw the body from `view` (called only when it changed)."""

    def key_escape(self) -> None:
        """Leave a text field, so letters and digits act on the screen again."""
        if isinstance(self.focused, Input):
            self.set_focus(None)
