"""When to publish this node's sync digests where no heartbeat carries them (Nostr relays).

Heartbeats and announces carry the state and governance digests to neighbours; peers reached
only through relays hear neither, so a transport that carries the digests itself publishes them
when they change and now and then besides. The timing, as a machine (`now` in, `get_timer`,
`handle_timer` in the manner of aioquic):

- `changed()`: the digests changed. Published at once when `min_gap` has passed since the
  last publication, else once the gap has passed (changes within the gap are one publication:
  a burst of writes costs one event, not one per write).
- Every `keepalive` seconds without a change, published anyway: a peer that missed one (an
  ephemeral event lost while it was away) hears the digests again, and a digest that differs
  starts anti-entropy (`core.sync.anti_entropy`).

`handle_timer(now)` returns True when the caller should publish now.
"""

from __future__ import annotations

from kai_mesh.core.errors import UsageError


class Beacon:
    """See the module docstring."""

    def __init__(self, *, min_gap: float = 1.0, keepalive: float = 30.0) -> None:
        if min_gap < 0 or keepalive <= 0:
            raise UsageError("beacon: min_gap >= 0 and keepalive > 0 seconds")
        self.min_gap = min_gap
        self.keepalive = keepalive
        self._last: float | None = None  # when we last published
        self._pending = True  # the first publication is due at once

    def changed(self) -> None:
        """The digests changed: `get_timer` moves to when they may go (now, or after the gap)."""
        self._pending = True

    def get_timer(self) -> float | None:
        if self._last is None:
            return 0.0
        if self._pending:
            return self._last + self.min_gap
        return self._last + self.keepalive

    def handle_timer(self, now: float) -> bool:
        due = self.get_timer()
        if due is None or now < due:
            return False
        self._last, self._pending = now, False
        return True
