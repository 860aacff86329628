"""The PipeInterface framing: round trips, chunking, noise, and RNS's own encoder."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.harness.radio import hdlc

packets = st.binary(min_size=1, max_size=600)


@given(st.lists(packets, max_size=8), st.data())
def test_any_chunking_gives_back_the_frames(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(hdlc.encode(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = hdlc.Decoder()
    out: list[bytes] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(stream[last:cut])
        last = cut
    assert out == frames


@given(st.binary(max_size=2000))
def test_garbage_never_raises_and_frames_stay_bounded(noise: bytes) -> None:
    decoder = hdlc.Decoder(max_frame=100)
    for frame in decoder.feed(noise):
        assert 0 < len(frame) <= 100


@given(packets)
def test_encoding_hides_flags(packet: bytes) -> None:
    body = hdlc.encode(packet)[1:-1]
    assert hdlc.FLAG not in body


def test_oversized_frames_are_dropped_and_counted() -> None:
    decoder = hdlc.Decoder(max_frame=4)
    assert decoder.feed(hdlc.encode(b"12345") + hdlc.encode(b"ok")) == [b"ok"]
    assert decoder.oversized == 1


def test_matches_reticulums_own_encoder() -> None:
    from RNS.Interfaces.PipeInterface import HDLC

    packet = bytes(range(256)) * 2
    ours = hdlc.encode(packet)
    assert ours == bytes([HDLC.FLAG]) + HDLC.escape(packet) + bytes([HDLC.FLAG])
