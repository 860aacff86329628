"""Governance `i`: make an invite and show its token as a QR code for a desktop peer to scan,
and as text to copy (docs/invites.md).

Making one is a governance proposal (`gov_invite`), so the screen asks first (Enter makes it,
Escape leaves without). In a 1-of-1 mesh it is certified at once and the token comes back; with a
higher threshold the screen says how many votes are missing, and `r` asks again
(`gov_invite_show`) once the other admins voted.

An invite token carries the mesh's signed genesis (~430 characters): its QR code is version 14,
73 modules, 39 lines of half blocks with the quiet zone. That cannot fit 80×24; the dialog
scrolls, says how many lines the code needs, and the token text is there to copy.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.client import ControlError, ControlTimeout
from tui.link import NotConnected
from tui.qr import qr_lines

#: The code's own colours: dark modules on a light ground on every theme (tui/qr.py says why).
QR_STYLE = "black on white"


class InviteScreen(ModalScreen[None]):
    HELP = "Enter: make an invite (a node_authorization proposal). r: ask again. Escape: back."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "create", "Make invite", id="invite.create"),
        Binding("r", "refresh", "Ask again", id="invite.refresh"),
        Binding("escape", "app.pop_screen", "Back", id="invite.back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.invite: dict[str, Any] | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="invite-dialog"):
            yield Static(
                "[b]Invite a node[/b]\nEnter makes an invite for the role [b]member[/b]: a "
                "node_authorization proposal the admins certify. Escape: back.",
                id="invite-state",
            )
            yield Static(id="invite-qr")
            yield Static(id="invite-token")

    def on_mount(self) -> None:
        self.query_one("#invite-dialog", VerticalScroll).focus()
        self.query_one("#invite-qr", Static).display = False

    def action_create(self) -> None:
        if self.invite is None:
            self._call("gov_invite", {})

    def action_refresh(self) -> None:
        if self.invite is not None:
            self._call("gov_invite_show", {"id": self.invite.get("id")})

    @work(exclusive=True, group="invite")
    async def _call(self, method: str, params: dict[str, Any]) -> None:
        from tui.app import MeshApp

        app = self.app
        assert isinstance(app, MeshApp)
        state = self.query_one("#invite-state", Static)
        state.update("asking the node…")
        try:
            if app.link is None:
                raise NotConnected("no node")
            self.invite = await app.link.call(method, params)
        except (ControlError, ControlTimeout, NotConnected) as exc:
            state.update(f"[$error]{escape(str(exc))}[/]")
            return
        self.show_invite(self.invite)

    def show_invite(self, invite: dict[str, Any]) -> None:
        """Draw `invite` (a `gov_invite`/`gov_invite_show` answer)."""
        state = self.query_one("#invite-state", Static)
        qr = self.query_one("#invite-qr", Static)
        token = invite.get("token")
        head = (
            f"[b]Invite[/b] {escape(str(invite.get('id', ''))[:12])}  "
            f"{escape(str(invite.get('status')))}  role {escape(str(invite.get('role')))}"
        )
        if not isinstance(token, str) or not token:
            qr.display = False
            why = f"  {escape(str(invite['why']))}" if invite.get("why") else ""
            state.update(
                f"{head}\nno token yet: {invite.get('needs', '?')} more vote(s) needed{why}.\n"
                "Other admins vote on the Governance screen (v); r asks again."
            )
            return
        room = self.app.size.width - 4  # the dialog's border and padding
        lines = qr_lines(token)
        if len(lines[0]) > room:  # a narrower quiet zone, which scanners still read
            lines = qr_lines(token, quiet=1)
        fits = len(lines) + 4 <= self.app.size.height and len(lines[0]) <= room
        note = (
            "Scan the code, or copy the token below into `kai-mesh join TOKEN`."
            if fits
            else f"The code needs {len(lines) + 4} lines and {len(lines[0])} columns: enlarge "
            "the terminal (or zoom out) to scan it; the token below can be copied."
        )
        state.update(f"{head}\n{note}")
        qr.update(Text("\n".join(lines), style=QR_STYLE, no_wrap=True))
        qr.display = True
        self.query_one("#invite-token", Static).update(Text(token, overflow="fold"))
