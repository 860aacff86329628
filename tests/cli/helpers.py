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


@contextmanager
def tcp_pair(port: int) -> Iterator[tuple[Home, Home]]:
    """Homes of a two-node mesh (one genesis, both trusted): "srv" listens on 127.0.0.1:`port`
    (a Reticulum `tcp_server`), "cli" connects to it (`tcp_client`); no LXMF."""
    from kai_mesh.config.nodefiles import write_private
    from kai_mesh.config.settings import NodePaths
    from kai_mesh.harness.homes import make_mesh, write_node_files

    genesis, nodes = make_mesh(["srv", "cli"], "pair")
    interfaces = [
        f'type = "tcp_server"\nlisten_ip = "127.0.0.1"\nlisten_port = {port}',
        f'type = "tcp_client"\ntarget_host = "127.0.0.1"\ntarget_port = {port}',
    ]
    with fresh_home() as first, fresh_home() as second:
        for home, keys, interface in zip((first, second), nodes, interfaces, strict=True):
            paths = NodePaths.resolve(home.path)
            write_node_files(paths, keys.secrets, genesis, keys.member)
            config = (
                f'[node]\nname = "{keys.name}"\n\n[reticulum]\nenabled = true\n\n'
                f'[lxmf]\nenabled = false\n\n[[interfaces]]\nname = "lo"\n{interface}\n'
            )
            write_private(paths.config_file, config.encode())
        yield first, second


def wait_for_peer(home: Home, name: str, within: float) -> float | None:
    """Seconds until `home`'s node lists `name` among its peers, or None if not `within` s."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        done = home.run("peers", "--json")
        if done.returncode == 0 and any(p["name"] == name for p in json.loads(done.stdout)):
            return time.monotonic() - started
        time.sleep(0.2)
    return None
