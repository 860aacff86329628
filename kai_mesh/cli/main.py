"""The `kai-mesh` command.

A thin `main()` in the manner of httpie's: parse arguments, run one command, map its outcome to an
exit code (`ExitCode`), Ctrl-C to 130. `run` is the daemon; every other command except `init` is a
client of the daemon's control socket. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

# Only what `--help`, `send`, `status` and `peers` need is imported here: every command is a
# short-lived process, so each heavy module (keys, governance, pycrdt, trio, RNS, rich, Textual)
# is imported inside the command that uses it (issue 17; tests/cli/test_import_cost.py guards it).
from kai_mesh import __version__
from kai_mesh.cli.common import CliError, ExitCode, _client, _paths, load_json, print_json, seconds
from kai_mesh.cli.events import add_publish_parser, follow_mesh
from kai_mesh.cli.genesis import add_genesis_parser
from kai_mesh.cli.governance import add_governance_parser
from kai_mesh.cli.invite import add_invite_parser
from kai_mesh.cli.mesh import cmd_drain, cmd_top
from kai_mesh.cli.relays import add_relays_parser
from kai_mesh.cli.services import add_services_parser
from kai_mesh.cli.state import add_state_parser
from kai_mesh.cli.supervise import add_supervise_parser
from kai_mesh.cli.tasks import add_tasks_parser
from kai_mesh.cli.views import cmd_agents, cmd_outbox, cmd_peers, cmd_status
from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.errors import ConfigError, KaiMeshError, StoreError, UsageError
from kai_mesh.core.mesh.address import check_name, parse_address
from kai_mesh.core.messaging.priority import Priority
from kai_mesh.harness.cli import add_harness_parser

if TYPE_CHECKING:
    from kai_mesh.config.paths import NodePaths


def _default_name() -> str:
    raw = socket.gethostname().split(".")[0].lower()
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in raw).strip("-_")[:32]
    try:
        return check_name("node", name)
    except UsageError:
        return "node"


def cmd_init(args: argparse.Namespace) -> ExitCode:
    from kai_mesh.cli.genesis import init_from_genesis
    from kai_mesh.config.nodefiles import NodeFiles, write_private
    from kai_mesh.config.settings import default_config_text, load_config
    from kai_mesh.core.mesh.genesis import Genesis
    from kai_mesh.core.mesh.identity import MemberRecord, NodeSecrets

    paths = _paths(args)
    if args.genesis is None and paths.secrets.exists() and not args.force:
        raise CliError(
            f"a node already exists at {paths.data_dir}; `kai-mesh init --force` replaces it "
            "and its keys are lost",
            ExitCode.CONFLICT,
        )
    if paths.lock.exists() and _lock_held(paths):
        raise CliError("the node on this home is running; stop it first", ExitCode.CONFLICT)
    if args.genesis is not None:
        return init_from_genesis(args, paths)
    name = check_name("node", args.name) if args.name else None
    if name is None and paths.config_file.exists() and not args.force:
        name = load_config(paths.config_file).name
    name = name or _default_name()
    mesh = check_name("mesh", args.mesh or name)
    secrets = NodeSecrets.generate(os.urandom)
    genesis = Genesis.of_one(secrets, mesh, os.urandom(16))
    member = MemberRecord.create(secrets, name, genesis.mesh_id)
    paths.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.config_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if args.force or not paths.config_file.exists():
        text = default_config_text(name, local_only=args.local_only)
        write_private(paths.config_file, text.encode())
    NodeFiles(secrets, genesis, member).write(paths)
    result = {
        "name": name,
        "node_id": secrets.node_id.hex(),
        "mesh": mesh,
        "mesh_id": genesis.mesh_id.hex(),
        "config": str(paths.config_file),
        "data": str(paths.data_dir),
    }
    if args.json:
        print_json(result)
    else:
        print(f"created node {name} ({result['node_id']}) in a mesh of one, {mesh!r}")
        print(f"config: {paths.config_file}\ndata:   {paths.data_dir}")
        home = f" --home {args.home}" if args.home else ""
        print(f"start it with: kai-mesh{home} run")
    return ExitCode.OK


def _lock_held(paths: NodePaths) -> bool:
    import fcntl

    with open(paths.lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def cmd_run(args: argparse.Namespace) -> ExitCode:
    import trio

    from kai_mesh.config.nodefiles import NodeFiles
    from kai_mesh.config.settings import load_config
    from kai_mesh.runtime.node import AlreadyRunning, Node, take_lock
    from kai_mesh.runtime.transports import open_transports

    paths = _paths(args)
    config = load_config(paths.config_file, log_level=args.log_level)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    files = NodeFiles.load(paths)
    try:
        lock = take_lock(paths)  # before Reticulum binds any port: a second daemon stops here
    except AlreadyRunning as exc:
        raise CliError(str(exc), ExitCode.CONFLICT) from None
    with open_transports(paths, config, files) as transports:
        trio.run(Node(paths, config, files, transports, lock=lock).run)
    return ExitCode.OK


def cmd_ping(args: argparse.Namespace) -> ExitCode:
    with _client(args, timeout=60) as client:
        try:
            result = client.call("ping_node", {"node": args.node})
        except ControlError as exc:
            code = ExitCode.USAGE if exc.code == "unknown_node" else ExitCode.TIMEOUT
            raise CliError(f"{exc.code}: {exc.message}", code) from None
    if args.json:
        print_json(result)
    else:
        hops = "?" if result["hops"] is None else result["hops"]
        print(
            f"reply from {args.node} ({result['node_id']}): rtt {result['rtt_ms']:.2f} ms, "
            f"{hops} hop{'s' if hops != 1 else ''}"
        )
    return ExitCode.OK


def cmd_stop(args: argparse.Namespace) -> ExitCode:
    paths = _paths(args)
    with _client(args) as client:
        try:
            pid = client.call("shutdown").get("pid")
        except (ConnectionError, EOFError, OSError):
            pid = None  # the daemon may close the connection as it goes: that is success
    deadline = time.monotonic() + args.timeout
    while paths.socket.exists() or _lock_held(paths):
        if time.monotonic() > deadline:
            raise CliError(
                f"the node (pid {pid}) did not stop within {args.timeout}s", ExitCode.TIMEOUT
            )
        time.sleep(0.05)
    if args.json:
        print_json({"stopped": True, "pid": pid})
    else:
        print(f"node stopped (pid {pid})")
    return ExitCode.OK


def cmd_send(args: argparse.Namespace) -> ExitCode:
    parse_address(args.address)  # a malformed address is a usage error before any connection
    priority = Priority.parse(args.priority)
    payload = load_json(args.payload, "payload") if args.payload is not None else None
    params = {
        "to": args.address,
        "intent": args.intent,
        "payload": payload,
        "priority": priority.name.lower(),
        "timeout": args.timeout,
        "must_arrive": args.must_arrive,
    }
    if args.ttl is not None:
        params["ttl"] = args.ttl
    with _client(args, timeout=args.timeout + 5) as client:
        try:
            reply = client.call("send", params)
        except ControlError as exc:
            if args.json:
                print_json({"error": {"code": exc.code, "message": exc.message}})
            code = ExitCode.TIMEOUT if exc.code == "timeout" else ExitCode.REMOTE_ERROR
            if exc.code == "bad_request":
                code = ExitCode.USAGE
            raise CliError(f"{exc.code}: {exc.message}", code) from None
    if args.json:
        print_json(reply)
    elif reply.get("queued") == "outbox":
        print(
            f"queued in the outbox as {reply['message_id']}: it goes to {reply['node']} until "
            "acknowledged (see `kai-mesh outbox`)"
        )
    else:
        print_json(reply["payload"])
    return ExitCode.OK


def cmd_events(args: argparse.Namespace) -> ExitCode:
    if args.mesh:
        return follow_mesh(args)
    with _client(args, timeout=None) as client:
        client.subscribe(args.topics or ["messages", "agents", "logs", "peers", "outbox", "state"])
        for topic, data in client.events():
            print_json({"event": topic, "data": data})
            sys.stdout.flush()
    return ExitCode.OK


def cmd_tui(args: argparse.Namespace) -> ExitCode:
    from tui import run_tui  # Textual loads only for this command

    run_tui(_paths(args).socket, home=args.home, mouse=True if args.mouse else None)
    return ExitCode.OK


def _positive(text: str) -> float:
    return seconds(text)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="keep config, data and the control socket under DIR "
        "(default: $KAI_MESH_HOME, else the XDG locations)",
    )
    parser = argparse.ArgumentParser(
        prog="kai-mesh",
        description="A peer-to-peer mesh node. `kai-mesh init` creates a node (a mesh of one), "
        "`kai-mesh run` starts it; the other commands talk to the running node.",
        epilog="Exit codes: 0 ok, 1 failure, 2 usage or config error, 3 no node running, "
        "4 node exists or already runs, 5 error reply, 6 timeout, 130 interrupted.",
    )
    parser.add_argument("--home", metavar="DIR", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"kai-mesh {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], ExitCode], text: str, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(fn=fn)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON for scripts")
        return p

    p = add("init", cmd_init, "create this node's keys, a mesh of one, and a commented config")
    p.add_argument("--name", help="the node's display name (default: the host name)")
    p.add_argument("--mesh", help="the mesh's name (default: the node's name)")
    p.add_argument("--force", action="store_true", help="replace an existing node and its keys")
    p.add_argument(
        "--genesis",
        metavar="FILE",
        help="join the mesh of a signed genesis (`kai-mesh genesis`) instead: keeps this home's "
        "existing node and keys (it never makes new ones; its key must be listed), keeps the "
        "config and, without --name, the node's name; --force leaves the current mesh, whose "
        "database goes to data/archive/",
    )
    p.add_argument(
        "--local-only",
        action="store_true",
        help="no Reticulum: an offline mesh of one (default: discover the LAN)",
    )
    p = add("run", cmd_run, "run the node daemon in the foreground (logs to stderr)", False)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p = add("stop", cmd_stop, "stop the running node and wait until it has exited")
    p.add_argument("--timeout", type=_positive, default=15.0, help="seconds to wait (15)")
    add("status", cmd_status, "show the node: ids, mesh, uptime, agents, transports, counters")
    p = add("agents", cmd_agents, "list the agents this node hosts and their health")
    p.add_argument("--mesh", action="store_true", help="every service replica in the mesh instead")
    p = add("drain", cmd_drain, "move this node's service replicas away (before maintenance)")
    p.add_argument("node", nargs="?", help="this node's name (a node drains itself)")
    p.add_argument("--undo", action="store_true", help="stop draining: take replicas again")
    p = add("top", cmd_top, "a live table of the mesh's nodes: cpu, memory, replicas, airtime")
    p.add_argument("--interval", type=_positive, default=2.0, help="seconds between refreshes")
    add("peers", cmd_peers, "list the mesh nodes this node has heard: hops, interface, rtt")
    p = add("ping", cmd_ping, "round trip to another node over its transport, with hop count")
    p.add_argument("node", help="a node name or id")
    p = add("send", cmd_send, "send a message to an agent and print its reply")
    p.add_argument("address", help="kai://NODE/AGENT or kai://svc/SERVICE")
    p.add_argument("intent", help="what to ask of the agent, e.g. echo")
    p.add_argument("payload", nargs="?", help="the payload as JSON (default: null)")
    p.add_argument("--priority", default="normal", help="low, normal, high or critical")
    p.add_argument("--timeout", type=_positive, default=10.0, help="seconds to wait (10)")
    p.add_argument("--ttl", type=int, help="seconds the message lives (default: from config)")
    p.add_argument(
        "--must-arrive",
        action="store_true",
        help="commit the message to the outbox and return; it is retried until the recipient "
        "acknowledges it or its ttl ends, across partitions and restarts",
    )
    p = add("outbox", cmd_outbox, "list the messages that must arrive and still wait, and why")
    p.add_argument("--all", action="store_true", help="also the delivered and expired ones")
    p = add("events", cmd_events, "follow the node's events as JSON lines until Ctrl-C", False)
    p.add_argument(
        "topics",
        nargs="*",
        help="messages, agents, logs, peers, outbox, state, governance (default: all); "
        "with --mesh, mesh event topics such as task.created (default: *, all)",
    )
    p.add_argument(
        "--mesh",
        action="store_true",
        help="follow mesh events published anywhere in the mesh (task.created, "
        "agent.overloaded, queue.backlog, node.failed, service.scaled, user topics)",
    )
    p.add_argument("--json", action="store_true", help="with --mesh: one JSON object a line")
    p = add("tui", cmd_tui, "the operator console: a terminal UI that follows the node", False)
    p.add_argument("--mouse", action="store_true", help="enable the mouse (off by default)")
    add_state_parser(sub, common)
    add_services_parser(sub, common)
    add_publish_parser(sub, common)
    add_supervise_parser(sub, common)
    add_tasks_parser(sub, common)
    add_governance_parser(sub, common)
    add_genesis_parser(sub, common)
    add_invite_parser(sub, common)
    add_relays_parser(sub, common)
    add_harness_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except CliError as exc:
        _fail(str(exc))
        return exc.code
    except (ConfigError, UsageError) as exc:
        _fail(str(exc))
        return ExitCode.USAGE
    except StoreError as exc:
        _fail(str(exc))
        return ExitCode.USAGE
    except ControlError as exc:
        _fail(f"{exc.code}: {exc.message}")
        return ExitCode.FAILURE
    except KaiMeshError as exc:
        _fail(str(exc))
        return ExitCode.FAILURE
    except BrokenPipeError:
        return ExitCode.OK


def _fail(message: str) -> None:
    print(f"kai-mesh: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
