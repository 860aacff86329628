"""An emulated LoRa channel for the harness (issue 16).

`airtime` is the Semtech time-on-air formula and the modem presets; `model` one channel as a
sans-IO machine (time on air, half-duplex, carrier sense, collisions, hidden nodes, loss, duty
cycle); `hdlc` the framing of Reticulum's `PipeInterface`; `channel` the daemon that drives one
model per channel over a Unix socket; `pipe` the command each node's `PipeInterface` runs, which
relays its frames to the daemon.
"""

from kai_mesh.harness.radio.airtime import PRESETS, Modem, packet_time, parse_modem
from kai_mesh.harness.radio.model import Channel, ChannelConfig, Delivery, Hearing

__all__ = [
    "PRESETS",
    "Channel",
    "ChannelConfig",
    "Delivery",
    "Hearing",
    "Modem",
    "packet_time",
    "parse_modem",
]
