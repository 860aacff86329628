"""Mesh event frames: round trips, sizes, and the decoder against any bytes (Hypothesis)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kai_mesh.core.codec import pack
from kai_mesh.core.errors import Malformed, Oversize, ProtocolError, UsageError
from kai_mesh.core.events.interest import EventInterest, Seen
from kai_mesh.core.events.wire import (
    BUILTIN,
    MAX_EVENT,
    Event,
    Interest,
    decode,
    encode_event,
    encode_interest,
)
from kai_mesh.core.messaging.frames import FRAME_EVENT, frame_kind

ORIGIN = bytes(range(16))


def test_event_round_trip_and_builtin_topics_are_one_byte() -> None:
    frame = encode_event("service.scaled", 7, 1_700_000_000, {"service": "echo2", "to": 3})
    assert frame_kind(frame) == FRAME_EVENT
    got = decode(frame, ORIGIN)
    assert got == Event(
        topic="service.scaled",
        origin=ORIGIN,
        seq=7,
        at=1_700_000_000,
        fields={"service": "echo2", "to": 3},
    )
    user = encode_event("svc.scaled", 7, 1_700_000_000, {"service": "echo2", "to": 3})
    # A user topic costs its text plus a 1-byte header; a built-in costs its 1-byte code.
    assert len(user) - len(frame) == len("svc.scaled")
    assert len(frame) < 40


def test_interest_round_trip() -> None:
    frame = encode_interest({"task.created", "camera.motion", "*"}, 90)
    got = decode(frame, ORIGIN)
    assert got == Interest(topics=frozenset({"task.created", "camera.motion", "*"}), ttl=90)


@pytest.mark.parametrize(
    ("topic", "fields", "error"),
    [
        ("bad topic", {}, UsageError),
        ("*", {}, UsageError),
        ("ok", {"x": float("nan")}, Malformed),
        ("ok", {"x": object()}, Malformed),
        ("ok", {"x": 2**64}, Malformed),
        ("ok", {"a": {"b": {"c": {"d": [1]}}}}, Malformed),
        ("ok", {"x": "y" * MAX_EVENT}, Oversize),
    ],
)
def test_encode_refuses(topic: str, fields: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_event(topic, 1, 0, fields)


@pytest.mark.parametrize(
    "body",
    [
        [1, 99, 1, 0, {}],  # unknown built-in code
        [1, "*", 1, 0, {}],  # * is not a topic
        [1, "t", -1, 0, {}],
        [1, "t", 1, 0, []],
        [1, "t", 1, 0],
        [2, ["t"], 0],
        [2, ["t"] * 33, 10],
        [3],
        [],
        "x",
    ],
)
def test_decode_refuses_bad_shapes(body: object) -> None:
    with pytest.raises(ProtocolError):
        decode(bytes([FRAME_EVENT]) + pack(body), ORIGIN)


@settings(max_examples=500)
@given(st.binary(max_size=600))
def test_decode_any_bytes_is_an_event_or_a_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):  # anything else fails the test
        decode(bytes([FRAME_EVENT]) + data, ORIGIN)


_plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300)
@given(
    st.sampled_from([*BUILTIN, "user.topic", "a"]),
    st.integers(0, 2**63 - 1),
    st.dictionaries(st.text(min_size=1, max_size=8), _plain, max_size=5),
)
def test_any_valid_event_round_trips_or_is_refused_clearly(
    topic: str, seq: int, fields: dict[str, object]
) -> None:
    try:
        frame = encode_event(topic, seq, 5, fields)
    except (Malformed, Oversize):
        return  # too deep or too large: refused with one line, never sent
    got = decode(frame, ORIGIN)
    assert isinstance(got, Event) and got.topic == topic and got.seq == seq
    assert got.fields == fields
    assert len(frame) <= MAX_EVENT


def test_interest_is_told_on_change_to_new_peers_and_refreshed() -> None:
    a, b = b"a" * 16, b"b" * 16
    i = EventInterest(refresh=30.0)
    assert i.due([a, b], 0.0) == []  # wanting nothing, nobody is told
    assert i.set_want({"x"})
    assert i.due([a, b], 0.0) == [a, b]
    i.told(a, 0.0)
    i.told(b, 0.0)
    assert i.due([a, b], 10.0) == []
    assert i.get_timer() == 30.0
    assert i.due([a, b], 30.0) == [a, b]  # refresh before the peers' copies (ttl 90) run out
    i.told(a, 30.0)
    i.told(b, 30.0)
    i.set_want(set())
    assert i.due([a, b], 31.0) == [a, b]  # withdrawn: told once so they stop sending
    i.told(a, 31.0)
    i.told(b, 31.0)
    assert i.due([a, b], 100.0) == []


def test_publisher_sends_only_to_unexpired_matching_interest() -> None:
    a, b, c = b"a" * 16, b"b" * 16, b"c" * 16
    i = EventInterest()
    i.heard(a, frozenset({"x"}), 90, 0.0)
    i.heard(b, frozenset({"*"}), 10, 0.0)
    assert i.wanted_by("x", [a, b, c], 5.0) == [a, b]
    assert i.wanted_by("y", [a, b, c], 5.0) == [b]
    assert i.wanted_by("x", [a, b, c], 11.0) == [a]  # b's interest ran out
    assert i.wanted_by("x", [b, c], 5.0) == [b]  # a is not alive
    i.heard(a, frozenset(), 90, 6.0)
    assert i.wanted_by("x", [a], 7.0) == []


def test_seen_drops_repeats_and_is_bounded() -> None:
    s = Seen(limit=2)
    assert s.first(b"o", 1) and not s.first(b"o", 1)
    assert s.first(b"p", 1)
    assert s.first(b"o", 2)  # (o, 1) is now the oldest and goes
    assert s.first(b"o", 1)
