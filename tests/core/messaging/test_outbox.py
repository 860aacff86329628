"""The outbox scheduler with plain numbers: backoff, heard-from retries, attempt timeouts,
hand-off, expiry, acks and a restart, then random input sequences against its invariants."""

from __future__ import annotations

import random

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kai_mesh.core.errors import UsageError
from kai_mesh.core.messaging.outbox import BUSY as _BUSY
from kai_mesh.core.messaging.outbox import (
    MAX_WINDOW,
    CancelSend,
    Command,
    Expire,
    HandOff,
    MarkDelivered,
    OutboxScheduler,
    Phase,
    Record,
    SendNow,
)
from kai_mesh.core.messaging.retry import RetryPolicy

POLICY = RetryPolicy(base=2.0, cap=15.0, jitter=0.25, handoff_after=60.0)
PEER, OTHER = b"p" * 16, b"o" * 16
M1, M2 = b"1" * 16, b"2" * 16
NO_PATH = "no path"


class Fixed:
    """An rng that always draws `u`."""

    def __init__(self, u: float = 0.0) -> None:
        self.u = u

    def random(self) -> float:
        return self.u


def scheduler(
    u: float = 0.0, *, can_hand_off: bool = False, policy: RetryPolicy = POLICY
) -> OutboxScheduler:
    return OutboxScheduler(policy, Fixed(u), attempt_timeout=60.0, can_hand_off=can_hand_off)


def add(s: OutboxScheduler, message_id: bytes = M1, *, now: float = 0.0, **kw: object) -> None:
    options: dict[str, object] = {"created_at": now, "expires_at": now + 3600.0, **kw}
    s.add(message_id, PEER, now=now, **options)  # type: ignore[arg-type]


def attempt(
    s: OutboxScheduler, now: float, ended: float | None = None, error: str | None = NO_PATH
) -> list[Command]:
    """Let the timer begin the attempt due at `now`; it ends at `ended` with `error`."""
    assert s.get_timer() is not None and s.get_timer() <= now  # type: ignore[operator]
    out = s.handle_timer(now)
    assert [type(c) for c in out] == [SendNow]
    return s.sent(out[0].message_id, now if ended is None else ended, error=error)


# ---- backoff -------------------------------------------------------------------------------------


def test_a_new_message_is_sent_at_once_over_the_link_there_is() -> None:
    s = scheduler()
    add(s, now=5.0)
    assert s.get_timer() == 5.0
    assert s.handle_timer(4.9) == []
    assert s.handle_timer(5.0) == [SendNow(message_id=M1, peer=PEER, fresh_link=False)]
    assert s.phase(M1) is Phase.SENDING
    assert s.handle_timer(5.0) == []  # one attempt at a time


def test_unacknowledged_attempts_back_off_exponentially_to_the_cap() -> None:
    s = scheduler(u=0.0)
    add(s)
    now, gaps = 0.0, []
    for n in range(1, 7):
        out = attempt(s, now)
        assert out == [Record(message_id=M1, attempts=n, last_error=NO_PATH, handed_off=False)]
        due = s.get_timer()
        assert due is not None
        gaps.append(due - now)
        assert s.handle_timer(due - 0.001) == []  # not a moment early
        now = due
    assert gaps == [2.0, 4.0, 8.0, 15.0, 15.0, 15.0]


def test_every_retry_asks_for_a_fresh_link() -> None:
    s = scheduler()
    add(s)
    attempt(s, 0.0)
    assert s.handle_timer(2.0) == [SendNow(message_id=M1, peer=PEER, fresh_link=True)]


@pytest.mark.parametrize(("u", "first_gap"), [(0.0, 2.0), (0.5, 1.75), (0.999, 1.5005)])
def test_the_jitter_comes_from_the_rng_it_is_given(u: float, first_gap: float) -> None:
    s = scheduler(u=u)
    add(s)
    attempt(s, 0.0)
    assert s.get_timer() == pytest.approx(first_gap)


def test_the_same_seed_gives_the_same_schedule() -> None:
    def schedule(seed: int) -> list[float]:
        s = OutboxScheduler(POLICY, random.Random(seed))
        add(s)
        now, out = 0.0, []
        for _ in range(5):
            attempt(s, now)
            now = s.get_timer()  # type: ignore[assignment]
            out.append(now)
        return out

    assert schedule(3) == schedule(3)
    assert schedule(3) != schedule(4)


def test_the_backoff_counts_from_the_end_of_the_attempt() -> None:
    s = scheduler()
    add(s)
    attempt(s, 0.0, ended=7.0)  # opening the link took 7 s
    assert s.get_timer() == 9.0


# ---- heard from the recipient --------------------------------------------------------------------


def test_hearing_from_the_recipient_retries_at_once() -> None:
    """The heal after a partition: delivery must not wait out the backoff."""
    s = scheduler()
    add(s)
    now = 0.0
    for _ in range(4):  # well into the backoff: the next try is 15 s away
        attempt(s, now)
        now = s.get_timer()  # type: ignore[assignment]
    attempt(s, now)
    assert s.get_timer() == now + 15.0
    assert s.heard_from(PEER, now + 3.0) == []
    assert s.get_timer() == now + 3.0
    assert s.handle_timer(now + 3.0) == [SendNow(message_id=M1, peer=PEER, fresh_link=True)]


def test_hearing_from_someone_else_changes_nothing() -> None:
    s = scheduler()
    add(s)
    attempt(s, 0.0)
    s.heard_from(OTHER, 1.0)
    assert s.get_timer() == 2.0


def test_a_message_just_sent_without_error_waits_for_its_ack_before_a_retry() -> None:
    """Sent 1 s ago and handed over fine: its ack may be on the way; a retry now would only
    double the traffic. After `base` seconds it is retried."""
    s = scheduler()
    add(s)
    attempt(s, 0.0, error=None)
    s.heard_from(PEER, 1.0)
    assert s.get_timer() == 2.0
    s2 = scheduler(policy=RetryPolicy(base=2.0, cap=15.0, jitter=0.0))
    add(s2)
    attempt(s2, 0.0, error=None)
    attempt(s2, 2.0, error=None)  # next due at 6
    s2.heard_from(PEER, 3.9)  # 1.9 s after the last attempt: too soon
    assert s2.get_timer() == 6.0
    s2.heard_from(PEER, 4.0)  # base (2 s) after it
    assert s2.get_timer() == 4.0


def test_a_failed_attempt_is_retried_on_contact_however_recent() -> None:
    s = scheduler()
    add(s)
    attempt(s, 0.0, error=NO_PATH)
    s.heard_from(PEER, 0.1)
    assert s.get_timer() == 0.1


def test_hearing_from_the_recipient_never_delays_a_due_attempt() -> None:
    s = scheduler()
    add(s, now=1.0)
    s.heard_from(PEER, 5.0)  # never tried: nothing to bring forward
    assert s.get_timer() == 1.0


def test_an_attempt_begun_before_the_heal_is_cancelled_and_begun_again() -> None:
    s = scheduler()
    add(s)
    assert s.handle_timer(0.0)  # opening a link over a partition: it hangs
    assert s.heard_from(PEER, 14.9) == []  # begun less than `cap` ago: let it finish
    assert s.heard_from(PEER, 15.0) == [CancelSend(message_id=M1)]
    assert s.heard_from(PEER, 16.0) == []  # cancelled once
    out = s.sent(M1, 15.1, cancelled=True)
    assert out == [
        Record(
            message_id=M1,
            attempts=1,
            last_error="interrupted: the recipient was heard again",
            handed_off=False,
        )
    ]
    assert s.get_timer() == 15.1  # begun again at once, without backoff
    assert s.handle_timer(15.1) == [SendNow(message_id=M1, peer=PEER, fresh_link=True)]


# ---- attempt timeout ----------------------------------------------------------------------------


def test_an_attempt_that_overruns_is_cancelled_and_counts_as_failed() -> None:
    s = scheduler()
    add(s)
    s.handle_timer(0.0)
    assert s.get_timer() == 60.0
    assert s.handle_timer(59.9) == []
    assert s.handle_timer(60.0) == [CancelSend(message_id=M1)]
    assert s.get_timer() is None  # the shell is cancelling it
    assert s.heard_from(PEER, 61.0) == []  # already cancelled: it stays a timeout
    out = s.sent(M1, 60.5, cancelled=True)
    assert out == [
        Record(
            message_id=M1,
            attempts=1,
            last_error="could not hand the message over in 60 s",
            handed_off=False,
        )
    ]
    assert s.get_timer() == 62.5  # the backoff, not at once


# ---- hand-off ----------------------------------------------------------------------------------


def test_a_message_unacknowledged_for_handoff_after_is_left_with_store_and_forward() -> None:
    s = scheduler(can_hand_off=True)
    add(s)
    now = 0.0
    while now < 60.0:
        assert [type(c) for c in attempt(s, now)] == [Record]
        now = s.get_timer()  # type: ignore[assignment]
    assert now == 2 + 4 + 8 + 15 + 15 + 15 + 15  # 74: the first attempt to end after 60 s
    assert attempt(s, now) == [HandOff(message_id=M1, peer=PEER)]
    assert s.phase(M1) is Phase.HANDING_OFF
    assert s.get_timer() is None  # nothing is sent meanwhile
    out = s.handed_off(M1, now + 1.0, taken=True)
    assert out == [Record(message_id=M1, attempts=8, last_error=NO_PATH, handed_off=True)]
    assert s.get_timer() == now + 1.0 + 15.0  # direct retries go on
    assert [type(c) for c in attempt(s, now + 16.0)] == [Record]  # handed off once


def test_a_handoff_not_taken_is_offered_again_after_the_next_attempt() -> None:
    s = scheduler(can_hand_off=True)
    add(s, created_at=-100.0)
    assert attempt(s, 0.0) == [HandOff(message_id=M1, peer=PEER)]
    assert s.handed_off(M1, 0.0, taken=False)[0].handed_off is False  # type: ignore[union-attr]
    assert attempt(s, 2.0) == [HandOff(message_id=M1, peer=PEER)]


def test_a_handoff_after_a_heard_from_interruption_still_retries_at_once() -> None:
    s = scheduler(can_hand_off=True)
    add(s, created_at=-100.0)
    s.handle_timer(0.0)
    s.heard_from(PEER, 20.0)
    assert s.sent(M1, 20.0, cancelled=True) == [HandOff(message_id=M1, peer=PEER)]
    s.handed_off(M1, 21.0, taken=True)
    assert s.get_timer() == 21.0


def test_without_store_and_forward_nothing_is_handed_off() -> None:
    s = scheduler(can_hand_off=False)
    add(s, created_at=-100.0)
    assert [type(c) for c in attempt(s, 0.0)] == [Record]


# ---- expiry ------------------------------------------------------------------------------------


def test_a_message_past_its_expiry_is_given_up_when_its_attempt_comes_due() -> None:
    s = scheduler()
    add(s, expires_at=5.0)
    attempt(s, 0.0)  # next at 2
    attempt(s, 2.0)  # next at 6, past the expiry
    assert s.handle_timer(5.9) == []
    assert s.handle_timer(6.0) == [Expire(message_id=M1)]
    assert M1 not in s and len(s) == 0
    assert s.get_timer() is None
    assert s.acked(PEER, [M1], 7.0) == []  # a late ack settles nothing


def test_a_message_expiring_now_is_not_sent() -> None:
    s = scheduler()
    add(s, now=10.0, expires_at=10.0)
    assert s.handle_timer(10.0) == [Expire(message_id=M1)]


# ---- acks --------------------------------------------------------------------------------------


def test_an_ack_settles_the_message_once_and_only_from_its_recipient() -> None:
    s = scheduler()
    add(s)
    add(s, M2)
    attempt_all = s.handle_timer(0.0)
    assert len(attempt_all) == 2
    assert s.acked(OTHER, [M1], 0.1) == []  # not sent to OTHER
    assert s.acked(PEER, [M1, b"x" * 16], 0.1) == [MarkDelivered(message_id=M1)]
    assert s.acked(PEER, [M1], 0.2) == []
    assert s.sent(M1, 0.3) == []  # the attempt that ends after its ack changes nothing
    assert M1 not in s and M2 in s
    assert s.get_timer() == 60.0  # M2's attempt timeout only


def test_an_ack_during_a_handoff_is_final() -> None:
    s = scheduler(can_hand_off=True)
    add(s, created_at=-100.0)
    assert attempt(s, 0.0) == [HandOff(message_id=M1, peer=PEER)]
    assert s.acked(PEER, [M1], 1.0) == [MarkDelivered(message_id=M1)]
    assert s.handed_off(M1, 2.0, taken=True) == []
    assert M1 not in s and s.get_timer() is None


# ---- restart -------------------------------------------------------------------------------------


def test_a_message_found_after_a_restart_resumes_its_count_over_a_fresh_link() -> None:
    s = scheduler(can_hand_off=True)
    add(s, now=1000.0, created_at=900.0, attempts=2, last_error=NO_PATH, handed_off=True)
    assert s.get_timer() == 1000.0
    assert s.handle_timer(1000.0) == [SendNow(message_id=M1, peer=PEER, fresh_link=True)]
    out = s.sent(M1, 1000.0, error=NO_PATH)
    assert out == [Record(message_id=M1, attempts=3, last_error=NO_PATH, handed_off=True)]
    assert s.get_timer() == 1008.0  # the backoff of the 3rd attempt, not the first's


def test_a_message_found_after_a_restart_is_retried_on_contact() -> None:
    s = scheduler()
    add(s, now=1000.0, attempts=2)
    attempt(s, 1000.0, error=None)  # tried once since the start, no error
    s.heard_from(PEER, 1001.0)  # too soon for a retry
    assert s.get_timer() == 1000.0 + 8.0


def test_bad_inputs_are_refused() -> None:
    s = scheduler()
    add(s)
    with pytest.raises(UsageError):
        add(s)
    with pytest.raises(UsageError):
        add(s, b"")
    with pytest.raises(UsageError):
        add(s, M2, attempts=-1)
    with pytest.raises(UsageError):
        OutboxScheduler(POLICY, Fixed(), attempt_timeout=0)
    with pytest.raises(UsageError):
        Record(message_id=M1, attempts=0, last_error=None, handed_off=False)


# ---- several messages ----------------------------------------------------------------------------


def test_contact_retries_each_of_the_peers_messages_that_may_go_and_no_other() -> None:
    """In the order added: one for another peer, one under way, one whose ack may be on its way,
    one failed: only the failed one is brought forward, however the others stand."""
    m0, m3 = b"0" * 16, b"3" * 16
    s = scheduler(policy=RetryPolicy(base=2.0, cap=15.0, jitter=0.0))
    s.add(m0, OTHER, now=0.0, created_at=0.0, expires_at=3600.0)
    add(s, M1)
    add(s, M2)
    add(s, m3)
    assert len(s.handle_timer(0.0)) == 4
    s.sent(m0, 0.0, error=NO_PATH)
    s.sent(M2, 0.0, error=None)
    s.sent(m3, 0.0, error=NO_PATH)
    assert s.heard_from(PEER, 1.0) == []
    assert (s.due(m0), s.due(M1), s.due(M2), s.due(m3)) == (2.0, None, 2.0, 1.0)


def test_one_message_expiring_does_not_hold_up_the_next() -> None:
    s = scheduler()
    add(s, M1, expires_at=1.0)
    add(s, M2)
    assert s.handle_timer(1.0) == [
        Expire(message_id=M1),
        SendNow(message_id=M2, peer=PEER, fresh_link=False),
    ]


def test_an_ack_for_several_ids_settles_each_one_of_ours() -> None:
    s = scheduler()
    add(s, M1)
    add(s, M2)
    out = s.acked(PEER, [b"x" * 16, M2, M1], 0.0)
    assert out == [MarkDelivered(message_id=M2), MarkDelivered(message_id=M1)]


def test_every_attempt_has_its_own_timeout() -> None:
    s = scheduler()
    add(s, now=100.0)
    s.handle_timer(100.0)
    s.handle_timer(160.0)
    s.sent(M1, 160.0, cancelled=True)  # timed out; next at 162
    assert s.handle_timer(162.0)
    assert s.get_timer() == 222.0
    assert s.handle_timer(222.0) == [CancelSend(message_id=M1)]


def test_contact_cancels_only_an_attempt_begun_cap_seconds_ago() -> None:
    s = scheduler()
    add(s, now=100.0)
    s.handle_timer(100.0)
    assert s.heard_from(PEER, 114.9) == []
    assert s.heard_from(PEER, 115.0) == [CancelSend(message_id=M1)]


def test_a_restarted_message_heard_from_before_its_first_try_goes_at_once() -> None:
    s = scheduler()
    add(s, now=1000.0, attempts=2)
    assert s.heard_from(PEER, 1000.5) == []
    assert s.due(M1) == 1000.0


def test_the_defaults_are_the_runtime_s() -> None:
    s = OutboxScheduler(POLICY, Fixed())
    assert (s.attempt_timeout, s.can_hand_off) == (60.0, False)
    add(s, created_at=-100.0)
    s.handle_timer(0.0)
    assert s.get_timer() == 60.0
    assert [type(c) for c in s.sent(M1, 0.0, error=NO_PATH)] == [Record]  # no store-and-forward
    assert s.phase(M1) is Phase.WAITING and s.due(M1) == 2.0
    assert s.phase(M2) is None and s.due(M2) is None


# ---- random input sequences --------------------------------------------------------------------

_IDS = [bytes([i]) * 8 for i in range(3)]
_PEERS = [PEER, OTHER]
_INTERRUPTED = "interrupted: the recipient was heard again"


# ---- a busy recipient ----------------------------------------------------------------------------


def send_all(s: OutboxScheduler, now: float) -> list[bytes]:
    """Begin every attempt due at `now`; each ends at once without error. Their ids."""
    ids = [c.message_id for c in s.handle_timer(now) if isinstance(c, SendNow)]
    for message_id in ids:
        s.sent(message_id, now)
    return ids


def ids(n: int) -> list[bytes]:
    return [i.to_bytes(16, "big") for i in range(n)]


def test_a_busy_answer_retries_after_base_over_the_same_link() -> None:
    s = scheduler()
    add(s)
    attempt(s, 0.0, error=None)  # its own backoff would be 2 s, then 4, 8...
    assert s.busy(PEER, M1, 0.5) == []
    assert s.due(M1) == 0.5 + POLICY.base
    (again,) = s.handle_timer(2.5)
    assert isinstance(again, SendNow) and not again.fresh_link  # reachable: keep the link
    s.sent(M1, 2.5)
    (third,) = s.handle_timer(2.5 + POLICY.delay(2, 0.0))  # no answer this time: a fresh link
    assert isinstance(third, SendNow) and third.fresh_link


def test_busy_halves_the_peers_window_and_attempts_wait_for_answers() -> None:
    """40 messages out at once, all but 4 dropped BUSY: the window shrinks, and the next round
    sends only as many as it allows, not 36 again."""
    s = scheduler()
    for message_id in ids(40):
        add(s, message_id)
    assert len(send_all(s, 0.0)) == 40  # an unlimited peer until it says busy
    for message_id in ids(40)[4:]:
        s.busy(PEER, message_id, 0.1)
    assert s.window(PEER) == 1  # 40 awaiting → 20 → 10 → ... → 1
    assert s.window(OTHER) is None
    # At 2.1 s the 4 unanswered ones are past their backoff (lost) and the 36 busy ones due:
    # one attempt goes, not 40.
    assert send_all(s, 0.1 + POLICY.base) == ids(40)[:1]
    got = s.acked(PEER, ids(40)[:2], 3.0)
    assert [type(c) for c in got] == [MarkDelivered, MarkDelivered]
    assert s.window(PEER) == 3  # one more per ack
    assert len(send_all(s, 3.0)) == 3
    assert send_all(s, 3.5) == []
    timer = s.get_timer()
    assert timer is not None and timer > 3.0  # held messages never make the driver spin


def test_held_messages_go_when_an_attempt_goes_unanswered() -> None:
    s = scheduler()
    add(s, ids(3)[0], attempts=2)  # tried twice before a restart: its backoff is 8 s now
    for message_id in ids(3)[1:]:
        add(s, message_id)
    send_all(s, 0.0)
    s.busy(PEER, ids(3)[1], 0.0)
    s.busy(PEER, ids(3)[2], 0.0)
    assert s.window(PEER) == 1
    assert send_all(s, POLICY.base) == []  # message 0 awaits its ack: the window is full
    assert s.get_timer() == POLICY.delay(3, 0.0)
    lost_after = POLICY.delay(3, 0.0)  # message 0's backoff ends without an answer
    assert sorted(send_all(s, lost_after)) == [ids(3)[0]]  # it goes again, the window allows 1
    assert s.phase(ids(3)[1]) is Phase.WAITING and s.phase(ids(3)[2]) is Phase.WAITING


def test_acks_grow_the_window_back_to_unlimited() -> None:
    s = scheduler()
    for message_id in ids(MAX_WINDOW + 2):
        add(s, message_id)
    first = send_all(s, 0.0)
    s.busy(PEER, first[0], 0.0)
    s.busy(PEER, first[1], 0.0)
    assert s.window(PEER) == (MAX_WINDOW + 2) // 4
    s.acked(PEER, first[2:], 1.0)
    assert s.window(PEER) is None


def test_hearing_from_a_busy_peer_does_not_make_its_messages_due() -> None:
    s = scheduler()
    add(s)
    add(s, M2)
    send_all(s, 0.0)
    s.busy(PEER, M2, 0.0)
    assert s.heard_from(PEER, 1.0) == []
    assert s.due(M1) == POLICY.delay(1, 0.0)  # still its backoff, not 1.0


def test_busy_that_overtakes_the_end_of_the_send_applies_when_it_ends() -> None:
    s = scheduler()
    add(s)
    assert [type(c) for c in s.handle_timer(0.0)] == [SendNow]
    assert s.busy(PEER, M1, 0.01) == []
    (record,) = s.sent(M1, 0.02)
    assert isinstance(record, Record) and record.last_error == _BUSY
    assert s.due(M1) == 0.02 + POLICY.base


def test_busy_for_another_peers_message_is_ignored() -> None:
    s = scheduler()
    add(s)
    send_all(s, 0.0)
    assert s.busy(OTHER, M1, 0.1) == [] and s.window(OTHER) is None
    assert s.due(M1) == POLICY.delay(1, 0.0)


class SchedulerModel(RuleBasedStateMachine):
    """Random inputs against the invariants: at most one attempt per message at a time; each
    message settles at most once and hears nothing after; attempts count up by one; nothing is
    sent at or after its expiry; a handled timer lies in the future (the driver never spins); a
    retry comes no sooner than the shortest backoff unless the recipient was heard from."""

    def __init__(self) -> None:
        super().__init__()
        self.s = OutboxScheduler(POLICY, random.Random(0), can_hand_off=True)
        self.now = 0.0
        self.peer_of: dict[bytes, bytes] = {}
        self.expires: dict[bytes, float] = {}
        self.attempts: dict[bytes, int] = {}
        self.earliest: dict[bytes, float] = {}  # no SendNow before, unless heard from
        self.sending: set[bytes] = set()
        self.cancelling: set[bytes] = set()
        self.handing: set[bytes] = set()
        self.settled: set[bytes] = set()
        self.busied: set[bytes] = set()  # answered BUSY since their last SendNow

    @initialize(seed=st.integers(0, 2**32 - 1))
    def seed(self, seed: int) -> None:
        self.s = OutboxScheduler(POLICY, random.Random(seed), can_hand_off=True)

    def check(self, out: list[Command]) -> None:
        for c in out:
            event(type(c).__name__)
            mid = c.message_id
            assert mid not in self.settled
            if isinstance(c, SendNow):
                assert mid not in self.sending and mid not in self.handing
                assert self.now < self.expires[mid]
                assert self.now >= self.earliest.get(mid, self.now)
                # A retry goes over a fresh link, except right after a BUSY (the link works).
                assert c.fresh_link == (self.attempts[mid] > 0 and mid not in self.busied)
                self.busied.discard(mid)
                self.sending.add(mid)
            elif isinstance(c, CancelSend):
                assert mid in self.sending
                self.cancelling.add(mid)
            elif isinstance(c, HandOff):
                self.attempts[mid] += 1  # the attempt before it ended
                self.handing.add(mid)
            elif isinstance(c, Record):
                assert c.attempts == self.attempts[mid] + (0 if mid in self.handing else 1)
                self.attempts[mid] = c.attempts
                self.handing.discard(mid)
                shortest = POLICY.delay(c.attempts, 0.999999)
                if c.last_error == _BUSY:  # BUSY came back before the send was over
                    shortest = POLICY.base * (1 - POLICY.jitter)
                again = c.last_error == _INTERRUPTED
                self.earliest[mid] = self.now if again else self.now + shortest * 0.999
            else:
                assert isinstance(c, MarkDelivered | Expire)
                if isinstance(c, Expire):
                    assert self.now >= self.expires[mid]
                    assert mid not in self.sending and mid not in self.handing
                self.settled.add(mid)
                for held in (self.sending, self.cancelling, self.handing):
                    held.discard(mid)

    @rule(mid=st.sampled_from(_IDS), peer=st.sampled_from(_PEERS), ttl=st.floats(1, 400))
    def add(self, mid: bytes, peer: bytes, ttl: float) -> None:
        if mid in self.peer_of:
            return
        self.s.add(mid, peer, now=self.now, created_at=self.now, expires_at=self.now + ttl)
        self.peer_of[mid], self.expires[mid], self.attempts[mid] = peer, self.now + ttl, 0

    @rule(peer=st.sampled_from(_PEERS))
    def heard(self, peer: bytes) -> None:
        for mid, p in self.peer_of.items():
            if p == peer:
                self.earliest.pop(mid, None)
        self.check(self.s.heard_from(peer, self.now))

    @rule(peer=st.sampled_from(_PEERS), mid=st.sampled_from(_IDS))
    def busy(self, peer: bytes, mid: bytes) -> None:
        assert self.s.busy(peer, mid, self.now) == []
        if self.peer_of.get(mid) != peer or mid in self.settled or mid in self.handing:
            return
        self.busied.add(mid)
        if mid not in self.sending:  # due after `base` (less the jitter), not the backoff
            self.earliest[mid] = self.now + POLICY.base * (1 - POLICY.jitter) * 0.999

    @rule(peer=st.sampled_from(_PEERS), mid=st.sampled_from(_IDS))
    def ack(self, peer: bytes, mid: bytes) -> None:
        self.check(self.s.acked(peer, [mid], self.now))

    @rule(delta=st.floats(0, 90) | st.sampled_from([2.0, 15.0, 30.0, 61.0]))
    def wait(self, delta: float) -> None:
        """Time passes up to the next timer, which the driver then serves."""
        due = self.s.get_timer()
        self.now = self.now + delta if due is None else min(self.now + delta, max(due, self.now))
        if due is not None and due <= self.now:
            self.check(self.s.handle_timer(self.now))
            after = self.s.get_timer()
            assert after is None or after > self.now

    @rule(n=st.integers(0, 2), failed=st.booleans())
    def end_attempt(self, n: int, failed: bool) -> None:
        if n < len(self.sending):
            mid = sorted(self.sending)[n]
            self.sending.discard(mid)
            cancelled = mid in self.cancelling
            self.cancelling.discard(mid)
            error = NO_PATH if failed else None
            self.check(self.s.sent(mid, self.now, error=error, cancelled=cancelled))

    @rule(n=st.integers(0, 2), taken=st.booleans())
    def end_handoff(self, n: int, taken: bool) -> None:
        if n < len(self.handing):
            self.check(self.s.handed_off(sorted(self.handing)[n], self.now, taken=taken))

    @invariant()
    def counts(self) -> None:
        assert len(self.s) == len(set(self.peer_of) - self.settled)


TestSchedulerModel = SchedulerModel.TestCase
TestSchedulerModel.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
