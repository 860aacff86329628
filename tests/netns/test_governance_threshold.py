"""A threshold of 2 among 3 admins, over real Reticulum between five namespaces.

node1, an admin cut off alone, can propose but certifies nothing: its proposal stays open on node1
and unseen elsewhere. Meanwhile node2 proposes a different policy, node3 votes for it, and the
four connected nodes certify it. After the heal every node holds the same head and the same log,
which does not contain node1's proposal: it was orphaned by the certified sibling.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.netns.conftest import Harness, wait_for
from tests.netns.test_reticulum import km, km_json

pytestmark = pytest.mark.slow
NAMES = [f"node{k}" for k in range(1, 6)]
OTHERS = NAMES[1:]


def propose(h: Harness, node: str, body: dict[str, Any]) -> dict[str, Any]:
    done = km(h, node, "propose", "policy_update", json.dumps(body), "--json")
    assert done.returncode == 0, f"{node}: {done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def proposals(h: Harness, node: str) -> dict[str, str]:
    """Proposal id -> status, as `node` holds them."""
    return {p["id"]: p["status"] for p in km_json(h, node, "proposals")}


def policy(h: Harness, node: str) -> dict[str, Any]:
    shown: dict[str, Any] = km_json(h, node, "policy", "show")
    return shown


def all_alive(h: Harness, names: list[str], timeout: float) -> None:
    for name in names:
        wait_for(
            lambda n=name: km_json(h, n, "status")["liveness"]["peers"]["alive"] >= 4,
            timeout,
            f"{name} to see every peer alive",
        )


def test_a_partitioned_admin_certifies_nothing_alone(harness: Harness) -> None:
    harness.ok(
        "up", "-n", "5", "--admins", "node1,node2,node3", "--threshold", "2",
        "--prefix", harness.prefix,
    )  # fmt: skip
    all_alive(harness, NAMES, 30)
    genesis_head = policy(harness, "node1")["head"]

    harness.ok("partition", "node1", ",".join(OTHERS))
    alone = propose(harness, "node1", {"side": "node1"})
    assert (alone["status"], alone["votes_counted"]) == ("open", 1)

    rival = propose(harness, "node2", {"side": "majority"})
    assert rival["status"] == "open"
    wait_for(lambda: rival["id"] in proposals(harness, "node3"), 20, "node3 to hold node2's")
    voted = km_json(harness, "node3", "vote", rival["id"])
    assert (voted["status"], voted["votes_counted"]) == ("certified", 2)
    for name in OTHERS:
        wait_for(
            lambda n=name: policy(harness, n)["head"] == rival["id"],
            20,
            f"{name} to certify node2's proposal",
        )
        assert policy(harness, name)["policy"]["side"] == "majority"
        assert alone["id"] not in proposals(harness, name), name  # never crossed the cut

    mine = policy(harness, "node1")
    assert (mine["head"], mine["policy"].get("side")) == (genesis_head, None)
    assert proposals(harness, "node1") == {alone["id"]: "open"}

    harness.ok("heal")
    wait_for(
        lambda: all(policy(harness, n)["head"] == rival["id"] for n in NAMES),
        60,
        "every node to converge on node2's proposal",
    )
    logs = [km_json(harness, n, "governance", "log") for n in NAMES]
    assert all(log == logs[0] for log in logs)
    assert [e["id"] for e in logs[0]] == [rival["id"]]
    assert policy(harness, "node1")["policy"]["side"] == "majority"
    assert proposals(harness, "node1")[alone["id"]] == "orphaned"
