"""Peers: one table across every transport, a last-heard filter, a hops histogram, a
link-quality trend, a detail with the link's last hour and ping.

The table is keyed by node id and transport (a node heard on two is two rows): a poll updates
only the cells that changed, in place (`sync_rows`, no relayout, LAB.md), and adds or removes
only rows that came or went. The trend is the round trip, one sample a minute (`NodeView.
set_peers`). `f` cycles the last-heard filter (all, 1 h,
8 h, 24 h), `t` the transport filter (reticulum, nostr, … as `peers` names them), `i` the
interface filter; Enter opens the selected peer, where `p` pings it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from tui.client import ControlError, ControlTimeout
from tui.link import NotConnected
from tui.model import (
    HEARD_FILTERS,
    LINK_LIMIT,
    NodeView,
    duration,
    heard_within,
    hops_histogram,
    link_trend,
    peer_key,
    pretty,
)
from tui.screens.base import MeshScreen
from tui.widgets import cell, show, state_cell, sync_rows

COLUMNS = ("name", "state", "since", "hops", "iface", "heard", "rtt", "trend")


class PeersScreen(MeshScreen):
    MODE = "peers"
    HELP = (
        "Every node heard. f: last-heard filter, t: transport filter, i: interface filter, "
        "Enter: detail and ping."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "heard_filter", "Heard", id="peers.heard_filter"),
        Binding("t", "transport_filter", "Transport", id="peers.transport_filter"),
        Binding("i", "iface_filter", "Iface", id="peers.iface_filter"),
        Binding("enter", "detail", "Detail", id="peers.detail"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.heard_index = 0
        self.transport: str | None = None
        self.iface: str | None = None

    def compose_body(self) -> ComposeResult:
        yield Static(id="peers-filter")
        with Horizontal(id="peers-split"):
            table: DataTable[Text] = DataTable(id="peers-table", cursor_type="row")
            for column in COLUMNS:
                table.add_column(column, key=column)
            yield table
            with Vertical(id="peers-side"):
                yield Static(id="peers-hops", classes="panel")

    def shown_peers(self, view: NodeView) -> list[dict[str, Any]]:
        rows = heard_within(view.peers, HEARD_FILTERS[self.heard_index][1])
        if self.transport is not None:
            rows = [p for p in rows if p.get("transport") == self.transport]
        if self.iface is not None:
            rows = [p for p in rows if p.get("interface") == self.iface]
        return sorted(rows, key=lambda p: (str(p.get("name")), str(p.get("node_id"))))

    def paint(self, view: NodeView) -> None:
        rows = self.shown_peers(view)
        label, _ = HEARD_FILTERS[self.heard_index]
        show(
            self.query_one("#peers-filter", Static),
            f"heard [b]{label}[/b]  via [b]{escape(self.transport or 'all')}[/b]  "
            f"iface [b]{escape(self.iface or 'all')}[/b]  "
            f"{len(rows)} of {len(view.peers)} (f t i)",
        )
        now = time.time()
        sync_rows(
            self.query_one("#peers-table", DataTable),
            [(peer_key(p), _cells(p, now, view.link_history.get(peer_key(p), ()))) for p in rows],
        )
        hist = hops_histogram(rows, width=14)
        empty = "no peers heard" + ("" if view.status.get("transports") else " (local-only node)")
        show(
            self.query_one("#peers-hops", Static),
            "[b]Hops[/b]\n" + ("\n".join(hist) if hist else empty),
        )

    def action_heard_filter(self) -> None:
        self.heard_index = (self.heard_index + 1) % len(HEARD_FILTERS)
        self.mesh_app.paint_now()

    def action_transport_filter(self) -> None:
        self.transport = _next_choice(self.view.peers, "transport", self.transport)
        self.mesh_app.paint_now()

    def action_iface_filter(self) -> None:
        self.iface = _next_choice(self.view.peers, "interface", self.iface)
        self.mesh_app.paint_now()

    def action_detail(self) -> None:
        table = self.query_one("#peers-table", DataTable)
        if table.row_count == 0:
            self.notify("no peer selected")
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        peer = next((p for p in self.view.peers if peer_key(p) == key), None)
        if peer is not None:
            history = list(self.view.link_history.get(peer_key(peer), ()))
            self.app.push_screen(PeerDetail(peer, history))


def _next_choice(peers: list[dict[str, Any]], key: str, now: str | None) -> str | None:
    """The filter after `now`: all (None), then each value of `key` the peers have, sorted."""
    names = sorted({str(p.get(key)) for p in peers if p.get(key)})
    choices: list[str | None] = [None, *names]
    at = choices.index(now) if now in choices else 0
    return choices[(at + 1) % len(choices)]


def _cells(peer: dict[str, Any], now: float, history: Iterable[float | None]) -> tuple[Text, ...]:
    since = peer.get("since")
    rtt = peer.get("rtt_ms")
    return (
        cell(peer.get("name") or str(peer.get("node_id"))[:8]),
        state_cell(peer.get("status") or "heard"),
        cell("—" if since is None else duration(now - float(since))),
        cell("?" if peer.get("hops") is None else peer.get("hops")),
        cell(peer.get("interface") or "—"),
        cell(duration(peer.get("last_heard_s_ago"))),
        cell("—" if rtt is None else f"{rtt:.0f}ms"),
        cell(link_trend(list(history)), "cyan"),
    )


def _history_line(history: list[float | None]) -> str:
    """The link's round trips over the last hour, one sample a minute, and their range."""
    known = [s for s in history if s is not None]
    if not history:
        return "link quality: no sample yet (one a minute)"
    lost = len(history) - len(known)
    span = f"{min(known):.0f}–{max(known):.0f} ms" if known else "no answer"
    return (
        f"link quality, last {len(history)} min: [cyan]{link_trend(history, LINK_LIMIT)}[/] "
        f"rtt {span}, {lost} not alive"
    )


class PeerDetail(ModalScreen[None]):
    """One peer: everything known, and `p` to ping it over its transport."""

    HELP = "p: ping this peer (round trip and hops). Escape: back."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "ping", "Ping", id="peer.ping"),
        Binding("escape", "app.pop_screen", "Back", id="peer.back"),
    ]

    def __init__(self, peer: dict[str, Any], history: list[float | None]) -> None:
        super().__init__()
        self.peer = peer
        self.history = history

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="peer-dialog"):
            yield Static(f"[b]{escape(str(self.peer.get('name')))}[/b]")
            yield Static(_history_line(self.history), id="peer-history")
            yield Static(escape(pretty(self.peer)), id="peer-info")
            yield Static("p: ping   Escape: back", id="peer-ping")

    def on_mount(self) -> None:
        self.query_one("#peer-dialog", VerticalScroll).focus()

    def action_ping(self) -> None:
        self.query_one("#peer-ping", Static).update("pinging…")
        self._ping()

    @work(exclusive=True, group="ping")
    async def _ping(self) -> None:
        from tui.app import MeshApp

        app = self.app
        assert isinstance(app, MeshApp)
        target = str(self.peer.get("name") or self.peer.get("node_id"))
        out = self.query_one("#peer-ping", Static)
        try:
            if app.link is None:
                raise NotConnected("no node")
            result = await app.link.call("ping_node", {"node": target}, wait=60)
        except (ControlError, ControlTimeout, NotConnected) as exc:
            out.update(f"[$error]ping failed: {escape(str(exc))}[/]")
            return
        out.update(f"rtt [b]{result.get('rtt_ms', 0):.1f} ms[/b], {result.get('hops')} hop(s)")
