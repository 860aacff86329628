"""Replicated state on a slow lossy link (issue 17, items 6 and 7), over real Reticulum (root).

Five harness nodes, each link shaped to `--rate` with `--loss` (tbf + nft, as `kai-mesh harness
shape --all`); each node writes `--keys` small keys with `state_set`, all at once. Printed: the
seconds until every node holds every entry, and per node the bytes its state service sent (link
frames and broadcasts) against the bytes of the entries it originated.

    sudo .venv/bin/python bench/state_slow.py [--rate 5kbit] [--loss 5%] [--keys 8]
        [--bitrate 5000 | --no-bitrate] [--timeout 600] [--prefix kmss] [--json]

`--bitrate` tells the nodes their link's bitrate (item 6); `--no-bitrate` leaves them believing
they are on a LAN (item 7). The goal (item 6): each node sends at most 2x the bytes of the entries
it originates plus the digests, and all keys reach all nodes within 60 s at 5 kbit/s, 5 % loss.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netns_common import harness

from kai_mesh.client import ControlClient
from kai_mesh.config.settings import NodePaths

NODES = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="5kbit")
    parser.add_argument("--loss", default="5%")
    parser.add_argument("--keys", type=int, default=8)
    parser.add_argument("--bitrate", type=int, default=5000)
    parser.add_argument("--no-bitrate", action="store_true")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--prefix", default="kmss")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bitrate = None if args.no_bitrate else args.bitrate
    names = [f"node{k}" for k in range(1, NODES + 1)]
    with harness(args.prefix, NODES, bitrate=bitrate) as state:

        def call(node: str, method: str, params: dict[str, Any] | None = None) -> Any:
            socket = NodePaths.resolve(state.node(node).home).socket
            with ControlClient(socket, timeout=120) as client:
                return client.call(method, params or {})

        deadline = time.monotonic() + 120
        while any(call(n, "status")["liveness"]["peers"]["alive"] < NODES - 1 for n in names):
            if time.monotonic() > deadline:
                raise SystemExit("the nodes did not all see each other")
            time.sleep(0.5)
        shape = [sys.executable, "-m", "kai_mesh.harness.cli", "shape", "--dir", str(state.dir)]
        shape += ["--all", "--rate", args.rate, "--loss", args.loss]
        subprocess.run(shape, check=True, capture_output=True)
        before = {n: call(n, "status")["state"] for n in names}
        value = "v" * 40  # a small value: entries of ~120 B, as in the run

        def write(node: str) -> None:
            for k in range(args.keys):
                call(node, "state_set", {"path": f"shared/{node}-k{k}", "value": value})

        t0 = time.perf_counter()
        writers = [threading.Thread(target=write, args=(n,)) for n in names]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        want = {f"{n}-k{k}" for n in names for k in range(args.keys)}

        def keys(node: str) -> set[str]:
            shared = call(node, "state_show", {"path": "shared"})["value"] or {}
            return set(shared) & want

        converged: float | None = None
        while time.perf_counter() - t0 < args.timeout:
            if all(keys(n) == want for n in names):
                converged = time.perf_counter() - t0
                break
            time.sleep(1.0)
        after = {n: call(n, "status")["state"] for n in names}
    per_node = {}
    for n in names:
        sent = after[n]["bytes_sent"] - before[n]["bytes_sent"]
        own = after[n].get("local_entry_bytes", 0) - before[n].get("local_entry_bytes", 0)
        per_node[n] = {
            "state_bytes_sent": sent,
            "frames_sent": after[n]["frames_sent"] - before[n]["frames_sent"],
            "broadcasts_sent": after[n].get("broadcasts_sent", 0)
            - before[n].get("broadcasts_sent", 0),
            "rounds": after[n]["rounds"] - before[n]["rounds"],
            "own_entry_bytes": own,
            "ratio": round(sent / own, 2) if own else None,
            "entries_held": after[n]["entries"],
        }
    out = {
        "rate": args.rate,
        "loss": args.loss,
        "bitrate_told": bitrate,
        "keys_per_node": args.keys,
        "converged_s": None if converged is None else round(converged, 1),
        "timeout_s": args.timeout,
        "nodes": per_node,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    told = f"told {bitrate} bit/s" if bitrate else "told nothing (LAN defaults)"
    print(f"5 nodes, {args.rate}, {args.loss} loss, {told}, {args.keys} keys each")
    done = f"{out['converged_s']} s" if converged is not None else f"NOT in {args.timeout:.0f} s"
    print(f"all {NODES * args.keys} keys on all nodes: {done}")
    for n, row in per_node.items():
        print(
            f"  {n}: {row['state_bytes_sent']} B state sent ({row['frames_sent']} frames, "
            f"{row['broadcasts_sent']} broadcasts, {row['rounds']} rounds), own entries "
            f"{row['own_entry_bytes']} B, ratio {row['ratio']}, holds {row['entries_held']}"
        )


if __name__ == "__main__":
    main()
