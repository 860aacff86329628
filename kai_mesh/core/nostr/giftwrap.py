"""NIP-59 gift wrap: relays see neither who sent a message nor when.

Three layers, as the NIP has them (and nostr-tools' `nip59`):

- the **rumor**: the event we mean (kind, tags, content), with the sender's pubkey and an id
  but **no signature** — a rumor that leaks proves nothing about its author;
- the **seal** (kind 13): the rumor's JSON, NIP-44 encrypted from the sender to the recipient,
  signed by the sender, no tags, its `created_at` set back by a random amount;
- the **wrap** (kind 1059, or 21059 for an ephemeral one): the seal's JSON, NIP-44 encrypted
  from a **one-time key** to the recipient, signed by that key, tagged `["p", recipient]` (and
  whatever public tags the caller adds, e.g. NIP-40 `expiration`), its `created_at` set back too.

A relay sees a one-time key, the recipient and a blurred time. `unwrap` checks the chain: the
wrap's signature (the caller's `verify_event`, before its seen-id LRU like any event), the
seal's signature, and that the rumor's pubkey is the seal's signer and its id its own hash;
what comes back is the sender (the seal's key) and the rumor. What it costs is measured by
`bench/giftwrap.py`: two more signatures, two more NIP-44 layers, and the JSON of two events
inside the content.

`backdate` is how far back `created_at` may be set: the NIP's two days for stored wraps; a few
seconds for ephemeral ones (strfry refuses ephemeral events older than 60 s — LAB.md). Pure:
time and randomness come in as arguments.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kai_mesh.core.errors import Malformed, ProtocolError
from kai_mesh.core.nostr import nip44
from kai_mesh.core.nostr.chunks import EVENT_OVERHEAD, nip44_chars
from kai_mesh.core.nostr.event import (
    Event,
    event_id,
    parse_event,
    public_key,
    sign_event,
    verify_event,
)

KIND_SEAL = 13
KIND_WRAP = 1059
KIND_EPHEMERAL_WRAP = 21059
TWO_DAYS = 2 * 24 * 3600
#: A sealed rumor's JSON is NIP-44 plaintext twice over: the inner layer must leave room.
MAX_LAYER = nip44.MAX_PLAINTEXT


class Unsealed(ProtocolError):
    """A gift wrap whose seal or rumor does not check out."""

    reason = "bad_seal"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rumor:
    """An unsigned event (NIP-59's rumor), as unwrapped."""

    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: tuple[tuple[str, ...], ...]
    content: str


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def wrap(
    *,
    sender_secret: bytes,
    recipient: str,
    kind: int,
    tags: Sequence[Sequence[str]],
    content: str,
    now: int,
    randbytes: Callable[[int], bytes],
    wrap_kind: int = KIND_WRAP,
    backdate: int = TWO_DAYS,
    public_tags: Sequence[Sequence[str]] = (),
) -> Event:
    """The gift wrap of a rumor (kind, tags, content) from `sender_secret` to `recipient` (hex
    x-only key). `randbytes` gives the one-time key, the NIP-44 nonces, BIP-340's aux and the
    blur of the times.

    Raises:
        UsageError: a bad key, or a rumor too large for two NIP-44 layers.
    """
    sender = public_key(sender_secret)
    tag_tuple = tuple(tuple(t) for t in tags)
    rumor = {
        "id": event_id(sender, now, kind, tag_tuple, content),
        "pubkey": sender,
        "created_at": now,
        "kind": kind,
        "tags": [list(t) for t in tag_tuple],
        "content": content,
    }
    peer = bytes.fromhex(recipient)

    def blurred() -> int:
        return now - int.from_bytes(randbytes(4), "big") % (backdate + 1)

    sealed = nip44.encrypt(
        _dumps(rumor), nip44.conversation_key(sender_secret, peer), randbytes(32)
    )
    seal = sign_event(
        sender_secret, created_at=blurred(), kind=KIND_SEAL, tags=(), content=sealed,
        aux=randbytes(32),
    )  # fmt: skip
    one_time = _one_time_key(randbytes)
    wrapped = nip44.encrypt(
        _dumps(seal.to_json()), nip44.conversation_key(one_time, peer), randbytes(32)
    )
    return sign_event(
        one_time,
        created_at=blurred(),
        kind=wrap_kind,
        tags=[["p", recipient], *public_tags],
        content=wrapped,
        aux=randbytes(32),
    )


def _one_time_key(randbytes: Callable[[int], bytes]) -> bytes:
    while True:  # a random 32 bytes is a valid secp256k1 secret but for ~2^-128 of them
        candidate = randbytes(32)
        try:
            public_key(candidate)
        except ValueError:
            continue
        return candidate


def unwrap(event: Event, recipient_secret: bytes) -> tuple[str, Rumor]:
    """(sender's pubkey, rumor) of a gift wrap whose own signature the caller verified.

    Raises:
        ProtocolError: undecryptable layers (`undecryptable`), a malformed or badly signed seal
            (`malformed`, `bad_id`, `bad_signature`), a rumor that is not its seal signer's
            or whose id is not its hash (`bad_seal`).
    """
    conv = nip44.conversation_key(recipient_secret, bytes.fromhex(event.pubkey))
    seal = parse_event(_loads(nip44.decrypt(event.content, conv)))
    if seal.kind != KIND_SEAL:
        raise Unsealed(f"a gift wrap holds kind {seal.kind}, not a seal")
    verify_event(seal)
    inner = nip44.conversation_key(recipient_secret, bytes.fromhex(seal.pubkey))
    raw = _loads(nip44.decrypt(seal.content, inner))
    if not isinstance(raw, dict) or "sig" in raw:
        raise Unsealed("a rumor is an unsigned event")
    shaped = parse_event({**raw, "sig": "0" * 128})  # the shape of an event, sig aside
    if shaped.pubkey != seal.pubkey:
        raise Unsealed("the rumor's author is not the seal's signer")
    if event_id(shaped.pubkey, shaped.created_at, shaped.kind, shaped.tags, shaped.content) != (
        shaped.id
    ):
        raise Unsealed("the rumor's id is not its hash")
    rumor = Rumor(
        id=shaped.id,
        pubkey=shaped.pubkey,
        created_at=shaped.created_at,
        kind=shaped.kind,
        tags=shaped.tags,
        content=shaped.content,
    )
    return seal.pubkey, rumor


#: A rumor's or seal's JSON around its content: id, pubkey, sig, kind, times, a few short
#: tags and punctuation come to ~420 bytes; the rest is room.
LAYER_OVERHEAD = 600


def wrapped_chars(plaintext_len: int) -> int:
    """Characters of a wrap's content for a frame of `plaintext_len` bytes (base64 in the
    rumor, the rumor's JSON in a NIP-44 seal, the seal's JSON in the NIP-44 wrap)."""
    rumor = 4 * ((plaintext_len + 2) // 3) + LAYER_OVERHEAD
    seal = nip44_chars(rumor) + LAYER_OVERHEAD
    return nip44_chars(seal) if seal <= nip44.MAX_PLAINTEXT else 1 << 30


def max_plaintext(message_limit: int) -> int:
    """The largest frame whose gift wrap fits a relay message of `message_limit` bytes (the
    bisection `chunks.max_plaintext` does for a plain event)."""
    room = message_limit - EVENT_OVERHEAD
    low, high = 0, nip44.MAX_PLAINTEXT
    while low < high:
        mid = (low + high + 1) // 2
        if wrapped_chars(mid) <= room:
            low = mid
        else:
            high = mid - 1
    return low


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise Malformed("a gift wrap layer is not JSON") from None
