"""Mesh services (`kai-mesh services`), shown under the agents: each service's state, ready
replicas against those wanted, the owner that places them (with its epoch), the load (calls in
flight across replicas) and each replica's health as one symbol. `+` / `-` scale the selected
service by one (`services_scale`); Enter opens its replicas.

Draining a replica is not offered: the node has no control method for it yet (the services
issue's runtime slice has deploy, list, show, scale and remove).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.widgets import cell

COLUMNS = ("service", "status", "ready", "owner", "epoch", "load", "health")

#: One symbol per replica state: the health column reads without colour too.
_HEALTH = {"ready": "●", "pending": "○", "starting": "◐", "restarting": "◐", "failed": "✗"}
_HEALTH_STYLE = {"●": "green", "◐": "yellow", "✗": "red"}


def service_cells(service: dict[str, Any]) -> tuple[Text, ...]:
    replicas = service.get("replicas") or []
    load = sum(int(r.get("in_flight") or 0) for r in replicas)
    status = str(service.get("status", "?"))
    return (
        cell(service.get("name")),
        cell(status, "" if status == "active" else "yellow"),
        cell(f"{service.get('ready', 0)}/{service.get('wanted', 0)}"),
        cell(service.get("owner") or "—"),
        cell("—" if service.get("epoch") is None else service.get("epoch")),
        cell(load),
        health_cell(replicas),
    )


def health_cell(replicas: list[dict[str, Any]]) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    for replica in replicas:
        symbol = _HEALTH.get(str(replica.get("state")), "?")
        text.append(symbol, style=_HEALTH_STYLE.get(symbol, ""))
    return text if replicas else cell("—")


def replica_lines(service: dict[str, Any]) -> list[str]:
    """The replicas of one service, one line each (markup)."""
    spec = service.get("spec") or {}
    lines = [
        f"[b]{escape(str(service.get('name')))}[/b] v{escape(str(service.get('version')))} "
        f"{escape(str(service.get('status')))}  owner {escape(str(service.get('owner') or '—'))}"
        f" epoch {service.get('epoch')}",
        f"strategy {escape(str(spec.get('strategy', '—')))}  ready {service.get('ready', 0)}"
        f" of {service.get('wanted', 0)} wanted"
        f"  manifest {str(service.get('manifest') or '')[:12]}",
    ]
    if service.get("refused"):
        lines.append(f"[$error]refused: {escape(str(service['refused']))}[/]")
    lines.append("")
    replicas = service.get("replicas") or []
    if not replicas:
        lines.append("no replica placed")
    for r in replicas:
        state = str(r.get("state"))
        why = f"  {escape(str(r['reason']))}" if r.get("reason") else ""
        lines.append(
            f"{_HEALTH.get(state, '?')} #{r.get('replica')} on {escape(str(r.get('node')))}"
            f"  {escape(state)}  in flight {r.get('in_flight', 0)}{why}"
        )
    return lines


class ServiceDetail(ModalScreen[None]):
    """One service's replicas, from the `services_list` row the screen holds."""

    HELP = "The replicas of this service and their health. Escape: back."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", id="service.back"),
    ]

    def __init__(self, service: dict[str, Any]) -> None:
        super().__init__()
        self.service = service

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="service-dialog"):
            yield Static("\n".join(replica_lines(self.service)), id="service-info")
            yield Static("Escape: back")

    def on_mount(self) -> None:
        self.query_one("#service-dialog", VerticalScroll).focus()
