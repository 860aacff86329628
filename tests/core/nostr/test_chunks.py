"""Content-addressed chunks: split and reassemble whatever a relay does to the order, duplicates
and drops; what is held half-done stays bounded; foreign bytes raise ChunkError, never more."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import ProtocolError, UsageError
from kai_mesh.core.nostr.chunks import (
    EVENT_OVERHEAD,
    HEADER_BYTES,
    INTEROP_PLAINTEXT,
    ChunkError,
    Reassembler,
    max_plaintext,
    nip44_chars,
    split,
)


def test_max_plaintext_is_the_last_length_that_fits() -> None:
    for limit in (1500, 4096, 65_536 + 1024, 131_072):
        n = max_plaintext(limit)
        assert nip44_chars(n) + EVENT_OVERHEAD <= limit
        assert n == INTEROP_PLAINTEXT or nip44_chars(n + 1) + EVENT_OVERHEAD > limit
    assert max_plaintext(EVENT_OVERHEAD) == 0
    # strfry's 64 KiB event: the NIP-44 padding step below 64 KiB.
    assert max_plaintext(65_536 + 1024) == 40_960


@given(st.binary(min_size=1, max_size=5000), st.integers(HEADER_BYTES + 1, 700), st.randoms())
def test_any_order_and_duplicates_give_the_payload_once(
    data: bytes, piece: int, rnd: random.Random
) -> None:
    pieces = split(data, piece)
    assert all(len(p) <= piece for p in pieces)
    shuffled = pieces + rnd.sample(pieces, k=min(3, len(pieces)))
    rnd.shuffle(shuffled)
    r = Reassembler()
    got = [out for p in shuffled if (out := r.add("alice", p, 0.0)) is not None]
    # Once complete, a late duplicate starts a new partial that never completes on its own
    # (the transport's seen-id LRU drops a relay's replays before they get here).
    assert got[0] == data
    assert len(r) <= 1


def test_a_piece_of_another_payload_never_completes_this_one() -> None:
    one, two = split(b"a" * 100, 60), split(b"b" * 100, 60)
    r = Reassembler()
    assert r.add("alice", one[0], 0) is None
    assert r.add("alice", two[1], 0) is None
    assert r.add("alice", one[1], 0) is None
    assert r.add("alice", one[2], 0) == b"a" * 100
    # The same pieces from another sender are another payload.
    assert r.add("bob", one[0], 0) is None and len(r) == 2


def test_a_forged_join_is_caught_by_the_digest() -> None:
    pieces = split(b"x" * 90, 60)
    forged = pieces[1][:HEADER_BYTES] + b"y" * (len(pieces[1]) - HEADER_BYTES)
    r = Reassembler()
    for p in (pieces[0], forged, pieces[2]):
        assert r.add("alice", p, 0) is None
    assert r.counters == {"chunk_mismatch": 1} and r.held_bytes == 0


def test_half_done_state_is_bounded_and_expires() -> None:
    r = Reassembler(max_partial=3, per_sender=2, max_bytes=10_000, ttl=60)
    firsts = [split(bytes([i]) * 500, 200)[0] for i in range(6)]
    r.add("a", firsts[0], 0)
    r.add("a", firsts[1], 0)
    r.add("a", firsts[2], 0)  # a third from "a": its oldest goes
    assert len(r) == 2 and r.counters["chunks_evicted"] == 1
    r.add("b", firsts[3], 0)
    r.add("c", firsts[4], 0)  # four partials: the oldest of all goes
    assert len(r) == 3 and r.counters["chunks_evicted"] == 2
    r.add("d", firsts[5], 61)  # the rest are past their ttl
    assert len(r) == 1 and r.counters["chunks_expired"] == 3
    assert r.held_bytes == len(firsts[5]) - HEADER_BYTES


def test_bytes_held_are_bounded() -> None:
    r = Reassembler(max_bytes=1000, max_partial=100, per_sender=100)
    for i in range(10):
        r.add(f"s{i}", split(bytes([i]) * 2000, 400)[0], 0)
        assert r.held_bytes <= 1000
    assert r.counters["chunks_evicted"] >= 7


def test_split_refuses_impossible_sizes() -> None:
    with pytest.raises(UsageError):
        split(b"abc", HEADER_BYTES)
    with pytest.raises(UsageError):
        split(b"x" * 10_000, HEADER_BYTES + 1)


def test_a_payload_past_the_bound_is_refused() -> None:
    r = Reassembler(max_payload=100)
    pieces = split(b"z" * 300, 120)
    r.add("a", pieces[0], 0)
    with pytest.raises(ChunkError):
        r.add("a", pieces[1], 0)
    assert len(r) == 0 and r.held_bytes == 0


@given(st.binary(max_size=200))
def test_foreign_bytes_raise_only_protocol_errors(raw: bytes) -> None:
    r = Reassembler()
    with contextlib.suppress(ProtocolError):
        r.add("x", raw, 0)
    assert r.held_bytes <= len(raw)
