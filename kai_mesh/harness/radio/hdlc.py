"""The framing of Reticulum's `PipeInterface`: simplified HDLC, as in PPP.

RNS (`RNS/Interfaces/PipeInterface.py`) writes each packet as FLAG, the packet with ESC and FLAG
escaped (ESC, byte ^ 0x20), FLAG; it reads bytes outside a frame as noise, a FLAG inside a frame
as its end, and the next FLAG as the start of another. `encode` and `Decoder` do the same, so
the channel speaks to RNS byte for byte. The decoder is incremental (bytes arrive in any chunks)
and drops a frame longer than `max_frame`, counting it, instead of truncating it as RNS does.
"""

from __future__ import annotations

FLAG = 0x7E
ESC = 0x7D
ESC_MASK = 0x20
#: PipeInterface's HW_MTU: RNS keeps at most this many bytes of a frame.
MAX_FRAME = 1064


def encode(packet: bytes) -> bytes:
    """One frame as RNS's PipeInterface writes it."""
    body = packet.replace(bytes([ESC]), bytes([ESC, ESC ^ ESC_MASK]))
    body = body.replace(bytes([FLAG]), bytes([ESC, FLAG ^ ESC_MASK]))
    return bytes([FLAG]) + body + bytes([FLAG])


class Decoder:
    """Bytes in, whole frames out. Empty frames (two FLAGs in a row) are not frames."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.oversized = 0  # frames dropped for length
        self._buffer = bytearray()
        self._in_frame = False
        self._escape = False
        self._too_long = False

    def feed(self, data: bytes) -> list[bytes]:
        """The frames that `data` completes, in order."""
        frames: list[bytes] = []
        for byte in data:
            if byte == FLAG:
                if self._in_frame and self._buffer and not self._too_long:
                    frames.append(bytes(self._buffer))
                elif self._in_frame and self._too_long:
                    self.oversized += 1
                # RNS closes a frame on a FLAG and opens the next on the one after; treating
                # every FLAG as "close and open" accepts the same streams and also `F a F b F`.
                self._in_frame = True
                self._buffer.clear()
                self._escape = self._too_long = False
            elif not self._in_frame:
                continue
            elif byte == ESC:
                self._escape = True
            else:
                if self._escape:
                    # As RNS: only the two escaped values are mapped back; others pass as is.
                    if byte in (FLAG ^ ESC_MASK, ESC ^ ESC_MASK):
                        byte ^= ESC_MASK
                    self._escape = False
                if len(self._buffer) >= self.max_frame:
                    self._too_long = True
                else:
                    self._buffer.append(byte)
        return frames
