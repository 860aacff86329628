"""Issue 15, finding 3 on a node: the mistyped `admin_change` of the issue is refused in one line
before it is signed; an open proposal is withdrawn over the control socket's method, and the
withdrawal holds across a restart (rebuilt from the store), so the node can propose again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.mesh.genesis import Genesis
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.runtime.governance.control import governance_method
from kai_mesh.runtime.governance.service import GovernanceService
from kai_mesh.runtime.store import Store


def _ignore(topic: str, data: object) -> None:
    pass


async def _noop(node_id: bytes, frame: bytes) -> None:
    pass


async def _service(secrets: NodeSecrets, genesis: Genesis, path: Path) -> GovernanceService:
    gov = GovernanceService(secrets=secrets, genesis=genesis, send=_noop, peers=list, emit=_ignore)
    await gov.start(Store(path))
    return gov


async def test_a_mistyped_admin_change_is_refused_and_an_open_one_withdrawn(
    tmp_path: Path,
) -> None:
    admin = NodeSecrets.generate(os.urandom)
    genesis = Genesis.of_one(admin, "home", bytes(16))
    gov = await _service(admin, genesis, tmp_path / "node.db")
    typo = {"admins": ["44" * 32], "threshold": 1}
    with pytest.raises(ControlError, match="not an Ed25519 public key") as raised:
        body = {"admins": [bytes.fromhex(k) for k in typo["admins"]], "threshold": 1}
        await governance_method(gov, "gov_propose", {"kind": "admin_change", "body": body})
    assert raised.value.code == "bad_request" and "\n" not in str(raised.value)

    stranger = NodeSecrets.generate(os.urandom).verify_key  # a real key, but nobody here holds it
    body = {"admins": [stranger], "threshold": 1}
    made = await governance_method(gov, "gov_propose", {"kind": "admin_change", "body": body})
    assert made["status"] == "open"
    shutdown = {"kind": "emergency_shutdown", "body": {"reason": "drill"}}
    with pytest.raises(ControlError, match="open proposal"):
        await governance_method(gov, "gov_propose", shutdown)
    gone = await governance_method(gov, "gov_withdraw", {"id": made["id"][:10]})
    assert gone["status"] == "withdrawn"

    again = await _service(admin, genesis, tmp_path / "node.db")  # a restart
    listed = await governance_method(again, "gov_proposals", {})
    assert [p["status"] for p in listed] == ["withdrawn"]
    done = await governance_method(again, "gov_propose", shutdown)
    assert done["status"] == "certified"
