"""Messages: compose and send to any `kai://` address, see the reply, watch the outbox.

The payload is checked as JSON on every keystroke (empty is null), and the counter beside it says
about how many bytes the message weighs against one radio packet (Reticulum's 500-byte MTU): what
fits leaves in one LoRa frame, what does not needs a link and several. Enter in any field sends;
`F9` does too from anywhere on the screen. `y` cycles the priority, `m` toggles must-arrive
(committed to the outbox and retried until acknowledged, for a message to another node).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.widgets import DataTable, Input, Static

from kai_mesh.core.errors import KaiMeshError
from kai_mesh.core.mesh.address import parse_address
from tui.client import ControlError, ControlTimeout
from tui.link import NotConnected
from tui.model import RADIO_PACKET, NodeView, duration, message_bytes, payload_check, pretty
from tui.screens.base import MeshScreen
from tui.widgets import KeyInput, cell, show, sync_rows

PRIORITIES = ("normal", "high", "critical", "low")
OUTBOX_COLUMNS = ("id", "to", "intent", "state", "tries", "age")


class MessagesScreen(MeshScreen):
    MODE = "messages"
    HELP = (
        "Compose a message. i (or Tab) enters the fields, Tab moves between them; Enter or F9 "
        "sends. Escape leaves a field; then y cycles priority and m toggles must-arrive."
    )
    AUTO_FOCUS = ""  # digits switch screens until the operator enters a field (i or Tab)
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("i", "compose", "Compose", id="messages.compose"),
        Binding("f9", "send", "Send", id="messages.send", priority=True),
        Binding("y", "priority", "Priority", id="messages.priority"),
        Binding("m", "must_arrive", "Must-arrive", id="messages.must_arrive"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.priority = "normal"
        self.must_arrive = False
        self.prefilled = False

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="msg-split"):
            with Vertical(id="msg-form"):
                with Horizontal(classes="field"):
                    yield Static("to")
                    yield KeyInput(placeholder="kai://node/agent", id="msg-to")
                with Horizontal(classes="field"):
                    yield Static("intent")
                    yield KeyInput(value="echo", placeholder="intent", id="msg-intent")
                with Horizontal(classes="field"):
                    yield Static("payload")
                    yield KeyInput(placeholder='JSON, e.g. {"text": "hi"}', id="msg-payload")
                yield Static(id="msg-check")
                yield Static(id="msg-options")
                with VerticalScroll(id="msg-reply-box"):
                    yield Static("the reply shows here", id="msg-reply")
            with Vertical(id="msg-outbox-box"):
                yield Static("[b]Outbox[/b]", id="msg-outbox-title")
                table: DataTable[Text] = DataTable(id="msg-outbox", cursor_type="row")
                for column in OUTBOX_COLUMNS:
                    table.add_column(column, key=column)
                yield table

    def on_mount(self) -> None:
        self._check()

    def paint(self, view: NodeView) -> None:
        to = self.query_one("#msg-to", KeyInput)
        if not self.prefilled and view.status.get("name"):
            self.prefilled = True
            if not to.value:
                to.value = f"kai://{view.status['name']}/echo"
        self._options()
        sync_rows(
            self.query_one("#msg-outbox", DataTable),
            [(str(row.get("message_id")), _outbox_cells(row)) for row in reversed(view.outbox)],
        )
        title = self.query_one("#msg-outbox-title", Static)
        if view.status and view.status.get("outbox") is None:
            show(title, "[b]Outbox[/b]: none on a node without transports")
        else:
            show(title, f"[b]Outbox[/b]: {len(view.outbox)} recent")

    @on(Input.Changed)
    def _changed(self) -> None:
        self._check()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_send()

    def _check(self) -> bool:
        to = self.query_one("#msg-to", KeyInput).value.strip()
        intent = self.query_one("#msg-intent", KeyInput).value.strip()
        payload, problem = payload_check(self.query_one("#msg-payload", KeyInput).value)
        address_problem = None
        try:
            parse_address(to)
        except (KaiMeshError, ValueError) as exc:
            address_problem = f"address: {exc}"
        weight = message_bytes(to, intent, payload)
        fits = (
            "[$success]fits one radio packet[/]"
            if weight <= RADIO_PACKET
            else ("[$warning]more than one radio packet[/]")
        )
        line = f"≈{weight} B of {RADIO_PACKET} B: {fits}"
        if problem or address_problem or not intent:
            reason = problem or address_problem or "intent: required"
            line = f"[$error]✗ {escape(reason)}[/]  {line}"
        else:
            line = f"[$success]✓[/] {line}"
        self.query_one("#msg-check", Static).update(line)
        return not (problem or address_problem or not intent)

    def _options(self) -> None:
        must = "[b]on[/b]" if self.must_arrive else "off"
        self.query_one("#msg-options", Static).update(
            f"priority [b]{self.priority}[/b] (y)  must-arrive {must} (m)  send: Enter/F9"
        )

    def action_compose(self) -> None:
        self.query_one("#msg-payload", KeyInput).focus()

    def action_priority(self) -> None:
        self.priority = PRIORITIES[(PRIORITIES.index(self.priority) + 1) % len(PRIORITIES)]
        self._options()

    def action_must_arrive(self) -> None:
        self.must_arrive = not self.must_arrive
        self._options()

    def action_send(self) -> None:
        if not self._check():
            self.notify("fix the message first", severity="warning")
            return
        self.query_one("#msg-reply", Static).update("sending…")
        self._send()

    @work(exclusive=True, group="send")
    async def _send(self) -> None:
        payload, _ = payload_check(self.query_one("#msg-payload", KeyInput).value)
        params = {
            "to": self.query_one("#msg-to", KeyInput).value.strip(),
            "intent": self.query_one("#msg-intent", KeyInput).value.strip(),
            "payload": payload,
            "priority": self.priority,
            "timeout": 10.0,
            "must_arrive": self.must_arrive,
        }
        out = self.query_one("#msg-reply", Static)
        try:
            if self.link is None:
                raise NotConnected("no node")
            reply = await self.link.call("send", params, wait=20)
        except (ControlError, ControlTimeout, NotConnected) as exc:
            out.update(f"[$error]{escape(str(exc))}[/]")
            return
        if isinstance(reply, dict) and reply.get("queued") == "outbox":
            out.update(f"queued in the outbox as {reply.get('message_id')} for {reply.get('node')}")
            return
        source = escape(str(reply.get("from", "")))
        elapsed = reply.get("elapsed_ms", 0)
        out.update(
            f"[b]reply[/b] from {source} ({reply.get('intent')}, {elapsed:.0f} ms)\n"
            + escape(pretty(reply.get("payload")))
        )


def _outbox_cells(row: dict[str, Any]) -> tuple[Text, ...]:
    return (
        cell(str(row.get("message_id", ""))[:8]),
        cell(row.get("to", "")),
        cell(row.get("intent", "")),
        cell(row.get("state", "")),
        cell(row.get("attempts", 0)),
        cell(duration(row.get("age_s"))),
    )
