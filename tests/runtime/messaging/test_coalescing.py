"""Coalescing (issue 17 item 1): frames that queue for a peer while a packet to it is being sent
leave together in one BATCH frame up to the packet's room; a lone frame leaves at once as itself;
`critical` goes first; the receiver handles each frame as if it had come alone."""

from __future__ import annotations

import trio
import trio.testing

from kai_mesh.core.errors import TransportError
from kai_mesh.core.messaging.batch import FRAME_BATCH, decode_batch, encode_batch
from kai_mesh.core.messaging.envelope import Priority
from kai_mesh.core.messaging.frames import FRAME_ACKS
from kai_mesh.runtime.messaging.egress import Egress
from tests.runtime.messaging.test_remote import ask, mesh
from transports.base import Abilities, InterfaceInfo, PeerInfo, TransportBase
from transports.memory import LinkProfile

PEER = b"p" * 16


class _Wire(TransportBase):
    """A fast interface (no lane) whose sends take `delay` seconds each and may fail."""

    name = "wire"
    abilities = Abilities(live_links=True, packets=True)

    def __init__(self, room: int = 430, delay: float = 1.0) -> None:
        self.room, self.delay = room, delay
        self.sent: list[bytes] = []
        self.fail = False

    def interfaces(self) -> list[InterfaceInfo]:
        return [InterfaceInfo(name="lan", kind="UDPInterface", mtu=500, bitrate=None, online=True)]

    def peers(self) -> list[PeerInfo]:
        return [PeerInfo(node_id=PEER, name=None, hops=1, interface="lan", last_heard=0, rtt=None)]

    def packet_room(self, node_id: bytes) -> int:
        return self.room

    async def send(self, node_id: bytes, data: bytes) -> None:
        await trio.sleep(self.delay)
        if self.fail:
            raise TransportError("no link")
        self.sent.append(data)


def frame(tag: int, size: int = 100) -> bytes:
    return bytes([FRAME_ACKS, tag]) + bytes(size - 2)


async def send_all(egress: Egress, wire: _Wire, frames: list[tuple[bytes, Priority]]) -> None:
    async with trio.open_nursery() as nursery:
        for data, priority in frames:
            nursery.start_soon(egress.send, wire, PEER, data, priority)
            await trio.testing.wait_all_tasks_blocked()


async def test_a_lone_frame_leaves_at_once_as_itself(autojump_clock: object) -> None:
    wire = _Wire()
    egress = Egress([wire], lambda interface: None)  # type: ignore[list-item]
    async with trio.open_nursery() as nursery:
        await nursery.start(egress.run)
        started = trio.current_time()
        await egress.send(wire, PEER, frame(1), Priority.NORMAL)  # type: ignore[arg-type]
        assert trio.current_time() - started == wire.delay  # no wait for company
        assert wire.sent == [frame(1)]
        nursery.cancel_scope.cancel()


async def test_what_queues_behind_a_packet_leaves_packed_critical_first(
    autojump_clock: object,
) -> None:
    wire = _Wire(room=1 + 3 * 101)  # three 100-byte frames per packet
    egress = Egress([wire], lambda interface: None)  # type: ignore[list-item]
    async with trio.open_nursery() as nursery:
        await nursery.start(egress.run)
        queued = [(frame(k), Priority.NORMAL) for k in range(5)] + [(frame(9), Priority.CRITICAL)]
        await send_all(egress, wire, queued)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()
    # The first went alone; the five that queued meanwhile went in two packets, critical first.
    assert wire.sent[0] == frame(0)
    assert [decode_batch(p) for p in wire.sent[1:]] == [
        [frame(9), frame(1), frame(2)],
        [frame(3), frame(4)],
    ]
    assert all(len(p) <= wire.room for p in wire.sent)


async def test_a_failed_send_fails_what_queued_behind_it_and_a_given_up_frame_is_dropped(
    autojump_clock: object,
) -> None:
    wire = _Wire()
    wire.fail = True
    egress = Egress([wire], lambda interface: None)  # type: ignore[list-item]
    outcomes: list[str] = []

    async def one(data: bytes) -> None:
        try:
            await egress.send(wire, PEER, data, Priority.NORMAL)  # type: ignore[arg-type]
            outcomes.append("sent")
        except TransportError as exc:
            outcomes.append(str(exc))

    async with trio.open_nursery() as nursery:
        await nursery.start(egress.run)
        async with trio.open_nursery() as senders:
            for k in range(4):
                senders.start_soon(one, frame(k))
                await trio.testing.wait_all_tasks_blocked()
        assert outcomes == ["no link"] * 4
        assert trio.current_time() < 1.5  # one attempt, not four in a row
        wire.fail = False

        async def give_up(data: bytes) -> None:
            with trio.move_on_after(0.5):
                await egress.send(wire, PEER, data, Priority.NORMAL)  # type: ignore[arg-type]

        async with trio.open_nursery() as senders:
            # A gives up while its own frame is being sent: it is not sent, but B's frame,
            # queued behind it, still goes.
            senders.start_soon(give_up, frame(20))
            await trio.testing.wait_all_tasks_blocked()
            senders.start_soon(one, frame(21))
        assert wire.sent == [frame(21)]
        async with trio.open_nursery() as senders:
            # C's frame is on its way; D queues behind it and gives up: D's is left out.
            senders.start_soon(one, frame(30))
            await trio.testing.wait_all_tasks_blocked()
            senders.start_soon(give_up, frame(31))
            await trio.testing.wait_all_tasks_blocked()
            senders.start_soon(one, frame(32))
        nursery.cancel_scope.cancel()
    assert wire.sent == [frame(21), frame(30), frame(32)]


async def test_echoes_over_a_memory_link_share_packets_and_all_arrive(
    autojump_clock: object,
) -> None:
    async with mesh(["a", "b"], LinkProfile(latency=0.05)) as peers:
        a, b = peers["a"], peers["b"]
        replies: list[object] = []

        async def echo(k: int) -> None:
            reply = await a.bus.request(ask(a, "kai://b/echo", {"k": k}), 10)
            assert reply.intent == "reply", reply.payload
            replies.append(reply.payload)

        async with trio.open_nursery() as nursery:
            for k in range(40):
                nursery.start_soon(echo, k)
        assert sorted(r["k"] for r in replies) == list(range(40))  # type: ignore[index]
        assert b.router.counters.get("batches_received", 0) >= 1
        assert a.transport.counters()["sent"] < 40  # fewer packets than requests
        # More arrived at once than b serves for one peer: those were dropped as busy, asked
        # for, sent again and served (not refused as replays of themselves).
        assert b.router.counters["busy.request"] > 0
        assert b.router.counters["received"] == 40 + b.router.counters["busy.request"]
        assert "envelope.replay" not in b.router.refused


async def test_a_batch_is_unpacked_with_the_refusals_of_single_frames(
    autojump_clock: object,
) -> None:
    async with mesh(["a", "b"], LinkProfile(latency=0.05)) as peers:
        a, b = peers["a"], peers["b"]
        router, transport = b.router, b.transport
        good = bytes([FRAME_ACKS]) + b"m" * 8  # an ack for a message b never sent: ignored
        router.frames.dispatch(
            transport, a.node_id, FRAME_BATCH, encode_batch([b"\x02junk", good, b"\x11short"])
        )
        assert router.refused["frame.unknown_version"] == 1  # 0x02 is no frame kind
        assert router.counters["batches_received"] == 1
        router.frames.dispatch(transport, a.node_id, FRAME_BATCH, bytes([FRAME_BATCH, 5, 1]))
        assert router.refused["batch.truncated"] == 1  # refused whole


class _Instant(_Wire):
    """Sends without ever yielding, as a Reticulum packet on an open link does."""

    async def send(self, node_id: bytes, data: bytes) -> None:
        self.sent.append(data)


async def test_frames_made_in_one_scheduler_pass_share_a_packet_even_if_sends_never_block(
    autojump_clock: object,
) -> None:
    wire = _Instant()
    egress = Egress([wire], lambda interface: None)  # type: ignore[list-item]
    async with trio.open_nursery() as nursery:
        await nursery.start(egress.run)
        async with trio.open_nursery() as senders:
            for k in range(5):  # all runnable in the same pass
                senders.start_soon(egress.send, wire, PEER, frame(k), Priority.NORMAL)
        nursery.cancel_scope.cancel()
    # Whichever trio ran first went alone, at once; the four made in that pass, in one packet.
    assert len(wire.sent) == 2 and wire.sent[0][0] != FRAME_BATCH
    assert sorted([wire.sent[0], *decode_batch(wire.sent[1])]) == [frame(k) for k in range(5)]


async def test_a_transfer_larger_than_a_packet_does_not_hold_up_small_frames(
    autojump_clock: object,
) -> None:
    wire = _Wire(room=430, delay=0.0)

    async def slow_send(node_id: bytes, data: bytes) -> None:
        await trio.sleep(60 if len(data) > wire.room else 0.01)  # a Resource on a slow link
        wire.sent.append(data)

    wire.send = slow_send  # type: ignore[method-assign]
    egress = Egress([wire], lambda interface: None)  # type: ignore[list-item]
    async with trio.open_nursery() as nursery:
        await nursery.start(egress.run)
        nursery.start_soon(egress.send, wire, PEER, frame(1, 2000), Priority.NORMAL)
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        await egress.send(wire, PEER, frame(2), Priority.HIGH)  # type: ignore[arg-type]
        assert trio.current_time() - started < 1  # not behind the minute-long transfer
        nursery.cancel_scope.cancel()
