"""Agents: the agents this node hosts, their state, work and failures; `r` restarts one.

The node restarts a failed agent by itself, with backoff; `r` asks it (`agent_restart`) to end
the selected agent's running incarnation now, which then goes `restarting` → `ready` on the
`agents` topic like any restart.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.markup import escape
from textual.widgets import DataTable, Static

from tui.client import ControlError, ControlTimeout
from tui.link import NotConnected
from tui.model import NodeView
from tui.screens.base import MeshScreen
from tui.widgets import cell, state_cell

COLUMNS = ("agent", "state", "served", "errors", "restarts", "busy", "intents")


class AgentsScreen(MeshScreen):
    MODE = "agents"
    HELP = "The node's agents. r: restart the selected one (the node also restarts failed ones)."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "restart", "Restart", id="agents.restart"),
    ]

    def compose_body(self) -> ComposeResult:
        table: DataTable[Text] = DataTable(id="agents-table", cursor_type="row")
        for column in COLUMNS:
            table.add_column(column, key=column)
        yield table
        yield Static(id="agents-note")

    def paint(self, view: NodeView) -> None:
        table = self.query_one("#agents-table", DataTable)
        wanted = [str(a.get("name")) for a in view.agents]
        if [str(k.value) for k in table.rows] != wanted:  # keep the cursor when nothing moved
            table.clear()
            for name in wanted:
                table.add_row(*(cell("") for _ in COLUMNS), key=name)
        for agent in view.agents:
            cells = (
                cell(agent.get("name")),
                state_cell(str(agent.get("state"))),
                cell(agent.get("served", 0)),
                cell(agent.get("errors", 0)),
                cell(agent.get("restarts", 0)),
                cell(f"{agent.get('in_flight', 0)}/{agent.get('concurrency', '?')}"),
                cell(", ".join(agent.get("intents") or [])),
            )
            for column, value in zip(COLUMNS, cells, strict=True):
                table.update_cell(str(agent.get("name")), column, value, update_width=True)
        reasons = [
            f"{escape(str(a.get('name')))}: {escape(str(a.get('reason')))}"
            for a in view.agents
            if a.get("reason")
        ]
        note = "\n".join(reasons) or "all agents report no problem"
        self.query_one("#agents-note", Static).update(note)

    def action_restart(self) -> None:
        table = self.query_one("#agents-table", DataTable)
        if table.row_count == 0:
            self.notify("no agent selected")
            return
        name = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        self._restart(str(name))

    @work(exclusive=True, group="agents")
    async def _restart(self, name: str) -> None:
        try:
            if self.link is None:
                raise NotConnected("no node")
            await self.link.call("agent_restart", {"name": name})
        except (ControlError, ControlTimeout, NotConnected) as exc:
            self.notify(f"restart {name}: {exc}", severity="error")
            return
        self.notify(f"{name}: restarting")
