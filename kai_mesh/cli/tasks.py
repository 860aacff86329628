"""`kai-mesh tasks [list] | show ID | submit CAPABILITY INTENT [PAYLOAD]` (issue 12, item 5).

A task runs once on a node with a ready agent offering CAPABILITY (an agent offers at least its
own name): `kai-mesh tasks submit echo echo '{}'` runs on an echo agent. `submit --json` prints the
task with its `id`; `show --json` its `state` (open, claimed, done, failed) and `result`."""

from __future__ import annotations

import argparse
from typing import Any

from kai_mesh.cli.common import CliError, ExitCode, _client, load_json, print_json, seconds
from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.errors import UsageError

_USAGE = "tasks [list] | tasks show ID | tasks submit CAPABILITY INTENT [PAYLOAD]"


def _call(args: argparse.Namespace, method: str, params: dict[str, Any]) -> Any:
    with _client(args) as client:
        try:
            return client.call(method, params)
        except ControlError as exc:
            code = ExitCode.USAGE if exc.code == "bad_request" else ExitCode.FAILURE
            raise CliError(f"{exc.code}: {exc.message}", code) from None


def _line(task: dict[str, Any]) -> str:
    who = task.get("claimed_by") or "-"
    tail = ""
    if task["state"] == "failed":
        tail = f"  {task.get('reason', '')}"
    elif task["state"] == "open" and task.get("waiting"):
        tail = f"  ({task['waiting']})"
    runs = f" runs={task['runs']}" if task.get("runs", 0) > 1 else ""
    what = f"{task['capability']}/{task['intent']}"
    return f"{task['id']}  {task['state']:<7}  {what}  {who}{runs}{tail}"


def cmd_tasks(args: argparse.Namespace) -> ExitCode:
    action, rest = args.action or "list", list(args.rest)
    if action == "list" and not rest:
        reply = _call(args, "tasks_list", {})
        if args.json:
            print_json(reply["tasks"])
        else:
            for task in reply["tasks"]:
                print(_line(task))
            if not reply["tasks"]:
                print("no tasks (create one with `kai-mesh tasks submit CAPABILITY INTENT`)")
        return ExitCode.OK
    if action == "show" and len(rest) == 1:
        task = _call(args, "tasks_show", {"id": rest[0]})
        if args.json:
            print_json(task)
        else:
            print(_line(task))
            if task["state"] == "done":
                print_json(task["result"])
        return ExitCode.OK
    if action == "submit" and len(rest) in (2, 3):
        try:
            payload = load_json(rest[2], "payload") if len(rest) == 3 else None
        except UsageError as exc:
            raise CliError(str(exc), ExitCode.USAGE) from None
        params = {"capability": rest[0], "intent": rest[1], "payload": payload, "ttl": args.ttl}
        task = _call(args, "tasks_submit", params)
        if args.json:
            print_json(task)
        else:
            print(f"task {task['id']} submitted (see `kai-mesh tasks show {task['id']}`)")
        return ExitCode.OK
    raise CliError(f"usage: kai-mesh {_USAGE}", ExitCode.USAGE)


def add_tasks_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    text = "submit a task to the mesh's capable agents, list tasks, show one"
    p = sub.add_parser("tasks", parents=[common], help=text, description=text)
    p.set_defaults(fn=cmd_tasks)
    p.add_argument("action", nargs="?", choices=["list", "show", "submit"], help="list (default)")
    p.add_argument("rest", nargs="*", help="show ID | submit CAPABILITY INTENT [PAYLOAD]")
    p.add_argument(
        "--ttl", type=seconds, default=3600.0, help="submit: fail it if not run by then (1h)"
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
