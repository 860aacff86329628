"""Supervisor commands: accepted from an admin for this node once, refused with the reason
otherwise; the decoder against any bytes."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kai_mesh.core.governance.fold import GovernanceState
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.supervision.command import (
    COMMAND_FORMAT,
    Command,
    CommandJudge,
    Refusal,
)

MESH = b"m" * 32
SUPERVISOR = NodeSecrets.generate(os.urandom)
NODE = NodeSecrets.generate(os.urandom)
STRANGER = NodeSecrets.generate(os.urandom)


def _gov(*admins: NodeSecrets) -> GovernanceState:
    return GovernanceState(
        admins=tuple(a.verify_key for a in admins),
        threshold=1,
        members={},
        invites={},
        redeemed={},
        revoked={},
        policy={},
        config={},
        shutdown=False,
        shutdown_reason="",
        head=b"",
        height=0,
    )


def _cmd(
    by: NodeSecrets = SUPERVISOR,
    action: str = "agent_restart",
    target: bytes | None = None,
    now: int = 1000,
    mesh: bytes = MESH,
) -> bytes:
    return Command.create(
        by,
        mesh,
        action=action,
        target=target or NODE.node_id,
        args={"name": "vision"},
        now=now,
        nonce=os.urandom(8),
    ).to_bytes()


def _reason(got: Command | Refusal) -> str:
    return got.reason if isinstance(got, Refusal) else "ok"


def test_accepted_once_then_replayed() -> None:
    judge = CommandJudge(NODE.node_id, MESH)
    gov = _gov(SUPERVISOR)
    data = _cmd()
    got = judge.judge(data, gov, 1001)
    assert (
        isinstance(got, Command)
        and got.action == "agent_restart"
        and got.args == {"name": "vision"}
    )
    assert _reason(judge.judge(data, gov, 1002)) == "replayed"
    fresh = CommandJudge(NODE.node_id, MESH)
    fresh.restore(judge.seen())  # what a restarted node reloads
    assert _reason(fresh.judge(data, gov, 1002)) == "replayed"


@pytest.mark.parametrize(
    ("data", "now", "reason"),
    [
        (lambda: _cmd(by=STRANGER), 1001, "unauthorized"),
        (lambda: _cmd(target=STRANGER.node_id), 1001, "other_node"),
        (lambda: _cmd(), 1000 + 301, "expired"),
        (lambda: _cmd(now=5000), 1000, "not_yet"),
        (lambda: _cmd(action="format_disk"), 1001, "unknown"),
        (lambda: _cmd(mesh=b"x" * 32), 1001, "bad_signature"),
        (lambda: _cmd()[:-1] + b"\x00", 1001, "bad_signature"),
        (lambda: b"\x43\x90", 1001, "malformed"),
        (lambda: b"", 1001, "malformed"),
    ],
)
def test_refusals_say_why(data: object, now: int, reason: str) -> None:
    judge = CommandJudge(NODE.node_id, MESH)
    assert _reason(judge.judge(data(), _gov(SUPERVISOR), now)) == reason  # type: ignore[operator]


def test_no_governance_yet_is_unauthorized() -> None:
    judge = CommandJudge(NODE.node_id, MESH)
    assert _reason(judge.judge(_cmd(), None, 1001)) == "unauthorized"


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_any_bytes_are_refused_never_raised(data: bytes) -> None:
    judge = CommandJudge(NODE.node_id, MESH)
    got = judge.judge(bytes([COMMAND_FORMAT]) + data, _gov(SUPERVISOR), 1001)
    assert isinstance(got, Refusal)
