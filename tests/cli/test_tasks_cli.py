"""`kai-mesh tasks` against a real node (a mesh of one): bad input exits 2 with one line, a task
for a capability nobody offers stays open and says why, one for echo runs and shows its result."""

from __future__ import annotations

import time
from pathlib import Path

from kai_mesh.cli.main import ExitCode
from tests.cli.helpers import (
    Home,
)


def test_submit_list_show(running: Home, tmp_path: Path) -> None:
    for bad in (
        ["tasks", "submit", "a b", "echo"],  # not a capability
        ["tasks", "submit", "echo", "echo", "{not json"],
        ["tasks", "show", "nothex"],
        ["tasks", "show"],
        ["tasks", "submit", "echo"],
    ):
        refused = running.run(*bad)
        assert refused.returncode == ExitCode.USAGE, (bad, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    orphan = running.json("tasks", "submit", "translate", "echo", '"hola"')
    assert orphan["state"] == "open" and "no live node" in orphan["waiting"]

    # Not "echo": a service named like the node's configured echo agent flaps (see the note).
    manifest = tmp_path / "echo2.toml"
    manifest.write_text('name = "echo2"\nversion = "1"\nagent = "echo"\nreplicas = 1\n')
    assert running.run("services", "deploy", str(manifest)).returncode == 0
    task = running.json("tasks", "submit", "echo2", "echo", '{"a": 1}')
    deadline = time.monotonic() + 30
    while (shown := running.json("tasks", "show", task["id"]))["state"] != "done":
        assert time.monotonic() < deadline, shown
        time.sleep(0.3)
    assert shown["result"] == {"a": 1} and shown["claimed_by"] == "pi1"
    listed = {t["id"]: t["state"] for t in running.json("tasks", "list")}
    assert listed == {orphan["id"]: "open", task["id"]: "done"}
