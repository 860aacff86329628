"""The genesis: the object that pins a mesh, and whose hash is the mesh id.

It names the mesh, its admin keys and threshold, a random nonce (so two meshes of the same name and
admins differ), the initial policy, and the nodes trusted from the start. `init` alone creates a
genesis of one: this node the only admin, threshold 1 of 1 — the local shape. Admins sign the mesh
id under the `genesis` kind; a genesis is valid when at least `threshold` distinct admins signed
it and the quorum rule 2m > n holds, so two rival proposals cannot both be certified without some
admin signing both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kai_mesh.core.codec import digest, pack, split_format, unpack_exact
from kai_mesh.core.errors import AddressError, BadSignature, Malformed
from kai_mesh.core.mesh.address import check_name
from kai_mesh.core.mesh.identity import NodeSecrets, verify

GENESIS_FORMAT = 1
NONCE_BYTES = 16

#: Policy that holds until governance changes it. Strings as keys: people read and vote on these.
DEFAULT_POLICY: dict[str, Any] = {
    "max_ttl": 7 * 24 * 3600,  # longest a message may live, seconds: a week of store-and-forward
    "guest_intents": ["echo", "sysinfo"],
}


def check_quorum(admins: int, threshold: int) -> None:
    """Refuse an admin set whose threshold lets two disjoint groups certify rival proposals."""
    if admins < 1:
        raise Malformed("a mesh needs at least one admin")
    if not 1 <= threshold <= admins:
        raise Malformed(f"threshold {threshold} is outside 1..{admins}")
    if 2 * threshold <= admins:
        raise Malformed(
            f"threshold {threshold} of {admins} admins is not a majority (2m > n is required)"
        )


@dataclass(frozen=True, slots=True)
class Genesis:
    """A mesh's founding object. `mesh_id` is the domain-tagged hash of its body."""

    mesh_name: str
    admins: tuple[bytes, ...]
    threshold: int
    nonce: bytes
    policy: Mapping[str, Any]
    trusted_nodes: tuple[bytes, ...]
    signatures: Mapping[bytes, bytes] = field(default_factory=dict)

    KIND = "genesis"

    def __post_init__(self) -> None:
        check_name("mesh", self.mesh_name)
        check_quorum(len(set(self.admins)), self.threshold)
        if len(set(self.admins)) != len(self.admins):
            raise Malformed("an admin key is listed twice")
        if any(len(k) != 32 for k in (*self.admins, *self.trusted_nodes)):
            raise Malformed("admin and node keys are 32-byte Ed25519 public keys")
        if len(self.nonce) != NONCE_BYTES:
            raise Malformed(f"the nonce is {NONCE_BYTES} bytes")

    @classmethod
    def of_one(cls, secrets: NodeSecrets, mesh_name: str, nonce: bytes) -> Genesis:
        """The local shape: this node is the mesh's only admin and only member."""
        key = secrets.verify_key
        unsigned = cls(mesh_name, (key,), 1, nonce, dict(DEFAULT_POLICY), (key,))
        return unsigned.signed_by(secrets)

    def body(self) -> bytes:
        return pack(
            [
                self.mesh_name,
                list(self.admins),
                self.threshold,
                self.nonce,
                dict(self.policy),
                list(self.trusted_nodes),
            ]
        )

    @property
    def mesh_id(self) -> bytes:
        return digest(self.KIND, self.body())

    def signed_by(self, secrets: NodeSecrets) -> Genesis:
        """A copy with this admin's signature added; raises `Malformed` for a non-admin."""
        if secrets.verify_key not in self.admins:
            raise Malformed("only an admin named in the genesis can sign it")
        sigs = dict(self.signatures)
        sigs[secrets.verify_key] = secrets.sign(self.KIND, self.mesh_id, b"")
        return Genesis(
            self.mesh_name,
            self.admins,
            self.threshold,
            self.nonce,
            self.policy,
            self.trusted_nodes,
            sigs,
        )

    def check(self) -> None:
        """Raise `BadSignature` unless `threshold` distinct admins signed this genesis."""
        good = 0
        for key, sig in self.signatures.items():
            if key not in self.admins:
                raise BadSignature("genesis signed by a key that is not an admin")
            verify(key, self.KIND, self.mesh_id, b"", sig)
            good += 1
        if good < self.threshold:
            raise BadSignature(f"genesis has {good} admin signatures, needs {self.threshold}")

    def to_bytes(self) -> bytes:
        sigs: dict[bytes, bytes] = dict(self.signatures.items())
        return bytes([GENESIS_FORMAT]) + pack([self.body(), sigs])

    @classmethod
    def from_bytes(cls, data: bytes) -> Genesis:
        outer = unpack_exact(split_format(data, GENESIS_FORMAT, "genesis"), 10_000)
        if not (isinstance(outer, list) and len(outer) == 2 and isinstance(outer[0], bytes)):
            raise Malformed("genesis: wrong shape")
        body, sigs = outer
        fields = unpack_exact(body, 10_000)
        if not (
            isinstance(fields, list)
            and len(fields) == 6
            and isinstance(fields[0], str)
            and isinstance(fields[1], list)
            and isinstance(fields[2], int)
            and isinstance(fields[3], bytes)
            and isinstance(fields[4], dict)
            and isinstance(fields[5], list)
            and isinstance(sigs, dict)
            and all(isinstance(k, bytes) for k in (*fields[1], *fields[5]))
            and all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in sigs.items())
        ):
            raise Malformed("genesis: wrong shape")
        try:
            return cls(
                fields[0], tuple(fields[1]), fields[2], fields[3], fields[4], tuple(fields[5]), sigs
            )
        except AddressError as exc:
            raise Malformed(f"genesis: {exc}") from None
