"""A node's three keys, its id, domain-separated signatures, and the member record that binds them.

A node has an Ed25519 signing key (its node id is a hash of the public half), the Reticulum identity
RNS uses (an X25519 key and an Ed25519 key, 64 private bytes, in RNS's own layout) and a secp256k1
key for Nostr. The member record is signed by all three, so a peer that knows any one of them can
check the other two belong to the same node.

Every signature is over `b"kai-mesh/v1/" + kind + b"\\0" + mesh_id + body` (`signing_input`): a
signature made for one kind of object cannot pass as another, nor in another mesh. The core takes
no randomness of its own: key generation is handed the bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.signing
from coincurve import PrivateKey, PublicKeyXOnly

from kai_mesh.core.codec import digest, pack, split_format, unpack_exact
from kai_mesh.core.errors import AddressError, BadSignature, Malformed, Untrusted
from kai_mesh.core.mesh.address import NODE_ID_BYTES, NodeRef

SECRETS_FORMAT = 1
MEMBER_FORMAT = 1
SIGNATURE_BYTES = 64


def signing_input(kind: str, mesh_id: bytes, body: bytes) -> bytes:
    """The exact bytes every kai-mesh signature covers (see the module docstring)."""
    return b"kai-mesh/v1/" + kind.encode() + b"\x00" + mesh_id + body


def node_id_of(verify_key: bytes) -> bytes:
    """A node's 16-byte id: a domain-tagged hash of its Ed25519 public key."""
    return digest("node-id", verify_key)[:NODE_ID_BYTES]


def verify(verify_key: bytes, kind: str, mesh_id: bytes, body: bytes, signature: bytes) -> None:
    """Check an Ed25519 signature made with `sign`; raise `BadSignature` if it does not verify."""
    try:
        nacl.signing.VerifyKey(verify_key).verify(signing_input(kind, mesh_id, body), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        raise BadSignature(f"{kind} signature does not verify") from None


@dataclass(frozen=True, slots=True)
class NodeSecrets:
    """The private halves of a node's keys. Never leaves the node's data directory."""

    ed25519_seed: bytes
    rns_private: bytes  # X25519 private (32) + Ed25519 seed (32), as RNS.Identity stores it
    nostr_secret: bytes
    _signing: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # coincurve pads a short secret and accepts a long one with leading zeros: check here.
        if (
            len(self.ed25519_seed) != 32
            or len(self.rns_private) != 64
            or len(self.nostr_secret) != 32
        ):
            raise Malformed("node secrets have the wrong lengths")
        try:
            PrivateKey(self.nostr_secret)
        except ValueError as exc:
            raise Malformed(f"bad Nostr secret: {exc}") from None
        object.__setattr__(self, "_signing", nacl.signing.SigningKey(self.ed25519_seed))

    @classmethod
    def generate(cls, randbytes: Callable[[int], bytes]) -> NodeSecrets:
        """New keys from `randbytes` (the shell passes `os.urandom`)."""
        while True:
            nostr = randbytes(32)
            try:
                PrivateKey(nostr)
                break
            except ValueError:  # outside the curve order: astronomically rare, draw again
                continue
        return cls(randbytes(32), randbytes(64), nostr)

    @property
    def verify_key(self) -> bytes:
        """The Ed25519 public key (32 bytes)."""
        return bytes(self._signing.verify_key)

    @property
    def node_id(self) -> bytes:
        return node_id_of(self.verify_key)

    @property
    def rns_public(self) -> bytes:
        """RNS's public key layout: X25519 public (32) + Ed25519 public (32)."""
        x_pub = nacl.bindings.crypto_scalarmult_base(self.rns_private[:32])
        ed_pub = bytes(nacl.signing.SigningKey(self.rns_private[32:]).verify_key)
        return x_pub + ed_pub

    @property
    def rns_identity_hash(self) -> bytes:
        """What RNS calls the identity hash: SHA-256 of the public key, first 16 bytes."""
        return hashlib.sha256(self.rns_public).digest()[:16]

    @property
    def nostr_public(self) -> bytes:
        """The x-only secp256k1 public key Nostr uses (32 bytes)."""
        return PrivateKey(self.nostr_secret).public_key_xonly.format()

    def sign(self, kind: str, mesh_id: bytes, body: bytes) -> bytes:
        """Ed25519 signature with the node key over `signing_input(kind, mesh_id, body)`."""
        return self._signing.sign(signing_input(kind, mesh_id, body)).signature

    def sign_rns(self, kind: str, mesh_id: bytes, body: bytes) -> bytes:
        """The same, with the Reticulum identity's Ed25519 key (what `RNS.Identity.sign` makes)."""
        key = nacl.signing.SigningKey(self.rns_private[32:])
        return key.sign(signing_input(kind, mesh_id, body)).signature

    def sign_nostr(self, kind: str, mesh_id: bytes, body: bytes) -> bytes:
        """BIP-340 Schnorr with the Nostr key over the SHA-256 of the signing input."""
        message = hashlib.sha256(signing_input(kind, mesh_id, body)).digest()
        return PrivateKey(self.nostr_secret).sign_schnorr(message)

    def to_bytes(self) -> bytes:
        return bytes([SECRETS_FORMAT]) + pack(
            {1: self.ed25519_seed, 2: self.rns_private, 3: self.nostr_secret}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> NodeSecrets:
        fields = unpack_exact(split_format(data, SECRETS_FORMAT, "node secrets"), 64)
        if not isinstance(fields, dict) or not all(
            isinstance(fields.get(k), bytes) for k in (1, 2, 3)
        ):
            raise Malformed("node secrets: expected a map of three keys")
        return cls(fields[1], fields[2], fields[3])


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """Binds a node's name and three public keys; signed by all three keys."""

    name: str
    verify_key: bytes
    rns_public: bytes
    nostr_public: bytes
    signatures: tuple[bytes, bytes, bytes]

    KIND = "member"

    def __post_init__(self) -> None:
        NodeRef(name=self.name)  # a name no address can hold ("svc", an id's hex) is refused

    @property
    def node_id(self) -> bytes:
        return node_id_of(self.verify_key)

    @classmethod
    def create(cls, secrets: NodeSecrets, name: str, mesh_id: bytes) -> MemberRecord:
        """Sign a record for `name` in `mesh_id`.

        Raises:
            AddressError: `name` could not name a node in an address (bad characters, "svc",
                32 hex digits).
        """
        NodeRef(name=name)  # raises AddressError before anything is signed
        body = _member_body(name, secrets.verify_key, secrets.rns_public, secrets.nostr_public)
        sigs = (
            secrets.sign(cls.KIND, mesh_id, body),
            secrets.sign_rns(cls.KIND, mesh_id, body),
            secrets.sign_nostr(cls.KIND, mesh_id, body),
        )
        return cls(name, secrets.verify_key, secrets.rns_public, secrets.nostr_public, sigs)

    def check(self, mesh_id: bytes) -> None:
        """Verify all three signatures for `mesh_id`; raise `BadSignature` if any fails."""
        body = _member_body(self.name, self.verify_key, self.rns_public, self.nostr_public)
        verify(self.verify_key, self.KIND, mesh_id, body, self.signatures[0])
        verify(self.rns_public[32:], self.KIND, mesh_id, body, self.signatures[1])
        message = hashlib.sha256(signing_input(self.KIND, mesh_id, body)).digest()
        try:
            ok = PublicKeyXOnly(self.nostr_public).verify(self.signatures[2], message)
        except ValueError:
            ok = False
        if not ok:
            raise BadSignature("member record: Nostr signature does not verify")

    def to_bytes(self) -> bytes:
        return bytes([MEMBER_FORMAT]) + pack(
            [self.name, self.verify_key, self.rns_public, self.nostr_public, *self.signatures]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> MemberRecord:
        fields = unpack_exact(split_format(data, MEMBER_FORMAT, "member record"), 64)
        shape = (str, bytes, bytes, bytes, bytes, bytes, bytes)
        if not (
            isinstance(fields, list)
            and len(fields) == len(shape)
            and all(isinstance(v, t) for v, t in zip(fields, shape, strict=True))
        ):
            raise Malformed("member record: wrong shape")
        name, vk, rns, nostr, s1, s2, s3 = fields
        if len(vk) != 32 or len(rns) != 64 or len(nostr) != 32:
            raise Malformed("member record: key of the wrong length")
        try:
            return cls(name, vk, rns, nostr, (s1, s2, s3))
        except AddressError as exc:
            raise Malformed(f"member record: {exc}") from None


def _member_body(name: str, verify_key: bytes, rns_public: bytes, nostr_public: bytes) -> bytes:
    return pack([name, verify_key, rns_public, nostr_public])


def admit_member(
    record_bytes: bytes, mesh_id: bytes, trusted_keys: Mapping[bytes, bytes]
) -> MemberRecord:
    """A peer's member record, checked: it decodes, all three signatures verify for this mesh,
    and its Ed25519 key is the one the mesh trusts for that node id. Every transport admits
    peers through here; each then checks the Reticulum key its own channel proved.

    Raises:
        Truncated, Malformed, BadSignature: the record is damaged, forged or of another mesh.
        Untrusted: a valid record of a node this mesh does not trust.
    """
    record = MemberRecord.from_bytes(record_bytes)
    record.check(mesh_id)
    if trusted_keys.get(record.node_id) != record.verify_key:
        raise Untrusted(f"node {record.node_id.hex()} is not a member this mesh trusts")
    return record
