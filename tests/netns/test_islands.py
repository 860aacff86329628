"""Islands through a relay, with real Reticulum inside each island: `harness up --islands 2,2
--relay` cuts the bridge into two islands (no frame crosses), runs a LocalRelay in the hub
namespace and gives it to each island's first node. Writes on the inner nodes of both islands,
and a policy the admin proposes on one island, reach every node; no ping crosses."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kai_mesh.core.errors import UsageError
from kai_mesh.harness import cli, cluster
from tests.netns.conftest import Harness, require_netns, wait_for
from tests.netns.test_reticulum import km, km_json

NAMES = ["node1", "node2", "node3", "node4"]


@pytest.fixture
def kn_harness() -> Iterator[Harness]:
    """As `harness`, with this branch's namespace prefix (kn…)."""
    require_netns()
    path = Path(tempfile.mkdtemp(prefix="knh-", dir="/tmp"))
    h = Harness(path, f"kn{os.getpid() % 100000}")
    try:
        yield h
    finally:
        h.run("down", "--prefix", h.prefix)
        shutil.rmtree(path, ignore_errors=True)


def test_island_sizes_and_counts_are_checked() -> None:
    assert cluster.island_groups(4, [2, 2]) == [["node1", "node2"], ["node3", "node4"]]
    assert cluster.island_groups(3, []) == []
    for sizes in ([4], [2, 1], [0, 4]):
        with pytest.raises(UsageError, match="--islands"):
            cluster.island_groups(4, sizes)
    assert cli._islands("2", 5) == (5, [3, 2])
    assert cli._islands("3,3", None) == (6, [3, 3])
    for text, n in (("x", 4), ("2", None), ("5", 4)):
        with pytest.raises(UsageError, match="--islands"):
            cli._islands(text, n)


@pytest.mark.slow
def test_two_islands_converge_through_the_relay(kn_harness: Harness) -> None:
    h = kn_harness
    up = json.loads(h.ok("up", "--islands", "2,2", "--relay", "--prefix", h.prefix, "--json"))
    assert up["gateways"] == ["node1", "node3"] and up["relay"].startswith("ws://")
    wait_for(
        lambda: {p["name"] for p in km_json(h, "node1", "peers")} >= {"node2", "node3"},
        30,
        "node1 to hear node2 (Reticulum) and node3 (the relay)",
    )
    assert not h.ping("node2", "10.77.0.3")  # no path between the islands
    assert km(h, "node2", "state", "set", "shared/a", '"from island 1"').returncode == 0
    assert km(h, "node4", "state", "set", "shared/b", '"from island 2"').returncode == 0
    want = {"a": "from island 1", "b": "from island 2"}
    wait_for(
        lambda: all(km_json(h, n, "state", "show", "shared")["value"] == want for n in NAMES),
        60,
        "every node to hold both islands' writes",
    )
    done = km(h, "node1", "propose", "policy_update", '{"islands": true}')
    assert done.returncode == 0, done.stderr  # node1 is the 1-of-1 admin: certified at once
    wait_for(
        lambda: all(
            km_json(h, n, "policy", "show")["policy"].get("islands") is True for n in NAMES
        ),
        60,
        "the certified policy on every node",
    )
    relays = km_json(h, "node3", "relays", "status")["relays"]
    assert relays[0]["connected"] and relays[0]["received"] > 0
