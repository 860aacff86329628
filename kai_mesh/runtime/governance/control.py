"""Governance's control-socket methods (`kai-mesh propose`, `vote`, `withdraw`, `revoke`,
`proposals`, `policy`, `governance log`). Plain values in and out: ids and keys as hex, bodies as
the machine holds them (bytes stay bytes; the CLI shows them as hex).

`gov_revoke` proposes a `node_revocation` whose cut is the revoked node's stream heads as this
node holds them (`cut_for`, the replicated state's `revocation_cut`): the admins who vote agree
to keep what the proposer saw, and everything later is refused everywhere.

A revocation that would lock this node or the mesh out for good is refused unless the request
says `"force": true` (`revocation_risk`): revoking this node itself, or an admin's node when
fewer than `threshold` admins would be left on unrevoked nodes (for a 1-of-1 mesh, its only
admin). The refusal says what would follow; a forced one carries it back as `warning`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.errors import KaiMeshError, UsageError
from kai_mesh.core.governance.machine import LogEntry, ProposalStatus
from kai_mesh.core.governance.wire import KINDS
from kai_mesh.core.mesh.address import NODE_ID_BYTES
from kai_mesh.core.mesh.identity import node_id_of
from kai_mesh.runtime.governance.service import DEFAULT_EXPIRY, GovernanceService

METHODS = frozenset(
    {
        "gov_propose",
        "gov_vote",
        "gov_withdraw",
        "gov_revoke",
        "gov_proposals",
        "gov_policy",
        "gov_log",
    }
)

CutFor = Callable[[bytes], dict[int, int]]
NodeNamed = Callable[[str], bytes | None]


async def governance_method(
    gov: GovernanceService,
    method: str,
    params: dict[str, Any],
    *,
    cut_for: CutFor | None = None,
    node_named: NodeNamed | None = None,
) -> Any:
    """`cut_for(node_id)`: the stream heads a revocation names (without it, `gov_revoke` is
    refused); `node_named(name)`: a node id for a name `gov_revoke` is given, or None."""
    try:
        if method == "gov_propose":
            kind = params.get("kind")
            if kind not in KINDS:
                raise UsageError(f"kind {kind!r}: one of {', '.join(KINDS)}")
            body = params.get("body", {})
            if not isinstance(body, dict):
                raise UsageError("body: expected a map")
            warning = None
            if kind == "node_revocation" and type(body.get("node_id")) is bytes:
                warning = _check_risk(gov, body["node_id"], params)
            return _proposal(gov, await propose_from(gov, kind, body, params), warning)
        if method == "gov_revoke":
            if cut_for is None:
                raise UsageError("revocations need the replicated state, which is not open")
            node_id = _node(params.get("node"), node_named)
            warning = _check_risk(gov, node_id, params)
            body = {"node_id": node_id, "cut": cut_for(node_id)}
            pid = await propose_from(gov, "node_revocation", body, params)
            return _proposal(gov, pid, warning)
        if method == "gov_vote":
            pid = _find(gov, params.get("id"))
            await gov.vote(pid)
            return _proposal(gov, pid)
        if method == "gov_withdraw":
            pid = _find(gov, params.get("id"))
            await gov.withdraw(pid)
            return _proposal(gov, pid)
        if method == "gov_proposals":
            machine = gov.machine()
            threshold = machine.state.threshold
            return [plain_proposal(p, threshold) for p in machine.proposals(gov.now())]
        if method == "gov_policy":
            state = gov.machine().state
            return {
                "policy": dict(state.policy),
                "config": dict(state.config),
                "head": gov.head_hex(),
                "height": state.height,
                "shutdown": state.shutdown,
                "shutdown_reason": state.shutdown_reason,
            }
        if method == "gov_log":
            return [plain_log(e) for e in gov.machine().log()]
    except (UsageError, KaiMeshError) as exc:
        raise ControlError("bad_request", str(exc)) from None
    raise ControlError("unknown_method", f"unknown method {method!r}")


async def propose_from(
    gov: GovernanceService, kind: str, body: dict[str, Any], params: dict[str, Any]
) -> bytes:
    """Propose with the request's `expires_in`, or the default when it is missing or null."""
    expires_in = params.get("expires_in")
    return await gov.propose(kind, body, DEFAULT_EXPIRY if expires_in is None else expires_in)


def revocation_risk(gov: GovernanceService, node_id: bytes) -> str | None:
    """What revoking `node_id` would lock out for good, in one line, or None if nothing."""
    state = gov.machine().state
    if node_id in state.revoked:
        return None  # refused as already revoked anyway
    if node_id == node_id_of(gov.own_key):
        return (
            f"node {node_id.hex()} is this node: once certified, every node closes its links and "
            "refuses its messages, heartbeats and state writes for good; it can come back only "
            "with a new key, authorized or invited by the admins"
        )
    if not any(node_id_of(a) == node_id for a in state.admins):
        return None
    left = [a for a in state.admins if node_id_of(a) not in {node_id, *state.revoked}]
    if len(left) >= state.threshold:
        return None
    return (
        f"node {node_id.hex()} holds an admin key; without it {len(left)} admin(s) remain for a "
        f"threshold of {state.threshold}, so no proposal (not even an admin_change) can be "
        "certified again: the mesh's governance is frozen for good"
    )


def _check_risk(gov: GovernanceService, node_id: bytes, params: dict[str, Any]) -> str | None:
    risk = revocation_risk(gov, node_id)
    force = params.get("force", False)
    if type(force) is not bool:
        raise UsageError("force: true or false")
    if risk is not None and not force:
        raise UsageError(f"refused: {risk}. Pass --force to revoke it anyway")
    return risk


def _node(text: object, node_named: NodeNamed | None) -> bytes:
    """A node id from its hex, or from a name `node_named` knows."""
    if not isinstance(text, str) or not text:
        raise UsageError("node: give a node id (hex) or a node's name")
    try:
        node_id = bytes.fromhex(text)
    except ValueError:
        node_id = b""
    if len(node_id) == NODE_ID_BYTES:
        return node_id
    found = None if node_named is None else node_named(text)
    if found is None:
        raise UsageError(
            f"node {text!r}: not a node id ({NODE_ID_BYTES} bytes in hex) or a known name"
        )
    return found


def _find(gov: GovernanceService, text: object) -> bytes:
    """A proposal id from its hex, or a unique hex prefix of it."""
    if not isinstance(text, str) or not text:
        raise UsageError("id: give a proposal id (hex, or a unique prefix)")
    text = text.lower()
    matches = [p.id for p in gov.machine().proposals() if p.id.hex().startswith(text)]
    if not matches:
        raise UsageError(f"no proposal {text} here")
    if len(matches) > 1:
        raise UsageError(f"{text} is the start of {len(matches)} proposals: give more of it")
    found: bytes = matches[0]
    return found


def _proposal(gov: GovernanceService, pid: bytes, warning: str | None = None) -> dict[str, Any]:
    machine = gov.machine()
    for p in machine.proposals(gov.now()):
        if p.id == pid:
            out = plain_proposal(p, machine.state.threshold)
            if warning is not None:
                out["warning"] = warning
            return out
    raise UsageError("no such proposal here")


def plain(value: Any) -> Any:
    """Bytes as hex, recursively: what JSON shows."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def plain_proposal(p: ProposalStatus, threshold: int) -> dict[str, Any]:
    """`threshold`: the votes needed now (a certified proposal may have needed another)."""
    counted = sum(1 for v in p.votes if v.counted)
    return {
        "id": p.id.hex(),
        "kind": p.kind,
        "body": plain(p.body),
        "parent": p.parent.hex(),
        "proposer": p.proposer.hex(),
        "expires_at": p.expires_at,
        "status": p.status,
        "why": p.why,
        "height": p.height,
        "votes_counted": counted,
        "threshold": threshold,
        "votes": [
            {
                "voter": v.voter.hex(),
                "signed_time": v.signed_time,
                "counted": v.counted,
                "why": v.why,
            }
            for v in p.votes
        ],
    }


def plain_log(e: LogEntry) -> dict[str, Any]:
    return {
        "height": e.height,
        "id": e.id.hex(),
        "kind": e.kind,
        "body": plain(e.body),
        "proposer": e.proposer.hex(),
        "signers": [s.hex() for s in e.signers],
        "expires_at": e.expires_at,
    }
