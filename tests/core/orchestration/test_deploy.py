"""Signed manifests and commands: domain-separated, mesh-bound, canonical; authorized by the
fold's `deploy_roles` (default: admins)."""

from __future__ import annotations

import dataclasses

import pytest

from kai_mesh.core.errors import BadSignature, Malformed, UsageError
from kai_mesh.core.governance.fold import GovernanceState, Member
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.orchestration.deploy import (
    Refused,
    ServiceCommand,
    SignedManifest,
    admit_command,
    admit_manifest,
    authorize,
    newest,
    roles_of,
)
from kai_mesh.core.orchestration.manifest import parse_manifest

MESH = b"m" * 32
OTHER_MESH = b"o" * 32
TEXT = 'name = "echo2"\nversion = "1"\nagent = "echo"\nreplicas = { min = 2, max = 4 }\n'


def secrets(seed: int) -> NodeSecrets:
    return NodeSecrets(bytes([seed]) * 32, bytes([seed]) * 64, bytes([seed + 1]) * 32)


ADMIN, MEMBER, STRANGER = secrets(1), secrets(10), secrets(20)


def state(**policy: object) -> GovernanceState:
    return GovernanceState(
        admins=(ADMIN.verify_key,),
        threshold=1,
        members={
            ADMIN.node_id: Member(ADMIN.verify_key, "admin"),
            MEMBER.node_id: Member(MEMBER.verify_key, "operator"),
        },
        invites={},
        redeemed={},
        revoked={},
        policy=dict(policy),
        config={},
        shutdown=False,
        shutdown_reason="",
        head=MESH,
        height=0,
    )


def signed(who: NodeSecrets = ADMIN, text: str = TEXT, at: int = 100) -> SignedManifest:
    return SignedManifest.create(parse_manifest(text), who, MESH, at)


def test_round_trip_and_verify() -> None:
    sm = signed()
    back = SignedManifest.from_bytes(sm.to_bytes(), MESH)
    assert back == sm and back.id == sm.id and back.deployer_id == ADMIN.node_id


def test_other_mesh_or_tampered_bytes_refused() -> None:
    data = signed().to_bytes()
    with pytest.raises(BadSignature):
        SignedManifest.from_bytes(data, OTHER_MESH)
    tampered = data.replace(b"echo2", b"echo3")
    with pytest.raises(BadSignature):
        SignedManifest.from_bytes(tampered, MESH)


def test_signature_of_another_kind_does_not_pass() -> None:
    sm = signed()
    forged = sm.signed_bytes + ADMIN.sign("svc-command", MESH, sm.signed_bytes)
    with pytest.raises(BadSignature):
        SignedManifest.from_bytes(forged, MESH)


def test_non_canonical_table_refused() -> None:
    from kai_mesh.core.codec import pack

    sm = signed()
    table = sm.manifest.to_table()  # insertion order, not sorted: another encoding
    body = bytes([0x41]) + pack([table, ADMIN.verify_key, 100])
    with pytest.raises(Malformed, match="canonical"):
        SignedManifest.from_bytes(body + ADMIN.sign("svc-manifest", MESH, body), MESH)


def test_truncated_and_garbage_are_protocol_errors() -> None:
    data = signed().to_bytes()
    for cut in (0, 1, 10, len(data) - 1):
        refused = admit_manifest(data[:cut], MESH, state())
        assert isinstance(refused, Refused) and refused.reason != "unauthorized"


def test_admins_deploy_by_default() -> None:
    assert admit_manifest(signed().to_bytes(), MESH, state()) == signed()
    refused = admit_manifest(signed(MEMBER).to_bytes(), MESH, state())
    assert isinstance(refused, Refused) and refused.reason == "unauthorized"
    assert "operator" in refused.detail and "admin" in refused.detail


def test_deploy_roles_policy() -> None:
    s = state(deploy_roles=["operator"])
    assert isinstance(admit_manifest(signed(MEMBER).to_bytes(), MESH, s), SignedManifest)
    assert isinstance(admit_manifest(signed(ADMIN).to_bytes(), MESH, s), Refused)
    assert isinstance(admit_manifest(signed(STRANGER).to_bytes(), MESH, s), Refused)


def test_revoked_node_has_no_role() -> None:
    s = dataclasses.replace(state(deploy_roles=["operator"]), revoked={MEMBER.node_id: {}})
    assert roles_of(MEMBER.verify_key, s) == frozenset()
    assert authorize(MEMBER.verify_key, s) is not None


def test_forged_manifest_shows_why() -> None:
    sm = signed(STRANGER)
    # The stranger claims the admin's key: the signature does not verify.
    forged = SignedManifest(sm.manifest, ADMIN.verify_key, sm.signed_at, sm.signature)
    refused = admit_manifest(forged.to_bytes(), MESH, state())
    assert refused == Refused("bad_signature", "svc-manifest signature does not verify")


def test_newer_version_wins_then_later_signature() -> None:
    v1 = signed(text=TEXT, at=500)
    v2 = signed(text=TEXT.replace('"1"', '"2"'), at=100)
    v10 = signed(text=TEXT.replace('"1"', '"10"'), at=50)
    assert newest([v1, v2, v10]) == v10
    later = signed(at=600)
    assert newest([v1, later]) == later
    assert newest([]) is None


def test_commands_round_trip_and_authorize() -> None:
    scale = ServiceCommand.create("scale", "echo2", ADMIN, MESH, 7, replicas=(3, 5))
    assert ServiceCommand.from_bytes(scale.to_bytes(), MESH) == scale
    assert admit_command(scale.to_bytes(), MESH, state()) == scale
    remove = ServiceCommand.create("remove", "echo2", MEMBER, MESH, 8)
    assert (remove.min, remove.max) == (0, 0)
    assert isinstance(admit_command(remove.to_bytes(), MESH, state()), Refused)
    with pytest.raises(BadSignature):
        ServiceCommand.from_bytes(scale.to_bytes(), OTHER_MESH)


@pytest.mark.parametrize(
    ("action", "name", "replicas"),
    [
        ("stop", "echo2", (1, 1)),
        ("scale", "Bad", (1, 1)),
        ("scale", "a", (3, 2)),
        ("scale", "a", (0, 0)),
    ],
)
def test_bad_commands_refused_at_creation(
    action: str, name: str, replicas: tuple[int, int]
) -> None:
    with pytest.raises(UsageError):
        ServiceCommand.create(action, name, ADMIN, MESH, 1, replicas=replicas)  # type: ignore[arg-type]
