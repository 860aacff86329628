"""Governance's control-socket methods (`kai-mesh propose`, `vote`, `proposals`, `policy`,
`governance log`). Plain values in and out: ids and keys as hex, bodies as the machine holds them
(bytes stay bytes; the CLI shows them as hex)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kai_mesh.client import ControlError
from kai_mesh.core.errors import KaiMeshError, UsageError
from kai_mesh.core.gov_wire import KINDS
from kai_mesh.core.governance import Governance, LogEntry, ProposalStatus
from kai_mesh.runtime.governance import GovernanceService

METHODS = frozenset({"gov_propose", "gov_vote", "gov_proposals", "gov_policy", "gov_log"})


async def governance_method(gov: GovernanceService, method: str, params: dict[str, Any]) -> Any:
    try:
        if method == "gov_propose":
            kind = params.get("kind")
            if kind not in KINDS:
                raise UsageError(f"kind {kind!r}: one of {', '.join(KINDS)}")
            body = params.get("body", {})
            if not isinstance(body, dict):
                raise UsageError("body: expected a map")
            expires_in = params.get("expires_in")
            if expires_in is None:
                pid = await gov.propose(kind, body)
            else:
                pid = await gov.propose(kind, body, expires_in)
            return _proposal(gov, pid)
        if method == "gov_vote":
            pid = _find(gov, params.get("id"))
            await gov.vote(pid)
            return _proposal(gov, pid)
        if method == "gov_proposals":
            machine = _machine(gov)
            threshold = machine.state.threshold
            return [plain_proposal(p, threshold) for p in machine.proposals(gov.now())]
        if method == "gov_policy":
            state = _machine(gov).state
            return {
                "policy": dict(state.policy),
                "config": dict(state.config),
                "head": gov.head_hex(),
                "height": state.height,
                "shutdown": state.shutdown,
                "shutdown_reason": state.shutdown_reason,
            }
        if method == "gov_log":
            return [plain_log(e) for e in _machine(gov).log()]
    except (UsageError, KaiMeshError) as exc:
        raise ControlError("bad_request", str(exc)) from None
    raise ControlError("unknown_method", f"unknown method {method!r}")


def _machine(gov: GovernanceService) -> Governance:
    if gov.gov is None:
        raise UsageError("governance is not open yet")
    return gov.gov


def _find(gov: GovernanceService, text: object) -> bytes:
    """A proposal id from its hex, or a unique hex prefix of it."""
    if not isinstance(text, str) or not text:
        raise UsageError("id: give a proposal id (hex, or a unique prefix)")
    text = text.lower()
    matches = [p.id for p in _machine(gov).proposals() if p.id.hex().startswith(text)]
    if not matches:
        raise UsageError(f"no proposal {text} here")
    if len(matches) > 1:
        raise UsageError(f"{text} is the start of {len(matches)} proposals: give more of it")
    found: bytes = matches[0]
    return found


def _proposal(gov: GovernanceService, pid: bytes) -> dict[str, Any]:
    machine = _machine(gov)
    for p in machine.proposals(gov.now()):
        if p.id == pid:
            return plain_proposal(p, machine.state.threshold)
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
