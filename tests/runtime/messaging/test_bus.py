"""The local bus: routing, replies, priority order, shedding, timeouts, expiry.

A fake agent directory stands in for the agent host so every interleaving is decided by the test
(agents are tested on their own in test_agents.py); trio's autojump clock makes waits instant.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

from kai_mesh.agents import AgentRequest
from kai_mesh.core.mesh.address import AgentAddress, NodeRef, ServiceAddress, parse_address
from kai_mesh.core.messaging.envelope import Priority, StandardMessage
from kai_mesh.runtime.agents.host import AgentCrashed
from kai_mesh.runtime.messaging.bus import Bus, new_message

NODE_ID = bytes(range(16))
CLIENT = AgentAddress(NodeRef(node_id=bytes(16)), "cli")


class FakeAgents:
    """`echo` answers at once; `gate` holds each request until the test releases it."""

    def __init__(self) -> None:
        self.gate_open = trio.Event()
        self.served: list[Any] = []
        self.gate_started = trio.Event()

    def intents_of(self, name: str) -> frozenset[str] | None:
        return {
            "echo": frozenset({"echo"}),
            "gate": frozenset({"hold"}),
            "broken": frozenset({"boom"}),
        }.get(name)

    def concurrency_of(self, name: str) -> int:
        return 1

    async def call(self, name: str, request: AgentRequest) -> Any:
        if name == "broken":
            raise AgentCrashed("agent broken raised RuntimeError: no")
        if name == "gate":
            self.gate_started.set()
            await self.gate_open.wait()
            self.gate_open = trio.Event()  # one release serves one request
        self.served.append(request.payload)
        return request.payload


def make_bus(agents: FakeAgents, capacity: int = 16) -> tuple[Bus, list[tuple[str, Any]]]:
    events: list[tuple[str, Any]] = []
    bus = Bus(
        node_id=NODE_ID,
        name="pi1",
        agents=agents,
        queue_capacity=capacity,
        on_event=lambda topic, data: events.append((topic, data)),
    )
    return bus, events


def msg(
    to: str, intent: str, payload: Any = None, priority: Priority = Priority.NORMAL, ttl: int = 600
) -> StandardMessage:
    return new_message(
        sender=CLIENT,
        to=parse_address(to),
        intent=intent,
        payload=payload,
        priority=priority,
        ttl=ttl,
        max_ttl=3600,
    )


async def test_echo_reply_is_addressed_back_with_reply_to() -> None:
    agents = FakeAgents()
    bus, events = make_bus(agents)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        request = msg("kai://pi1/echo", "echo", {"x": 1})
        reply = await bus.request(request)
        assert reply.intent == "reply" and reply.payload == {"x": 1}
        assert reply.reply_to == request.message_id and reply.to == CLIENT
        assert reply.sender == AgentAddress(NodeRef(node_id=NODE_ID), "echo")
        by_id = await bus.request(msg(f"kai://{NODE_ID.hex()}/echo", "echo", 2))
        by_service = await bus.request(msg("kai://svc/echo", "echo", 3))
        assert (by_id.payload, by_service.payload) == (2, 3)
        assert events[0][0] == "messages" and events[0][1]["outcome"] == "reply"
        nursery.cancel_scope.cancel()


async def test_refusals_are_error_replies_with_reasons() -> None:
    bus, _ = make_bus(FakeAgents())
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        cases = {
            "kai://elsewhere/echo": ("echo", "unknown_node"),
            "kai://pi1/nobody": ("echo", "no_such_agent"),
            "kai://pi1/echo": ("shout", "unknown_intent"),
            "kai://pi1/broken": ("boom", "agent_error"),
        }
        for to, (intent, code) in cases.items():
            reply = await bus.request(msg(to, intent))
            assert reply.intent == "error", to
            assert reply.payload["code"] == code and reply.payload["message"]
        assert bus.counters["errors"] == 4
        nursery.cancel_scope.cancel()


Sender = Callable[[Any, Priority], Awaitable[None]]


async def _occupy_gate(
    bus: Bus, agents: FakeAgents, nursery: trio.Nursery, replies: dict[Any, StandardMessage]
) -> Sender:
    """Put one request in the gate's only slot; return a sender that records replies."""

    async def send(payload: Any, priority: Priority) -> None:
        replies[payload] = await bus.request(msg("kai://pi1/gate", "hold", payload, priority))

    nursery.start_soon(send, "first", Priority.LOW)
    await agents.gate_started.wait()
    return send


async def test_higher_priorities_overtake_queued_lower_ones() -> None:
    agents = FakeAgents()
    bus, _ = make_bus(agents)
    replies: dict[Any, StandardMessage] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        send = await _occupy_gate(bus, agents, nursery, replies)
        order = [
            ("a", Priority.LOW),
            ("b", Priority.LOW),
            ("c", Priority.NORMAL),
            ("d", Priority.HIGH),
            ("e", Priority.CRITICAL),
            ("f", Priority.HIGH),
        ]
        for payload, priority in order:
            nursery.start_soon(send, payload, priority)
            await trio.testing.wait_all_tasks_blocked()
        assert len(bus.queue_depths()) == 1 and bus.queue_depths()["gate"] == 6
        while len(replies) < 7:
            agents.gate_open.set()
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert agents.served == ["first", "e", "d", "f", "c", "a", "b"]
    assert all(r.intent == "reply" for r in replies.values())


async def test_full_queue_sheds_lowest_newest_and_never_critical() -> None:
    agents = FakeAgents()
    bus, _ = make_bus(agents, capacity=2)
    replies: dict[Any, StandardMessage] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        send = await _occupy_gate(bus, agents, nursery, replies)
        for payload, priority in [
            ("low1", Priority.LOW),
            ("low2", Priority.LOW),
            ("normal", Priority.NORMAL),
            ("low3", Priority.LOW),
        ]:
            nursery.start_soon(send, payload, priority)
            await trio.testing.wait_all_tasks_blocked()
        # low2 was shed for `normal`; low3 found nothing lower than itself and was refused.
        assert replies["low2"].payload["code"] == "overloaded"
        assert replies["low3"].payload["code"] == "overloaded"
        for i in range(5):  # criticals beyond capacity: never shed
            nursery.start_soon(send, f"crit{i}", Priority.CRITICAL)
            await trio.testing.wait_all_tasks_blocked()
        assert replies["low1"].payload["code"] == "overloaded"  # made room for a critical
        assert replies["normal"].payload["code"] == "overloaded"
        assert bus.queue_depths()["gate"] == 5
        while len(replies) < 10:
            agents.gate_open.set()
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    for i in range(5):
        assert replies[f"crit{i}"].intent == "reply"
    assert bus.counters["shed"] == 4


async def test_timeouts_and_expiry_give_error_replies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    agents = FakeAgents()
    bus, _ = make_bus(agents)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        served_first = await bus.request(msg("kai://pi1/gate", "hold", "slow"), reply_within=5)
        assert served_first.payload["code"] == "timeout"
        queued: list[StandardMessage] = []

        async def hold_then_queue() -> None:
            queued.append(await bus.request(msg("kai://pi1/gate", "hold", "q"), reply_within=5))

        agents.gate_started = trio.Event()
        nursery.start_soon(bus.request, msg("kai://pi1/gate", "hold", "occupier"))
        await agents.gate_started.wait()
        await hold_then_queue()
        assert queued[0].payload["code"] == "timeout"
        agents.gate_open.set()  # the occupier finishes; the abandoned "q" must not be served
        await trio.testing.wait_all_tasks_blocked()
        assert agents.served == ["occupier"]
        nursery.cancel_scope.cancel()


def test_reply_to_a_service_comes_from_the_agent_serving_it() -> None:
    bus, _ = make_bus(FakeAgents())
    request = msg("kai://svc/echo", "echo", 1)
    reply = bus.reply(request, "reply", 1)
    assert reply.sender == AgentAddress(NodeRef(node_id=NODE_ID), "echo")
    assert isinstance(request.to, ServiceAddress)
    assert reply.expires_at > reply.timestamp and len(reply.message_id) == 8
    assert reply.message_id != request.message_id
