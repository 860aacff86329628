"""Overview: the node at a glance, what an operator reads first.

Node, mesh, shape, uptime; interfaces in `rnstatus` style (bitrate, airtime used against its
budget with a sparkline of recent polls, traffic); peers by state; the outbox; input the node
refused; the governance head. A warning line when an interface's airtime nears its budget.
Below 100 columns the sections stack; wider, they sit in two columns.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Grid, VerticalScroll
from textual.markup import escape
from textual.widgets import Static

from tui.model import (
    AIRTIME_WARN,
    NodeView,
    bar,
    bitrate,
    duration,
    shape_of,
    size,
    sparkline,
)
from tui.screens.base import MeshScreen
from tui.widgets import show


class OverviewScreen(MeshScreen):
    MODE = "overview"
    HELP = "The node at a glance. It follows the node live; nothing to press here."

    def compose_body(self) -> ComposeResult:
        yield Static(id="ov-warning", classes="warning")
        with VerticalScroll(id="ov-scroll"), Grid(id="ov-grid"):
            yield Static(id="ov-node", classes="panel")
            yield Static(id="ov-peers", classes="panel")
            yield Static(id="ov-ifaces", classes="panel")
            yield Static(id="ov-counters", classes="panel")

    def paint(self, view: NodeView) -> None:
        s = view.status
        warnings = view.airtime_warnings()
        if s.get("governance", {}).get("shutdown"):
            reason = s["governance"].get("shutdown_reason") or "no reason given"
            warnings.insert(0, f"emergency shutdown holds: {reason}")
        warning = self.query_one("#ov-warning", Static)
        warning.display = bool(warnings)
        show(warning, "\n".join(f"⚠ {escape(w)}" for w in warnings))
        show(self.query_one("#ov-node", Static), _node_panel(view))
        show(self.query_one("#ov-peers", Static), _peers_panel(view))
        show(self.query_one("#ov-ifaces", Static), _interfaces_panel(view))
        show(self.query_one("#ov-counters", Static), _counters_panel(s))


def _node_panel(view: NodeView) -> str:
    s = view.status
    if not s:
        return "[b]Node[/b]\nno status yet"
    gov = s.get("governance") or {}
    return "\n".join(
        [
            "[b]Node[/b]",
            f"name    {escape(str(s.get('name')))}  v{escape(str(s.get('version')))}",
            f"id      {str(s.get('node_id', ''))[:16]}",
            f"mesh    {escape(str(s.get('mesh_name')))} {str(s.get('mesh_id', ''))[:12]}",
            f"shape   {shape_of(s)}  admins {s.get('admins')} (threshold {s.get('threshold')})",
            f"uptime  {duration(s.get('uptime_s'))}  rss {size(s.get('rss_bytes'))}",
            f"gov     head {str(gov.get('head', ''))[:12]} height {gov.get('height', 0)}"
            f"  open {gov.get('open_proposals', 0)}",
        ]
    )


def _peers_panel(view: NodeView) -> str:
    counts = view.peer_counts()
    agents = view.status.get("agents") or []
    ready = sum(1 for a in agents if a.get("state") == "ready")
    lines = [
        "[b]Peers[/b]",
        f"[$success]alive {counts['alive']}[/]  [$warning]suspect {counts['suspect']}[/]  "
        f"[$error]failed {counts['failed']}[/]  heard {len(view.peers)}",
        f"agents  {ready}/{len(agents)} ready",
    ]
    if view.reconnects:
        lines.append(f"reconnected {view.reconnects}×")
    return "\n".join(lines)


def _interfaces_panel(view: NodeView) -> str:
    s = view.status
    lines = ["[b]Interfaces[/b]"]
    lanes = {(a.get("transport"), a.get("interface")): a for a in s.get("airtime") or []}
    for transport in s.get("transports") or []:
        for i in transport.get("interfaces") or []:
            up = "[$success]up[/]" if i.get("online") else "[$error]down[/]"
            lines.append(
                f"{escape(str(transport.get('name')))}/{escape(str(i.get('name')))} "
                f"{escape(str(i.get('kind')))} {up} {bitrate(i.get('bitrate'))}"
            )
            lines.append(f"  tx {size(i.get('tx_bytes'))}  rx {size(i.get('rx_bytes'))}")
            lane = lanes.get((transport.get("name"), i.get("name")))
            if lane is not None:
                key = f"{transport.get('name')}/{i.get('name')}"
                lines.append(_airtime_line(lane, list(view.airtime_history.get(key, []))))
    if len(lines) == 1:
        lines.append("none: a local-only node (no transports)")
    return "\n".join(lines)


def _airtime_line(lane: dict[str, Any], history: list[float]) -> str:
    used = float(lane.get("used_fraction") or 0.0)
    style = "$error" if used >= 1 else "$warning" if used >= AIRTIME_WARN else "$success"
    return (
        f"  air [{style}]{bar(used)}[/] {lane.get('used_s', 0):.1f}/{lane.get('budget_s', 0):.0f}s"
        f" {sparkline(history, 8)} q{lane.get('queued', 0)}"
    )


def _counters_panel(s: dict[str, Any]) -> str:
    outbox = s.get("outbox")
    refused = {k: v for k, v in (s.get("refused") or {}).items() if v}
    bus = s.get("bus") or {}
    lines = [
        "[b]Traffic[/b]",
        f"bus     delivered {bus.get('delivered', 0)}  errors {bus.get('errors', 0)}"
        f"  shed {bus.get('shed', 0)}",
    ]
    if outbox is None:
        lines.append("outbox  none (no transports)")
    else:
        lines.append(
            f"outbox  waiting {outbox.get('waiting', 0)}  delivered {outbox.get('delivered', 0)}"
        )
    total = sum(refused.values())
    lines.append(f"refused {total}" + ("" if not refused else ":"))
    for key, value in sorted(refused.items(), key=lambda kv: -kv[1])[:4]:
        lines.append(f"  {escape(key)} {value}")
    return "\n".join(lines)
