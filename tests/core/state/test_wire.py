"""State wire formats: round trips, the radio byte budget, hostile bytes, signatures."""

from __future__ import annotations

import contextlib
from typing import Any

import pycrdt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.codec import pack
from kai_mesh.core.errors import (
    BadSignature,
    Malformed,
    Oversize,
    ProtocolError,
    Truncated,
    UnknownVersion,
    Untrusted,
    UsageError,
)
from kai_mesh.core.mesh.identity import verify
from kai_mesh.core.messaging.frames import FRAME_STATE
from kai_mesh.core.state.wire import (
    ENTRY_KIND,
    MAX_CLIENT_ID,
    MAX_MESSAGE,
    MAX_RECORD,
    ZERO_HASH,
    Buckets,
    Entries,
    Entry,
    Header,
    Vectors,
    bucket_hashes,
    decode_header,
    decode_sync,
    encode_entry,
    encode_header,
    encode_sync,
    entry_hash,
    foreign_items,
    parse_entry,
    parse_header,
    state_digest,
    streams_hash,
)
from tests.core.strategies import secrets_from_seed

MESH = b"M" * 32
A = secrets_from_seed(31)
B = secrets_from_seed(32)
KEYS = {A.node_id: A.verify_key, B.node_id: B.verify_key}
CID = 3_000_000_000  # a typical random 32-bit Yjs client id

client_ids = st.integers(0, MAX_CLIENT_ID - 1)
seqs = st.integers(1, 2**63 - 1)
hashes16 = st.binary(min_size=16, max_size=16)


def _header() -> bytes:
    return encode_header(Header(A.node_id, CID), A, MESH)


def _entry(seq: int = 1, update: bytes = b"\x00\x00", prev: bytes = ZERO_HASH) -> bytes:
    return encode_entry(Entry(CID, seq, prev, update), A, MESH)


# Headers and entries ------------------------------------------------------------------------------


@given(client_ids)
def test_header_round_trip(client_id: int) -> None:
    data = encode_header(Header(A.node_id, client_id), A, MESH)
    assert decode_header(data, MESH, KEYS.get) == Header(A.node_id, client_id)
    assert parse_header(data)[0] == Header(A.node_id, client_id)


def test_header_size() -> None:
    assert len(_header()) <= 90  # format, [16-byte id, uint32], signature


def test_header_refusals() -> None:
    data = _header()
    with pytest.raises(Untrusted):
        decode_header(data, MESH, {B.node_id: B.verify_key}.get)
    with pytest.raises(BadSignature):
        decode_header(data, b"other mesh", KEYS.get)
    with pytest.raises(BadSignature):
        decode_header(data[:-1] + bytes([data[-1] ^ 1]), MESH, KEYS.get)
    with pytest.raises(BadSignature):  # a key that is not the one that signed
        decode_header(data, MESH, {A.node_id: B.verify_key}.get)
    with pytest.raises(Truncated):
        decode_header(data[:-1], MESH, KEYS.get)
    with pytest.raises(Malformed):
        decode_header(data + b"\x00", MESH, KEYS.get)
    with pytest.raises(UnknownVersion):
        decode_header(b"\x02" + data[1:], MESH, KEYS.get)
    # Not canonical: the client id as a uint64 where a uint32 does. Signed, yet refused.
    body = b"\x01\x92\xc4\x10" + A.node_id + b"\xcf" + CID.to_bytes(8, "big")
    with pytest.raises(Malformed, match="canonical"):
        decode_header(body + A.sign("state-stream", MESH, body), MESH, KEYS.get)


def test_header_usage_errors() -> None:
    with pytest.raises(UsageError):
        encode_header(Header(B.node_id, CID), A, MESH)  # someone else's stream
    for node_id, client_id in [(b"x" * 15, 1), (A.node_id, -1), (A.node_id, MAX_CLIENT_ID)]:
        with pytest.raises(UsageError):
            Header(node_id, client_id)


@given(client_ids, seqs, hashes16, st.binary(min_size=1, max_size=400))
def test_entry_round_trip(client_id: int, seq: int, prev: bytes, update: bytes) -> None:
    prev = ZERO_HASH if seq == 1 else prev
    entry = Entry(client_id, seq, prev, update)
    data = encode_entry(entry, A, MESH)
    parsed, body, sig = parse_entry(data)
    assert parsed == entry
    assert body + sig == data
    verify(A.verify_key, ENTRY_KIND, MESH, body, sig)
    with pytest.raises(BadSignature):
        verify(A.verify_key, ENTRY_KIND, b"other mesh", body, sig)


@pytest.mark.parametrize("size", [30, 300])
def test_entry_overhead_is_at_most_100_bytes(size: int) -> None:
    for seq in (1, 1000, 70000):
        data = encode_entry(
            Entry(CID, seq, bytes(16) if seq == 1 else b"p" * 16, b"u" * size), A, MESH
        )
        assert len(data) <= size + 100, (seq, len(data) - size)


def test_entry_hash() -> None:
    one, two = _entry(update=b"\x00\x00"), _entry(update=b"\x00\x01")
    assert len(entry_hash(one)) == 16
    assert entry_hash(one) != entry_hash(two)
    assert entry_hash(one) == entry_hash(bytes(one))


def test_entry_refusals() -> None:
    data = _entry()
    with pytest.raises(Truncated):
        parse_entry(data[:-10])
    with pytest.raises(UnknownVersion):
        parse_entry(b"\x01" + data[1:])
    bad_prev = b"\x02" + pack([CID, 1, b"p" * 16, b"\x00\x00"])
    with pytest.raises(Malformed, match="zero"):
        parse_entry(bad_prev + A.sign(ENTRY_KIND, MESH, bad_prev))
    for fields in ([CID, 0, ZERO_HASH, b"u"], [CID, 2, b"p", b"u"], [CID, 2, ZERO_HASH, b""]):
        body = b"\x02" + pack(fields)
        with pytest.raises(Malformed):
            parse_entry(body + A.sign(ENTRY_KIND, MESH, body))
    with pytest.raises(Oversize):
        parse_entry(b"\x02" + b"\x00" * MAX_RECORD)
    with pytest.raises(UsageError):
        encode_entry(Entry(CID, 1, ZERO_HASH, b"u" * MAX_RECORD), A, MESH)
    with pytest.raises(UsageError):
        Entry(CID, 1, b"p" * 16, b"u")


# Sync messages ------------------------------------------------------------------------------------

bucket_maps = st.dictionaries(st.integers(0, 15), st.binary(min_size=4, max_size=4))


@st.composite
def vectors_messages(draw: st.DrawFn) -> Vectors:
    if draw(st.booleans()):
        return Vectors(
            draw(st.dictionaries(client_ids, st.integers(0, 2**63 - 1), min_size=1)), True
        )
    mask = draw(st.integers(1, 0xFFFF))
    lo, hi = sorted(draw(st.lists(client_ids, min_size=2, max_size=2)))
    if draw(st.booleans()):
        lo, hi = 0, MAX_CLIENT_ID - 1
    buckets = [b for b in range(16) if mask >> b & 1]
    ids = st.integers(lo, hi).filter(lambda c: c % 16 in buckets)
    seqs_ = draw(st.dictionaries(ids, seqs, max_size=20))
    return Vectors(seqs_, False, mask, draw(st.binary(min_size=4, max_size=4)), lo, hi)


records = st.lists(st.binary(min_size=1, max_size=200))
sync_messages = st.one_of(
    st.builds(Buckets, bucket_maps),
    vectors_messages(),
    st.builds(
        Entries,
        records.map(lambda rs: [b"\x01" + r for r in rs]),
        records.map(lambda rs: [b"\x02" + r for r in rs]),
    ),
)


@given(sync_messages)
def test_sync_round_trip(message: Any) -> None:
    data = encode_sync(message)
    assert data[0] == FRAME_STATE == 0x14
    assert decode_sync(data) == message


def test_sync_sizes() -> None:
    full = Buckets({b: b"hash" for b in range(16)})
    assert len(encode_sync(full)) == 3 + 3 + 16 * 7  # frame, array, tag; map16; key + bin8
    want = Vectors({CID: 5}, True)
    assert len(encode_sync(want)) <= 12
    vectors = Vectors({CID: 5, CID + 16: 300}, False, 1 << (CID % 16), b"hash")
    assert len(encode_sync(vectors)) <= 4 + 2 * 8 + 3 + 6


@pytest.mark.parametrize(
    "fields",
    [
        [],
        [0],
        ["1", {}],
        [1],
        [1, {}, 1],
        [1, {16: b"hash"}],
        [1, {0: b"has"}],
        [1, {True: b"hash"}],
        [1, []],
        [2, {}, True],  # an empty want list
        [2, {CID: 1}, True, 1, b"hash"],  # a want list has no coverage
        [2, {CID: -1}, True],
        [2, {CID: 1}, False],  # vectors need coverage
        [2, {CID: 0}, False, 0xFFFF, b"hash"],  # seq 0 only in a want list
        [2, {CID: 1}, False, 0, b"hash"],  # an empty mask
        [2, {CID: 1}, False, 0x10000, b"hash"],
        [2, {CID: 1}, False, 1 << ((CID + 1) % 16), b"hash"],  # outside the mask
        [2, {CID: 1}, False, 0xFFFF, b"hash", CID + 1, CID + 9],  # outside lo..hi
        [2, {CID: 1}, False, 0xFFFF, b"hash", 9, 3],  # lo > hi
        [2, {CID: 1}, False, 0xFFFF, b"hash", 0, MAX_CLIENT_ID - 1],  # full range sent
        [2, {CID: 1}, False, 0xFFFF, b"has"],
        [2, {MAX_CLIENT_ID: 1}, True],
        [2, {CID: [1, ZERO_HASH]}, True],  # the old shape
        [2, [], True],
        [2, {CID: 1}, 1],
        [3, [], []],
        [3, [b"\x02x"], []],  # an entry among the headers
        [3, [], [b"\x01x"]],
        [3, [], [b""]],
        [3, [], ["text"]],
        [3, [], {}],
        [3, []],
    ],
)
def test_sync_refusals(fields: list[Any]) -> None:
    if fields == [3, [], []]:
        assert decode_sync(b"\x14" + pack(fields)) == Entries((), ())  # empty is fine
        return
    with pytest.raises(ProtocolError):
        decode_sync(b"\x14" + pack(fields))


def test_sync_refusal_kinds() -> None:
    with pytest.raises(UnknownVersion):
        decode_sync(b"\x14" + pack([9, 1]))
    with pytest.raises(UnknownVersion):
        decode_sync(b"\x13" + pack([1, {}]))
    with pytest.raises(Truncated):
        decode_sync(b"")
    with pytest.raises(Malformed):
        decode_sync(b"\x14" + pack([1, {}]) + b"\x00")
    with pytest.raises(Oversize):
        decode_sync(b"\x14" + b"\x00" * MAX_MESSAGE)
    with pytest.raises(UsageError):
        encode_sync(Entries([], [b"\x02" + b"x" * 40000, b"\x02" + b"y" * 40000]))
    with pytest.raises(UsageError):
        Vectors({CID: 1}, True, mask=1)
    with pytest.raises(UsageError):
        encode_sync("not a message")  # type: ignore[arg-type]


@given(data=st.binary(max_size=300), first=st.sampled_from([0x01, 0x02, 0x14]))
def test_random_bytes_raise_only_protocol_errors(data: bytes, first: int) -> None:
    for candidate in (data, bytes([first]) + data):
        with contextlib.suppress(ProtocolError):
            decode_sync(candidate)
        with contextlib.suppress(ProtocolError):
            parse_entry(candidate)
        with contextlib.suppress(ProtocolError):
            decode_header(candidate, MESH, KEYS.get)


_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_scalars = st.none() | st.booleans() | _ints | st.binary(max_size=20) | st.text(max_size=5)


@given(st.recursive(_scalars, lambda c: st.lists(c) | st.dictionaries(_scalars, c), max_leaves=20))
def test_random_values_raise_only_protocol_errors(value: object) -> None:
    for fmt, decoder in ((0x14, decode_sync), (0x02, parse_entry), (0x01, parse_header)):
        with contextlib.suppress(ProtocolError):
            decoder(bytes([fmt]) + pack(value) + bytes(64 if fmt != 0x14 else 0))


def _valid_frames() -> list[bytes]:
    return [
        encode_sync(Buckets({0: b"abcd", 7: b"efgh"})),
        encode_sync(Vectors({CID: 3, CID + 16: 1}, False, 1 << CID % 16, b"abcd")),
        encode_sync(Vectors({CID: 3}, False, 1 << CID % 16, b"abcd", CID - 5, CID + 5)),
        encode_sync(Vectors({CID: 0, 5: 9}, True)),
        encode_sync(Entries([_header()], [_entry()])),
        _header(),
        _entry(),
    ]


@given(st.sampled_from(_valid_frames()), st.data())
def test_single_byte_mutations_raise_only_protocol_errors(
    frame: bytes, data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(frame) - 1))
    mutated = frame[:i] + bytes([data.draw(st.integers(0, 255))]) + frame[i + 1 :]
    for decoder in (decode_sync, parse_entry, lambda d: decode_header(d, MESH, KEYS.get)):
        with contextlib.suppress(ProtocolError):
            decoder(mutated)


# Digests and Yjs updates --------------------------------------------------------------------------


def test_bucket_hashes_and_digest() -> None:
    vector = {CID: (3, b"h" * 16), CID + 16: (1, b"i" * 16), 5: (2, b"j" * 16)}
    hashes = bucket_hashes(vector)
    assert sorted(hashes) == sorted({CID % 16, 5})
    assert all(len(h) == 4 for h in hashes.values())
    assert hashes[CID % 16] == streams_hash([(CID + 16, (1, b"i" * 16)), (CID, (3, b"h" * 16))])
    digest = state_digest(hashes)
    assert len(digest) == 8
    assert state_digest(dict(reversed(hashes.items()))) == digest
    moved = bucket_hashes({**vector, CID: (3, b"x" * 16)})
    assert moved[5] == hashes[5] and moved[CID % 16] != hashes[CID % 16]
    assert state_digest(moved) != digest
    assert state_digest({}) != digest and len(state_digest({})) == 8


def _updates(client_id: int) -> list[bytes]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    got: list[bytes] = []
    doc.observe(lambda event: got.append(event.update))
    shared = doc.get("shared", type=pycrdt.Map)
    with doc.transaction():
        shared["a"] = 1
    with doc.transaction():
        shared["b"] = "two"
    return got


def test_foreign_items() -> None:
    first, later = _updates(CID)
    assert not foreign_items(first, CID) and not foreign_items(later, CID)
    assert foreign_items(first, 7) and foreign_items(later, 7)
    # get_state sees a client only from clock 0: it misses the later update's items.
    assert pycrdt.get_state(later) == b"\x00"
    # Deleting another client's item adds nothing under its id.
    other: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    other.apply_update(first)
    before = other.get_state()
    with other.transaction():
        del other.get("shared", type=pycrdt.Map)["a"]
    assert not foreign_items(other.get_update(before), 7)
    assert foreign_items(pycrdt.merge_updates(first, _updates(7)[1]), CID)
    with pytest.raises(ValueError):
        foreign_items(b"\x01\x02garbage", CID)
