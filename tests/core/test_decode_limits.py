"""Issue 15, finding 14: decoding is bounded by count and depth, not only by bytes; state paths
and keys cannot be path parts."""

from __future__ import annotations

import pytest

from kai_mesh.core.codec import MAX_DEPTH, max_containers, pack, unpack_exact
from kai_mesh.core.control.frames import FrameDecoder, FrameInvalid, FrameReceived, encode_frame
from kai_mesh.core.errors import Malformed, UsageError
from kai_mesh.core.state import ydoc

MIB = 1 << 20


def test_a_million_empty_lists_are_refused_at_once() -> None:
    """Refused by the hook at the first container over the bound, far short of the million the
    frame holds (decoding it whole blocked the event loop 0.66 s; bench/control.py, not a test,
    measures time: under load a timing assertion here failed at 1.8 s)."""
    data = pack([[] for _ in range(1_000_000)])
    assert len(data) <= MIB
    limit = max_containers(MIB)
    assert limit < 100_000
    with pytest.raises(Malformed, match=f"more than {limit} arrays and maps"):
        unpack_exact(data, MIB)


def test_containers_within_the_bound_and_scalars_still_decode() -> None:
    n = max_containers(MIB) - 1
    assert len(unpack_exact(pack([[] for _ in range(n)]), MIB)) == n
    assert len(unpack_exact(pack(list(range(300_000))), 2 * MIB)) == 300_000
    assert unpack_exact(pack({"a": [{"b": 1}]}), 64) == {"a": [{"b": 1}]}


def test_nesting_deeper_than_the_bound_is_refused() -> None:
    deep = b"\x91" * MAX_DEPTH + b"\xc0"
    assert unpack_exact(deep, MIB) is not None
    with pytest.raises(Malformed, match="nest more than"):
        unpack_exact(b"\x91" + deep, MIB)
    with pytest.raises(Malformed):  # maps too
        unpack_exact(b"\x81\xa1k" * (MAX_DEPTH + 1) + b"\xc0", MIB)


def test_the_control_decoder_refuses_the_flood_frame_and_reads_the_next() -> None:
    decoder = FrameDecoder(MIB)
    flood = encode_frame([[] for _ in range(1_000_000)])
    events = decoder.feed(flood + encode_frame({"id": 1, "method": "ping"}))
    assert isinstance(events[0], FrameInvalid)
    assert "arrays and maps" in str(events[0])
    assert events[1] == FrameReceived(value={"id": 1, "method": "ping"})


@pytest.mark.parametrize("path", ["shared/../x", "shared/./x", "shared/a/..", "tasks/.."])
def test_dot_segments_are_not_state_paths(path: str) -> None:
    with pytest.raises(UsageError, match=r"cannot be '\.' or '\.\.'"):
        ydoc.parse_path(path)


def test_dot_keys_are_not_state_keys() -> None:
    with pytest.raises(UsageError, match=r"'\.\.'"):
        ydoc.check_value({"..": 1}, path="shared/x")
    ydoc.check_value({"..x": 1, ".hidden": 2}, path="shared/x")
    assert ydoc.parse_path("shared/a.b/..c") == ("shared", "a.b", "..c")
