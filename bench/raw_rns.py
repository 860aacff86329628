"""A bare Reticulum program pair, the baseline `bench/reticulum.py` compares kai-mesh with.

Run each half inside a harness namespace (`ip netns exec NS python bench/raw_rns.py …`). Both use
one UDP broadcast interface on the harness's subnet, on port 4243 so they do not collide with the
kai-mesh node (port 4242) in the same namespace.

    raw_rns.py recv --configdir D [--mode M]  prints {"destination": HEX}, announces until a link
                                             comes up, counts packets with a packet callback, and
                                             prints {"received": N, "seconds": T} after 1 s idle
    raw_rns.py send --configdir D --to HEX --count N --size B
                                             opens a Link, measures the wire size of one B-byte
                                             packet on veth0, then sends N packets as fast as it
                                             can; prints {"sent": N, "seconds": T, "wire": {...}}

`--mode` (the same on both halves) says how the receiver gets packets: `thread` (a packet
callback, for which RNS starts one thread per packet: the baseline), `inline` (the same callback
run on RNS's reader thread, as kai-mesh does: `transports/reticulum/_inline.py`) or `channel`
(RNS's `Channel` on the link: no thread, but a proof per packet and a send window).

This is a benchmark helper, not part of kai-mesh: it imports RNS directly on purpose.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import RNS

from transports.reticulum._inline import inline, install

PORT = 4243
MODES = ("thread", "inline", "channel")


class Blob(RNS.MessageBase):
    """One opaque payload on an RNS Channel."""

    MSGTYPE = 0x0101

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    def pack(self) -> bytes:
        return self.data

    def unpack(self, raw: bytes) -> None:
        self.data = raw


BROADCAST = "10.77.0.255"
DEV = Path("/sys/class/net/veth0/statistics")


def start(configdir: Path) -> Any:
    configdir.mkdir(parents=True, exist_ok=True)
    (configdir / "config").write_text(
        "[reticulum]\n  enable_transport = No\n  share_instance = No\n"
        "  panic_on_interface_error = No\n[logging]\n  loglevel = 2\n[interfaces]\n"
        "  [[udp]]\n    type = UDPInterface\n    enabled = yes\n"
        f"    listen_ip = {BROADCAST}\n    listen_port = {PORT}\n"
        f"    forward_ip = {BROADCAST}\n    forward_port = {PORT}\n"
        "    ingress_control = No\n"
    )
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    rns = RNS.Reticulum(configdir=str(configdir))
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    return rns


def emit(data: dict[str, Any]) -> None:
    sys.__stdout__.write(json.dumps(data) + "\n")  # RNS may point sys.stdout elsewhere
    sys.__stdout__.flush()


def recv(args: argparse.Namespace) -> None:
    start(Path(args.configdir))
    if args.how == "inline":
        install()
    identity = RNS.Identity()
    destination = RNS.Destination(
        identity, RNS.Destination.IN, RNS.Destination.SINGLE, "rawbench", "sink"
    )
    lock = threading.Lock()
    state = {"count": 0, "first": 0.0, "last": 0.0, "cpu0": 0.0, "cpu1": 0.0}
    linked = threading.Event()

    def on_packet(message: bytes, packet: Any) -> None:
        now = time.perf_counter()
        with lock:
            if state["count"] == 0:
                state["first"] = now
                state["cpu0"] = time.process_time()
            state["count"] += 1
            state["last"] = now
            state["cpu1"] = time.process_time()

    def on_message(message: Any) -> bool:
        on_packet(message.data, None)
        return True

    def on_link(link: Any) -> None:
        if args.how == "channel":
            channel = link.get_channel()
            channel.register_message_type(Blob)
            channel.add_message_handler(on_message)
        elif args.how == "inline":
            link.set_packet_callback(inline(on_packet))
        else:
            link.set_packet_callback(on_packet)
        linked.set()

    destination.set_link_established_callback(on_link)
    emit({"destination": destination.hash.hex()})
    deadline = time.monotonic() + args.timeout
    while not linked.wait(0.5):
        destination.announce()
        if time.monotonic() > deadline:
            emit({"error": "no link"})
            return
    while time.monotonic() < deadline:
        time.sleep(0.2)
        with lock:
            idle = state["count"] >= args.expect or (
                state["count"] > 0 and time.perf_counter() - state["last"] > 1.0
            )
        if idle:
            break
    emit(
        {
            "received": state["count"],
            "seconds": state["last"] - state["first"],
            "cpu_s": state["cpu1"] - state["cpu0"],
        }
    )


def counters() -> tuple[int, int]:
    return int((DEV / "tx_bytes").read_text()), int((DEV / "tx_packets").read_text())


def send(args: argparse.Namespace) -> None:
    start(Path(args.configdir))
    destination_hash = bytes.fromhex(args.to)
    deadline = time.monotonic() + args.timeout
    while not RNS.Transport.has_path(destination_hash):
        RNS.Transport.request_path(destination_hash)
        time.sleep(0.2)
        if time.monotonic() > deadline:
            emit({"error": "no path"})
            return
    identity = RNS.Identity.recall(destination_hash)
    destination = RNS.Destination(
        identity, RNS.Destination.OUT, RNS.Destination.SINGLE, "rawbench", "sink"
    )
    up = threading.Event()
    t0 = time.perf_counter()
    link = RNS.Link(destination, established_callback=lambda _link: up.set())
    if not up.wait(15):
        emit({"error": "no link"})
        return
    setup = time.perf_counter() - t0
    link.identify(RNS.Identity())  # the kai-mesh link is identified too
    payload = bytes(args.size)
    wire = []
    for _ in range(3):  # the median of three; a stray announce shows as a second packet
        time.sleep(0.3)
        before = counters()
        RNS.Packet(link, payload).send()
        time.sleep(0.3)
        after = counters()
        wire.append((after[0] - before[0], after[1] - before[1]))
    one = [w for w in wire if w[1] == 1]
    channel = None
    if args.how == "channel":
        channel = link.get_channel()
        channel.register_message_type(Blob)
    started = time.perf_counter()
    for _ in range(args.count):
        if channel is None:
            RNS.Packet(link, payload).send()
            continue
        while not channel.is_ready_to_send():  # the window is full: wait for proofs
            time.sleep(0.0002)
        channel.send(Blob(payload))
    seconds = time.perf_counter() - started
    emit(
        {
            "sent": args.count,
            "seconds": seconds,
            "link_setup_s": setup,
            "wire_bytes": sorted(one)[len(one) // 2][0] if one else None,
            "wire_samples": wire,
        }
    )
    time.sleep(2)  # let the last packets leave before teardown
    link.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("recv")
    r.add_argument("--configdir", required=True)
    r.add_argument("--expect", type=int, default=10**9, help="stop once this many arrived")
    r.add_argument("--timeout", type=float, default=60)
    r.add_argument("--mode", dest="how", choices=MODES, default="thread")
    s = sub.add_parser("send")
    s.add_argument("--configdir", required=True)
    s.add_argument("--to", required=True)
    s.add_argument("--count", type=int, default=10_000)
    s.add_argument("--size", type=int, default=100)
    s.add_argument("--timeout", type=float, default=30)
    s.add_argument("--mode", dest="how", choices=MODES, default="thread")
    args = parser.parse_args()
    try:
        recv(args) if args.mode == "recv" else send(args)
    finally:
        RNS.Reticulum.exit_handler()


if __name__ == "__main__":
    main()
