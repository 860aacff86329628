"""A revocation in the StateService: learned early or late, and across a restart, every node ends
with the revoked node's entries up to the cut and nothing after it."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import trio

from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.governance.machine import GovernanceState, Member
from kai_mesh.core.mesh.genesis import DEFAULT_POLICY, Genesis
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.state.wire import Entries, encode_sync
from kai_mesh.runtime.blocking import inline
from kai_mesh.runtime.governance.control import governance_method
from kai_mesh.runtime.governance.members import Members
from kai_mesh.runtime.governance.service import GovernanceService
from kai_mesh.runtime.state.service import StateService
from kai_mesh.runtime.store import Store
from tests.runtime.state.test_sync import MESH, _ignore, start_node
from transports.memory import LinkProfile, MemoryNetwork


def fold(
    members: dict[bytes, bytes], revoked: NodeSecrets | None, cut: dict[int, int]
) -> GovernanceState:
    """The fold after `revoked` was revoked at `cut` (or before any revocation)."""
    gone = {} if revoked is None else {revoked.node_id: cut}
    keys = {} if revoked is None else {revoked.node_id: revoked.verify_key}
    return GovernanceState(
        admins=(),
        threshold=1,
        members={n: Member(k, "member") for n, k in members.items() if n not in gone},
        invites={},
        redeemed={},
        revoked=gone,
        policy={},
        config={},
        shutdown=False,
        shutdown_reason="",
        head=MESH,
        height=len(gone),
        revoked_keys=keys,
    )


def service(secrets: NodeSecrets, keys: dict[bytes, bytes]) -> StateService:
    async def send(node_id: bytes, frame: bytes) -> None:
        pass

    return StateService(
        secrets=secrets, mesh_id=MESH, keys=keys, send=send, peers=list, emit=_ignore
    )


async def test_a_late_revocation_drops_entries_and_a_restart_rebuilds_the_same_doc(
    tmp_path: Path,
) -> None:
    r, b = NodeSecrets.generate(os.urandom), NodeSecrets.generate(os.urandom)
    keys = {s.node_id: s.verify_key for s in (r, b)}
    writer = service(r, dict(keys))
    await writer.start(Store(Path(":memory:"), run_sync=inline))
    for i in range(4):
        await writer.write(("shared", f"k{i}"), i)
    replica = writer.replica
    assert replica is not None
    [client_id] = replica.vector()
    records = replica._records_after(client_id, 0)
    frame = encode_sync(Entries(headers=records[:1], entries=records[1:]))

    store = Store(tmp_path / "b.db")
    here_keys = dict(keys)
    here = service(b, here_keys)
    await here.start(store)
    here.on_governance(fold(keys, None, {}))
    await here.on_frame(r.node_id, frame)
    assert here.read(("shared",)) == {f"k{i}": i for i in range(4)}
    # The revocation arrives: Members drops r, the fold keeps its key and the cut.
    del here_keys[r.node_id]
    revoked = fold(keys, r, {client_id: 2})
    here.on_governance(revoked)
    kept = {"k0": 0, "k1": 1}
    assert here.read(("shared",)) == kept
    assert here.status()["revoked_dropped"] == 2
    await here.on_frame(r.node_id, frame)  # offered again: refused, counted
    assert here.read(("shared",)) == kept and here.status()["refused"] == {"revoked": 2}
    digest = here.digests()
    store.close()

    # A restart: the state opens before governance, with r no longer a member.
    again = service(b, here_keys)
    await again.start(Store(tmp_path / "b.db"))
    again.on_governance(revoked)
    assert again.read(("shared",)) == kept and again.digests() == digest


async def test_nodes_learning_the_revocation_at_different_times_converge(
    autojump_clock: object,
) -> None:
    net = MemoryNetwork(seed=11)
    r, a, b = (NodeSecrets.generate(os.urandom) for _ in range(3))
    keys = {s.node_id: s.verify_key for s in (r, a, b)}
    per_node = {s.node_id: dict(keys) for s in (r, a, b)}
    async with trio.open_nursery() as nursery:
        nodes = [
            await start_node(nursery, net, s, per_node[s.node_id], i)
            for i, s in enumerate((r, a, b))
        ]
        writer, early, late = nodes
        net.full([s.node_id for s in (r, a, b)], LinkProfile(latency=0.01))
        await trio.sleep(3)
        await writer.write(("shared", "before"), 1)
        await trio.sleep(3)
        assert writer.replica is not None
        cut = writer.revocation_cut(r.node_id)
        assert early.revocation_cut(r.node_id) == cut and list(cut.values()) == [1]
        revoked = fold(keys, r, cut)
        del per_node[a.node_id][r.node_id]
        early.on_governance(revoked)
        await writer.write(("shared", "after"), 2)  # r does not know yet
        await trio.sleep(3)
        assert early.read(("shared",)) == {"before": 1}
        assert late.read(("shared",)) == {"before": 1, "after": 2}
        del per_node[b.node_id][r.node_id]
        late.on_governance(revoked)
        with trio.fail_after(60):
            while early.digests() != late.digests():  # noqa: ASYNC110
                await trio.sleep(0.5)
        assert early.read(("shared",)) == late.read(("shared",)) == {"before": 1}
        assert early.status()["refused"].get("revoked", 0) >= 1
        assert late.status()["revoked_dropped"] == 1
        nursery.cancel_scope.cancel()


async def test_gov_revoke_proposes_the_cut_this_node_holds_and_state_follows(
    tmp_path: Path,
) -> None:
    admin, r = NodeSecrets.generate(os.urandom), NodeSecrets.generate(os.urandom)
    trusted = (admin.verify_key, r.verify_key)
    genesis = Genesis("lab", trusted[:1], 1, bytes(16), dict(DEFAULT_POLICY), trusted)
    genesis = genesis.signed_by(admin)
    store = Store(Path(":memory:"), run_sync=inline)
    gov = GovernanceService(secrets=admin, genesis=genesis, send=_nowhere, peers=list, emit=_ignore)
    members = Members({admin.node_id: admin.verify_key, r.node_id: r.verify_key})
    state = StateService(
        secrets=admin,
        mesh_id=genesis.mesh_id,
        keys=members,
        send=_nowhere,
        peers=list,
        emit=_ignore,
    )
    writer = StateService(
        secrets=r,
        mesh_id=genesis.mesh_id,
        keys=dict(members),
        send=_nowhere,
        peers=list,
        emit=_ignore,
    )
    await writer.start(Store(Path(":memory:"), run_sync=inline))
    await state.start(store)
    gov.watch(members.update)
    gov.watch(state.on_governance)
    await gov.start(store)
    for i in range(3):
        await writer.write(("shared", f"k{i}"), i)
    assert writer.replica is not None
    [client_id] = writer.replica.vector()
    records = writer.replica._records_after(client_id, 0)
    await state.on_frame(r.node_id, encode_sync(Entries(headers=records[:1], entries=records[1:3])))

    with pytest.raises(ControlError, match="replicated state"):
        await governance_method(gov, "gov_revoke", {"node": r.node_id.hex()})
    with pytest.raises(ControlError, match="known name"):
        await governance_method(gov, "gov_revoke", {"node": "pi9"}, cut_for=state.revocation_cut)
    proposal = await governance_method(
        gov,
        "gov_revoke",
        {"node": "pi2"},
        cut_for=state.revocation_cut,
        node_named={"pi2": r.node_id}.get,
    )
    assert proposal["status"] == "certified" and proposal["kind"] == "node_revocation"
    assert proposal["body"] == {"node_id": r.node_id.hex(), "cut": {str(client_id): 2}}
    assert r.node_id not in members
    await state.on_frame(r.node_id, encode_sync(Entries(headers=[], entries=records[3:])))
    assert state.read(("shared",)) == {"k0": 0, "k1": 1}
    assert state.status()["refused"] == {"revoked": 1}


async def _nowhere(node_id: bytes, frame: bytes) -> None:
    pass


async def test_a_writer_whose_stream_is_held_back_goes_on_writing_on_a_new_stream(
    tmp_path: Path,
) -> None:
    r, w = NodeSecrets.generate(os.urandom), NodeSecrets.generate(os.urandom)
    keys = {s.node_id: s.verify_key for s in (r, w)}
    revoked_writer = service(r, dict(keys))
    await revoked_writer.start(Store(Path(":memory:"), run_sync=inline))
    for i in range(2):
        await revoked_writer.write(("shared", f"k{i}"), i)
    assert revoked_writer.replica is not None
    [r_client] = revoked_writer.replica.vector()
    records = revoked_writer.replica._records_after(r_client, 0)

    store = Store(tmp_path / "w.db")
    here = service(w, dict(keys))
    await here.start(store)
    here.on_governance(fold(keys, None, {}))
    await here.on_frame(r.node_id, encode_sync(Entries(headers=records[:1], entries=records[1:])))
    await here.write(("shared", "k1"), "mine")  # built on r's k1, which the cut leaves out
    first_stream = here.status()["client_id"]
    here.on_governance(fold(keys, r, {r_client: 1}))
    assert here.read(("shared",)) == {"k0": 0}
    assert here.replica is not None and here.replica.own_stream_blocked() == "held back"
    assert here.status()["held_back"] == {str(first_stream): 1}

    await here.write(("shared", "y"), 1)  # not refused: a new stream takes it
    assert here.read(("shared",)) == {"k0": 0, "y": 1}
    second_stream = here.status()["client_id"]
    assert second_stream != first_stream and here.counters["new_streams"] == 1
    store.close()
    again = service(w, dict(keys))  # a clean restart goes on on the new stream
    await again.start(Store(tmp_path / "w.db"))
    again.on_governance(fold(keys, r, {r_client: 1}))
    assert again.read(("shared",)) == {"k0": 0, "y": 1}
    assert again.status()["client_id"] == second_stream


async def test_evidence_of_a_fork_is_kept_in_the_store_and_outlives_a_restart(
    tmp_path: Path,
) -> None:
    """The replica keeps a fork's two entries as evidence; the service commits them, so a node
    restarted after it still holds the proof and still refuses the forked stream."""
    from kai_mesh.core.state.wire import ZERO_HASH
    from tests.core.state.test_replica import EVIL, KEYS, SECRETS, Writer
    from tests.core.state.test_replica import MESH as REPLICA_MESH

    def service() -> StateService:
        return StateService(
            secrets=SECRETS[1],
            mesh_id=REPLICA_MESH,
            keys=KEYS,
            send=_send_nothing,
            peers=lambda: [],
            emit=lambda topic, data: None,
            rng=random.Random(3),
        )

    evil = Writer(EVIL, 700)
    one = evil.entry(evil.update("a", 1))
    other = evil.entry(evil.update("a", 2), seq=1, prev=ZERO_HASH)
    db = tmp_path / "node.db"
    first = service()
    store = Store(db, run_sync=inline)
    await first.start(store)
    await first.on_frame(EVIL.node_id, encode_sync(Entries([evil.header], [one])))
    await first.on_frame(EVIL.node_id, encode_sync(Entries([], [other])))
    assert first.status()["evidence"] == 1
    assert [(k, c) for k, c, *_ in store.state_evidence()] == [("fork", 700)]
    await first.on_frame(EVIL.node_id, encode_sync(Entries([], [other])))  # the same proof again
    assert len(store.state_evidence()) == 1
    store.close()
    again = service()
    await again.start(Store(db, run_sync=inline))
    assert again.status()["evidence"] == 1
    assert again.replica is not None and 700 in again.replica.quarantined


async def _send_nothing(node_id: bytes, frame: bytes) -> None:
    pass
