"""Small pieces of the Nostr transport's wire: the digest event's plaintext, relay reports."""

from __future__ import annotations

from typing import Any

from kai_mesh.core.codec import unpack_exact
from kai_mesh.core.errors import Malformed
from transports.nostr._relay import Relay


def is_event_id(ref: str) -> bool:
    return len(ref) == 64 and all(c in "0123456789abcdef" for c in ref)


MAX_DIGESTS = 8  # slots a digest event may carry (state and governance use two)


def decode_digests(body: bytes) -> dict[int, bytes]:
    """A digest event's plaintext: msgpack {slot: digest}, small ints to short bytes.

    Raises:
        ProtocolError: anything else.
    """
    value = unpack_exact(body, 512)
    if not isinstance(value, dict) or len(value) > MAX_DIGESTS:
        raise Malformed("digests: expected a small map")
    out: dict[int, bytes] = {}
    for slot, value_digest in value.items():
        if type(slot) is not int or not 0 <= slot < 256:
            raise Malformed("digests: a slot is a small int")
        if not isinstance(value_digest, bytes) or not 1 <= len(value_digest) <= 32:
            raise Malformed("digests: a digest is 1..32 bytes")
        out[slot] = value_digest
    return out


def relay_state(relay: Relay) -> dict[str, Any]:
    """One relay's state for `kai-mesh status` and the bench."""
    stats = relay.stats
    return {
        "url": relay.url,
        "read": relay.read,
        "write": relay.write,
        "connected": relay.is_connected,
        "demoted": relay.demoted,
        "attempts": stats.attempts,
        "successes": stats.successes,
        "latency": stats.latency,
        "max_message_length": relay.max_message_length,
        "sent": stats.sent,
        "accepted": stats.accepted,
        "received": stats.received,
        "bytes_sent": stats.bytes_sent,
        "bytes_received": stats.bytes_received,
        "refused": dict(stats.refused),
    }
