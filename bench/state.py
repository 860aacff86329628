"""The replicated state's figures.

In process (no root needed):
- wire bytes to propagate one small map change to one peer (the ENTRIES frame) against the Yjs
  update it carries plus 100 bytes;
- bytes to reconcile two replicas that differ by one change, with 5, 50 and 500 streams, against
  3x the single-change cost;
- idle sync traffic per node per hour: the state digest on heartbeats (no rounds while in sync),
  at 5 kbit/s with a 1 % duty cycle (a heartbeat every 640 s) and on a LAN (0.8 s);
- signed entries verified and applied per second;
- rounds (heartbeat periods) for a burst of edits to reach all 50 nodes of a sparse simulated mesh.

With root, `--netns`: seconds for one change on node1 to be readable on all of 5 namespace nodes.

    .venv/bin/python bench/state.py [--entries 5000] [--netns] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from pycrdt import Doc, Map
from trio.testing import MockClock

from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.frames import Heartbeat, encode_heartbeat
from kai_mesh.core.state.replica import Replica
from kai_mesh.core.state.wire import Entries, encode_sync, parse_entry
from kai_mesh.runtime.liveness.service import detector_config, heartbeat_interval

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for the tests' node builder
MESH = b"b" * 32
SECRETS = [NodeSecrets.generate(random.Random(i).randbytes) for i in range(5)]
KEYS = {s.node_id: s.verify_key for s in SECRETS}


def replica(i: int, client_id: int) -> Replica:
    return Replica(mesh_id=MESH, secrets=SECRETS[i], client_id=client_id, verify_key_for=KEYS.get)


def put(key: str, value: Any) -> Any:
    def edit(doc: Doc[Any]) -> None:
        doc.get("shared", type=Map)[key] = value

    return edit


def converse(a: Replica, b: Replica, max_bytes: int = 400) -> int:
    total, queue = 0, [(b, a.sync_start())]
    while queue:
        to, frame = queue.pop(0)
        total += len(frame)
        frames, _ = to.on_sync(frame, max_bytes)
        queue += [(a if to is b else b, f) for f in frames]
    return total


def one_change() -> dict[str, Any]:
    a, b = replica(0, 11), replica(1, 12)
    b.receive(a.transact(put("warmup", 1)))  # the header went with the first entry
    records = a.transact(put("door", {"open": True}))
    frame = encode_sync(Entries([], records))
    update = parse_entry(records[-1])[0].update
    b.receive(records)
    return {"frame_bytes": len(frame), "yjs_update_bytes": len(update), "goal": len(update) + 100}


def reconcile(streams: int) -> dict[str, Any]:
    rng = random.Random(streams)
    ids = rng.sample(range(1, 2**32), streams)
    records = [r for k, cid in enumerate(ids) for r in replica(k % 5, cid).transact(put("k", k))]
    a, b = replica(0, 1), replica(1, 2)
    a.receive(records)
    b.receive(records)
    writer = replica((streams // 2) % 5, ids[streams // 2])
    writer.receive(records)
    change = writer.transact(put("x", 7))
    single = len(encode_sync(Entries([], change)))
    b.receive(change)
    cost = converse(a, b)  # the replica that lacks the change starts
    assert a.digest() == b.digest()
    return {"streams": streams, "bytes": cost, "single_change": single, "ratio": cost / single}


def idle_digest_cost() -> dict[str, Any]:
    secrets = SECRETS[0]
    bare = encode_heartbeat(
        Heartbeat(node_id=secrets.node_id, counter=2**33, digests={}), secrets, MESH
    )
    with_digest = encode_heartbeat(
        Heartbeat(node_id=secrets.node_id, counter=2**33, digests={1: b"d" * 8}), secrets, MESH
    )
    extra = len(with_digest) - len(bare)
    out = {"digest_bytes_per_heartbeat": extra}
    for label, duty, bitrate in (("5kbit_1pct", 0.01, 5000), ("lan", 1.0, None)):
        beat = heartbeat_interval(detector_config(duty, 0.04), bitrate)
        out[f"{label}_bytes_per_hour"] = round(extra * 3600 / beat)
    return out


def apply_rate(count: int) -> dict[str, Any]:
    a, b = replica(0, 21), replica(1, 22)
    records = [r for i in range(count) for r in a.transact(put(f"k{i % 100}", i))]
    started = time.perf_counter()
    received = b.receive(records)
    seconds = time.perf_counter() - started
    assert len(received.entries) == count, received
    return {"entries": count, "per_s": round(count / seconds)}


async def fifty_nodes() -> dict[str, Any]:
    from tests.runtime.state.test_sync import start_node
    from transports.memory import LinkProfile, MemoryNetwork

    net = MemoryNetwork(seed=5)
    secrets = [NodeSecrets.generate(os.urandom) for _ in range(50)]
    keys = {s.node_id: s.verify_key for s in secrets}
    async with trio.open_nursery() as nursery:
        states = [await start_node(nursery, net, s, keys, i) for i, s in enumerate(secrets)]
        net.random_sparse([s.node_id for s in secrets], degree=3, profile=LinkProfile(latency=0.02))
        await trio.sleep(5)
        await states[0].write(("shared", "burst"), {"from": 0})
        started = trio.current_time()
        while len({s.replica.digest() for s in states if s.replica}) > 1:  # noqa: ASYNC110
            await trio.sleep(0.1)
        took = trio.current_time() - started
        nursery.cancel_scope.cancel()
    beat = heartbeat_interval(detector_config(1.0, 1.0), None)
    return {"virtual_s": round(took, 1), "heartbeat_s": beat, "rounds": round(took / beat, 1)}


def netns_seconds(trials: int) -> dict[str, Any]:
    from kai_mesh.client import ControlClient
    from kai_mesh.config.settings import NodePaths
    from kai_mesh.harness import cluster

    directory = Path(tempfile.mkdtemp(prefix="kmb-", dir="/tmp"))
    names = [f"node{k}" for k in range(1, 6)]
    try:
        state = cluster.up(directory, 5, prefix="kmbs")

        def call(node: str, method: str, params: dict[str, Any]) -> Any:
            socket = NodePaths.resolve(state.node(node).home).socket
            with ControlClient(socket, timeout=30) as c:
                return c.call(method, params)

        deadline = time.monotonic() + 60
        while any(call(n, "status", {})["liveness"]["peers"]["alive"] < 4 for n in names):
            if time.monotonic() > deadline:
                raise SystemExit("the 5 nodes did not all see each other")
            time.sleep(0.5)
        times = []
        for trial in range(trials):
            call("node1", "state_set", {"path": f"shared/t{trial}", "value": trial})
            t0 = time.perf_counter()
            pending = set(names[1:])
            while pending:
                for n in list(pending):
                    try:
                        call(n, "state_show", {"path": f"shared/t{trial}"})
                        pending.discard(n)
                    except Exception:  # not there yet
                        pass
                time.sleep(0.01)
            times.append(time.perf_counter() - t0)
    finally:
        cluster.down(directory, "kmbs")
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "trials": trials,
        "median_s": round(statistics.median(times), 3),
        "max_s": round(max(times), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--netns", action="store_true", help="also 5 namespace nodes (root)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {
        "one_change": one_change(),
        "reconcile": [reconcile(n) for n in (5, 50, 500)],
        "idle": idle_digest_cost(),
        "apply": apply_rate(args.entries),
        # Virtual time, as in tests/runtime/test_state_sync.py: rounds, not this machine's speed.
        "fifty_nodes": trio.run(fifty_nodes, clock=MockClock(autojump_threshold=0)),
    }
    if args.netns and os.geteuid() == 0 and shutil.which("ip"):
        out["netns"] = netns_seconds(5)
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return
    o = out["one_change"]
    print(
        f"one map change: {o['frame_bytes']} B on the wire for a {o['yjs_update_bytes']} B Yjs "
        f"update (goal <= {o['goal']})"
    )
    for r in out["reconcile"]:
        print(
            f"reconcile one change, {r['streams']} streams: {r['bytes']} B = {r['ratio']:.2f}x "
            f"the single-change frame ({r['single_change']} B; goal <= 3x at 50)"
        )
    i = out["idle"]
    print(
        f"idle sync: +{i['digest_bytes_per_heartbeat']} B per heartbeat = "
        f"{i['5kbit_1pct_bytes_per_hour']} B/h at 5 kbit/s 1 % duty, "
        f"{i['lan_bytes_per_hour']} B/h on a LAN"
    )
    print(f"verify+apply: {out['apply']['per_s']} signed entries/s")
    f = out["fifty_nodes"]
    print(f"50 sparse memory nodes: {f['virtual_s']} s = {f['rounds']} heartbeat rounds")
    if "netns" in out:
        n = out["netns"]
        print(f"5 netns nodes: median {n['median_s']} s, max {n['max_s']} s to reach all")


if __name__ == "__main__":
    main()
