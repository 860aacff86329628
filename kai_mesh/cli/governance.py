"""`kai-mesh propose|vote|withdraw|revoke|proposals|policy|governance`: the mesh's threshold-signed
governance.

An admin proposes a change (`kai-mesh propose policy_update '{"k": "v"}'`); other admins vote
for it (`kai-mesh vote ID`, where ID may be a unique start of the id); once `threshold` admins
have voted it is certified everywhere and the fold (`kai-mesh policy show`) changes. Its proposer
may withdraw it while it is open (`kai-mesh withdraw ID`, or `propose --withdraw ID`): a signed
record every node folds alike, after which nobody votes for it and its voters may propose again.
Keys and node ids in bodies (`node_key`, `invite_key`, `node_id`, `admins`) are hex on the
command line.

`kai-mesh revoke NODE` proposes a `node_revocation` of a node (its id in hex, or its name) whose
cut is that node's stream heads as this node holds them: what it wrote up to there stays in the
replicated state, anything later is refused everywhere once the revocation is certified. The
node refuses to revoke itself, or an admin's node that would leave fewer than `threshold` admins,
unless given `--force`: the refusal says what would follow, and a forced one prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from kai_mesh.cli.common import ExitCode, add_verb, call_node, load_json, print_json
from kai_mesh.core.errors import UsageError
from kai_mesh.core.governance.kinds import KINDS

_FORCE = (
    "revoke even this node itself, or an admin whose loss leaves fewer admins than the "
    "threshold: either locks out for good (this node, or the mesh's governance)"
)
_HEX_KEYS = ("node_key", "invite_key", "node_id")


def _unhex(text: object, name: str) -> bytes:
    if not isinstance(text, str):
        raise UsageError(f"{name}: expected a hex string")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{name}: {text!r} is not hex") from None


def body_from_json(kind: str, text: str) -> dict[str, Any]:
    """The body of a proposal from the command line's JSON, keys and ids as bytes."""
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    body = load_json(text, "body")
    if not isinstance(body, dict):
        raise UsageError("body: expected a JSON object")
    if kind in ("node_authorization", "node_revocation"):
        for key in _HEX_KEYS:
            if key in body:
                body[key] = _unhex(body[key], key)
    if kind == "node_revocation" and isinstance(body.get("cut"), dict):
        try:
            body["cut"] = {int(k): v for k, v in body["cut"].items()}
        except ValueError:
            raise UsageError("cut: keys are Yjs client ids (whole numbers)") from None
    if kind == "admin_change" and isinstance(body.get("admins"), list):
        body["admins"] = [_unhex(a, "admins") for a in body["admins"]]
    return body


def _propose(args: argparse.Namespace, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Ask the node to propose (with `--expires-in` if given); print JSON or the first line."""
    if args.expires_in is not None:
        params["expires_in"] = args.expires_in
    if args.force:
        params["force"] = True
    result: dict[str, Any] = call_node(args, method, params)
    if args.json:
        print_json(result)
    else:
        print(f"proposed {result['id'][:12]} ({result['kind']}): {_summary(result)}")
    if result.get("warning"):
        print(f"warning, forced: {result['warning']}", file=sys.stderr)
    return result


def cmd_propose(args: argparse.Namespace) -> ExitCode:
    if args.withdraw is not None:
        if args.kind is not None:
            raise UsageError("propose --withdraw ID takes no kind or body")
        args.id = args.withdraw
        return cmd_withdraw(args)
    if args.kind is None:
        raise UsageError("propose: give a kind (or --withdraw ID)")
    _propose(args, "gov_propose", {"kind": args.kind, "body": body_from_json(args.kind, args.body)})
    return ExitCode.OK


def cmd_revoke(args: argparse.Namespace) -> ExitCode:
    result = _propose(args, "gov_revoke", {"node": args.node})
    if not args.json:
        cut = result["body"]["cut"]
        kept = sorted(cut.items(), key=lambda kv: int(kv[0]))
        streams = ", ".join(f"{c} up to {seq}" for c, seq in kept) or "none"
        print(f"  node {result['body']['node_id']}, streams kept: {streams}")
    return ExitCode.OK


def cmd_vote(args: argparse.Namespace) -> ExitCode:
    result = call_node(args, "gov_vote", {"id": args.id})
    if args.json:
        print_json(result)
    else:
        print(f"voted for {result['id'][:12]} ({result['kind']}): {_summary(result)}")
    return ExitCode.OK


def cmd_withdraw(args: argparse.Namespace) -> ExitCode:
    result = call_node(args, "gov_withdraw", {"id": args.id})
    if args.json:
        print_json(result)
    else:
        print(f"withdrew {result['id'][:12]} ({result['kind']}): {_summary(result)}")
    return ExitCode.OK


def _summary(p: dict[str, Any]) -> str:
    text = f"{p['status']}, votes {p['votes_counted']} of {p['threshold']}"
    return f"{text} ({p['why']})" if p["why"] else text


def cmd_proposals(args: argparse.Namespace) -> ExitCode:
    result = call_node(args, "gov_proposals", {})
    if args.json:
        print_json(result)
        return ExitCode.OK
    if not result:
        print("no proposals")
        return ExitCode.OK
    for p in result:
        print(f"{p['id'][:12]}  {p['kind']:<18} {_summary(p)}")
    return ExitCode.OK


def cmd_policy_show(args: argparse.Namespace) -> ExitCode:
    result = call_node(args, "gov_policy", {})
    if args.json:
        print_json(result)
        return ExitCode.OK
    print(f"height {result['height']}, head {result['head'][:12]}")
    if result["shutdown"]:
        print(f"THE MESH IS SHUT DOWN: {result['shutdown_reason']}")
    print("policy:")
    for key, value in sorted(result["policy"].items()):
        print(f"  {key} = {json.dumps(value)}")
    if result["config"]:
        print("config:")
        for key, value in sorted(result["config"].items()):
            print(f"  {key} = {json.dumps(value)}")
    return ExitCode.OK


def cmd_log(args: argparse.Namespace) -> ExitCode:
    result = call_node(args, "gov_log", {})
    if args.json:
        print_json(result)
        return ExitCode.OK
    if not result:
        print("nothing certified yet")
    for e in result:
        body = json.dumps(e["body"], sort_keys=True)
        signers = len(e["signers"])
        print(f"{e['height']:>4}  {e['id'][:12]}  {e['kind']:<18} {body}  ({signers} signers)")
    return ExitCode.OK


def add_governance_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    def add(parent: Any, name: str, fn: Callable[[argparse.Namespace], ExitCode], help: str) -> Any:
        return add_verb(parent, common, name, fn, help)

    p = add(sub, "propose", cmd_propose, "propose a governance change (admins only)")
    p.add_argument("kind", nargs="?", help=f"one of {', '.join(KINDS)}")
    p.add_argument("body", nargs="?", default="{}", help='JSON, e.g. \'{"k": "v"}\' (default {})')
    p.add_argument("--expires-in", type=int, help="seconds the proposal stays open (7 days)")
    p.add_argument("--withdraw", metavar="ID", help="withdraw your open proposal ID instead")
    p.add_argument("--force", action="store_true", help=_FORCE)
    p = add(sub, "revoke", cmd_revoke, "propose revoking a node, cut at its streams' heads here")
    p.add_argument("node", help="the node's id (hex) or its name")
    p.add_argument("--expires-in", type=int, help="seconds the proposal stays open (7 days)")
    p.add_argument("--force", action="store_true", help=_FORCE)
    p = add(sub, "vote", cmd_vote, "vote for an open proposal (admins only)")
    p.add_argument("id", help="the proposal's id, or a unique start of it")
    p = add(sub, "withdraw", cmd_withdraw, "withdraw your own open proposal (a signed record)")
    p.add_argument("id", help="the proposal's id, or a unique start of it")
    add(sub, "proposals", cmd_proposals, "every proposal held: status, votes, why refused")
    text = "the certified policy and config"
    policy = sub.add_parser("policy", parents=[common], help=text, description=text)
    verbs = policy.add_subparsers(dest="verb", required=True, metavar="VERB")
    add(verbs, "show", cmd_policy_show, "print the certified policy and config")
    text = "the certified governance chain"
    governance = sub.add_parser("governance", parents=[common], help=text, description=__doc__)
    verbs = governance.add_subparsers(dest="verb", required=True, metavar="VERB")
    add(verbs, "log", cmd_log, "print the certified chain, oldest first")
