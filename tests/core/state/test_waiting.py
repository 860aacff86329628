"""The pool of entries waiting for a header or a predecessor: what a peer may fill, and that
its share comes back as its records apply or are dropped."""

from __future__ import annotations

from kai_mesh.core.state.waiting import Waiting


def test_a_peers_share_is_freed_as_its_records_apply_or_are_dropped() -> None:
    pool = Waiting(per_peer=2, per_peer_bytes=100, total=3, total_bytes=1000)
    assert pool.add(7, 2, b"a" * 10, b"p") is None
    assert pool.add(7, 3, b"b" * 10, b"p") is None
    assert pool.add(7, 4, b"c" * 10, b"p") == "waiting_full.peer"
    assert pool.add(7, 2, b"a" * 10, b"q") == "duplicate"
    assert pool.add(8, 5, b"d" * 10, b"q") is None
    assert pool.add(8, 6, b"e" * 10, b"r") == "pending_full"  # three in all
    assert pool.held_by(b"p") == (2, 20) and (pool.count, pool.size) == (3, 30)
    assert pool.take_ready(7, 2) == [(2, b"a" * 10)]
    assert pool.add(7, 4, b"c" * 10, b"p") is None  # p's share has room again
    assert pool.drop(7, after=3) == 1  # seq 4 goes, seq 3 stays
    assert pool.held_by(b"p") == (1, 10) and pool.streams() == [7, 8]
    assert pool.add(9, 1, b"x" * 95, b"p") == "waiting_full.peer"  # 10 + 95 bytes > 100
    assert pool.add(9, 1, b"x" * 95, None) is None  # our own store: no per-peer share
    assert (pool.count, pool.size) == (3, 115)
