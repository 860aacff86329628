"""`?` / F1: the keys of the screen and of the app (with the ids to rebind them in tui.toml), and
what the focused widget does, in the manner of Posting's help screen."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import Static


def describe_keys(owner: Screen[object] | Widget | object, title: str) -> list[str]:
    bindings = getattr(owner, "_bindings", None)
    if bindings is None:
        return []
    lines = [f"[b]{escape(title)}[/b]"]
    seen: set[str] = set()
    for _key, binding in bindings:
        name = binding.id or binding.action
        if name in seen or binding.system:
            continue
        seen.add(name)
        keys = ", ".join(k for k, b in bindings if (b.id or b.action) == name)
        lines.append(
            f"  {escape(keys):16} {escape(binding.description or binding.action):14} "
            f"[dim]{escape(binding.id or '')}[/dim]"
        )
    return lines if len(lines) > 1 else []


class HelpScreen(ModalScreen[None]):
    """Shown over the current screen; Escape, q, ? or F1 close it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "app.pop_screen", "Close", id="help.close"),
    ]

    def __init__(self, screen: Screen[object], focused: Widget | None) -> None:
        super().__init__()
        self.under = screen
        self.focused = focused

    def compose(self) -> ComposeResult:
        lines = ["[b]kai-mesh TUI: help[/b]  (Escape closes)", ""]
        focus_help = getattr(self.focused, "HELP", None) if self.focused is not None else None
        screen_help = getattr(self.under, "HELP", None)
        if focus_help:
            lines += [f"[b]Focused[/b] ({type(self.focused).__name__}): {escape(focus_help)}", ""]
        if screen_help:
            lines += [f"[b]This screen[/b]: {escape(screen_help)}", ""]
        lines += describe_keys(self.under, "Keys of this screen")
        lines += describe_keys(self.app, "Keys everywhere")
        lines += [
            "",
            'Rebind a key by its id in tui.toml under [keys], e.g. "screen.peers" = "p,f3".',
            "Ctrl+P opens the command palette (screens, theme, help, quit).",
        ]
        with VerticalScroll(classes="dialog", id="help"):
            yield Static("\n".join(lines))

    def on_mount(self) -> None:
        # Keys go to the focused widget's chain: keep focus here, not on the screen below.
        self.query_one("#help", VerticalScroll).focus()
