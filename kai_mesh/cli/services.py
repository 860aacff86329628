"""`kai-mesh services …`: deploy, list, show, scale and remove services on the mesh.

A manifest is checked here first: a bad one is one line naming the file, the key and what is
wrong, and exit 2, before anything reaches the node.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kai_mesh.cli.common import ExitCode, add_verb, call_node, print_json
from kai_mesh.core.errors import UsageError


def cmd_deploy(args: argparse.Namespace) -> ExitCode:
    # Here, not at the top: the manifest parser (and the autoscaler it checks against) is the
    # heaviest module `kai-mesh --help` would otherwise load (issue 17).
    from kai_mesh.core.orchestration.manifest import ManifestError, parse_manifest

    try:
        text = Path(args.file).read_text(encoding="utf-8")
        parse_manifest(text, args.file)
    except OSError as exc:
        raise UsageError(f"{args.file}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{args.file}: not UTF-8 text") from None
    except ManifestError as exc:
        raise UsageError(str(exc)) from None
    result = call_node(args, "services_deploy", {"manifest": text, "source": args.file})
    if args.json:
        print_json(result)
    elif result["refused"]:
        print(f"{result['service']}: filed but refused: {result['refused']['detail']}")
    else:
        print(f"{result['service']}: deployed (order {result['id'][:16]})")
    return ExitCode.FAILURE if result["refused"] else ExitCode.OK


def _line(s: dict[str, Any]) -> str:
    return (
        f"{s['name']:<20} {s['status']:<8} v{s['version'] or '-':<6} "
        f"{s['ready']}/{s['wanted']} ready  owner {s['owner'] or '-'}"
    )


def cmd_list(args: argparse.Namespace) -> ExitCode:
    result = call_node(args, "services_list", {})
    if args.json:
        print_json(result)
        return ExitCode.OK
    for s in result["services"]:
        print(_line(s))
    if not result["services"]:
        print("no services")
    return ExitCode.OK


def cmd_show(args: argparse.Namespace) -> ExitCode:
    s = call_node(args, "services_show", {"name": args.name})
    if args.json:
        print_json(s)
        return ExitCode.OK
    print(_line(s))
    print(f"  strategy {s['spec']['strategy'] if s['spec'] else '-'}, epoch {s['epoch']}")
    for r in s["replicas"]:
        why = f" ({r['reason']})" if r["reason"] else ""
        print(f"  #{r['replica']} on {r['node']}: {r['state']}{why}, in flight {r['in_flight']}")
    for r in s["refused"]:
        print(f"  refused order {r['id'][:16]}: {r['reason']}: {r['detail']}")
    return ExitCode.OK


def _command(method: str, params: Callable[[argparse.Namespace], dict[str, Any]], done: str) -> Any:
    def run(args: argparse.Namespace) -> ExitCode:
        result = call_node(args, method, {"name": args.name, **params(args)})
        if args.json:
            print_json(result)
        elif result["refused"]:
            print(f"{args.name}: filed but refused: {result['refused']['detail']}")
        else:
            print(f"{args.name}: {done}")
        return ExitCode.FAILURE if result["refused"] else ExitCode.OK

    return run


def add_services_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    text = "deploy and manage services (agents as replicated mesh services)"
    services = sub.add_parser("services", parents=[common], help=text, description=__doc__)
    verbs = services.add_subparsers(dest="verb", required=True, metavar="VERB")

    def add(name: str, fn: Callable[[argparse.Namespace], ExitCode], help: str) -> Any:
        return add_verb(verbs, common, name, fn, help)

    p = add("deploy", cmd_deploy, "sign a manifest (TOML) with this node's key and deploy it")
    p.add_argument("file")
    add("list", cmd_list, "every service: status, version, ready replicas, owner")
    p = add("show", cmd_show, "one service: spec, owner, replicas with node and state")
    p.add_argument("name")
    p = add(
        "scale",
        _command("services_scale", lambda a: {"replicas": a.replicas}, "scaling"),
        "set the replica count",
    )
    p.add_argument("name")
    p.add_argument("replicas", type=int)
    p = add("remove", _command("services_remove", lambda a: {}, "removing"), "remove a service")
    p.add_argument("name")
