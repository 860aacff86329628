"""LoRa time on air against published examples, to the millisecond."""

from __future__ import annotations

import pytest

from kai_mesh.core.errors import UsageError
from kai_mesh.harness.radio.airtime import (
    PRESETS,
    Modem,
    frame_time,
    packet_time,
    parse_modem,
    payload_symbols,
    rnode_frames,
    rnode_preamble,
)


def lorawan(sf: int, bw: int = 125_000, cr: int = 5) -> Modem:
    """LoRaWAN's framing: 8-symbol preamble, explicit header, CRC on, LDRO automatic."""
    return Modem(spreading_factor=sf, bandwidth=bw, coding_rate=cr, preamble=8)


@pytest.mark.parametrize(
    ("modem", "payload", "symbols", "ms"),
    [
        # Semtech LoRa calculator / AN1200.13: SF7/BW125/CR4-5, 10 bytes: 41.216 ms.
        (lorawan(7), 10, 28, 41.216),
        # AN1200.13 spreadsheet: SF9/BW125/CR4-5, 13 bytes: Tsym 4.096 ms, Tpreamble 50.176 ms,
        # 28 payload symbols, Tpacket 164.864 ms.
        (lorawan(9), 13, 28, 164.864),
        # LoRaWAN EU868 DR0 (SF12/BW125) with its largest frame, 51 bytes + 13 of header:
        # 2793.5 ms, low-data-rate optimisation on (Tsym 32.768 ms > 16 ms).
        (lorawan(12), 64, 73, 2793.472),
        # LoRaWAN DR5 (SF7/BW125), 222 bytes + 13: 368.9 ms.
        (lorawan(7), 235, 348, 368.896),
    ],
)
def test_published_examples(modem: Modem, payload: int, symbols: int, ms: float) -> None:
    assert payload_symbols(modem, payload) == symbols
    assert frame_time(modem, payload) * 1000 == pytest.approx(ms, abs=0.001)


def test_low_data_rate_optimisation_follows_the_symbol_time() -> None:
    assert lorawan(12).low_data_rate and lorawan(11).low_data_rate
    assert not lorawan(10).low_data_rate
    assert lorawan(12, 250_000).low_data_rate and not lorawan(11, 250_000).low_data_rate
    # forced off, SF12 costs fewer symbols (more bits per symbol)
    forced = Modem(spreading_factor=12, bandwidth=125_000, preamble=8, ldro=False)
    assert payload_symbols(forced, 64) < payload_symbols(lorawan(12), 64)


def test_coding_rate_header_and_crc_change_the_payload_symbols() -> None:
    base = payload_symbols(lorawan(7), 51)
    assert payload_symbols(lorawan(7, cr=8), 51) > base
    implicit = Modem(spreading_factor=7, bandwidth=125_000, preamble=8, explicit_header=False)
    no_crc = Modem(spreading_factor=7, bandwidth=125_000, preamble=8, crc=False)
    assert payload_symbols(implicit, 51) < base and payload_symbols(no_crc, 51) < base


def test_rnode_preamble_is_18_symbols_or_24_ms() -> None:
    assert rnode_preamble(PRESETS["long-fast"].symbol_time) == 18
    assert rnode_preamble(PRESETS["lora-5k"].symbol_time) == 24  # 24 ms / 1.024 ms, rounded up
    assert PRESETS["short-fast"].preamble_symbols == 47


def test_rnode_splits_packets_over_254_bytes() -> None:
    assert rnode_frames(100) == [101]
    assert rnode_frames(254) == [255]
    assert rnode_frames(255) == [255, 2]
    assert rnode_frames(500) == [255, 247]
    with pytest.raises(ValueError):
        rnode_frames(509)
    modem = PRESETS["long-fast"]
    assert packet_time(modem, 500) == frame_time(modem, 255) + frame_time(modem, 247)


def test_presets_and_raw_settings() -> None:
    long_fast = parse_modem("LONG_FAST")
    assert (long_fast.spreading_factor, long_fast.bandwidth, long_fast.coding_rate) == (
        11,
        250_000,
        5,
    )
    assert parse_modem("long-slow").coding_rate == 8
    raw = parse_modem("sf7bw125")
    assert (raw.spreading_factor, raw.bandwidth, raw.coding_rate) == (7, 125_000, 5)
    assert parse_modem("sf12bw62.5cr8").bandwidth == 62_500
    assert parse_modem("sf9bw250cr4/7").coding_rate == 7
    assert raw.bitrate == 5468  # 5.47 kbit/s, Reticulum's figure for SF7/BW125/CR4-5
    assert parse_modem("long-fast").bitrate == 1074
    for bad in ("sf13bw125", "sf7bw100", "sf7bw125cr9", "fast", ""):
        with pytest.raises(UsageError):
            parse_modem(bad)
