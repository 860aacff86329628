"""Figures of the TUI (issue 14): start to first paint, RSS, idle CPU, key to repaint under a storm.

Starts a real node on a throw-away home (`init --local-only`), then:

1. runs `kai-mesh tui` on a pseudo-terminal and times until the node's name is drawn (first
   paint with data from the node), reads its RSS (goal ≤ 90 MB) and its CPU over 5 s idle
   (goal ≤ 2 % of a core);
2. runs `kai-mesh tui` on a pseudo-terminal again while another client sends 100 messages a second
   to the echo agent (each one a `messages` push to the TUI), writes screen-switch keys to the
   pty and times each until the new screen's own text comes out of it: key → repaint as the
   operator sees it, terminal I/O included (goal p99 ≤ 50 ms);
3. the same in-process on Textual's headless driver (Pilot), which leaves the terminal out.

    .venv/bin/python bench/tui.py
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kai_mesh.client import ControlClient
from tui.app import MeshApp

KAI = [sys.executable, "-m", "kai_mesh"]


def start_node(home: Path) -> subprocess.Popen[bytes]:
    subprocess.run(
        [*KAI, "--home", str(home), "init", "--local-only", "--name", "bench"],
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen([*KAI, "--home", str(home), "run"], stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            ControlClient(home / "run" / "control.sock").close()
            return proc
        except Exception:
            time.sleep(0.05)
    raise SystemExit("node did not start")


def first_paint(home: Path) -> tuple[float, int, float]:
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="80", LINES="24")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*KAI, "--home", str(home), "tui"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    seen = b""
    paint = float("nan")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
            if b"uptime" in seen:  # the Overview drew the node's status
                paint = time.perf_counter() - started
                break
    time.sleep(2)  # settle, then measure idle
    ps = psutil.Process(proc.pid)
    rss = ps.memory_info().rss
    ps.cpu_percent(None)
    end = time.monotonic() + 5
    while time.monotonic() < end:  # keep draining the pty so the TUI never blocks on output
        if select.select([master], [], [], 0.1)[0]:
            try:
                os.read(master, 65536)
            except OSError:
                break
    cpu = ps.cpu_percent(None)
    proc.terminate()
    proc.wait(10)
    os.close(master)
    return paint, rss, cpu


def pty_tui(home: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`kai-mesh tui` on a new 80×24 pseudo-terminal; returns it and the master side."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    os.set_blocking(master, False)
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="80", LINES="24")
    proc = subprocess.Popen(
        [*KAI, "--home", str(home), "tui"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    return proc, master


def read_until(master: int, marker: bytes, wait: float) -> tuple[bool, bytes]:
    """Drain the pty until `marker` comes out (True) or `wait` seconds pass (False)."""
    seen = b""
    deadline = time.perf_counter() + wait
    while (left := deadline - time.perf_counter()) > 0:
        if select.select([master], [], [], min(left, 0.05))[0]:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
            if marker in seen[-65536 - len(marker) :]:
                return True, seen
    return False, seen


def drain(master: int) -> None:
    while select.select([master], [], [], 0)[0]:
        try:
            os.read(master, 65536)
        except OSError:
            return


#: Screen switches timed on the pty, and text that only the target screen draws.
PTY_KEYS = ((b"2", b"(f t i)"), (b"4", b" kept, "))


def pty_key_latency(home: Path, presses: int = 200) -> tuple[list[float], int]:
    """Key → repaint on a real pseudo-terminal under 100 events/s. Each press is written once
    everything before it was read, and timed until its screen's own text is in the output (a
    stale repaint of the other screen cannot match), so it is what the operator would see."""
    proc, master = pty_tui(home)
    stop = threading.Event()
    sent = [0]
    socket = home / "run" / "control.sock"
    thread = threading.Thread(target=storm, args=(socket, 100.0, stop, sent), daemon=True)
    out: list[float] = []
    missed = 0
    try:
        if not read_until(master, b"uptime", 30)[0]:
            raise SystemExit("the TUI did not draw the node's status on the pty")
        thread.start()
        time.sleep(1.0)
        for n in range(presses):
            key, marker = PTY_KEYS[n % 2]
            drain(master)
            t0 = time.perf_counter()
            os.write(master, key)
            ok, _ = read_until(master, marker, 5.0)
            if ok:
                out.append((time.perf_counter() - t0) * 1000)
            else:
                missed += 1
            time.sleep(0.05)
        cpu = psutil.Process(proc.pid).cpu_times()
    finally:
        stop.set()
        thread.join(5)
        proc.terminate()
        proc.wait(10)
        os.close(master)
    if len(out) >= 2:
        first = f"{out[0]:.0f}, {out[1]:.0f} ms"
        print(f"pty: the first press to each screen (it composes then): {first}")
    print(
        f"pty storm: {sent[0]} messages sent in the run; TUI CPU {cpu.user + cpu.system:.1f} s; "
        f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    return out, missed


def storm(socket: Path, rate: float, stop: threading.Event, sent: list[int]) -> None:
    with ControlClient(socket) as client:
        period = 1.0 / rate
        next_at = time.monotonic()
        while not stop.is_set():
            client.call("send", {"to": "kai://bench/echo", "intent": "echo", "payload": sent[0]})
            sent[0] += 1
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))


async def key_latency(socket: Path, presses: int = 40) -> list[float]:
    app = MeshApp(socket)
    stop = threading.Event()
    sent = [0]
    thread = threading.Thread(target=storm, args=(socket, 100.0, stop, sent), daemon=True)
    out: list[float] = []
    async with app.run_test(size=(80, 24)) as pilot:
        while not app.view.connected:
            await pilot.pause(0.05)
        await pilot.press("4")  # the Log screen: the storm lands there
        thread.start()
        await pilot.pause(1.0)
        for n in range(presses):
            key, mode = ("2", "peers") if n % 2 == 0 else ("4", "log")
            paints = app.paints
            t0 = time.perf_counter()
            app.simulate_key(key)  # not pilot.press: it waits for idle, never reached in a storm
            give_up = time.monotonic() + 5
            while app.current_mode != mode or app.paints == paints:
                if time.monotonic() > give_up:
                    break
                await asyncio.sleep(0.001)
            out.append((time.perf_counter() - t0) * 1000)
            await pilot.pause(0.05)
        events = app.view.events_seen
    stop.set()
    thread.join(5)
    print(f"storm: {sent[0]} messages sent, {events} events reached the TUI")
    return out


def report(what: str, lat: list[float], missed: int) -> None:
    if not lat:
        print(f"{what}: no press repainted ({missed} missed)")
        return
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(
        f"{what}: {missed} presses not repainted in 5 s; p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {lat[-1]:.1f} ms over {len(lat)} presses (goal p99 ≤ 50 ms); "
        f"slowest 5: {', '.join(f'{x:.0f}' for x in lat[-5:])} ms"
    )


def main() -> None:
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    home = Path(tempfile.mkdtemp(prefix="kmb-", dir="/tmp"))
    node = start_node(home)
    try:
        paint, rss, cpu = first_paint(home) if "--no-pty" not in sys.argv else (0.0, 0, 0.0)
        print(f"start → first paint with node data: {paint * 1000:.0f} ms")
        print(f"RSS of the TUI process: {rss / 1e6:.1f} MB (goal ≤ 90 MB)")
        print(f"idle CPU: {cpu:.1f} % of one core over 5 s (goal ≤ 2 %)")
        pty_lat, pty_missed = pty_key_latency(home)
        report("pty key → repaint under 100 events/s", sorted(pty_lat), pty_missed)
        lat = sorted(asyncio.run(key_latency(home / "run" / "control.sock")))
        missed = sum(1 for x in lat if x >= 5000)
        report("headless key → repaint under 100 events/s", lat, missed)
    finally:
        subprocess.run([*KAI, "--home", str(home), "stop"], capture_output=True)
        node.wait(15)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
