"""What `synchronous=FULL` costs against `NORMAL`: commits per second of the node's store.

Each commit is one `Store.gov_add` of a 139-byte record (a vote's size) in its own transaction,
as the node commits an acknowledged record before answering: the figure is how many
acknowledged writes per second the disk allows. WAL in both; NORMAL fsyncs only at checkpoints
(a commit survives `kill -9`, not a power cut), FULL fsyncs the WAL at every commit.

    .venv/bin/python bench/durability.py [--commits 2000] [--dir DIR] [--json]

Run it on the disk the node uses (`--dir` on the SD card of a Pi): tmpfs measures nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from kai_mesh.runtime.store import Store


def commits_per_second(directory: Path, durable: bool, commits: int) -> float:
    path = directory / f"bench-{'full' if durable else 'normal'}.db"
    store = Store(path, durable=durable)
    try:
        records = [os.urandom(139) for _ in range(commits)]
        started = time.perf_counter()
        for record in records:
            store.gov_add([record])
        return commits / (time.perf_counter() - started)
    finally:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--dir", type=Path, help="where the database goes (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="kai-durability-", dir="/var/tmp"))
    try:
        result = {
            "dir": str(directory),
            "commits": args.commits,
            "normal_per_s": round(commits_per_second(directory, False, args.commits)),
            "full_per_s": round(commits_per_second(directory, True, args.commits)),
        }
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.commits} commits of 139 bytes each, WAL, in {result['dir']}:")
    print(f"  synchronous=NORMAL: {result['normal_per_s']} commits/s (kill -9 safe, not power-cut)")
    print(f"  synchronous=FULL:   {result['full_per_s']} commits/s (power-cut safe)")


if __name__ == "__main__":
    main()
