"""`kai-mesh invite` and `kai-mesh join TOKEN`: bring a new node into a mesh with one line.

On a node of the mesh (an admin's), `kai-mesh invite` asks the daemon for an invite: a fresh
keypair whose public half it proposes in a `node_authorization`. Once certified (at once in a
1-of-1 mesh; after the other admins' `kai-mesh vote ID` otherwise) it prints one token holding
the genesis, the invite's private half and where the mesh can be reached
(`kai_mesh.core.governance.invite_token`); `kai-mesh invite show ID` prints it
later. On the new node,
`kai-mesh join TOKEN` makes the node — its keys, the genesis, a config that reaches the mesh
(a Reticulum TCP client for each address in the token) — and the claim that proves it holds the
invite. `kai-mesh run` then takes the claim to the first mesh node it reaches; the first claim of
an invite wins everywhere, so a token admits one node only. `join` does not talk to a daemon.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import tomllib
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kai_mesh.cli.common import CliError, ExitCode, _paths, call_node, print_json, seconds
from kai_mesh.config.paths import NodePaths
from kai_mesh.core.errors import KaiMeshError, ProtocolError, UsageError
from kai_mesh.core.mesh.address import check_name

if TYPE_CHECKING:
    from kai_mesh.core.governance.invite_token import InviteToken
    from kai_mesh.core.mesh.genesis import Genesis

_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> int:
    """Seconds from "90", "90s", "30m", "12h", "7d" or "2w"."""
    match = _DURATION.match(text.strip().lower())
    if match is None or int(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration such as 3600, 30m, 12h or 7d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _host_port(text: str) -> str:
    from kai_mesh.core.governance.invite_token import split_host_port

    try:
        split_host_port(text, UsageError)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# invite ----------------------------------------------------------------------------------------


def cmd_invite(args: argparse.Namespace) -> ExitCode:
    words = list(args.words)
    if words[:1] == ["show"] and len(words) == 2:
        result = call_node(args, "gov_invite_show", _reach({"id": words[1]}, args))
    elif not words:
        params: dict[str, Any] = {"role": args.role}
        if args.expires is not None:
            params["expires_in"] = args.expires
        result = call_node(args, "gov_invite", _reach(params, args))
    else:
        raise UsageError("expected `kai-mesh invite [options]` or `kai-mesh invite show ID`")
    deadline = time.monotonic() + (args.wait or 0)
    while result["token"] is None and result["status"] == "open" and time.monotonic() < deadline:
        time.sleep(0.5)
        result = call_node(args, "gov_invite_show", _reach({"id": result["id"]}, args))
    return _print_invite(args, result)


def _reach(params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if args.reach:
        params["reach"] = list(args.reach)
    return params


def _print_invite(args: argparse.Namespace, result: dict[str, Any]) -> ExitCode:
    token, status, pid = result["token"], result["status"], result["id"]
    waited_out = token is None and status == "open" and bool(args.wait)
    if args.json:
        print_json(result)
        return ExitCode.TIMEOUT if waited_out else ExitCode.OK
    if token is not None:
        print(token)
        ways = [*(result.get("reach") or []), *(f"relay {r}" for r in result.get("relays") or [])]
        where = ", ".join(ways) or "the LAN only (no TCP address or relay)"
        print(
            f"# invite {pid[:16]} ({result['role']}): on the new node run `kai-mesh join TOKEN`; "
            f"it admits one node, reaching the mesh via {where}; keep it secret",
            file=sys.stderr,
        )
        return ExitCode.OK
    if status == "redeemed":
        print(f"invite {pid} was taken by node {result['redeemed_by']}")
        return ExitCode.OK
    if status == "open":
        print(f"invite {pid}: proposed, needs {result['needs']} more vote(s)")
        print("the other admins run: kai-mesh vote " + pid)
        print(f"`kai-mesh invite show {pid[:16]}` prints the token once certified")
        if waited_out:
            raise CliError(f"invite {pid[:16]} was not certified in time", ExitCode.TIMEOUT)
        return ExitCode.OK
    why = f": {result['why']}" if result.get("why") else ""
    raise CliError(f"invite {pid} is {status}{why}; make a new one", ExitCode.FAILURE)


# join ------------------------------------------------------------------------------------------


def cmd_join(args: argparse.Namespace) -> ExitCode:
    from kai_mesh.cli.main import _lock_held
    from kai_mesh.core.governance.invite_token import decode_token

    try:
        token = decode_token(args.token)
    except ProtocolError as exc:
        raise CliError(f"not a valid invite token: {exc}", ExitCode.USAGE) from None
    paths = _paths(args)
    if paths.lock.exists() and _lock_held(paths):
        raise CliError("the node on this home is running; stop it first", ExitCode.CONFLICT)
    archive = None
    if paths.secrets.exists():
        if not args.force:
            raise CliError(
                f"this home already holds a node ({_describe(paths)}); `kai-mesh join TOKEN "
                f"--force` moves its data ({paths.data_dir}) aside and makes a new node",
                ExitCode.CONFLICT,
            )
        archive = archive_data(paths)
    name = _join_name(args, paths)
    result = make_joined_node(paths, token, name, now=int(time.time()))
    result["archive"] = None if archive is None else str(archive)
    if args.json:
        print_json(result)
        return ExitCode.OK
    genesis = token.genesis
    print(f"node {name} ({result['node_id']}) made for mesh {genesis.mesh_name!r}")
    if archive is not None:
        print(f"the old node's data: {archive}")
    ways = [*token.tcp, *(f"relay {r}" for r in token.relays)]
    via = ", ".join(ways) if ways else "the interfaces in its config (no TCP address)"
    print(f"it reaches the mesh via {via}")
    home = f" --home {args.home}" if args.home else ""
    print(f"start it with: kai-mesh{home} run — the mesh admits it when it first reaches a node")
    return ExitCode.OK


def _describe(paths: NodePaths) -> str:
    from kai_mesh.config.nodefiles import NodeFiles

    try:
        files = NodeFiles.load(paths)
    except KaiMeshError:
        return f"at {paths.data_dir}"
    genesis = files.genesis
    return f"{files.member.name} of mesh {genesis.mesh_name!r} ({genesis.mesh_id.hex()[:16]})"


def archive_data(paths: NodePaths) -> Path:
    """Move the data directory aside to `<data_dir>.archived-<UTC time>`; return where."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target, n = paths.data_dir.with_name(f"{paths.data_dir.name}.archived-{stamp}"), 1
    while target.exists():
        n += 1
        target = paths.data_dir.with_name(f"{paths.data_dir.name}.archived-{stamp}-{n}")
    os.replace(paths.data_dir, target)
    return target


def _join_name(args: argparse.Namespace, paths: NodePaths) -> str:
    if args.name:
        return check_name("node", args.name)
    if paths.config_file.exists():
        from kai_mesh.config.settings import load_config

        return load_config(paths.config_file).name
    from kai_mesh.cli.main import _default_name

    return _default_name()


def make_joined_node(paths: NodePaths, token: InviteToken, name: str, now: int) -> dict[str, Any]:
    """New keys for the token's mesh, a config that reaches it, and the claim in `join.kai`
    (written before the secrets: a home with secrets always has its claim)."""
    from kai_mesh.config.nodefiles import NodeFiles, claim_path, write_private
    from kai_mesh.config.settings import default_config_text
    from kai_mesh.core.governance.machine import Governance
    from kai_mesh.core.mesh.identity import MemberRecord, NodeSecrets

    genesis: Genesis = token.genesis
    secrets = NodeSecrets.generate(os.urandom)
    member = MemberRecord.create(secrets, name, genesis.mesh_id)
    paths.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.config_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not paths.config_file.exists():
        write_private(paths.config_file, default_config_text(name).encode())
    added = add_tcp_clients(paths.config_file, token.tcp)
    relays = add_relays(paths.config_file, token.relays, token.markers)
    claim = Governance(genesis).redeem(token.secret, secrets, now)
    write_private(claim_path(paths), claim)
    NodeFiles(secrets, genesis, member).write(paths)
    return {
        "name": name,
        "node_id": secrets.node_id.hex(),
        "mesh": genesis.mesh_name,
        "mesh_id": genesis.mesh_id.hex(),
        "reach": list(token.tcp),
        "interfaces_added": added,
        "relays": relays,
        "relay_markers": dict(token.markers),
        "config": str(paths.config_file),
        "data": str(paths.data_dir),
    }


def add_relays(
    config_file: Path, relays: tuple[str, ...], markers: Mapping[str, str] | None = None
) -> list[str]:
    """Add the token's Nostr relays to `[nostr] relays` (those the config lacks), each with the
    NIP-65 marker the token gives it; the list now. A relay the config has keeps its marker."""
    from kai_mesh.config.nostr import MAX_RELAYS, write_relays
    from kai_mesh.config.settings import load_config

    nostr = load_config(config_file).nostr
    have = list(nostr.relays)
    want = list(dict.fromkeys([*have, *relays]))[:MAX_RELAYS]
    if want != have:
        new = {url: m for url, m in (markers or {}).items() if url not in have}
        write_relays(config_file, want, {**nostr.markers, **new})
    return want


def add_tcp_clients(config_file: Path, addresses: tuple[str, ...]) -> list[str]:
    """Append a Reticulum TCP client interface for each address the config lacks; a file that
    relied on the default interface gets it written out, so it keeps it. Returns the names."""
    from kai_mesh.config.nodefiles import write_private
    from kai_mesh.config.settings import load_config
    from kai_mesh.core.governance.invite_token import split_host_port

    if not addresses:
        return []
    text = config_file.read_text(encoding="utf-8")
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{config_file}: not valid TOML: {exc}") from None
    existing = table.get("interfaces") if isinstance(table.get("interfaces"), list) else None
    names = {i.get("name") for i in existing or [] if isinstance(i, dict)}
    targets = {
        (i.get("target_host"), i.get("target_port"))
        for i in existing or []
        if isinstance(i, dict) and i.get("type") == "tcp_client"
    }
    lines = [""]
    if existing is None:
        lines += ["[[interfaces]]", 'name = "lan"', 'type = "auto"', ""]
    added = []
    for address in addresses:
        host, port = split_host_port(address, UsageError)
        if (host, port) in targets:
            continue
        n = 1
        while f"mesh-{n}" in names:
            n += 1
        names.add(name := f"mesh-{n}")
        added.append(name)
        lines += [
            "# Added by `kai-mesh join`: a node of the mesh, from the invite token.",
            "[[interfaces]]",
            f'name = "{name}"',
            'type = "tcp_client"',
            f"target_host = {tomllib_quote(host)}",
            f"target_port = {port}",
            "",
        ]
    if added:
        write_private(config_file, (text.rstrip("\n") + "\n" + "\n".join(lines)).encode())
        load_config(config_file)  # a file this kai-mesh refuses fails here, not at `run`
    return added


def tomllib_quote(text: str) -> str:
    """A TOML basic string (host names and addresses: no quotes or control characters)."""
    if any(c in text for c in '"\\') or not text.isprintable():
        raise UsageError(f"{text!r}: not a host name")
    return f'"{text}"'


def add_invite_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """`invite` (and `invite show ID`) and `join`."""
    text = "make an invite: print a token that lets one new node join this mesh"
    p = sub.add_parser("invite", parents=[common], help=text, description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.set_defaults(fn=cmd_invite)
    p.add_argument("words", nargs="*", metavar="show ID", help="print the token of invite ID")
    p.add_argument("--expires", type=duration, help="how long the proposal stays open (7d)")
    p.add_argument("--role", default="member", help="the new node's role (member)")
    p.add_argument(
        "--wait",
        type=partial(seconds, allow_zero=True),
        default=0,
        metavar="SECONDS",
        help="wait this long for the other admins' votes",
    )
    p.add_argument(
        "--reach",
        action="append",
        type=_host_port,
        metavar="HOST:PORT",
        help="a Reticulum TCP server of the mesh to put in the token (repeatable; default: this "
        "node's TCP server interfaces)",
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")

    text = "make a new node from an invite token (then `kai-mesh run` it)"
    p = sub.add_parser("join", parents=[common], help=text, description=text)
    p.set_defaults(fn=cmd_join)
    p.add_argument("token", metavar="TOKEN", help="from `kai-mesh invite` on a node of the mesh")
    p.add_argument("--name", help="the node's name (default: the config's, else the host name)")
    p.add_argument(
        "--force",
        action="store_true",
        help="this home holds a node already: move its data aside (DATA.archived-TIME) first",
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
