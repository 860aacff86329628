"""Radio figures on the emulated LoRa channel (issue 16), instead of tbf.

- `toa`: time on air of 100/200/500-byte RNS packets for each preset (pure arithmetic);
- `overhead`: the channel daemon alone, fed by raw clients at rising frame rates on a fast raw
  modem without carrier sense: how late it delivers (its own timing distortion) and its CPU;
- `netns` (root): 5 nodes on one channel (`--modem`, default medium-fast, the SF9 class):
  idle bytes and air time an hour per node after `--warmup-s` (goal ≤ 1.1 KB/h), and what
  those bytes were, frame by frame (`harness.radio.frames`); a 200 B and a 20 KB echo; one
  state change at all 5; a governance vote certified at all 5 (admins node1-3, threshold 2);
  and the time until each other node calls a SIGKILLed node5 failed; the channel's stats.
  `--parts` picks figures, `--progress FILE` keeps the result so far, `--frames-out FILE` the
  channel's frame log.

    sudo .venv/bin/python bench/radio.py [toa] [overhead] [netns --modem short-fast --idle-min 5]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from netns_common import harness, wait

from kai_mesh.client import ControlClient
from kai_mesh.config.settings import NodePaths
from kai_mesh.harness import cluster
from kai_mesh.harness.radio import hdlc
from kai_mesh.harness.radio.airtime import PRESETS, packet_time, parse_modem
from kai_mesh.harness.radio.channel import query_stats
from kai_mesh.harness.radio.frames import read, summarise
from kai_mesh.harness.radio.harness import RadioPlan, frames_path, socket_path
from kai_mesh.harness.radio.harness import plan as radio_plan

NAMES = [f"node{k}" for k in range(1, 6)]
GOAL_BYTES_PER_HOUR = 1100


def toa() -> dict[str, Any]:
    return {
        name: {
            "bitrate": m.bitrate,
            **{f"{n}B_ms": round(1000 * packet_time(m, n), 1) for n in (100, 200, 500)},
        }
        for name, m in PRESETS.items()
    }


def overhead(seconds: float = 5.0, pairs: int = 10) -> dict[str, Any]:
    """`pairs` sender/receiver pairs that hear only each other (so frames of different pairs
    never collide and the channel carries pairs/ToA frames/s), 60-byte frames on SF7/BW500,
    at rising offered rates: deliveries/s, how late the daemon delivers, its CPU."""
    tmp = Path(tempfile.mkdtemp(prefix="krb-", dir="/tmp"))
    sock_path = tmp / "ch.sock"
    names = [f"s{k}" for k in range(pairs)] + [f"r{k}" for k in range(pairs)]
    partner = {f"s{k}": f"r{k}" for k in range(pairs)}
    deaf = [
        f"{a}:{b}"
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if partner.get(a) != b and partner.get(b) != a
    ]
    argv = [sys.executable, "-m", "kai_mesh.harness.radio.channel", "--socket", str(sock_path)]
    argv += ["--modem", "sf7bw500", "--no-csma", "--seed", "1", "--hidden", ",".join(deaf)]
    daemon = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    frame = hdlc.encode(bytes(60))
    toa = packet_time(parse_modem("sf7bw500"), 60)
    rows = []
    try:
        wait(sock_path.exists, 10, "the daemon")
        clients = {}
        for name in names:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(sock_path))
            s.sendall(f"node {name}\n".encode())
            s.setblocking(False)
            clients[name] = s
        senders = [clients[f"s{k}"] for k in range(pairs)]
        proc = psutil.Process(daemon.pid)
        for rate in (20, 50, 100, 150, 200, 250):
            before, cpu0 = query_stats(sock_path), proc.cpu_times()
            t0, sent = time.monotonic(), 0
            while (elapsed := time.monotonic() - t0) < seconds:
                while sent < int(elapsed * rate):
                    senders[sent % pairs].sendall(frame)
                    sent += 1
                for c in clients.values():  # drain what the channel delivers
                    try:
                        while c.recv(65536):
                            pass
                    except BlockingIOError:
                        pass
                time.sleep(0.001)
            time.sleep(2 * toa)
            after, cpu1 = query_stats(sock_path), proc.cpu_times()
            cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / seconds
            b, a = before["late"], after["late"]
            n = a["deliveries"] - b["deliveries"]
            mean = (a["mean_ms"] * a["deliveries"] - b["mean_ms"] * b["deliveries"]) / max(n, 1)
            rows.append(
                {
                    "offered_frames_s": rate,
                    "delivered_frames_s": round(n / seconds),
                    "late_mean_ms": round(mean, 2),
                    "late_over_10ms": a["over_10ms"] - b["over_10ms"],
                    "daemon_cpu_pct": round(100 * cpu, 1),
                }
            )
            print(f"  overhead {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        daemon.kill()
        daemon.wait()
    return {
        "setup": f"{pairs} isolated pairs, 60-byte frames, sf7bw500 ({1000 * toa:.1f} ms each), "
        f"physical ceiling {pairs / toa:.0f} frames/s",
        "rows": rows,
    }


# ---- netns ---------------------------------------------------------------------------------


def _call(state: cluster.HarnessState, node: str, method: str, params: Any = None) -> Any:
    with ControlClient(NodePaths.resolve(state.node(node).home).socket, timeout=120) as c:
        return c.call(method, params or {})


def _channel(state: cluster.HarnessState) -> dict[str, Any]:
    assert state.radio is not None
    radio = RadioPlan.from_json(state.radio)
    return query_stats(socket_path(Path(state.dir), radio.channels[0].name))


def _all_alive(state: cluster.HarnessState, timeout: float) -> float:
    def ok() -> bool:
        return all(_call(state, n, "status")["liveness"]["peers"]["alive"] >= 4 for n in NAMES)

    return wait(ok, timeout, "all 5 nodes to see 4 peers alive", step=1.0)


def _echo(state: cluster.HarnessState, size: int) -> float:
    # random text: RNS compresses Resources (bz2), so "x" * 20000 would cross as ~50 bytes
    payload = base64.b64encode(os.urandom(size))[:size].decode()
    for _ in range(3):
        try:
            with ControlClient(NodePaths.resolve(state.node("node1").home).socket, 300) as c:
                t0 = time.perf_counter()
                reply = c.call(
                    "send",
                    {"to": "kai://node2/echo", "intent": "echo", "payload": payload,
                     "timeout": 280},
                )  # fmt: skip
                assert reply["payload"] == payload
                return time.perf_counter() - t0
        except Exception as exc:  # a timeout: say so and retry
            print(f"  echo {size} B failed: {exc}", file=sys.stderr, flush=True)
    return float("nan")


def _burst(state: cluster.HarnessState, n: int = 10) -> dict[str, Any]:
    """`n` ~100-byte echoes from node1 to node2 at once (pipelined on one control connection):
    seconds until every reply is back, and what node1 and node2 put on the channel meanwhile
    (bytes, air time): messages (requests and replies) per second of air time."""
    from kai_mesh.core.control.frames import Request, encode_frame

    payload = {"text": "x" * 88}
    _call(state, "node1", "send", {"to": "kai://node2/echo", "intent": "echo", "payload": "w"})
    time.sleep(5)
    before = _channel(state)
    ok = 0
    with ControlClient(NodePaths.resolve(state.node("node1").home).socket, 300) as c:
        t0 = time.perf_counter()
        for i in range(n):
            params = {"to": "kai://node2/echo", "intent": "echo", "payload": payload}
            params["timeout"] = 280
            c._send(encode_frame(Request(id=i, method="send", params=params).to_wire()), None)
        for _ in range(n):
            reply = c._receive(time.perf_counter() + 300)
            result = getattr(reply, "result", None)
            ok += int(isinstance(result, dict) and result.get("payload") == payload)
        seconds = time.perf_counter() - t0
    time.sleep(2)
    after = _channel(state)
    sent = {
        k: {
            "bytes": after["nodes"][k]["bytes_sent"] - before["nodes"][k]["bytes_sent"],
            "air_s": round(after["nodes"][k]["airtime_s"] - before["nodes"][k]["airtime_s"], 3),
        }
        for k in ("node1", "node2")
    }
    air = sum(v["air_s"] for v in sent.values())
    return {
        "messages": n,
        "replies_ok": ok,
        "seconds": round(seconds, 2),
        "sent": sent,
        "messages_per_air_s": round(2 * ok / air, 2) if air else None,
        "bytes_per_message": round(sum(v["bytes"] for v in sent.values()) / (2 * n), 1),
    }


PARTS = ("idle", "echo", "burst", "state", "vote", "detect")


def netns(
    modem: str,
    warmup_s: float,
    idle_min: float,
    trials: int,
    prefix: str = "kq2",
    frames_out: Path | None = None,
    parts: tuple[str, ...] = PARTS,
    detect_timeout: float = 4 * 3600,
    progress: Path | None = None,
    duty_cycle: float | None = None,
) -> dict[str, Any]:
    """The radio figures on one emulated channel; `parts` picks which. Each figure is printed
    to stderr as it comes and, with `progress`, the whole result so far rewritten there, so a
    run cut short keeps what it measured."""
    import governance  # the governance bench's own trial loop

    radio = radio_plan(NAMES, modem, seed=1)
    out: dict[str, Any] = {"modem": parse_modem(modem).describe()}
    options: dict[str, Any] = {"admins": governance.ADMINS, "threshold": 2, "radio": radio}
    if duty_cycle is not None:  # percent, each node's budget (default 1, EU 868)
        options["duty_cycle"] = duty_cycle
        out["duty_cycle_pct"] = duty_cycle

    def note(key: str, value: Any) -> None:
        out[key] = value
        print(f"  {key}: {json.dumps(value)}", file=sys.stderr, flush=True)
        if progress is not None:
            progress.write_text(json.dumps(out, indent=2))

    with harness(prefix, 5, **options) as state:
        log = frames_path(Path(state.dir), radio.channels[0].name)
        try:
            _netns(state, note, log, warmup_s, idle_min, trials, parts, detect_timeout)
        finally:
            if frames_out is not None:  # the harness directory goes with the harness
                shutil.copy(log, frames_out)
                out["frames"] = str(frames_out)
    return out


def _netns(
    state: cluster.HarnessState,
    note: Callable[[str, Any], None],
    log: Path,
    warmup_s: float,
    idle_min: float,
    trials: int,
    parts: tuple[str, ...],
    detect_timeout: float,
) -> None:
    import governance

    note("discovery_s", round(_all_alive(state, 900), 1))
    if "idle" in parts:
        time.sleep(warmup_s)
        before, t0 = _channel(state), time.monotonic()
        time.sleep(idle_min * 60)
        after, hours = _channel(state), (time.monotonic() - t0) / 3600
        idle = {
            n: {
                "bytes_per_hour": round(
                    (after["nodes"][n]["bytes_sent"] - before["nodes"][n]["bytes_sent"]) / hours
                ),
                "air_s_per_hour": round(
                    (after["nodes"][n]["airtime_s"] - before["nodes"][n]["airtime_s"]) / hours, 2
                ),
            }
            for n in NAMES
        }
        note("idle_minutes", idle_min)
        note("idle", idle)
        # what the bytes were: the frame log over the same window (the daemon's time base)
        window = summarise(read(log), before["uptime_s"], after["uptime_s"])
        note("idle_frames", window)
    if "echo" in parts:
        note("echo_200B_s", round(_echo(state, 200), 2))
        note("echo_20KB_s", round(_echo(state, 20_000), 2))
    if "burst" in parts:
        note("burst", _burst(state))
    if "state" in parts:
        note("state_change_s", _state_change(state, trials))
    if "vote" in parts:
        clients = {
            n: ControlClient(NodePaths.resolve(state.node(n).home).socket, timeout=300)
            for n in NAMES
        }
        try:
            times, _votes, _holds = governance._trials(clients, True, trials, wait)
        finally:
            for client in clients.values():
                client.close()
        note("governance_vote_all5_s", [round(t, 2) for t in times])
    if "detect" in parts:
        note("detect", _detect(state, detect_timeout))
    note("channel", _channel(state))


def _detect(state: cluster.HarnessState, timeout: float) -> dict[str, Any]:
    """SIGKILL node5; seconds until each other node calls it failed (None: not in `timeout`)."""
    cluster.kill_node(state, "node5")
    t0, found = time.monotonic(), {}
    others = NAMES[:4]
    while len(found) < len(others) and time.monotonic() - t0 < timeout:
        for n in set(others) - set(found):
            try:
                peers = _call(state, n, "peers")
            except Exception:  # a busy node: ask again
                continue
            if any(p["name"] == "node5" and p["status"] == "failed" for p in peers):
                found[n] = round(time.monotonic() - t0, 1)
                print(f"  {n} calls node5 failed after {found[n]} s", file=sys.stderr, flush=True)
        time.sleep(5.0)
    return {
        "first_s": min(found.values(), default=None),
        "all_s": max(found.values()) if len(found) == len(others) else None,
        "each_s": {n: found.get(n) for n in others},
        "timeout_s": timeout,
    }


def _state_change(state: cluster.HarnessState, trials: int) -> list[float | None]:
    times: list[float | None] = []
    for trial in range(trials):
        _call(state, "node1", "state_set", {"path": f"shared/r{trial}", "value": trial})
        t0 = time.perf_counter()
        pending = set(NAMES[1:])
        while pending:
            for n in list(pending):
                try:
                    _call(state, n, "state_show", {"path": f"shared/r{trial}"})
                    pending.discard(n)
                except Exception:  # not there yet
                    pass
            if time.perf_counter() - t0 > 900:  # say so, and go on to the other figures
                print(f"  state change {trial}: {sorted(pending)} lack it after 900 s",
                      file=sys.stderr, flush=True)  # fmt: skip
                return [*times, None]
            time.sleep(0.1)
        times.append(round(time.perf_counter() - t0, 2))
        print(f"  state change {trial}: {times[-1]} s", file=sys.stderr, flush=True)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", nargs="*", default=["toa", "overhead"])
    p.add_argument("--modem", default="medium-fast")
    p.add_argument("--warmup-s", type=float, default=120)
    p.add_argument("--idle-min", type=float, default=10)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--prefix", default="kq2", help="netns prefix of the harness")
    p.add_argument("--frames-out", type=Path, help="keep the channel's frame log here")
    p.add_argument("--parts", default=",".join(PARTS), help="netns: which figures (comma list)")
    p.add_argument("--detect-timeout", type=float, default=4 * 3600, help="seconds")
    p.add_argument("--progress", type=Path, help="netns: rewrite the result so far here")
    p.add_argument("--duty-cycle", type=float, help="netns: the nodes' duty cycle, percent")
    args = p.parse_args()
    result: dict[str, Any] = {}
    if "toa" in args.what:
        result["toa"] = toa()
    if "overhead" in args.what:
        result["overhead"] = overhead()
    if "netns" in args.what:
        if os.geteuid() != 0:
            raise SystemExit("netns needs root")
        result["netns"] = netns(
            args.modem,
            args.warmup_s,
            args.idle_min,
            args.trials,
            args.prefix,
            args.frames_out,
            tuple(x for x in args.parts.split(",") if x),
            args.detect_timeout,
            args.progress,
            args.duty_cycle,
        )
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
