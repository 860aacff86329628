"""Governance sync frames: pinned bytes, round trips, chunks that fit a packet, and refusals."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import Malformed, ProtocolError, Truncated, UnknownVersion
from kai_mesh.core.governance.sync_wire import (
    MAX_RECORDS,
    AskAfter,
    Records,
    chunk_records,
    decode_sync,
    encode_ask,
    encode_records,
)
from kai_mesh.core.messaging.frames import FRAME_GOVERNANCE

LIMIT = 380  # the services' SYNC_MAX_BYTES: one Reticulum link packet with room to spare


def test_frames_keep_their_bytes() -> None:
    """The bytes pinned in tests/runtime/governance/test_sync.py before the codec moved here."""
    records = encode_records([b"\x21abc", bytes(range(5))])
    assert records.hex() == "15920192c40421616263c4050001020304"
    assert encode_records([]).hex() == "15920190"
    ask = encode_ask(bytes(range(32)))
    assert ask.hex() == "159202c420" + bytes(range(32)).hex()
    assert records[0] == ask[0] == FRAME_GOVERNANCE


def test_round_trips() -> None:
    records = [b"\x21" * 150, b"\x22" * 139, b""]
    assert decode_sync(encode_records(records)) == Records(records=tuple(records))
    assert decode_sync(encode_records([])) == Records(records=())
    head = bytes(range(32))
    assert decode_sync(encode_ask(head)) == AskAfter(head=head)


@given(st.lists(st.binary(max_size=200), max_size=MAX_RECORDS))
def test_any_records_round_trip(records: list[bytes]) -> None:
    assert decode_sync(encode_records(records)) == Records(records=tuple(records))


def test_chunks_keep_the_records_within_the_limit_and_a_big_one_alone() -> None:
    records = [bytes([i]) * 140 for i in range(5)] + [b"x" * 500, b"y" * 10]
    chunks = chunk_records(records, LIMIT)
    assert [r for chunk in chunks for r in chunk] == records
    for chunk in chunks:
        assert len(encode_records(chunk)) <= LIMIT or len(chunk) == 1
        assert decode_sync(encode_records(chunk)) == Records(records=tuple(chunk))
    assert [len(c) for c in chunks] == [2, 2, 1, 1, 1]
    assert chunk_records([], LIMIT) == []


@given(st.lists(st.binary(max_size=600), max_size=40), st.integers(min_value=16, max_value=900))
def test_chunks_fit_any_limit(records: list[bytes], limit: int) -> None:
    chunks = chunk_records(records, limit)
    assert [r for chunk in chunks for r in chunk] == records
    assert all(chunk for chunk in chunks)
    for chunk in chunks:
        assert len(encode_records(chunk)) <= limit or len(chunk) == 1


def _frame(value: object) -> bytes:
    return bytes([FRAME_GOVERNANCE]) + msgpack.packb(value, use_bin_type=True)


@pytest.mark.parametrize(
    ("data", "error", "says"),
    [
        (b"", Truncated, "empty"),
        (b"\x14" + msgpack.packb([2, bytes(32)]), UnknownVersion, "format 20"),
        (b"\x15", Truncated, "msgpack"),
        (_frame([2, bytes(32)])[:-1], Truncated, "msgpack"),
        (_frame([2, bytes(32)]) + b"\x00", Malformed, "unexpected bytes"),
        (_frame({"1": []}), Malformed, "[kind, value]"),
        (_frame([1, [], 3]), Malformed, "[kind, value]"),
        (_frame([1, b"not a list"]), Malformed, "records"),
        (_frame([1, [b"ok", "text"]]), Malformed, "each is bytes"),
        (_frame([1, [b"r"] * (MAX_RECORDS + 1)]), Malformed, "at most 64"),
        (_frame([2, bytes(31)]), Malformed, "32 bytes"),
        (_frame([2, "x" * 32]), Malformed, "32 bytes"),
        (_frame([3, b""]), Malformed, "unknown governance message 3"),
        (b"\x15\xc7\x01\x05x", Malformed, "ext"),
    ],
)
def test_bad_frames_are_refused_clearly(data: bytes, error: type[ProtocolError], says: str) -> None:
    with pytest.raises(error) as caught:
        decode_sync(data)
    assert says in str(caught.value)


@given(st.binary(max_size=300))
def test_any_bytes_give_a_message_or_a_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_sync(data)


@given(st.binary(max_size=300))
def test_any_bytes_behind_the_frame_byte_give_a_message_or_a_protocol_error(data: bytes) -> None:
    try:
        message = decode_sync(bytes([FRAME_GOVERNANCE]) + data)
    except ProtocolError:
        return
    assert isinstance(message, Records | AskAfter)


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=10)
    | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


@given(st.one_of(st.integers(0, 4), _values), _values)
def test_any_msgpack_value_gives_a_message_or_a_protocol_error(kind: object, body: object) -> None:
    with contextlib.suppress(ProtocolError):
        decode_sync(_frame([kind, body]))
