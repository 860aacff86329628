"""Asking for a lost reply: the ASK frame, the requester's schedule, the answerer's memory."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import Malformed, ProtocolError, Truncated, UnknownVersion, UsageError
from kai_mesh.core.messaging.frames import FRAME_ASK, frame_kind
from kai_mesh.core.messaging.reply_asks import (
    ASK_BYTES,
    AnsweredRequests,
    AskOp,
    AskSchedule,
    Resend,
    decode_ask,
    encode_ask,
)

MID = b"\x42" * 8
NODE = b"\x07" * 16
KEY = (NODE, MID)


# The frame -------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", list(AskOp))
def test_ask_round_trip_in_ten_bytes(op: AskOp) -> None:
    data = encode_ask(op, MID)
    assert len(data) == ASK_BYTES == 10
    assert frame_kind(data) == FRAME_ASK
    assert decode_ask(data) == (op, MID)


def test_ask_refusals() -> None:
    with pytest.raises(UsageError):
        encode_ask(AskOp.WHERE, b"short")
    with pytest.raises(Truncated):
        decode_ask(bytes([FRAME_ASK, 0]) + MID[:7])
    with pytest.raises(Truncated):
        decode_ask(bytes([FRAME_ASK, 0]) + MID + b"x")
    with pytest.raises(Malformed):
        decode_ask(bytes([FRAME_ASK, 9]) + MID)
    with pytest.raises(UnknownVersion):
        decode_ask(b"\x11" + bytes(9))


@given(data=st.binary(max_size=40))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    for candidate in (data, bytes([FRAME_ASK]) + data):
        with contextlib.suppress(ProtocolError):
            op, message_id = decode_ask(candidate)
            assert len(message_id) == 8 and op in AskOp


# The requester ---------------------------------------------------------------------------------


def test_asks_back_off_to_the_cap() -> None:
    schedule = AskSchedule(first=2.0, cap=10.0)
    schedule.start(100.0)
    assert schedule.next_at == 102.0
    times = []
    now = 102.0
    for _ in range(5):
        schedule.asked(now)
        times.append(schedule.next_at - now)
        now = schedule.next_at
    assert times == [4.0, 8.0, 10.0, 10.0, 10.0]
    schedule.start(200.0)  # a resent request starts over
    assert schedule.next_at == 202.0


def test_resends_are_bounded() -> None:
    schedule = AskSchedule(first=1.0, resends=2)
    assert [schedule.may_resend() for _ in range(4)] == [True, True, False, False]
    with pytest.raises(UsageError):
        AskSchedule(first=0.0)
    with pytest.raises(UsageError):
        AskSchedule(first=5.0, cap=1.0)


# The answerer ----------------------------------------------------------------------------------


def test_unknown_working_then_the_reply_again() -> None:
    answered = AnsweredRequests()
    assert answered.answer(KEY, 0.0, 1000.0, grace=1.0) is AskOp.UNKNOWN
    answered.serving(KEY, expires_at=2000, priority=3, wall=1000.0)
    assert answered.answer(KEY, 0.0, 1000.0, grace=1.0) is AskOp.WORKING  # the agent works
    answered.replying(KEY, b"reply")
    assert answered.answer(KEY, 5.0, 1000.0, grace=1.0) is AskOp.WORKING  # still being sent
    answered.sent(KEY, 10.0)
    assert answered.answer(KEY, 10.5, 1000.0, grace=1.0) is AskOp.WORKING  # crossed the reply
    assert answered.answer(KEY, 11.5, 1000.0, grace=1.0) == Resend(b"reply", 3)
    # Sent again at 11.5: an ask crossing that copy is not answered with a third.
    assert answered.answer(KEY, 12.0, 1000.0, grace=1.0) is AskOp.WORKING
    assert answered.answer(KEY, 13.0, 1000.0, grace=1.0) == Resend(b"reply", 3)


def test_another_node_asking_for_the_same_id_is_told_unknown() -> None:
    answered = AnsweredRequests()
    answered.serving(KEY, expires_at=2000, priority=1, wall=1000.0)
    answered.replying(KEY, b"reply")
    answered.sent(KEY, 0.0)
    assert answered.answer((b"\x08" * 16, MID), 50.0, 1000.0, grace=1.0) is AskOp.UNKNOWN


def test_expired_requests_are_forgotten() -> None:
    answered = AnsweredRequests()
    answered.serving(KEY, expires_at=1010, priority=1, wall=1000.0)
    assert len(answered) == 1
    assert answered.answer(KEY, 0.0, 1010.0, grace=1.0) is AskOp.UNKNOWN
    assert len(answered) == 0


def test_memory_is_bounded_by_entries_and_by_bytes() -> None:
    answered = AnsweredRequests(max_entries=3, max_bytes=100)
    keys = [(NODE, bytes([i]) * 8) for i in range(5)]
    for key in keys:
        answered.serving(key, expires_at=2000, priority=1, wall=0.0)
    assert len(answered) == 3
    assert answered.answer(keys[0], 0.0, 0.0, grace=1.0) is AskOp.UNKNOWN  # oldest forgotten
    answered.replying(keys[3], b"x" * 60)
    answered.replying(keys[4], b"y" * 60)  # 120 bytes: the oldest reply goes
    assert answered.answer(keys[3], 0.0, 0.0, grace=1.0) is AskOp.UNKNOWN
    answered.sent(keys[4], 0.0)
    assert answered.answer(keys[4], 5.0, 0.0, grace=1.0) == Resend(b"y" * 60, 1)
