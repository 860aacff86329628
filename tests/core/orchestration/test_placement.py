"""Placement: capabilities, roles, names, capacity, spread, policy, no churn, drain."""

from __future__ import annotations

from collections import Counter

from kai_mesh.core.orchestration.manifest import parse_manifest
from kai_mesh.core.orchestration.placement import (
    NodeInfo,
    Slot,
    Usage,
    drain,
    place,
    usage_by_node,
)


def nid(i: int) -> bytes:
    return i.to_bytes(16, "big")


def manifest(extra: str = "", replicas: str = "{ min = 3, max = 5 }"):  # type: ignore[no-untyped-def]
    return parse_manifest(
        f'name = "svc"\nversion = "1"\nagent = "echo"\nreplicas = {replicas}\n{extra}'
    )


def cluster(n: int, **kw: object) -> dict[bytes, NodeInfo]:
    return {nid(i): NodeInfo(node_id=nid(i), name=f"n{i}", **kw) for i in range(n)}  # type: ignore[arg-type]


def test_spread_over_nodes_and_deterministic() -> None:
    plan = place(manifest(), cluster(5), [])
    assert len(plan.slots) == 3 and len({s.node for s in plan.slots}) == 3
    assert [s.replica for s in plan.slots] == [0, 1, 2]
    assert place(manifest(), cluster(5), []) == plan
    assert plan.changed and plan.started == plan.slots and not plan.stopped


def test_wanted_is_clamped_to_min_max() -> None:
    assert len(place(manifest(), cluster(8), [], wanted=7).slots) == 5
    assert len(place(manifest(), cluster(8), [], wanted=1).slots) == 3
    assert len(place(manifest(), cluster(8), [], wanted=4).slots) == 4


def test_capabilities_roles_and_names() -> None:
    nodes = cluster(6)
    nodes[nid(1)] = NodeInfo(node_id=nid(1), name="n1", capabilities=frozenset({"gpu", "arm64"}))
    nodes[nid(4)] = NodeInfo(
        node_id=nid(4), name="n4", capabilities=frozenset({"gpu"}), role="edge"
    )
    m = manifest('capabilities = ["gpu"]', replicas="2")
    assert {s.node for s in place(m, nodes, []).slots} == {nid(1), nid(4)}
    m = manifest('capabilities = ["gpu"]\nplacement = { roles = ["edge"] }', replicas="1")
    assert {s.node for s in place(m, nodes, []).slots} == {nid(4)}
    m = manifest('placement = { nodes = ["n2", "n5"] }', replicas="2")
    assert {s.node for s in place(m, nodes, []).slots} == {nid(2), nid(5)}


def test_no_eligible_node_says_why() -> None:
    plan = place(manifest('capabilities = ["lora"]'), cluster(3), [])
    assert plan.slots == () and plan.unplaced == 3 and "no eligible node" in plan.why


def test_capacity_cpu_memory_and_replica_limit() -> None:
    m = manifest("resources = { cpu = 0.6, memory = 100 }", replicas="{ min = 4, max = 4 }")
    nodes = cluster(2, cpu=1.0, memory_mb=1000)
    plan = place(m, nodes, [])
    # One 0.6-core replica per 1-core node: two fit, two do not.
    assert len(plan.slots) == 2 and plan.unplaced == 2 and "room" in plan.why
    # Other services' reservations count.
    busy = {nid(0): Usage(cpu=0.5, memory_mb=0, replicas=1)}
    assert {s.node for s in place(m, nodes, [], usage=busy).slots} == {nid(1)}
    low_mem = cluster(3, memory_mb=150)
    m2 = manifest("resources = { cpu = 0.1, memory = 100 }", replicas="3")
    # 100 MB of 150 reserved on n0: no replica fits there, one fits on each other node.
    tight = place(m2, low_mem, [], usage={nid(0): Usage(memory_mb=100)})
    assert {s.node for s in tight.slots} == {nid(1), nid(2)} and tight.unplaced == 1
    limited = cluster(1, cpu=8.0, memory_mb=8000, max_replicas=2)
    assert len(place(manifest(replicas="3"), limited, []).slots) == 2


def test_stacks_when_nodes_are_short_then_spreads_when_one_joins() -> None:
    m = manifest(replicas="3")
    two = cluster(2, cpu=4.0, memory_mb=4000)
    plan = place(m, two, [])
    assert sorted(Counter(s.node for s in plan.slots).values()) == [1, 2]
    three = cluster(3, cpu=4.0, memory_mb=4000)
    plan2 = place(m, three, plan.slots)
    assert len({s.node for s in plan2.slots}) == 3 and len(plan2.moves) == 1
    assert len(plan2.started) == len(plan2.stopped) == 1


def test_joining_node_does_not_churn() -> None:
    m = manifest()
    plan = place(m, cluster(4), [])
    for n in (5, 10, 20):
        again = place(m, cluster(n), plan.slots)
        assert again.slots == plan.slots and not again.changed


def test_no_spread_means_no_move() -> None:
    m = manifest("placement = { spread = false }", replicas="3")
    one = cluster(1, cpu=4.0, memory_mb=4000)
    plan = place(m, one, [])
    assert len(plan.slots) == 3
    assert place(m, cluster(4, cpu=4.0, memory_mb=4000), plan.slots).slots == plan.slots


def test_failed_node_replicas_are_replaced_elsewhere() -> None:
    m = manifest()
    nodes = cluster(5)
    plan = place(m, nodes, [])
    dead = plan.slots[1].node
    alive = {k: v for k, v in nodes.items() if k != dead}
    again = place(m, alive, plan.slots)
    assert len(again.slots) == 3 and dead not in {s.node for s in again.slots}
    assert again.stopped == (plan.slots[1],) and len(again.started) == 1
    assert again.started[0].replica == plan.slots[1].replica
    # the others stay put
    assert set(plan.slots) - {plan.slots[1]} <= set(again.slots)


def test_policy_forbids_a_service_on_a_node_or_everywhere() -> None:
    m = manifest(replicas="3")
    nodes = cluster(4)
    plan = place(m, nodes, [], policy={"forbidden_services": {"n0": ["svc"], "n1": ["other"]}})
    assert nid(0) not in {s.node for s in plan.slots}
    # A replica already on a node the policy now forbids is moved away.
    on0 = place(m, nodes, [Slot(0, nid(0)), Slot(1, nid(1)), Slot(2, nid(2))])
    moved = place(m, nodes, on0.slots, policy={"forbidden_services": {"n0": ["svc"]}})
    assert nid(0) not in {s.node for s in moved.slots} and len(moved.slots) == 3
    none = place(m, nodes, [], policy={"forbidden_services": {"*": ["svc"]}})
    assert none.slots == () and none.unplaced == 3


def test_scale_down_trims_the_crowded_and_highest_first() -> None:
    m = manifest(replicas="{ min = 1, max = 5 }")
    current = [Slot(0, nid(0)), Slot(1, nid(1)), Slot(2, nid(0)), Slot(3, nid(2))]
    plan = place(m, cluster(3), current, wanted=2)
    assert plan.slots == (Slot(0, nid(0)), Slot(1, nid(1)))
    assert set(plan.stopped) == {Slot(2, nid(0)), Slot(3, nid(2))}


def test_drain_moves_a_nodes_replicas_away() -> None:
    m = manifest()
    nodes = cluster(5)
    plan = place(m, nodes, [])
    target = plan.slots[0].node
    drained = drain(m, nodes, plan.slots, target)
    assert target not in {s.node for s in drained.slots} and len(drained.slots) == 3
    assert [(mv.replica, mv.source) for mv in drained.moves] == [(plan.slots[0].replica, target)]
    # Nothing else moved.
    assert set(plan.slots[1:]) <= set(drained.slots)


def test_usage_by_node_sums_reservations() -> None:
    m = manifest("resources = { cpu = 0.25, memory = 10 }")
    u = usage_by_node([(m, [Slot(0, nid(0)), Slot(1, nid(0))]), (m, [Slot(0, nid(1))])])
    assert u[nid(0)] == Usage(0.5, 20, 2) and u[nid(1)] == Usage(0.25, 10, 1)


def test_replicas_land_evenly_over_many_services() -> None:
    nodes = cluster(10, cpu=100.0, memory_mb=100000)
    counts: Counter[bytes] = Counter()
    for i in range(200):
        m = parse_manifest(f'name = "s{i}"\nversion = "1"\nagent = "echo"\nreplicas = 2\n')
        counts.update(s.node for s in place(m, nodes, []).slots)
    assert max(counts.values()) < 2 * min(counts.values())
