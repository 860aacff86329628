"""When to try a message that must arrive again, and when to leave it with store-and-forward.

Exponential backoff with jitter, as every retrying client should (a mesh that heals must not see
every node retry in the same second): attempt `a` (1-based) waits
`min(cap, base * 2**(a - 1)) * (1 - jitter * u)` for `u` in [0, 1) that the caller draws, so the
core stays free of randomness. The cap is what bounds delivery after a partition heals; the
runtime also retries at once when it hears from the recipient again, so the cap matters only when
it does not (a one-way partition, a silent peer).

A message the recipient has not acknowledged `handoff_after` seconds after it was committed is
also handed to a store-and-forward transport (LXMF propagation), once; direct retries go on
(de-duplication at the recipient makes the two paths harmless together).
"""

from __future__ import annotations

from dataclasses import dataclass

from kai_mesh.core.errors import UsageError


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    base: float = 2.0
    cap: float = 15.0
    jitter: float = 0.25
    handoff_after: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise UsageError("retry base must be positive and at most the cap")
        if not 0 <= self.jitter < 1:
            raise UsageError("retry jitter must be in [0, 1)")
        if self.handoff_after < 0:
            raise UsageError("handoff_after must not be negative")

    def delay(self, attempts: int, u: float) -> float:
        """Seconds to wait after the `attempts`-th attempt went unacknowledged."""
        if attempts < 1 or not 0 <= u < 1:
            raise UsageError("attempts counts from 1 and u is in [0, 1)")
        # 2**attempts overflows a float long after the cap: clamp the exponent first.
        raw = self.base * 2.0 ** min(attempts - 1, 64)
        return min(self.cap, raw) * (1 - self.jitter * u)

    def handoff_due(self, committed_at: float, now: float) -> bool:
        return now - committed_at >= self.handoff_after
