"""Small widgets every screen shares.

`KeyBar` is the footer of keys, drawn as one line of text (see its docstring for why).
`KeyInput` is Textual's `Input` without its Ctrl-W binding (delete word): Ctrl-W closes the
window in some terminals and browsers' web terminals, and the issue rules out Ctrl-S/Q/W.
Alt-Backspace and Ctrl-U still edit by word and line.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import App
from textual.binding import Binding, BindingType
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

FORBIDDEN_KEYS = frozenset({"ctrl+s", "ctrl+q", "ctrl+w"})


def _allowed(binding: BindingType) -> bool:
    if isinstance(binding, Binding):
        return not set(binding.key.split(",")) & FORBIDDEN_KEYS
    return True


class KeyInput(Input, inherit_bindings=False):
    """A one-line input. Enter submits; Escape leaves it so letter keys act on the screen."""

    HELP = "Type here. Enter submits, Escape returns to the screen's keys."
    BINDINGS: ClassVar[list[BindingType]] = [b for b in Input.BINDINGS if _allowed(b)]


#: Table cells are Rich `Text`, never markup: node and agent names come from the network, and
#: DataTable parses plain strings as Rich markup. Named ANSI colours stay readable on dark and
#: light themes and in 16 colours; the symbol carries the state without colour too.
STATE_CELLS = {
    "alive": ("● alive", "green"),
    "ready": ("● ready", "green"),
    "suspect": ("◐ suspect", "yellow"),
    "restarting": ("◐ restarting", "yellow"),
    "failed": ("✗ failed", "red"),
    "stopped": ("■ stopped", "red"),
}


def cell(text: object, style: str = "") -> Text:
    return Text(str(text), style=style, no_wrap=True, overflow="ellipsis")


def state_cell(state: str) -> Text:
    label, style = STATE_CELLS.get(state, (state, ""))
    return cell(label, style)


class KeyBar(Static):
    """The footer: the keys the screen answers now, as one line of text.

    Textual's `Footer` recomposes a widget per key (with CSS matching for each) every time the
    bindings change, which is on every screen switch: profiled on a pty under a storm of events,
    that was most of a key press's 75 ms. One `Static` whose text changes only when the keys do
    costs a string comparison instead.
    """

    DEFAULT_CSS = """
    KeyBar {
        dock: bottom; height: 1; padding: 0 1;
        background: $footer-background; color: $footer-description-foreground;
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.shown = ""

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self.bindings_changed)
        self.bindings_changed(self.screen)

    def bindings_changed(self, screen: Screen[object]) -> None:
        if not self.is_attached or screen is not self.screen:
            return
        text = key_line(self.app, screen)
        if text != self.shown:
            self.shown = text
            self.update(text)


def key_line(app: App[object], screen: Screen[object]) -> str:
    """`key description` for each shown binding of `screen`, one per action, in order."""
    parts: list[str] = []
    seen: set[str] = set()
    for _node, binding, enabled, _tooltip in screen.active_bindings.values():
        if not binding.show or binding.action in seen:
            continue
        seen.add(binding.action)
        key = escape(app.get_key_display(binding))
        style = "b $footer-key-foreground" if enabled else "dim"
        parts.append(f"[{style}]{key}[/] {escape(binding.description)}")
    return "  ".join(parts)


def show(widget: Static, content: str, *, layout: bool = True) -> None:
    """Put `content` in `widget` if it differs from what is there.

    `Static.update` always asks for a layout of the whole screen, even for the same text; the
    screens repaint every widget from the view up to ten times a second, so an unchanged widget
    must cost nothing. `layout=False` for a widget of fixed height whose text changes often
    (a status line): its new text cannot move anything else.
    """
    if widget.content != content:
        widget.update(content, layout=layout)


def sync_rows(
    table: DataTable[Text], rows: list[tuple[str, tuple[Text, ...]]], *, widen: bool = False
) -> None:
    """Make `table` show `rows` (key, cells) in order, touching only what changed.

    `clear()` and `add_row` for every paint relayout every row and drop the cursor (LAB.md:
    DataTable is a slow spot): when the keys are the same in the same order, only the cells that
    differ are updated in place; rows that went are removed and new ones appended when the
    others keep their order; any other change of order rebuilds the table, keeping the cursor
    on the same row key when it is still there. `widen`: a changed cell may widen its column
    (counters that grow), at the cost of a relayout when it does.
    """
    keys = [key for key, _ in rows]
    held = [str(k.value) for k in table.rows]
    wanted = set(keys)
    kept = [k for k in held if k in wanted]
    if kept != keys[: len(kept)]:  # an order change: rebuild, keep the cursor's row
        cursor = _cursor_key(table)
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if cursor in wanted:
            table.move_cursor(row=table.get_row_index(cursor))
        return
    gone = [key for key in held if key not in wanted]
    if gone:
        cursor = _cursor_key(table)
        for key in gone:
            table.remove_row(key)
        if cursor in wanted:  # the rows above it went: follow the row, not the index
            table.move_cursor(row=table.get_row_index(cursor))
    columns = [c.key for c in table.ordered_columns]
    for key, cells in rows[len(kept) :]:
        table.add_row(*cells, key=key)
    for key, cells in rows[: len(kept)]:
        old = table.get_row(key)
        for column, before, after in zip(columns, old, cells, strict=True):
            if not _same(before, after):
                table.update_cell(key, column, after, update_width=widen)


def _cursor_key(table: DataTable[Text]) -> str | None:
    if table.row_count == 0:
        return None
    return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)


def _same(before: object, after: Text) -> bool:
    """Equal text and style (`Text.__eq__` ignores the style, which carries a peer's state)."""
    return (
        isinstance(before, Text)
        and before.plain == after.plain
        and before.style == after.style
        and before.spans == after.spans
    )
