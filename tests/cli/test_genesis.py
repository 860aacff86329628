"""The genesis ceremony end to end: `key`, `genesis new|sign|show`, `init --genesis`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from kai_mesh.cli.common import ExitCode
from kai_mesh.config.nodefiles import NodeFiles
from kai_mesh.config.settings import NodePaths
from kai_mesh.core.mesh.genesis import Genesis
from tests.cli.helpers import KAI_MESH, Home, _env, fresh_home, stop

pytestmark = pytest.mark.slow


def kai(*args: str) -> subprocess.CompletedProcess[str]:
    """`kai-mesh` with no home: `genesis new` and `genesis show` need none."""
    return subprocess.run([*KAI_MESH, *args], capture_output=True, text=True, env=_env())


def one_line_error(done: subprocess.CompletedProcess[str], code: ExitCode, needle: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert needle in lines[0], lines[0]


@pytest.fixture
def nodes() -> Iterator[dict[str, Home]]:
    """Four nodes, each a mesh of one: three admins to be, and m1, a member to be."""
    with ExitStack() as stack:
        homes = {}
        for name in ("a1", "a2", "a3", "m1"):
            home = stack.enter_context(fresh_home())
            done = home.run("init", "--local-only", "--name", name)
            assert done.returncode == 0, done.stderr
            homes[name] = home
        yield homes


def keys(nodes: dict[str, Home]) -> dict[str, str]:
    return {name: home.json("key")["key"] for name, home in nodes.items()}


def new_genesis(file: Path, key: dict[str, str]) -> None:
    admins = [a for name in ("a1", "a2", "a3") for a in ("--admin", key[name])]
    done = kai("genesis", "new", "--mesh", "team", *admins, "--threshold", "2", str(file))
    assert done.returncode == 0, done.stderr
    assert "genesis sign" in done.stdout


def show(file: Path) -> Any:
    done = kai("genesis", "show", str(file), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_three_admins_found_a_mesh_and_a1_joins_it_keeping_its_keys(
    nodes: dict[str, Home], tmp_path: Path
) -> None:
    a1, a2 = nodes["a1"], nodes["a2"]
    key = keys(nodes)
    assert all(len(k) == 64 for k in key.values())
    before = a1.json("key")
    file = tmp_path / "team.genesis"
    new_genesis(file, key)
    shown = show(file)
    assert shown["complete"] is False and shown["signatures"] == 0 and shown["threshold"] == 2
    assert [a["key"] for a in shown["admins"]] == [key["a1"], key["a2"], key["a3"]]

    signed = a1.run("genesis", "sign", str(file))
    assert signed.returncode == 0, signed.stderr
    assert "1 of 2" in signed.stdout
    assert show(file)["complete"] is False
    one_line_error(a1.run("init", "--genesis", str(file), "--force"), ExitCode.USAGE, "1 of 2")

    # The old mesh leaves something behind: a database with state in it.
    proc = a1.start()
    try:
        assert a1.run("state", "set", "shared/old", '"of the old mesh"').returncode == 0
        assert a2.run("genesis", "sign", str(file)).returncode == 0
        one_line_error(
            a1.run("init", "--genesis", str(file), "--force"), ExitCode.CONFLICT, "running"
        )
        assert a1.run("stop").returncode == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        stop(proc)
    shown = show(file)
    assert shown["complete"] is True and shown["signatures"] == 2
    marks = [(a["signed"], a["verifies"]) for a in shown["admins"]]
    assert marks == [(True, True), (True, True), (False, False)]
    human = kai("genesis", "show", str(file))
    assert human.stdout.count("✓") == 2 and "complete" in human.stdout

    one_line_error(
        a1.run("init", "--genesis", str(file)), ExitCode.CONFLICT, "--force"
    )  # it belongs to its mesh of one
    mesh_id = Genesis.from_bytes(file.read_bytes()).mesh_id.hex()
    joined = a1.json("init", "--genesis", str(file), "--force")
    assert joined["node_id"] == before["node_id"] and joined["mesh_id"] == mesh_id
    assert joined["name"] == "a1"
    paths = NodePaths.resolve(a1.path)
    archive = paths.data_dir / "archive" / before["mesh_id"][:16]
    assert Path(joined["archive"]) == archive and (archive / "node.db").exists()
    assert not paths.database.exists()
    files = NodeFiles.load(paths)
    assert files.secrets.verify_key.hex() == key["a1"]
    assert files.genesis.mesh_id.hex() == mesh_id and files.member.name == "a1"

    proc = a1.start()
    try:
        status = a1.json("status")
        assert status["node_id"] == before["node_id"] and status["mesh_id"] == mesh_id
        assert (status["threshold"], status["admins"]) == (2, 3)
        state = a1.run("state", "show", "--json")
        assert state.returncode == 0 and "of the old mesh" not in state.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert stop(proc) == 0

    again = a1.json("init", "--genesis", str(file))  # already in that mesh: no --force needed
    assert again["archive"] is None and again["node_id"] == before["node_id"]


def test_refusals(nodes: dict[str, Home], tmp_path: Path) -> None:
    a1, a2, m1 = nodes["a1"], nodes["a2"], nodes["m1"]
    key = keys(nodes)
    admins = [a for name in ("a1", "a2", "a3") for a in ("--admin", key[name])]
    file = tmp_path / "g"
    four = [*admins, "--admin", os.urandom(32).hex()]
    new = ("genesis", "new", "--mesh", "team")
    one_line_error(kai(*new, *four, "--threshold", "2", str(file)), ExitCode.USAGE, "2m > n")
    bad = [
        (["--admin", "zz"], "not hexadecimal"),
        (["--admin", "ab" * 31], "64 hex digits"),
        (["--admin", key["a1"]], "twice"),
        (["--member", "ab"], "64 hex digits"),
    ]
    for extra, needle in bad:
        one_line_error(
            kai(*new, *admins, *extra, "--threshold", "2", str(file)), ExitCode.USAGE, needle
        )
    assert not file.exists()
    member = ("--member", key["m1"], "--member", key["a1"])  # an admin again: no duplicate
    assert kai(*new, *admins, *member, "--threshold", "2", str(file)).returncode == 0
    shown = show(file)
    assert [m["key"] for m in shown["members"]] == [key["m1"]]
    assert shown["trusted_nodes"] == 4
    before = file.read_bytes()
    one_line_error(kai(*new, *admins, "--threshold", "2", str(file)), ExitCode.CONFLICT, "--force")
    assert file.read_bytes() == before

    one_line_error(m1.run("genesis", "sign", str(file)), ExitCode.USAGE, "not an admin")
    assert file.read_bytes() == before
    assert a1.run("genesis", "sign", str(file)).returncode == 0
    assert a2.run("genesis", "sign", str(file)).returncode == 0

    with fresh_home() as outsider:
        assert outsider.run("init", "--local-only", "--name", "x").returncode == 0
        outsider_key = outsider.json("key")["key"]
        refused = outsider.run("init", "--genesis", str(file), "--force")
        one_line_error(refused, ExitCode.USAGE, "this node's key is not a member of that mesh")
        assert f"ask an admin to add it ({outsider_key})" in refused.stderr
    with fresh_home() as empty:
        one_line_error(empty.run("init", "--genesis", str(file)), ExitCode.USAGE, "never makes")
        assert not NodePaths.resolve(empty.path).secrets.exists()
    joined = m1.json("init", "--genesis", str(file), "--force")  # a listed member joins
    assert joined["mesh"] == "team" and joined["name"] == "m1"

    # Tampering: a byte of the signed body (the nonce), then of a signature, then garbage.
    signed = file.read_bytes()
    nonce = Genesis.from_bytes(signed).nonce
    at = signed.index(nonce)
    for position in (at, len(signed) - 1):
        data = bytearray(signed)
        data[position] ^= 0x01
        file.write_bytes(bytes(data))
        tampered: list[tuple[Home, tuple[str, ...]]] = [
            (a1, ("genesis", "show", str(file))),
            (a1, ("genesis", "show", str(file), "--json")),
            (nodes["a3"], ("genesis", "sign", str(file))),
            (a2, ("init", "--genesis", str(file), "--force")),
        ]
        for home, args in tampered:
            one_line_error(home.run(*args), ExitCode.USAGE, "do not verify")
        assert file.read_bytes() == bytes(data)  # sign did not write
    file.write_bytes(signed[:-10])
    damaged: list[tuple[str, ...]] = [
        ("genesis", "show", str(file)),
        ("genesis", "sign", str(file)),
        ("init", "--genesis", str(file), "--force"),
    ]
    for args in damaged:
        one_line_error(a2.run(*args), ExitCode.USAGE, "not a valid genesis file")
    assert NodeFiles.load(NodePaths.resolve(a2.path)).genesis.mesh_name == "a2"  # untouched


def test_the_supervised_shape_is_one_key_one_of_one(nodes: dict[str, Home], tmp_path: Path) -> None:
    supervisor, m1 = nodes["a1"], nodes["m1"]
    key = keys(nodes)
    file = tmp_path / "supervised"
    new = ("genesis", "new", "--mesh", "site")
    both = kai(*new, "--supervisor", key["a1"], "--admin", key["a2"], str(file))
    one_line_error(both, ExitCode.USAGE, "--supervisor is the one admin")
    one_line_error(kai(*new, str(file)), ExitCode.USAGE, "--supervisor KEY")
    done = kai(*new, "--supervisor", key["a1"], "--member", key["m1"], str(file))
    assert done.returncode == 0, done.stderr
    shown = show(file)
    assert shown["threshold"] == 1 and [a["key"] for a in shown["admins"]] == [key["a1"]]
    assert supervisor.run("genesis", "sign", str(file)).returncode == 0
    assert show(file)["complete"]
    joined = m1.json("init", "--genesis", str(file), "--force")
    assert joined["mesh"] == "site"
