"""Nostr in the sans-IO core: NIP-44 v2 encryption and NIP-01 events (ids, Schnorr signatures,
a strict decoder). No sockets here: the relay pool lives in `transports/nostr/`."""
