"""The balancer: each strategy's distribution, P2C never picks an unready replica, path
preference, the retry excludes the failed replica, errors say why."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kai_mesh.core.orchestration.balancer import (
    Balancer,
    EdfScheduler,
    NoReplica,
    Replica,
)


def nid(i: int) -> bytes:
    return i.to_bytes(16, "big")


def replicas(n: int, **kw: object) -> list[Replica]:
    return [Replica(node=nid(i), replica=0, **kw) for i in range(n)]  # type: ignore[arg-type]


def spread(strategy: str, reps: list[Replica], n: int = 10_000, seed: int = 1) -> Counter[int]:
    b, rng = Balancer(), random.Random(seed)
    out: Counter[int] = Counter()
    for _ in range(n):
        r = b.pick("s", strategy, reps, rng)  # type: ignore[arg-type]
        assert isinstance(r, Replica)
        out[r.node[-1]] += 1
    return out


def test_round_robin_is_exact() -> None:
    counts = spread("round_robin", replicas(3), 9999)
    assert set(counts.values()) == {3333}


def test_least_connections_balances_without_in_flight() -> None:
    counts = spread("least_connections", replicas(3))
    assert max(counts.values()) / min(counts.values()) < 1.15


def test_least_connections_follows_own_in_flight() -> None:
    """Requests that stay open on one replica steer P2C away from it."""
    reps = replicas(3)
    b, rng = Balancer(), random.Random(7)
    for _ in range(20):
        b.begin(reps[0].key)
    counts: Counter[int] = Counter()
    for _ in range(3000):
        r = b.pick("s", "least_connections", reps, rng)
        assert isinstance(r, Replica)
        counts[r.node[-1]] += 1
        b.begin(r.key)
        b.end(r.key)
    # Replica 0 is chosen only when both samples are replica 0: 1/9 of the time.
    assert counts[0] / 3000 == pytest.approx(1 / 9, abs=0.03)


def test_least_connections_reported_load_breaks_ties() -> None:
    reps = [Replica(node=nid(0), replica=0, load=50), Replica(node=nid(1), replica=0, load=0)]
    counts = spread("least_connections", reps, 3000)
    # Only a double draw of the loaded replica picks it: 1/4.
    assert counts[0] / 3000 == pytest.approx(0.25, abs=0.03)


def test_p2c_first_sample_stands_on_ties() -> None:
    """Envoy keeps the first sample unless the second has strictly fewer requests."""

    class Fixed:
        def __init__(self, values: list[float]) -> None:
            self.values = values

        def random(self) -> float:
            return self.values.pop(0)

    reps = replicas(2)
    b = Balancer()
    picked = b.pick("s", "least_connections", reps, Fixed([0.9, 0.1]))
    assert isinstance(picked, Replica) and picked.node == nid(1)
    b.begin(nid(1) + b"") if False else b.begin((nid(1), 0))
    picked = b.pick("s", "least_connections", reps, Fixed([0.9, 0.1]))
    assert isinstance(picked, Replica) and picked.node == nid(0)


def test_weighted_follows_capacity_exactly() -> None:
    reps = [Replica(node=nid(i), replica=0, weight=w) for i, w in enumerate((1.0, 2.0, 5.0))]
    counts = spread("weighted", reps, 8000)
    assert counts == {0: 1000, 1: 2000, 2: 5000}


def test_edf_scheduler_matches_envoy_order() -> None:
    """Weights 1, 2, 3: deadlines 1/3 (w3), 1/2 (w2), 2/3 (w3), then three at 1 taken FIFO by
    insertion; over one period each entry is picked in proportion to its weight."""
    keys = [(nid(i), 0) for i in range(3)]
    edf = EdfScheduler({keys[0]: 1.0, keys[1]: 2.0, keys[2]: 3.0})
    picks = [edf.pick() for _ in range(6)]
    assert Counter(picks) == {keys[0]: 1, keys[1]: 2, keys[2]: 3}
    assert picks[:3] == [keys[2], keys[1], keys[2]]


@settings(max_examples=200)
@given(
    ready=st.lists(st.booleans(), min_size=1, max_size=8),
    seed=st.integers(0, 2**32),
    strategy=st.sampled_from(["round_robin", "least_connections", "weighted"]),
    in_flight=st.lists(st.integers(0, 5), min_size=8, max_size=8),
)
def test_never_picks_an_unready_replica(
    ready: list[bool], seed: int, strategy: str, in_flight: list[int]
) -> None:
    reps = [Replica(node=nid(i), replica=0, ready=r, weight=i + 1.0) for i, r in enumerate(ready)]
    b, rng = Balancer(), random.Random(seed)
    for i, n in enumerate(in_flight[: len(ready)]):
        for _ in range(n):
            b.begin((nid(i), 0))
    for _ in range(20):
        r = b.pick("s", strategy, reps, rng)  # type: ignore[arg-type]
        if any(ready):
            assert isinstance(r, Replica) and r.ready
        else:
            assert r == NoReplica("s", "none ready")


def test_path_local_first_then_no_radio_then_hops() -> None:
    local = Replica(node=nid(0), replica=0, local=True, hops=0)
    lan2 = Replica(node=nid(1), replica=0, hops=2)
    lan1 = Replica(node=nid(2), replica=0, hops=1)
    lora1 = Replica(node=nid(3), replica=0, hops=1, radio=True)
    b, rng = Balancer(), random.Random(0)
    for strategy in ("round_robin", "least_connections", "weighted"):
        assert b.pick("s", strategy, [lora1, lan2, lan1, local], rng) == local  # type: ignore[arg-type]
        assert b.pick("s", strategy, [lora1, lan2, lan1], rng) == lan1  # type: ignore[arg-type]
        # A LoRa hop is never spent when a LAN replica can answer, even one more hop away.
        assert b.pick("s", strategy, [lora1, lan2], rng) == lan2  # type: ignore[arg-type]
        assert b.pick("s", strategy, [lora1], rng) == lora1  # type: ignore[arg-type]


def test_saturated_tier_overflows_to_the_next() -> None:
    local = Replica(node=nid(0), replica=0, local=True, hops=0)
    remote = Replica(node=nid(1), replica=0, hops=1)
    b, rng = Balancer(saturation=2), random.Random(0)
    b.begin(local.key)
    assert b.pick("s", "round_robin", [local, remote], rng) == local
    b.begin(local.key)
    assert b.pick("s", "round_robin", [local, remote], rng) == remote


def test_retry_excludes_the_failed_replica() -> None:
    reps = replicas(3)
    b, rng = Balancer(), random.Random(3)
    for strategy in ("round_robin", "least_connections", "weighted"):
        for _ in range(200):
            first = b.pick("s", strategy, reps, rng)  # type: ignore[arg-type]
            assert isinstance(first, Replica)
            second = b.retry("s", strategy, reps, rng, failed=first.key)  # type: ignore[arg-type]
            assert isinstance(second, Replica) and second.key != first.key
    only = replicas(1)
    assert b.retry("s", "round_robin", only, rng, failed=only[0].key) == NoReplica(
        "s", "none ready"
    )


def test_errors_say_why() -> None:
    b, rng = Balancer(), random.Random(0)
    assert str(b.pick("echo", "round_robin", [], rng)) == "service 'echo': none placed"
    assert b.pick("echo", "round_robin", replicas(2, ready=False), rng) == NoReplica(
        "echo", "none ready"
    )
    assert b.pick("echo", "round_robin", replicas(2, hops=None), rng) == NoReplica(
        "echo", "none reachable"
    )


def test_in_flight_bookkeeping() -> None:
    b = Balancer()
    k = (nid(1), 0)
    b.begin(k)
    b.begin(k)
    b.end(k)
    assert b.in_flight == {k: 1}
    b.end(k)
    b.end(k)
    assert b.in_flight == {}
