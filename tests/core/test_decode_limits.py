"""Issue 15, finding 14: decoding is bounded by count and depth, not only by bytes; state paths
and keys cannot be path parts."""

from __future__ import annotations

from typing import Any

import pytest

from kai_mesh.core import codec
from kai_mesh.core.codec import MAX_DEPTH, max_containers, pack, unpack_exact
from kai_mesh.core.control.frames import FrameDecoder, FrameInvalid, FrameReceived, encode_frame
from kai_mesh.core.errors import Malformed, UsageError
from kai_mesh.core.state import ydoc

MIB = 1 << 20


def _count_built(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The decoder's container counts, one per value decoded (a spy on `codec._counting`)."""
    counts: list[list[int]] = []
    counting = codec._counting

    def spy(limit: int) -> tuple[Any, list[int]]:
        hook, seen = counting(limit)
        counts.append(seen)
        return hook, seen

    monkeypatch.setattr(codec, "_counting", spy)
    return counts


def test_a_million_empty_lists_are_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused as soon as the bound is passed, not after building all million (that took
    0.66 s and blocked the event loop): one container past the bound is the last one built."""
    built = _count_built(monkeypatch)
    data = pack([[] for _ in range(1_000_000)])
    assert len(data) <= MIB
    with pytest.raises(Malformed, match="arrays and maps"):
        unpack_exact(data, MIB)
    assert built == [[max_containers(MIB) + 1]]
    assert max_containers(MIB) < 100_000


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


def test_the_control_decoder_refuses_the_flood_frame_and_reads_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = _count_built(monkeypatch)
    decoder = FrameDecoder(MIB)
    flood = encode_frame([[] for _ in range(1_000_000)])
    events = decoder.feed(flood + encode_frame({"id": 1, "method": "ping"}))
    assert built[0][0] < 100_000  # refused at the bound, not after a million
    assert isinstance(events[0], FrameInvalid)
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
