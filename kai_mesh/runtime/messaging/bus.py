"""The message bus, local part: route a `StandardMessage` to an agent on this node and the reply
back, in priority order. Messages for other nodes are handed to `remote`
(runtime/messaging/remote.py).

Each agent has a `PriorityInbox` and serves at most `concurrency` messages at once. A message that
finds a free slot and an empty inbox is served in the caller's own task — no hand-off, which is
what keeps an in-process round trip to `echo` cheap. Otherwise it waits in the inbox; when a slot
frees, the next message by priority is served in a task of the bus's nursery. When the inbox is
full the core's shedding rule picks a victim, whose sender gets an `overloaded` error reply;
`critical` is never shed.

Every outcome is a reply message: `intent="reply"` with the agent's answer, or `intent="error"`
with `{"code": ..., "message": ...}`. Nothing an agent or a sender does raises out of the bus.
In-process messages are not signed (DESIGN.md: one authentication is enough, and here there is no
third party). Without transports, messages for other nodes get `unknown_node`.

Governance: while a certified emergency shutdown holds (`halted`) every local agent is refused
with code `shutdown`; a message this node sends itself (for any node) that the policy forbids —
`critical` priority when this node's role is not in `critical_roles` — gets `forbidden` and is
counted (`forbidden`). Requests from peers are checked by the remote router, which knows the
sending node from its link.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from kai_mesh.agents import AgentRequest
from kai_mesh.core.mesh.address import AgentAddress, NodeRef, ServiceAddress
from kai_mesh.core.messaging.envelope import MESSAGE_ID_BYTES, Priority, StandardMessage
from kai_mesh.core.messaging.priority_inbox import PriorityInbox
from kai_mesh.runtime.agents.host import AgentError

log = logging.getLogger(__name__)


class AgentDirectory(Protocol):
    """What the bus needs of the agent host (`kai_mesh.runtime.agents.host.AgentHost`)."""

    def intents_of(self, name: str) -> frozenset[str] | None: ...

    def concurrency_of(self, name: str) -> int: ...

    async def call(self, name: str, request: AgentRequest) -> Any: ...


class BusError(Exception):
    """Becomes an `error` reply: `code` is stable for scripts, `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class _Pending:
    message: StandardMessage
    agent: str
    done: trio.Event = field(default_factory=trio.Event)
    reply: StandardMessage | None = None
    abandoned: bool = False


@dataclass
class _AgentLane:
    inbox: PriorityInbox[_Pending]
    concurrency: int
    running: int = 0


class Bus:
    """Routes messages addressed to this node. Run `serve()` in the node's nursery first."""

    def __init__(
        self,
        *,
        node_id: bytes,
        name: str,
        agents: AgentDirectory,
        queue_capacity: int,
        on_event: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.node_id = node_id
        self.name = name
        self.agents = agents
        self.queue_capacity = queue_capacity
        self.on_event = on_event
        self.counters: dict[str, int] = {"delivered": 0, "errors": 0, "shed": 0}
        self._lanes: dict[str, _AgentLane] = {}
        self._nursery: trio.Nursery | None = None
        #: Set by the node when it has transports: carries messages for other nodes.
        self.remote: Callable[[StandardMessage, float | None], Awaitable[StandardMessage]] | None
        self.remote = None
        #: Set by the node: the reason while a certified emergency shutdown holds, else None.
        #: Every local agent is then refused with code `shutdown`.
        self.halted: Callable[[], str | None] = lambda: None
        #: Set by the node (runtime/governance/policy.py): why a message from a node at a priority
        #: is
        #: refused by policy, else None. Applied here to this node's own messages.
        self.admit: Callable[[bytes, Priority], str | None] = lambda node_id, priority: None
        #: Set by the node (runtime/orchestration/service.py): carries `kai://svc/NAME` to a
        #: replica of the service.
        self.services: (
            Callable[[StandardMessage, float | None], Awaitable[StandardMessage]] | None
        ) = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def is_local(self, node: NodeRef) -> bool:
        return node.node_id == self.node_id or node.name == self.name

    def queue_depths(self) -> dict[str, int]:
        return {name: len(lane.inbox) for name, lane in self._lanes.items()}

    async def request(
        self, message: StandardMessage, reply_within: float | None = None
    ) -> StandardMessage:
        """Deliver `message`; wait for its reply at most `reply_within` seconds and until it
        expires. Every failure, a timeout included, comes back as an `error` reply."""
        if self.is_local(message.sender.node):
            why = self.admit(self.node_id, message.priority)
            if why is not None:
                self.counters["forbidden"] = self.counters.get("forbidden", 0) + 1
                return self._finish(message, self.error_reply(message, "forbidden", why))
        to = message.to
        if isinstance(to, ServiceAddress) and self.services is not None:
            return await self.services(message, reply_within)
        if isinstance(to, AgentAddress) and not self.is_local(to.node) and self.remote:
            return self._finish(message, await self.remote(message, reply_within))
        try:
            agent = self._resolve(message)
            lane = self._lane(agent)
        except BusError as exc:
            return self._finish(message, self.error_reply(message, exc.code, exc.message))
        pending = _Pending(message, agent)
        if lane.running < lane.concurrency and not len(lane.inbox):
            lane.running += 1
            try:
                with trio.move_on_after(self._wait_limit(message, reply_within)) as scope:
                    await self._serve(pending)
            finally:
                lane.running -= 1
                self._drain(lane)
            if scope.cancelled_caught:
                pending.reply = self.error_reply(message, "timeout", "no reply in time")
            assert pending.reply is not None
            return self._finish(message, pending.reply)
        shed = lane.inbox.push(pending, message.priority)
        if shed is not None:
            self.counters["shed"] += 1
            victim = shed.item
            victim.reply = self.error_reply(
                victim.message,
                "overloaded",
                f"agent {agent!r} is overloaded: shed at priority {shed.priority.name.lower()}",
            )
            victim.done.set()
        with trio.move_on_after(self._wait_limit(message, reply_within)):
            await pending.done.wait()
        if pending.reply is None:
            pending.abandoned = True
            pending.reply = self.error_reply(message, "timeout", "no reply in time (queued)")
        return self._finish(message, pending.reply)

    def _wait_limit(self, message: StandardMessage, timeout: float | None) -> float:
        until_expiry = max(0.0, message.expires_at - time.time())
        return until_expiry if timeout is None else min(timeout, until_expiry)

    def _resolve(self, message: StandardMessage) -> str:
        to = message.to
        if isinstance(to, ServiceAddress):
            agent = to.service  # until placement lands, a service is an agent of that name here
        elif self.is_local(to.node):
            agent = to.agent
        else:
            raise BusError("unknown_node", f"no route to node {to.node}: it is not this node")
        reason = self.halted()
        if reason is not None:
            raise BusError("shutdown", f"the mesh is shut down by governance: {reason}")
        intents = self.agents.intents_of(agent)
        if intents is None:
            raise BusError("no_such_agent", f"no agent {agent!r} on node {self.name}")
        if message.intent not in intents:
            raise BusError(
                "unknown_intent",
                f"agent {agent!r} does not serve intent {message.intent!r} "
                f"(it serves: {', '.join(sorted(intents)) or 'nothing'})",
            )
        return agent

    def _lane(self, agent: str) -> _AgentLane:
        lane = self._lanes.get(agent)
        if lane is None:
            concurrency = max(1, self.agents.concurrency_of(agent))
            lane = _AgentLane(PriorityInbox(self.queue_capacity), concurrency)
            self._lanes[agent] = lane
        return lane

    def _drain(self, lane: _AgentLane) -> None:
        """Start queued messages while slots are free."""
        while lane.running < lane.concurrency:
            popped = lane.inbox.pop()
            if popped is None:
                return
            pending = popped[0]
            if pending.abandoned:
                continue
            lane.running += 1
            assert self._nursery is not None, "Bus.serve() is not running"
            self._nursery.start_soon(self._serve_queued, lane, pending)

    async def _serve_queued(self, lane: _AgentLane, pending: _Pending) -> None:
        try:
            await self._serve(pending)
        finally:
            lane.running -= 1
            pending.done.set()
            self._drain(lane)

    async def _serve(self, pending: _Pending) -> None:
        message = pending.message
        if message.expires_at < time.time():
            pending.reply = self.error_reply(message, "expired", "expired while queued")
            return
        request = AgentRequest(
            intent=message.intent,
            payload=message.payload,
            context=message.context,
            sender=str(message.sender),
            message_id=message.message_id.hex(),
        )
        try:
            result = await self.agents.call(pending.agent, request)
        except AgentError as exc:
            pending.reply = self.error_reply(message, exc.code, str(exc))
        else:
            pending.reply = self.reply(message, "reply", result)

    def reply(self, message: StandardMessage, intent: str, payload: Any) -> StandardMessage:
        now = int(time.time())
        replier = message.to
        sender = (
            AgentAddress(NodeRef(node_id=self.node_id), replier.service)
            if isinstance(replier, ServiceAddress)
            else AgentAddress(NodeRef(node_id=self.node_id), replier.agent)
        )
        return StandardMessage(
            sender=sender,
            to=message.sender,
            intent=intent,
            payload=payload,
            priority=message.priority,
            timestamp=now,
            message_id=os.urandom(MESSAGE_ID_BYTES),
            reply_to=message.message_id,
            expires_at=max(message.expires_at, now + 1),
        )

    def error_reply(self, message: StandardMessage, code: str, text: str) -> StandardMessage:
        return self.reply(message, "error", {"code": code, "message": text})

    def _finish(self, message: StandardMessage, reply: StandardMessage) -> StandardMessage:
        failed = reply.intent == "error"
        self.counters["errors" if failed else "delivered"] += 1
        self.on_event(
            "messages",
            {
                "from": str(message.sender),
                "to": str(message.to),
                "intent": message.intent,
                "priority": message.priority.name.lower(),
                "message_id": message.message_id.hex(),
                "outcome": reply.payload.get("code") if failed else "reply",
            },
        )
        return reply


def new_message(
    *,
    sender: AgentAddress,
    to: AgentAddress | ServiceAddress,
    intent: str,
    payload: Any,
    priority: Priority = Priority.NORMAL,
    ttl: int,
    max_ttl: int,
    context: dict[str, Any] | None = None,
) -> StandardMessage:
    """A fresh message from this node: new id, the current time, ttl capped at `max_ttl`."""
    now = int(time.time())
    return StandardMessage(
        sender=sender,
        to=to,
        intent=intent,
        payload=payload,
        context=context or {},
        priority=priority,
        timestamp=now,
        message_id=os.urandom(MESSAGE_ID_BYTES),
        expires_at=now + max(1, min(ttl, max_ttl)),
    )
