"""The relay pool's timing and health rules, as pure functions of plain numbers (tested so).

Copied from rust-nostr's relay pool (`nostr-relay-pool`, `relay/constants.rs` and
`relay/inner.rs: calculate_retry_interval`): the wait before reconnecting is
10 s × (1 + (attempts − successes) // 2), capped at 60 s *before* a uniform jitter of −3..+3 s is
added (after the cap, so relays that all failed at once do not reconnect in step); a relay whose
connection success rate falls below 0.9 (after at least one attempt) is demoted; a ping every
55 s. `rate-limited:` answers back off by doubling from 1 s to 60 s, and reset on the next
accepted event (nostr-tools backs off too; the numbers are ours).
"""

from __future__ import annotations

from dataclasses import dataclass

RETRY_INTERVAL = 10.0
MAX_RETRY_INTERVAL = 60.0
JITTER = 3.0
MIN_ATTEMPTS = 1
MIN_SUCCESS_RATE = 0.90
PING_INTERVAL = 55.0
RATE_LIMIT_FIRST = 1.0
RATE_LIMIT_MAX = 60.0
SEEN_IDS = 35_000  # rust-nostr's LRU of seen event ids


def retry_interval(attempts: int, successes: int, jitter: float) -> float:
    """Seconds before the next connection attempt; `jitter` is a uniform draw in -1..1."""
    diff = max(0, attempts - successes)
    interval = min(RETRY_INTERVAL * (1 + diff // 2), MAX_RETRY_INTERVAL)
    return max(0.0, interval + JITTER * max(-1.0, min(1.0, jitter)))


def success_rate(attempts: int, successes: int) -> float:
    """Connection successes per attempt; 1.0 before the first attempt."""
    return 1.0 if attempts == 0 else successes / attempts


def demoted(attempts: int, successes: int) -> bool:
    """Whether a relay's record puts it behind the others (rust-nostr's MIN_SUCCESS_RATE)."""
    return attempts >= MIN_ATTEMPTS and success_rate(attempts, successes) < MIN_SUCCESS_RATE


@dataclass(slots=True)
class RateLimitBackoff:
    """What a relay's `rate-limited:` answers cost: `until` is when it may be written to again."""

    until: float = 0.0
    delay: float = 0.0

    def limited(self, now: float) -> None:
        self.delay = RATE_LIMIT_FIRST if self.delay == 0 else min(self.delay * 2, RATE_LIMIT_MAX)
        self.until = now + self.delay

    def accepted(self) -> None:
        self.delay = 0.0

    def wait(self, now: float) -> float:
        return max(0.0, self.until - now)
