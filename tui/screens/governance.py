"""Governance: proposals with their m-of-n progress and why a vote was not counted, the certified
log; `v` votes for the selected proposal, `n` proposes (`KIND {json body}`), `i` makes an
invite and shows it as a QR code (tui/screens/invite.py).

On a mesh of one (threshold 1/1) a proposal is certified by its proposer's own vote, so it goes
straight to the log.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from tui.client import ControlError, ControlTimeout
from tui.link import NotConnected
from tui.model import NodeView, bar, compact, short
from tui.screens.base import MeshScreen
from tui.screens.invite import InviteScreen
from tui.widgets import KeyInput, cell, show, sync_rows

PROPOSAL_COLUMNS = ("id", "kind", "status", "votes", "why")
LOG_COLUMNS = ("height", "id", "kind", "body")


class GovernanceScreen(MeshScreen):
    MODE = "governance"
    AUTO_FOCUS = "#gov-proposals"
    HELP = (
        "v: vote for the selected proposal, Enter: who voted and why. n: propose, as KIND "
        "{json body}. i: invite a node (QR code and token). Escape: cancel."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("v", "vote", "Vote", id="gov.vote"),
        Binding("n", "propose", "Propose", id="gov.propose"),
        Binding("i", "invite", "Invite", id="gov.invite"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static(id="gov-head")
        proposals: DataTable[Text] = DataTable(id="gov-proposals", cursor_type="row")
        for column in PROPOSAL_COLUMNS:
            proposals.add_column(column, key=column)
        yield proposals
        yield KeyInput(placeholder='policy_update {"key": "value"}', id="gov-new")
        yield Static("[b]Certified log[/b]")
        log: DataTable[Text] = DataTable(id="gov-log", cursor_type="row")
        for column in LOG_COLUMNS:
            log.add_column(column, key=column)
        yield log

    def on_mount(self) -> None:
        self.query_one("#gov-new", KeyInput).display = False

    def paint(self, view: NodeView) -> None:
        gov = view.status.get("governance") or {}
        show(
            self.query_one("#gov-head", Static),
            f"head [b]{str(gov.get('head', ''))[:12]}[/b]  height {gov.get('height', 0)}  "
            f"admins {len(gov.get('admins') or [])} threshold {gov.get('threshold', '?')}  "
            f"members {gov.get('members', '?')}  open {gov.get('open_proposals', 0)}",
        )
        sync_rows(
            self.query_one("#gov-proposals", DataTable),
            [(str(p.get("id")), _proposal_cells(p)) for p in reversed(view.proposals)],
        )
        sync_rows(
            self.query_one("#gov-log", DataTable),
            [(f"{e.get('height')}:{e.get('id')}", _log_cells(e)) for e in reversed(view.gov_log)],
        )

    def action_vote(self) -> None:
        table = self.query_one("#gov-proposals", DataTable)
        if table.row_count == 0:
            self.notify("no proposal to vote on")
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        self._call("gov_vote", {"id": key}, "voted")

    @on(DataTable.RowSelected, "#gov-proposals")
    def _proposal_detail(self, event: DataTable.RowSelected) -> None:
        key = str(event.row_key.value)
        proposal = next((p for p in self.view.proposals if str(p.get("id")) == key), None)
        if proposal is not None:
            self.app.push_screen(ProposalDetail(proposal, names_of(self.view)))

    def action_invite(self) -> None:
        self.app.push_screen(InviteScreen())

    def action_propose(self) -> None:
        box = self.query_one("#gov-new", KeyInput)
        box.display = True
        box.focus()

    @on(Input.Submitted, "#gov-new")
    def _submitted(self, event: Input.Submitted) -> None:
        kind, _, text = event.value.strip().partition(" ")
        try:
            body = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            self.notify(f"body is not JSON: {exc.msg}", severity="error")
            return
        self._call("gov_propose", {"kind": kind, "body": body}, "proposed")

    def key_escape(self) -> None:
        box = self.query_one("#gov-new", KeyInput)
        if box.has_focus:
            box.display = False
            self.query_one("#gov-proposals", DataTable).focus()

    @work(exclusive=True, group="gov")
    async def _call(self, method: str, params: dict[str, Any], done: str) -> None:
        try:
            if self.link is None:
                raise NotConnected("no node")
            result = await self.link.call(method, params)
        except (ControlError, ControlTimeout, NotConnected) as exc:
            self.notify(str(exc), severity="error")
            return
        self.query_one("#gov-new", KeyInput).display = False
        self.notify(f"{done}: {str(result.get('id', ''))[:10]} {result.get('status', '')}")


def _proposal_cells(p: dict[str, Any]) -> tuple[Text, ...]:
    counted, needed = int(p.get("votes_counted", 0)), int(p.get("threshold", 1))
    return (
        cell(str(p.get("id", ""))[:10]),
        cell(p.get("kind")),
        cell(p.get("status")),
        cell(f"{bar(counted / max(needed, 1), 5)} {counted}/{needed}"),
        cell(short(p.get("why") or "", 30)),
    )


def _log_cells(entry: dict[str, Any]) -> tuple[Text, ...]:
    return (
        cell(entry.get("height", "")),
        cell(str(entry.get("id", ""))[:10]),
        cell(entry.get("kind", "")),
        cell(short(entry.get("body"), 40)),
    )


def names_of(view: NodeView) -> dict[str, str]:
    """Node id (hex) → name, for the nodes this one knows: itself and every peer heard."""
    names = {str(p.get("node_id")): str(p.get("name")) for p in view.peers if p.get("name")}
    if view.status.get("node_id"):
        names[str(view.status["node_id"])] = f"{view.status.get('name')} (this node)"
    return names


def vote_lines(proposal: dict[str, Any], names: dict[str, str]) -> list[str]:
    """Who voted for `proposal`, whether each vote counted and why not (markup)."""
    counted = int(proposal.get("votes_counted", 0))
    lines = [
        f"[b]{escape(str(proposal.get('kind')))}[/b] {str(proposal.get('id', ''))[:12]}  "
        f"{escape(str(proposal.get('status')))}  {counted} of {proposal.get('threshold')} votes",
        f"proposer {escape(_who(str(proposal.get('proposer', '')), names))}",
        f"body {escape(compact(proposal.get('body')))}",
    ]
    if proposal.get("why"):
        lines.append(f"[$warning]why: {escape(str(proposal['why']))}[/]")
    lines.append("")
    votes = proposal.get("votes") or []
    if not votes:
        lines.append("no vote yet")
    for vote in votes:
        mark = "[$success]✓ counted[/]" if vote.get("counted") else "[$error]✗ not counted[/]"
        why = f": {escape(str(vote['why']))}" if vote.get("why") else ""
        lines.append(f"{mark} {escape(_who(str(vote.get('voter', '')), names))}{why}")
    return lines


def _who(node_id: str, names: dict[str, str]) -> str:
    return f"{names[node_id]} {node_id[:8]}" if node_id in names else node_id[:16]


class ProposalDetail(ModalScreen[None]):
    """One proposal: its body, who proposed it, who voted and whether each vote counted."""

    HELP = "Who voted for this proposal and why a vote was not counted. Escape: back."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", id="proposal.back"),
    ]

    def __init__(self, proposal: dict[str, Any], names: dict[str, str]) -> None:
        super().__init__()
        self.lines = vote_lines(proposal, names)

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="proposal-dialog"):
            yield Static("\n".join(self.lines))
            yield Static("Escape: back")

    def on_mount(self) -> None:
        self.query_one("#proposal-dialog", VerticalScroll).focus()
