"""Governance over real Reticulum between namespaces (the harness mesh: node1 is the only admin,
threshold 1). A certified policy reaches every node by push; a change made while node1 is cut
off reaches the others after the heal, by the governance head on heartbeats."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.netns.conftest import Harness, wait_for
from tests.netns.test_reticulum import km, km_json

pytestmark = pytest.mark.slow
NAMES = [f"node{k}" for k in range(1, 4)]


def propose(h: Harness, body: dict[str, Any]) -> str:
    done = km(h, "node1", "propose", "policy_update", json.dumps(body), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "certified"
    return str(result["id"])


def gov(h: Harness, node: str) -> dict[str, Any]:
    status: dict[str, Any] = km_json(h, node, "status")["governance"]
    return status


def test_policy_reaches_every_node_and_a_partition_heals(harness: Harness) -> None:
    harness.ok("up", "-n", "3", "--prefix", harness.prefix)
    for name in NAMES:
        wait_for(
            lambda n=name: km_json(harness, n, "status")["liveness"]["peers"]["alive"] == 2,
            30,
            f"{name} to see every peer alive",
        )
    first = propose(harness, {"k": "v"})
    wait_for(lambda: all(gov(harness, n)["head"] == first for n in NAMES), 30, "the push")
    for name in NAMES:
        assert km_json(harness, name, "policy", "show")["policy"]["k"] == "v"

    harness.ok("partition", "node1", "node2,node3")
    second = propose(harness, {"k": "w"})
    assert gov(harness, "node2")["head"] == first
    harness.ok("heal")
    wait_for(lambda: all(gov(harness, n)["head"] == second for n in NAMES), 90, "convergence")
    for name in NAMES:
        log = km_json(harness, name, "governance", "log")
        assert [e["id"] for e in log] == [first, second]
        assert km_json(harness, name, "policy", "show")["policy"]["k"] == "w"
