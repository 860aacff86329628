"""Run the real `kai-mesh` command in subprocesses against a throw-away home."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KAI_MESH = [sys.executable, "-m", "kai_mesh"]


@dataclass
class Home:
    path: Path

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KAI_MESH, "--home", str(self.path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(),
        )

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def start(self, *extra: str) -> subprocess.Popen[str]:
        """`kai-mesh run` in the background; returns once the control socket answers."""
        proc = subprocess.Popen(
            [*KAI_MESH, "--home", str(self.path), "run", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited {proc.returncode}: {proc.stderr.read()}")
            if self.run("status", "--json").returncode == 0:
                return proc
            time.sleep(0.05)
        proc.kill()
        raise AssertionError("daemon did not become ready within 20 s")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KAI_MESH_HOME", None)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return env


@contextmanager
def fresh_home() -> Iterator[Home]:
    # Under /tmp, short: a Unix socket path must stay under ~107 bytes.
    path = Path(tempfile.mkdtemp(prefix="km-", dir="/tmp"))
    try:
        yield Home(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def stop(proc: subprocess.Popen[str], timeout: float = 15) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
