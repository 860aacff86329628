"""The failure detector's tuning and the formulas that scale it to a link
(`core.liveness.membership`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kai_mesh.core.errors import UsageError


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectorConfig:
    """Tuning, and the formulas that scale it to a link.

    With `air = probe_bytes * 8 / bitrate` (0 when the bitrate is unknown) and `rtt` the link's
    round-trip time (0 when unknown)::

        probe_timeout  = max(base_timeout, timeout_factor * (2 * air + rtt))
        probe_interval = max(base_interval, period_factor * probe_timeout, 2 * air / airtime_share)

    A direct probe costs two frames (probe, ack), hence `2 * air`; `period_factor >= 2` leaves the
    indirect round (four hops, plus the via's own probe timeout) room inside the period; the last
    term holds the two frames a node sends per period on average (its probe, one ack) to
    `airtime_share` of the link. Both are multiplied by `1 + local_health`. The suspicion timeout,
    for `n` members (this node included) and the suspect's unscaled `probe_interval`::

        min = suspicion_mult * max(1, log10(n)) * probe_interval,  max = suspicion_max_mult * min
        after c confirmations: max - (max - min) * log(c + 1) / log(k + 1), at least min,
        with k = min(confirmations_expected, n - 2) (k < 1: min straight away),

    and stretched, like the probe timeout, by `1 + local_health` at the moment suspicion begins.

    Raises `UsageError` on construction when a value is out of range.
    """

    base_interval: float = 1.0
    base_timeout: float = 0.3
    probe_bytes: int = 100
    timeout_factor: float = 3.0
    period_factor: float = 3.0
    airtime_share: float = 0.01
    indirect_probes: int = 3
    max_local_health: int = 8
    suspicion_mult: float = 4.0
    suspicion_max_mult: float = 6.0
    confirmations_expected: int = 3

    def __post_init__(self) -> None:
        positive = ("base_interval", "base_timeout", "probe_bytes", "timeout_factor")
        for name in (*positive, "suspicion_mult"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be positive")
        if self.period_factor < 2:
            raise UsageError("period_factor must be at least 2 (the indirect round needs room)")
        if not 0 < self.airtime_share <= 1:
            raise UsageError("airtime_share must be in (0, 1]")
        if self.suspicion_max_mult < 1:
            raise UsageError("suspicion_max_mult must be at least 1")
        for name in ("indirect_probes", "max_local_health", "confirmations_expected"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must not be negative")

    def frame_airtime(self, bitrate: int | None) -> float:
        return 0.0 if not bitrate else self.probe_bytes * 8 / bitrate

    def probe_timeout(self, link_rtt: float | None, bitrate: int | None) -> float:
        """How long to wait for a direct ack on this link, at full local health."""
        rtt = link_rtt or 0.0
        return max(self.base_timeout, self.timeout_factor * (2 * self.frame_airtime(bitrate) + rtt))

    def probe_interval(self, link_rtt: float | None, bitrate: int | None) -> float:
        """The protocol period when probing a peer over this link, at full local health."""
        air = self.frame_airtime(bitrate)
        return max(
            self.base_interval,
            self.period_factor * self.probe_timeout(link_rtt, bitrate),
            2 * air / self.airtime_share,
        )

    def suspicion_bounds(self, members: int, interval: float) -> tuple[float, float]:
        low = self.suspicion_mult * max(1.0, math.log10(max(1, members))) * interval
        return low, low * self.suspicion_max_mult

    def suspicion_timeout(self, members: int, interval: float, confirmations: int) -> float:
        low, high = self.suspicion_bounds(members, interval)
        k = min(self.confirmations_expected, members - 2)
        if k < 1:
            return low
        return max(low, high - (high - low) * math.log(confirmations + 1) / math.log(k + 1))

    def detection_bound(
        self, *, members: int, link_rtt: float | None, bitrate: int | None, local_health: int = 0
    ) -> float:
        """Worst time from a peer's death to a live member declaring it failed, all links alike.

        The dead peer is probed again within two rounds of the shuffled round-robin (it may be
        first in one round and last in the next), `2 * (members - 1)` periods; that probe's period
        ends one period later with a suspicion; the suspicion lasts at most its `max`. Periods and
        suspicions are stretched by `1 + local_health` (the highest the health reaches meanwhile).
        """
        period = self.probe_interval(link_rtt, bitrate)
        _, high = self.suspicion_bounds(members, period)
        return ((2 * (members - 1) + 1) * period + high) * (1 + local_health)
