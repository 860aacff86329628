"""The frame registry: dispatch by type, refusal by name, and per-peer bounds on the work peers
start (runtime/messaging/frame_registry.py), alone and inside a router."""

from __future__ import annotations

import pytest
import trio

from kai_mesh.core.messaging.envelope import LinkEnds, StandardMessage, encode
from kai_mesh.core.messaging.frames import (
    FRAME_GOVERNANCE,
    FRAME_HEARTBEAT,
    FRAME_STATE,
    FRAME_SWIM,
)
from kai_mesh.runtime.messaging.frame_registry import BROADCAST_PEER, FrameRegistry, PeerTasks
from kai_mesh.runtime.messaging.remote import REQUESTS_PER_PEER
from tests.runtime.messaging.test_remote import ask, mesh
from transports.base import Transport
from transports.memory import LinkProfile, MemoryNetwork

A, B = b"a" * 16, b"b" * 16
NO_TRANSPORT: Transport = MemoryNetwork(seed=0).transport(A, "a")


class Counted:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


def registry() -> tuple[FrameRegistry, Counted]:
    counted = Counted()
    return FrameRegistry(PeerTasks(counted), counted), counted


def test_a_type_nobody_registered_is_refused_and_counted_by_name() -> None:
    frames, counted = registry()
    seen: list[bytes] = []
    frames.on(FRAME_SWIM, lambda transport, node_id, data: seen.append(data))
    frames.dispatch(NO_TRANSPORT, A, FRAME_SWIM, b"\x12swim")
    frames.dispatch(NO_TRANSPORT, A, FRAME_STATE, b"\x14state")
    frames.dispatch(NO_TRANSPORT, A, 0x7F, b"\x7f")
    assert seen == [b"\x12swim"]
    assert counted.counts == {"frame.unregistered.STATE": 1, "frame.unregistered.0x7f": 1}


def test_registering_a_type_twice_is_a_programming_error() -> None:
    frames, _ = registry()
    frames.on(FRAME_SWIM, lambda transport, node_id, data: None)
    with pytest.raises(ValueError, match="SWIM"):
        frames.on(FRAME_SWIM, lambda transport, node_id, data: None)
    with pytest.raises(ValueError, match="per_peer"):
        frames.on_task(FRAME_STATE, _never, per_peer=0)
    frames.on_broadcast(FRAME_HEARTBEAT, inline=lambda data: None)
    with pytest.raises(ValueError):
        frames.on_broadcast(FRAME_HEARTBEAT, inline=lambda data: None)
    with pytest.raises(ValueError, match="exactly one"):
        frames.on_broadcast(FRAME_GOVERNANCE)


async def _never(transport: Transport, node_id: bytes, data: bytes) -> None:
    raise AssertionError("not called")


async def test_a_peer_gets_at_most_per_peer_tasks_and_the_rest_are_dropped_and_counted() -> None:
    frames, counted = registry()
    release = trio.Event()
    started: list[tuple[bytes, bytes]] = []

    async def slow(transport: Transport, node_id: bytes, data: bytes) -> None:
        started.append((node_id, data))
        await release.wait()

    frames.on_task(FRAME_STATE, slow, per_peer=2)
    async with trio.open_nursery() as nursery:
        frames.tasks.nursery = nursery
        for k in range(5):
            frames.dispatch(NO_TRANSPORT, A, FRAME_STATE, bytes([FRAME_STATE, k]))
        frames.dispatch(NO_TRANSPORT, B, FRAME_STATE, b"\x14b")  # another peer is not held up
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(started) == [(A, b"\x14\x00"), (A, b"\x14\x01"), (B, b"\x14b")]
        assert counted.counts == {"busy.STATE": 3}
        assert frames.tasks.running(A, "STATE") == 2
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert frames.tasks.running(A, "STATE") == 0
        frames.dispatch(NO_TRANSPORT, A, FRAME_STATE, b"\x14again")  # room again once done
        await trio.testing.wait_all_tasks_blocked()
        assert (A, b"\x14again") in started


async def test_broadcasts_share_one_bucket_and_an_unknown_one_is_refused() -> None:
    frames, counted = registry()
    release = trio.Event()
    got: list[bytes] = []

    async def on_governance(data: bytes) -> None:
        got.append(data)
        await release.wait()

    beats: list[bytes] = []
    frames.on_broadcast(FRAME_GOVERNANCE, task=on_governance, limit=1)
    frames.on_broadcast(FRAME_HEARTBEAT, inline=beats.append)
    async with trio.open_nursery() as nursery:
        frames.tasks.nursery = nursery
        frames.dispatch_broadcast(FRAME_GOVERNANCE, b"\x15one")
        frames.dispatch_broadcast(FRAME_GOVERNANCE, b"\x15two")
        frames.dispatch_broadcast(FRAME_HEARTBEAT, b"\x13beat")
        frames.dispatch_broadcast(FRAME_SWIM, b"\x12")
        frames.dispatch_broadcast(None, b"")
        await trio.testing.wait_all_tasks_blocked()
        assert got == [b"\x15one"] and beats == [b"\x13beat"]
        assert frames.tasks.running(BROADCAST_PEER, "GOVERNANCE") == 1
        assert counted.counts == {"busy.GOVERNANCE": 1, "broadcast.unknown": 2}
        release.set()


async def test_a_router_refuses_a_frame_no_service_registered_and_bounds_requests(
    autojump_clock: object,
) -> None:
    """A router with no state service refuses STATE by name; a peer that floods requests at an
    agent that does not answer has at most REQUESTS_PER_PEER of them served at once."""
    async with mesh(["a", "b"], LinkProfile(latency=0.05)) as peers:
        a, b = peers["a"], peers["b"]
        hold = trio.Event()
        served = 0

        async def stuck(message: StandardMessage, within: float | None) -> StandardMessage:
            nonlocal served
            served += 1
            await hold.wait()
            return b.bus.error_reply(message, "late", "held")

        b.router.local = stuck
        await a.transport.send(b.node_id, bytes([FRAME_STATE]) + b"\x00")
        ends = LinkEnds(sender=a.node_id, receiver=b.node_id)
        for k in range(REQUESTS_PER_PEER + 5):
            await a.transport.send(b.node_id, encode(ask(a, "kai://b/echo", k), link=ends))
        await trio.sleep(1)
        assert b.router.refused.get("frame.unregistered.STATE") == 1
        assert served == REQUESTS_PER_PEER
        assert b.router.counters.get("busy.request") == 5
        hold.set()
        await trio.sleep(1)
        assert b.router.tasks.running(a.node_id, "request") == 0
