"""A real relay (nostr-sdk's LocalRelay, kai_mesh/harness/relay.py) in its own
process on loopback, and members of one mesh to put on it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from kai_mesh.core.mesh.identity import MemberRecord, NodeSecrets


def start_relay(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kai_mesh.harness.relay", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("ws://127.0.0.1:"), url
    return proc, url


def stop_relay(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def relay_url() -> Iterator[str]:
    proc, url = start_relay()
    yield url
    stop_relay(proc)


@pytest.fixture
def auth_relay_url() -> Iterator[str]:
    proc, url = start_relay("--nip42")
    yield url
    stop_relay(proc)


MESH = bytes(range(32))


@dataclass(frozen=True)
class Member:
    secrets: NodeSecrets
    record: MemberRecord

    @property
    def node_id(self) -> bytes:
        return self.secrets.node_id


def member(seed: int, mesh_id: bytes = MESH) -> Member:
    def rand(n: int) -> bytes:
        return bytes([seed]) * n

    secrets = NodeSecrets.generate(rand)
    return Member(secrets, MemberRecord.create(secrets, f"node{seed}", mesh_id))


def trusted(*members: Member) -> dict[bytes, bytes]:
    return {m.node_id: m.secrets.verify_key for m in members}
