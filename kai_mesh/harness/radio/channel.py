"""The channel daemon: one process per emulated LoRa channel, a thin trio driver of `model`.

Theory of operation. The daemon listens on a Unix socket (a path in the harness directory, so
nodes in every network namespace reach it). A node's `PipeInterface` runs `pipe`, which connects
and says `node NAME`; after that line the connection carries the interface's HDLC frames both
ways. Each frame read is `Channel.submit`ted at `trio.current_time()`; one timer task sleeps
until `Channel.get_timer()` (or until a submission wakes it) and hands what `handle_timer`
delivers to the receivers' connections. A connection that says `stats` gets one JSON line (per
node counts, the modem, and how late the daemon delivered) and is closed.

Queue policy: each receiver has a bounded send queue of `SEND_QUEUE` frames; when it is full the
frame is dropped and counted as `overflow` (a radio whose host does not read loses frames too).
Lateness — how long after a frame's air time ended it was written to a receiver — is the
emulator's own distortion; `stats` reports its mean, maximum and the count over 10 ms.

Frame log: with `--frame-log PATH` every frame a node hands the channel is appended there as one
JSON line (`t` seconds since the daemon started, `node`, `len`, the RNS packet as `hex`), so what
a node spends its air on can be told apart afterwards (`kai_mesh.harness.radio.frames`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import socket as stdsocket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import trio

from kai_mesh.core.errors import UsageError
from kai_mesh.harness.radio import hdlc
from kai_mesh.harness.radio.airtime import parse_modem
from kai_mesh.harness.radio.model import Channel, ChannelConfig, Delivery, Hearing

logger = logging.getLogger(__name__)

SEND_QUEUE = 256
LATE = 0.010  # seconds: a delivery later than this counts as distorted
HELLO_MAX = 256


@dataclass(eq=False)
class _Peer:
    name: str
    stream: trio.SocketStream
    send: trio.MemorySendChannel[bytes]
    receive: trio.MemoryReceiveChannel[bytes]
    overflow: int = 0


@dataclass
class _Lateness:
    count: int = 0
    total: float = 0.0
    worst: float = 0.0
    over: int = 0

    def add(self, late: float) -> None:
        self.count += 1
        self.total += late
        self.worst = max(self.worst, late)
        self.over += late > LATE


@dataclass(eq=False)
class ChannelDaemon:
    """Serve `channel` on the Unix socket `path`."""

    channel: Channel
    path: Path
    name: str = "channel"
    peers: dict[str, _Peer] = field(default_factory=dict)
    late: _Lateness = field(default_factory=_Lateness)
    frames_in: int = 0
    refused: int = 0  # frames the model refused (longer than RNode carries)
    started: float = field(default_factory=time.monotonic)
    frame_log: IO[str] | None = None
    _kick: trio.Event = field(default_factory=trio.Event)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.path.unlink(missing_ok=True)
        sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        await sock.bind(str(self.path))
        sock.listen(64)
        listener = trio.SocketListener(sock)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._timer)
            task_status.started()
            await trio.serve_listeners(self._handle, [listener], handler_nursery=nursery)

    # ---- time -----------------------------------------------------------------------------

    async def _timer(self) -> None:
        while True:
            self._dispatch(self.channel.handle_timer(trio.current_time()))
            when = self.channel.get_timer()
            self._kick = trio.Event()
            with trio.move_on_at(when if when is not None else float("inf")):
                await self._kick.wait()

    def _dispatch(self, deliveries: Sequence[Delivery]) -> None:
        now = trio.current_time()
        for delivery in deliveries:
            peer = self.peers.get(delivery.to)
            if peer is None:
                continue
            self.late.add(max(0.0, now - delivery.end))
            try:
                peer.send.send_nowait(hdlc.encode(delivery.payload))
            except trio.WouldBlock:
                peer.overflow += 1

    # ---- connections ----------------------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            hello, rest = await _read_line(stream)
            if hello == "stats":
                await stream.send_all(json.dumps(self.stats()).encode() + b"\n")
                return
            if not hello.startswith("node ") or not hello[5:].strip():
                logger.warning("%s: refused a connection that said %r", self.name, hello)
                return
            await self._serve_node(hello[5:].strip(), stream, rest)

    async def _serve_node(self, name: str, stream: trio.SocketStream, rest: bytes) -> None:
        old = self.peers.pop(name, None)
        if old is not None:  # the interface respawned its pipe: the new one wins
            await old.stream.aclose()
        send, receive = trio.open_memory_channel[bytes](SEND_QUEUE)
        peer = _Peer(name, stream, send, receive)
        self.peers[name] = peer
        self.channel.attach(name)
        logger.info("%s: %s attached", self.name, name)
        decoder = hdlc.Decoder()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, peer)
                self._frames(name, decoder.feed(rest))
                async for data in stream:
                    self._frames(name, decoder.feed(bytes(data)))
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if self.peers.get(name) is peer:
                del self.peers[name]
                self.channel.detach(name)
                logger.info("%s: %s detached", self.name, name)

    def _frames(self, name: str, frames: list[bytes]) -> None:
        for frame in frames:
            self.frames_in += 1
            try:
                self._dispatch(self.channel.submit(name, frame, trio.current_time()))
            except ValueError:
                self.refused += 1
            if self.frame_log is not None:
                t = round(time.monotonic() - self.started, 3)
                entry = {"t": t, "node": name, "len": len(frame), "hex": frame.hex()}
                self.frame_log.write(json.dumps(entry) + "\n")
        if frames:
            self._kick.set()

    async def _writer(self, peer: _Peer) -> None:
        async for data in peer.receive:
            await peer.stream.send_all(data)

    # ---- stats ----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        modem = self.channel.config.modem
        nodes = self.channel.stats(trio.current_time())
        for name, entry in nodes.items():
            peer = self.peers.get(name)
            entry["overflow"] = peer.overflow if peer else 0
        wall = max(time.monotonic() - self.started, 1e-9)
        cpu = time.process_time()
        return {
            "channel": self.name,
            "modem": modem.describe(),
            "bitrate": modem.bitrate,
            "loss": self.channel.config.loss,
            "csma": self.channel.config.csma,
            "duty_limit": self.channel.config.duty_limit,
            "frames_in": self.frames_in,
            "refused": self.refused,
            "uptime_s": round(wall, 1),
            "cpu_s": round(cpu, 3),
            "cpu_pct": round(100 * cpu / wall, 2),
            "late": {
                "deliveries": self.late.count,
                "mean_ms": round(1000 * self.late.total / max(self.late.count, 1), 3),
                "max_ms": round(1000 * self.late.worst, 3),
                "over_10ms": self.late.over,
            },
            "nodes": nodes,
        }


async def _read_line(stream: trio.SocketStream) -> tuple[str, bytes]:
    """The first line of a connection, and whatever came after it in the same reads."""
    buffer = b""
    while b"\n" not in buffer:
        data = await stream.receive_some(HELLO_MAX)
        if not data or len(buffer) > HELLO_MAX:
            return "", b""
        buffer += data
    line, _, rest = buffer.partition(b"\n")
    return line.decode("utf-8", "replace").strip(), rest


def query_stats(path: Path, timeout: float = 5.0) -> dict[str, Any]:
    """Ask the channel daemon at `path` for its stats (blocking).

    Raises:
        OSError: no daemon answers there.
    """
    with stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(b"stats\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    result: dict[str, Any] = json.loads(b"".join(chunks))
    return result


def parse_hidden(text: str | None) -> list[tuple[str, str]]:
    """`a:b,c:d` → pairs that do not hear each other.

    Raises:
        UsageError: a pair that is not two different names.
    """
    pairs = []
    for item in (text or "").split(","):
        if not item:
            continue
        a, sep, b = item.partition(":")
        if not sep or not a or not b or a == b:
            raise UsageError(f"hidden pair {item!r}: expected NODE:NODE, e.g. node1:node3")
        pairs.append((a, b))
    return pairs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kai_mesh.harness.radio.channel", description="an emulated LoRa channel"
    )
    p.add_argument("--socket", required=True, help="the Unix socket to listen on")
    p.add_argument("--modem", required=True, help="a preset (long-fast…) or e.g. sf7bw125")
    p.add_argument("--name", default="channel")
    p.add_argument("--loss", type=float, default=0.0, help="random loss, percent")
    p.add_argument("--seed", type=int, default=None, help="seed of the loss and backoff draws")
    p.add_argument("--hidden", help="pairs that do not hear each other: node1:node3,…")
    p.add_argument("--capture-db", type=float, help="capture effect threshold, dB")
    p.add_argument("--duty-limit", type=float, help="enforce this duty cycle, percent")
    p.add_argument("--no-csma", action="store_true", help="transmit without carrier sense")
    p.add_argument("--frame-log", help="append every frame sent, as JSON lines, to this file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        config = ChannelConfig(
            modem=parse_modem(args.modem),
            loss=args.loss / 100,
            capture_db=args.capture_db,
            duty_limit=args.duty_limit / 100 if args.duty_limit else None,
            csma=not args.no_csma,
        )
        hearing = Hearing.hidden(parse_hidden(args.hidden))
    except (UsageError, ValueError) as exc:
        print(f"channel: {exc}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(8), "big")
    channel = Channel(config, random.Random(seed), hearing)
    log = open(args.frame_log, "a", buffering=1) if args.frame_log else None  # noqa: SIM115
    daemon = ChannelDaemon(channel, Path(args.socket), args.name, frame_log=log)
    logger.info("%s: %s on %s (seed %d)", args.name, config.modem.describe(), args.socket, seed)
    try:
        trio.run(daemon.serve)
    except KeyboardInterrupt:
        return 130
    finally:
        if log is not None:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
