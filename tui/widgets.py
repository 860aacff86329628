"""Small widgets every screen shares.

`KeyInput` is Textual's `Input` without its Ctrl-W binding (delete word): Ctrl-W closes the
window in some terminals and browsers' web terminals, and the issue rules out Ctrl-S/Q/W.
Alt-Backspace and Ctrl-U still edit by word and line.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import Input

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
