"""Deploy, scale and remove as signed, authorized orders (issue 11, "Deploying is authorized").

A manifest enters the mesh as a `SignedManifest`; a later change of replica count or a removal as
a `ServiceCommand`. Both are one format byte, one canonical msgpack array, then the deployer's
Ed25519 signature over `identity.signing_input(kind, mesh_id, every byte before it)`, as every
signed thing in kai-mesh: a signature for one kind of object, or for another mesh, never passes::

    manifest  0x41 ‖ [table, deployer_key, signed_at] ‖ sig (kind "svc-manifest")
    command   0x42 ‖ [action, name, min, max, deployer_key, signed_at] ‖ sig (kind "svc-command")

`table` is `Manifest.to_table()` with maps sorted by key; decoding re-validates it through the
manifest rules and re-encodes to compare, so one meaning has one encoding and one id.

Authorization is the fold's business, checked by every node before it acts: the signer's roles
are "admin" if its key is among the fold's admins, plus its member role if it is a member (a
revoked node has none); the policy key `deploy_roles` lists the roles that may deploy, scale and
remove (unset: `["admin"]`). `admit` returns the checked order or a `Refused` saying why, so a
forged or unauthorized order can be shown as refused and never run.

Which of two manifests of one service wins: the higher version (Nomad: "a newer job version
always wins"); at equal versions the later `signed_at`, then the larger id, so every node agrees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kai_mesh.core.codec import digest, pack, split_format, unpack_prefix
from kai_mesh.core.errors import AddressError, Malformed, Oversize, ProtocolError, UsageError
from kai_mesh.core.governance.fold import GovernanceState
from kai_mesh.core.mesh.address import check_name
from kai_mesh.core.mesh.identity import SIGNATURE_BYTES, NodeSecrets, node_id_of, verify
from kai_mesh.core.orchestration.manifest import (
    MAX_REPLICAS,
    Manifest,
    ManifestError,
    manifest_from_table,
)

MANIFEST_FORMAT = 0x41
COMMAND_FORMAT = 0x42
MANIFEST_KIND = "svc-manifest"
COMMAND_KIND = "svc-command"
DEPLOY_ROLES = "deploy_roles"
DEFAULT_DEPLOY_ROLES: tuple[str, ...] = ("admin",)
ADMIN_ROLE = "admin"
KEY_BYTES = 32
MAX_TIME = 2**63
MAX_ORDER = 16 * 1024  # bytes

Action = Literal["scale", "remove"]


def _canon(value: Any) -> Any:
    """Maps sorted by key, lists for tuples: one encoding per meaning."""
    if isinstance(value, Mapping):
        return {k: _canon(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canon(v) for v in value]
    return value


def _check_time(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value < MAX_TIME:
        raise Malformed(f"{name}: must be an integer 0 <= t < 2**63")
    return value


def _check_key(value: object) -> bytes:
    if type(value) is not bytes or len(value) != KEY_BYTES:
        raise Malformed(f"deployer key: must be {KEY_BYTES} bytes")
    return value


def _split(data: bytes, fmt: int, what: str) -> tuple[Any, bytes, bytes]:
    """(decoded array, signed bytes, signature) of a signed order; structure only."""
    if isinstance(data, bytes | bytearray) and len(data) > MAX_ORDER:
        raise Oversize(f"{what}: larger than {MAX_ORDER} bytes")
    rest = split_format(data, fmt, what)
    value, used = unpack_prefix(rest, MAX_ORDER)
    signature = rest[used:]
    if len(signature) != SIGNATURE_BYTES:
        raise Malformed(f"{what}: expected a {SIGNATURE_BYTES}-byte signature after the body")
    return value, bytes([fmt]) + rest[:used], signature


@dataclass(frozen=True, slots=True)
class SignedManifest:
    """A manifest, its deployer's key, when it was signed (deployer's clock, integer seconds),
    and the signature. `id`: 32-byte digest of the signed bytes."""

    manifest: Manifest
    deployer: bytes
    signed_at: int
    signature: bytes
    # The digest, computed once: routing asks for it per message (which copy serves), and it
    # canonicalizes and packs the whole manifest.
    _id: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @staticmethod
    def body(manifest: Manifest, deployer: bytes, signed_at: int) -> bytes:
        return bytes([MANIFEST_FORMAT]) + pack([_canon(manifest.to_table()), deployer, signed_at])

    @classmethod
    def create(
        cls, manifest: Manifest, secrets: NodeSecrets, mesh_id: bytes, now: int
    ) -> SignedManifest:
        """Sign `manifest` with this node's key at `now`.

        Raises:
            UsageError: `now` is out of range.
        """
        if type(now) is not int or not 0 <= now < MAX_TIME:
            raise UsageError("signed_at: must be an integer 0 <= t < 2**63")
        body = cls.body(manifest, secrets.verify_key, now)
        return cls(manifest, secrets.verify_key, now, secrets.sign(MANIFEST_KIND, mesh_id, body))

    @property
    def signed_bytes(self) -> bytes:
        return self.body(self.manifest, self.deployer, self.signed_at)

    @property
    def id(self) -> bytes:
        got = self._id
        if got is None:
            got = digest(MANIFEST_KIND, self.signed_bytes)
            object.__setattr__(self, "_id", got)  # frozen: set once, as a cached property would
        return got

    @property
    def deployer_id(self) -> bytes:
        return node_id_of(self.deployer)

    @property
    def precedence(self) -> tuple[tuple[int, ...], int, bytes]:
        """Larger wins: version, then signed_at, then id."""
        return (self.manifest.version_key, self.signed_at, self.id)

    def to_bytes(self) -> bytes:
        return self.signed_bytes + self.signature

    @classmethod
    def from_bytes(cls, data: bytes, mesh_id: bytes) -> SignedManifest:
        """Decode and verify.

        Raises:
            Truncated, Malformed, Oversize, UnknownVersion: the bytes are not a signed manifest.
            BadSignature: the signature does not verify for this mesh.
        """
        value, signed, signature = _split(data, MANIFEST_FORMAT, "service manifest")
        if not isinstance(value, list) or len(value) != 3:
            raise Malformed("service manifest: expected [table, deployer, signed_at]")
        table, deployer, signed_at = value
        try:
            manifest = manifest_from_table(table, "service manifest")
        except ManifestError as exc:
            raise Malformed(str(exc)) from None
        out = cls(manifest, _check_key(deployer), _check_time(signed_at, "signed_at"), signature)
        if out.signed_bytes != signed:
            raise Malformed("service manifest: not in canonical form")
        verify(deployer, MANIFEST_KIND, mesh_id, signed, signature)
        return out


@dataclass(frozen=True, slots=True)
class ServiceCommand:
    """`scale` (to `min`..`max`) or `remove` a service, signed by its issuer. Commands of one
    service order by (`signed_at`, `id`); a manifest signed later than a command supersedes it."""

    action: Action
    name: str
    min: int
    max: int
    deployer: bytes
    signed_at: int
    signature: bytes

    @staticmethod
    def body(action: str, name: str, low: int, high: int, deployer: bytes, at: int) -> bytes:
        return bytes([COMMAND_FORMAT]) + pack([action, name, low, high, deployer, at])

    @classmethod
    def create(
        cls,
        action: Action,
        name: str,
        secrets: NodeSecrets,
        mesh_id: bytes,
        now: int,
        replicas: tuple[int, int] = (0, 0),
    ) -> ServiceCommand:
        """Sign a command. `replicas` (min, max) is for `scale`; `remove` ignores it.

        Raises:
            UsageError: an unknown action, a bad name, replica counts or time.
        """
        low, high = replicas if action == "scale" else (0, 0)
        try:
            _check_command(action, name, low, high)
        except (Malformed, AddressError) as exc:
            raise UsageError(str(exc)) from None
        if type(now) is not int or not 0 <= now < MAX_TIME:
            raise UsageError("signed_at: must be an integer 0 <= t < 2**63")
        body = cls.body(action, name, low, high, secrets.verify_key, now)
        sig = secrets.sign(COMMAND_KIND, mesh_id, body)
        return cls(action, name, low, high, secrets.verify_key, now, sig)

    @property
    def signed_bytes(self) -> bytes:
        return self.body(self.action, self.name, self.min, self.max, self.deployer, self.signed_at)

    @property
    def id(self) -> bytes:
        return digest(COMMAND_KIND, self.signed_bytes)

    def to_bytes(self) -> bytes:
        return self.signed_bytes + self.signature

    @classmethod
    def from_bytes(cls, data: bytes, mesh_id: bytes) -> ServiceCommand:
        """Decode and verify. Raises as `SignedManifest.from_bytes`."""
        value, signed, signature = _split(data, COMMAND_FORMAT, "service command")
        if not isinstance(value, list) or len(value) != 6:
            raise Malformed("service command: expected [action, name, min, max, key, time]")
        action, name, low, high, deployer, signed_at = value
        try:
            _check_command(action, name, low, high)
        except AddressError as exc:
            raise Malformed(f"service command: {exc}") from None
        out = cls(
            action,
            name,
            low,
            high,
            _check_key(deployer),
            _check_time(signed_at, "signed_at"),
            signature,
        )
        if out.signed_bytes != signed:
            raise Malformed("service command: not in canonical form")
        verify(deployer, COMMAND_KIND, mesh_id, signed, signature)
        return out


def _check_command(action: object, name: object, low: object, high: object) -> None:
    if action not in ("scale", "remove"):
        raise Malformed(f"service command: unknown action {action!r}")
    if type(name) is not str:
        raise Malformed("service command: the name must be a string")
    check_name("service", name)
    for v in (low, high):
        if type(v) is not int or not 0 <= v <= MAX_REPLICAS:
            raise Malformed(f"service command: replica counts are integers 0..{MAX_REPLICAS}")
    assert isinstance(low, int) and isinstance(high, int)
    if action == "scale" and (high < low or high == 0):
        raise Malformed("service command: scale needs 0 <= min <= max and max >= 1")
    if action == "remove" and (low, high) != (0, 0):
        raise Malformed("service command: remove carries no replica counts")


@dataclass(frozen=True, slots=True)
class Refused:
    """Why an order is not acted on. `reason`: a `ProtocolError.reason` ("malformed",
    "bad_signature", ...) or "unauthorized"; `detail`: one line for people."""

    reason: str
    detail: str


def roles_of(key: bytes, state: GovernanceState) -> frozenset[str]:
    """The roles the fold gives the holder of `key`: "admin" for an admin key, plus its member
    role; none for a revoked node."""
    node_id = node_id_of(key)
    if node_id in state.revoked:
        return frozenset()
    roles: set[str] = set()
    if key in state.admins:
        roles.add(ADMIN_ROLE)
    member = state.members.get(node_id)
    if member is not None and member.key == key:
        roles.add(member.role)
    return frozenset(roles)


def deploy_roles(state: GovernanceState) -> frozenset[str]:
    """The policy's `deploy_roles`, or admins only when unset or not a list of names."""
    value = state.policy.get(DEPLOY_ROLES)
    if isinstance(value, list | tuple) and all(type(r) is str for r in value):
        return frozenset(value)
    return frozenset(DEFAULT_DEPLOY_ROLES)


def authorize(key: bytes, state: GovernanceState) -> Refused | None:
    """None if the fold lets `key` deploy, scale and remove; otherwise why not."""
    allowed = deploy_roles(state)
    held = roles_of(key, state)
    if held & allowed:
        return None
    who = f"roles {', '.join(sorted(held))}" if held else "no role"
    return Refused(
        "unauthorized",
        f"signer {node_id_of(key).hex()} has {who}; deploy_roles allows "
        f"{', '.join(sorted(allowed)) or 'no role'}",
    )


def admit_manifest(data: bytes, mesh_id: bytes, state: GovernanceState) -> SignedManifest | Refused:
    """The verified, authorized manifest in `data`, or why it is refused."""
    try:
        sm = SignedManifest.from_bytes(data, mesh_id)
    except ProtocolError as exc:
        return Refused(exc.reason, str(exc))
    return authorize(sm.deployer, state) or sm


def admit_command(data: bytes, mesh_id: bytes, state: GovernanceState) -> ServiceCommand | Refused:
    """The verified, authorized command in `data`, or why it is refused."""
    try:
        cmd = ServiceCommand.from_bytes(data, mesh_id)
    except ProtocolError as exc:
        return Refused(exc.reason, str(exc))
    return authorize(cmd.deployer, state) or cmd


def newest(manifests: list[SignedManifest]) -> SignedManifest | None:
    """The manifest that wins among those of one service (see the module docstring)."""
    return max(manifests, key=lambda m: m.precedence, default=None)
