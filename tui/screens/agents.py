"""Agents and services: the agents this node hosts, their state, work and failures (`r`
restarts one), and below them the mesh's services (tui/screens/services.py: `+`/`-` scale,
Enter shows the replicas; `d` drains this node, as `kai-mesh drain` does, and again undoes it).

The node restarts a failed agent by itself, with backoff; `r` asks it (`agent_restart`) to end
the selected agent's running incarnation now, which then goes `restarting` → `ready` on the
`agents` topic like any restart. Tab moves between the two tables.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.markup import escape
from textual.widgets import DataTable, Static

from tui.client import ControlError, ControlTimeout
from tui.link import NotConnected
from tui.model import NodeView
from tui.screens.base import MeshScreen
from tui.screens.services import COLUMNS as SERVICE_COLUMNS
from tui.screens.services import ServiceDetail, service_cells
from tui.widgets import cell, show, state_cell, sync_rows

COLUMNS = ("agent", "state", "served", "errors", "restarts", "busy", "intents")


class AgentsScreen(MeshScreen):
    MODE = "agents"
    HELP = (
        "The node's agents and the mesh's services. r: restart the selected agent (the node "
        "also restarts failed ones). +/-: scale the selected service by one replica; Enter: its "
        "replicas. d: drain this node (its replicas move to other nodes, each stopping here once "
        "its replacement is ready; d again ends the drain). Tab: the other table."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "restart", "Restart", id="agents.restart"),
        Binding("plus,equals_sign", "scale(1)", "Scale+", id="services.scale_up"),
        Binding("minus", "scale(-1)", "Scale-", id="services.scale_down"),
        Binding("d", "drain", "Drain", id="services.drain"),
    ]
    #: What the node last said of its drain (None: not asked from this console).
    draining: bool | None = None

    def compose_body(self) -> ComposeResult:
        table: DataTable[Text] = DataTable(id="agents-table", cursor_type="row")
        for column in COLUMNS:
            table.add_column(column, key=column)
        yield table
        yield Static(id="agents-note")
        yield Static(id="svc-title")
        services: DataTable[Text] = DataTable(id="svc-table", cursor_type="row")
        for column in SERVICE_COLUMNS:
            services.add_column(column, key=column)
        yield services

    def paint(self, view: NodeView) -> None:
        rows = [(str(a.get("name")), _agent_cells(a)) for a in view.agents]
        sync_rows(self.query_one("#agents-table", DataTable), rows, widen=True)
        services = [(str(s.get("name")), service_cells(s)) for s in view.services]
        sync_rows(self.query_one("#svc-table", DataTable), services, widen=True)
        drain = "  [b]this node is draining[/b] (d ends it)" if self.draining else ""
        show(
            self.query_one("#svc-title", Static),
            (
                f"[b]Services[/b] {len(view.services)}  (+/- scale, Enter replicas, d drain)"
                if view.services
                else "[b]Services[/b]: none deployed (kai-mesh services deploy FILE)"
            )
            + drain,
        )
        reasons = [
            f"{escape(str(a.get('name')))}: {escape(str(a.get('reason')))}"
            for a in view.agents
            if a.get("reason")
        ]
        note = "\n".join(reasons) or "all agents report no problem"
        show(self.query_one("#agents-note", Static), note)

    def action_restart(self) -> None:
        table = self.query_one("#agents-table", DataTable)
        if table.row_count == 0:
            self.notify("no agent selected")
            return
        name = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        self._restart(str(name))

    def action_scale(self, step: int) -> None:
        table = self.query_one("#svc-table", DataTable)
        if table.row_count == 0:
            self.notify("no service selected")
            return
        name = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        service = next((s for s in self.view.services if s.get("name") == name), {})
        count = int(service.get("wanted") or 0) + step
        if count < 0:
            self.notify(f"{name} has no replica to take away")
            return
        self._scale(name, count)

    def action_drain(self) -> None:
        self._drain(not self.draining)

    @on(DataTable.RowSelected, "#svc-table")
    def _service_detail(self, event: DataTable.RowSelected) -> None:
        name = str(event.row_key.value)
        service = next((s for s in self.view.services if s.get("name") == name), None)
        if service is not None:
            self.app.push_screen(ServiceDetail(service))

    @work(exclusive=True, group="services")
    async def _scale(self, name: str, count: int) -> None:
        try:
            if self.link is None:
                raise NotConnected("no node")
            await self.link.call("services_scale", {"name": name, "replicas": count})
        except (ControlError, ControlTimeout, NotConnected) as exc:
            self.notify(f"scale {name}: {exc}", severity="error")
            return
        self.notify(f"{name}: {count} replica(s) wanted")

    @work(exclusive=True, group="services")
    async def _drain(self, on: bool) -> None:
        try:
            if self.link is None:
                raise NotConnected("no node")
            result = await self.link.call("services_drain", {"on": on})
        except (ControlError, ControlTimeout, NotConnected) as exc:
            self.notify(f"drain: {exc}", severity="error")
            return
        self.draining = bool(result.get("draining"))
        self.notify(
            "draining: replicas move to other nodes as their replacements get ready"
            if self.draining
            else "no longer draining"
        )
        self.paint(self.view)

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


def _agent_cells(agent: dict[str, Any]) -> tuple[Text, ...]:
    return (
        cell(agent.get("name")),
        state_cell(str(agent.get("state"))),
        cell(agent.get("served", 0)),
        cell(agent.get("errors", 0)),
        cell(agent.get("restarts", 0)),
        cell(f"{agent.get('in_flight', 0)}/{agent.get('concurrency', '?')}"),
        cell(", ".join(agent.get("intents") or [])),
    )
