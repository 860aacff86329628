"""`kai-mesh harness up --admins NAMES --threshold M`: the genesis ceremony in one command.

Without root: the quorum check refuses a threshold that is not a majority before anything is
made, and the homes' genesis names the admins and carries each one's signature. With root: five
nodes whose genesis has three admins and threshold 2; a proposal from node1 stays open until
node2 votes for it, and is then certified on all five.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kai_mesh.core.errors import UsageError
from kai_mesh.core.mesh.genesis import Genesis
from kai_mesh.harness import cli, cluster, homes
from tests.netns.conftest import Harness, wait_for
from tests.netns.test_reticulum import km, km_json

NAMES = [f"node{k}" for k in range(1, 6)]
ADMINS = NAMES[:3]


# Without root


def test_make_mesh_with_three_admins_is_signed_by_each() -> None:
    genesis, keys = homes.make_mesh(NAMES, "harness", admins=ADMINS, threshold=2)
    by_name = {k.name: k.secrets.verify_key for k in keys}
    assert genesis.admins == tuple(by_name[n] for n in ADMINS) and genesis.threshold == 2
    assert set(genesis.signatures) == set(genesis.admins)
    assert set(genesis.trusted_nodes) == set(by_name.values())
    Genesis.from_bytes(genesis.to_bytes()).check()  # what `init --genesis` requires
    default, _ = homes.make_mesh(NAMES, "harness", admins=["node2", "node4", "node5", "node1"])
    assert default.threshold == 3  # the smallest majority of 4


@pytest.mark.parametrize(
    ("admins", "threshold", "message"),
    [
        ("node1,node2,node3", "1", "not a majority"),
        ("node1,node2,node3,node4", "2", "not a majority"),
        ("node1,node2", "3", "outside 1..2"),
        ("node1,node9", "2", "no node 'node9'"),
        ("node1,node1", "1", "named twice"),
    ],
)
def test_a_bad_quorum_is_refused_before_anything_is_made(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    admins: str,
    threshold: str,
    message: str,
) -> None:
    target = tmp_path / "h"
    argv = ["up", "-n", "5", "--admins", admins, "--threshold", threshold, "--dir", str(target)]
    assert cli.main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert message in line and line.startswith("kai-mesh harness: --")
    assert not target.exists()
    with pytest.raises(UsageError, match=message):
        cluster.up(target, 5, admins=admins.split(","), threshold=int(threshold))
    assert not target.exists()


# With root


def proposal(h: Harness, node: str, pid: str) -> dict[str, Any] | None:
    return next((p for p in km_json(h, node, "proposals") if p["id"] == pid), None)


@pytest.mark.slow
def test_three_admins_threshold_two_certify_on_every_node(harness: Harness) -> None:
    up = harness.json(
        "up", "-n", "5", "--admins", ",".join(ADMINS), "--threshold", "2",
        "--prefix", harness.prefix, "--json",
    )  # fmt: skip
    assert (up["admins"], up["threshold"]) == (ADMINS, 2)
    status = harness.json("status", "--json")
    assert (status["admins"], status["threshold"]) == (ADMINS, 2)
    text = harness.ok("status")
    assert "admins node1,node2,node3, threshold 2" in text

    keys = [km_json(harness, name, "key")["key"] for name in ADMINS]
    for name in NAMES:
        gov = km_json(harness, name, "status")["governance"]
        assert (sorted(gov["admins"]), gov["threshold"]) == (sorted(keys), 2), name
    for name in NAMES:
        wait_for(
            lambda n=name: km_json(harness, n, "status")["liveness"]["peers"]["alive"] == 4,
            30,
            f"{name} to see every peer alive",
        )

    done = km(harness, "node1", "propose", "policy_update", json.dumps({"k": "v"}), "--json")
    assert done.returncode == 0, done.stderr
    proposed = json.loads(done.stdout)
    pid = proposed["id"]
    assert (proposed["status"], proposed["votes_counted"], proposed["threshold"]) == ("open", 1, 2)
    wait_for(lambda: proposal(harness, "node2", pid) is not None, 20, "node2 to hold it")
    for name in NAMES:
        assert km_json(harness, name, "policy", "show")["policy"].get("k") is None, name
    held = proposal(harness, "node2", pid)
    assert held is not None and held["status"] == "open"

    voted = km_json(harness, "node2", "vote", pid[:12])
    assert (voted["id"], voted["status"], voted["votes_counted"]) == (pid, "certified", 2)

    def certified(name: str) -> bool:
        policy = km_json(harness, name, "policy", "show")
        return bool(policy["head"] == pid and policy["policy"].get("k") == "v")

    for name in NAMES:
        wait_for(lambda n=name: certified(n), 30, f"{name} to hold the certified policy")
    assert km_json(harness, "node5", "status")["governance"]["height"] == 1
