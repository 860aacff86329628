"""A supervisor's command to one node: signed, authorized by the governance fold, judged once.

In the supervised shape the supervisor is the mesh's 1-of-1 admin; more generally any admin of
the fold may command. A command is one signed object (kind "supervise", so it can never pass for
a vote, an order or a heartbeat, and it is bound to the mesh)::

    0x43 ‖ msgpack [action, target node id (16 B), args, issuer key (32 B), issued_at,
                    expires_at, nonce (8 B)] ‖ 64-byte Ed25519 signature

`action` is one of `config_update` {key: value}, `agent_restart` {name}, `emergency_stop`
{reason}, `data_sync` {}. Times are the issuer's wall seconds; a command lives at most
`MAX_LIFETIME` (10 min), long enough for a slow radio, short enough that a captured one is
soon worthless.

`CommandJudge.judge(data, now)` returns the command or a `Refusal` whose `reason` is one of:
`malformed`, `bad_signature`, `other_node` (for another target), `unauthorized` (the issuer is
not an admin of the fold now), `expired`, `not_yet` (issued more than `SKEW` in the future),
`replayed` (its id was accepted before), `unknown` (an action this node does not know). The
seen ids are kept until their command expires (`seen`/`restore` let the shell persist them, so a
restart does not reopen the window).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kai_mesh.core.codec import digest, pack, split_format, unpack_prefix
from kai_mesh.core.errors import BadSignature, Malformed, ProtocolError, UsageError
from kai_mesh.core.governance.fold import GovernanceState
from kai_mesh.core.mesh.address import NODE_ID_BYTES
from kai_mesh.core.mesh.identity import SIGNATURE_BYTES, NodeSecrets, verify

COMMAND_FORMAT = 0x43
KIND = "supervise"
ACTIONS = frozenset({"config_update", "agent_restart", "emergency_stop", "data_sync"})
MAX_LIFETIME = 600
SKEW = 120  # seconds a command may be dated ahead of this node's clock
MAX_COMMAND = 1024
MAX_TIME = 2**63
NONCE_BYTES = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    action: str
    target: bytes
    args: Mapping[str, Any]
    issuer: bytes
    issued_at: int
    expires_at: int
    nonce: bytes
    signature: bytes = b""

    def body(self) -> bytes:
        value = [
            self.action,
            self.target,
            dict(sorted(self.args.items())),
            self.issuer,
            self.issued_at,
            self.expires_at,
            self.nonce,
        ]
        return bytes([COMMAND_FORMAT]) + pack(value)

    @property
    def id(self) -> bytes:
        return digest(KIND, self.body())[:16]

    def to_bytes(self) -> bytes:
        return self.body() + self.signature

    @classmethod
    def create(
        cls,
        secrets: NodeSecrets,
        mesh_id: bytes,
        *,
        action: str,
        target: bytes,
        args: Mapping[str, Any],
        now: int,
        nonce: bytes,
        lifetime: int = 300,
    ) -> Command:
        """Sign a command. Raises `UsageError` for values out of range."""
        if len(target) != NODE_ID_BYTES or len(nonce) != NONCE_BYTES:
            raise UsageError("supervise: a 16-byte node id and an 8-byte nonce")
        if not 0 < lifetime <= MAX_LIFETIME or not 0 <= now < MAX_TIME - lifetime:
            raise UsageError(f"supervise: lifetime 1..{MAX_LIFETIME} s")
        unsigned = cls(
            action=action,
            target=target,
            args=dict(args),
            issuer=secrets.verify_key,
            issued_at=now,
            expires_at=now + lifetime,
            nonce=nonce,
        )
        body = unsigned.body()
        if len(body) + SIGNATURE_BYTES > MAX_COMMAND:
            raise UsageError(f"supervise: a command is at most {MAX_COMMAND} bytes")
        return Command(
            **{f: getattr(unsigned, f) for f in _FIELDS},
            signature=secrets.sign(KIND, mesh_id, body),
        )


_FIELDS = ("action", "target", "args", "issuer", "issued_at", "expires_at", "nonce")


def decode(data: bytes, mesh_id: bytes) -> Command:
    """Parse and verify the signature (not the authorization).

    Raises:
        ProtocolError: Malformed, Truncated, UnknownVersion, Oversize, BadSignature.
    """
    if isinstance(data, bytes | bytearray) and len(data) > MAX_COMMAND:
        raise Malformed(f"supervise: more than {MAX_COMMAND} bytes")
    rest = split_format(data, COMMAND_FORMAT, "supervise command")
    value, used = unpack_prefix(rest, MAX_COMMAND, depth=4)
    signature = rest[used:]
    if len(signature) != SIGNATURE_BYTES:
        raise Malformed("supervise: a 64-byte signature must follow the body")
    if not isinstance(value, list) or len(value) != 7:
        raise Malformed("supervise: expected 7 fields")
    action, target, args, issuer, issued_at, expires_at, nonce = value
    if not isinstance(action, str) or not 0 < len(action) <= 32:
        raise Malformed("supervise: action is a short text")
    for name, b, n in (("target", target, NODE_ID_BYTES), ("issuer", issuer, 32)):
        if type(b) is not bytes or len(b) != n:
            raise Malformed(f"supervise: {name} is {n} bytes")
    if type(nonce) is not bytes or len(nonce) != NONCE_BYTES:
        raise Malformed("supervise: nonce is 8 bytes")
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise Malformed("supervise: args is a map of names")
    for t in (issued_at, expires_at):
        if type(t) is not int or not 0 <= t < MAX_TIME:
            raise Malformed("supervise: times are integers 0 <= t < 2**63")
    cmd = Command(
        action=action,
        target=target,
        args=args,
        issuer=issuer,
        issued_at=issued_at,
        expires_at=expires_at,
        nonce=nonce,
        signature=signature,
    )
    if cmd.body() != bytes([COMMAND_FORMAT]) + rest[:used]:
        raise Malformed("supervise: not in canonical form")
    verify(issuer, KIND, mesh_id, cmd.body(), signature)
    return cmd


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    detail: str


@dataclass(slots=True)
class CommandJudge:
    """One node's judge of supervisor commands (see the module docstring)."""

    node_id: bytes
    mesh_id: bytes
    _seen: dict[bytes, int] = field(default_factory=dict)  # id -> expires_at

    def judge(self, data: bytes, gov: GovernanceState | None, now: float) -> Command | Refusal:
        try:
            cmd = decode(data, self.mesh_id)
        except BadSignature as exc:
            return Refusal("bad_signature", str(exc))
        except ProtocolError as exc:
            return Refusal("malformed", str(exc))
        if cmd.target != self.node_id:
            return Refusal("other_node", "the command is for another node")
        if gov is None or cmd.issuer not in gov.admins:
            return Refusal("unauthorized", "the issuer is not an admin of this mesh's governance")
        if cmd.expires_at - cmd.issued_at > MAX_LIFETIME or now > cmd.expires_at:
            return Refusal("expired", f"the command expired at {cmd.expires_at}")
        if cmd.issued_at > now + SKEW:
            return Refusal("not_yet", "the command is dated in the future")
        self._forget(now)
        if cmd.id in self._seen:
            return Refusal("replayed", "this command was carried out already")
        if cmd.action not in ACTIONS:
            return Refusal("unknown", f"unknown action {cmd.action!r}")
        self._seen[cmd.id] = cmd.expires_at
        return cmd

    def _forget(self, now: float) -> None:
        for key in [k for k, until in self._seen.items() if until < now]:
            del self._seen[key]

    def seen(self) -> list[tuple[bytes, int]]:
        return sorted(self._seen.items())

    def restore(self, items: Iterable[tuple[bytes, int]]) -> None:
        for key, until in items:
            self._seen[bytes(key)] = int(until)
