"""Issue 15, finding 3: a mistyped proposal is refused before it is signed, and an open proposal
can be withdrawn by its proposer with a signed record every node folds alike."""

from __future__ import annotations

from typing import Any

import pytest

from kai_mesh.core.errors import BadSignature, Malformed
from kai_mesh.core.governance.machine import Governance
from kai_mesh.core.governance.wire import (
    WITHDRAWAL_FORMAT,
    Withdrawal,
    check_new_body,
    decode_object,
    encode_withdrawal,
    parse_proposal,
)
from kai_mesh.core.mesh.genesis import Genesis
from tests.core.governance.test_machine import EXP, G3, MESH, N1, NOW, A, B, C, prop, status, vote

ONE = Genesis.of_one(A, "home", bytes(16))
FILLER = bytes.fromhex("44" * 32)  # 32 bytes, but no Ed25519 key


@pytest.mark.parametrize(
    ("kind", "body", "says"),
    [
        ("admin_change", {"admins": [FILLER], "threshold": 1}, "not an Ed25519 public key"),
        ("admin_change", {"admins": [A.verify_key], "threshold": 2}, "outside 1..1"),
        ("admin_change", {"admins": [A.verify_key, B.verify_key], "threshold": 1}, "2m > n"),
        ("node_authorization", {"node_key": FILLER, "role": "member"}, "not an Ed25519"),
        ("node_authorization", {"invite_key": bytes(32), "role": "member"}, "not an Ed25519"),
        ("node_authorization", {"node_key": N1.verify_key, "role": "a\x00b"}, "control"),
        ("node_authorization", {"node_key": N1.verify_key, "role": "../x"}, "slashes"),
        ("node_authorization", {"node_key": N1.verify_key, "role": ".."}, "slashes"),
        ("policy_update", {"max_clock_skwe": 60}, "did you mean .max_clock_skew"),
        ("policy_update", {"guest_intents": ["echo", "a\nb"]}, "control"),
        ("policy_update", {"guest_intents": ["../etc"]}, "slashes"),
        ("policy_update", {"critical_roles": ["admin", "admin"]}, "twice"),
        ("policy_update", {"max_ttl": "1d"}, "max_ttl"),
        ("config_update", {"k\x1b[2J": 1}, "control"),
        ("emergency_shutdown", {"reason": "fire\x07"}, "control"),
        ("node_revocation", {"node_id": b"n" * 15, "cut": {}}, "node_id"),
        ("shutdown_lift", {"now": True}, "exactly the keys"),
    ],
)
def test_every_kind_is_checked_before_signing(kind: str, body: dict[str, Any], says: str) -> None:
    gov = Governance(ONE)
    with pytest.raises(Exception, match=says) as raised:
        gov.propose(A, kind, body, EXP, b"", NOW)
    assert "\n" not in str(raised.value)  # one line
    assert gov.proposals() == []  # nothing signed, nothing held


def test_good_bodies_pass_and_removal_of_a_policy_key_is_allowed() -> None:
    check_new_body("policy_update", {"guest_intents": None, "max_clock_skew": 120})
    check_new_body("node_authorization", {"node_key": N1.verify_key, "role": "ops-team"})
    check_new_body("admin_change", {"admins": [A.verify_key, B.verify_key], "threshold": 2})


def test_an_old_record_that_breaks_a_new_rule_still_decodes() -> None:
    # signed by a node from before the rule: peers still take it (wire compatibility)
    data, _ = prop(A, MESH, "node_authorization", {"node_key": N1.verify_key, "role": "../x"})
    assert decode_object(data, MESH)
    gov = Governance(G3)
    assert gov.receive(data).stored


def test_the_issue_case_a_withdrawn_proposal_frees_its_proposer() -> None:
    gov = Governance(ONE)
    # what the issue's operator could still do with a valid key nobody holds: it stays open
    stranger = N1.verify_key
    data = gov.propose(A, "admin_change", {"admins": [stranger], "threshold": 1}, EXP, b"", NOW)
    pid = parse_proposal(data).id
    assert status(gov, pid) == ("open", "")
    with pytest.raises(Exception, match="open proposal"):
        gov.propose(A, "emergency_shutdown", {"reason": "x"}, EXP, b"", NOW)
    gov.withdraw(A, pid, NOW + 1)
    assert status(gov, pid) == ("withdrawn", "withdrawn: its proposer withdrew it")
    with pytest.raises(Exception, match="withdrawn"):
        gov.vote(A, pid, NOW + 2)
    gov.propose(A, "emergency_shutdown", {"reason": "x"}, EXP, b"", NOW + 2)
    assert gov.state.shutdown


def test_a_withdrawal_survives_a_rebuild_and_syncs_to_a_peer_in_any_order() -> None:
    source = Governance(G3)
    pid = parse_proposal(source.propose(A, "config_update", {"k": 1}, EXP, b"", NOW)).id
    w = source.withdraw(A, pid, NOW + 1)
    records = source.objects_after(MESH)
    assert w in records
    for order in (records, list(reversed(records))):
        peer = Governance(G3)
        for r in order:
            peer.receive(r)
        assert status(peer, pid)[0] == "withdrawn"
        assert peer.sync_digest() == source.sync_digest()
        peer.propose(B, "config_update", {"k": 2}, EXP, b"", NOW)  # nobody is held back
    # the digest tells a peer that holds the proposal open that it lacks the withdrawal
    open_peer = Governance(G3)
    open_peer.receive(records[0])
    assert open_peer.sync_digest() != source.sync_digest()


def test_only_the_proposer_withdraws_and_not_after_certification() -> None:
    gov = Governance(G3)
    pid = parse_proposal(gov.propose(A, "config_update", {"k": 1}, EXP, b"", NOW)).id
    with pytest.raises(Exception, match="only its proposer"):
        gov.withdraw(B, pid, NOW)
    # B's withdrawal, hand-made, is kept but does not count
    forged = encode_withdrawal(Withdrawal(pid, B.verify_key, NOW), B, MESH)
    out = gov.receive(forged)
    assert [r.reason for r in out.not_counted] == ["not_proposer"]
    assert status(gov, pid)[0] == "open"
    gov.vote(B, pid, NOW)
    with pytest.raises(Exception, match="certified"):
        gov.withdraw(A, pid, NOW + 1)
    # a withdrawal arriving after the votes that certify cannot undo the certification
    late = encode_withdrawal(Withdrawal(pid, A.verify_key, NOW + 1), A, MESH)
    out = gov.receive(late)
    assert gov.head() == pid and not out.orphaned


def test_a_withdrawal_arriving_before_the_certifying_vote_does_not_change_the_outcome() -> None:
    a = Governance(G3)
    data = a.propose(A, "config_update", {"k": 1}, EXP, b"", NOW)
    pid = parse_proposal(data).id
    w = encode_withdrawal(Withdrawal(pid, A.verify_key, NOW + 1), A, MESH)
    v = vote(C, pid, NOW)
    one, two = Governance(G3), Governance(G3)
    for r in (data, w, v):
        one.receive(r)
    for r in (data, v, w):
        two.receive(r)
    assert one.head() == two.head() == pid  # votes certify; every node alike


def test_withdrawal_records_are_domain_separated_and_mesh_bound() -> None:
    pid = bytes(32)
    data = encode_withdrawal(Withdrawal(pid, A.verify_key, NOW), A, MESH)
    assert data[0] == WITHDRAWAL_FORMAT and len(data) == 139
    assert decode_object(data, MESH)
    with pytest.raises(BadSignature):
        decode_object(data, Genesis.of_one(A, "other", bytes(16)).mesh_id)
    as_vote = vote(A, pid, NOW)  # the same fields under the vote kind: not a withdrawal
    with pytest.raises(BadSignature):
        decode_object(bytes([WITHDRAWAL_FORMAT]) + as_vote[1:], MESH)
    with pytest.raises(Malformed):
        decode_object(data + b"\x00", MESH)
    assert Governance(G3).receive(data).stored  # an admin's record, kept
    assert Governance(G3).vouched(data)
    assert C  # three admins in G3
