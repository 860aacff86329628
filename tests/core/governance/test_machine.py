"""Governance: the wire records, certification, the fold, forks, invites, and order independence."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import BadSignature, Malformed, ProtocolError, Truncated, UsageError
from kai_mesh.core.governance.machine import Governance, GovernanceState, Member
from kai_mesh.core.governance.wire import (
    KINDS,
    MAX_PROPOSAL,
    InviteSecret,
    Proposal,
    Redemption,
    Vote,
    decode_object,
    encode_proposal,
    encode_redemption,
    encode_vote,
    parse_proposal,
    rebase,
)
from kai_mesh.core.mesh.genesis import DEFAULT_POLICY, Genesis
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.envelope import ENVELOPE_KIND
from tests.core.strategies import secrets_from_seed

A, B, C, D, E, F = (secrets_from_seed(300 + i) for i in range(6))
OUTSIDER = secrets_from_seed(390)
N1, N2 = secrets_from_seed(391), secrets_from_seed(392)
INVITE = InviteSecret(bytes(range(32)))
NOW = 1_700_000_000
EXP = NOW + 3600


def _genesis(admins: list[NodeSecrets], threshold: int, nonce: bytes = bytes(16)) -> Genesis:
    keys = tuple(a.verify_key for a in admins)
    genesis = Genesis("lab", keys, threshold, nonce, dict(DEFAULT_POLICY), keys)
    for admin in admins:
        genesis = genesis.signed_by(admin)
    return genesis


G3 = _genesis([A, B, C], 2)
MESH = G3.mesh_id


def prop(
    signer: NodeSecrets,
    parent: bytes,
    kind: str,
    body: dict[str, Any],
    nonce: bytes = b"",
    t: int = NOW,
    exp: int = EXP,
    mesh: bytes = MESH,
) -> tuple[bytes, bytes]:
    """(encoded proposal, id), on any parent: what a node of another view, or a liar, sends."""
    p = Proposal(parent, kind, body, exp, signer.verify_key, nonce, t)
    return encode_proposal(p, signer, mesh), p.id


def vote(signer: NodeSecrets, pid: bytes, t: int = NOW, mesh: bytes = MESH) -> bytes:
    return encode_vote(Vote(pid, signer.verify_key, t), signer, mesh)


def claim(node: NodeSecrets, t: int, invite: InviteSecret = INVITE) -> bytes:
    return encode_redemption(Redemption(invite.verify_key, node.verify_key, t), invite, node, MESH)


def reasons(outcome: Any) -> list[str]:
    return [r.reason for r in (*outcome.refused, *outcome.not_counted)]


def status(gov: Governance, pid: bytes, now: int | None = None) -> tuple[str, str]:
    s = next(p for p in gov.proposals(now) if p.id == pid)
    return s.status, s.why


def certify(
    gov: Governance, proposer: NodeSecrets, kind: str, body: dict[str, Any], *voters: NodeSecrets
) -> bytes:
    data = gov.propose(proposer, kind, body, EXP, bytes(4), NOW)
    pid = parse_proposal(data).id
    for voter in voters:
        gov.vote(voter, pid, NOW)
    assert gov.head() == pid
    return pid


# Certification ------------------------------------------------------------------------------------


def test_one_of_one_certifies_at_once() -> None:
    gov = Governance(Genesis.of_one(A, "home", bytes(16)))
    data = gov.propose(A, "policy_update", {"max_ttl": 60}, EXP, b"n", NOW)
    pid = parse_proposal(data).id
    assert gov.head() == pid
    assert gov.state.policy["max_ttl"] == 60
    assert gov.state.height == 1
    assert [(e.height, e.id, e.signers) for e in gov.log()] == [(1, pid, (A.verify_key,))]


def test_two_of_three_certifies_at_the_second_distinct_vote() -> None:
    gov = Governance(G3)
    data = gov.propose(A, "config_update", {"k": 1}, EXP, b"", NOW)
    pid = parse_proposal(data).id
    assert status(gov, pid) == ("open", "")
    again = gov.receive(vote(A, pid, NOW + 5))  # the same admin again: counted once
    assert reasons(again) == ["duplicate_vote"] and not again.certified
    assert gov.receive(vote(A, pid, NOW - 5)).certified == []  # earlier: kept, still one admin
    assert gov.head() == MESH
    out = gov.receive(vote(B, pid, NOW + 1))
    assert out.certified == [pid] and out.changed
    assert gov.state.config == {"k": 1}
    assert gov.receive(vote(B, pid, NOW + 1)).duplicate
    assert gov.receive(data).duplicate


def test_forged_vote_is_refused() -> None:
    gov = Governance(G3)
    pid = parse_proposal(gov.propose(A, "config_update", {"k": 1}, EXP, b"", NOW)).id
    good = vote(B, pid)
    forged = good[:-1] + bytes([good[-1] ^ 1])
    assert reasons(gov.receive(forged)) == ["bad_signature"]
    # B's signature with C named as the voter
    as_c = vote(B, pid)[:-64].replace(B.verify_key, C.verify_key) + good[-64:]
    assert reasons(gov.receive(as_c)) == ["bad_signature"]
    assert gov.head() == MESH
    assert gov.refused == {"bad_signature": 2}


def test_a_signature_of_another_kind_is_not_a_vote() -> None:
    gov = Governance(G3)
    pid = parse_proposal(gov.propose(A, "config_update", {"k": 1}, EXP, b"", NOW)).id
    body = Vote(pid, B.verify_key, NOW).body()
    # the very bytes of a vote, signed by an admin under the envelope kind
    assert reasons(gov.receive(body + B.sign(ENVELOPE_KIND, MESH, body))) == ["bad_signature"]
    # ...or under the redemption kinds, or as a state entry
    for kind in ("gov-redeem", "gov-redeem-node", "state-entry", "heartbeat"):
        assert reasons(gov.receive(body + B.sign(kind, MESH, body))) == ["bad_signature"]
    # a vote's signature over other content: B's vote for another proposal
    other = vote(B, bytes(32))
    assert reasons(gov.receive(body + other[-64:])) == ["bad_signature"]
    assert gov.head() == MESH
    assert gov.receive(body + B.sign("gov-vote", MESH, body)).certified == [pid]


def test_a_vote_by_a_non_admin_does_not_count() -> None:
    gov = Governance(G3)
    pid = parse_proposal(gov.propose(A, "config_update", {"k": 1}, EXP, b"", NOW)).id
    out = gov.receive(vote(OUTSIDER, pid))
    assert out.stored and reasons(out) == ["not_admin"] and not out.certified
    votes = {v.voter: v for v in next(p for p in gov.proposals() if p.id == pid).votes}
    assert not votes[OUTSIDER.verify_key].counted
    assert votes[OUTSIDER.verify_key].why.startswith("not_admin")
    assert votes[A.verify_key].counted
    with pytest.raises(UsageError, match="admin"):
        gov.vote(OUTSIDER, pid, NOW)
    with pytest.raises(UsageError, match="admin"):
        gov.propose(OUTSIDER, "config_update", {"k": 2}, EXP, b"", NOW)
    # a proposal by a non-admin is kept and reported, never certified
    data, bad = prop(OUTSIDER, MESH, "config_update", {"k": 3})
    out = gov.receive(data)
    assert reasons(out) == ["not_admin"]
    gov.receive(vote(B, bad))
    assert status(gov, bad)[0] == "refused"
    assert gov.head() == MESH


def test_a_vote_after_expiry_does_not_count() -> None:
    gov = Governance(G3)
    pid = parse_proposal(gov.propose(A, "config_update", {"k": 1}, EXP, b"", NOW)).id
    out = gov.receive(vote(B, pid, EXP + 1))
    assert reasons(out) == ["after_expiry"] and gov.head() == MESH
    assert status(gov, pid, now=EXP + 1)[0] == "expired"  # for display only
    assert status(gov, pid)[0] == "open"
    with pytest.raises(UsageError, match="expired"):
        gov.vote(C, pid, EXP + 1)
    assert gov.receive(vote(C, pid, EXP)).certified == [pid]  # at the expiry still counts
    with pytest.raises(UsageError, match="expire"):
        gov.propose(A, "config_update", {"k": 2}, NOW, b"", NOW + 1)


def test_a_proposal_of_another_mesh_is_refused() -> None:
    other = _genesis([A, B, C], 2, nonce=b"x" * 16)  # same admins, the mesh re-created
    assert other.mesh_id != MESH
    gov, theirs = Governance(G3), Governance(other)
    data = theirs.propose(A, "config_update", {"k": 1}, EXP, b"", NOW)
    assert reasons(gov.receive(data)) == ["bad_signature"]
    # even on this mesh's parent, signed for the other mesh
    forged, pid = prop(A, MESH, "config_update", {"k": 1}, mesh=other.mesh_id)
    assert reasons(gov.receive(forged)) == ["bad_signature"]
    gov.receive(prop(A, MESH, "config_update", {"k": 1})[0])
    assert reasons(gov.receive(vote(B, pid, mesh=other.mesh_id))) == ["bad_signature"]
    assert gov.head() == MESH


def test_admin_change_needs_the_old_and_the_new_threshold() -> None:
    gov = Governance(G3)
    body = {"admins": [D.verify_key, E.verify_key, F.verify_key], "threshold": 2}
    data = gov.propose(A, "admin_change", body, EXP, b"", NOW)
    pid = parse_proposal(data).id
    gov.vote(D, pid, NOW)  # new admins may vote for their own appointment...
    gov.vote(E, pid, NOW)
    assert gov.head() == MESH  # ...but the old threshold (2 of A, B, C) is not met
    assert [v.counted for v in next(p for p in gov.proposals() if p.id == pid).votes] == [True] * 3
    # the old threshold alone is not enough either
    gov2 = Governance(G3)
    gov2.receive(data)
    gov2.vote(B, pid, NOW)
    gov2.receive(vote(D, pid))
    assert gov2.head() == MESH
    # both: certified; the new admins govern, the old do not
    assert gov.receive(vote(B, pid)).certified == [pid]
    assert gov.state.admins == (D.verify_key, E.verify_key, F.verify_key)
    assert gov.is_admin(D.verify_key) and not gov.is_admin(A.verify_key)
    with pytest.raises(UsageError):
        gov.propose(A, "config_update", {"k": 1}, EXP, b"", NOW)
    later = gov.propose(D, "config_update", {"k": 1}, EXP, b"", NOW)
    assert reasons(gov.receive(vote(A, parse_proposal(later).id))) == ["not_admin"]
    gov.vote(F, parse_proposal(later).id, NOW)
    assert gov.state.config == {"k": 1}
    # a new admin set must keep 2m > n
    with pytest.raises(UsageError, match="majority"):
        gov.propose(
            D,
            "admin_change",
            {"admins": [D.verify_key, E.verify_key], "threshold": 1},
            EXP,
            b"",
            NOW,
        )


# Chain, forks, rollback -------------------------------------------------------------------------


def test_a_replayed_old_proposal_cannot_roll_back_the_chain() -> None:
    gov = Governance(G3)
    stale, x = prop(C, MESH, "config_update", {"mode": "old"})  # C, not yet seeing P1
    p1 = certify(gov, A, "config_update", {"mode": "new"}, B)
    p2 = certify(gov, A, "policy_update", {"max_ttl": 99}, B)
    # replaying what is certified changes nothing
    snapshot = gov.state
    for data in gov.objects_after(MESH):
        assert gov.receive(data).duplicate
    assert gov.state == snapshot
    # the old sibling of p1: kept, reported, not certified
    out = gov.receive(stale)
    assert reasons(out) == ["stale_parent"] and out.stored and not out.certified
    assert status(gov, x)[0] == "orphaned"
    with pytest.raises(UsageError, match="stale_parent"):
        gov.vote(B, x, NOW)
    # even with a second vote (A equivocating), the longer certified branch stays the chain
    out = gov.receive(vote(A, x))
    assert not out.certified and not out.orphaned
    assert [e.id for e in gov.log()] == [p1, p2]
    assert gov.state.config == {"mode": "new"}
    assert status(gov, x)[0] == "orphaned" and status(gov, x)[1].startswith("lost_fork")
    [evidence] = gov.evidence()
    assert evidence.admin == A.verify_key and set(evidence.ids) == {p1, x}
    for record in evidence.votes:  # each vote proves itself
        decode_object(record, MESH)


def test_two_certified_siblings_the_lower_id_wins_and_evidence_is_kept() -> None:
    (dx, x), (dy, y) = (
        prop(A, MESH, "config_update", {"k": 1}),
        prop(C, MESH, "config_update", {"k": 2}),
    )
    records = [dx, dy, vote(B, x), vote(B, y)]
    low, high = sorted([x, y])
    for order in (records, records[::-1]):
        gov = Governance(G3)
        outcomes = [gov.receive(r) for r in order]
        assert gov.head() == low
        assert [(e.admin, e.ids) for e in gov.evidence()] == [(B.verify_key, (low, high))]
        assert status(gov, high)[1].startswith("lost_fork")
        # a later proposal on the loser deepens its branch: the chain follows it
        dz, z = prop(C, high, "config_update", {"k": 3})
        gov.receive(dz)
        out = gov.receive(vote(A, z))
        assert out.certified == [high, z] and out.orphaned == [low]
        assert gov.state.config == {"k": 3}
        assert any(o.certified for o in outcomes)


def test_an_orphan_is_rebased_onto_the_head() -> None:
    gov = Governance(G3)
    stale, x = prop(C, MESH, "config_update", {"mode": "mine"})
    certify(gov, A, "config_update", {"mode": "theirs"}, B)
    gov.receive(stale)
    moved = rebase(parse_proposal(stale).proposal, gov.head(), signed_time=NOW + 9)
    assert (moved.kind, moved.body, moved.parent) == ("config_update", {"mode": "mine"}, gov.head())
    data = gov.rebase(C, x, EXP, b"again", NOW + 10)
    new = parse_proposal(data)
    assert new.proposal.parent == gov.head() and new.proposal.body == {"mode": "mine"}
    gov.vote(B, new.id, NOW + 11)
    assert gov.state.config == {"mode": "mine"}


def test_a_node_does_not_vote_for_two_open_siblings() -> None:
    gov = Governance(_genesis([A, B, C, D, E], 3))
    x = parse_proposal(gov.propose(A, "config_update", {"k": 1}, EXP, b"", NOW)).id
    with pytest.raises(UsageError, match="open proposal"):
        gov.propose(A, "config_update", {"k": 2}, EXP, b"", NOW)
    y = parse_proposal(gov.propose(C, "config_update", {"k": 2}, NOW + 10, b"", NOW)).id
    gov.vote(B, y, NOW)
    with pytest.raises(UsageError, match="open proposal"):
        gov.vote(B, x, NOW)
    assert gov.vote(B, y, NOW + 5) == gov.vote(B, y, NOW)  # asked again: the same vote
    # once y has expired by B's clock, B may vote for x
    gov.vote(B, x, NOW + 11)
    gov.vote(D, x, NOW + 11)
    assert gov.head() == x


def test_proposal_before_its_parent_waits() -> None:
    source = Governance(G3)
    p1 = certify(source, A, "config_update", {"k": 1}, B)
    p2 = certify(source, B, "config_update", {"k": 2}, C)
    records = source.objects_after(MESH)
    late = Governance(G3)
    for data in reversed(records):
        late.receive(data)
    assert [e.id for e in late.log()] == [p1, p2]
    assert late.state == source.state
    # partial sync: a node at p1 is sent only what follows
    mid = Governance(G3)
    for data in source.objects_after(MESH)[:2]:
        mid.receive(data)
    assert mid.head() == p1
    rest = source.objects_after(p1)
    assert len(rest) == 2 and parse_proposal(rest[0]).id == p2
    for data in rest:
        mid.receive(data)
    assert mid.state == source.state
    assert source.objects_after(p2) == []


# The fold -----------------------------------------------------------------------------------------


def test_policy_and_config_merge() -> None:
    gov = Governance(G3)
    certify(gov, A, "policy_update", {"max_ttl": 60, "custom": [1, 2]}, B)
    assert gov.state.policy == {**DEFAULT_POLICY, "max_ttl": 60, "custom": [1, 2]}
    certify(gov, A, "policy_update", {"custom": None, "guest_intents": ["echo"]}, B)
    assert gov.state.policy == {"max_ttl": 60, "guest_intents": ["echo"]}
    certify(gov, A, "config_update", {"telemetry": {"period": 600}}, C)
    assert gov.state.config == {"telemetry": {"period": 600}}
    assert gov.state.height == 3


def test_members_are_authorized_and_revoked_with_a_cut() -> None:
    gov = Governance(G3)
    assert gov.is_member(A.node_id) and gov.member_key(A.node_id) == A.verify_key
    assert not gov.is_member(N1.node_id) and gov.member_key(N1.node_id) is None
    certify(gov, A, "node_authorization", {"node_key": N1.verify_key, "role": "sensor"}, B)
    assert gov.state.members[N1.node_id] == Member(N1.verify_key, "sensor")
    cut = {3_000_000_000: 12, 7: 0}
    certify(gov, B, "node_revocation", {"node_id": N1.node_id, "cut": cut}, C)
    assert not gov.is_member(N1.node_id)
    assert gov.state.revoked == {N1.node_id: cut}
    with pytest.raises(UsageError, match="revoked"):
        gov.propose(
            A, "node_authorization", {"node_key": N1.verify_key, "role": "x"}, EXP, b"", NOW
        )
    with pytest.raises(UsageError, match="revoked"):
        gov.propose(A, "node_revocation", {"node_id": N1.node_id, "cut": {}}, EXP, b"", NOW)


def test_shutdown_then_lift() -> None:
    gov = Governance(G3)
    with pytest.raises(UsageError, match="not shut down"):
        gov.propose(A, "shutdown_lift", {}, EXP, b"", NOW)
    certify(gov, A, "emergency_shutdown", {"reason": "key leak"}, C)
    assert gov.state.shutdown and gov.state.shutdown_reason == "key leak"
    certify(gov, B, "shutdown_lift", {}, C)
    assert not gov.state.shutdown and gov.state.shutdown_reason == ""


def test_admin_set_rotates() -> None:
    gov = Governance(G3)
    body = {"admins": [A.verify_key, D.verify_key], "threshold": 2}
    pid = parse_proposal(gov.propose(A, "admin_change", body, EXP, b"", NOW)).id
    gov.vote(B, pid, NOW)
    assert gov.head() == MESH  # old threshold met; new: only A of A, D
    gov.vote(D, pid, NOW)
    assert gov.state.admins == (A.verify_key, D.verify_key) and gov.state.threshold == 2
    [entry] = gov.log()
    assert set(entry.signers) == {A.verify_key, B.verify_key, D.verify_key}


def test_initial_members_and_genesis_checks() -> None:
    gov = Governance(G3, {N1.node_id: N1.verify_key})
    assert gov.is_member(N1.node_id) and gov.is_member(C.node_id)
    with pytest.raises(UsageError):
        Governance(G3, {N1.node_id: N2.verify_key})
    unsigned = dataclasses.replace(G3, signatures={})
    with pytest.raises(BadSignature):
        Governance(unsigned)


# Invites ------------------------------------------------------------------------------------------


def test_an_invite_admits_only_its_first_claim_on_every_node() -> None:
    source = Governance(G3)
    certify(source, A, "node_authorization", {"invite_key": INVITE.verify_key, "role": "guest"}, B)
    assert source.state.invites == {INVITE.verify_key: "guest"}
    chain = source.objects_after(MESH)
    first, second = claim(N1, NOW + 5), claim(N2, NOW + 9)  # N1 signed earlier: N1 wins
    here, there = Governance(G3), Governance(G3)
    for data in chain:
        here.receive(data)
        there.receive(data)
    assert here.receive(first).changed
    assert reasons(here.receive(second)) == ["invite_taken"]
    assert reasons(there.receive(second)) == []  # there, N2's claim came first...
    assert there.is_member(N2.node_id)
    there.receive(first)  # ...until N1's earlier one arrived
    for gov in (here, there):
        assert gov.state.redeemed == {INVITE.verify_key: N1.verify_key}
        assert gov.state.invites == {}
        assert gov.state.members[N1.node_id] == Member(N1.verify_key, "guest")
        assert not gov.is_member(N2.node_id)
    assert here.state == there.state
    assert _fold(here.objects_after(MESH)).state == here.state  # sync carries the winner
    assert here.redemptions() == {
        INVITE.verify_key: Redemption(INVITE.verify_key, N1.verify_key, NOW + 5).id
    }


def test_the_sync_digest_differs_on_a_claim_or_an_open_vote_the_head_does_not_show() -> None:
    source = Governance(G3)
    certify(source, A, "node_authorization", {"invite_key": INVITE.verify_key, "role": "guest"}, B)
    peer = _fold(source.objects_after(MESH))
    assert peer.sync_digest() == source.sync_digest()
    source.receive(claim(N1, NOW + 5))  # a claim: same head, other members
    assert peer.head() == source.head() and peer.sync_digest() != source.sync_digest()
    for data in source.objects_after(peer.head()):
        peer.receive(data)
    assert peer.sync_digest() == source.sync_digest() and peer.state == source.state
    opened = source.propose(A, "policy_update", {"k": "v"}, EXP, bytes(4), NOW)  # open: 1 of 2
    assert peer.sync_digest() != source.sync_digest()
    peer.receive(opened)
    assert peer.sync_digest() == source.sync_digest()
    peer.receive(vote(C, parse_proposal(opened).id))  # certifies it on peer alone
    assert peer.sync_digest() != source.sync_digest()
    for data in peer.objects_after(source.head()):
        source.receive(data)
    assert peer.sync_digest() == source.sync_digest() and peer.head() == source.head()


def test_only_admins_records_and_authorized_claims_are_vouched_for() -> None:
    gov = Governance(G3)
    stranger_proposal, _ = prop(OUTSIDER, MESH, "policy_update", {"k": "v"})
    admin_proposal, admin_pid = prop(A, MESH, "policy_update", {"k": "v"})
    assert not gov.vouched(stranger_proposal) and gov.vouched(admin_proposal)
    assert not gov.vouched(vote(OUTSIDER, admin_pid)) and gov.vouched(vote(B, admin_pid))
    assert not gov.vouched(claim(N1, NOW))  # no such invite on the chain
    certify(gov, A, "node_authorization", {"invite_key": INVITE.verify_key, "role": "guest"}, B)
    assert gov.vouched(claim(N1, NOW))
    gov.receive(claim(N1, NOW))
    assert gov.vouched(claim(N2, NOW + 1))  # taken: a later claim still syncs (and loses)
    assert gov.vouched(b"\x00junk")  # receive refuses it with its reason


def test_a_claim_before_its_invite_waits_and_forged_claims_are_refused() -> None:
    gov = Governance(G3)
    assert reasons(gov.receive(claim(N1, NOW))) == ["unknown_invite"]
    assert not gov.is_member(N1.node_id)
    certify(gov, A, "node_authorization", {"invite_key": INVITE.verify_key, "role": "guest"}, B)
    assert gov.is_member(N1.node_id)
    # the invite's secret is needed, and the node key's
    other = InviteSecret(bytes(32))
    body = Redemption(INVITE.verify_key, N2.verify_key, NOW - 1).body()
    wrong_invite = (
        body + other.sign("gov-redeem", MESH, body) + N2.sign("gov-redeem-node", MESH, body)
    )
    assert reasons(gov.receive(wrong_invite)) == ["bad_signature"]
    swapped = body + N2.sign("gov-redeem", MESH, body) + INVITE.sign("gov-redeem-node", MESH, body)
    assert reasons(gov.receive(swapped)) == ["bad_signature"]
    assert reasons(gov.receive(wrong_invite[:-10])) == ["truncated"]
    assert gov.state.redeemed == {INVITE.verify_key: N1.verify_key}
    with pytest.raises(UsageError, match="before"):
        gov.propose(
            A, "node_authorization", {"invite_key": INVITE.verify_key, "role": "x"}, EXP, b"", NOW
        )


# Wire ---------------------------------------------------------------------------------------------


def test_vote_bytes_fit_the_budget() -> None:
    data = vote(B, bytes(32), NOW)
    assert len(data) == 139 <= 150
    assert len(vote(B, bytes(32), 2**63 - 1)) <= 150


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("policy_update", {}),
        ("policy_update", {"max_ttl": 0}),
        ("policy_update", {"max_clock_skew": 0}),
        ("policy_update", {"max_clock_skew": 10**9}),
        ("policy_update", {"max_clock_skew": "5m"}),
        ("policy_update", {"guest_intents": "echo"}),
        ("policy_update", {"critical_roles": "admin"}),
        ("policy_update", {"critical_roles": ["admin", ""]}),
        ("policy_update", {"critical_roles": [1]}),
        ("policy_update", {"x": float("nan")}),
        ("config_update", {"": 1}),
        ("config_update", {"x": {1: 2, "a": 3}}),
        ("node_authorization", {"node_key": b"k" * 31, "role": "r"}),
        ("node_authorization", {"node_key": b"k" * 32, "role": ""}),
        ("node_authorization", {"node_key": b"k" * 32, "invite_key": b"k" * 32, "role": "r"}),
        ("node_revocation", {"node_id": b"n" * 16, "cut": {-1: 2}}),
        ("node_revocation", {"node_id": b"n" * 16}),
        ("admin_change", {"admins": [b"a" * 32, b"b" * 32], "threshold": 1}),
        ("admin_change", {"admins": [b"a" * 32, b"a" * 32], "threshold": 2}),
        ("admin_change", {"admins": [], "threshold": 1}),
        ("emergency_shutdown", {}),
        ("shutdown_lift", {"now": True}),
        ("coup", {}),
    ],
)
def test_bad_bodies_are_refused(kind: str, body: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Proposal(MESH, kind, body, EXP, A.verify_key, b"", NOW)


def test_critical_roles_is_a_list_of_role_names_and_a_bad_one_is_named() -> None:
    for roles in (["admin", "ops"], [], None):
        Proposal(MESH, "policy_update", {"critical_roles": roles}, EXP, A.verify_key, b"", NOW)
    with pytest.raises(UsageError, match="critical_roles: must be a list of role names"):
        Proposal(MESH, "policy_update", {"critical_roles": "admin"}, EXP, A.verify_key, b"", NOW)


def test_non_canonical_and_damaged_records_are_malformed() -> None:
    good, _ = prop(A, MESH, "config_update", {"a": 1, "b": 2})
    # the same map with its keys out of order: another encoding of one meaning
    swapped = good.replace(b"\xa1a\x01\xa1b\x02", b"\xa1b\x02\xa1a\x01")
    assert swapped != good
    with pytest.raises(Malformed, match="canonical"):
        decode_object(swapped, MESH)
    with pytest.raises(Malformed):
        decode_object(good + b"\x00", MESH)
    with pytest.raises(Truncated):
        decode_object(good[:-1], MESH)
    with pytest.raises(ProtocolError):
        decode_object(bytes([0x24]) + good[1:], MESH)
    with pytest.raises(ProtocolError):
        decode_object(b"", MESH)
    huge = Proposal(MESH, "config_update", {"x": "y" * MAX_PROPOSAL}, EXP, A.verify_key, b"", NOW)
    with pytest.raises(UsageError, match="at most"):
        encode_proposal(huge, A, MESH)
    with pytest.raises(UsageError, match="proposer"):
        encode_proposal(parse_proposal(good).proposal, B, MESH)


@given(st.sampled_from(KINDS), st.integers(0, 2**63 - 1), st.binary(max_size=16))
def test_proposal_round_trip(kind: str, t: int, nonce: bytes) -> None:
    body = _BODIES[kind]
    data, pid = prop(A, MESH, kind, body, nonce=nonce, t=t, exp=t)
    decoded = decode_object(data, MESH)
    assert decoded == parse_proposal(data) and decoded.id == pid
    assert decoded.proposal.body == body and decoded.vote.vote.voter == A.verify_key


_BODIES: dict[str, dict[str, Any]] = {
    "policy_update": {"max_ttl": 5},
    "node_authorization": {"node_key": N1.verify_key, "role": "member"},
    "node_revocation": {"node_id": N1.node_id, "cut": {1: 2}},
    "admin_change": {"admins": [A.verify_key], "threshold": 1},
    "config_update": {"nested": {"a": [1, 2.5, None, b"x"]}},
    "emergency_shutdown": {"reason": ""},
    "shutdown_lift": {},
}


@given(st.binary(max_size=300))
def test_receive_never_raises_on_junk(data: bytes) -> None:
    gov = Governance(G3)
    out = gov.receive(data)
    assert not out.stored and len(out.refused) == 1


_VALID = [
    prop(A, MESH, "config_update", {"k": 1})[0],
    vote(B, bytes(32)),
    claim(N1, NOW),
]


@given(st.sampled_from(_VALID), st.data())
def test_any_damaged_record_is_refused(record: bytes, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(record) - 1))
    flip = data.draw(st.integers(1, 255))
    damaged = record[:i] + bytes([record[i] ^ flip]) + record[i + 1 :]
    with pytest.raises(ProtocolError):
        decode_object(damaged, MESH)
    gov = Governance(G3)
    assert gov.receive(damaged).refused


# Order independence -------------------------------------------------------------------------------


def _scenario() -> list[bytes]:
    """3 admins, threshold 2: a fork through an equivocating admin, the losing sibling's branch
    made deeper, an invite claimed twice, votes that do not count, an admin change, a
    revocation, a shutdown and its lift, an orphan."""
    out = []
    d1, p1 = prop(A, MESH, "policy_update", {"max_ttl": 60})
    out += [d1, vote(B, p1)]
    (dx, x), (dy, y) = (
        prop(A, p1, "config_update", {"k": 1}),
        prop(C, p1, "config_update", {"k": 2}),
    )
    out += [dx, dy, vote(B, x), vote(B, y)]  # B votes for both: evidence
    high = max(x, y)
    invite = {"invite_key": INVITE.verify_key, "role": "guest"}
    dz, z = prop(A, high, "node_authorization", invite)
    out += [dz, vote(C, z), vote(OUTSIDER, z), vote(B, z, EXP + 1)]
    out += [claim(N1, NOW + 10), claim(N2, NOW + 5)]
    dac, ac = prop(
        A, z, "admin_change", {"admins": [A.verify_key, B.verify_key, D.verify_key], "threshold": 2}
    )
    out += [dac, vote(B, ac)]
    dq, q = prop(D, ac, "node_revocation", {"node_id": N1.node_id, "cut": {5: 3}})
    out += [dq, vote(A, q), vote(C, q)]  # C is no longer an admin
    dsd, sd = prop(A, q, "emergency_shutdown", {"reason": "drill"})
    out += [dsd, vote(D, sd)]
    dl, lift = prop(B, sd, "shutdown_lift", {})
    out += [dl, vote(A, lift)]
    out += [prop(C, p1, "emergency_shutdown", {"reason": "stale"})[0]]  # an orphan
    return out


SCENARIO = _scenario()


def _fold(records: list[bytes]) -> Governance:
    gov = Governance(G3)
    for data in records:
        gov.receive(data)
    return gov


def _view(gov: Governance) -> tuple[Any, ...]:
    return (
        gov.state,
        gov.head(),
        gov.evidence(),
        [(e.id, e.signers) for e in gov.log()],
        [(p.id, p.status, p.why, p.votes) for p in gov.proposals()],
    )


REFERENCE = _view(_fold(SCENARIO))


def test_the_scenario_does_what_it_says() -> None:
    state: GovernanceState = REFERENCE[0]
    assert state.height == 7  # p1, the deeper sibling, z, ac, q, sd, lift
    assert state.admins == (A.verify_key, B.verify_key, D.verify_key)
    assert state.redeemed == {INVITE.verify_key: N2.verify_key}  # N2 claimed at NOW + 5
    assert state.revoked == {N1.node_id: {5: 3}} and N2.node_id in state.members
    assert not state.shutdown and state.policy["max_ttl"] == 60
    assert [e.admin for e in REFERENCE[2]] == [B.verify_key]
    statuses = sorted(s for _, s, _, _ in REFERENCE[4])
    assert statuses == ["certified"] * 7 + ["orphaned"] * 2


def test_sync_from_the_genesis_reaches_the_same_state() -> None:
    full = _fold(SCENARIO)
    synced = _fold(full.objects_after(MESH))
    assert synced.state == full.state and synced.log() == full.log()
    assert synced.evidence() == []  # the losing sibling is not sent: only its holder keeps proof


@given(st.permutations(SCENARIO), st.lists(st.sampled_from(SCENARIO), max_size=8), st.data())
def test_any_order_and_duplication_gives_the_same_state(
    order: list[bytes], extra: list[bytes], data: st.DataObject
) -> None:
    records = list(order)
    for record in extra:
        records.insert(data.draw(st.integers(0, len(records))), record)
    assert _view(_fold(records)) == REFERENCE
