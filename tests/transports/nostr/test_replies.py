"""Replies over Nostr name their request: a request from node a to node b (through the router,
answered by b's bus) comes back as an event with an `e` tag naming the request's event, so a
client may subscribe to `#e` and hear only that reply (NIP-46, ContextVM). Other frames carry no
`e` tag. Real relay, real time."""

from __future__ import annotations

import json
import os

import trio
from trio_websocket import open_websocket_url

from kai_mesh.core.mesh.address import AgentAddress, NodeRef
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.runtime.messaging.bus import new_message
from tests.runtime.test_islands import _genesis, start_node, until
from tests.transports.nostr.conftest import relay_url  # noqa: F401 - the fixture
from transports.memory import MemoryNetwork
from transports.nostr import KIND_FRAME


async def test_a_reply_names_its_request_in_an_e_tag(relay_url: str) -> None:  # noqa: F811
    a, b = NodeSecrets.generate(os.urandom), NodeSecrets.generate(os.urandom)
    genesis = _genesis([a], [a, b])
    net = MemoryNetwork(seed=1)
    with trio.fail_after(30):
        async with (
            open_websocket_url(relay_url) as watcher,
            trio.open_nursery() as nursery,
        ):
            await watcher.send_message(json.dumps(["REQ", "all", {"kinds": [KIND_FRAME]}]))
            na, nb = [
                await start_node(nursery, net, s, genesis, i, [relay_url])
                for i, s in enumerate((a, b))
            ]
            await until(lambda: na.nostr is not None and na.nostr.peers())
            message = new_message(
                sender=AgentAddress(NodeRef(node_id=a.node_id), "control"),
                to=AgentAddress(NodeRef(node_id=b.node_id), "nobody"),
                intent="echo",
                payload={"x": 1},
                ttl=30,
                max_ttl=60,
            )
            reply = await na.router.request(message, 20)
            assert reply.reply_to == message.message_id  # b's bus answered (no such agent)
            a_key = na.nostr.pubkey if na.nostr else ""
            b_key = nb.nostr.pubkey if nb.nostr else ""
            to_b: dict[str, list[list[str]]] = {}
            replies: list[list[list[str]]] = []
            while not replies:
                msg = json.loads(await watcher.get_message())
                if msg[0] != "EVENT":
                    continue
                event = msg[2]
                if ["p", b_key] in event["tags"] and event["pubkey"] == a_key:
                    to_b[event["id"]] = event["tags"]
                elif ["p", a_key] in event["tags"] and any(t[0] == "e" for t in event["tags"]):
                    replies.append(event["tags"])
            named = [t[1] for t in replies[0] if t[0] == "e"]
            assert len(named) == 1 and named[0] in to_b  # it names a frame a sent b
            assert not any(t[0] == "e" for t in to_b[named[0]])  # the request names nothing
            nursery.cancel_scope.cancel()
