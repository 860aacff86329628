"""Figures of the TUI (issue 14): start to first paint, RSS, idle CPU, key to repaint under a storm.

Starts a real node on a throw-away home (`init --local-only`), then:

1. runs `kai-mesh tui` on a pseudo-terminal and times until the node's name is drawn (first
   paint with data from the node), reads its RSS (goal ≤ 90 MB) and its CPU over 5 s idle
   (goal ≤ 2 % of a core);
2. runs the app headless (Pilot) while another client sends 100 messages a second to the echo
   agent (each one a `messages` push to the TUI), and times key press → repainted screen for
   alternate screen switches (goal p99 ≤ 50 ms).

    .venv/bin/python bench/tui.py
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="kmb-", dir="/tmp"))
    node = start_node(home)
    try:
        paint, rss, cpu = first_paint(home) if "--no-pty" not in sys.argv else (0.0, 0, 0.0)
        print(f"start → first paint with node data: {paint * 1000:.0f} ms")
        print(f"RSS of the TUI process: {rss / 1e6:.1f} MB (goal ≤ 90 MB)")
        print(f"idle CPU: {cpu:.1f} % of one core over 5 s (goal ≤ 2 %)")
        lat = sorted(asyncio.run(key_latency(home / "run" / "control.sock")))
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        missed = sum(1 for x in lat if x >= 5000)
        print(
            f"key → repaint under 100 events/s: {missed} presses not repainted in 5 s; "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"max {lat[-1]:.1f} ms over {len(lat)} presses (goal p99 ≤ 50 ms)"
        )
    finally:
        subprocess.run([*KAI, "--home", str(home), "stop"], capture_output=True)
        node.wait(15)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
