"""Invites over real Reticulum between namespaces: `kai-mesh invite` on the admin (node1, a
1-of-1 mesh, so the invite is certified at once), `kai-mesh join TOKEN` on a fresh node, which is
then started; its JOIN frame carries the claim to the first mesh node it links to, every node
admits it (the claim is pushed on), and it can message the mesh. A second node that redeems the
same token is refused everywhere."""

from __future__ import annotations

from typing import Any

import pytest

from tests.netns.conftest import Harness, wait_for
from tests.netns.test_reticulum import echo, km, km_json

pytestmark = pytest.mark.slow


def members(h: Harness, node: str) -> int:
    return int(km_json(h, node, "status")["governance"]["members"])


def counter(h: Harness, node: str, name: str) -> int:
    transports: list[dict[str, Any]] = km_json(h, node, "status")["transports"]
    return sum(int(t["counters"].get(name, 0)) for t in transports)


def test_a_fresh_node_joins_with_a_token_and_a_second_redemption_is_refused(
    harness: Harness,
) -> None:
    harness.ok("up", "-n", "4", "--fresh", "node3,node4", "--prefix", harness.prefix)
    assert km(harness, "node3", "status").returncode != 0  # not started
    invite = km_json(harness, "node1", "invite", "--expires", "1h")
    assert invite["status"] == "certified" and invite["token"].startswith("kaimesh1:")
    token = invite["token"]

    joined = km_json(harness, "node3", "join", token, "--name", "newbie")
    assert joined["mesh_id"] == km_json(harness, "node1", "status")["mesh_id"]
    harness.ok("start", "node3")
    for node in ("node1", "node2", "node3"):
        wait_for(lambda n=node: members(harness, n) == 3, 90, f"{node} to admit node3")
    assert echo(harness, "node3", "node1", {"hi": 1}) == {"hi": 1}
    assert echo(harness, "node1", "newbie", {"back": 2}) == {"back": 2}
    shown = km_json(harness, "node1", "invite", "show", invite["id"][:16])
    assert shown["status"] == "redeemed" and shown["redeemed_by"] == joined["node_id"]

    # The same token again, on another fresh node: its claim loses to node3's everywhere.
    assert km(harness, "node4", "join", token, "--name", "again").returncode == 0
    harness.ok("start", "node4")
    wait_for(
        lambda: (
            counter(harness, "node1", "join_refused") + counter(harness, "node2", "join_refused")
            > 0
        ),
        90,
        "a mesh node to refuse node4's JOIN",
    )
    for node in ("node1", "node2", "node3"):
        assert members(harness, node) == 3
    assert km_json(harness, "node4", "status")["governance"]["members"] == 2  # only the genesis's
