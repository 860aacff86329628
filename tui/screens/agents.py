"""Agents: the agents this node hosts, their state, work and failures.

The control socket has no method to restart one agent (the node restarts a failed agent by
itself, with backoff): the screen says so rather than offering a key that cannot work.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.markup import escape
from textual.widgets import DataTable, Static

from tui.model import NodeView
from tui.screens.base import MeshScreen
from tui.widgets import cell, state_cell

COLUMNS = ("agent", "state", "served", "errors", "restarts", "busy", "intents")


class AgentsScreen(MeshScreen):
    MODE = "agents"
    HELP = "The node's agents. The node restarts a failed agent by itself, with backoff."

    def compose_body(self) -> ComposeResult:
        table: DataTable[Text] = DataTable(id="agents-table", cursor_type="row")
        for column in COLUMNS:
            table.add_column(column, key=column)
        yield table
        yield Static(id="agents-note")

    def paint(self, view: NodeView) -> None:
        table = self.query_one("#agents-table", DataTable)
        table.clear()
        for agent in view.agents:
            table.add_row(
                cell(agent.get("name")),
                state_cell(str(agent.get("state"))),
                cell(agent.get("served", 0)),
                cell(agent.get("errors", 0)),
                cell(agent.get("restarts", 0)),
                cell(f"{agent.get('in_flight', 0)}/{agent.get('concurrency', '?')}"),
                cell(", ".join(agent.get("intents") or [])),
                key=str(agent.get("name")),
            )
        reasons = [
            f"{escape(str(a.get('name')))}: {escape(str(a.get('reason')))}"
            for a in view.agents
            if a.get("reason")
        ]
        note = "\n".join(reasons) or "all agents report no problem"
        self.query_one("#agents-note", Static).update(
            note + "\n[dim]restart: not offered by the control socket yet[/dim]"
        )
