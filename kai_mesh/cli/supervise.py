"""`kai-mesh supervise NODE restart NAME | stop [REASON] | sync | config KEY VALUE`.

The node this runs on signs the command with its key and sends it; the supervised node carries
it out only if governance makes the signer an admin (the supervisor, in the supervised shape),
and says why not otherwise (exit 5 with the reason)."""

from __future__ import annotations

import argparse
from typing import Any

from kai_mesh.cli.common import CliError, ExitCode, _client, print_json
from kai_mesh.core.control.errors import ControlError

_ACTIONS = {
    "restart": ("agent_restart", 1),
    "stop": ("emergency_stop", None),
    "sync": ("data_sync", 0),
    "config": ("config_update", 2),
}


def cmd_supervise(args: argparse.Namespace) -> ExitCode:
    action, arity = _ACTIONS[args.action]
    rest: list[str] = args.rest
    if arity is not None and len(rest) != arity:
        usage = {"restart": "restart NAME", "sync": "sync", "config": "config KEY VALUE"}
        raise CliError(f"supervise: give {usage[args.action]}", ExitCode.USAGE)
    params: dict[str, Any] = {"node": args.node, "action": action, "args": {}}
    if action == "agent_restart":
        params["args"] = {"name": rest[0]}
    elif action == "emergency_stop" and rest:
        params["args"] = {"reason": " ".join(rest)}
    elif action == "config_update":
        params["args"] = {rest[0]: rest[1]}
    with _client(args, timeout=40) as client:
        try:
            reply = client.call("supervise", params)
        except ControlError as exc:
            code = ExitCode.USAGE if exc.code == "bad_request" else ExitCode.REMOTE_ERROR
            raise CliError(f"{exc.code}: {exc.message}", code) from None
    if args.json:
        print_json(reply)
    else:
        print(f"{args.node}: {reply.get('action', action)} {reply.get('outcome', '')}".rstrip())
    return ExitCode.OK


def add_supervise_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    text = "command a supervised node (as its supervisor): restart an agent, stop, sync, config"
    p = sub.add_parser("supervise", parents=[common], help=text, description=text)
    p.set_defaults(fn=cmd_supervise)
    p.add_argument("node", help="the supervised node's name or id")
    p.add_argument("action", choices=sorted(_ACTIONS), help="what to do")
    p.add_argument("rest", nargs="*", help="restart NAME | stop [REASON] | config KEY VALUE")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
