"""`kai-mesh state …`: read and write the mesh's replicated state on the running node.

PATH is slash-separated from a root: `services`, `tasks` or `shared` (the agents' free area), e.g.
`shared/notes/today`. Values are JSON; `{"$text": "…"}` makes a collaborative text (Y.Text).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kai_mesh.cli.common import ExitCode, add_verb, call_node, load_json, print_json, seconds
from kai_mesh.core.errors import UsageError


def cmd_show(args: argparse.Namespace) -> ExitCode:
    result = call_node(args, "state_show", {"path": args.path or ""})
    print_json(result["value"] if not args.json else result)
    return ExitCode.OK


def cmd_set(args: argparse.Namespace) -> ExitCode:
    value = load_json(args.value, "value")
    from kai_mesh.core.state import ydoc  # pycrdt: only for `state set`

    ydoc.check_value(value, path=args.path)  # before msgpack, which cannot carry 2**64 at all
    result = call_node(args, "state_set", {"path": args.path, "value": value})
    if args.json:
        print_json(result)
    else:
        print(f"{args.path}: {'written' if result['changed'] else 'unchanged'}")
    return ExitCode.OK


def cmd_delete(args: argparse.Namespace) -> ExitCode:
    result = call_node(args, "state_delete", {"path": args.path})
    if args.json:
        print_json(result)
    else:
        print(f"{args.path}: {'deleted' if result['changed'] else 'was not there'}")
    return ExitCode.OK


def cmd_export(args: argparse.Namespace) -> ExitCode:
    result = call_node(args, "state_export", {})
    Path(args.file).write_bytes(result["update"])
    if args.json:
        print_json({"file": args.file, "bytes": result["bytes"]})
    else:
        print(f"wrote a {result['bytes']}-byte Yjs update to {args.file}")
    return ExitCode.OK


def cmd_import(args: argparse.Namespace) -> ExitCode:
    try:
        update = Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"{args.file}: cannot read: {exc.strerror}") from None
    result = call_node(args, "state_import", {"update": update})
    if args.json:
        print_json(result)
    else:
        print(f"imported {args.file}: {'written' if result['changed'] else 'nothing new'}")
    return ExitCode.OK


def cmd_sync(args: argparse.Namespace) -> ExitCode:
    result = call_node(args, "state_sync", {"wait": args.wait})
    if args.json:
        print_json(result)
        return ExitCode.OK
    print(f"synced with {result['rounds_started']} peer(s)")
    for peer in result["peers"]:
        state = "in sync" if peer["in_sync"] else "differs (or its heartbeat is not heard)"
        print(
            f"  {peer['name'] or peer['node_id']}: {state}; it lacked {peer['they_lacked']} "
            f"entries, we lacked {peer['we_lacked']}"
        )
    return ExitCode.OK


def add_state_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    text = "read and write the mesh's replicated state (a Yjs document)"
    state = sub.add_parser("state", parents=[common], help=text, description=__doc__)
    verbs = state.add_subparsers(dest="verb", required=True, metavar="VERB")

    def add(name: str, fn: Callable[[argparse.Namespace], ExitCode], help: str) -> Any:
        return add_verb(verbs, common, name, fn, help)

    p = add("show", cmd_show, "print the state, or the value at PATH, as JSON")
    p.add_argument("path", nargs="?", help="e.g. shared/notes (default: everything)")
    p = add("set", cmd_set, "write a JSON value at PATH as this node's transaction")
    p.add_argument("path", help="e.g. shared/notes")
    p.add_argument("value", help='JSON, e.g. \'{"today": "rain"}\'; {"$text": "..."} for a text')
    p = add("delete", cmd_delete, "delete the value at PATH")
    p.add_argument("path")
    for name, fn, what in (
        ("export", cmd_export, "write the whole state to FILE as one Yjs update"),
        ("import", cmd_import, "apply a Yjs update from FILE as this node's transaction"),
    ):
        p = add(name, fn, what)
        p.add_argument("--format", choices=["yjs"], default="yjs", help="yjs (the only one)")
        p.add_argument("file")
    p = add("sync", cmd_sync, "sync with every peer now; per peer, what each side lacked")
    p.add_argument("--wait", type=seconds, default=2.0, help="seconds to let the rounds run (2)")
