# ruff: noqa: E501  (the ported HPA tables keep one case per line)
"""The HPA's and KEDA's rules, against their own test cases (kubernetes/kubernetes
pkg/controller/podautoscaler/replica_calculator_test.go and horizontal_test.go; kedacore/keda
pkg/scaling/executor/scale_scaledobjects.go), then Hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kai_mesh.core.orchestration.autoscale import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    Autoscaler,
    AutoscaleSpec,
    MetricTarget,
    Recommendation,
    ReplicaSample,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    WakeQueue,
    is_active,
    keda_step,
    limit_rate,
    replicas_for_average,
    replicas_for_metric,
    replicas_for_metrics,
    replicas_for_total,
    replicas_for_utilization,
    replicas_for_value,
    scale_down_limit,
    scale_up_limit,
    stabilize,
    within,
)

R = ReplicaSample
U = False  # not ready: the HPA's "ignored" pod (unready cpu, hot cpu, pending)


def cpu(levels: list[int | None], ready: list[bool] | None = None, requests=None) -> list[R]:
    """Pods as the HPA tests build them: levels in milli-cpu, requests 1.0 cpu unless given."""
    ready = ready or [True] * len(levels)
    requests = requests or [1000] * len(levels)
    return [R(ready=r, value=v, request=q) for v, r, q in zip(levels, ready, requests, strict=True)]


# replica_calculator_test.go: (test name, current, target percent, pods, expected)
UTILIZATION = [
    ("TestReplicaCalcScaleUp", 3, 30, cpu([300, 500, 700]), 5),
    ("TestReplicaCalcScaleUpUnreadyLessScale", 3, 30, cpu([300, 500, 700], [U, 1, 1]), 4),
    ("TestReplicaCalcScaleUpHotCpuLessScale", 3, 30, cpu([300, 500, 700], [U, 1, 1]), 4),
    ("TestReplicaCalcScaleUpUnreadyNoScale", 3, 30, cpu([400, 500, 700], [1, U, U]), 3),
    ("TestReplicaCalcScaleHotCpuNoScale", 3, 30, cpu([400, 500, 700], [1, U, U]), 3),
    # Failed and deleted pods are not replicas: they are simply absent here.
    ("TestReplicaCalcScaleUpIgnoresFailedPods", 2, 30, cpu([500, 700]), 4),
    ("TestReplicaCalcScaleUpIgnoresDeletionPods", 2, 30, cpu([500, 700]), 4),
    ("TestReplicaCalcScaleDown", 5, 50, cpu([100, 300, 500, 250, 250]), 3),
    ("TestReplicaCalcScaleDownIgnoresFailedPods", 5, 50, cpu([100, 300, 500, 250, 250]), 3),
    ("TestReplicaCalcScaleDownIgnoresDeletionPods", 5, 50, cpu([100, 300, 500, 250, 250]), 3),
    (
        "TestReplicaCalcScaleDownExcludeUnscheduledPods",
        5,
        50,
        cpu([100, None, None, None, None], [1, U, U, U, U]),
        1,
    ),
    (
        "TestReplicaCalcScaleDownIgnoreHotCpuPods",
        5,
        50,
        cpu([100, 300, 500, 250, 250], [1, 1, 1, U, U]),
        2,
    ),
    (
        "TestReplicaCalcTolerance",
        3,
        100,
        cpu([1010, 1030, 1020], requests=[900, 1000, 1100]),
        3,
    ),
    ("TestReplicaCalcMissingMetrics", 4, 100, cpu([400, 95, None, None]), 3),
    ("TestReplicaCalcMissingMetricsNoChangeEq", 2, 100, cpu([1000, None]), 2),
    ("TestReplicaCalcMissingMetricsNoChangeGt", 2, 100, cpu([1900, None]), 2),
    ("TestReplicaCalcMissingMetricsNoChangeLt", 2, 100, cpu([600, None]), 2),
    ("TestReplicaCalcMissingMetricsUnreadyChange", 3, 50, cpu([100, 450, None], [U, 1, 1]), 3),
    ("TestReplicaCalcMissingMetricsHotCpuNoChange", 3, 50, cpu([100, 450, None], [U, 1, 1]), 3),
    ("TestReplicaCalcMissingMetricsUnreadyScaleUp", 3, 50, cpu([100, 2000, None], [U, 1, 1]), 4),
    ("TestReplicaCalcMissingMetricsHotCpuScaleUp", 3, 50, cpu([100, 2000, None], [U, 1, 1]), 4),
    (
        "TestReplicaCalcMissingMetricsUnreadyScaleDown",
        4,
        50,
        cpu([100, 100, 100, None], [U, 1, 1, 1]),
        3,
    ),
]


@pytest.mark.parametrize(("name", "current", "target", "pods", "expected"), UTILIZATION)
def test_hpa_resource_utilization(name: str, current: int, target: int, pods, expected) -> None:
    assert replicas_for_utilization(current, target, pods) == expected, name


def avg(levels: list[float | None], ready: list[bool] | None = None) -> list[R]:
    ready = ready or [True] * len(levels)
    return [R(ready=r, value=v) for v, r in zip(levels, ready, strict=True)]


# Custom (Pods) metrics: the HPA ignores unready pods for cpu only, so these pods are all "ready".
AVERAGE = [
    ("TestReplicaCalcScaleUpCM", 3, 15000, avg([20000, 10000, 30000]), 4),
    ("TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale", 3, 15000, avg([50000, 10000, 30000]), 6),
    (
        "TestReplicaCalcScaleUpCMUnreadyHotCpuScaleWouldScaleDown",
        3,
        15000,
        avg([50000, 15000, 30000]),
        7,
    ),
    ("TestReplicaCalcScaleUpCMExternalNoLabels", 1, 4400, avg([8600]), 2),
    ("TestReplicaCalcScaleDownCM", 5, 20000, avg([12000] * 5), 3),
    ("TestReplicaCalcToleranceCM", 3, 20000, avg([20000, 21000, 21000]), 3),
]


@pytest.mark.parametrize(("name", "current", "target", "pods", "expected"), AVERAGE)
def test_hpa_pods_metric(name: str, current: int, target: int, pods, expected) -> None:
    assert replicas_for_average(current, target, pods) == expected, name


@pytest.mark.parametrize(
    ("name", "current", "total", "per_replica", "expected"),
    [
        ("TestReplicaCalcScaleUpPerPodCMExternal", 3, 8600, 2150, 4),
        ("TestReplicaCalcScaleDownPerPodCMExternal", 5, 8600, 2867, 3),
        ("TestReplicaCalcTolerancePerPodCMExternal", 3, 8600, 2900, 3),
        ("TestReplicaCalcScaleUpCMPerPodObject", 3, 20000, 5000, 4),
        ("TestReplicaCalcScaleDownPerPodCMObject", 5, 6000, 2000, 3),
        ("TestReplicaCalcTolerancePerPodCMObject", 4, 20166, 5000, 4),
    ],
)
def test_hpa_external_per_pod(name: str, current, total, per_replica, expected) -> None:
    assert replicas_for_total(current, total, per_replica) == expected, name


@pytest.mark.parametrize(
    ("name", "current", "ready", "value", "target", "expected"),
    [
        ("TestReplicaCalcScaleDownCMExternal", 5, 5, 8600, 14334, 3),
        ("TestReplicaCalcToleranceCMExternal", 3, 3, 8600, 8888, 3),
        ("TestReplicaCalcScaleUpCMExternalIgnoresUnreadyPods", 3, 1, 8600, 4400, 2),
        ("TestReplicaCalcScaleUpCMObject", 3, 3, 20000, 15000, 4),
        ("TestReplicaCalcScaleUpCMObjectIgnoresUnreadyPods", 3, 1, 50000, 10000, 5),
        ("TestReplicaCalcScaleDownCMObject", 5, 5, 12000, 20000, 3),
        ("TestReplicaCalcToleranceCMObject", 3, 3, 20666, 20000, 3),
    ],
)
def test_hpa_external_value(name: str, current, ready, value, target, expected) -> None:
    assert replicas_for_value(current, ready, value, target) == expected, name


def test_hpa_computed_tolerance_alg_implementation() -> None:
    """TestReplicaCalcComputedToleranceAlgImplementation, the same arithmetic."""
    start, used = 10, 10 * 150
    requested = 2 * used
    per_pod = requested // start
    jitter = [100, -100, 10, -10, 2, -2, 1, -1, 0, 0]
    pods = cpu([used // 10] * 10, requests=[per_pod + j for j in jitter])
    target = abs(1 / ((requested / used) * (1 - 0.1))) + 0.01
    final = math.ceil(used / (requested * target) * start)
    assert replicas_for_utilization(start, int(target * 100), pods) == final == 9
    target = abs(1 / ((requested / used) * (1 - 0.1))) + 0.004
    assert replicas_for_utilization(start, int(target * 100), pods) == start


def test_no_ready_replica_with_a_value_is_no_proposal() -> None:
    # TestReplicaCalcEmptyMetrics: "did not receive metrics for any ready pods".
    assert replicas_for_utilization(4, 100, cpu([None, None, None])) is None
    assert replicas_for_average(2, 10, avg([5, 5], [U, U])) is None


def test_several_metrics_take_the_max_and_invalid_ones_block_scale_down() -> None:
    # horizontal.go computeReplicasForMetrics.
    assert replicas_for_metrics(3, [2, 5, 4]) == 5
    assert replicas_for_metrics(3, [None, 5]) == 5
    assert replicas_for_metrics(3, [None, 2]) is None  # invalid + scale down -> no change
    assert replicas_for_metrics(3, [None, None]) is None
    m = MetricTarget(name="queue_depth", target=10, kind="total")
    assert replicas_for_metric(2, m, 45.0) == 5
    assert replicas_for_metric(2, m, None) is None
    assert replicas_for_metric(2, m, avg([1.0])) is None  # wrong reading shape: invalid


# --- horizontal.go: policies -------------------------------------------------------------------

NOW = 10_000.0


def rules(pods: int, pods_period: int, percent: int, percent_period: int, window: int):
    """generateScalingRules."""
    policies = []
    if pods:
        policies.append(ScalingPolicy(kind="pods", value=pods, period=pods_period))
    if percent:
        policies.append(ScalingPolicy(kind="percent", value=percent, period=percent_period))
    return ScalingRules(window=window, select="max", policies=tuple(policies))


def uniform(raw: list[int], period: int) -> list[ScaleEvent]:
    """generateEventsUniformDistribution."""
    seg = period / len(raw)
    return [ScaleEvent(c, NOW - (period - seg * (i + 1) + seg / 2)) for i, c in enumerate(raw)]


E159 = uniform([1, 5, 9], 120)
E_OUT = uniform([8, 12, 9, 11], 120)
# TestScalingWithRules: (name, up events, down events, min, max, up rules, down rules,
#                        current, prenormalized desired, expected, condition)
SCALING_WITH_RULES = [
    ("prenormalized desired replicas within range", [], [], 3, 8, None, None, 5, 7, 7, "DesiredWithinRange"),
    ("prenormalized desired replicas < minReplicas", [], [], 2, 8, None, None, 3, 1, 2, "TooFewReplicas"),
    ("... within range when minReplicas is 0", [], [], 0, 10, None, None, 1, 0, 0, "DesiredWithinRange"),
    ("maxReplicas is the limit because maxReplicas < scaleUpLimit", [], [], 1, 10, None, None, 20, 1000, 10, "TooManyReplicas"),
    ("desired replica count is more than the maximum replica count", [], [], 100, 150, None, None, 100, 1000, 150, "TooManyReplicas"),
    ("scaleUpLimit is the limit ... with user policies", [], [], 1, 2000, rules(0, 0, 1, 60, 0), None, 3, 1000, 4, "ScaleUpLimit"),
    ("scaleDownLimit is the limit ... with user defined policies", [], [], 3, 2000, None, rules(20, 60, 0, 0, 0), 1000, 3, 980, "ScaleDownLimit"),
    ("scaleUp with default behavior", [], [], 1, 1000, None, None, 10, 50, 20, "ScaleUpLimit"),
    ("scaleUp with pods policy larger than percent policy", [], [], 1, 1000, rules(100, 60, 100, 60, 0), None, 10, 500, 110, "ScaleUpLimit"),
    ("scaleUp with percent policy larger than pods policy", [], [], 1, 1000, rules(2, 60, 100, 60, 0), None, 10, 500, 20, "ScaleUpLimit"),
    ("scaleUp with spec MaxReplicas limitation with large pod policy", [], [], 1, 1000, rules(100, 60, 0, 0, 0), None, 10, 50, 50, "DesiredWithinRange"),
    ("scaleUp with spec MaxReplicas limitation with large percent policy", [], [], 1, 1000, rules(10000, 60, 0, 0, 0), None, 10, 50, 50, "DesiredWithinRange"),
    ("scaleUp with pod policy limitation", [], [], 1, 1000, rules(30, 60, 0, 0, 0), None, 10, 50, 40, "ScaleUpLimit"),
    ("scaleUp with percent policy limitation", [], [], 1, 1000, rules(0, 0, 200, 60, 0), None, 10, 50, 30, "ScaleUpLimit"),
    ("scaleDown with percent policy larger than pod policy", [], [], 1, 1000, None, rules(20, 60, 1, 60, 300), 100, 2, 80, "ScaleDownLimit"),
    ("scaleDown with pod policy larger than percent policy", [], [], 1, 1000, None, rules(2, 60, 1, 60, 300), 100, 2, 98, "ScaleDownLimit"),
    ("scaleDown with spec MinReplicas=nil limitation with large pod policy", [], [], 1, 1000, None, rules(100, 60, 0, 0, 300), 10, 0, 1, "TooFewReplicas"),
    ("scaleDown with spec MinReplicas limitation with large percent policy", [], [], 5, 1000, None, rules(0, 0, 100, 60, 300), 10, 2, 5, "TooFewReplicas"),
    ("scaleDown with pod policy limitation", [], [], 1, 1000, None, rules(5, 60, 0, 0, 300), 10, 2, 5, "ScaleDownLimit"),
    ("scaleDown with percent policy limitation", [], [], 1, 1000, None, rules(0, 0, 50, 60, 300), 10, 5, 5, "DesiredWithinRange"),
    ("scaleUp ... MaxReplicas limitation with large pod policy and events", E159, [], 1, 200, rules(300, 60, 0, 0, 0), None, 100, 500, 200, "TooManyReplicas"),
    ("scaleUp ... MaxReplicas limitation with large percent policy and events", E159, [], 1, 200, rules(0, 0, 10000, 60, 0), None, 100, 500, 200, "TooManyReplicas"),
    ("scaleUp with currentReplicas limitation ... a lot of recent scale up events", E159, [], 1, 1000, rules(5, 120, 0, 0, 0), None, 100, 500, 100, "ScaleUpLimit"),
    ("scaleUp with pod policy and previous scale up events", E159, [], 1, 1000, rules(150, 120, 0, 0, 0), None, 100, 500, 235, "ScaleUpLimit"),
    ("scaleUp with percent policy and previous scale up events", E159, [], 1, 1000, rules(0, 0, 200, 120, 0), None, 100, 500, 255, "ScaleUpLimit"),
    ("scaleDown with default policy and previous events", [], E159, 1, 1000, None, None, 10, 5, 5, "DesiredWithinRange"),
    ("scaleDown ... MinReplicas=nil ... large pod policy and previous events", [], E159, 1, 1000, None, rules(115, 120, 0, 0, 300), 100, 0, 1, "TooFewReplicas"),
    ("scaleDown ... MinReplicas limitation with large pod policy and previous events", [], E159, 5, 1000, None, rules(130, 120, 0, 0, 300), 100, 0, 5, "TooFewReplicas"),
    ("scaleDown ... MinReplicas limitation with large percent policy and previous events", [], E159, 5, 1000, None, rules(0, 0, 100, 120, 300), 100, 2, 5, "TooFewReplicas"),
    ("scaleDown with pod policy limitation and previous events", [], E159, 1, 1000, None, rules(5, 120, 0, 0, 300), 100, 2, 100, "ScaleDownLimit"),
    ("scaleDown with percent policy limitation and previous events", [], uniform([2, 4, 6], 120), 1, 1000, None, rules(0, 0, 50, 120, 300), 100, 0, 56, "ScaleDownLimit"),
    ("scaleDown with previous events preventing further scale down", [], uniform([10, 10, 10], 120), 1, 1000, None, rules(0, 0, 10, 120, 300), 100, 0, 100, "ScaleDownLimit"),
    ("scaleDown with with previous events still allowing more scale down", [], uniform([10, 10, 10], 120), 1, 1000, None, rules(0, 0, 1000, 120, 300), 10, 5, 5, "DesiredWithinRange"),
    ("check 'outdated' flag for events for one behavior for up", E_OUT, [], 1, 1000, rules(1000, 60, 0, 0, 0), None, 100, 200, 200, "DesiredWithinRange"),
    ("... not marked 'outdated' for two different policies ... for up", E_OUT, [], 1, 1000, rules(1000, 120, 100, 60, 0), None, 100, 200, 200, "DesiredWithinRange"),
    ("... marked 'outdated' for two different policies ... for up", E_OUT, [], 1, 1000, rules(1000, 30, 100, 60, 0), None, 100, 200, 200, "DesiredWithinRange"),
    ("check 'outdated' flag for events for one behavior for down", [], E_OUT, 1, 1000, None, rules(1000, 60, 0, 0, 300), 100, 5, 5, "DesiredWithinRange"),
    ("... not marked 'outdated' for two different policies ... for down", [], E_OUT, 1, 1000, None, rules(1000, 120, 100, 60, 300), 100, 5, 5, "DesiredWithinRange"),
    ("... marked 'outdated' for two different policies ... for down", [], E_OUT, 1, 1000, None, rules(1000, 30, 100, 60, 300), 100, 5, 5, "DesiredWithinRange"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "ups", "downs", "low", "high", "up", "down", "current", "desired", "expected", "why"),
    SCALING_WITH_RULES,
)
def test_hpa_scaling_with_rules(
    name, ups, downs, low, high, up, down, current, desired, expected, why
) -> None:
    got = limit_rate(
        current,
        desired,
        low,
        high,
        up or DEFAULT_SCALE_UP,
        down or DEFAULT_SCALE_DOWN,
        ups,
        downs,
        NOW,
    )
    assert got == (expected, why), name


def test_hpa_limits_with_min_select() -> None:
    # TestCalculateScaleUpLimitWithScalingRules / TestCalculateScaleDownLimitWithBehaviors.
    r = ScalingRules(
        window=300,
        select="min",
        policies=(
            ScalingPolicy(kind="pods", value=2, period=60),
            ScalingPolicy(kind="percent", value=50, period=60),
        ),
    )
    assert scale_up_limit(1, [], [], r, NOW) == 2
    assert scale_down_limit(5, [], [], r, NOW) == 3


def test_hpa_disabled_select_never_moves() -> None:
    r = ScalingRules(window=0, select="disabled", policies=DEFAULT_SCALE_UP.policies)
    assert limit_rate(3, 10, 1, 20, r, r, [], [], NOW) == (3, "ScaleUpLimit")
    assert limit_rate(3, 1, 1, 20, r, r, [], [], NOW) == (3, "ScaleDownLimit")


# TestNormalizeDesiredReplicas (the down window of 5 min, up window 0), with the current count
# given explicitly: the behaviour path pulls the current count into [min-up, max-down].
@pytest.mark.parametrize(
    ("name", "history", "current", "desired", "expected"),
    [
        ("empty log", [], 5, 5, 5),
        ("stabilize", [(4, -120), (5, -60)], 5, 3, 5),
        ("no stabilize", [(1, -120), (2, -60)], 3, 3, 3),
        ("no stabilize - old recommendations", [(10, -600), (9, -540)], 3, 3, 3),
        ("stabilize - old recommendations", [(10, -600), (4, -60), (5, -120), (9, -540)], 5, 3, 5),
    ],
)
def test_hpa_stabilization(name, history, current, desired, expected) -> None:
    recs = [Recommendation(r, NOW + dt) for r, dt in history]
    assert stabilize(current, desired, recs, NOW, 0, 300) == expected, name


def test_autoscaler_down_window_holds_then_releases() -> None:
    a = Autoscaler(spec=AutoscaleSpec(), low=1, high=10)
    assert a.recommend(0.0, 4, [8]).replicas == 8  # up window 0: at once
    a.scaled(0.0, 4, 8)
    d = a.recommend(30.0, 8, [2])
    assert (d.replicas, d.reason) == (8, "ScaleDownStabilized")  # 8 is still in the window
    assert a.recommend(299.0, 8, [2]).replicas == 8
    d = a.recommend(301.0, 8, [2])
    assert d.replicas == 2  # 300 s after the 8: the max in the window is now 2


# --- KEDA ---------------------------------------------------------------------------------------


def test_keda_activation_and_scale_to_zero() -> None:
    assert not is_active(0, 0) and is_active(1, 0) and not is_active(None, 0)
    assert not is_active(5, 5)  # strictly above the activation threshold
    # RequestScale: at zero and active -> max(min, 1) (scaleFromZero), last active = now.
    assert keda_step(0, True, None, 50.0, 0, 300) == (1, 50.0)
    assert keda_step(0, True, None, 50.0, 3, 300) == (3, 50.0)
    # Inactive with replicas and min 0: wait for the cooldown (scaleToZero), then zero.
    assert keda_step(2, False, 50.0, 300.0, 0, 300) == (None, 50.0)
    assert keda_step(2, False, 50.0, 350.0, 0, 300) == (None, 50.0)  # .Before: not equal
    assert keda_step(2, False, 50.0, 351.0, 0, 300) == (0, 50.0)
    assert keda_step(2, False, None, 1.0, 0, 300) == (0, None)  # never active: at once
    # Inactive below min: to min. Active with replicas: only LastActiveTime moves.
    assert keda_step(1, False, None, 1.0, 2, 300) == (2, None)
    assert keda_step(2, True, 1.0, 9.0, 0, 300) == (None, 9.0)


def test_autoscaler_sleeps_and_wakes() -> None:
    spec = AutoscaleSpec(idle=60.0)
    a = Autoscaler(spec=spec, low=0, high=2)
    assert a.recommend(0.0, 1, [1], active=True).replicas == 1
    assert a.recommend(30.0, 1, [1], active=False).replicas == 1
    assert a.recommend(61.0, 1, [1], active=False).replicas == 0
    assert a.recommend(62.0, 0, [], active=False).reason == "asleep"
    d = a.recommend(70.0, 0, [], active=True)
    assert (d.replicas, d.reason) == (1, "woken")


def test_wake_queue_holds_until_ready_or_bound() -> None:
    q = WakeQueue(bound=2.0, limit=2)
    assert q.hold("a", 0.0) and q.hold("b", 0.5) and not q.hold("c", 0.6)
    assert q.pending == 2 and q.get_timer() == 2.0
    assert q.handle_timer(1.9) == []
    assert q.ready() == ["a", "b"] and q.get_timer() is None
    q.hold("d", 3.0)
    assert q.handle_timer(5.0) == ["d"]


# --- properties ---------------------------------------------------------------------------------

samples = st.lists(
    st.builds(
        ReplicaSample,
        ready=st.booleans(),
        value=st.none() | st.floats(0, 1e6),
        request=st.floats(1, 1e4),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=300)
@given(
    low=st.integers(1, 10),
    span=st.integers(0, 20),
    current=st.integers(0, 40),
    props=st.lists(st.none() | st.integers(0, 200), max_size=4),
    t=st.floats(0, 1e5),
)
def test_decision_always_within_bounds(low, span, current, props, t) -> None:
    high = low + span
    a = Autoscaler(spec=AutoscaleSpec(), low=low, high=high)
    d = a.recommend(t, current, props)
    if current == d.replicas and low <= current <= high:
        return
    assert low <= d.replicas <= high


@settings(max_examples=300)
@given(current=st.integers(1, 50), target=st.floats(0.1, 1e4), pods=samples)
def test_never_scales_within_tolerance(current, target, pods) -> None:
    ready = [p for p in pods if p.ready and p.value is not None]
    got = replicas_for_average(current, target, pods)
    if ready and all(p.ready and p.value is not None for p in pods):
        ratio = sum(p.value for p in ready) / len(ready) / target  # type: ignore[misc]
        if within(ratio, 0.1):
            assert got == current


@settings(max_examples=200)
@given(
    base=st.integers(2, 20),
    noise=st.lists(st.floats(-0.5, 0.5), min_size=40, max_size=120),
)
def test_stabilization_never_flaps_under_noise(base, noise) -> None:
    """Every 15 s a noisy proposal around `base` (+-50 %): a scale-down never follows a scale-up
    within the 300 s down window, so the count cannot go up and down with the noise."""
    a = Autoscaler(spec=AutoscaleSpec(), low=1, high=100)
    current, changes = base, []
    for i, n in enumerate(noise):
        now = i * 15.0
        proposal = max(1, round(base * (1 + n)))
        d = a.recommend(now, current, [proposal])
        if d.replicas != current:
            changes.append((now, d.replicas - current))
            a.scaled(now, current, d.replicas)
            current = d.replicas
    downs = [t for t, c in changes if c < 0]
    ups = [t for t, c in changes if c > 0]
    for td in downs:
        # A scale-down never happens within 300 s of a recommendation as high as the count it
        # left: so never within 300 s after a scale-up.
        assert all(not (0 < td - tu < 300) for tu in ups)
