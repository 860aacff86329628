"""The replicated state over real Reticulum between namespaces: five nodes write, split into two
sides that both write, heal and converge; a node killed with SIGKILL right after a write was
acknowledged comes back with it, on a new stream, and catches up."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.netns.conftest import Harness, wait_for
from tests.netns.test_reticulum import km, km_json

pytestmark = pytest.mark.slow
NAMES = [f"node{k}" for k in range(1, 6)]


def state_set(h: Harness, node: str, path: str, value: Any) -> None:
    done = km(h, node, "state", "set", path, json.dumps(value))
    assert done.returncode == 0, f"{node}: {done.stderr}"


def shared(h: Harness, node: str) -> Any:
    return km_json(h, node, "state", "show", "shared")["value"]


def digests(h: Harness) -> set[str]:
    return {km_json(h, n, "status")["state"]["digest"] for n in NAMES}


def all_alive(h: Harness) -> None:
    for name in NAMES:
        wait_for(
            lambda n=name: km_json(h, n, "status")["liveness"]["peers"]["alive"] == 4,
            30,
            f"{name} to see every peer alive",
        )


def test_partitioned_writes_converge_and_a_killed_node_loses_nothing(harness: Harness) -> None:
    harness.ok("up", "-n", "5", "--prefix", harness.prefix)
    all_alive(harness)
    for name in NAMES:
        state_set(harness, name, f"shared/{name}", {"hello": name})
    expected = {name: {"hello": name} for name in NAMES}
    wait_for(lambda: all(shared(harness, n) == expected for n in NAMES), 30, "first writes")

    harness.ok("partition", "node1,node2", "node3,node4,node5")
    state_set(harness, "node1", "shared/left", {"side": 1})
    state_set(harness, "node4", "shared/right", {"side": 2})
    state_set(harness, "node2", "shared/node2", {"hello": "again"})
    assert "right" not in shared(harness, "node1")
    harness.ok("heal")
    expected.update(left={"side": 1}, right={"side": 2}, node2={"hello": "again"})
    wait_for(lambda: all(shared(harness, n) == expected for n in NAMES), 60, "convergence")
    wait_for(lambda: len(digests(harness)) == 1, 30, "identical digests")

    before = km_json(harness, "node3", "status")["state"]
    state_set(harness, "node3", "shared/last", "acknowledged")  # returns once committed
    harness.ok("kill", "node3")
    state_set(harness, "node1", "shared/while_away", True)
    harness.ok("start", "node3")
    after = km_json(harness, "node3", "status")["state"]
    assert shared(harness, "node3")["last"] == "acknowledged"  # nothing acknowledged was lost
    assert after["client_id"] != before["client_id"]  # a new stream after the unclean stop
    expected.update(last="acknowledged", while_away=True)
    wait_for(lambda: shared(harness, "node3") == expected, 60, "node3 to catch up")
    state_set(harness, "node3", "shared/new_stream", 1)
    expected["new_stream"] = 1
    wait_for(lambda: all(shared(harness, n) == expected for n in NAMES), 60, "the new stream")
