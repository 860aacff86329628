"""Heartbeats and failure detection: idle airtime, time to detect a killed node, false positives.

On the netns harness (needs root), 5 nodes on one bridge:

- idle: every interface told 5 kbit/s with the EU 1 % duty cycle (`--bitrate 5000
  --duty-cycle 1`), one shared 5 kbit/s channel (tbf); after `--warmup-s` (discovery, and the
  links it opened closing as idle), each node's Reticulum tx counter over `--idle-min` minutes,
  as bytes an hour, against the goal of 5 % of the duty budget (1.8 s of 5 kbit/s: 1125 B/h);
- detection: SIGKILL node5, time until node1 lists it as failed: on the LAN, and at 5 kbit/s
  without a duty cycle (`--slow`; minutes);
- false positives: 5 % loss on every node's input for `--fp-min` minutes; peers declared failed
  per node-hour (goal 0).

Without root (or with `--sim-only`), and in every case: the same detector in a discrete-event
simulation (`simulate`) with the node's own tuning, for the cases a netns run cannot reach in
reasonable time: 5 kbit/s with a 1 % duty cycle, where a period is 800 s.

    sudo .venv/bin/python bench/liveness.py [--idle-min 30] [--fp-min 10] [--slow] [--json]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import random
import statistics
import sys
import time
from typing import Any

from netns_common import harness, wait

from kai_mesh.client import ControlClient
from kai_mesh.config.settings import NodePaths
from kai_mesh.core.liveness.membership import (
    FailureDetector,
    Heard,
    Output,
    PeerFailed,
    SendAck,
    SendAlive,
    SendIndirectAck,
    SendIndirectProbe,
    SendNack,
    SendProbe,
    SendSuspect,
)
from kai_mesh.core.messaging.frames import decode_swim, encode_swim
from kai_mesh.harness import cluster
from kai_mesh.runtime.liveness.service import detector_config, heartbeat_interval

NAMES = [f"node{k}" for k in range(1, 6)]
GOAL_BYTES_PER_HOUR = 0.05 * 0.01 * 3600 * 5000 / 8  # 5 % of a 1 % duty budget at 5 kbit/s


def call(state: cluster.HarnessState, node: str, method: str) -> Any:
    socket = NodePaths.resolve(state.node(node).home).socket
    with ControlClient(socket, timeout=30) as c:
        return c.call(method, {})


def status_of(state: cluster.HarnessState, node: str, peer: str) -> str | None:
    return next((p["status"] for p in call(state, node, "peers") if p["name"] == peer), None)


def all_alive(state: cluster.HarnessState, timeout: float) -> None:
    for name in NAMES:
        wait(
            lambda n=name: call(state, n, "status")["liveness"]["peers"]["alive"] == 4,  # type: ignore[misc]
            timeout,
            f"{name} to see 4 peers alive",
            step=0.2,
        )


def tx_bytes(state: cluster.HarnessState, node: str) -> int:
    transports = call(state, node, "status")["transports"]
    ret = next(t for t in transports if t["name"] == "reticulum")
    return sum(int(i["tx_bytes"]) for i in ret["interfaces"])


def idle(warmup_s: float, minutes: float) -> dict[str, Any]:
    with harness("kmbi", 5, bitrate=5000, duty_cycle=1.0) as state:
        cluster.shape(state, NAMES, "5kbit", None, shared=True)
        all_alive(state, 120)
        time.sleep(warmup_s)
        before = {n: tx_bytes(state, n) for n in NAMES}
        time.sleep(minutes * 60)
        after = {n: tx_bytes(state, n) for n in NAMES}
        per_hour = {n: round((after[n] - before[n]) * 60 / minutes) for n in NAMES}
        live = call(state, "node1", "status")["liveness"]
    return {
        "minutes": minutes,
        "bytes_per_hour": per_hour,
        "median_bytes_per_hour": statistics.median(per_hour.values()),
        "goal_bytes_per_hour": round(GOAL_BYTES_PER_HOUR),
        "heartbeat_interval_s": live["heartbeat_interval_s"],
    }


def detection(slow: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"bitrate": 5000} if slow else {}
    with harness("kmbk", 5, **options) as state:
        if slow:
            cluster.shape(state, NAMES, "5kbit", None, shared=True)
        all_alive(state, 300 if slow else 30)
        cluster.kill_node(state, "node5")
        seconds = wait(
            lambda: status_of(state, "node1", "node5") == "failed", 3600, "failed", step=0.2
        )
        live = call(state, "node1", "status")["liveness"]
    return {"link": "5 kbit/s" if slow else "veth", "detect_s": round(seconds, 1), **live}


def false_positives(minutes: float) -> dict[str, Any]:
    with harness("kmbf", 5) as state:
        all_alive(state, 30)
        cluster.shape(state, NAMES, None, 5.0)
        time.sleep(minutes * 60)
        declared = {n: call(state, n, "status")["liveness"]["declared_failed"] for n in NAMES}
        suspicions = {n: call(state, n, "status")["liveness"]["declared_suspect"] for n in NAMES}
    hours = minutes / 60 * len(NAMES)
    return {
        "node_hours": round(hours, 2),
        "declared_failed": declared,
        "failed_per_node_hour": round(sum(declared.values()) / hours, 3),
        "suspicions": suspicions,
    }


# ---- simulation --------------------------------------------------------------------------------


def simulate(
    *, bitrate: int | None, duty: float, loss: float, seed: int, kill_at: float, hours: float
) -> dict[str, Any]:
    """Five detectors with the node's tuning; heartbeats broadcast to all, each copy lost with
    `loss`; SWIM frames encoded and decoded as on the wire. Node 4 dies at `kill_at`."""
    rng = random.Random(seed)
    tuning = detector_config(duty, 0.04)
    beat = heartbeat_interval(tuning, bitrate)
    ids = [bytes([k]) * 16 for k in range(5)]
    dets = {i: FailureDetector(i, tuning, random.Random(rng.random()), incarnation=1) for i in ids}
    for i in ids:
        for j in ids:
            if i != j:
                dets[i].add_peer(j, 0.0, None, bitrate)
    queue: list[tuple[float, int, str, bytes, bytes, bytes]] = []
    seq = itertools.count()
    delay = 0.0 if not bitrate else 100 * 8 / bitrate
    dead, failed_at, false_failures = ids[4], {}, 0
    horizon = hours * 3600

    def push(at: float, kind: str, src: bytes, dst: bytes, data: bytes = b"") -> None:
        heapq.heappush(queue, (at, next(seq), kind, src, dst, data))

    def act(src: bytes, now: float, outputs: list[Output]) -> None:
        nonlocal false_failures
        due = dets[src].get_timer()
        if due is not None:  # a receive may have moved the next timer earlier
            push(max(now, due), "timer", src, src)
        for out in outputs:
            if isinstance(out, PeerFailed):
                if out.node_id == dead and now >= kill_at:
                    failed_at.setdefault(src, now)
                else:
                    false_failures += 1
                continue
            if isinstance(out, SendAlive | SendSuspect):
                targets = out.to
            elif isinstance(out, SendIndirectProbe):
                targets = (out.via,)
            elif isinstance(out, SendProbe | SendAck | SendIndirectAck | SendNack):
                targets = (out.to,)
            else:
                continue
            for dst in targets:
                if rng.random() >= loss:
                    push(now + delay, "swim", src, dst, encode_swim(out))

    for k, i in enumerate(ids):
        push(beat * k / 5, "beat", i, i)
        push(0.0, "timer", i, i)
    while queue:
        now, _, kind, src, dst, data = heapq.heappop(queue)
        if now > horizon or len(failed_at) == 4:
            break
        up = {node: node != dead or now < kill_at for node in ids}
        if kind == "beat" and up[src]:
            for j in ids:
                if j != src and rng.random() >= loss:
                    push(now + delay, "heard", src, j)
            push(now + beat, "beat", src, src)
        elif kind == "heard" and up[dst]:
            act(dst, now, dets[dst].receive(Heard(from_id=src), now))
        elif kind == "swim" and up[dst]:
            act(dst, now, dets[dst].receive(decode_swim(data, src), now))
        elif kind == "timer" and up[src]:
            due = dets[src].get_timer()
            if due is not None and due <= now:
                act(src, now, dets[src].handle_timer(now))
            nxt = dets[src].get_timer()
            if nxt is None or nxt > now:
                push(nxt if nxt is not None else now + beat, "timer", src, src)
    times = [t - kill_at for t in failed_at.values()]
    return {
        "heartbeat_s": round(beat, 1),
        "first_detect_s": round(min(times), 1) if times else None,
        "all_detect_s": round(max(times), 1) if len(times) == 4 else None,
        "false_failures": false_failures,
    }


def sim_summary(bitrate: int | None, duty: float, loss: float, runs: int) -> dict[str, Any]:
    period = detector_config(duty, 0.04).probe_interval(None, bitrate)
    kill_at = 40 * period  # false positives are counted over this healthy stretch as well
    results = [
        simulate(bitrate=bitrate, duty=duty, loss=loss, seed=s, kill_at=kill_at, hours=1e6)
        for s in range(runs)
    ]
    firsts = [r["first_detect_s"] for r in results if r["first_detect_s"] is not None]
    alls = [r["all_detect_s"] for r in results if r["all_detect_s"] is not None]
    return {
        "bitrate": bitrate,
        "duty_cycle": duty,
        "loss": loss,
        "heartbeat_s": results[0]["heartbeat_s"],
        "healthy_node_hours": round(runs * 4 * kill_at / 3600, 1),
        "first_detect_median_s": round(statistics.median(firsts), 1) if firsts else None,
        "all_detect_max_s": round(max(alls), 1) if alls else None,
        "false_failures": sum(r["false_failures"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup-s", type=float, default=180)
    parser.add_argument("--idle-min", type=float, default=30)
    parser.add_argument("--fp-min", type=float, default=10)
    parser.add_argument("--slow", action="store_true", help="also detect at 5 kbit/s (minutes)")
    parser.add_argument("--sim-only", action="store_true")
    parser.add_argument("--idle-only", action="store_true", help="only the idle measurement")
    parser.add_argument("--runs", type=int, default=20, help="simulated runs per case")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {"simulated": []}
    if args.idle_only:
        out["idle"] = idle(args.warmup_s, args.idle_min)
    else:
        out["simulated"] = [
            sim_summary(None, 1.0, 0.05, args.runs),
            sim_summary(5000, 1.0, 0.05, args.runs),
            sim_summary(5000, 0.01, 0.05, args.runs),
        ]
    if not args.sim_only and not args.idle_only and os.geteuid() == 0:
        out["detection"] = [detection(False)] + ([detection(True)] if args.slow else [])
        out["false_positives"] = false_positives(args.fp_min)
        out["idle"] = idle(args.warmup_s, args.idle_min)
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return
    for s in out["simulated"]:
        print(
            f"sim {s['bitrate'] or 'LAN'} bit/s duty {s['duty_cycle']:g} loss {s['loss']:g}: "
            f"heartbeat {s['heartbeat_s']} s, first detection median {s['first_detect_median_s']}"
            f" s, all 4 by {s['all_detect_max_s']} s, false failures {s['false_failures']} in "
            f"{s['healthy_node_hours']} healthy node-hours"
        )
    for d in out.get("detection", []):
        print(f"netns {d['link']}: killed node declared failed after {d['detect_s']} s")
    if "false_positives" in out:
        fp = out["false_positives"]
        print(
            f"netns 5 % loss, {fp['node_hours']} node-hours: {fp['failed_per_node_hour']} "
            f"false failures per node-hour, suspicions {fp['suspicions']}"
        )
    if "idle" in out:
        i = out["idle"]
        print(
            f"netns idle at 5 kbit/s, 1 % duty, 4 peers: median {i['median_bytes_per_hour']} B/h "
            f"per node (goal <= {i['goal_bytes_per_hour']}), {i['bytes_per_hour']}"
        )


if __name__ == "__main__":
    main()
