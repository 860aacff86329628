"""The fold's one step, `apply`, as a pure function: each kind's new state, and each refusal with
its reason, detail and proposal id. `test_machine.py` reaches `apply` through certification; these
pin the cases it did not (docs/mutation.md)."""

from __future__ import annotations

from typing import Any

import pytest

from kai_mesh.core.governance.fold import GovernanceState, Member, Refusal, apply
from kai_mesh.core.governance.wire import Proposal, SignedProposal
from kai_mesh.core.mesh.identity import node_id_of
from tests.core.strategies import secrets_from_seed

ADMIN, OTHER, NODE, INVITE_KEY = (secrets_from_seed(700 + i).verify_key for i in range(4))
NODE_ID = node_id_of(NODE)
HEAD = bytes(32)
NOW = 1_700_000_000


def _state(**changes: Any) -> GovernanceState:
    fields: dict[str, Any] = {
        "admins": (ADMIN,),
        "threshold": 1,
        "members": {},
        "invites": {},
        "redeemed": {},
        "revoked": {},
        "policy": {"max_ttl": 60, "keep": 1},
        "config": {},
        "shutdown": False,
        "shutdown_reason": "",
        "head": HEAD,
        "height": 4,
    }
    return GovernanceState(**{**fields, **changes})


def _apply(state: GovernanceState, kind: str, body: dict[str, Any], proposer: bytes = ADMIN) -> Any:
    proposal = Proposal(HEAD, kind, body, NOW + 60, proposer, b"", NOW)
    return apply(state, SignedProposal(proposal, proposal.id, b"", b"")), proposal.id


def test_a_step_moves_the_head_and_settles_updates() -> None:
    new, pid = _apply(_state(), "policy_update", {"max_ttl": 90, "keep": None, "absent": None})
    assert (new.head, new.height) == (pid, 5)
    assert new.policy == {"max_ttl": 90}  # None removes a key, even one that was never set
    new, pid = _apply(_state(config={"a": 1}), "config_update", {"b": 2, "a": None})
    assert new.config == {"b": 2} and new.policy == {"max_ttl": 60, "keep": 1}


def test_authorizations_of_invites_and_of_nodes() -> None:
    new, _ = _apply(_state(), "node_authorization", {"invite_key": INVITE_KEY, "role": "worker"})
    assert new.invites == {INVITE_KEY: "worker"} and new.members == {}
    new, _ = _apply(_state(), "node_authorization", {"node_key": NODE, "role": "worker"})
    assert new.members == {NODE_ID: Member(NODE, "worker")} and new.invites == {}


def test_a_revocation_keeps_the_members_key_and_the_cut() -> None:
    state = _state(members={NODE_ID: Member(NODE, "worker")})
    new, _ = _apply(state, "node_revocation", {"node_id": NODE_ID, "cut": {7: 3}})
    assert new.members == {}
    assert new.revoked == {NODE_ID: {7: 3}}
    assert new.revoked_keys == {NODE_ID: NODE}
    stranger = bytes(16)  # never a member: revoked, but there is no key to keep
    new, _ = _apply(_state(), "node_revocation", {"node_id": stranger, "cut": {}})
    assert new.revoked == {stranger: {}} and new.revoked_keys == {}


def test_admin_changes_and_shutdowns() -> None:
    new, _ = _apply(_state(), "admin_change", {"admins": [ADMIN, OTHER], "threshold": 2})
    assert (new.admins, new.threshold) == ((ADMIN, OTHER), 2)
    new, _ = _apply(_state(), "emergency_shutdown", {"reason": "fire"})
    assert (new.shutdown, new.shutdown_reason) == (True, "fire")
    new, _ = _apply(new, "shutdown_lift", {})
    assert (new.shutdown, new.shutdown_reason) == (False, "")


@pytest.mark.parametrize(
    ("state", "kind", "body", "proposer", "reason", "detail"),
    [
        (
            _state(),
            "config_update",
            {"a": 1},
            OTHER,
            "not_admin",
            "the proposer is not an admin",
        ),
        (
            _state(invites={INVITE_KEY: "worker"}),
            "node_authorization",
            {"invite_key": INVITE_KEY, "role": "worker"},
            ADMIN,
            "invite_exists",
            "this invite key was authorized before",
        ),
        (
            _state(revoked={NODE_ID: {}}),
            "node_authorization",
            {"node_key": NODE, "role": "worker"},
            ADMIN,
            "revoked",
            "a revoked node comes back only with a new key",
        ),
        (
            _state(revoked={NODE_ID: {}}),
            "node_revocation",
            {"node_id": NODE_ID, "cut": {}},
            ADMIN,
            "already_revoked",
            f"node {NODE_ID.hex()} is revoked already",
        ),
        (
            _state(),
            "shutdown_lift",
            {},
            ADMIN,
            "not_shut_down",
            "the mesh is not shut down",
        ),
    ],
    ids=["not_admin", "invite_exists", "revoked", "already_revoked", "not_shut_down"],
)
def test_each_refusal_names_its_reason_and_the_proposal(
    state: GovernanceState,
    kind: str,
    body: dict[str, Any],
    proposer: bytes,
    reason: str,
    detail: str,
) -> None:
    refusal, pid = _apply(state, kind, body, proposer)
    assert refusal == Refusal(reason, detail, pid)
