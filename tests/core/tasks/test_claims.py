"""Task claims (core.tasks.claims): who runs a task, its state, and which of two results every
node keeps after a partition heals."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import UsageError
from kai_mesh.core.tasks.claims import (
    CLAIMS,
    RESULTS,
    new_spec,
    parse_spec,
    record_of,
    runner_rank,
    should_claim,
    status,
)

NODES = [bytes([i]) * 16 for i in range(1, 6)]
NOW = 1000.0


def record(task_id: str = "00112233445566aa", ttl: float = 60) -> dict[str, Any]:
    spec = new_spec(
        task_id=task_id,
        capability="echo",
        intent="echo",
        payload={"x": 1},
        created_by=NODES[0],
        now=NOW,
        ttl=ttl,
    )
    return record_of(spec)


def test_exactly_one_live_capable_node_claims() -> None:
    for n in range(40):
        rec = record(f"{n:016x}")
        claimers = [me for me in NODES if should_claim(rec, me, NODES, NODES, NOW)]
        assert claimers == [runner_rank(f"{n:016x}", NODES)[0]]
        # a node without the capability never claims, and the winner is among the capable
        capable = NODES[:2]
        got = [me for me in NODES if should_claim(rec, me, NODES, capable, NOW)]
        assert len(got) == 1 and got[0] in capable


def test_a_live_claim_holds_a_dead_one_is_taken_over() -> None:
    rec = record()
    first = next(me for me in NODES if should_claim(rec, me, NODES, NODES, NOW))
    rec[CLAIMS][first.hex()] = {"at": NOW}
    assert status(rec, NODES, NOW).state == "claimed"
    assert status(rec, NODES, NOW).claimer == first
    assert not any(should_claim(rec, me, NODES, NODES, NOW) for me in NODES)
    live = [n for n in NODES if n != first]
    assert status(rec, live, NOW).state == "open"
    second = [me for me in live if should_claim(rec, me, live, live, NOW)]
    assert len(second) == 1 and second[0] != first


def test_results_done_failed_and_the_deadline() -> None:
    rec = record()
    assert status(rec, NODES, NOW).state == "open"
    assert status(rec, NODES, NOW + 61).state == "failed"
    assert "deadline" in status(rec, NODES, NOW + 61).reason
    assert not any(should_claim(rec, me, NODES, NODES, NOW + 61) for me in NODES)
    rec[RESULTS][NODES[1].hex()] = {"ok": False, "reason": "no_such_agent: gone"}
    got = status(rec, NODES, NOW)
    assert (got.state, got.reason, got.claimer) == ("failed", "no_such_agent: gone", NODES[1])
    # a result stands even when its node is gone
    assert status(rec, [], NOW + 999).state == "failed"


def test_two_results_after_a_merge_resolve_alike_everywhere() -> None:
    for n in range(20):
        rec = record(f"{n:016x}")
        a, b = NODES[1], NODES[3]
        rec[RESULTS][a.hex()] = {"ok": True, "result": "from a"}
        rec[RESULTS][b.hex()] = {"ok": True, "result": "from b"}
        flipped = dict(rec, results=dict(reversed(list(rec[RESULTS].items()))))
        seen = {status(r, live, NOW).result for r in (rec, flipped) for live in ([a], [b], [])}
        assert len(seen) == 1  # every node keeps the same one, whatever it sees of membership
        assert status(rec, NODES, NOW).runs == 2  # the duplicate is visible
        expected = "from a" if runner_rank(f"{n:016x}", [a, b])[0] == a else "from b"
        assert seen == {expected}


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("capability", "", "capability"),
        ("capability", "a b", "capability"),
        ("intent", "x" * 65, "intent"),
        ("ttl", 0, "ttl"),
        ("ttl", True, "ttl"),
        ("payload", {"x": float("nan")}, "payload"),
        ("payload", "y" * 20_000, "payload"),
    ],
)
def test_bad_input_is_refused_with_its_reason(field: str, value: Any, words: str) -> None:
    args: dict[str, Any] = {
        "task_id": "00112233445566aa",
        "capability": "echo",
        "intent": "echo",
        "payload": None,
        "created_by": NODES[0],
        "now": NOW,
    }
    args[field] = value
    with pytest.raises(UsageError, match=words):
        new_spec(**args)


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=20,
)


@given(values, st.sampled_from([*itertools.islice(NODES, 3)]))
def test_any_value_in_the_doc_is_a_task_or_ignored(value: Any, me: bytes) -> None:
    assert parse_spec(value) is None or isinstance(value, dict)
    if isinstance(value, dict) and parse_spec(value) is not None:
        status(value, NODES, NOW)
    should_claim(value, me, NODES, NODES, NOW)  # never raises


@given(st.dictionaries(st.text(max_size=40), values, max_size=5))
def test_any_claims_and_results_maps_give_a_state(junk: dict[str, Any]) -> None:
    rec = record()
    rec[CLAIMS] = junk
    rec[RESULTS] = dict(junk)
    assert status(rec, NODES, NOW).state in ("open", "claimed", "done", "failed")
