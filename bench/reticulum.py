"""kai-mesh over Reticulum against bare Reticulum, on the netns harness (needs root).

Figures (each run builds its own harness of two nodes on a bridge and removes it afterwards):

- throughput: echo round trips/s from node1 to `kai://node2/echo`, many requests in flight over
  ONE control-socket connection (the server runs up to 64 at once), against raw RNS packets/s
  received with a packet callback over one Link (`bench/raw_rns.py`, same namespaces, same run);
- wire bytes of one ~100-byte echo on an established link: the request as node1's veth0 sent it,
  the reply as node2's, each less 42 bytes of Ethernet/IP/UDP per packet, against the raw RNS
  packet of the same payload (179 B, LAB.md);
- announce→discovery (node2 started → node1's `peers` lists it) and link establishment (first
  `ping_node` of a fresh pair minus the second);
- idle RSS of each node (VmRSS of the node's pid, and with its agent workers);
- at 5 kbit/s with 5 % loss: wall time of a 200 B and a 20 KB echo (`--skip-slow` leaves it out).

    sudo .venv/bin/python bench/reticulum.py [--seconds 5] [--in-flight 32] [--skip-slow] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from netns_common import harness, wait

from kai_mesh.client import ControlClient
from kai_mesh.config.settings import NodePaths
from kai_mesh.core.control.frames import ErrorReply, Push, Request, encode_frame
from kai_mesh.harness import cluster

HERE = Path(__file__).resolve().parent
ETH_IP_UDP = 42
RAW_RNS_100B = 179
ECHO = "kai://node2/echo"


def client(state: cluster.HarnessState, node: str, timeout: float = 60) -> ControlClient:
    return ControlClient(NodePaths.resolve(state.node(node).home).socket, timeout=timeout)


def peers(state: cluster.HarnessState, node: str) -> set[str]:
    with client(state, node) as c:
        return {p["name"] for p in c.call("peers")}


def echo(state: cluster.HarnessState, payload: Any, timeout: float = 30) -> float:
    with client(state, "node1", timeout + 10) as c:
        t0 = time.perf_counter()
        reply = c.call(
            "send", {"to": ECHO, "intent": "echo", "payload": payload, "timeout": timeout}
        )
        elapsed = time.perf_counter() - t0
    assert reply["payload"] == payload, "echo came back different"
    return elapsed


def tx(state: cluster.HarnessState, node: str) -> tuple[int, int]:
    """(bytes, packets) node's veth0 has sent."""
    ns = state.node(node).namespace
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", "/sys/class/net/veth0/statistics/tx_bytes",
         "/sys/class/net/veth0/statistics/tx_packets"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return int(out[0]), int(out[1])


# Throughput


def node_cpu(state: cluster.HarnessState) -> float:
    """CPU seconds (user + system) both nodes and their agent workers have used so far."""
    import psutil

    total = 0.0
    for nd in state.nodes:
        assert nd.pid is not None
        proc = psutil.Process(nd.pid)
        for p in (proc, *proc.children(recursive=True)):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def pipelined_round_trips(
    state: cluster.HarnessState, seconds: float, in_flight: int
) -> dict[str, Any]:
    """Keep `in_flight` echo requests outstanding on one connection for `seconds`."""
    c = client(state, "node1", timeout=60)
    cpu_before = node_cpu(state)
    sent = done = errors = 0
    latencies: list[float] = []
    started: dict[int, float] = {}
    t0 = time.perf_counter()
    stop = t0 + seconds

    def submit() -> None:
        nonlocal sent
        sent += 1
        params = {"to": ECHO, "intent": "echo", "payload": {"i": sent}, "timeout": 30}
        started[sent] = time.perf_counter()
        # ControlClient does one call at a time; its framing is reused here to pipeline.
        c._send(encode_frame(Request(id=sent, method="send", params=params).to_wire()), None)

    with c:
        for _ in range(in_flight):
            submit()
        while started:
            message = c._receive(time.perf_counter() + 60)
            if isinstance(message, Push) or message.id not in started:
                continue
            latencies.append(time.perf_counter() - started.pop(message.id))  # type: ignore[arg-type]
            if isinstance(message, ErrorReply):
                errors += 1
            else:
                done += 1
            if time.perf_counter() < stop:
                submit()
        elapsed = time.perf_counter() - t0
        cpu = node_cpu(state) - cpu_before
        status = c.call("status")
    return {
        # CPU both nodes spent per round trip: on a shared machine, a steadier figure than /s.
        "cpu_ms_per_round_trip": round(cpu * 1000 / max(done, 1), 3),
        "round_trips": done,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "round_trips_per_s": round(done / elapsed, 1),
        "messages_per_s": round(2 * done / elapsed, 1),
        "latency_ms_median": round(statistics.median(latencies) * 1000, 1),
        "in_flight": in_flight,
        "node1_refused": {k: v for k, v in status["refused"].items() if v},
    }


def raw_rns(state: cluster.HarnessState, count: int, mode: str = "thread") -> dict[str, Any]:
    """Raw RNS in the same namespaces: packets/s received with a packet callback (`mode`:
    `bench/raw_rns.py --mode`)."""
    py = sys.executable
    script = str(HERE / "raw_rns.py")
    base = Path(state.dir)
    ns1, ns2 = state.node("node1").namespace, state.node("node2").namespace
    recv = subprocess.Popen(
        ["ip", "netns", "exec", ns2, py, script, "recv", "--configdir", str(base / "raw2"),
         "--expect", str(count), "--mode", mode],
        stdout=subprocess.PIPE, stderr=(base / f"raw-recv-{mode}.log").open("w"), text=True,
    )  # fmt: skip
    try:
        assert recv.stdout is not None
        destination = json.loads(recv.stdout.readline())["destination"]
        sender = subprocess.run(
            ["ip", "netns", "exec", ns1, py, script, "send", "--configdir", str(base / "raw1"),
             "--to", destination, "--count", str(count), "--size", "100",
             "--mode", mode],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        sent = json.loads(sender.stdout.strip().splitlines()[-1])
        received = json.loads(recv.stdout.readline())
    finally:
        recv.kill()
        recv.wait()
    wire = sent.get("wire_bytes")
    return {
        "sent": sent["sent"],
        "sent_per_s": round(sent["sent"] / sent["seconds"], 1),
        "received": received["received"],
        "received_per_s": round(received["received"] / max(received["seconds"], 1e-9), 1),
        "recv_cpu_us_per_packet": round(
            received.get("cpu_s", 0.0) * 1e6 / max(received["received"], 1), 1
        ),
        "link_setup_ms": round(sent["link_setup_s"] * 1000, 2),
        "wire_bytes_100b": None if wire is None else wire - ETH_IP_UDP,
    }


# Wire bytes


def wire_bytes(state: cluster.HarnessState, tries: int = 8) -> dict[str, Any]:
    """RNS-level bytes of one echo with a ~100-byte payload on an established link."""
    payload = {"text": "x" * 88}  # 100 bytes of JSON text
    echo(state, payload)  # link up, HELLOs exchanged
    samples = []
    for _ in range(tries):
        time.sleep(0.3)
        a1, a2 = tx(state, "node1"), tx(state, "node2")
        echo(state, payload)
        time.sleep(0.3)
        b1, b2 = tx(state, "node1"), tx(state, "node2")
        req = (b1[0] - a1[0], b1[1] - a1[1])
        rep = (b2[0] - a2[0], b2[1] - a2[1])
        if req[1] == 1 and rep[1] == 1:  # a stray announce in the window would add a packet
            samples.append((req[0] - ETH_IP_UDP, rep[0] - ETH_IP_UDP))
    if not samples:  # a loaded machine: asks for slow replies, announces in the window
        return {"failed": f"every one of {tries} samples had more than one packet each way"}
    req_b, rep_b = sorted(samples)[len(samples) // 2]
    return {
        "payload_json_bytes": len(json.dumps(payload)),
        "request_bytes": req_b,
        "reply_bytes": rep_b,
        "raw_rns_bytes": RAW_RNS_100B,
        "over_raw": max(req_b, rep_b) - RAW_RNS_100B,
        "samples": len(samples),
    }


def burst_bytes(state: cluster.HarnessState, n: int = 10, tries: int = 3) -> dict[str, Any]:
    """RNS-level bytes per message when `n` ~100-byte echoes are queued for one peer at once
    (pipelined on one control connection): what node1 sent for the requests, per request."""
    payload = {"text": "x" * 88}
    echo(state, payload)
    samples = []
    for _ in range(tries):
        time.sleep(0.3)
        before = tx(state, "node1")
        c = client(state, "node1")
        with c:
            for i in range(n):
                params = {"to": ECHO, "intent": "echo", "payload": payload, "timeout": 30}
                c._send(encode_frame(Request(id=i, method="send", params=params).to_wire()), None)
            for _ in range(n):
                c._receive(time.perf_counter() + 30)
        time.sleep(0.3)
        after = tx(state, "node1")
        packets = after[1] - before[1]
        rns_bytes = after[0] - before[0] - ETH_IP_UDP * packets
        samples.append((rns_bytes, packets))
    rns_bytes, packets = sorted(samples)[len(samples) // 2]
    return {
        "messages": n,
        "packets": packets,
        "rns_bytes": rns_bytes,
        "bytes_per_message": round(rns_bytes / n, 1),
        "samples": samples,
    }


# Discovery, link setup, RSS


def discovery_and_link(state: cluster.HarnessState) -> dict[str, Any]:
    for name in ("node1", "node2"):
        cluster.kill_node(state, name)
    cluster.start_node(state, "node1")
    t0 = time.perf_counter()
    cluster.start_node(state, "node2")
    ready = time.perf_counter() - t0
    heard = wait(lambda: "node2" in peers(state, "node1"), 30, "node1 to hear node2", step=0.01)
    discovery = ready + heard
    with client(state, "node1") as c:
        t1 = time.perf_counter()
        first = c.call("ping_node", {"node": "node2"})
        first_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        second = c.call("ping_node", {"node": "node2"})
        second_s = time.perf_counter() - t2
    return {
        "node_ready_s": round(ready, 3),
        "start_to_discovery_s": round(discovery, 3),
        "first_ping_ms": round(first_s * 1000, 2),
        "second_ping_ms": round(second_s * 1000, 2),
        "ping_rtt_ms": second["rtt_ms"],
        "link_setup_ms": round((first_s - second_s) * 1000, 2),
        "first_ping_rtt_ms": first["rtt_ms"],
    }


def rss(state: cluster.HarnessState, settle: float) -> dict[str, Any]:
    import psutil

    time.sleep(settle)  # idle on purpose: RSS after the start-up allocations settle
    out = {}
    for nd in state.nodes:
        assert nd.pid is not None
        status = Path(f"/proc/{nd.pid}/status").read_text()
        vm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        workers = psutil.Process(nd.pid).children(recursive=True)
        total = vm * 1024 + sum(w.memory_info().rss for w in workers)
        out[nd.name] = {
            "node_mib": round(vm / 1024, 1),
            "with_workers_mib": round(total / 2**20, 1),
            "workers": len(workers),
        }
    return out


# Slow link


def slow_link(state: cluster.HarnessState) -> dict[str, Any]:
    cluster.shape(state, [nd.name for nd in state.nodes], "5kbit", 5.0)
    small = {"text": base64.b64encode(os.urandom(150)).decode()[:188]}
    big = {"blob": base64.b64encode(os.urandom(15_000)).decode()[:20_000]}
    out: dict[str, Any] = {"rate": "5kbit", "loss_pct": 5}
    for label, payload in (("200B", small), ("20KB", big)):
        try:
            out[f"echo_{label}_s"] = round(echo(state, payload, timeout=280), 1)
        except Exception as exc:  # a figure that failed is still a figure
            out[f"echo_{label}_s"] = f"failed: {exc}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput run length")
    parser.add_argument("--in-flight", type=int, default=32, help="requests outstanding")
    parser.add_argument("--raw-count", type=int, default=10_000, help="raw RNS packets to send")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before RSS")
    parser.add_argument(
        "--raw-modes",
        default="",
        help="also measure raw RNS receiving these ways, comma-separated: inline,channel",
    )
    parser.add_argument("--skip-slow", action="store_true", help="leave out the 5 kbit figures")
    parser.add_argument("--prefix", default=f"kmb{os.getpid()}", help="netns prefix of the harness")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/reticulum.py needs root (the netns harness)")
    prefix = args.prefix
    result: dict[str, Any] = {}
    with harness(prefix) as state:
        wait(lambda: "node2" in peers(state, "node1"), 30, "discovery", step=0.05)
        result["rss_idle"] = rss(state, args.settle)
        echo(state, "warm-up")
        result["kai_mesh"] = pipelined_round_trips(state, args.seconds, args.in_flight)
        result["raw_rns"] = raw_rns(state, args.raw_count)
        result["ratio"] = round(
            result["kai_mesh"]["messages_per_s"] / result["raw_rns"]["received_per_s"], 3
        )
        for mode in filter(None, args.raw_modes.split(",")):
            result.setdefault("raw_modes", {})[mode] = raw_rns(state, args.raw_count, mode)
        result["wire"] = wire_bytes(state)
        result["burst"] = burst_bytes(state)
        result["startup"] = discovery_and_link(state)
        if not args.skip_slow:
            result["slow"] = slow_link(state)
    if args.json:
        print(json.dumps(result))
    else:
        report(result)


def report(r: dict[str, Any]) -> None:
    k, raw, w, s = r["kai_mesh"], r["raw_rns"], r["wire"], r["startup"]
    print("kai-mesh over Reticulum (two namespaces on a bridge, UDP broadcast interface)")
    print(
        f"  throughput   kai-mesh: {k['round_trips_per_s']} echo round trips/s "
        f"= {k['messages_per_s']} messages/s over the link ({k['round_trips']} in "
        f"{k['seconds']} s, {k['in_flight']} in flight on one control connection, "
        f"{k['errors']} errors, median latency {k['latency_ms_median']} ms, "
        f"{k['cpu_ms_per_round_trip']} ms of CPU per round trip, both nodes)"
    )
    print(
        f"               raw RNS:  {raw['received_per_s']} packets/s received with a callback "
        f"({raw['received']}/{raw['sent']} arrived; sent at {raw['sent_per_s']}/s; "
        f"{raw['recv_cpu_us_per_packet']} µs of receiver CPU per packet)"
    )
    for mode, m in r.get("raw_modes", {}).items():
        print(
            f"               raw RNS, {mode}: {m['received_per_s']} packets/s received "
            f"({m['received']}/{m['sent']} arrived; sent at {m['sent_per_s']}/s; "
            f"{m['recv_cpu_us_per_packet']} µs of receiver CPU per packet)"
        )
    print(f"               ratio kai-mesh messages/s ÷ raw packets/s = {r['ratio']} (goal >= 3)")
    if "failed" in w:
        print(f"  wire bytes   ~100 B echo: not measured ({w['failed']})")
    else:
        print(
            f"  wire bytes   ~100 B echo: request {w['request_bytes']} B, reply "
            f"{w['reply_bytes']} B (RNS level); raw RNS packet {w['raw_rns_bytes']} B (measured "
            f"now: {raw['wire_bytes_100b']} B); +{w['over_raw']} B (goal <= +60)"
        )
    b = r.get("burst")
    if b:
        print(
            f"  burst        {b['messages']} ~100 B echoes queued at once: node1 sent "
            f"{b['rns_bytes']} B in {b['packets']} packets = {b['bytes_per_message']} B per "
            f"request (a lone one: {w.get('request_bytes', '?')} B)"
        )
    print(
        f"  discovery    node start -> peer listed: {s['start_to_discovery_s']} s "
        f"(of which start->ready {s['node_ready_s']} s)"
    )
    print(
        f"  link setup   first ping {s['first_ping_ms']} ms - second {s['second_ping_ms']} ms "
        f"= {s['link_setup_ms']} ms (raw RNS link: {raw['link_setup_ms']} ms)"
    )
    for name, m in r["rss_idle"].items():
        print(
            f"  idle RSS     {name}: {m['node_mib']} MiB "
            f"({m['with_workers_mib']} MiB with {m['workers']} agent workers) (goal <= 64 MB)"
        )
    if "slow" in r:
        sl = r["slow"]
        print(
            f"  5 kbit/s, 5 % loss: 200 B echo {sl['echo_200B_s']} s, "
            f"20 KB echo {sl['echo_20KB_s']} s"
        )


if __name__ == "__main__":
    main()
