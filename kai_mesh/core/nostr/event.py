"""NIP-01 events: canonical serialization, ids, BIP-340 signatures, and a strict decoder.

An event's id is SHA-256 of the UTF-8 JSON of `[0, pubkey, created_at, kind, tags, content]`
with no whitespace; characters are escaped as JavaScript's `JSON.stringify` does (the seven
NIP-01 escapes, other control characters as `\\u00XX`, everything else verbatim), so ids match
nostr-tools. The signature is BIP-340 Schnorr over the 32-byte id, by the x-only key `pubkey`.

Decoding is split in two so the relay pool can consult its LRU of seen ids between the cheap and
the expensive half (rust-nostr does the same): `parse_event` checks only the shape (types, hex
lengths, kind range, tag shape) and is cheap; `verify_event` recomputes the id and checks the
signature. A received id is never trusted until `verify_event` has passed (pynostr's
`Event.from_dict` recomputes it silently instead: LAB.md).

NIP-40: an `["expiration", "<unix seconds>"]` tag says when an event stops being valid;
`expiration()` reads it and `check_fresh` refuses an expired event (`now` is given: the core reads
no clock).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from coincurve import PrivateKey, PublicKeyXOnly

from kai_mesh.core.errors import BadSignature, Malformed, ProtocolError, UsageError

MAX_KIND = 65535
MAX_TAGS = 2000  # strfry's default
EPHEMERAL_KINDS = range(20000, 30000)
_HEX = frozenset("0123456789abcdef")
_DIGITS = re.compile(r"[0-9]{1,15}")  # int() would also take "+1", " 1" and "1_0"


class BadEventId(ProtocolError):
    """An event's id is not the hash of its content: it was altered or forged."""

    reason = "bad_id"


class Expired(ProtocolError):
    """An event's NIP-40 expiration has passed."""

    reason = "expired"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """A Nostr event as it travels (hex strings, as in the JSON). Build one with `sign_event`;
    read one with `parse_event` then `verify_event`."""

    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: tuple[tuple[str, ...], ...]
    content: str
    sig: str

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON object (what goes into `["EVENT", …]`)."""
        return {
            "id": self.id,
            "pubkey": self.pubkey,
            "created_at": self.created_at,
            "kind": self.kind,
            "tags": [list(t) for t in self.tags],
            "content": self.content,
            "sig": self.sig,
        }

    def tag_values(self, name: str) -> list[str]:
        """The first value of every tag named `name`, in order."""
        return [t[1] for t in self.tags if len(t) >= 2 and t[0] == name]


def serialize(
    pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str
) -> bytes:
    """The bytes an event's id hashes (see the module docstring).

    Raises:
        Malformed: a string holds a lone surrogate, which has no UTF-8 form.
    """
    body = [0, pubkey, created_at, kind, [list(t) for t in tags], content]
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise Malformed("event text is not valid Unicode (lone surrogate)") from None


def event_id(
    pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str
) -> str:
    """The hex id of an event with these fields."""
    return hashlib.sha256(serialize(pubkey, created_at, kind, tags, content)).hexdigest()


def public_key(secret: bytes) -> str:
    """The hex x-only public key of a 32-byte secp256k1 secret."""
    return bytes(PrivateKey(secret).public_key_xonly.format()).hex()


def sign_event(
    secret: bytes,
    *,
    created_at: int,
    kind: int,
    tags: Iterable[Sequence[str]],
    content: str,
    aux: bytes,
) -> Event:
    """A signed event. `aux` is 32 fresh random bytes for BIP-340 (the shell's `os.urandom`).

    Raises:
        UsageError: a bad secret, kind or `aux`.
    """
    if len(aux) != 32:
        raise UsageError("BIP-340 auxiliary randomness is 32 bytes")
    if not 0 <= kind <= MAX_KIND:
        raise UsageError(f"an event kind is 0..{MAX_KIND}")
    try:
        key = PrivateKey(secret)
    except ValueError as exc:
        raise UsageError(f"bad Nostr secret: {exc}") from None
    tag_tuple = tuple(tuple(t) for t in tags)
    pubkey = bytes(key.public_key_xonly.format()).hex()
    ident = event_id(pubkey, created_at, kind, tag_tuple, content)
    sig = key.sign_schnorr(bytes.fromhex(ident), aux).hex()
    return Event(
        id=ident,
        pubkey=pubkey,
        created_at=created_at,
        kind=kind,
        tags=tag_tuple,
        content=content,
        sig=sig,
    )


def _hex(value: Any, length: int, what: str) -> str:
    if not isinstance(value, str) or len(value) != length or not _HEX.issuperset(value):
        raise Malformed(f"event {what}: expected {length} lowercase hex digits")
    return value


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Malformed(f"event {what}: expected an integer in {low}..{high}")
    return value


def parse_event(obj: Any, *, kinds: range | None = None) -> Event:
    """The shape of an event from JSON, checked; neither id nor signature is checked yet.

    Raises:
        Malformed: a field is missing, extra, or of the wrong type or range, or the kind is not
            in `kinds`.
    """
    if not isinstance(obj, dict):
        raise Malformed("an event is a JSON object")
    fields = {"id", "pubkey", "created_at", "kind", "tags", "content", "sig"}
    if set(obj) != fields:
        raise Malformed(f"event fields: expected {sorted(fields)}")
    kind = _int(obj["kind"], "kind", 0, MAX_KIND)
    if kinds is not None and kind not in kinds:
        raise Malformed(f"event kind {kind} is not one this node reads")
    tags = obj["tags"]
    if not isinstance(tags, list) or len(tags) > MAX_TAGS:
        raise Malformed(f"event tags: expected a list of at most {MAX_TAGS}")
    for tag in tags:
        if not isinstance(tag, list) or not tag or not all(isinstance(v, str) for v in tag):
            raise Malformed("event tag: expected a non-empty list of strings")
    if not isinstance(obj["content"], str):
        raise Malformed("event content: expected a string")
    return Event(
        id=_hex(obj["id"], 64, "id"),
        pubkey=_hex(obj["pubkey"], 64, "pubkey"),
        created_at=_int(obj["created_at"], "created_at", 0, 2**53 - 1),
        kind=kind,
        tags=tuple(tuple(t) for t in tags),
        content=obj["content"],
        sig=_hex(obj["sig"], 128, "sig"),
    )


def verify_event(event: Event) -> None:
    """Check that the id is the hash of the event and the signature is the pubkey's.

    Raises:
        BadEventId: the id does not match (checked first: it is cheaper).
        BadSignature: the signature does not verify, or the pubkey is not on the curve.
        Malformed: the text holds a lone surrogate.
    """
    expected = event_id(event.pubkey, event.created_at, event.kind, event.tags, event.content)
    if expected != event.id:
        raise BadEventId("event id does not match its content")
    try:
        ok = PublicKeyXOnly(bytes.fromhex(event.pubkey)).verify(
            bytes.fromhex(event.sig), bytes.fromhex(event.id)
        )
    except ValueError:
        ok = False
    if not ok:
        raise BadSignature("event signature does not verify")


def expiration(event: Event) -> int | None:
    """The NIP-40 expiration (unix seconds) of an event, or None. A malformed value counts as
    already expired (0): an event that cannot say when it dies is not kept."""
    values = event.tag_values("expiration")
    if not values:
        return None
    return int(values[0]) if _DIGITS.fullmatch(values[0]) else 0


def check_fresh(event: Event, now: float) -> None:
    """Raise `Expired` if the event's NIP-40 expiration is at or before `now`."""
    expires = expiration(event)
    if expires is not None and expires <= now:
        raise Expired(f"event expired at {expires}")
