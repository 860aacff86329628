"""The governance scenario of the issue, over real Reticulum between namespaces: 3 admins of 4
nodes, threshold 2, and a fifth node that joins by invite. It appears as a member everywhere,
writes state, is revoked (the cut keeps what it wrote before), is cut off, and the other nodes
converge to one doc without its later writes; an emergency shutdown stops the agents of every
node, holds across a restart, and a lift starts them again. Each decision takes two admins."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.netns.conftest import Harness, wait_for
from tests.netns.test_reticulum import echo, km, km_json

pytestmark = pytest.mark.slow
MESH = ["node1", "node2", "node3", "node4"]


def decide(h: Harness, opened: dict[str, Any], voter: str) -> str:
    """A proposal node1 opened, certified by `voter`'s vote (the second of threshold 2)."""
    assert opened["status"] == "open", opened
    voted = km_json(h, voter, "vote", opened["id"])
    assert voted["status"] == "certified", voted
    return str(opened["id"])


def gov(h: Harness, node: str) -> dict[str, Any]:
    status: dict[str, Any] = km_json(h, node, "status")["governance"]
    return status


def shared(h: Harness, node: str) -> Any:
    return km_json(h, node, "state", "show", "shared")["value"]


def agent_states(h: Harness, node: str) -> set[str]:
    return {a["state"] for a in km_json(h, node, "agents")}


def test_join_revoke_shutdown_and_lift_across_five_nodes(harness: Harness) -> None:
    harness.ok(
        "up", "-n", "5", "--admins", "node1,node2,node3", "--threshold", "2",
        "--fresh", "node5", "--prefix", harness.prefix,
    )  # fmt: skip
    assert gov(harness, "node4")["threshold"] == 2

    # An invite needs two admins; then the token admits node5 everywhere.
    invite = km_json(harness, "node1", "invite", "--expires", "1h")
    decide(harness, invite, "node2")
    token = km_json(harness, "node1", "invite", "show", invite["id"])["token"]
    joined = km_json(harness, "node5", "join", token, "--name", "newbie")
    harness.ok("start", "node5")
    everyone = [*MESH, "node5"]
    for node in everyone:
        wait_for(lambda n=node: gov(harness, n)["members"] == 5, 90, f"{node} to admit node5")

    # node5 writes; every node holds it.
    assert km(harness, "node5", "state", "set", "shared/newbie", '{"v": 1}').returncode == 0
    for node in MESH:
        wait_for(lambda n=node: "newbie" in (shared(harness, n) or {}), 60, f"{node} to sync")

    # Revoked: cut at what it wrote so far, links closed, members 4 everywhere.
    revoke = km_json(harness, "node1", "revoke", joined["node_id"])
    decide(harness, revoke, "node3")
    for node in MESH:
        wait_for(lambda n=node: gov(harness, n)["members"] == 4, 60, f"{node} to drop node5")
    for node in MESH:
        assert "newbie" not in {p["name"] for p in km_json(harness, node, "peers")}
    # What it writes now reaches no one; what it wrote before the cut stays everywhere.
    km(harness, "node5", "state", "set", "shared/after", '{"v": 2}')  # may be refused locally
    cut_off = km(harness, "node5", "send", "kai://node1/echo", "echo", "1", "--timeout", "5")
    assert cut_off.stdout.strip() != "1", "node1's echo answered a revoked node"
    time.sleep(5)
    for node in MESH:
        value = shared(harness, node)
        assert value["newbie"] == {"v": 1} and "after" not in value, (node, value)
    wait_for(
        lambda: len({km_json(harness, n, "status")["state"]["digest"] for n in MESH}) == 1,
        60,
        "the four members to hold one doc",
    )

    # Emergency shutdown: the agents of every node stop, and stay stopped across a restart.
    shutdown = km_json(
        harness, "node1", "propose", "emergency_shutdown", json.dumps({"reason": "drill"})
    )
    decide(harness, shutdown, "node2")
    for node in MESH:
        wait_for(lambda n=node: agent_states(harness, n) == {"stopped"}, 60, f"{node} to stop")
    refused = km(harness, "node1", "send", "kai://node4/echo", "echo", "1", "--timeout", "10")
    assert refused.returncode != 0 and "shutdown" in refused.stderr
    harness.ok("kill", "node4")
    harness.ok("start", "node4")
    assert agent_states(harness, "node4") == {"stopped"}
    assert gov(harness, "node4")["shutdown_reason"] == "drill"

    lift = km_json(harness, "node1", "propose", "shutdown_lift", "{}")
    decide(harness, lift, "node3")
    for node in MESH:
        wait_for(lambda n=node: agent_states(harness, n) == {"ready"}, 60, f"{node} to resume")
    assert echo(harness, "node1", "node4", {"after": "lift"}, timeout=30) == {"after": "lift"}
