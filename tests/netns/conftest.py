"""Fixtures for the network-namespace harness tests.

`harness` gives a `Harness` bound to a fresh directory and a namespace prefix unique to this test
(`kmt<pid>x<n>`), and always runs `down` afterwards, so a failing test leaves nothing behind.
It skips (or fails, when CI sets KAI_MESH_REQUIRE_PRIVILEGED_TESTS=1) without root, `ip netns`,
`tc`, `nft` or `ping`.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import skip_unless_privileged

HARNESS = [sys.executable, "-m", "kai_mesh.harness.cli"]
_counter = itertools.count(1)


def require_netns() -> None:
    """Skip (or fail in CI) unless this process can build namespaces with the needed tools."""
    if os.geteuid() != 0:
        skip_unless_privileged("the netns harness needs root")
    missing = [t for t in ("ip", "tc", "nft", "ping") if shutil.which(t) is None]
    if missing:
        skip_unless_privileged(f"the netns harness needs {', '.join(missing)}")
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        skip_unless_privileged(f"`ip netns` is unavailable: {probe.stderr.strip()}")


@dataclass
class Harness:
    dir: Path
    prefix: str

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`kai-mesh harness ARGS --dir DIR`; the caller checks the exit code."""
        argv = [*HARNESS, args[0], "--dir", str(self.dir), *args[1:]]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, f"harness {' '.join(args)}: {done.stderr}"
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args))

    def ping(self, node: str, address: str) -> bool:
        """One ping with a 1 s wait from `node`'s namespace."""
        done = self.run("exec", node, "--", "ping", "-c1", "-W1", address)
        return done.returncode == 0

    def namespaces(self) -> list[str]:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
        return [n for n in names if n.startswith(f"{self.prefix}-")]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so `harness` can tell whether the test failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"report_{report.when}", report)


def _node_logs(path: Path, lines: int = 60) -> str:
    """The tail of every node log under a harness directory: what a CI failure needs read."""
    parts = []
    for log in sorted(path.glob("**/node.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {log.relative_to(path)} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(parts)


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    require_netns()
    # Under /tmp and short: the nodes' control sockets must fit in a Unix socket address.
    path = Path(tempfile.mkdtemp(prefix="kmh-", dir="/tmp"))
    h = Harness(path, f"kmt{os.getpid()}x{next(_counter)}")
    try:
        yield h
    finally:
        h.run("down", "--prefix", h.prefix)
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            report.sections.append(("node logs", _node_logs(path)))
        shutil.rmtree(path, ignore_errors=True)
