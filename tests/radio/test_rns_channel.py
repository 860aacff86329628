"""Plain RNS packets between real Reticulum processes through the channel daemon: time on air,
collisions and half-duplex end to end (no namespaces needed: PipeInterface is a subprocess)."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kai_mesh.config.interfaces import ReticulumSettings, parse_interfaces, render_rns_config
from kai_mesh.harness.radio.airtime import packet_time, parse_modem
from kai_mesh.harness.radio.channel import query_stats

pytestmark = pytest.mark.slow

MODEM = "sf9bw125"  # 1.76 kbit/s: frames of ~0.3-0.5 s, so processes cannot race past them
PLAIN_HEADER = 19  # RNS header for a PLAIN packet: flags, hops, destination hash, context


@dataclass
class Peer:
    name: str
    proc: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    def start_reader(self) -> None:
        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.put(line.strip())

        threading.Thread(target=pump, daemon=True).start()

    def expect(self, word: str, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"{self.name}: no {word!r} in {timeout} s")
            if line.split()[:1] == [word]:
                return line.split()

    def quiet(self, seconds: float) -> list[str]:
        """Lines that arrive within `seconds`."""
        time.sleep(seconds)
        out = []
        while not self.lines.empty():
            out.append(self.lines.get())
        return out

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"send {data.hex()}\n")
        self.proc.stdin.flush()


def _channel(tmp: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    sock = tmp / "ch.sock"
    argv = [sys.executable, "-m", "kai_mesh.harness.radio.channel", "--socket", str(sock)]
    proc = subprocess.Popen(
        [*argv, "--modem", MODEM, "--seed", "1", *extra],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        assert time.monotonic() < deadline, "the channel daemon did not start"
        time.sleep(0.05)
    return proc, sock


def _peer(tmp: Path, name: str, sock: Path) -> Peer:
    configdir = tmp / name
    configdir.mkdir()
    command = f"{sys.executable} -m kai_mesh.harness.radio.pipe --socket {sock} --node {name}"
    item = {"name": "radio", "type": "pipe", "command": command, "ingress_control": False}
    item["bitrate"] = parse_modem(MODEM).bitrate
    text = render_rns_config(ReticulumSettings(), parse_interfaces(tmp, [item]))
    (configdir / "config").write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.radio.rns_peer", str(configdir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    peer = Peer(name, proc)
    peer.start_reader()
    return peer


@pytest.fixture
def radio(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[list[Peer], Path]]:
    extra = getattr(request, "param", ())
    channel, sock = _channel(tmp_path, *extra)
    peers = [_peer(tmp_path, name, sock) for name in ("a", "b", "c")]
    try:
        for peer in peers:
            peer.expect("ready")
        _wait_attached(sock, 3)
        yield peers, sock
    finally:
        for proc in [p.proc for p in peers]:
            proc.kill()
            proc.wait()
        channel.kill()
        channel.wait()


def _wait_attached(sock: Path, n: int) -> None:
    deadline = time.monotonic() + 15
    while len(query_stats(sock)["nodes"]) < n:
        assert time.monotonic() < deadline, "the pipes did not attach"
        time.sleep(0.05)


def test_a_packet_takes_its_time_on_air(radio: tuple[list[Peer], Path]) -> None:
    (a, b, c), sock = radio
    payload = bytes(range(100))
    a.send(payload)
    sent = float(a.expect("sent")[1])
    got_b = b.expect("recv")
    got_c = c.expect("recv")
    assert got_b[1] == got_c[1] == payload.hex()
    toa = packet_time(parse_modem(MODEM), len(payload) + PLAIN_HEADER)
    for got in (got_b, got_c):
        delay = float(got[2]) - sent
        assert toa <= delay < toa + 0.5, (delay, toa)
    stats = query_stats(sock)
    assert stats["nodes"]["a"]["frames_sent"] == 1
    assert stats["nodes"]["a"]["bytes_sent"] == len(payload) + PLAIN_HEADER


@pytest.mark.parametrize("radio", [("--no-csma",)], indirect=True)
def test_two_senders_at_once_collide(radio: tuple[list[Peer], Path]) -> None:
    (a, b, c), sock = radio
    a.send(b"A" * 120)
    b.send(b"B" * 120)
    a.expect("sent")
    b.expect("sent")
    heard = c.quiet(2.0) + a.quiet(0) + b.quiet(0)
    assert not [line for line in heard if line.startswith("recv")]
    nodes = query_stats(sock)["nodes"]
    assert nodes["c"]["collisions"] == 2
    assert nodes["a"]["lost_half_duplex"] == 1 and nodes["b"]["lost_half_duplex"] == 1


def test_carrier_sense_lets_both_through(radio: tuple[list[Peer], Path]) -> None:
    (a, b, c), sock = radio
    a.send(b"A" * 120)
    a.expect("sent")
    time.sleep(0.1)  # well past the 4 symbols (16 ms) carrier sense needs
    b.send(b"B" * 120)
    got = [c.expect("recv")[1], c.expect("recv")[1]]
    assert sorted(bytes.fromhex(g)[:1] for g in got) == [b"A", b"B"]
    assert query_stats(sock)["nodes"]["b"]["deferrals"] == 1
