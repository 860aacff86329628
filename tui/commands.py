"""The command palette's kai-mesh commands (Ctrl+P): go to a screen, switch dark/light, help."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.screens.base import TABS


class MeshCommands(Provider):
    def _commands(self) -> list[tuple[str, str, object]]:
        from tui.app import MeshApp

        app = self.app
        assert isinstance(app, MeshApp)
        out: list[tuple[str, str, object]] = [
            (f"Go to {label}", f"show the {label} screen", partial(app.switch_mode, mode))
            for mode, label in TABS
        ]
        out.append(
            ("Toggle dark/light", "switch between a dark and a light theme", app.action_toggle_dark)
        )
        out.append(("Help", "keys of this screen and their ids", app.action_help))
        out.append(("Quit", "leave the TUI (the node keeps running)", app.action_quit))
        return out

    async def discover(self) -> Hits:
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)  # type: ignore[arg-type]

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)  # type: ignore[arg-type]
