"""The priority inbox: order, the shedding rule, and that critical is never shed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.messaging.envelope import Priority
from kai_mesh.core.messaging.priority_inbox import PriorityInbox, Shed

priorities = st.sampled_from(list(Priority))


def test_pops_highest_priority_first_then_oldest() -> None:
    inbox: PriorityInbox[str] = PriorityInbox(10)
    for item, p in [
        ("a", Priority.LOW),
        ("b", Priority.HIGH),
        ("c", Priority.LOW),
        ("d", Priority.CRITICAL),
        ("e", Priority.HIGH),
    ]:
        assert inbox.push(item, p) is None
    popped = [inbox.pop() for _ in range(5)]
    assert [x[0] for x in popped if x] == ["d", "b", "e", "a", "c"]
    assert inbox.pop() is None and len(inbox) == 0


def test_full_inbox_sheds_newest_of_lowest_or_the_newcomer() -> None:
    inbox: PriorityInbox[str] = PriorityInbox(2)
    inbox.push("low-old", Priority.LOW)
    inbox.push("low-new", Priority.LOW)
    assert inbox.push("normal", Priority.NORMAL) == Shed("low-new", Priority.LOW)
    assert inbox.push("low-late", Priority.LOW) == Shed("low-late", Priority.LOW)
    assert inbox.push("normal-2", Priority.NORMAL) == Shed("low-old", Priority.LOW)
    assert inbox.push("normal-3", Priority.NORMAL) == Shed("normal-3", Priority.NORMAL)
    assert len(inbox) == 2


def test_critical_overflows_rather_than_being_shed() -> None:
    inbox: PriorityInbox[int] = PriorityInbox(1)
    for i in range(5):
        assert inbox.push(i, Priority.CRITICAL) is None
    assert len(inbox) == 5
    assert inbox.push(99, Priority.HIGH) == Shed(99, Priority.HIGH)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PriorityInbox(0)


@given(st.integers(1, 6), st.lists(st.one_of(priorities, st.none()), max_size=80))
def test_invariants_under_any_sequence(capacity: int, ops: list[Priority | None]) -> None:
    """`None` is a pop. Nothing critical is ever shed; non-critical never exceeds capacity;
    every pushed item is popped, shed, or still queued, exactly once."""
    inbox: PriorityInbox[int] = PriorityInbox(capacity)
    queued: dict[int, Priority] = {}
    for n, op in enumerate(ops):
        if op is None:
            got = inbox.pop()
            if got is None:
                assert not queued
                continue
            item, priority = got
            assert priority == max(queued.values())
            same = [i for i, p in queued.items() if p == priority]
            assert item == min(same)  # oldest first within a priority
            del queued[item]
            continue
        queued[n] = op
        shed = inbox.push(n, op)
        if shed is not None:
            assert shed.priority is not Priority.CRITICAL
            assert shed.priority <= op
            assert queued.pop(shed.item) == shed.priority
        non_critical = sum(1 for p in queued.values() if p is not Priority.CRITICAL)
        assert non_critical <= capacity
        assert len(inbox) == len(queued)
