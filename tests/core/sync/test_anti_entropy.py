"""The anti-entropy session machine, with plain numbers for time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import UsageError
from kai_mesh.core.sync.anti_entropy import AntiEntropy, AskSync

A, B, C = b"a" * 16, b"b" * 16, b"c" * 16
OURS, THEIRS, OTHER = b"o" * 8, b"t" * 8, b"x" * 8


def machine(min_gap: float = 2.0, session_timeout: float | None = None) -> AntiEntropy:
    sync = AntiEntropy(min_gap=min_gap, session_timeout=session_timeout)
    sync.local_digest(OURS)
    return sync


def test_a_differing_digest_asks_and_a_matching_one_does_not() -> None:
    sync = machine()
    assert sync.digest_heard(A, OURS, 0.0) == []
    assert sync.digest_heard(B, THEIRS, 0.0) == [AskSync(peer=B)]
    assert sync.heard(A) == OURS and sync.heard(B) == THEIRS
    assert sorted(sync.known()) == [A, B]


def test_nothing_is_asked_before_our_digest_is_known_but_theirs_is_kept() -> None:
    sync = AntiEntropy(min_gap=2.0)
    assert sync.digest_heard(A, THEIRS, 0.0) == []
    assert sync.heard(A) == THEIRS
    assert sync.idle([A], 100.0, quiet_for=10.0) == []
    sync.local_digest(OURS)
    assert sync.digest_heard(A, THEIRS, 0.5) == [AskSync(peer=A)]
    sync.local_digest(None)  # not ready again (the shell is not running)
    assert sync.digest_heard(A, THEIRS, 10.0) == []


def test_at_most_one_ask_per_peer_per_gap() -> None:
    sync = machine(min_gap=2.0)
    assert sync.digest_heard(A, THEIRS, 10.0) == [AskSync(peer=A)]
    assert sync.digest_heard(A, THEIRS, 11.0) == []
    assert sync.digest_heard(A, THEIRS, 11.999) == []
    assert sync.digest_heard(B, THEIRS, 11.0) == [AskSync(peer=B)]  # per peer
    assert sync.digest_heard(A, THEIRS, 12.0) == [AskSync(peer=A)]  # the gap is inclusive
    assert sync.digest_heard(A, THEIRS, 13.0) == []


def test_the_gap_can_be_raised_after_construction() -> None:
    sync = machine(min_gap=2.0)
    sync.min_gap = 5.0  # the wiring: no more than one per heartbeat on a slow link
    assert sync.session_timeout == 5.0
    assert sync.digest_heard(A, THEIRS, 0.0) == [AskSync(peer=A)]
    assert sync.digest_heard(A, THEIRS, 4.0) == []
    assert sync.digest_heard(A, THEIRS, 5.0) == [AskSync(peer=A)]


def test_an_ask_is_in_flight_until_done_or_timed_out() -> None:
    sync = machine(min_gap=2.0, session_timeout=10.0)
    assert sync.digest_heard(A, THEIRS, 0.0) == [AskSync(peer=A)]
    assert sync.in_flight(A) and sync.get_timer() == 10.0
    assert sync.digest_heard(A, THEIRS, 5.0) == []  # past the gap, but still in flight
    assert sync.handle_timer(9.9) == [] and sync.in_flight(A)
    assert sync.handle_timer(10.0) == [] and not sync.in_flight(A)
    assert sync.get_timer() is None
    assert sync.digest_heard(A, THEIRS, 10.5) == [AskSync(peer=A)]


def test_a_digest_that_changes_during_a_session_is_asked_again_once_it_is_done() -> None:
    sync = machine(min_gap=2.0, session_timeout=10.0)
    assert sync.digest_heard(A, THEIRS, 0.0) == [AskSync(peer=A)]
    assert sync.digest_heard(A, OTHER, 1.0) == []  # the peer moved on meanwhile
    # Done before the gap is over: asked again when the gap allows, by the timer.
    assert sync.sync_done(A, 1.5) == []
    assert not sync.in_flight(A) and sync.get_timer() == 2.0
    assert sync.handle_timer(1.9) == []
    assert sync.handle_timer(2.0) == [AskSync(peer=A)]
    assert sync.in_flight(A) and sync.get_timer() == 12.0
    # Done after the gap: asked again at once.
    assert sync.digest_heard(A, THEIRS, 3.0) == []
    assert sync.sync_done(A, 4.5) == [AskSync(peer=A)]


def test_no_second_ask_when_we_caught_up_or_the_session_timed_out() -> None:
    sync = machine(min_gap=2.0, session_timeout=10.0)
    sync.digest_heard(A, THEIRS, 0.0)
    sync.digest_heard(A, OTHER, 1.0)
    sync.local_digest(OTHER)  # the session brought us level with it
    assert sync.sync_done(A, 5.0) == []
    assert sync.get_timer() is None

    sync.local_digest(OURS)
    assert sync.digest_heard(B, THEIRS, 0.0) == [AskSync(peer=B)]
    sync.digest_heard(B, OTHER, 1.0)  # behind, but the session never ends well
    assert sync.handle_timer(10.0) == []
    assert sync.get_timer() is None  # the mark went with the session


def test_a_matching_digest_during_a_session_clears_the_mark() -> None:
    sync = machine(min_gap=2.0, session_timeout=10.0)
    sync.digest_heard(A, THEIRS, 0.0)
    sync.digest_heard(A, OTHER, 1.0)
    sync.digest_heard(A, OURS, 2.0)
    assert sync.sync_done(A, 3.0) == [] and sync.get_timer() is None


def test_with_the_default_timeout_in_flight_is_the_gap() -> None:
    """The shells call no `sync_done` yet: then an ask blocks exactly `min_gap`, no more."""
    sync = machine(min_gap=3.0)
    assert sync.digest_heard(A, THEIRS, 0.0) == [AskSync(peer=A)]
    assert sync.digest_heard(A, OTHER, 2.0) == []
    assert sync.get_timer() == 3.0
    assert sync.handle_timer(3.0) == []
    assert sync.digest_heard(A, OTHER, 3.0) == [AskSync(peer=A)]


def test_ask_now_ignores_the_limits_and_counts_as_an_ask() -> None:
    sync = machine(min_gap=2.0)
    assert sync.digest_heard(A, THEIRS, 0.0) == [AskSync(peer=A)]
    assert sync.ask_now(A, 0.5) == AskSync(peer=A)
    assert sync.ask_now(C, 0.5) == AskSync(peer=C)  # a peer never heard from
    assert sync.digest_heard(A, THEIRS, 2.0) == []  # the forced ask started the gap again
    assert sync.digest_heard(A, THEIRS, 2.5) == [AskSync(peer=A)]


def test_idle_peers_are_asked_within_the_same_limits() -> None:
    sync = machine(min_gap=2.0)
    sync.digest_heard(A, OURS, 0.0)  # heard, in sync
    assert sync.idle([A, B], 5.0, quiet_for=10.0) == [AskSync(peer=B)]  # never heard from B
    assert sync.idle([A, B], 6.0, quiet_for=10.0) == []  # B: in the gap
    assert sync.idle([A, B], 10.0, quiet_for=10.0) == [AskSync(peer=B)]
    assert sync.idle([A], 10.5, quiet_for=10.0) == [AskSync(peer=A)]  # quiet for over 10 s
    assert sync.idle([A], 11.0, quiet_for=10.0) == []


def test_a_lost_peer_is_forgotten() -> None:
    sync = machine(min_gap=2.0, session_timeout=10.0)
    sync.digest_heard(A, THEIRS, 0.0)
    sync.digest_heard(A, OTHER, 1.0)
    sync.peer_lost(A)
    assert sync.heard(A) is None and A not in sync.known() and not sync.in_flight(A)
    assert sync.get_timer() is None
    assert sync.sync_done(A, 2.0) == []
    sync.peer_lost(A)  # twice is fine
    assert sync.digest_heard(A, THEIRS, 1.5) == [AskSync(peer=A)]  # a fresh start, no gap


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UsageError):
        AntiEntropy(min_gap=-1.0)
    with pytest.raises(UsageError):
        AntiEntropy(min_gap=1.0, session_timeout=-1.0)


_steps = st.lists(
    st.tuples(
        st.sampled_from(["heard", "done", "now", "lost", "idle", "timer", "ours"]),
        st.sampled_from([A, B]),
        st.sampled_from([OURS, THEIRS, OTHER]),
        st.floats(0.0, 3.0),
    ),
    max_size=40,
)


@given(_steps, st.floats(0.0, 4.0), st.none() | st.floats(0.0, 8.0))
def test_asks_keep_the_gap_and_the_timer_never_lies_behind(
    steps: list[tuple[str, bytes, bytes, float]], gap: float, timeout: float | None
) -> None:
    """Whatever comes in: unforced asks to one peer are at least `min_gap` apart and never
    while one is in flight, and `handle_timer` leaves the timer in the future."""
    sync = machine(min_gap=gap, session_timeout=timeout)
    now = 0.0
    last: dict[bytes, float] = {}
    for op, peer, digest, dt in steps:
        now += dt
        due = sync.get_timer()
        if due is not None and due <= now:
            asks = sync.handle_timer(now)
            for ask in asks:
                assert now - last.get(ask.peer, -1e9) >= gap
                last[ask.peer] = now
            after = sync.get_timer()
            assert after is None or after > now or sync.session_timeout == 0
        busy = sync.in_flight(peer)
        if op == "heard":
            asks = sync.digest_heard(peer, digest, now)
        elif op == "done":
            asks = sync.sync_done(peer, now)
        elif op == "now":
            asks = [sync.ask_now(peer, now)]
            last[peer] = now
            continue
        elif op == "lost":
            sync.peer_lost(peer)
            last.pop(peer, None)
            asks = []
        elif op == "idle":
            asks = sync.idle([peer], now, quiet_for=5.0)
        elif op == "ours":
            sync.local_digest(digest)
            asks = []
        else:
            asks = sync.handle_timer(now)
        for ask in asks:
            assert ask.peer == peer or op == "timer"
            assert now - last.get(ask.peer, -1e9) >= gap
            assert not busy or op in ("done", "timer")
            last[ask.peer] = now
