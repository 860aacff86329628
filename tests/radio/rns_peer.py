"""A bare Reticulum process on one PipeInterface, driven over stdin/stdout by the tests.

`python -m tests.radio.rns_peer CONFIGDIR`: prints `ready` once RNS is up; then each stdin line
`send HEX` sends one PLAIN packet (broadcast on the interface) and prints `sent T`; each packet
received prints `recv HEX T`. T is `time.monotonic()`, which is one clock for every process on
the machine, so the test can subtract them.
"""

from __future__ import annotations

import signal
import sys
import time

import RNS


def main() -> None:
    reticulum = RNS.Reticulum(configdir=sys.argv[1], loglevel=RNS.LOG_WARNING)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    inbound = RNS.Destination(None, RNS.Destination.IN, RNS.Destination.PLAIN, "kr", "radio")
    outbound = RNS.Destination(None, RNS.Destination.OUT, RNS.Destination.PLAIN, "kr", "radio")

    def received(data: bytes, packet: RNS.Packet) -> None:
        print(f"recv {data.hex()} {time.monotonic():.6f}", flush=True)

    inbound.set_packet_callback(received)
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["send"]:
            t = time.monotonic()
            RNS.Packet(outbound, bytes.fromhex(words[1])).send()
            print(f"sent {t:.6f}", flush=True)
    del reticulum
    RNS.Reticulum.exit_handler()


if __name__ == "__main__":
    main()
