"""What the governance machine folds to and reports: the state, refusals, statuses, the log.

`apply` is one step of the fold: the state after a certified proposal, or why it cannot follow.
Pure data and one pure function; `core.governance.machine.Governance` decides which proposals count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kai_mesh.core.governance.wire import SignedProposal
from kai_mesh.core.mesh.identity import node_id_of


@dataclass(frozen=True, slots=True)
class Member:
    key: bytes
    role: str


@dataclass(frozen=True)
class GovernanceState:
    """The fold. Mappings are not to be mutated. `invites`: authorized, not yet taken (key ->
    role); `redeemed`: invite key -> the node key that took it; `revoked`: node id -> the cut
    (Yjs client id -> last valid seq); `revoked_keys`: node id -> the key of each revoked node
    that was a member (its entries up to the cut still verify under it)."""

    admins: tuple[bytes, ...]
    threshold: int
    members: Mapping[bytes, Member]
    invites: Mapping[bytes, str]
    redeemed: Mapping[bytes, bytes]
    revoked: Mapping[bytes, Mapping[int, int]]
    policy: Mapping[str, Any]
    config: Mapping[str, Any]
    shutdown: bool
    shutdown_reason: str
    head: bytes
    height: int
    revoked_keys: Mapping[bytes, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a record was refused, or is kept but does not count. `id`: the proposal's, if any.

    Reasons: a `ProtocolError.reason` (malformed, bad_signature, ...), "full", "unknown_proposal",
    "unknown_parent", "stale_parent", "lost_fork", "not_admin", "after_expiry",
    "duplicate_vote", "proposal_refused", "revoked", "already_revoked", "invite_exists",
    "not_shut_down", "unknown_invite", "invite_taken", "withdrawn", "not_proposer",
    "duplicate_withdrawal", "certified"."""

    reason: str
    detail: str
    id: bytes = b""


@dataclass(slots=True)
class Outcome:
    """What one `receive` did. `stored`: a new record was kept (persist it); `certified` and
    `orphaned`: proposal ids that joined or left the chain, in order; `refused`: the record was
    not kept; `not_counted`: kept, but it does not count (yet, or at all)."""

    stored: bool = False
    duplicate: bool = False
    changed: bool = False
    certified: list[bytes] = field(default_factory=list)
    orphaned: list[bytes] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    not_counted: list[Refusal] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class VoteStatus:
    voter: bytes
    signed_time: int
    counted: bool
    why: str  # empty when counted


@dataclass(frozen=True, slots=True)
class ProposalStatus:
    """status: "certified" (on the chain at `height`), "open", "expired" (open, but past its
    expiry by the `now` given to `proposals`), "withdrawn" (by its proposer), "orphaned" or
    "refused" (`why` says why)."""

    id: bytes
    kind: str
    body: Mapping[str, Any]
    parent: bytes
    proposer: bytes
    expires_at: int
    status: str
    why: str
    votes: tuple[VoteStatus, ...]
    height: int | None


@dataclass(frozen=True, slots=True)
class LogEntry:
    height: int
    id: bytes
    kind: str
    body: Mapping[str, Any]
    proposer: bytes
    signers: tuple[bytes, ...]
    expires_at: int


@dataclass(frozen=True, slots=True)
class Evidence:
    """`admin` voted for two certified siblings `ids` of `parent`; `votes` are its two signed
    votes (encoded), each verifiable on its own."""

    admin: bytes
    parent: bytes
    ids: tuple[bytes, bytes]
    votes: tuple[bytes, bytes]


def _settle(current: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(current)
    for key, value in update.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def apply(state: GovernanceState, sp: SignedProposal) -> GovernanceState | Refusal:
    """The state after `sp`, or why it cannot follow `state` (its body is already checked)."""
    p, pid = sp.proposal, sp.id
    if p.proposer not in state.admins:
        return Refusal("not_admin", "the proposer is not an admin", pid)
    body = p.body
    new = replace(state, head=pid, height=state.height + 1)
    if p.kind == "policy_update":
        return replace(new, policy=_settle(state.policy, body))
    if p.kind == "config_update":
        return replace(new, config=_settle(state.config, body))
    if p.kind == "node_authorization" and "invite_key" in body:
        if body["invite_key"] in state.invites:
            return Refusal("invite_exists", "this invite key was authorized before", pid)
        return replace(new, invites={**state.invites, body["invite_key"]: body["role"]})
    if p.kind == "node_authorization":
        node_id = node_id_of(body["node_key"])
        if node_id in state.revoked:
            return Refusal("revoked", "a revoked node comes back only with a new key", pid)
        return replace(
            new, members={**state.members, node_id: Member(body["node_key"], body["role"])}
        )
    if p.kind == "node_revocation":
        node_id = body["node_id"]
        if node_id in state.revoked:
            return Refusal("already_revoked", f"node {node_id.hex()} is revoked already", pid)
        members = {k: v for k, v in state.members.items() if k != node_id}
        keys = dict(state.revoked_keys)
        if node_id in state.members:
            keys[node_id] = state.members[node_id].key
        revoked = {**state.revoked, node_id: body["cut"]}
        return replace(new, members=members, revoked=revoked, revoked_keys=keys)
    if p.kind == "admin_change":
        return replace(new, admins=tuple(body["admins"]), threshold=body["threshold"])
    if p.kind == "emergency_shutdown":
        return replace(new, shutdown=True, shutdown_reason=body["reason"])
    if not state.shutdown:  # shutdown_lift
        return Refusal("not_shut_down", "the mesh is not shut down", pid)
    return replace(new, shutdown=False, shutdown_reason="")
