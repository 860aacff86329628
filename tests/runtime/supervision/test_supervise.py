"""Supervisor commands between nodes on the memory transport (issue 12): the admin (the
supervisor) restarts an agent on another node and asks for a sync; a node that is not an admin
is refused, and so is a replayed command."""

from __future__ import annotations

import trio

from kai_mesh.core.mesh.address import AgentAddress, NodeRef
from kai_mesh.core.messaging.envelope import StandardMessage
from kai_mesh.runtime.agents.host import AgentSpec
from kai_mesh.runtime.messaging.bus import new_message
from tests.runtime.scale_mesh import ScaleNode, build


async def _send(by: ScaleNode, to: ScaleNode, text: str) -> StandardMessage:
    message = new_message(
        sender=AgentAddress(NodeRef(node_id=by.node_id), "control"),
        to=AgentAddress(NodeRef(node_id=to.node_id), "supervise"),
        intent="command",
        payload={"command": text},
        ttl=60,
        max_ttl=3600,
    )
    return await by.bus.request(message, 10.0)


async def test_supervisor_commands_accepted_others_refused(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        mesh = await build(nursery, 3, seed=51)
        supervisor, node, stranger = mesh.nodes  # nodes[0] is the genesis's only admin
        node.host.add(AgentSpec(name="vision", source="entry:echo"))
        with trio.fail_after(30):
            while "vision" not in node.hosting():  # noqa: ASYNC110
                await trio.sleep(0.2)

        text = supervisor.supervised.sign(node.node_id, "agent_restart", {"name": "vision"})
        reply = await _send(supervisor, node, text)
        assert reply.intent == "reply" and reply.payload["outcome"] == "done", reply.payload
        with trio.fail_after(30):
            while True:
                info = {a["name"]: a for a in node.host.info()}["vision"]
                if info["restarts"] == 1 and info["state"] == "ready":
                    break
                await trio.sleep(0.2)

        again = await _send(supervisor, node, text)  # the same signed bytes: a replay
        assert again.intent == "error" and "replayed" in again.payload["message"]

        forged = stranger.supervised.sign(node.node_id, "emergency_stop", {})
        refused = await _send(stranger, node, forged)
        assert refused.intent == "error" and "unauthorized" in refused.payload["message"]
        assert node.host.suspended is None  # nothing was stopped

        sync = supervisor.supervised.sign(node.node_id, "data_sync", {})
        assert (await _send(supervisor, node, sync)).payload["outcome"] == "done"
        told = node.supervised.status()
        assert told["supervisors"] == [supervisor.node_id.hex()]
        assert [t["outcome"] for t in told["told"]] == ["done", "refused", "refused", "done"]
        assert told["told"][0]["by"] == supervisor.node_id.hex()
        nursery.cancel_scope.cancel()


def test_accepted_commands_survive_a_restart() -> None:
    import os
    from pathlib import Path

    from kai_mesh.core.mesh.identity import NodeSecrets
    from kai_mesh.runtime.agents.host import AgentHost
    from kai_mesh.runtime.blocking import inline
    from kai_mesh.runtime.store import Store
    from kai_mesh.runtime.supervision.service import Supervised
    from tests.core.supervision.test_command import MESH, SUPERVISOR, _gov

    node = NodeSecrets.generate(os.urandom)
    store = Store(Path(":memory:"), run_sync=inline)

    def supervised(secrets: NodeSecrets) -> Supervised:
        return Supervised(
            secrets=secrets,
            mesh_id=MESH,
            gov=lambda: _gov(SUPERVISOR),
            host=AgentHost([], on_event=lambda topic, data: None),
            sync_now=lambda: 1,
        )

    text = supervised(SUPERVISOR).sign(node.node_id, "data_sync", {})
    before = supervised(node)
    before.open(store)
    assert before.receive(text)["outcome"] == "done"
    after = supervised(node)  # the node restarted
    after.open(store)
    assert after.receive(text) == {
        "outcome": "refused",
        "reason": "replayed",
        "detail": "this command was carried out already",
    }
