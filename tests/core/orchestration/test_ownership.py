"""HRW ownership: agreement, ~1/n movement on join/leave, succession; epochs: a stale owner's
write loses."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kai_mesh.core.errors import UsageError
from kai_mesh.core.orchestration.ownership import (
    Epoch,
    check_write,
    in_force,
    next_epoch,
    owner,
    ranking,
)


def nid(i: int) -> bytes:
    return i.to_bytes(16, "big")


NODES = [nid(i) for i in range(10)]
SERVICES = [f"svc-{i}" for i in range(2000)]


def owners(nodes: list[bytes]) -> dict[str, bytes | None]:
    return {s: owner(s, nodes) for s in SERVICES}


def test_owner_is_the_first_of_the_ranking_and_order_free() -> None:
    for s in SERVICES[:50]:
        assert owner(s, NODES) == ranking(s, NODES)[0] == owner(s, reversed(NODES))
    assert owner("x", []) is None


def test_owners_spread_over_nodes() -> None:
    counts = {n: 0 for n in NODES}
    for o in owners(NODES).values():
        assert o is not None
        counts[o] += 1
    assert max(counts.values()) < 2 * min(counts.values())


def test_join_moves_about_one_in_n_and_only_to_the_new_node() -> None:
    before = owners(NODES)
    new = nid(99)
    after = owners([*NODES, new])
    moved = [s for s in SERVICES if before[s] != after[s]]
    assert all(after[s] == new for s in moved)
    share = len(moved) / len(SERVICES)
    assert 0.5 / 11 < share < 1.5 / 11


def test_leave_moves_only_the_leavers_services_to_the_next_by_hash() -> None:
    before = owners(NODES)
    gone = NODES[3]
    after = owners([n for n in NODES if n != gone])
    for s in SERVICES:
        if before[s] == gone:
            assert after[s] == ranking(s, NODES)[1]
        else:
            assert after[s] == before[s]


def test_epochs_are_totally_ordered_counter_first() -> None:
    assert Epoch(2, nid(1)) > Epoch(1, nid(9))
    assert Epoch(2, nid(2)) > Epoch(2, nid(1))
    assert next_epoch([Epoch(4, nid(1)), Epoch(7, nid(2))], nid(3)) == Epoch(8, nid(3))
    assert next_epoch([], nid(3)) == Epoch(1, nid(3))
    with pytest.raises(UsageError):
        Epoch(-1, nid(1))
    with pytest.raises(UsageError):
        Epoch(1, b"short")


@dataclass(frozen=True)
class Write:
    epoch: Epoch
    body: str


def test_stale_owner_write_refused() -> None:
    a, b = nid(1), nid(2)
    in_place = Epoch(5, a)
    # b took over (a failed, or a partition left b the owner in this node's view).
    b_write = next_epoch([in_place], b)
    assert check_write(in_place, b_write, owner_now=b) is None
    # a's late write, and a's write with a higher counter than b's: both refused.
    assert check_write(b_write, Epoch(5, a), owner_now=b) == "not_owner"
    assert check_write(b_write, Epoch(50, a), owner_now=b) == "not_owner"
    # b's own replayed or older write does not replace the newer one.
    assert check_write(b_write, b_write, owner_now=b) == "stale_epoch"
    assert check_write(Epoch(9, b), Epoch(7, b), owner_now=b) == "stale_epoch"


def test_in_force_prefers_the_current_owner_then_the_newest() -> None:
    a, b = nid(1), nid(2)
    writes = [Write(Epoch(5, a), "a5"), Write(Epoch(50, a), "a50"), Write(Epoch(6, b), "b6")]
    assert in_force(writes, owner_now=b) == writes[2]
    assert in_force(writes, owner_now=a) == writes[1]
    # The new owner has not written yet: the newest placement stands.
    assert in_force(writes, owner_now=nid(3)) == writes[1]
    assert in_force([], owner_now=a) is None


def test_partition_heals_to_one_placement() -> None:
    """Two halves each own the service and write; once membership agrees, every node acts on
    the merged owner's write, whatever order the writes arrived in."""
    nodes = NODES[:6]
    left, right = nodes[:3], nodes[3:]
    s = next(s for s in SERVICES if owner(s, nodes) in left)
    lo, ro = owner(s, left), owner(s, right)
    assert lo is not None and ro is not None and lo != ro
    w0 = Write(Epoch(1, lo), "before")
    wl = Write(next_epoch([w0.epoch], lo), "left")
    wr = Write(Epoch(10, ro), "right")  # the right half wrote more often
    healed = owner(s, nodes)
    assert healed == lo
    final = Write(next_epoch([w0.epoch, wl.epoch, wr.epoch], lo), "merged")
    for order in ([w0, wl, wr, final], [final, wr, wl, w0], [wr, final, w0, wl]):
        assert in_force(order, healed) == final
