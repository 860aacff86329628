"""LoRa time on air, from the Semtech SX1276/77/78/79 datasheet (section 4.1.1.7) and AN1200.13.

Pure arithmetic with plain numbers, so it is tested against the published examples to the
millisecond. For a LoRa frame of PL bytes:

    Tsym      = 2**SF / BW
    Tpreamble = (n_preamble + 4.25) * Tsym
    n_payload = 8 + max(ceil((8PL - 4SF + 28 + 16CRC - 20IH) / (4(SF - 2DE))) * (CR + 4), 0)
    ToA       = Tpreamble + n_payload * Tsym

with CR 1..4 for 4/5..4/8, IH 1 for an implicit header, DE 1 when low-data-rate optimisation is
on (the datasheet makes it mandatory when Tsym exceeds 16 ms, which is what `auto` does).

Reticulum reaches LoRa through RNode firmware, which adds one header byte to every LoRa frame and
splits an RNS packet longer than 254 bytes into two frames (`rnode_frames`); its preamble is
18 symbols or 24 ms, whichever is longer (`rnode_preamble`). A modem is named by a preset as
the ecosystem names them (Meshtastic's `long-fast` is SF11/BW250/CR4/5) or raw, `sf7bw125`,
`sf9bw250cr8`: see `parse_modem`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from kai_mesh.core.errors import UsageError

#: The datasheet makes low-data-rate optimisation mandatory above this symbol time (seconds).
LDRO_SYMBOL_TIME = 0.016
#: RNode firmware: one header byte per LoRa frame, at most 255 bytes per frame.
RNODE_HEADER = 1
LORA_MAX_PAYLOAD = 255
#: RNode firmware's preamble rule (Config.h): at least 18 symbols, else 24 ms worth.
RNODE_PREAMBLE_MIN_SYMBOLS = 18
RNODE_PREAMBLE_TARGET = 0.024
BANDWIDTHS = (7_800, 10_400, 15_600, 20_800, 31_250, 41_700, 62_500, 125_000, 250_000, 500_000)


@dataclass(frozen=True, kw_only=True)
class Modem:
    """LoRa modem settings. `coding_rate` is the denominator, 5..8 for 4/5..4/8; `preamble`
    None means RNode firmware's rule; `ldro` None means on when a symbol lasts over 16 ms."""

    spreading_factor: int
    bandwidth: int
    coding_rate: int = 5
    preamble: int | None = None
    explicit_header: bool = True
    crc: bool = True
    ldro: bool | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not 6 <= self.spreading_factor <= 12:
            raise UsageError(f"spreading factor {self.spreading_factor}: expected 6..12")
        if self.bandwidth not in BANDWIDTHS:
            known = ", ".join(str(b) for b in BANDWIDTHS)
            raise UsageError(f"bandwidth {self.bandwidth} Hz: expected one of {known}")
        if not 5 <= self.coding_rate <= 8:
            raise UsageError(f"coding rate 4/{self.coding_rate}: expected 4/5..4/8")
        if self.preamble is not None and not 6 <= self.preamble <= 65_535:
            raise UsageError(f"preamble {self.preamble}: expected 6..65535 symbols")

    @property
    def symbol_time(self) -> float:
        """Seconds per symbol."""
        return float(2**self.spreading_factor) / self.bandwidth

    @property
    def low_data_rate(self) -> bool:
        if self.ldro is not None:
            return self.ldro
        return self.symbol_time > LDRO_SYMBOL_TIME

    @property
    def preamble_symbols(self) -> int:
        if self.preamble is not None:
            return self.preamble
        return rnode_preamble(self.symbol_time)

    @property
    def bitrate(self) -> int:
        """The modem's raw bit rate, bit/s, as Reticulum and Semtech state it: SF * BW/2**SF *
        4/CR (what the node's interface config is told)."""
        rate = self.spreading_factor * self.bandwidth / 2**self.spreading_factor
        return int(rate * 4 / self.coding_rate)

    def describe(self) -> str:
        bw = f"{self.bandwidth / 1000:g}"
        label = f"SF{self.spreading_factor}/BW{bw}/CR4-{self.coding_rate}"
        return f"{self.name} ({label})" if self.name else label


def rnode_preamble(symbol_time: float) -> int:
    """RNode's preamble: 18 symbols, or more to last at least 24 ms."""
    target = RNODE_PREAMBLE_TARGET / symbol_time
    return max(RNODE_PREAMBLE_MIN_SYMBOLS, math.ceil(target - 1e-9))


def payload_symbols(modem: Modem, payload: int) -> int:
    """Symbols after the preamble for one LoRa frame of `payload` bytes (the datasheet's
    n_payload, the 8 header/sync symbols included)."""
    if not 0 <= payload <= LORA_MAX_PAYLOAD:
        raise ValueError(f"a LoRa frame carries 0..255 bytes, not {payload}")
    sf = modem.spreading_factor
    de = 1 if modem.low_data_rate else 0
    ih = 0 if modem.explicit_header else 1
    crc = 1 if modem.crc else 0
    numerator = 8 * payload - 4 * sf + 28 + 16 * crc - 20 * ih
    blocks = max(math.ceil(numerator / (4 * (sf - 2 * de))), 0)
    return 8 + blocks * modem.coding_rate


def frame_time(modem: Modem, payload: int) -> float:
    """Seconds on air of one LoRa frame carrying `payload` bytes."""
    preamble = (modem.preamble_symbols + 4.25) * modem.symbol_time
    return preamble + payload_symbols(modem, payload) * modem.symbol_time


def rnode_frames(packet: int) -> list[int]:
    """The LoRa frame payloads RNode firmware sends for an RNS packet of `packet` bytes: one
    frame of header + packet, or two when it exceeds 254 bytes."""
    room = LORA_MAX_PAYLOAD - RNODE_HEADER
    if packet <= room:
        return [packet + RNODE_HEADER]
    if packet > 2 * room:
        raise ValueError(f"RNode carries RNS packets up to {2 * room} bytes, not {packet}")
    return [LORA_MAX_PAYLOAD, packet - room + RNODE_HEADER]


def packet_time(modem: Modem, packet: int) -> float:
    """Seconds on air of an RNS packet of `packet` bytes sent through RNode firmware."""
    return sum(frame_time(modem, size) for size in rnode_frames(packet))


#: Meshtastic's modem presets (its `ModemPreset`), plus the 5.5 kbit/s RNode setting the
#: project's earlier figures were taken at (`lora-5k`, SF7/BW125).
PRESETS: dict[str, Modem] = {
    "short-turbo": Modem(spreading_factor=7, bandwidth=500_000),
    "short-fast": Modem(spreading_factor=7, bandwidth=250_000),
    "short-slow": Modem(spreading_factor=8, bandwidth=250_000),
    "medium-fast": Modem(spreading_factor=9, bandwidth=250_000),
    "medium-slow": Modem(spreading_factor=10, bandwidth=250_000),
    "long-fast": Modem(spreading_factor=11, bandwidth=250_000),
    "long-moderate": Modem(spreading_factor=11, bandwidth=125_000, coding_rate=8),
    "long-slow": Modem(spreading_factor=12, bandwidth=125_000, coding_rate=8),
    "lora-5k": Modem(spreading_factor=7, bandwidth=125_000),
}

_RAW = re.compile(r"sf(\d+)bw(\d+(?:\.\d+)?)(?:cr(?:4-?|4/)?([5-8]))?")


def parse_modem(text: str) -> Modem:
    """A preset name (`long-fast`, `LONG_FAST`) or raw settings: `sf7bw125`, `sf11bw250cr8`
    (bandwidth in kHz; coding rate 4/5 unless `crN` says otherwise).

    Raises:
        UsageError: neither a preset nor raw settings; names the presets.
    """
    key = text.strip().lower().replace("_", "-")
    if key in PRESETS:
        return replace(PRESETS[key], name=key)
    match = _RAW.fullmatch(key.replace("-", ""))
    if match is None:
        known = ", ".join(PRESETS)
        raise UsageError(
            f"radio {text!r}: expected a preset ({known}) or raw settings, e.g. sf7bw125, "
            "sf9bw250cr8"
        )
    sf, khz, cr = match.groups()
    bandwidth = round(float(khz) * 1000)
    modem = Modem(spreading_factor=int(sf), bandwidth=bandwidth, coding_rate=int(cr or 5))
    return replace(modem, name=key)
