"""The BATCH frame: round trips, exact sizes, every refusal, a decoder fuzzed with arbitrary bytes,
and which queued frames `take_packet` puts in the next packet."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import (
    Malformed,
    Oversize,
    ProtocolError,
    Truncated,
    UnknownVersion,
    UsageError,
)
from kai_mesh.core.messaging.batch import (
    FRAME_BATCH,
    MAX_BATCH_BYTES,
    MAX_BATCH_FRAMES,
    Queued,
    batch_size,
    decode_batch,
    encode_batch,
    take_packet,
    varint_size,
)
from kai_mesh.core.messaging.envelope import Priority
from kai_mesh.core.messaging.frames import FRAME_ACKS, frame_kind

# A frame is anything non-empty that does not start with the batch byte.
frames_st = st.binary(min_size=1, max_size=300).filter(lambda b: b[0] != FRAME_BATCH)


@given(st.lists(frames_st, min_size=2, max_size=40))
def test_round_trip_and_exact_size(frames: list[bytes]) -> None:
    data = encode_batch(frames)
    assert frame_kind(data) == FRAME_BATCH
    assert decode_batch(data) == frames
    assert len(data) == batch_size([len(f) for f in frames])


def test_ten_small_frames_cost_one_byte_plus_one_each() -> None:
    frames = [bytes([FRAME_ACKS]) + bytes(99)] * 10  # 100-byte frames: 1-byte lengths
    assert len(encode_batch(frames)) == 1 + 10 * 101


@given(st.integers(min_value=0, max_value=(1 << 21) - 1))
def test_varint_size_matches_the_encoding(n: int) -> None:
    frame = bytes([FRAME_ACKS]) * max(n, 1) if n < 20_000 else None
    assert varint_size(n) == (1 if n < 128 else 2 if n < 16384 else 3)
    if frame is not None:
        data = encode_batch([frame, b"\x01"])
        assert len(data) == 1 + varint_size(len(frame)) + len(frame) + 2


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([b"\x01"], "2 to"),
        ([], "2 to"),
        ([b"\x01", b""], "non-empty"),
        ([b"\x01", bytes([FRAME_BATCH, 1, 1])], "another batch"),
        ([b"\x01"] * (MAX_BATCH_FRAMES + 1), "2 to"),
    ],
)
def test_encode_refuses(frames: list[bytes], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        encode_batch(frames)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", Truncated),
        (b"\x01\x01\x01", UnknownVersion),
        (bytes([FRAME_BATCH]), Truncated),
        (bytes([FRAME_BATCH, 1, 1]), Malformed),  # a lone frame goes as itself
        (bytes([FRAME_BATCH, 0, 1, 1]), Malformed),  # an empty frame
        (bytes([FRAME_BATCH, 3, 1, 1]), Truncated),  # runs past the end
        (bytes([FRAME_BATCH, 0x81]), Truncated),  # the length itself runs past the end
        (bytes([FRAME_BATCH, 0x81, 0x00, 1, 1, 1]), Malformed),  # not minimal
        (bytes([FRAME_BATCH, 0x80, 0x80, 0x80, 0x01]), Malformed),  # too long a length
        (bytes([FRAME_BATCH, 1, 1, 2, FRAME_BATCH, 1]), Malformed),  # nested
    ],
)
def test_decode_refuses(data: bytes, error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        decode_batch(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes([FRAME_BATCH]), "^batch: no frames follow$"),
        (bytes([FRAME_BATCH, 1, 1]), "^batch: a lone frame is sent as itself$"),
        (bytes([FRAME_BATCH, 0, 1, 1]), "^batch: an empty frame$"),
        (bytes([FRAME_BATCH, 3, 1, 1]), "^batch: a frame of 3 bytes runs past the end$"),
        (bytes([FRAME_BATCH, 0x81]), "^batch: a length runs past the end$"),
        (bytes([FRAME_BATCH, 0x81, 0x00, 1, 1, 1]), "^batch: a length is not minimally encoded$"),
        (bytes([FRAME_BATCH, 0x80, 0x80, 0x80, 0x01]), "^batch: a length longer than 3 bytes$"),
        (bytes([FRAME_BATCH, 1, 1, 2, FRAME_BATCH, 1]), "^batch: a batch inside a batch$"),
        (b"\x01\x01\x01", "^batch: format 1 "),
    ],
)
def test_each_refusal_says_what_is_wrong(data: bytes, message: str) -> None:
    """The refusal's text is what `kai-mesh status` and the logs show an operator."""
    with pytest.raises(ProtocolError, match=message):
        decode_batch(data)


@pytest.mark.parametrize(
    ("length", "varint"),
    [
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (70000, b"\xf0\xa2\x04"),
    ],
)
def test_lengths_of_one_to_three_bytes_encode_as_leb128_and_decode_back(
    length: int, varint: bytes
) -> None:
    frame = b"\x01" + bytes(length - 1)
    data = encode_batch([frame, b"\x02", frame])
    assert data[: 1 + len(varint)] == bytes([FRAME_BATCH]) + varint
    assert decode_batch(data) == [frame, b"\x02", frame]


def test_a_batch_of_exactly_the_largest_size_and_count_is_taken() -> None:
    # Two frames filling MAX_BATCH_BYTES exactly: 1 + (3 + a) + (3 + b) bytes.
    a = (MAX_BATCH_BYTES - 7) // 2
    frames = [b"\x01" * a, b"\x02" * (MAX_BATCH_BYTES - 7 - a)]
    data = encode_batch(frames)
    assert len(data) == MAX_BATCH_BYTES
    assert decode_batch(data) == frames
    with pytest.raises(Oversize, match="at most"):
        decode_batch(data + b"\x00")
    with pytest.raises(UsageError, match="at most"):
        encode_batch([frames[0], frames[1] + b"\x00"])
    assert len(decode_batch(encode_batch([b"\x01"] * MAX_BATCH_FRAMES))) == MAX_BATCH_FRAMES


def test_decode_refuses_too_many_frames() -> None:
    data = bytes([FRAME_BATCH]) + b"\x01\x01" * (MAX_BATCH_FRAMES + 1)
    with pytest.raises(Malformed, match="more than"):
        decode_batch(data)
    assert len(decode_batch(data[: 1 + 2 * MAX_BATCH_FRAMES])) == MAX_BATCH_FRAMES


@given(st.binary(max_size=600))
def test_decoder_raises_only_protocol_errors(data: bytes) -> None:
    try:
        frames = decode_batch(bytes([FRAME_BATCH]) + data)
    except ProtocolError:
        return
    # What it accepts is exactly what encoding those frames gives back.
    assert encode_batch(frames) == bytes([FRAME_BATCH]) + data


@given(st.lists(frames_st, min_size=2, max_size=10), st.binary(min_size=1, max_size=5))
def test_trailing_garbage_is_never_a_silent_prefix(frames: list[bytes], tail: bytes) -> None:
    data = encode_batch(frames) + tail
    try:
        decoded = decode_batch(data)
    except ProtocolError:
        return
    assert encode_batch(decoded) == data  # the tail parsed as whole frames, nothing dropped


# take_packet -----------------------------------------------------------------------------------


def queued(*specs: tuple[int, Priority]) -> list[Queued[int]]:
    return [Queued(i, size, priority, i) for i, (size, priority) in enumerate(specs)]


N, H, C, L = Priority.NORMAL, Priority.HIGH, Priority.CRITICAL, Priority.LOW


def test_a_lone_frame_goes_alone() -> None:
    queue = queued((100, N))
    assert [q.item for q in take_packet(queue, 430)] == [0]
    assert queue == []
    assert take_packet(queue, 430) == []


def test_packs_up_to_the_room_in_priority_then_age_order() -> None:
    queue = queued((100, N), (100, L), (100, C), (100, N), (100, H))
    taken = take_packet(queue, 1 + 4 * 101)
    assert [q.item for q in taken] == [2, 4, 0, 3]  # critical, high, then normals by age
    assert [q.item for q in queue] == [1]


def test_a_packet_is_filled_to_the_byte_counting_the_batch_byte_and_every_length() -> None:
    # Three 100-byte frames packed: 1 + 3 × (1 + 100) = 304 bytes.
    assert [q.item for q in take_packet(queued((100, N), (100, N), (100, N)), 304)] == [0, 1, 2]
    assert [q.item for q in take_packet(queued((100, N), (100, N), (100, N)), 303)] == [0, 1]
    # Two: 1 + 2 × 101 = 203; one byte less and the second does not fit.
    assert [q.item for q in take_packet(queued((100, N), (100, N)), 203)] == [0, 1]
    assert [q.item for q in take_packet(queued((100, N), (100, N)), 202)] == [0]


def test_a_packet_holds_at_most_the_largest_batch_count() -> None:
    queue = queued(*[(1, N)] * (MAX_BATCH_FRAMES + 10))
    taken = take_packet(queue, 100_000)
    assert [q.item for q in taken] == list(range(MAX_BATCH_FRAMES))
    assert len(queue) == 10


def test_a_frame_too_large_for_the_packet_goes_alone_and_smaller_ones_fill_around() -> None:
    queue = queued((1000, C), (50, N))
    assert [q.item for q in take_packet(queue, 430)] == [0]
    queue = queued((300, N), (200, N), (100, N))
    # 300 + 200 does not fit 430 with framing; 300 + 100 does: the later small one rides along.
    assert [q.item for q in take_packet(queue, 430)] == [0, 2]
    assert [q.item for q in queue] == [1]


@given(
    st.lists(
        st.tuples(st.integers(1, 500), st.sampled_from(list(Priority))), min_size=1, max_size=30
    ),
    st.integers(50, 1000),
)
def test_take_packet_properties(specs: list[tuple[int, Priority]], room: int) -> None:
    queue = queued(*specs)
    before = list(queue)
    taken = take_packet(queue, room)
    assert taken and taken[0] is min(before, key=lambda q: (-q.priority, q.seq))
    assert sorted(q.item for q in taken + queue) == list(range(len(specs)))
    sizes = [q.size for q in taken]
    assert len(taken) == 1 or batch_size(sizes) <= room
    # Greedy: nothing left behind would still have fitted beside what was taken.
    if len(taken) > 1:
        assert all(batch_size([*sizes, q.size]) > room for q in queue)
