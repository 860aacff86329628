"""What the netns benches share: bounded polling and a harness that is always taken down."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kai_mesh.harness import cluster


def wait(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> float:
    """Poll `condition`; return the seconds it took, or exit naming `what` after `timeout`."""
    t0 = time.perf_counter()
    while not condition():
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)
    return time.perf_counter() - t0


@contextmanager
def harness(prefix: str, n: int = 2, **options: Any) -> Iterator[cluster.HarnessState]:
    """`n` nodes up (options as `cluster.up`), and everything removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="kmb-", dir="/tmp"))
    try:
        yield cluster.up(directory, n, prefix=prefix, **options)
    finally:
        cluster.down(directory, prefix)
        shutil.rmtree(directory, ignore_errors=True)
