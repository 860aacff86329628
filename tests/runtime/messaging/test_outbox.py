"""Messages that must arrive, and who is alive: routers with a store, an outbox and liveness,
joined by the simulated transport, on trio's autojump clock.

What a partition, a restart of the sender and lost acks do to a message, and that a silent node is
declared failed and a returning one recovered. The stores are real sqlite files (a restart must
find what the crash left) called inline (`runtime.blocking.inline`): a worker thread would let the
mock clock jump while sqlite works. The same paths over real Reticulum between namespaces are in
tests/netns/test_delivery.py.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from kai_mesh.core.errors import UsageError
from kai_mesh.core.mesh.address import AgentAddress, NodeRef, parse_address
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.batch import decode_batch
from kai_mesh.core.messaging.envelope import (
    EnvelopeDecoder,
    LinkEnds,
    Priority,
    StandardMessage,
    encode,
)
from kai_mesh.core.messaging.frames import FRAME_BATCH, FRAME_ENVELOPE, encode_deliver
from kai_mesh.core.messaging.name_claims import CLAIM_KIND, NameClaim, claim_name
from kai_mesh.core.messaging.retry import RetryPolicy
from kai_mesh.runtime.agents.host import AgentHost, AgentSpec
from kai_mesh.runtime.blocking import inline
from kai_mesh.runtime.messaging.bus import Bus, new_message
from kai_mesh.runtime.messaging.remote import RemoteRouter
from kai_mesh.runtime.store import Store
from kai_mesh.runtime.wiring import wire_delivery
from transports.base import MessageReceived
from transports.memory import LinkProfile, MemoryNetwork, MemoryTransport

MESH = b"d" * 32
FAST = RetryPolicy(base=0.2, cap=0.5, handoff_after=3600)
LINK = LinkProfile(latency=0.005)


@dataclass
class Node:
    name: str
    secrets: NodeSecrets
    store_path: Path
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    router: RemoteRouter | None = None
    store: Store | None = None
    scope: trio.CancelScope | None = None
    stopped: trio.Event = field(default_factory=trio.Event)

    @property
    def node_id(self) -> bytes:
        return self.secrets.node_id

    def emit(self, topic: str, data: dict[str, Any]) -> None:
        self.events.append((topic, data))

    def topics(self, topic: str, event: str) -> list[dict[str, Any]]:
        return [d for t, d in self.events if t == topic and d.get("event") == event]


class Mesh:
    policy = FAST
    store_and_forward: Any = None

    def __init__(self, tmp: Path, names: list[str], nursery: trio.Nursery) -> None:
        self.net = MemoryNetwork(seed=7)
        self.nodes = {n: Node(n, NodeSecrets.generate(os.urandom), tmp / f"{n}.db") for n in names}
        self.keys = {n.node_id: n.secrets.verify_key for n in self.nodes.values()}
        self.nursery = nursery
        self.transports: dict[str, MemoryTransport] = {}

    async def start(self, name: str) -> Node:
        node = self.nodes[name]
        node.scope = await self.nursery.start(self._run, node)
        return node

    def stop(self, name: str) -> None:
        """As a crash: the router's tasks are cancelled, the store is not closed cleanly."""
        node = self.nodes[name]
        assert node.scope is not None
        node.scope.cancel()

    async def restart(self, name: str) -> Node:
        """A crash (`stop`), then a start once the crashed run is over."""
        node = self.nodes[name]
        self.stop(name)
        with trio.fail_after(5):
            await node.stopped.wait()
        return await self.start(name)

    async def _run(self, node: Node, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        node.stopped = trio.Event()
        try:
            await self._serve(node, task_status)
        finally:
            node.stopped.set()

    async def _serve(self, node: Node, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            node.store = Store(node.store_path, run_sync=inline)
            host = AgentHost([AgentSpec(name="echo", source="entry:echo")], on_event=_ignore)
            bus = Bus(
                node_id=node.node_id,
                name=node.name,
                agents=host,
                queue_capacity=8,
                on_event=_ignore,
            )
            if node.name not in self.transports:  # a restart runs the same endpoint again
                self.transports[node.name] = self.net.transport(node.node_id, node.name)
            transport = self.transports[node.name]
            decoder = EnvelopeDecoder(
                mesh_id=MESH, max_bytes=4096, max_ttl=3600, verify_key_for=self.keys.get
            )
            router = RemoteRouter(
                node_id=node.node_id,
                transports=[transport],
                decoder=decoder,
                local=bus.request,
                error_reply=bus.error_reply,
            )
            bus.remote = router.request
            if self.store_and_forward is not None:
                router.store_and_forward = self.store_and_forward
            wire_delivery(
                router,
                node.store,
                secrets=node.secrets,
                mesh_id=MESH,
                keys=self.keys,
                emit=node.emit,
                policy=self.policy,
                liveness_share=1.0,
                announce_share=1.0,
                name=node.name,
                rng=random.Random(1),
            )
            node.router = router
            async with trio.open_nursery() as nursery:
                await nursery.start(host.run)
                await nursery.start(bus.serve)
                await nursery.start(router.run)
                task_status.started(scope)
                await trio.sleep_forever()
        node.store._db.close()  # a crash: no clean-shutdown marker


@asynccontextmanager
async def mesh(tmp: Path, names: list[str], **options: Any) -> AsyncIterator[Mesh]:
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        m = Mesh(tmp, names, nursery)
        for key, value in options.items():
            setattr(m, key, value)
        for name in names:
            await m.start(name)
        m.net.full([m.nodes[n].node_id for n in names], LINK)
        yield m
        nursery.cancel_scope.cancel()


def _ignore(topic: str, data: object) -> None:
    pass


def message(src: Node, to: str, payload: object) -> StandardMessage:
    return new_message(
        sender=AgentAddress(NodeRef(node_id=src.node_id), "cli"),
        to=parse_address(to),
        intent="echo",
        payload=payload,
        ttl=600,
        max_ttl=3600,
    )


async def wait_for(predicate: Any, within: float = 10.0) -> None:
    """Until `predicate()` holds, at most `within` simulated seconds. Polling: the conditions
    live in sqlite and in counters that no event announces; on the mock clock a poll costs no
    real time, and 20 ms of simulated time is finer than anything these tests measure."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.02)


def row_state(node: Node, message_id: bytes) -> str | None:
    assert node.store is not None
    row = node.store.outbox_get(message_id)
    return None if row is None else row.state


async def test_a_message_sent_into_a_partition_arrives_after_the_heal(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    async with mesh(tmp_path, ["a", "b"]) as m:
        a, b = m.nodes["a"], m.nodes["b"]
        m.net.partition([a.node_id], [b.node_id])
        msg = message(a, f"kai://{b.node_id.hex()}/echo", {"n": 1})
        assert a.router is not None
        queued = await a.router.submit(msg)
        assert queued["queued"] == "outbox"
        assert row_state(a, msg.message_id) == "waiting"  # committed before the answer
        await wait_for(lambda: (a.store.outbox_get(msg.message_id).attempts or 0) >= 2)  # type: ignore[union-attr]
        row = a.store.outbox_get(msg.message_id)  # type: ignore[union-attr]
        assert row is not None and row.last_error  # says why it waits
        m.net.heal()
        await wait_for(lambda: row_state(a, msg.message_id) == "delivered", within=5)
        await wait_for(lambda: a.store.outbox_get(msg.message_id).reply is not None)  # type: ignore[union-attr]
        assert [e["message_id"] for e in a.topics("outbox", "delivered")] == [msg.message_id.hex()]


async def test_a_heal_is_noticed_at_once_not_when_the_backoff_runs_out(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    """With a backoff of a minute, the message still arrives within a few heartbeats of the heal:
    hearing from the recipient again retries at once (the outbox's heard-from path)."""
    slow = RetryPolicy(base=60.0, cap=600.0, handoff_after=3600)
    async with mesh(tmp_path, ["a", "b"], policy=slow) as m:
        a, b = m.nodes["a"], m.nodes["b"]
        assert a.router is not None and a.router.outbox is not None
        assert a.router.liveness is not None and a.store is not None
        outbox, beat = a.router.outbox, a.router.liveness.heartbeat_interval
        m.net.partition([a.node_id], [b.node_id])
        msg = message(a, f"kai://{b.node_id.hex()}/echo", "after the heal")
        await a.router.submit(msg)
        await wait_for(lambda: a.store.outbox_get(msg.message_id).attempts >= 1)  # type: ignore[union-attr]
        row = a.store.outbox_get(msg.message_id)
        assert row is not None and row.attempts == 1 and row.last_error  # no path to b
        await trio.sleep(2 * beat)  # the partition lasts a while
        m.net.heal()
        healed = trio.current_time()
        due = outbox.scheduler.due(msg.message_id)
        assert due is not None and due - healed > 30  # the backoff alone would wait this long
        await wait_for(lambda: row_state(a, msg.message_id) == "delivered", within=4 * beat)
        assert trio.current_time() - healed < 3 * beat


async def test_a_retried_message_is_served_once_and_acknowledged_every_time(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    async with mesh(tmp_path, ["a", "b"]) as m:
        a, b = m.nodes["a"], m.nodes["b"]
        assert a.router is not None and b.router is not None and b.store is not None
        msg = message(a, f"kai://{b.node_id.hex()}/echo", "once")
        await a.router.submit(msg)
        await wait_for(lambda: row_state(a, msg.message_id) == "delivered")
        # The same DELIVER frame again, as a retry whose ack was lost would be.
        data = encode(msg, link=LinkEnds(sender=a.node_id, receiver=b.node_id))
        for _ in range(3):
            await a.router.send_frame(b.node_id, encode_deliver(data), Priority.NORMAL)
        await wait_for(lambda: b.router.counters.get("duplicates", 0) == 3)  # type: ignore[union-attr]
        assert b.store.seen_count() == 1
        # The echo answered once: a's router kept one reply and refused no duplicate reply.
        await trio.sleep(0.2)
        assert a.router.counters["replies"] == 1
        assert not b.store.inbox_rows(now=0)  # served: nothing left to serve after a restart


async def test_the_outbox_survives_a_crash_of_the_sender(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    async with mesh(tmp_path, ["a", "b"]) as m:
        a, b = m.nodes["a"], m.nodes["b"]
        m.net.partition([a.node_id], [b.node_id])
        msg = message(a, f"kai://{b.node_id.hex()}/echo", "after the crash")
        assert a.router is not None
        await a.router.submit(msg)
        m.stop("a")
        await trio.sleep(0.1)
        m.net.heal()
        assert b.store is not None and b.store.seen_count() == 0  # nobody sent it meanwhile
        await m.start("a")
        await wait_for(lambda: row_state(a, msg.message_id) == "delivered")
        assert b.store.seen_count() == 1


async def test_an_expired_message_is_given_up_with_an_event(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    async with mesh(tmp_path, ["a", "b"]) as m:
        a, b = m.nodes["a"], m.nodes["b"]
        m.net.partition([a.node_id], [b.node_id])
        msg = new_message(
            sender=AgentAddress(NodeRef(node_id=a.node_id), "cli"),
            to=parse_address(f"kai://{b.node_id.hex()}/echo"),
            intent="echo",
            payload=None,
            ttl=1,
            max_ttl=3600,
        )
        assert a.router is not None
        await a.router.submit(msg)
        await wait_for(lambda: row_state(a, msg.message_id) == "expired", within=5)
        # The event follows the store's commit (in a thread), so it may come a moment later.
        await wait_for(lambda: bool(a.topics("outbox", "expired")), within=2)


async def test_a_silent_node_is_declared_failed_and_recovers_when_it_returns(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    async with mesh(tmp_path, ["a", "b", "c"]) as m:
        a, c = m.nodes["a"], m.nodes["c"]
        assert a.router is not None and a.router.liveness is not None
        live = a.router.liveness
        await wait_for(lambda: live.counters["heartbeats_heard"] >= 4)
        assert live.statuses()["alive"] == 2
        m.net.partition([a.node_id, m.nodes["b"].node_id], [c.node_id])
        bound = live.detector.config.detection_bound(members=3, link_rtt=None, bitrate=None)
        with trio.fail_after(bound + 5):
            await wait_for(lambda: a.topics("peers", "peer_failed"), within=bound + 5)
        assert a.topics("peers", "peer_failed")[0]["node_id"] == c.node_id.hex()
        assert not [e for e in a.topics("peers", "peer_failed") if e["node_id"] != c.node_id.hex()]
        m.net.heal()
        await wait_for(lambda: a.topics("peers", "peer_recovered"), within=10)
        assert live.statuses()["alive"] == 2


async def test_an_unacknowledged_message_is_also_left_with_store_and_forward(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    """The propagation node is played by a list: what was left there is handed to b's router as
    LXMF would, while a and b are still apart; b serves it once and acknowledges the direct retry
    after the heal."""
    left: list[tuple[bytes, bytes]] = []

    async def propagation(node_id: bytes, data: bytes) -> bool:
        left.append((node_id, data))
        return True

    policy = RetryPolicy(base=0.2, cap=0.5, handoff_after=1.0)
    async with mesh(tmp_path, ["a", "b"], policy=policy, store_and_forward=propagation) as m:
        a, b = m.nodes["a"], m.nodes["b"]
        assert a.router is not None and b.router is not None and b.store is not None
        m.net.partition([a.node_id], [b.node_id])
        msg = message(a, f"kai://{b.node_id.hex()}/echo", "via propagation")
        await a.router.submit(msg)
        await wait_for(lambda: a.topics("outbox", "handed_off"), within=5)
        assert a.store.outbox_get(msg.message_id).handed_off  # type: ignore[union-attr]
        assert len(left) == 1 and left[0][0] == b.node_id
        b.router._on_frame(m.transports["b"], MessageReceived(node_id=a.node_id, data=left[0][1]))
        await wait_for(lambda: b.store.seen_count() == 1)  # type: ignore[union-attr]
        assert row_state(a, msg.message_id) == "waiting"  # b's ack could not cross the partition
        m.net.heal()
        await wait_for(lambda: row_state(a, msg.message_id) == "delivered")
        assert b.router.counters.get("duplicates", 0) >= 1  # the direct retry: acked, not served
        assert len(left) == 1  # handed over once


async def test_no_reply_over_a_link_that_swallows_everything_is_queued_for_forwarding(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    """A peer killed a moment ago still looks reachable: the send 'succeeds', nothing comes back.
    With a store-and-forward transport the caller hears 'queued', not 'timeout'."""
    left: list[tuple[bytes, bytes]] = []

    async def propagation(node_id: bytes, data: bytes) -> bool:
        left.append((node_id, data))
        return True

    async with mesh(tmp_path, ["a", "b"], store_and_forward=propagation) as m:
        a, b = m.nodes["a"], m.nodes["b"]
        assert a.router is not None
        m.net.link(a.node_id, b.node_id, LinkProfile(loss=1.0))  # b is gone, the link is not
        reply = await a.router.request(message(a, f"kai://{b.node_id.hex()}/echo", 1), 1.0)
        assert reply.intent == "queued" and reply.payload["queued"] == "lxmf-propagated"
        assert [n for n, _ in left] == [b.node_id]


def stall_agents(node: Node) -> trio.Event:
    """Make the node's agents never finish (as an agent a crash interrupts); set on the first
    message that reaches them."""
    reached = trio.Event()

    async def stuck(message: StandardMessage, within: float | None) -> StandardMessage:
        reached.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    assert node.router is not None
    node.router.local = stuck
    return reached


async def test_a_message_acknowledged_before_a_crash_is_served_after_the_restart(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    """b acks once the message is in its inbox; b crashes while its agent works on it. a holds the
    message delivered and sends it no more, so b serves it again from its inbox when it starts."""
    async with mesh(tmp_path, ["a", "b"]) as m:
        a, b = m.nodes["a"], m.nodes["b"]
        assert a.router is not None and a.store is not None
        reached = stall_agents(b)
        msg = message(a, f"kai://{b.node_id.hex()}/echo", "across the crash")
        await a.router.submit(msg)
        await wait_for(lambda: row_state(a, msg.message_id) == "delivered")
        with trio.fail_after(5):
            await reached.wait()
        await m.restart("b")
        await wait_for(lambda: a.store.outbox_get(msg.message_id).reply is not None)  # type: ignore[union-attr]
        await wait_for(lambda: not b.store.inbox_rows(now=0))  # type: ignore[union-attr]
        assert b.router is not None and b.router.counters["inbox_reserved"] == 1
        assert b.router.counters.get("duplicates", 0) == 0  # a did not send it again
        await wait_for(lambda: a.router.counters["replies"] >= 1)  # type: ignore[union-attr]
        await trio.sleep(0.2)  # a second answer would have come by now
        assert a.router.counters["replies"] == 1


async def test_a_message_served_again_waits_for_its_sender_to_be_reachable(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    """After the restart b knows no route to a: the reply waits (with backoff) until the heal."""
    async with mesh(tmp_path, ["a", "b"]) as m:
        a, b = m.nodes["a"], m.nodes["b"]
        assert a.router is not None and a.store is not None
        reached = stall_agents(b)
        msg = message(a, f"kai://{b.node_id.hex()}/echo", "after the heal")
        await a.router.submit(msg)
        await wait_for(lambda: row_state(a, msg.message_id) == "delivered")
        with trio.fail_after(5):
            await reached.wait()
        m.net.partition([a.node_id], [b.node_id])
        await m.restart("b")
        await wait_for(lambda: b.router.counters.get("inbox_reserved") == 1)  # type: ignore[union-attr]
        await trio.sleep(1.0)  # several tries (FAST: 0.2 s, then 0.4, 0.5) into the partition
        assert b.store is not None and len(b.store.inbox_rows(now=0)) == 1  # not given up
        assert a.store.outbox_get(msg.message_id).reply is None  # type: ignore[union-attr]
        m.net.heal()
        await wait_for(lambda: a.store.outbox_get(msg.message_id).reply is not None)  # type: ignore[union-attr]
        await wait_for(lambda: not b.store.inbox_rows(now=0))  # type: ignore[union-attr]
        # The router counts the reply once the outbox's store call (a thread) has returned,
        # a moment after the row shows it.
        await wait_for(lambda: a.router.counters["replies"] >= 1)  # type: ignore[union-attr]
        await trio.sleep(0.2)  # a second answer would have come by now
        assert a.router.counters["replies"] == 1


async def test_must_arrive_to_a_member_not_heard_now_is_queued_by_name(tmp_path: Path) -> None:
    """A node restarted after a crash has heard nobody yet: a must-arrive message to a member
    named as before is queued, not refused as an unknown node; a name never heard still is."""
    async with mesh(tmp_path, ["a", "b"]) as m:
        a, b = m.nodes["a"], m.nodes["b"]
        assert a.router is not None
        await wait_for(lambda: any(p.name == "b" for p in a.router.peers()))  # type: ignore[union-attr]
        m.net.partition([a.node_id], [b.node_id])
        a = await m.restart("a")
        assert a.router is not None and a.router.peers() == []
        msg = message(a, "kai://b/echo", "while away")
        queued = await a.router.submit(msg)
        assert queued["queued"] == "outbox" and queued["node_id"] == b.node_id.hex()
        with pytest.raises(UsageError, match="no known node 'c'"):
            await a.router.submit(message(a, "kai://c/echo", "nobody"))
        m.net.heal()
        await wait_for(lambda: row_state(a, msg.message_id) == "delivered")


@asynccontextmanager
async def line(tmp: Path, names: list[str]) -> AsyncIterator[Mesh]:
    """As `mesh`, but linked in a line (a - c - b for ["a", "c", "b"]): the ends never hear
    each other directly."""
    async with trio.open_nursery() as nursery:
        m = Mesh(tmp, names, nursery)
        for name in names:
            await m.start(name)
        m.net.line([m.nodes[n].node_id for n in names], LINK)
        yield m
        nursery.cancel_scope.cancel()


async def test_must_arrive_by_name_to_a_member_never_heard_is_queued(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    """a never hears b (a - c - b), yet learns b's own signed name claim through c; restarted
    and cut off, a queues a must-arrive message to `kai://b/...` by name, and it is delivered
    once a and b are linked. A name no member claims is still refused."""
    async with line(tmp_path, ["a", "c", "b"]) as m:
        a, b = m.nodes["a"], m.nodes["b"]
        assert a.router is not None
        await wait_for(lambda: a.router.names.lookup("b") == b.node_id)  # type: ignore[union-attr]
        m.net.partition([a.node_id], [m.nodes["c"].node_id, b.node_id])
        a = await m.restart("a")
        assert a.router is not None and a.router.peers() == []
        assert "b" not in a.router._known_names()  # never heard: only b's claim names it
        msg = message(a, "kai://b/echo", "never heard")
        queued = await a.router.submit(msg)
        assert queued["queued"] == "outbox" and queued["node_id"] == b.node_id.hex()
        with pytest.raises(UsageError, match="no known node 'nobody'"):
            await a.router.submit(message(a, "kai://nobody/echo", "x"))
        m.net.heal()
        m.net.link(a.node_id, b.node_id, LINK)
        await wait_for(lambda: row_state(a, msg.message_id) == "delivered", within=30)


async def test_a_name_claim_is_kept_only_under_its_members_key(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    """c cannot name b (a claim for b's id signed by c is refused), and when c claims b's
    name for itself the name is refused as ambiguous rather than resolved to either."""
    async with line(tmp_path, ["a", "c", "b"]) as m:
        a, b, c = m.nodes["a"], m.nodes["b"], m.nodes["c"]
        assert a.router is not None and a.router.names is not None
        await wait_for(lambda: a.router.names.lookup("b") == b.node_id)  # type: ignore[union-attr]
        body = NameClaim(b.node_id, "mallory", b"").body()
        forged = NameClaim(b.node_id, "mallory", c.secrets.sign(CLAIM_KIND, MESH, body))
        assert a.router.names.take([forged]) == []
        assert a.router.refused["name_claims.bad_signature"] == 1
        assert a.router.names.lookup("b") == b.node_id
        squat = claim_name(c.secrets, "b", MESH)
        assert a.router.names.take([squat]) == [squat]  # c's own claim: valid, for c
        m.net.partition([a.node_id], [c.node_id, b.node_id])
        with pytest.raises(UsageError, match="two members claim the name 'b'"):
            await a.router.submit(message(a, "kai://b/echo", "whose?"))


def slow_agents(node: Node, seconds: float) -> None:
    """Make every request `node` serves take `seconds` (an agent that stalls): its DELIVER slots
    stay full while it serves."""
    assert node.router is not None
    real = node.router._answer

    async def slow(node_id: bytes, message: StandardMessage) -> StandardMessage:
        await trio.sleep(seconds)
        return await real(node_id, message)

    node.router._answer = slow  # type: ignore[method-assign]


async def test_a_busy_recipient_is_not_stormed_with_retries(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    """b's agent takes 2 s a message and b serves 8 of a's at once, dropping the rest as busy:
    b says BUSY, a's window shrinks, and the 60 messages arrive in ~3 attempts each, in the
    same 15 s (without the BUSY answer: 1,212 attempts, 20 per message, each on a fresh link)."""
    async with mesh(tmp_path, ["a", "b"]) as m:
        a, b = m.nodes["a"], m.nodes["b"]
        assert a.router is not None and b.router is not None and a.router.outbox is not None
        slow_agents(b, 2.0)
        msgs = [message(a, f"kai://{b.node_id.hex()}/echo", i) for i in range(60)]
        for msg in msgs:
            await a.router.submit(msg)
        await wait_for(
            lambda: all(row_state(a, msg.message_id) == "delivered" for msg in msgs), within=120
        )
        attempts = a.router.outbox.counters["attempts"]
        assert b.router.counters.get("busy.deliver", 0) > 0  # b was busy, and said so
        assert a.router.outbox.counters["busy"] > 0
        assert attempts <= 4 * len(msgs), attempts  # measured: 181 (1,212 without BUSY)
        assert b.store is not None and b.store.seen_count() == len(msgs)


def lose_first_reply(node: Node) -> list[bytes]:
    """Make `node`'s transport lose the first packet it sends that holds an envelope (a reply),
    alone or in a batch with other frames; returns what it lost."""
    transport = m_transport(node)
    real = transport.send
    lost: list[bytes] = []

    async def lossy(node_id: bytes, data: bytes) -> None:
        frames = decode_batch(data) if data[0] == FRAME_BATCH else [data]
        if not lost and any(f[0] == FRAME_ENVELOPE for f in frames):
            lost.append(data)
            return
        await real(node_id, data)

    transport.send = lossy  # type: ignore[method-assign]
    return lost


def m_transport(node: Node) -> MemoryTransport:
    assert node.router is not None
    transport = node.router.transports[0]
    assert isinstance(transport, MemoryTransport)
    return transport


async def test_a_reply_lost_after_the_ack_is_asked_for_and_kept(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    """The ack proves delivery, but the reply travels as an ordinary message: when it is lost,
    the sender asks for it (as for a plain request's reply) instead of keeping a row delivered
    without its answer for ever; the agent is not run again."""
    async with mesh(tmp_path, ["a", "b"]) as m:
        a, b = m.nodes["a"], m.nodes["b"]
        assert a.router is not None and b.router is not None and a.store is not None
        lost = lose_first_reply(b)
        msg = message(a, f"kai://{b.node_id.hex()}/echo", {"reply": "lost once"})
        await a.router.submit(msg)
        await wait_for(lambda: row_state(a, msg.message_id) == "delivered")
        await wait_for(lambda: a.store.outbox_get(msg.message_id).reply is not None, within=30)  # type: ignore[union-attr]
        assert lost
        assert a.router.counters["asks_sent"] >= 1
        assert b.router.counters["replies_resent"] == 1
        assert b.router.counters.get("duplicates", 0) <= 1  # a retry if the ack went with it
        assert b.store is not None and b.store.seen_count() == 1
        await trio.sleep(10)
        assert a.router.outbox is not None and not a.router.outbox.unreplied
        assert "late_replies_given_up" not in a.router.counters


async def test_a_reply_the_recipient_forgot_is_asked_for_no_more(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    """b restarts after the reply was lost, forgetting it: its answer UNKNOWN ends the asking at
    once (the message is not sent again: it was delivered and served)."""
    async with mesh(tmp_path, ["a", "b"]) as m:
        a, b = m.nodes["a"], m.nodes["b"]
        assert a.router is not None and a.store is not None
        lost = lose_first_reply(b)
        msg = message(a, f"kai://{b.node_id.hex()}/echo", "forgotten")
        await a.router.submit(msg)
        await wait_for(lambda: row_state(a, msg.message_id) == "delivered")
        await wait_for(lambda: bool(lost))
        b = await m.restart("b")
        await wait_for(lambda: a.router.counters.get("late_replies_given_up") == 1, within=30)  # type: ignore[union-attr]
        assert a.router.counters["asks_sent"] == 1
        assert a.store.outbox_get(msg.message_id).reply is None  # type: ignore[union-attr]
        assert b.router is not None and b.router.counters["received"] == 0  # not sent again
