"""Which replica a sender picks for `kai://svc/NAME`: path first, then the service's strategy.

A sender holds one `Balancer`; for each message it calls `pick` with the service's replicas as it
sees them (readiness and load from telemetry, path from its routing table), then `begin`/`end`
around the request so it knows its own in-flight counts. The balancer reads no clock and draws no
randomness of its own: a seeded `random.Random` (or anything with `random()`) is passed in.

1. **Never an unready replica.** Replicas that are not ready, or excluded (the one that just
   failed, for the retry), are not candidates. None left: `NoReplica` says why — "none placed",
   "none ready" or "none reachable".
2. **Path.** Candidates are grouped into tiers: a replica on this node, then replicas whose path
   crosses no radio interface, then radio paths; within each, fewer hops first. The best tier with
   a replica below `saturation` own in-flight requests serves. The issue's order is "local, fewer
   hops, fast interface over radio" with the goal "a LoRa hop is never spent when a LAN replica can
   answer"; the two disagree for a 1-hop radio replica against a 2-hop LAN one, and we keep the
   goal: radio ranks before hop count.
3. **Strategy**, within the tier:
   - `round_robin`: a cursor per service over the tier's replicas in a stable order.
   - `least_connections`: Envoy's `least_request` with the default `choice_count` 2, as
     `LeastRequestLoadBalancer::unweightedHostPickNChoices` (envoy
     source/extensions/load_balancing_policies/least_request/least_request_lb.cc): draw two
     replicas uniformly *with replacement*, keep the first unless the second has strictly fewer
     active requests. Active requests are the sender's own in-flight counts (Envoy's `rq_active`
     is per Envoy instance, i.e. local too). Beyond Envoy: where the own counts tie, the replica's
     reported load (telemetry in-flight) breaks the tie, so a sender that rarely sends still
     avoids a replica others keep busy.
   - `weighted`: weight = the replica's advertised capacity, scheduled Earliest Deadline First as
     Envoy's `EdfScheduler` (source/common/upstream/edf_scheduler.h): each entry's deadline is
     `current_time + 1 / weight`, the earliest deadline is picked (ties FIFO by insertion order),
     `current_time` advances to it and the entry is re-added. The schedule is rebuilt when the
     set of replicas or their weights change.
4. **Retry once** elsewhere: `pick(..., exclude={failed})`; the message keeps its `message_id`, so
   a receiver that did get the first attempt refuses the copy as a replay.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kai_mesh.core.errors import UsageError
from kai_mesh.core.orchestration.manifest import Strategy

ReplicaKey = tuple[bytes, int]  # (node id, replica number)

CHOICE_COUNT = 2  # Envoy's default for least_request
DEFAULT_SATURATION = 64
MIN_WEIGHT = 1e-3  # a replica advertising no capacity still gets a trickle, never a crash


class RandomSource(Protocol):
    """What the balancer needs of `random.Random`: a float in [0, 1)."""

    def random(self) -> float: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Replica:
    """A replica as one sender sees it. `hops`: None when no path is known; `radio`: the path
    crosses a radio (LoRa-like) interface; `weight`: advertised capacity (> 0); `load`: in-flight
    requests its node reports."""

    node: bytes
    replica: int
    ready: bool = True
    local: bool = False
    hops: int | None = 1
    radio: bool = False
    weight: float = 1.0
    load: int = 0

    @property
    def key(self) -> ReplicaKey:
        return (self.node, self.replica)

    @property
    def reachable(self) -> bool:
        return self.local or self.hops is not None


@dataclass(frozen=True, slots=True)
class NoReplica:
    """No replica can take the message. `reason`: "none placed", "none ready" or
    "none reachable"."""

    service: str
    reason: str

    def __str__(self) -> str:
        return f"service {self.service!r}: {self.reason}"


def path_tier(r: Replica) -> tuple[int, int, int]:
    """Smaller is cheaper: local, then no radio on the path, then fewer hops."""
    if r.local:
        return (0, 0, 0)
    return (1, 1 if r.radio else 0, r.hops if r.hops is not None else 1 << 30)


class EdfScheduler:
    """Envoy's EdfScheduler (source/common/upstream/edf_scheduler.h): weighted round robin with
    float weights, O(log n) per pick."""

    def __init__(self, weights: Mapping[ReplicaKey, float]) -> None:
        self._now = 0.0
        self._order = 0
        self._heap: list[tuple[float, int, ReplicaKey]] = []
        self._weights = dict(weights)
        for key in sorted(weights):
            self._add(key)

    @property
    def weights(self) -> Mapping[ReplicaKey, float]:
        return self._weights

    def _add(self, key: ReplicaKey) -> None:
        weight = self._weights[key]
        if not weight > 0:
            raise UsageError("EDF weights must be positive")
        heapq.heappush(self._heap, (self._now + 1.0 / weight, self._order, key))
        self._order += 1

    def pick(self) -> ReplicaKey | None:
        """The entry with the earliest deadline, re-added with its next deadline."""
        if not self._heap:
            return None
        deadline, _, key = heapq.heappop(self._heap)
        self._now = deadline
        self._add(key)
        return key


@dataclass
class _ServiceState:
    cursor: int = 0
    edf: EdfScheduler | None = None
    edf_members: tuple[ReplicaKey, ...] = ()


@dataclass
class Balancer:
    """One sender's balancing state: own in-flight counts, round-robin cursors, EDF schedules."""

    saturation: int = DEFAULT_SATURATION
    in_flight: dict[ReplicaKey, int] = field(default_factory=dict)
    _services: dict[str, _ServiceState] = field(default_factory=dict)

    def begin(self, key: ReplicaKey) -> None:
        """A request to `key` left this node."""
        self.in_flight[key] = self.in_flight.get(key, 0) + 1

    def end(self, key: ReplicaKey) -> None:
        """The request to `key` was answered, failed or timed out."""
        left = self.in_flight.get(key, 0) - 1
        if left > 0:
            self.in_flight[key] = left
        else:
            self.in_flight.pop(key, None)

    def pick(
        self,
        service: str,
        strategy: Strategy,
        replicas: Iterable[Replica],
        rng: RandomSource,
        exclude: Iterable[ReplicaKey] = (),
    ) -> Replica | NoReplica:
        """The replica for the next message (see the module docstring)."""
        everyone = list(replicas)
        if not everyone:
            return NoReplica(service, "none placed")
        skip = set(exclude)
        ready = [r for r in everyone if r.ready and r.key not in skip]
        if not ready:
            return NoReplica(service, "none ready")
        reachable = [r for r in ready if r.reachable]
        if not reachable:
            return NoReplica(service, "none reachable")
        tier = self._tier(reachable)
        state = self._services.setdefault(service, _ServiceState())
        if strategy == "least_connections":
            return self._p2c(tier, rng)
        if strategy == "weighted":
            return self._weighted(state, tier)
        return self._round_robin(state, tier)

    def retry(
        self,
        service: str,
        strategy: Strategy,
        replicas: Iterable[Replica],
        rng: RandomSource,
        failed: ReplicaKey,
    ) -> Replica | NoReplica:
        """The one retry: any ready replica but the one that failed."""
        return self.pick(service, strategy, replicas, rng, exclude=(failed,))

    def _tier(self, candidates: Sequence[Replica]) -> list[Replica]:
        tiers: dict[tuple[int, int, int], list[Replica]] = {}
        for r in candidates:
            tiers.setdefault(path_tier(r), []).append(r)
        ordered = [sorted(tiers[t], key=lambda r: r.key) for t in sorted(tiers)]
        for group in ordered:
            if any(self.in_flight.get(r.key, 0) < self.saturation for r in group):
                return group
        return ordered[0]  # everything is saturated: the cheapest path still

    def _round_robin(self, state: _ServiceState, tier: list[Replica]) -> Replica:
        choice = tier[state.cursor % len(tier)]
        state.cursor += 1
        return choice

    def _p2c(self, tier: list[Replica], rng: RandomSource) -> Replica:
        # Envoy unweightedHostPickNChoices: samples with replacement; the first sample stands
        # unless a later one has strictly fewer active requests.
        best: Replica | None = None
        for _ in range(CHOICE_COUNT):
            sample = tier[min(int(rng.random() * len(tier)), len(tier) - 1)]
            if best is None or self._active(sample) < self._active(best):
                best = sample
        assert best is not None
        return best

    def _active(self, r: Replica) -> tuple[int, int]:
        return (self.in_flight.get(r.key, 0), r.load)

    def _weighted(self, state: _ServiceState, tier: list[Replica]) -> Replica:
        members = tuple(r.key for r in tier)
        weights = {r.key: max(r.weight, MIN_WEIGHT) for r in tier}
        if state.edf is None or state.edf_members != members or state.edf.weights != weights:
            state.edf = EdfScheduler(weights)
            state.edf_members = members
        key = state.edf.pick()
        return next(r for r in tier if r.key == key)
