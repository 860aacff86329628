"""The long chaos run (issue 15): tests/netns/test_chaos.py's nemesis and checker, for longer.

    sudo .venv/bin/python bench/chaos.py [--rounds 60] [--seed 15] [--passes 2] [--prefix khb]

Five nodes in network namespaces (node1-3 admins, threshold 2). Each round the seeded nemesis
partitions, SIGKILLs, restarts, shapes links to 20 kbit/s with 1 % loss, or heals; then every
running node's client makes `--passes` writes and must-arrive messages and one admin votes or
proposes (kai_mesh/harness/chaos.py). After the final heal it waits for the mesh to settle and
checks it. Prints each round, the faults, the errors clients saw (acknowledging nothing), the
time to settle, and what was checked: writes, messages and certified proposals. Exit status 1
when a promise was broken.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # netns_common, run as a script or not

from netns_common import harness

from kai_mesh.harness import chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--passes", type=int, default=2, help="client passes per round")
    parser.add_argument("--settle", type=float, default=600.0, help="seconds to settle at most")
    parser.add_argument("--prefix", default="khb", help="namespace prefix")
    args = parser.parse_args()

    started = time.monotonic()
    with harness(args.prefix, 5, admins=list(chaos.ADMINS), threshold=chaos.THRESHOLD) as state:
        run = chaos.Chaos(state, args.seed, log=lambda line: print(line, flush=True))
        run.passes = args.passes
        run.wait_heard(120)  # the fresh mesh: every node hears every other before the nemesis
        run.run(args.rounds)
        healed = time.monotonic()
        try:
            views = run.settle(args.settle)
            checked = chaos.check(views, run.ledger)
        except chaos.ChaosFailure as exc:
            print(f"FAILED: {exc}")
            return 1
        settled = time.monotonic() - healed
    ledger = run.ledger
    print()
    print(f"seed {args.seed}: {args.rounds} rounds, {time.monotonic() - started:.0f} s in all")
    print(f"faults: {dict(sorted(ledger.faults.items()))}")
    print(f"client errors (nothing acknowledged): {dict(sorted(ledger.errors.items())) or 0}")
    for kind, sample in sorted(ledger.samples.items()):
        print(f"  first {kind}: {sample[:300]}")
    print(f"settled {settled:.1f} s after the final heal")
    print(
        f"checked: {checked.writes} acknowledged writes, {checked.messages} must-arrive messages "
        f"(exactly one delivered outbox row each, effect present), {checked.certified} certified "
        f"proposals in a log of {checked.log_length}, {checked.keys} keys identical on 5 nodes; "
        f"{checked.served_again} messages served again after a crash"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
