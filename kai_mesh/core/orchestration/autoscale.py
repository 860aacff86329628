"""Autoscaling: the Kubernetes HPA's algorithm, and KEDA's scale to zero and back (services.md).

Pure functions of (spec, replica samples, current count, history, now) plus `Autoscaler`, a small
machine that keeps the HPA controller's two pieces of memory (the recommendation log and the scale
events) with `now` always passed in. No clock, no I/O.

**Anchors, copied.** kubernetes/kubernetes `pkg/controller/podautoscaler/`:

- `replica_calculator.go`: `calcPlainMetricReplicas` (`replicas_for_average`),
  `GetResourceReplicas` (`replicas_for_utilization`), `GetExternalPerPodMetricReplicas`
  (`replicas_for_total`) and `GetExternalMetricReplicas`/`getUsageRatioReplicaCount`
  (`replicas_for_value`). Ratio = current / target; within the tolerance (|1 - ratio| <= 0.1)
  nothing changes; else desired = ceil(ratio x ready). With missing or unready replicas the ratio
  is computed again with missing ones at 100 % of target on a scale-down and 0 % on a scale-up,
  unready ones at 0 % on a scale-up only; if that second ratio is within tolerance or reverses the
  direction, nothing changes.
- `horizontal.go`: `computeReplicasForMetrics` (several metrics -> the max; if every metric is
  invalid, or some are and the rest would scale down, no change), `reconcileAutoscaler` (outside
  [min, max] -> to the bound), `stabilizeRecommendationWithBehaviors` (the result is the current
  count pulled up to the min of the recommendations within the scale-up window and down to the max
  within the scale-down window), `convertDesiredReplicasWithBehaviorRate` with
  `calculateScaleUpLimitWithScalingRules` / `calculateScaleDownLimitWithBehaviors` and
  `getReplicasChangePerPeriod` (policies per period, select max | min | disabled, measured from
  the count at the start of each period), and the API defaults of
  `pkg/apis/autoscaling/v2/defaults.go` (`GenerateHPAScaleUpRules`/`...ScaleDownRules`): up
  window 0 s, 4 pods or 100 % per 15 s, select max; down window 300 s, 100 % per 15 s.

kedacore/keda `pkg/scaling/executor/scale_scaledobjects.go` (`RequestScale`, `scaleToZero`,
`scaleFromZero`) and the scalers' `IsActive` (value > `activationThreshold`): `keda_step`.

**Where we differ, on purpose.** (1) A replica that telemetry reports not ready is the HPA's
"ignored" pod for every metric (the HPA ignores unready pods for cpu only, and pending pods for
all): a kai-mesh replica that is not ready is not serving, so its load numbers say nothing.
(2) Values are floats, not milli-integers, so the HPA's integer truncation of the average
(`GetMetricUtilizationRatio`) and of the utilization percentage is not reproduced; every ported
test case gives the same answer. (3) Only the behaviour path exists (every kai-mesh autoscaler has
up/down rules, defaulted as the API does), so the legacy `normalizeDesiredReplicas` with its
`scaleUpLimitFactor` is not ported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

PolicyKind = Literal["pods", "percent"]
Select = Literal["max", "min", "disabled"]
MetricKind = Literal["average", "utilization", "total", "value"]

SELECTS: tuple[str, ...] = ("max", "min", "disabled")
METRIC_KINDS: tuple[str, ...] = ("average", "utilization", "total", "value")

DEFAULT_TOLERANCE = 0.1  # horizontal-pod-autoscaler-tolerance
DEFAULT_IDLE = 300.0  # KEDA's defaultCooldownPeriod
DEFAULT_ACTIVATION = 0.0  # KEDA's activationThreshold default


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingPolicy:
    """HPAScalingPolicy: at most `value` pods, or `value` percent, of change per `period` s."""

    kind: PolicyKind
    value: int
    period: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingRules:
    """HPAScalingRules for one direction."""

    window: float
    select: Select = "max"
    policies: tuple[ScalingPolicy, ...] = ()


DEFAULT_SCALE_UP = ScalingRules(
    window=0.0,
    policies=(
        ScalingPolicy(kind="pods", value=4, period=15.0),
        ScalingPolicy(kind="percent", value=100, period=15.0),
    ),
)
DEFAULT_SCALE_DOWN = ScalingRules(
    window=300.0, policies=(ScalingPolicy(kind="percent", value=100, period=15.0),)
)


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricTarget:
    """One metric and its target.

    `kind` "average": per-replica values, target average value (HPA Pods metric). "utilization":
    per-replica values over per-replica requests, target percent (HPA Resource utilization).
    "total": one service-wide value, target per replica (HPA External AverageValue), e.g. queue
    depth or requests/s. "value": one service-wide value, target for the whole (External Value).
    """

    name: str
    target: float
    kind: MetricKind = "average"


@dataclass(frozen=True, slots=True)
class ReplicaSample:
    """One replica as telemetry reports it: ready or not, and its value (None: missing)."""

    ready: bool = True
    value: float | None = None
    request: float = 1.0  # for "utilization": the replica's request of the resource


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoscaleSpec:
    """The manifest's `[autoscaling]` section (defaults: the HPA API's and KEDA's)."""

    metrics: tuple[MetricTarget, ...] = ()
    tolerance: float = DEFAULT_TOLERANCE
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN
    idle: float = DEFAULT_IDLE
    activation_threshold: float = DEFAULT_ACTIVATION


# --- replica_calculator.go ---------------------------------------------------------------------


def within(ratio: float, tolerance: float) -> bool:
    """The HPA's `math.Abs(1.0-usageRatio) <= tolerance`."""
    return abs(1.0 - ratio) <= tolerance


def _group(samples: Sequence[ReplicaSample]) -> tuple[list[int], list[int], list[int]]:
    """groupPods: (ready with a value, ignored = not ready, missing = ready without a value)."""
    ready, ignored, missing = [], [], []
    for i, s in enumerate(samples):
        if not s.ready:
            ignored.append(i)
        elif s.value is None:
            missing.append(i)
        else:
            ready.append(i)
    return ready, ignored, missing


def _rebalanced(
    current: int,
    ratio: float,
    ready_count: int,
    ignored: list[int],
    missing: list[int],
    tolerance: float,
    ratio_with: Callable[[float, bool], tuple[float, int]],
) -> int:
    """The common tail of GetResourceReplicas and calcPlainMetricReplicas."""
    rebalance_ignored = bool(ignored) and ratio > 1.0
    if not rebalance_ignored and not missing:
        if within(ratio, tolerance):
            return current
        return math.ceil(ratio * ready_count)
    new_ratio, counted = ratio_with(ratio, rebalance_ignored)
    if within(new_ratio, tolerance) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    new = math.ceil(new_ratio * counted)
    if (new_ratio < 1.0 and new > current) or (new_ratio > 1.0 and new < current):
        return current
    return int(new)


def replicas_for_average(
    current: int,
    target: float,
    samples: Sequence[ReplicaSample],
    tolerance: float = DEFAULT_TOLERANCE,
) -> int | None:
    """calcPlainMetricReplicas: None when no ready replica reported a value (the HPA's error)."""
    ready, ignored, missing = _group(samples)
    if not ready or target <= 0:
        return None
    values = {i: float(samples[i].value) for i in ready}  # type: ignore[arg-type]
    ratio = sum(values.values()) / len(values) / target

    def again(ratio: float, rebalance_ignored: bool) -> tuple[float, int]:
        m = dict(values)
        for i in missing:
            m[i] = target if ratio < 1.0 else 0.0
        if rebalance_ignored:
            for i in ignored:
                m[i] = 0.0
        return sum(m.values()) / len(m) / target, len(m)

    return _rebalanced(current, ratio, len(ready), ignored, missing, tolerance, again)


def replicas_for_utilization(
    current: int,
    target_percent: float,
    samples: Sequence[ReplicaSample],
    tolerance: float = DEFAULT_TOLERANCE,
) -> int | None:
    """GetResourceReplicas: utilization = sum(values) / sum(requests) of the counted replicas."""
    ready, ignored, missing = _group(samples)
    if not ready or target_percent <= 0:
        return None
    values = {i: float(samples[i].value) for i in ready}  # type: ignore[arg-type]

    def usage(m: dict[int, float]) -> float:
        requests = sum(samples[i].request for i in m)
        return (sum(m.values()) * 100.0 / requests) / target_percent if requests > 0 else 0.0

    ratio = usage(values)

    def again(ratio: float, rebalance_ignored: bool) -> tuple[float, int]:
        m = dict(values)
        for i in missing:
            if ratio < 1.0:
                m[i] = samples[i].request  # 100 % of its request
            elif ratio > 1.0:
                m[i] = 0.0
        if rebalance_ignored:
            for i in ignored:
                m[i] = 0.0
        return usage(m), len(m)

    return _rebalanced(current, ratio, len(ready), ignored, missing, tolerance, again)


def replicas_for_total(
    current: int, total: float, target_per_replica: float, tolerance: float = DEFAULT_TOLERANCE
) -> int | None:
    """GetExternalPerPodMetricReplicas: ratio = total / (target x current)."""
    if target_per_replica <= 0 or current <= 0:
        return None
    ratio = total / (target_per_replica * current)
    if within(ratio, tolerance):
        return current
    return math.ceil(total / target_per_replica)


def replicas_for_value(
    current: int, ready: int, value: float, target: float, tolerance: float = DEFAULT_TOLERANCE
) -> int | None:
    """GetExternalMetricReplicas / getUsageRatioReplicaCount: at zero, ceil(ratio)."""
    if target <= 0:
        return None
    ratio = value / target
    if current == 0:
        return math.ceil(ratio)
    if within(ratio, tolerance):
        return current
    return math.ceil(ratio * ready)


Reading = Sequence[ReplicaSample] | float | None


def replicas_for_metric(
    current: int, metric: MetricTarget, reading: Reading, tolerance: float = DEFAULT_TOLERANCE
) -> int | None:
    """One metric's proposal, or None if it is invalid (no data)."""
    if reading is None:
        return None
    if metric.kind in ("average", "utilization"):
        if isinstance(reading, float | int):
            return None
        fn = replicas_for_average if metric.kind == "average" else replicas_for_utilization
        return fn(current, metric.target, reading, tolerance)
    if not isinstance(reading, float | int):
        return None
    if metric.kind == "total":
        return replicas_for_total(current, float(reading), metric.target, tolerance)
    return replicas_for_value(current, current, float(reading), metric.target, tolerance)


def replicas_for_metrics(
    current: int,
    proposals: Iterable[int | None],
) -> int | None:
    """computeReplicasForMetrics: the max of the valid proposals; None (no change) when every
    metric is invalid, or some are and the valid ones would scale down."""
    props = list(proposals)
    valid = [p for p in props if p is not None]
    if not valid:
        return None
    best = max(valid)
    if len(valid) < len(props) and best < current:
        return None
    return best


# --- horizontal.go: stabilization and rate ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recommendation:
    replicas: int
    at: float


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    change: int  # replicas added (in scale_up_events) or removed (in scale_down_events), > 0
    at: float


def stabilize(
    current: int,
    desired: int,
    history: Sequence[Recommendation],
    now: float,
    up_window: float,
    down_window: float,
) -> int:
    """stabilizeRecommendationWithBehaviors (the new recommendation is part of both windows)."""
    up = down = desired
    up_cutoff, down_cutoff = now - up_window, now - down_window
    for rec in history:
        if rec.at > up_cutoff:
            up = min(up, rec.replicas)
        if rec.at > down_cutoff:
            down = max(down, rec.replicas)
    result = current
    result = max(result, up)
    return min(result, down)


def change_in_period(period: float, events: Iterable[ScaleEvent], now: float) -> int:
    """getReplicasChangePerPeriod: the change of the events after now - period."""
    cutoff = now - period
    return sum(e.change for e in events if e.at > cutoff)


def scale_up_limit(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now: float,
) -> int:
    """calculateScaleUpLimitWithScalingRules."""
    if rules.select == "disabled":
        return current
    pick = min if rules.select == "min" else max
    result: int | None = None
    for p in rules.policies:
        start = (
            current
            - change_in_period(p.period, up_events, now)
            + change_in_period(p.period, down_events, now)
        )
        # A percentage is rounded up, or a small one would never add a replica.
        up = start + p.value if p.kind == "pods" else math.ceil(start * (1 + p.value / 100))
        proposed = int(up)
        result = proposed if result is None else pick(result, proposed)
    # The HPA starts from MinInt32 / MaxInt32; with no policy the limit is that sentinel.
    return result if result is not None else (2**31 - 1 if pick is max else -(2**31))


def scale_down_limit(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now: float,
) -> int:
    """calculateScaleDownLimitWithBehaviors."""
    if rules.select == "disabled":
        return current
    pick = max if rules.select == "min" else min  # the least change is the highest count
    result: int | None = None
    for p in rules.policies:
        start = (
            current
            - change_in_period(p.period, up_events, now)
            + change_in_period(p.period, down_events, now)
        )
        # A percentage is truncated toward zero, as Go's int32(float64(...)).
        proposed = start - p.value if p.kind == "pods" else int(start * (1 - p.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return result if result is not None else (-(2**31) if pick is max else 2**31 - 1)


Condition = Literal[
    "DesiredWithinRange", "ScaleUpLimit", "TooManyReplicas", "ScaleDownLimit", "TooFewReplicas"
]


def limit_rate(
    current: int,
    desired: int,
    low: int,
    high: int,
    up: ScalingRules,
    down: ScalingRules,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    now: float,
) -> tuple[int, Condition]:
    """convertDesiredReplicasWithBehaviorRate: the policies' limit and the [min, max] bounds."""
    if desired > current:
        limit = max(scale_up_limit(current, up_events, down_events, up, now), current)
        if high > limit:
            allowed, why = limit, "ScaleUpLimit"
        else:
            allowed, why = high, "TooManyReplicas"
        if desired > allowed:
            return allowed, why  # type: ignore[return-value]
    elif desired < current:
        limit = min(scale_down_limit(current, up_events, down_events, down, now), current)
        if low < limit:
            allowed, why = limit, "ScaleDownLimit"
        else:
            allowed, why = low, "TooFewReplicas"
        if desired < allowed:
            return allowed, why  # type: ignore[return-value]
    return desired, "DesiredWithinRange"


# --- KEDA: activation, scale to zero and back ---------------------------------------------------


def is_active(value: float | None, activation_threshold: float) -> bool:
    """A KEDA scaler's IsActive: its value is above the activation threshold (strictly)."""
    return value is not None and value > activation_threshold


def keda_step(
    current: int,
    active: bool,
    last_active: float | None,
    now: float,
    low: int,
    idle: float,
) -> tuple[int | None, float | None]:
    """RequestScale: (the count to set, or None to leave it to the HPA; the new LastActiveTime).

    At zero and active: wake to max(min, 1). Inactive with replicas and min = 0: to zero once
    `idle` (cooldownPeriod) has passed since the last active time (at once if never active).
    Inactive below min: to min. Active with replicas: only the last active time moves."""
    if current == 0 and active:
        return max(low, 1), now
    if not active and current > 0 and low == 0:
        if last_active is None or last_active + idle < now:
            return 0, last_active
        return None, last_active
    if not active and current < low:
        return low, last_active
    if active:
        return None, now
    return None, last_active


# --- the machine --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What the owner should do: `replicas` (== current: nothing), and why."""

    replicas: int
    reason: str
    metric_replicas: int | None = None


@dataclass(slots=True)
class Autoscaler:
    """One service's autoscaler: HPA in [max(min, 1), max], KEDA for 0 <-> 1 when min = 0.

    `recommend(now, current, proposals, active)` decides; `scaled(now, before, after)` records a
    scale the owner carried out (storeScaleEvent). Both take `now`; nothing here reads a clock.
    History older than every window and period is dropped, as the HPA reuses "outdated" slots.
    """

    spec: AutoscaleSpec
    low: int
    high: int
    recommendations: list[Recommendation] = field(default_factory=list)
    up_events: list[ScaleEvent] = field(default_factory=list)
    down_events: list[ScaleEvent] = field(default_factory=list)
    last_active: float | None = None

    def recommend(
        self, now: float, current: int, proposals: Iterable[int | None], active: bool = True
    ) -> Decision:
        if self.low == 0:
            target, self.last_active = keda_step(
                current, active, self.last_active, now, self.low, self.spec.idle
            )
            if target is not None:
                return Decision(target, "woken" if target > current else "idle")
            if current == 0:
                return Decision(0, "asleep")
        low = max(self.low, 1)
        if current > self.high:
            return Decision(self.high, "TooManyReplicas")
        if current < low:
            return Decision(low, "TooFewReplicas")
        metric = replicas_for_metrics(current, proposals)
        if metric is None:
            return Decision(current, "NoValidMetric")
        return self.normalize(now, current, metric, low)

    def normalize(self, now: float, current: int, desired: int, low: int | None = None) -> Decision:
        """normalizeDesiredReplicasWithBehaviors: stabilize, then limit rate and bounds."""
        low = max(self.low, 1) if low is None else low
        stable = stabilize(
            current,
            desired,
            self.recommendations,
            now,
            self.spec.scale_up.window,
            self.spec.scale_down.window,
        )
        self._remember(Recommendation(desired, now), now)
        replicas, why = limit_rate(
            current,
            stable,
            low,
            self.high,
            self.spec.scale_up,
            self.spec.scale_down,
            self.up_events,
            self.down_events,
            now,
        )
        if why == "DesiredWithinRange" and stable != desired:
            why_s = "ScaleUpStabilized" if desired >= current else "ScaleDownStabilized"
            return Decision(replicas, why_s, desired)
        return Decision(replicas, why, desired)

    def scaled(self, now: float, before: int, after: int) -> None:
        """storeScaleEvent: remember a change the owner made (for the policies' periods)."""
        if after > before:
            self.up_events.append(ScaleEvent(after - before, now))
        elif after < before:
            self.down_events.append(ScaleEvent(before - after, now))
        self._prune(now)

    def _remember(self, rec: Recommendation, now: float) -> None:
        keep = max(self.spec.scale_up.window, self.spec.scale_down.window)
        self.recommendations = [r for r in self.recommendations if r.at >= now - keep]
        self.recommendations.append(rec)

    def _prune(self, now: float) -> None:
        up = max((p.period for p in self.spec.scale_up.policies), default=0.0)
        down = max((p.period for p in self.spec.scale_down.policies), default=0.0)
        self.up_events = [e for e in self.up_events if e.at >= now - up]
        self.down_events = [e for e in self.down_events if e.at >= now - down]


# --- waking from zero: the message waits --------------------------------------------------------


@dataclass(slots=True)
class WakeQueue:
    """Messages for a service at zero replicas wait here until a replica is ready (then all go,
    in order), or until `bound` seconds have passed (then they are handed back as expired, for the
    sender to be told). Sans-IO: `hold`, `ready`, `get_timer`, `handle_timer`. A non-empty queue
    is the KEDA trigger: `pending` is the value compared with `activation_threshold`."""

    bound: float = 30.0
    limit: int = 1024
    _held: list[tuple[float, object]] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return len(self._held)

    def hold(self, message: object, now: float) -> bool:
        """Queue a message; False (refused: the queue is full) if `limit` are already waiting."""
        if len(self._held) >= self.limit:
            return False
        self._held.append((now + self.bound, message))
        return True

    def ready(self) -> list[object]:
        """A replica is ready: every held message, oldest first."""
        out = [m for _, m in self._held]
        self._held.clear()
        return out

    def release(self, message: object) -> bool:
        """Stop holding one message (its sender stopped waiting); True if it was held."""
        kept = [(t, m) for t, m in self._held if m != message]
        released = len(kept) != len(self._held)
        self._held = kept
        return released

    def get_timer(self) -> float | None:
        return self._held[0][0] if self._held else None

    def handle_timer(self, now: float) -> list[object]:
        """The messages whose bound has passed, oldest first."""
        expired = [m for t, m in self._held if t <= now]
        self._held = [(t, m) for t, m in self._held if t > now]
        return expired
