"""Nostr relays as a kai-mesh transport: a relay pool over trio-websocket (`_relay`, `_pool`,
with rust-nostr's timing in `_policy`) and the transport on top (`transport`)."""

from transports.nostr.transport import KIND_FRAME, KIND_HELLO, KIND_STORED, NostrTransport

__all__ = ["KIND_FRAME", "KIND_HELLO", "KIND_STORED", "NostrTransport"]
