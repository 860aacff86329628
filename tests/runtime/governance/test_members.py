"""The live member map follows the governance fold: an authorization adds a member with its role,
a revocation drops it and tells whoever closes links; the service calls its watchers on change."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from kai_mesh.core.mesh.genesis import DEFAULT_POLICY, Genesis
from kai_mesh.core.mesh.identity import NodeSecrets, node_id_of
from kai_mesh.runtime.blocking import inline
from kai_mesh.runtime.governance.members import Members
from kai_mesh.runtime.governance.service import GovernanceService
from kai_mesh.runtime.store import Store
from tests.runtime.builders import ignore

NOW = 1_800_000_000


def _mesh() -> tuple[NodeSecrets, Genesis]:
    admin = NodeSecrets.generate(os.urandom)
    key = admin.verify_key
    genesis = Genesis("lab", (key,), 1, bytes(16), dict(DEFAULT_POLICY), (key,)).signed_by(admin)
    return admin, genesis


async def _noop_send(node_id: bytes, frame: bytes) -> None:
    pass


def _service(admin: NodeSecrets, genesis: Genesis) -> GovernanceService:
    return GovernanceService(
        secrets=admin, genesis=genesis, send=_noop_send, peers=list, emit=ignore, clock=lambda: NOW
    )


async def test_members_follow_authorization_and_revocation() -> None:
    admin, genesis = _mesh()
    newcomer = NodeSecrets.generate(os.urandom)
    members = Members({node_id_of(admin.verify_key): admin.verify_key})
    removed: list[bytes] = []
    members.on_removed(removed.append)
    service = _service(admin, genesis)
    service.watch(members.update)
    await service.start(Store(Path(":memory:"), run_sync=inline))
    assert newcomer.node_id not in members

    await service.propose("node_authorization", {"node_key": newcomer.verify_key, "role": "guest"})
    assert members[newcomer.node_id] == newcomer.verify_key
    assert members.role(newcomer.node_id) == "guest"
    assert removed == []

    await service.propose("node_revocation", {"node_id": newcomer.node_id, "cut": {}})
    assert newcomer.node_id not in members
    assert members.role(newcomer.node_id) is None
    assert removed == [newcomer.node_id]
    assert admin.node_id in members


async def test_a_watcher_that_raises_does_not_stop_the_others() -> None:
    admin, genesis = _mesh()
    seen: list[int] = []

    def broken(state: object) -> None:
        raise RuntimeError("boom")

    service = _service(admin, genesis)
    await service.start(Store(Path(":memory:"), run_sync=inline))
    service.watch(broken)  # called at once: the service is open
    service.watch(lambda state: seen.append(state.height))
    await service.propose("policy_update", {"k": "v"})
    assert seen == [0, 1]
    await trio.lowlevel.checkpoint()
