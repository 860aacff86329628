"""Log and events: every push the node sends (log records and the events of every topic),
following, pausable, filtered by level and by text (a topic or a word), bounded.

The view keeps the last `LOG_LIMIT` lines; the `Log` widget has the same bound, and appending
is incremental: each paint adds only the lines that came since the previous one. A paused log
keeps collecting (the view is bounded) and catches up on resume; changing a filter redraws from
the view's buffer.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Input, Log, Static

from tui.model import LEVELS, LOG_LIMIT, LogLine, NodeView
from tui.screens.base import MeshScreen
from tui.widgets import KeyInput, show


class LogScreen(MeshScreen):
    MODE = "log"
    SHOWS_LINES = True
    AUTO_FOCUS = "#log"
    HELP = "Follow the node. space: pause, l: minimum level, /: filter text (Escape leaves it)."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "pause", "Pause", id="log.pause"),
        Binding("l", "level", "Level", id="log.level"),
        Binding("slash", "filter", "Filter", id="log.filter"),
        Binding("c", "clear", "Clear", id="log.clear"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.level = "debug"
        self.text = ""
        self.shown = 0  # view.lines_added at the last paint

    def compose_body(self) -> ComposeResult:
        yield Static(id="log-state")
        yield KeyInput(placeholder="filter: a topic or any text", id="log-filter")
        yield Log(max_lines=LOG_LIMIT, id="log", auto_scroll=True)

    def on_mount(self) -> None:
        self.query_one("#log-filter", KeyInput).display = False

    def keep(self, line: LogLine) -> bool:
        if line.level in LEVELS and LEVELS.index(line.level) < LEVELS.index(self.level):
            return False
        return not self.text or self.text.lower() in line.render().lower()

    def paint(self, view: NodeView) -> None:
        state = "[$warning]paused[/]" if self.paused else "[$success]following[/]"
        show(
            self.query_one("#log-state", Static),
            f"{state}  level ≥ [b]{self.level}[/b]  filter [b]{self.text or '—'}[/b]  "
            f"{len(view.lines)} kept, {view.events_seen} events",
            layout=False,
        )
        if self.paused:
            return
        log = self.query_one("#log", Log)
        new = view.lines_added - self.shown
        if new <= 0:
            return
        lines = list(view.lines)[-min(new, len(view.lines)) :]
        self.shown = view.lines_added
        log.write_lines([line.render() for line in lines if self.keep(line)])

    def redraw(self) -> None:
        log = self.query_one("#log", Log)
        log.clear()
        view = self.view
        self.shown = view.lines_added
        log.write_lines([line.render() for line in view.lines if self.keep(line)])
        self.mesh_app.paint_now()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.mesh_app.paint_now()

    def action_level(self) -> None:
        self.level = LEVELS[(LEVELS.index(self.level) + 1) % len(LEVELS)]
        self.redraw()

    def action_clear(self) -> None:
        self.query_one("#log", Log).clear()

    def action_filter(self) -> None:
        box = self.query_one("#log-filter", KeyInput)
        box.display = True
        box.focus()

    @on(Input.Changed, "#log-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.text = event.value.strip()
        self.redraw()

    @on(Input.Submitted, "#log-filter")
    def _filter_done(self) -> None:
        self.query_one("#log", Log).focus()

    def key_escape(self) -> None:
        box = self.query_one("#log-filter", KeyInput)
        if box.has_focus:
            box.display = bool(box.value)
            self.query_one("#log", Log).focus()
