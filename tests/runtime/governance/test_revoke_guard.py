"""Issue 15, finding 4: revoking this node itself, or the admin whose loss leaves fewer admins than
the threshold, is refused unless forced, and the refusal says what would follow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.mesh.genesis import DEFAULT_POLICY, Genesis
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.runtime.blocking import inline
from kai_mesh.runtime.governance.control import governance_method
from kai_mesh.runtime.governance.service import GovernanceService
from kai_mesh.runtime.store import Store


def _ignore(topic: str, data: object) -> None:
    pass


async def _noop(node_id: bytes, frame: bytes) -> None:
    pass


def _cut(node_id: bytes) -> dict[int, int]:
    return {}


async def _service(secrets: NodeSecrets, genesis: Genesis) -> GovernanceService:
    gov = GovernanceService(secrets=secrets, genesis=genesis, send=_noop, peers=list, emit=_ignore)
    await gov.start(Store(Path(":memory:"), run_sync=inline))
    return gov


async def _revoke(gov: GovernanceService, node: bytes, **extra: object) -> dict[str, object]:
    params = {"node": node.hex(), **extra}
    result: dict[str, object] = await governance_method(gov, "gov_revoke", params, cut_for=_cut)
    return result


async def test_self_revocation_on_one_of_one_needs_force() -> None:
    admin = NodeSecrets.generate(os.urandom)
    gov = await _service(admin, Genesis.of_one(admin, "home", bytes(16)))
    with pytest.raises(ControlError, match=r"is this node.*for good.*--force") as raised:
        await _revoke(gov, admin.node_id)
    assert raised.value.code == "bad_request" and "\n" not in str(raised.value)
    body = {"node_id": admin.node_id, "cut": {}}
    with pytest.raises(ControlError, match="is this node"):  # the same through propose
        await governance_method(gov, "gov_propose", {"kind": "node_revocation", "body": body})
    assert gov.machine().state.revoked == {}
    forced = await _revoke(gov, admin.node_id, force=True)
    assert forced["status"] == "certified" and "is this node" in str(forced["warning"])


async def test_revoking_the_admin_below_the_threshold_needs_force() -> None:
    a, b = (NodeSecrets.generate(os.urandom) for _ in range(2))
    member = NodeSecrets.generate(os.urandom)
    keys = (a.verify_key, b.verify_key)
    genesis = Genesis("lab", keys, 2, bytes(16), dict(DEFAULT_POLICY), (*keys, member.verify_key))
    genesis = genesis.signed_by(a).signed_by(b)
    gov = await _service(a, genesis)
    with pytest.raises(ControlError, match=r"1 admin.*threshold of 2.*frozen for good"):
        await _revoke(gov, b.node_id)
    plain = await _revoke(gov, member.node_id)  # a plain member: no question asked
    assert plain["status"] == "open" and "warning" not in plain
