"""Several frames to one peer in one packet: the BATCH frame, and which queued frames go in it.

On a radio every packet pays Reticulum's header and link encryption (83 bytes) and its share of
the channel, and on a LAN every packet costs the receiver a decryption and a hand-over to trio.
So frames that queue for one peer while the previous packet to it is being sent leave together,
as Nagle does but without his delay: a lone frame leaves at once, as itself, and only what
queued meanwhile is packed. The wire form is as small as it can be::

    0x17 ‖ (length ‖ frame)+

`length` is an unsigned LEB128 varint (1 byte below 128, 2 below 16,384, at most 3), the frame is
any router frame or envelope except another BATCH. Nothing is repeated per frame: the link the
packet came over proves the sender of every frame in it, as it does for a lone frame. A batch of
ten 130-byte envelopes costs 1 + 2 × 10 bytes more than the frames themselves.

`decode_batch` refuses, with a `ProtocolError`, anything but a well-formed batch: a varint that
is not minimal (one encoding per meaning), an empty or nested frame, a length running past the
end, more than `MAX_BATCH_FRAMES` frames or `MAX_BATCH_BYTES` bytes. What each frame means is not
judged here: the receiver dispatches each as if it had come alone, with the same refusals.

`take_packet` chooses what goes in the next packet from a peer's queue: the frame at its head
(by priority, then age) always, even if it alone is larger than a packet (the transport then
sends it as a transfer), then, highest priority first, every other queued frame that still fits.
A `critical` frame therefore never waits for a batch: it is at the head, or rides in the first
packet that leaves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from kai_mesh.core.codec import split_format
from kai_mesh.core.errors import Malformed, Oversize, Truncated, UsageError
from kai_mesh.core.messaging.envelope import Priority
from kai_mesh.core.messaging.frames import FRAME_BATCH

__all__ = [
    "FRAME_BATCH",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_FRAMES",
    "Queued",
    "batch_size",
    "decode_batch",
    "encode_batch",
    "take_packet",
    "varint_size",
]
MAX_BATCH_FRAMES = 256
MAX_BATCH_BYTES = 1 << 20  # far above any packet; the largest a 3-byte varint can say is 2 MiB
_VARINT_MAX_BYTES = 3


def varint_size(n: int) -> int:
    """Bytes the LEB128 varint of `n` takes."""
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def batch_size(sizes: Sequence[int]) -> int:
    """Bytes of the BATCH frame holding frames of these sizes (a lone frame: itself)."""
    if len(sizes) == 1:
        return sizes[0]
    return 1 + sum(varint_size(n) + n for n in sizes)


def encode_batch(frames: Sequence[bytes]) -> bytes:
    """One BATCH frame holding `frames`, in order. Raises `UsageError` for fewer than two
    frames, an empty or nested frame, or more than the bounds allow."""
    if not 2 <= len(frames) <= MAX_BATCH_FRAMES:
        raise UsageError(f"batch: 2 to {MAX_BATCH_FRAMES} frames, got {len(frames)}")
    parts = [bytes([FRAME_BATCH])]
    for frame in frames:
        if type(frame) is not bytes or not frame:
            raise UsageError("batch: every frame is non-empty bytes")
        if frame[0] == FRAME_BATCH:
            raise UsageError("batch: a batch does not hold another batch")
        parts.append(_varint(len(frame)))
        parts.append(frame)
    out = b"".join(parts)
    if len(out) > MAX_BATCH_BYTES:
        raise UsageError(f"batch: {len(out)} bytes, at most {MAX_BATCH_BYTES}")
    return out


def decode_batch(data: bytes) -> list[bytes]:
    """The frames a BATCH frame holds, in order. Raises `Truncated`, `Malformed`, `Oversize` or
    `UnknownVersion` (all `ProtocolError`) for anything but a well-formed batch."""
    if len(data) > MAX_BATCH_BYTES:
        raise Oversize(f"batch: {len(data)} bytes, at most {MAX_BATCH_BYTES}")
    rest = memoryview(split_format(data, FRAME_BATCH, "batch"))
    frames: list[bytes] = []
    at, end = 0, len(rest)
    if end == 0:
        raise Truncated("batch: no frames follow")
    while at < end:
        if len(frames) == MAX_BATCH_FRAMES:
            raise Malformed(f"batch: more than {MAX_BATCH_FRAMES} frames")
        length, at = _read_varint(rest, at)
        if length == 0:
            raise Malformed("batch: an empty frame")
        if at + length > end:
            raise Truncated(f"batch: a frame of {length} bytes runs past the end")
        frame = bytes(rest[at : at + length])
        if frame[0] == FRAME_BATCH:
            raise Malformed("batch: a batch inside a batch")
        frames.append(frame)
        at += length
    if len(frames) < 2:
        raise Malformed("batch: a lone frame is sent as itself")
    return frames


def _read_varint(data: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(_VARINT_MAX_BYTES):
        if at + i >= len(data):
            raise Truncated("batch: a length runs past the end")
        byte = data[at + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if i and byte == 0:
                raise Malformed("batch: a length is not minimally encoded")
            return value, at + i + 1
        shift += 7
    raise Malformed(f"batch: a length longer than {_VARINT_MAX_BYTES} bytes")


T = TypeVar("T")


@dataclass(slots=True)
class Queued(Generic[T]):
    """One frame waiting for a peer: `item` is the caller's (a frame and its waiter)."""

    item: T
    size: int
    priority: Priority
    seq: int  # arrival order, for FIFO within a priority


def take_packet(queue: list[Queued[T]], room: int) -> list[Queued[T]]:
    """Remove from `queue` and return what goes in the next packet of `room` bytes, in the order
    it goes (see the module docstring). Empty only when `queue` is."""
    if not queue:
        return []
    order = sorted(queue, key=lambda q: (-q.priority, q.seq))
    chosen = [order[0]]
    sizes = [order[0].size]
    total = order[0].size
    for candidate in order[1:]:
        if len(chosen) == MAX_BATCH_FRAMES:
            break
        # Adding a frame to a lone one costs the batch byte and both lengths.
        grown = (
            batch_size([*sizes, candidate.size])
            if len(sizes) == 1
            else total + varint_size(candidate.size) + candidate.size
        )
        if grown <= room:
            chosen.append(candidate)
            sizes.append(candidate.size)
            total = grown
    taken = {id(q) for q in chosen}
    queue[:] = [q for q in queue if id(q) not in taken]
    return chosen
