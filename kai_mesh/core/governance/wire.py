"""Governance on the wire: proposals, votes, invite redemptions and withdrawals (DESIGN.md,
"Governance").

Four signed records, each a format byte, one canonical msgpack array, then signatures::

    proposal    0x21 ‖ [parent, kind, body, expires_at, proposer, nonce, signed_time] ‖ vote sig
    vote        0x22 ‖ [proposal_id, voter, signed_time] ‖ sig (kind "gov-vote")
    redemption  0x23 ‖ [invite_key, node_key, signed_time]
                     ‖ sig by the invite key (kind "gov-redeem")
                     ‖ sig by the node key (kind "gov-redeem-node")
    withdrawal  0x24 ‖ [proposal_id, withdrawer, signed_time] ‖ sig (kind "gov-withdraw")

A withdrawal (added after the first three; nodes that predate it refuse it as an unknown format
and nothing else changes) is its proposer's word that a proposal should no longer be voted for;
what it does is the machine's business.

The **proposal id** is the full 32-byte SHA-256 `digest("gov-proposal", every byte before the
signature)`. Not 16 bytes: a vote signs only the id, and the proposer chooses the proposal's
content, so a 16-byte id would let a proposer who spends 2**64 hashes find two proposals with one
id and collect votes for the harmless one on behalf of the other. 32 bytes cost a vote 16 bytes
(139 instead of 123, under the 150-byte goal).

A proposal **carries its proposer's vote**: its signature is exactly the `gov-vote` signature of
the vote `[id, proposer, signed_time]`, so that vote can be rebuilt from the proposal
(`SignedProposal.vote`) and is counted like any other. The id covers every field, so the vote
also authenticates the proposal. `parent` is the id of the last certified proposal the proposer
saw (the mesh id for the first); `kind` is a small integer on the wire (`KINDS`, from 1); `nonce`
is 0 to 16 bytes that make two otherwise equal proposals differ. Times are integer seconds from
the signer's clock, 0 <= t < 2**63; nothing here reads a clock.

Bodies are maps with string keys, checked per kind by `check_body`, what every decoder applies (so
records made before a rule was added still decode); `check_new_body` adds the rules a node applies
to its own proposals before signing them (real Ed25519 keys, the policy keys' types, names without
control characters or path parts, no near miss of a policy key the node reads). `policy_update` and
`config_update` `{key: value}` (a nil value removes the key); `node_authorization`
`{"node_key": key, "role": str}` or `{"invite_key": key, "role": str}`; `node_revocation`
`{"node_id": 16 bytes, "cut": {client_id: seq}}`; `admin_change` `{"admins": [keys],
"threshold": m}` with 2m > n; `emergency_shutdown` `{"reason": str}`; `shutdown_lift` `{}`.

Every record is canonical: maps sorted by key, smallest encodings, so one meaning has one encoding
and one id (decoders re-encode and compare). A vote's and a redemption's signatures cover every
byte before the signatures, format byte included; a proposal's covers the bytes of its proposer's
vote, whose id covers every byte of the proposal before the signature. All go through
`identity.signing_input`, so each is bound to this mesh and to its kind: an envelope's signature,
or a vote's over other content, never passes as a vote, nor a proposal of another mesh (even one
re-created with the same admins: another genesis nonce, another mesh id) as one of this mesh.

Sizes (bench/governance.py): a vote 139 bytes (143 at most), a redemption 203, a proposal 156
(`shutdown_lift`) to about 220, an `admin_change` 34 bytes more per admin (413 for 7).

`parse_object` checks structure, `check_signatures` the signatures, `decode_object` both (the
machine parses first so that a record it holds already costs no signature check). Whether a
signer is an admin is the machine's business (`kai_mesh.core.governance.machine`). Every failure of
foreign bytes is a `ProtocolError` subclass.
"""

from __future__ import annotations

import difflib
import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import nacl.bindings
import nacl.signing

from kai_mesh.core.codec import (
    FieldError,
    checked_bytes,
    checked_int,
    digest,
    pack,
    split_format,
    unpack_prefix,
)
from kai_mesh.core.errors import Malformed, Oversize, Truncated, UsageError
from kai_mesh.core.governance.kinds import KINDS as KINDS  # re-exported
from kai_mesh.core.mesh.address import NODE_ID_BYTES
from kai_mesh.core.mesh.genesis import check_quorum
from kai_mesh.core.mesh.identity import SIGNATURE_BYTES, NodeSecrets, signing_input, verify

PROPOSAL_FORMAT = 0x21
VOTE_FORMAT = 0x22
REDEMPTION_FORMAT = 0x23
VOTE_KIND = "gov-vote"
REDEEM_KIND = "gov-redeem"
REDEEM_NODE_KIND = "gov-redeem-node"
WITHDRAWAL_FORMAT = 0x24
WITHDRAW_KIND = "gov-withdraw"

ID_BYTES = 32
KEY_BYTES = 32
MAX_NONCE = 16
MAX_TIME = 2**63  # exclusive
MAX_CLIENT_ID = 2**53  # exclusive: Yjs client ids are JavaScript numbers
MAX_PROPOSAL = 8192  # bytes, signature included
MAX_ITEMS = 256  # entries of any map or list in a body
MAX_DEPTH = 8  # nesting of policy and config values
MAX_ADMINS = 64
MAX_TEXT = 256  # characters of a role, a reason, a policy or config key
VOTE_BYTES_MAX = 1 + 1 + (2 + ID_BYTES) + (2 + KEY_BYTES) + 9 + SIGNATURE_BYTES

_CODE = {kind: i + 1 for i, kind in enumerate(KINDS)}


def _text(value: object, name: str, error: FieldError, *, empty: bool = False) -> str:
    if type(value) is not str or len(value) > MAX_TEXT or (not value and not empty):
        least = 0 if empty else 1
        raise error(f"{name}: must be a string of {least} to {MAX_TEXT} characters")
    return value


def _time(value: object, name: str, error: FieldError) -> int:
    return checked_int(value, name, 0, MAX_TIME, error)


# Bodies -------------------------------------------------------------------------------------------


def canonical(value: object, error: FieldError = UsageError, depth: int = 0) -> Any:
    """`value` as governance carries it: lists for tuples, maps sorted by key (all string keys
    or all integer keys), finite floats, integers msgpack holds. Raises `error` otherwise."""
    if depth > MAX_DEPTH:
        raise error(f"values nest at most {MAX_DEPTH} deep")
    if value is None or type(value) in (bool, str, bytes):
        return value
    if type(value) is int:
        return checked_int(value, "integer", -(2**63), 2**64, error)
    if type(value) is float:
        if not math.isfinite(value):
            raise error("floats must be finite")
        return value
    if isinstance(value, list | tuple):
        if len(value) > MAX_ITEMS:
            raise error(f"at most {MAX_ITEMS} items in a list")
        return [canonical(v, error, depth + 1) for v in value]
    if isinstance(value, Mapping):
        if len(value) > MAX_ITEMS:
            raise error(f"at most {MAX_ITEMS} entries in a map")
        keys = list(value)
        if not (all(type(k) is str for k in keys) or all(type(k) is int for k in keys)):
            raise error("map keys must be all strings or all integers")
        return {k: canonical(value[k], error, depth + 1) for k in sorted(keys)}
    raise error(f"a {type(value).__name__} cannot be carried")


def _fields(body: object, kind: str, required: set[str], error: FieldError) -> dict[str, Any]:
    if not isinstance(body, Mapping) or set(body) != required:
        raise error(f"{kind}: the body has exactly the keys {sorted(required)}")
    return dict(body)


def _settings(body: object, kind: str, error: FieldError) -> dict[str, Any]:
    if not isinstance(body, Mapping) or not body:
        raise error(f"{kind}: the body is a non-empty map of settings")
    for key in body:
        _text(key, f"{kind} key", error)
    out: dict[str, Any] = canonical(body, error)
    if kind == "policy_update":
        ttl = out.get("max_ttl")
        if ttl is not None:
            checked_int(ttl, "policy max_ttl", 1, 2**32, error)
        skew = out.get("max_clock_skew")
        if skew is not None:
            checked_int(skew, "policy max_clock_skew (seconds)", 1, 7 * 24 * 3600, error)
        intents = out.get("guest_intents")
        if intents is not None and not (
            isinstance(intents, list) and all(type(i) is str and i for i in intents)
        ):
            raise error("policy guest_intents: must be a list of intent names")
        roles = out.get("critical_roles")
        if roles is not None and not (
            isinstance(roles, list) and all(type(r) is str and r for r in roles)
        ):
            raise error(
                'policy critical_roles: must be a list of role names (e.g. ["admin"]), '
                "or null to let every member send critical messages"
            )
    return out


def check_body(kind: str, body: object, error: FieldError = UsageError) -> dict[str, Any]:
    """The canonical body of a proposal of `kind`, or `error` naming what is wrong."""
    if kind in ("policy_update", "config_update"):
        return _settings(body, kind, error)
    if kind == "node_authorization":
        which = "invite_key" if isinstance(body, Mapping) and "invite_key" in body else "node_key"
        fields = _fields(body, kind, {which, "role"}, error)
        checked_bytes(fields[which], f"{kind} {which}", KEY_BYTES, error)
        _text(fields["role"], f"{kind} role", error)
    elif kind == "node_revocation":
        fields = _fields(body, kind, {"node_id", "cut"}, error)
        checked_bytes(fields["node_id"], "revocation node_id", NODE_ID_BYTES, error)
        cut = fields["cut"]
        if not isinstance(cut, Mapping) or len(cut) > MAX_ITEMS:
            raise error(f"revocation cut: a map of at most {MAX_ITEMS} streams")
        for client_id, seq in cut.items():
            checked_int(client_id, "revocation cut client_id", 0, MAX_CLIENT_ID, error)
            checked_int(seq, "revocation cut seq", 0, MAX_TIME, error)
    elif kind == "admin_change":
        fields = _fields(body, kind, {"admins", "threshold"}, error)
        admins = fields["admins"]
        if not isinstance(admins, list | tuple) or not 1 <= len(admins) <= MAX_ADMINS:
            raise error(f"admin_change admins: a list of 1 to {MAX_ADMINS} keys")
        for key in admins:
            checked_bytes(key, "admin_change admin key", KEY_BYTES, error)
        if len(set(admins)) != len(admins):
            raise error("admin_change: an admin key is listed twice")
        checked_int(fields["threshold"], "admin_change threshold", 1, MAX_ADMINS + 1, error)
        try:
            check_quorum(len(admins), fields["threshold"])
        except Malformed as exc:
            raise error(f"admin_change: {exc}") from None
    elif kind == "emergency_shutdown":
        fields = _fields(body, kind, {"reason"}, error)
        _text(fields["reason"], "shutdown reason", error, empty=True)
    elif kind == "shutdown_lift":
        fields = _fields(body, kind, set(), error)
    else:
        raise error(f"unknown proposal kind {kind!r}; one of {', '.join(KINDS)}")
    out: dict[str, Any] = canonical(fields, error)
    return out


POLICY_KEYS: tuple[str, ...] = ("critical_roles", "guest_intents", "max_clock_skew", "max_ttl")
MAX_NAME = 64  # characters of a role or an intent name


def check_name(value: object, what: str, error: FieldError = UsageError) -> str:
    """A role or intent name: 1 to `MAX_NAME` characters, no control or format characters, no
    surrounding spaces, no path parts (`/`, `\\`, `.` or `..`): names end up in logs, file
    names and prompts."""
    if type(value) is not str or not 1 <= len(value) <= MAX_NAME:
        raise error(f"{what}: must be a name of 1 to {MAX_NAME} characters")
    if any(unicodedata.category(c)[0] == "C" for c in value):
        raise error(f"{what} {value!r}: control characters are not allowed")
    if "/" in value or "\\" in value or value in (".", "..") or value.strip() != value:
        raise error(f"{what} {value!r}: no slashes, no '.' or '..', no surrounding spaces")
    return value


def check_key(value: object, what: str, error: FieldError = UsageError) -> bytes:
    """A 32-byte Ed25519 public key that is a point of the curve's prime-order group: no key
    anybody could sign with is refused, and a typo (one digit off, a filler such as 44…44) is."""
    key = checked_bytes(value, what, KEY_BYTES, error)
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(key):
        raise error(f"{what} {key.hex()[:16]}…: not an Ed25519 public key (mistyped?)")
    return key


def _text_line(value: str, what: str, error: FieldError) -> None:
    if any(unicodedata.category(c)[0] == "C" for c in value):
        raise error(f"{what}: control characters are not allowed")


def _names_or_none(value: object, what: str, example: str, error: FieldError) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        raise error(f"{what}: a list of names (e.g. {example}), or null to remove it")
    for name in value:
        check_name(name, f"{what} entry", error)
    if len(set(value)) != len(value):
        raise error(f"{what}: a name is listed twice")


def check_new_body(kind: str, body: object, error: FieldError = UsageError) -> dict[str, Any]:
    """`check_body` and the rules a node applies before it signs a proposal of its own, each
    failure one line naming the field. Records from peers are judged by `check_body` alone, so
    a record signed before a rule existed still decodes everywhere."""
    out = check_body(kind, body, error)
    if kind == "policy_update":
        for key, value in out.items():
            _text_line(key, f"policy_update key {key!r}", error)
            near = difflib.get_close_matches(key, POLICY_KEYS, n=1, cutoff=0.8)
            if key not in POLICY_KEYS and near:  # other keys are the mesh's own, read by apps
                raise error(f"policy_update: unknown policy key {key!r}; did you mean {near[0]!r}?")
            if key == "max_ttl" and value is not None:
                checked_int(value, "policy max_ttl (seconds)", 1, 2**32, error)
            elif key == "max_clock_skew" and value is not None:
                checked_int(value, "policy max_clock_skew (seconds)", 1, 7 * 24 * 3600, error)
        _names_or_none(out.get("guest_intents"), "policy guest_intents", '["echo"]', error)
        _names_or_none(out.get("critical_roles"), "policy critical_roles", '["admin"]', error)
    elif kind == "config_update":
        for key in out:
            _text_line(key, f"config_update key {key!r}", error)
    elif kind == "node_authorization":
        which = "invite_key" if "invite_key" in out else "node_key"
        check_key(out[which], f"node_authorization {which}", error)
        check_name(out["role"], "node_authorization role", error)
    elif kind == "admin_change":
        for key in out["admins"]:
            check_key(key, "admin_change admin key", error)
    elif kind == "emergency_shutdown":
        _text_line(out["reason"], "shutdown reason", error)
    return out


# Records ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Vote:
    """`voter` approves proposal `proposal_id`, at `signed_time` by the voter's clock."""

    proposal_id: bytes
    voter: bytes
    signed_time: int

    def __post_init__(self) -> None:
        _check_vote(self.proposal_id, self.voter, self.signed_time, UsageError)

    def body(self) -> bytes:
        """The bytes the vote signature covers (format byte included)."""
        return bytes([VOTE_FORMAT]) + pack([self.proposal_id, self.voter, self.signed_time])


def _check_vote(proposal_id: object, voter: object, signed_time: object, e: FieldError) -> None:
    checked_bytes(proposal_id, "vote proposal_id", ID_BYTES, e)
    checked_bytes(voter, "vote voter", KEY_BYTES, e)
    _time(signed_time, "vote signed_time", e)


@dataclass(frozen=True, slots=True)
class SignedVote:
    vote: Vote
    signature: bytes

    def to_bytes(self) -> bytes:
        return self.vote.body() + self.signature


@dataclass(frozen=True, slots=True)
class Proposal:
    """The content of a proposal; `encode_proposal` signs it (the proposer's vote)."""

    parent: bytes
    kind: str
    body: Mapping[str, Any]
    expires_at: int
    proposer: bytes
    nonce: bytes
    signed_time: int

    def __post_init__(self) -> None:
        clean = _check_proposal(self, UsageError)
        object.__setattr__(self, "body", clean)

    def unsigned_bytes(self) -> bytes:
        """Every byte before the signature; the id is their hash."""
        fields = [
            self.parent,
            _CODE[self.kind],
            dict(self.body),
            self.expires_at,
            self.proposer,
            self.nonce,
            self.signed_time,
        ]
        return bytes([PROPOSAL_FORMAT]) + pack(fields)

    @property
    def id(self) -> bytes:
        return proposal_id(self.unsigned_bytes())


def _check_proposal(p: Proposal, e: FieldError) -> dict[str, Any]:
    checked_bytes(p.parent, "proposal parent", ID_BYTES, e)
    _time(p.expires_at, "proposal expires_at", e)
    checked_bytes(p.proposer, "proposal proposer", KEY_BYTES, e)
    if type(p.nonce) is not bytes or len(p.nonce) > MAX_NONCE:
        raise e(f"proposal nonce: at most {MAX_NONCE} bytes")
    _time(p.signed_time, "proposal signed_time", e)
    return check_body(p.kind, p.body, e)


def proposal_id(unsigned: bytes) -> bytes:
    """A proposal's 32-byte id from the bytes before its signature."""
    return digest("gov-proposal", unsigned)


def rebase(
    proposal: Proposal,
    new_parent: bytes,
    *,
    proposer: bytes | None = None,
    signed_time: int | None = None,
) -> Proposal:
    """The same kind and body on `new_parent`, for `proposer` (by default the original one) to
    sign afresh with `encode_proposal`, at `signed_time` (by default the original time)."""
    return replace(
        proposal,
        parent=new_parent,
        proposer=proposal.proposer if proposer is None else proposer,
        signed_time=proposal.signed_time if signed_time is None else signed_time,
    )


@dataclass(frozen=True, slots=True)
class SignedProposal:
    """A decoded, signature-checked proposal, its id and its wire bytes."""

    proposal: Proposal
    id: bytes
    signature: bytes
    data: bytes

    @property
    def vote(self) -> SignedVote:
        """The proposer's vote the proposal carries."""
        p = self.proposal
        return SignedVote(Vote(self.id, p.proposer, p.signed_time), self.signature)


@dataclass(frozen=True, slots=True)
class Redemption:
    """The holder of invite `invite_key` claims it for node `node_key`."""

    invite_key: bytes
    node_key: bytes
    signed_time: int

    def __post_init__(self) -> None:
        _check_redemption(self.invite_key, self.node_key, self.signed_time, UsageError)

    def body(self) -> bytes:
        return bytes([REDEMPTION_FORMAT]) + pack([self.invite_key, self.node_key, self.signed_time])

    @property
    def id(self) -> bytes:
        """32 bytes over the body (signatures left out: one claim, one id)."""
        return digest("gov-redemption", self.body())


def _check_redemption(invite: object, node: object, signed_time: object, e: FieldError) -> None:
    checked_bytes(invite, "redemption invite_key", KEY_BYTES, e)
    checked_bytes(node, "redemption node_key", KEY_BYTES, e)
    _time(signed_time, "redemption signed_time", e)
    if invite == node:
        raise e("redemption: the node key cannot be the invite key")


@dataclass(frozen=True, slots=True)
class SignedRedemption:
    redemption: Redemption
    invite_signature: bytes
    node_signature: bytes

    def to_bytes(self) -> bytes:
        return self.redemption.body() + self.invite_signature + self.node_signature


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """`withdrawer` (to count, the proposal's proposer) withdraws proposal `proposal_id`."""

    proposal_id: bytes
    withdrawer: bytes
    signed_time: int

    def __post_init__(self) -> None:
        checked_bytes(self.proposal_id, "withdrawal proposal_id", ID_BYTES, UsageError)
        checked_bytes(self.withdrawer, "withdrawal withdrawer", KEY_BYTES, UsageError)
        _time(self.signed_time, "withdrawal signed_time", UsageError)

    def body(self) -> bytes:
        """The bytes the signature covers (format byte included)."""
        fields = [self.proposal_id, self.withdrawer, self.signed_time]
        return bytes([WITHDRAWAL_FORMAT]) + pack(fields)


@dataclass(frozen=True, slots=True)
class SignedWithdrawal:
    withdrawal: Withdrawal
    signature: bytes

    def to_bytes(self) -> bytes:
        return self.withdrawal.body() + self.signature


@dataclass(frozen=True, slots=True)
class InviteSecret:
    """The private half of an invite: a bare Ed25519 seed (32 bytes, from the caller's rng)."""

    seed: bytes
    _signing: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.seed) is not bytes or len(self.seed) != 32:
            raise UsageError("an invite seed is 32 bytes")
        object.__setattr__(self, "_signing", nacl.signing.SigningKey(self.seed))

    @property
    def verify_key(self) -> bytes:
        return bytes(self._signing.verify_key)

    def sign(self, kind: str, mesh_id: bytes, body: bytes) -> bytes:
        return self._signing.sign(signing_input(kind, mesh_id, body)).signature


# Encoding and decoding ----------------------------------------------------------------------------


def encode_vote(vote: Vote, secrets: NodeSecrets, mesh_id: bytes) -> bytes:
    if vote.voter != secrets.verify_key:
        raise UsageError("vote: a node signs only its own votes")
    body = vote.body()
    return body + secrets.sign(VOTE_KIND, mesh_id, body)


def encode_proposal(proposal: Proposal, secrets: NodeSecrets, mesh_id: bytes) -> bytes:
    if proposal.proposer != secrets.verify_key:
        raise UsageError("proposal: the proposer signs its own proposal")
    unsigned = proposal.unsigned_bytes()
    vote = Vote(proposal_id(unsigned), proposal.proposer, proposal.signed_time)
    data = unsigned + secrets.sign(VOTE_KIND, mesh_id, vote.body())
    if len(data) > MAX_PROPOSAL:
        raise UsageError(f"proposal: {len(data)} bytes, at most {MAX_PROPOSAL}")
    return data


def encode_withdrawal(withdrawal: Withdrawal, secrets: NodeSecrets, mesh_id: bytes) -> bytes:
    if withdrawal.withdrawer != secrets.verify_key:
        raise UsageError("withdrawal: a node signs only its own withdrawals")
    body = withdrawal.body()
    return body + secrets.sign(WITHDRAW_KIND, mesh_id, body)


def encode_redemption(
    redemption: Redemption, invite: InviteSecret, node: NodeSecrets, mesh_id: bytes
) -> bytes:
    if (invite.verify_key, node.verify_key) != (redemption.invite_key, redemption.node_key):
        raise UsageError("redemption: signed by the invite's and the node's own keys")
    body = redemption.body()
    return (
        body + invite.sign(REDEEM_KIND, mesh_id, body) + node.sign(REDEEM_NODE_KIND, mesh_id, body)
    )


def _split(data: bytes, fmt: int, what: str, sigs: int, limit: int) -> tuple[Any, bytes, bytes]:
    """(value, bytes before the signatures, signatures) of a signed record; structure only."""
    rest = split_format(data, fmt, what)
    if len(rest) + 1 > limit:
        raise Oversize(f"{what}: {len(rest) + 1} bytes, at most {limit}")
    value, used = unpack_prefix(rest, limit)
    tail = rest[used:]
    if len(tail) != sigs * SIGNATURE_BYTES:
        error = Truncated if len(tail) < sigs * SIGNATURE_BYTES else Malformed
        raise error(f"{what}: {len(tail)} bytes after the body; expected {sigs * SIGNATURE_BYTES}")
    if not isinstance(value, list):
        raise Malformed(f"{what}: expected an array")
    return value, bytes([fmt]) + rest[:used], tail


def parse_vote(data: bytes) -> SignedVote:
    """A vote's structure; `check_signatures` verifies it (`decode_vote` does both)."""
    value, body, sig = _split(data, VOTE_FORMAT, "vote", 1, VOTE_BYTES_MAX)
    if len(value) != 3:
        raise Malformed("vote: expected [proposal_id, voter, signed_time]")
    try:
        vote = Vote(*value)
    except UsageError as exc:
        raise Malformed(f"vote: {exc}") from None
    if vote.body() != body:
        raise Malformed("vote: not in canonical msgpack")
    return SignedVote(vote, sig)


def parse_proposal(data: bytes) -> SignedProposal:
    """A proposal's structure and id; `check_signatures` verifies it."""
    value, unsigned, sig = _split(data, PROPOSAL_FORMAT, "proposal", 1, MAX_PROPOSAL)
    if len(value) != 7 or type(value[1]) is not int or not 1 <= value[1] <= len(KINDS):
        raise Malformed("proposal: expected [parent, kind, body, expires_at, proposer, ...]")
    parent, code, body, expires_at, proposer, nonce, signed_time = value
    try:
        proposal = Proposal(parent, KINDS[code - 1], body, expires_at, proposer, nonce, signed_time)
    except UsageError as exc:
        raise Malformed(f"proposal: {exc}") from None
    if proposal.unsigned_bytes() != unsigned:
        raise Malformed("proposal: not in canonical msgpack")
    return SignedProposal(proposal, proposal_id(unsigned), sig, bytes(data))


def parse_redemption(data: bytes) -> SignedRedemption:
    """A redemption's structure; `check_signatures` verifies both signatures."""
    limit = 1 + 1 + 2 * (2 + KEY_BYTES) + 9 + 2 * SIGNATURE_BYTES
    value, body, sigs = _split(data, REDEMPTION_FORMAT, "redemption", 2, limit)
    if len(value) != 3:
        raise Malformed("redemption: expected [invite_key, node_key, signed_time]")
    try:
        redemption = Redemption(*value)
    except UsageError as exc:
        raise Malformed(f"redemption: {exc}") from None
    if redemption.body() != body:
        raise Malformed("redemption: not in canonical msgpack")
    return SignedRedemption(redemption, sigs[:SIGNATURE_BYTES], sigs[SIGNATURE_BYTES:])


def parse_withdrawal(data: bytes) -> SignedWithdrawal:
    """A withdrawal's structure; `check_signatures` verifies it."""
    value, body, sig = _split(data, WITHDRAWAL_FORMAT, "withdrawal", 1, VOTE_BYTES_MAX)
    if len(value) != 3:
        raise Malformed("withdrawal: expected [proposal_id, withdrawer, signed_time]")
    try:
        withdrawal = Withdrawal(*value)
    except UsageError as exc:
        raise Malformed(f"withdrawal: {exc}") from None
    if withdrawal.body() != body:
        raise Malformed("withdrawal: not in canonical msgpack")
    return SignedWithdrawal(withdrawal, sig)


GovObject = SignedProposal | SignedVote | SignedRedemption | SignedWithdrawal


def parse_object(data: bytes) -> GovObject:
    """Any governance record's structure, by its format byte; signatures are not checked.

    Raises:
        Truncated, Malformed, Oversize, UnknownVersion: not a governance record.
    """
    if isinstance(data, bytes | bytearray | memoryview) and len(data) > 0:
        data = bytes(data)
        if data[0] == VOTE_FORMAT:
            return parse_vote(data)
        if data[0] == REDEMPTION_FORMAT:
            return parse_redemption(data)
        if data[0] == WITHDRAWAL_FORMAT:
            return parse_withdrawal(data)
    return parse_proposal(data)  # anything else: the right ProtocolError from here


def check_signatures(obj: GovObject, mesh_id: bytes) -> None:
    """Raise `BadSignature` unless every signature of `obj` verifies in this mesh, under its
    own kind: a vote's by its voter, a proposal's (its proposer's vote) by its proposer, a
    redemption's by its invite key and by its node key, a withdrawal's by its withdrawer."""
    match obj:
        case SignedVote(vote=vote, signature=sig):
            verify(vote.voter, VOTE_KIND, mesh_id, vote.body(), sig)
        case SignedProposal():
            verify(obj.proposal.proposer, VOTE_KIND, mesh_id, obj.vote.vote.body(), obj.signature)
        case SignedRedemption(redemption=r):
            verify(r.invite_key, REDEEM_KIND, mesh_id, r.body(), obj.invite_signature)
            verify(r.node_key, REDEEM_NODE_KIND, mesh_id, r.body(), obj.node_signature)
        case SignedWithdrawal(withdrawal=w, signature=sig):
            verify(w.withdrawer, WITHDRAW_KIND, mesh_id, w.body(), sig)


def decode_object(data: bytes, mesh_id: bytes) -> GovObject:
    """Any governance record, structure and signatures checked.

    Raises:
        Truncated, Malformed, Oversize, UnknownVersion: not a governance record.
        BadSignature: forged, altered, signed under another kind or for another mesh.
    """
    obj = parse_object(data)
    check_signatures(obj, mesh_id)
    return obj
