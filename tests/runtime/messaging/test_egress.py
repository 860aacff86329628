"""The egress lanes over a bandwidth-limited simulated link (autojump clock): a `critical`
message overtakes a backlog of `low` ones, a backlog that waits too long is shed with an error to
its sender, and what was sent is accounted against the interface's budget."""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio

from kai_mesh.core.errors import TransportError
from kai_mesh.core.messaging.envelope import Priority
from kai_mesh.runtime.messaging.egress import Egress
from tests.runtime.messaging.test_remote import Peer, ask, mesh
from transports.base import InterfaceInfo, PeerInfo, TransportBase
from transports.memory import LinkProfile

SLOW = LinkProfile(latency=0.01, bandwidth=20_000)  # 20 kbit/s: one 400-byte frame ~0.2 s


async def timed(
    src: Peer, priority: Priority, payload: object, out: list[tuple[float, str]]
) -> None:
    message = replace(ask(src, "kai://b/echo", payload), priority=priority)
    started = trio.current_time()
    reply = await src.bus.request(message, 120)
    outcome = reply.payload["code"] if reply.intent == "error" else "ok"
    out.append((trio.current_time() - started, outcome))


async def test_critical_overtakes_a_low_priority_backlog(autojump_clock: object) -> None:
    async with mesh(["a", "b"], SLOW) as peers:
        a = peers["a"]
        low: list[tuple[float, str]] = []
        critical: list[tuple[float, str]] = []
        async with trio.open_nursery() as nursery:
            for i in range(60):  # ~60 x 0.2 s of airtime each way: a 12 s backlog
                nursery.start_soon(timed, a, Priority.LOW, "x" * 300 + str(i), low)
            await trio.sleep(1.0)
            nursery.start_soon(timed, a, Priority.CRITICAL, "now", critical)
        assert critical[0][1] == "ok"
        assert critical[0][0] < 1.5, critical  # behind at most the frame on the wire each way
        assert max(t for t, _ in low) > 8  # the backlog itself took far longer
        lane = a.router.egress.status()[0]
        assert lane["bitrate"] == 20_000 and lane["sent"]["critical"] == 1
        assert lane["sent"]["low"] == 60 and lane["used_s"] > 0


async def test_a_backlog_that_waits_too_long_is_shed_with_an_error(autojump_clock: object) -> None:
    async with mesh(["a", "b"], SLOW) as peers:
        a = peers["a"]
        low: list[tuple[float, str]] = []
        async with trio.open_nursery() as nursery:
            for i in range(250):  # ~50 s of airtime: beyond the 30 s a low frame may wait
                nursery.start_soon(timed, a, Priority.LOW, "y" * 300 + str(i), low)
        outcomes = [o for _, o in low]
        assert outcomes.count("ok") > 50
        shed = [o for o in outcomes if o != "ok"]
        assert shed and set(shed) == {"overloaded"}, set(shed)
        assert a.router.egress.status()[0]["shed"]["low"] == len(shed)


async def test_a_governance_broadcast_waits_for_airtime_where_a_heartbeat_is_dropped(
    autojump_clock: object,
) -> None:
    async with mesh(["a", "b"], SLOW) as peers:
        router = peers["a"].router
        transport = router.transports[0]
        frame = b"\x15" + b"g" * 300
        # Fill the lane's short window: nothing more fits for a moment.
        for _ in range(20):
            try:
                await router.egress.broadcast(transport, frame, background=False)
            except TransportError:
                break
        else:
            raise AssertionError("the window never filled")
        with pytest.raises(TransportError, match="background airtime"):
            await router.egress.broadcast(transport, frame)  # a heartbeat: dropped at once
        started = trio.current_time()
        await router.egress.broadcast(transport, frame, background=False, wait=10)
        assert 0 < trio.current_time() - started <= 10  # it waited for room, then went


class _Recording(TransportBase):
    """A slow radio interface whose first send to `slow_peer` takes 5 s (a link being set up)."""

    name = "rec"

    def __init__(self, slow_peer: bytes) -> None:
        self.slow_peer = slow_peer
        self.sent: list[tuple[bytes, bytes]] = []
        self._first = True

    def interfaces(self) -> list[InterfaceInfo]:
        return [
            InterfaceInfo(name="radio", kind="RNodeInterface", mtu=500, bitrate=50_000, online=True)
        ]

    def peers(self) -> list[PeerInfo]:
        return [
            PeerInfo(node_id=n, name=None, hops=1, interface="radio", last_heard=0.0, rtt=None)
            for n in (b"s" * 16, b"f" * 16)
        ]

    async def send(self, node_id: bytes, data: bytes) -> None:
        if node_id == self.slow_peer and self._first:
            self._first = False
            await trio.sleep(5)
        self.sent.append((node_id, data))


async def test_frames_to_one_peer_leave_in_order_and_a_slow_peer_holds_up_no_other(
    autojump_clock: object,
) -> None:
    slow, fast = b"s" * 16, b"f" * 16
    transport = _Recording(slow)
    egress = Egress([transport], lambda interface: 1.0)  # type: ignore[list-item]
    async with trio.open_nursery() as nursery:
        await nursery.start(egress.run)
        for k in range(5):
            nursery.start_soon(egress.send, transport, slow, b"s%d" % k, Priority.NORMAL)
            await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(egress.send, transport, fast, b"f0", Priority.NORMAL)
        await trio.sleep(1)
        assert transport.sent == [(fast, b"f0")]  # not behind the slow peer's link
        await trio.sleep(10)
        assert [d for n, d in transport.sent if n == slow] == [b"s%d" % k for k in range(5)]
        nursery.cancel_scope.cancel()
