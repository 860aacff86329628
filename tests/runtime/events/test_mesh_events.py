"""Mesh events across nodes on the memory transport, under the autojump clock: delivered to the
nodes that follow the topic and to no other, once; must-arrive topics wait out a partition."""

from __future__ import annotations

import trio

from kai_mesh.core.events.wire import Event
from tests.runtime.scale_mesh import build


async def test_events_go_to_interested_nodes_only_once(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        mesh = await build(nursery, 4, seed=3)
        a, b, c, d = mesh.nodes
        got_b: list[Event] = []
        got_d: list[Event] = []
        b.events.listen("camera.motion", got_b.append)
        d.events.listen("*", got_d.append)
        await trio.sleep(3)  # interest is told within a round of each node's loop

        sent = a.events.publish("camera.motion", {"zone": 3})
        assert sent["peers"] == 2  # b and d asked; c did not
        await trio.sleep(1)
        assert [(e.topic, e.origin, dict(e.fields)) for e in got_b] == [
            ("camera.motion", a.node_id, {"zone": 3})
        ]
        assert len(got_d) == 1
        assert c.events.counters["received"] == 0  # nothing went to a node that wants nothing

        # A frame the transport delivers twice is delivered once.
        frame_before = b.events.counters["received"]
        from kai_mesh.core.events.wire import encode_event

        frame = encode_event("camera.motion", 424242, 0, {})
        b.events.on_frame(None, a.node_id, frame)
        b.events.on_frame(None, a.node_id, frame)
        assert b.events.counters["received"] == frame_before + 1
        assert b.events.counters["duplicates"] == 1
        # Garbage is refused and counted, never raised.
        b.events.on_frame(None, a.node_id, b"\x1e\xff")
        assert sum(b.events.refused.values()) == 1

        # An interest withdrawn (the follower went away) stops the sends.
        b.events._listeners.clear()
        await trio.sleep(3)
        assert a.events.publish("camera.motion", {})["peers"] == 1  # d only
        nursery.cancel_scope.cancel()


async def test_must_arrive_event_waits_out_a_partition(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        mesh = await build(nursery, 3, seed=4)
        a, b, c = mesh.nodes
        got: list[Event] = []
        b.events.listen("task.created", got.append)
        await trio.sleep(3)
        mesh.net.partition([a.node_id, c.node_id])  # b is cut off
        # a still holds b's interest (it lasts 90 s): the event is committed to the outbox.
        assert a.events.publish("task.created", {"task": "t1"})["must_arrive"] is True
        ephemeral = a.events.publish("camera.motion", {})  # nobody wants it
        assert ephemeral["peers"] == 0
        await trio.sleep(20)
        assert got == []
        mesh.net.heal()
        with trio.fail_after(120):
            while not got:  # noqa: ASYNC110 - waiting for the outbox's retry
                await trio.sleep(0.5)
        assert got[0].topic == "task.created" and dict(got[0].fields) == {"task": "t1"}
        assert got[0].origin == a.node_id
        await trio.sleep(30)
        assert len(got) == 1
        nursery.cancel_scope.cancel()
