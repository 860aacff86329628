"""The replica's running totals: `refused` and `counters` add up across calls, where each
`Received` counts one call only. Written against mutants that reset a total instead of adding to
it (docs/mutation.md)."""

from __future__ import annotations

from tests.core.state.test_replica import make, put


def test_refusals_and_duplicates_add_up_across_calls() -> None:
    w, r = make(0), make(1)
    records = w.transact(put("a", 1)) + w.transact(put("b", 2))
    assert r.receive(records).entries == records[1:]
    r.receive(records)
    r.receive(records[1:])
    assert r.counters["duplicates"] == 3 + 2
    assert r.receive([b"", b"\x07junk"]).refused == {"malformed": 1, "unknown_version": 1}
    assert r.receive([b""]).refused == {"malformed": 1}
    assert r.refused == {"malformed": 2, "unknown_version": 1}
