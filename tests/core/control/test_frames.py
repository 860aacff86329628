"""Control-socket framing and message shapes: splits, refusals, and fuzzing."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.codec import pack
from kai_mesh.core.control.frames import (
    BadRequest,
    ErrorReply,
    FrameDecoder,
    FrameInvalid,
    FrameReceived,
    FrameTooLarge,
    Push,
    Reply,
    Request,
    StreamTruncated,
    encode_frame,
    parse_request,
    parse_server_message,
)
from kai_mesh.core.errors import Malformed, Oversize, ProtocolError, UsageError
from tests.core.strategies import values


def _header(length: int) -> bytes:
    return struct.pack(">I", length)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(st.lists(values, max_size=6), st.lists(st.integers(min_value=0), max_size=12))
def test_frames_split_anywhere_decode_to_the_same_values(objs: list[Any], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(obj) for obj in objs)
    decoder = FrameDecoder()
    events = [event for piece in _split(stream, cuts) for event in decoder.feed(piece)]
    assert events == [FrameReceived(value=obj) for obj in objs]
    assert decoder.buffered == 0
    assert decoder.feed_eof() == []


@given(st.binary(max_size=512), st.lists(st.integers(min_value=0), max_size=8))
def test_random_bytes_only_produce_events(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(max_frame=256)
    events = [event for piece in _split(data, cuts) for event in decoder.feed(piece)]
    events += decoder.feed_eof()
    for event in events:
        if isinstance(event, FrameInvalid):
            assert isinstance(event.error, ProtocolError)
        else:
            assert isinstance(event, FrameReceived | FrameTooLarge | StreamTruncated)


@given(st.binary(max_size=64))
def test_arbitrary_bodies_are_decoded_or_refused_in_frame(body: bytes) -> None:
    decoder = FrameDecoder()
    (event, after) = decoder.feed(_header(len(body)) + body + encode_frame("next"))
    assert isinstance(event, FrameReceived | FrameInvalid)
    assert after == FrameReceived(value="next")  # a bad body never desynchronises the stream


@given(values)
def test_request_round_trip_through_frames(params: Any) -> None:
    request = Request(id=7, method="echo", params={"x": params})
    (event,) = FrameDecoder().feed(encode_frame(request.to_wire()))
    assert isinstance(event, FrameReceived)
    assert parse_request(event.value) == request


def test_invalid_body_is_reported_and_the_stream_continues() -> None:
    decoder = FrameDecoder()
    events = decoder.feed(_header(1) + b"\xc1" + encode_frame({"a": 1}))
    assert isinstance(events[0], FrameInvalid)
    assert isinstance(events[0].error, Malformed)
    assert events[1] == FrameReceived(value={"a": 1})


def test_trailing_bytes_in_a_body_are_invalid() -> None:
    body = pack(1) + pack(2)
    (event,) = FrameDecoder().feed(_header(len(body)) + body)
    assert isinstance(event, FrameInvalid)


def test_oversize_header_is_fatal_before_the_body_arrives() -> None:
    decoder = FrameDecoder(max_frame=100)
    assert decoder.feed(encode_frame("ok")) == [FrameReceived(value="ok")]
    events = decoder.feed(_header(10_000_000) + b"x" * 10)
    assert events == [FrameTooLarge(declared=10_000_000, limit=100)]
    assert decoder.broken
    assert decoder.feed(encode_frame("later")) == []
    assert decoder.feed_eof() == []


def test_frame_at_the_limit_is_accepted() -> None:
    body = pack("x" * 95)
    decoder = FrameDecoder(max_frame=len(body))
    assert decoder.feed(_header(len(body)) + body) == [FrameReceived(value="x" * 95)]


def test_eof_inside_a_frame_is_reported_once() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame("whole") + _header(10) + b"abc") == [
        FrameReceived(value="whole")
    ]
    assert decoder.buffered == 7
    assert decoder.feed_eof() == [StreamTruncated(buffered=7)]
    assert decoder.feed_eof() == []


def test_byte_at_a_time() -> None:
    stream = encode_frame({"id": 1, "method": "ping"}) * 3
    decoder = FrameDecoder()
    events = [e for i in range(len(stream)) for e in decoder.feed(stream[i : i + 1])]
    assert events == [FrameReceived(value={"id": 1, "method": "ping"})] * 3


@pytest.mark.parametrize("limit", [0, 3, 1 << 32, True])
def test_bad_limits_are_refused(limit: int) -> None:
    with pytest.raises(UsageError):
        FrameDecoder(max_frame=limit)


def test_encode_frame_refuses_oversize_and_unencodable() -> None:
    with pytest.raises(Oversize):
        encode_frame("x" * 200, max_frame=100)
    with pytest.raises(UsageError):
        encode_frame({1, 2})


@pytest.mark.parametrize(
    ("value", "request_id"),
    [
        ([1, "ping"], None),
        ("ping", None),
        ({"method": "ping"}, None),
        ({"id": "1", "method": "ping"}, None),
        ({"id": True, "method": "ping"}, None),
        ({"id": 1.0, "method": "ping"}, None),
        ({"id": 3}, 3),
        ({"id": 3, "method": ""}, 3),
        ({"id": 3, "method": b"ping"}, 3),
        ({"id": 3, "method": "x", "params": [1]}, 3),
        ({"id": 3, "method": "x", "params": {1: 2}}, 3),
    ],
)
def test_wrong_shapes_are_bad_requests(value: Any, request_id: int | None) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request(value)
    assert info.value.request_id == request_id
    assert info.value.reason == "bad_request"


def test_request_params_are_optional_and_extra_keys_ignored() -> None:
    assert parse_request({"id": 1, "method": "ping"}) == Request(id=1, method="ping")
    assert parse_request({"id": 1, "method": "ping", "params": None, "v": 2}).params == {}


def test_server_messages_parse() -> None:
    assert parse_server_message({"id": 1, "result": None}) == Reply(id=1, result=None)
    assert parse_server_message(
        {"id": None, "error": {"code": "bad_request", "message": "no"}}
    ) == ErrorReply(id=None, code="bad_request", message="no")
    assert parse_server_message({"event": "peers", "data": [1]}) == Push(topic="peers", data=[1])
    bad_messages: list[Any] = [
        [],
        {"id": None, "result": 1},
        {"id": 1},
        {"event": 5},
        {"id": 1, "error": "x"},
    ]
    for bad in bad_messages:
        with pytest.raises(Malformed):
            parse_server_message(bad)


def test_documented_example_frames() -> None:
    # The examples in docs/control-protocol.md.
    request = "00 00 00 11 82 a2 69 64 01 a6 6d 65 74 68 6f 64 a4 70 69 6e 67"
    reply = "00 00 00 11 82 a2 69 64 01 a6 72 65 73 75 6c 74 a4 70 6f 6e 67"
    assert encode_frame({"id": 1, "method": "ping"}) == bytes.fromhex(request)
    assert encode_frame(Reply(id=1, result="pong").to_wire()) == bytes.fromhex(reply)


def test_a_msgpack_timestamp_is_refused_not_echoed() -> None:
    body = msgpack.packb({"id": 1, "method": "echo", "params": {"t": msgpack.Timestamp(5)}})
    (event, after) = FrameDecoder().feed(_header(len(body)) + body + encode_frame("next"))
    assert isinstance(event, FrameInvalid) and "ext types" in str(event.error)
    assert after == FrameReceived(value="next")
