"""State: the replicated document as a tree, following changes live; edit under `shared/`.

The tree is rebuilt when the document changes (a `state` push makes the link refetch it); the
nodes that were expanded stay expanded, by path. `e` edits the selected value (or a new key)
under `shared/`: the only root agents and people write (services and tasks belong to the
orchestrator). The value is JSON; a bare word is taken as a string.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.markup import escape
from textual.widgets import Input, Static, Tree
from textual.widgets.tree import TreeNode

from tui.client import ControlError, ControlTimeout
from tui.link import NotConnected
from tui.model import NodeView, compact
from tui.screens.base import MeshScreen
from tui.widgets import KeyInput, show


class StateScreen(MeshScreen):
    MODE = "state"
    AUTO_FOCUS = "#state-tree"
    HELP = "The replicated document. Enter: open/close, e: edit under shared/ (path = JSON value)."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "edit", "Edit", id="state.edit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.drawn: Any = object()
        self.open_paths: set[str] = {""}

    def compose_body(self) -> ComposeResult:
        tree: Tree[str] = Tree("doc", id="state-tree", data="")
        yield tree
        yield KeyInput(placeholder='shared/key = "value"', id="state-edit")
        yield Static(id="state-note")

    def on_mount(self) -> None:
        self.query_one("#state-edit", KeyInput).display = False

    def paint(self, view: NodeView) -> None:
        if view.doc == self.drawn:
            return
        self.drawn = view.doc
        tree = self.query_one("#state-tree", Tree)
        self.open_paths = {str(n.data) for n in _walk(tree.root) if n.is_expanded} | {""}
        tree.clear()
        _fill(tree.root, view.doc, "", self.open_paths)
        tree.root.expand()
        shared = view.doc.get("shared") if isinstance(view.doc, dict) else None
        count = len(shared) if isinstance(shared, dict) else 0
        show(self.query_one("#state-note", Static), f"shared/ has {count} keys. e: edit")

    def action_edit(self) -> None:
        tree = self.query_one("#state-tree", Tree)
        node = tree.cursor_node
        path = str(node.data) if node is not None and node.data else ""
        if not path.startswith("shared/"):
            path = "shared/"
        value = _read(self.view.doc, path)
        box = self.query_one("#state-edit", KeyInput)
        box.value = f"{path} = {compact(value)}" if value is not None else f"{path} = "
        box.display = True
        box.focus()

    @on(Input.Submitted, "#state-edit")
    def _submitted(self, event: Input.Submitted) -> None:
        path, sep, text = event.value.partition("=")
        path = path.strip()
        if not sep or not path.startswith("shared/") or path == "shared/":
            self.notify("write: shared/KEY = VALUE", severity="warning")
            return
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text.strip()
        self._write(path, value)

    def key_escape(self) -> None:
        box = self.query_one("#state-edit", KeyInput)
        if box.has_focus:
            box.display = False
            self.query_one("#state-tree", Tree).focus()

    @work(exclusive=True, group="state")
    async def _write(self, path: str, value: Any) -> None:
        try:
            if self.link is None:
                raise NotConnected("no node")
            await self.link.call("state_set", {"path": path, "value": value})
        except (ControlError, ControlTimeout, NotConnected) as exc:
            self.notify(str(exc), severity="error")
            return
        box = self.query_one("#state-edit", KeyInput)
        box.display = False
        self.query_one("#state-tree", Tree).focus()
        self.notify(f"set {path}")


def _walk(node: TreeNode[str]) -> list[TreeNode[str]]:
    out = [node]
    for child in node.children:
        out.extend(_walk(child))
    return out


def _fill(node: TreeNode[str], value: Any, path: str, open_paths: set[str]) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            child_path = f"{path}/{key}" if path else str(key)
            child = value[key]
            if isinstance(child, dict | list) and child:
                branch = node.add(escape(str(key)), data=child_path)
                _fill(branch, child, child_path, open_paths)
                if child_path in open_paths or child_path == "shared":
                    branch.expand()
            else:
                node.add_leaf(f"{escape(str(key))} = {escape(compact(child))}", data=child_path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            node.add_leaf(f"[{index}] {escape(compact(item))}", data=f"{path}/{index}")
    elif value is None:
        node.add_leaf("(no document yet)", data="")


def _read(doc: Any, path: str) -> Any:
    for part in [p for p in path.split("/") if p]:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc
