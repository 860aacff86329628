"""The node's control methods the TUI leans on, on a whole node in this process: `agent_restart`,
`status.shape`, `peers` naming their transport, and `state` pushes naming the changed paths."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from kai_mesh.config.nodefiles import NodeFiles, write_private
from kai_mesh.config.settings import NodePaths, default_config_text, load_config
from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.mesh.genesis import DEFAULT_POLICY, Genesis
from kai_mesh.core.mesh.identity import MemberRecord, NodeSecrets
from kai_mesh.runtime.node import Node
from transports.base import PeerInfo


def _init_node(home: Path, *, admin: NodeSecrets | None = None) -> NodePaths:
    """A home for node `pi1`; `admin`: the mesh's only admin is that other key (supervised)."""
    paths = NodePaths.resolve(home)
    secrets = NodeSecrets.generate(os.urandom)
    genesis = Genesis.of_one(secrets, "lab", os.urandom(16))
    if admin is not None:  # the mesh's only admin is another key; this node is trusted from start
        keys = (admin.verify_key, secrets.verify_key)
        genesis = Genesis("lab", keys[:1], 1, os.urandom(16), dict(DEFAULT_POLICY), keys)
        genesis = genesis.signed_by(admin)
    paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    write_private(paths.config_file, default_config_text("pi1", local_only=True).encode())
    NodeFiles(secrets, genesis, MemberRecord.create(secrets, "pi1", genesis.mesh_id)).write(paths)
    return paths


@asynccontextmanager
async def running(paths: NodePaths) -> AsyncIterator[Node]:
    node = Node(paths, load_config(paths.config_file), NodeFiles.load(paths))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(15):
            await nursery.start(node.run)
        yield node
        nursery.cancel_scope.cancel()


@dataclass
class FakeTransport:
    """Just what `peers` and `status.shape` read of a transport."""

    name: str
    heard: list[PeerInfo] = field(default_factory=list)

    def peers(self) -> list[PeerInfo]:
        return self.heard


async def test_agent_restart_ends_the_incarnation_and_the_agent_comes_back() -> None:
    with tempfile.TemporaryDirectory(prefix="km-") as home:
        async with running(_init_node(Path(home))) as node:
            sub = node.hub.subscribe(["agents"])
            done = await node.handle("agent_restart", {"name": "echo"})
            assert done == {"agent": "echo", "restarting": True, "restarts": 1}
            seen: list[str] = []
            with trio.fail_after(10):
                while "ready" not in seen:
                    _, data = await sub.receive()
                    if data.get("agent") == "echo":
                        seen.append(data["event"])
            assert seen[0] == "restarting" and seen[-1] == "ready"
            echo = next(a for a in await node.handle("agents", {}) if a["name"] == "echo")
            assert echo["restarts"] == 1 and echo["reason"] == ""
            reply = await node.handle(
                "send", {"to": "kai://pi1/echo", "intent": "echo", "payload": 7}
            )
            assert reply["payload"] == 7
            for params, code in (
                ({"name": "nope"}, "no_such_agent"),
                ({}, "bad_params"),
                ({"name": 3}, "bad_params"),
            ):
                with pytest.raises(ControlError) as refused:
                    await node.handle("agent_restart", params)
                assert refused.value.code == code


async def test_state_pushes_name_the_paths_written() -> None:
    with tempfile.TemporaryDirectory(prefix="km-") as home:
        async with running(_init_node(Path(home))) as node:
            sub = node.hub.subscribe(["state"])
            await node.handle("state_set", {"path": "shared/notes", "value": {"a": 1}})
            await node.handle("state_delete", {"path": "shared/notes"})
            pushed = []
            with trio.fail_after(5):
                for _ in range(2):
                    pushed.append((await sub.receive())[1])
            assert pushed == [
                {"event": "changed", "origin": "local", "paths": ["shared/notes"]},
                {"event": "changed", "origin": "local", "paths": ["shared/notes"]},
            ]


async def test_status_shape_and_peers_transport() -> None:
    with tempfile.TemporaryDirectory(prefix="km-") as home:
        async with running(_init_node(Path(home))) as node:
            assert (await node.handle("status", {}))["shape"] == "local"
            peer = PeerInfo(
                node_id=b"\x01" * 16,
                name="pi2",
                hops=2,
                interface="lora0",
                last_heard=trio.current_time(),
                rtt=0.25,
            )
            node.remote.transports = [FakeTransport("reticulum", [peer])]  # type: ignore[list-item]
            assert node._shape() == "edge"  # this node is the mesh's own admin
            [row] = await node.handle("peers", {})
            assert row["transport"] == "reticulum" and row["interface"] == "lora0"
            assert row["name"] == "pi2" and row["hops"] == 2 and row["rtt_ms"] == 250.0
            node.remote.transports.append(FakeTransport("nostr"))  # type: ignore[arg-type]
            assert node._shape() == "federated"
            node.remote.transports = []


async def test_a_node_whose_only_admin_is_another_is_supervised() -> None:
    admin = NodeSecrets.generate(os.urandom)
    with tempfile.TemporaryDirectory(prefix="km-") as home:
        paths = _init_node(Path(home), admin=admin)
        node = Node(paths, load_config(paths.config_file), NodeFiles.load(paths))
        assert node._shape() == "local"  # no transports: a mesh of one, whoever its admin
        node.remote.transports = [FakeTransport("reticulum")]  # type: ignore[list-item]
        assert node._shape() == "supervised"


async def test_a_running_node_commits_with_synchronous_full() -> None:
    """What the node acknowledges must survive a power cut, not only `kill -9` (issue 15):
    NORMAL here would lose the last commits of a gateway whose power is cut."""
    with tempfile.TemporaryDirectory(prefix="km-") as home:
        async with running(_init_node(Path(home))) as node:
            assert node.store is not None
            assert node.store.synchronous() == "FULL"
