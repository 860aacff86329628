"""The `events` agent every node hosts, and the control methods of mesh events.

Agents publish by message, as they use shared state through the `state` agent::

    kai-mesh send kai://pi1/events publish '{"topic": "camera.motion", "fields": {"zone": 3}}'

`publish` is served for senders on this node only (an agent publishes as its own node; another
node publishes its own events). `event` is how a must-arrive event arrives from a peer, through
the outbox: its sender is the node the link proved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kai_mesh.agents.base import AgentRequest
from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.errors import AddressError, KaiMeshError
from kai_mesh.core.events.wire import Event, check_fields, check_topic
from kai_mesh.core.mesh.address import AgentAddress, NodeRef, parse_address
from kai_mesh.runtime.agents.runners import AgentRejectedError, UnknownIntent
from kai_mesh.runtime.events.service import EVENTS_AGENT, MeshEvents
from kai_mesh.runtime.messaging.bus import AgentDirectory

EVENTS_INTENTS = frozenset({"publish", "event"})
EVENT_METHODS = frozenset({"events_publish", "events_status"})


def _publish_params(params: Any) -> tuple[str, dict[str, Any], bool | None]:
    if not isinstance(params, dict):
        raise KaiMeshError('publish: give {"topic": ..., "fields": {...}}')
    topic = params.get("topic")
    fields = params.get("fields") or {}
    must = params.get("must_arrive")
    if must is not None and not isinstance(must, bool):
        raise KaiMeshError("publish: must_arrive is true or false")
    if not isinstance(topic, str):
        raise KaiMeshError("publish: topic is text such as camera.motion")
    return topic, fields, must


class WithEventsAgent:
    """An agent directory, plus the built-in `events` agent."""

    def __init__(
        self, inner: AgentDirectory, events: MeshEvents, is_local: Callable[[NodeRef], bool]
    ) -> None:
        self._inner = inner
        self._events = events
        self._is_local = is_local

    def intents_of(self, name: str) -> frozenset[str] | None:
        return EVENTS_INTENTS if name == EVENTS_AGENT else self._inner.intents_of(name)

    def concurrency_of(self, name: str) -> int:
        return 8 if name == EVENTS_AGENT else self._inner.concurrency_of(name)

    async def call(self, name: str, request: AgentRequest) -> Any:
        if name != EVENTS_AGENT:
            return await self._inner.call(name, request)
        try:
            sender = parse_address(request.sender)
        except AddressError:
            raise AgentRejectedError("events: the sender's address is not readable") from None
        node = sender.node if isinstance(sender, AgentAddress) else None
        origin = node.node_id if node is not None else None
        local = node is not None and self._is_local(node)
        try:
            if request.intent == "publish":
                if not local:
                    raise AgentRejectedError("events: publish is for agents of this node")
                topic, fields, must = _publish_params(request.payload)
                return self._events.publish(topic, fields, must_arrive=must)
            if request.intent == "event":
                p = request.payload if isinstance(request.payload, dict) else {}
                kind, seq, at, body = p.get("topic"), p.get("seq"), p.get("at"), p.get("fields")
                if (
                    origin is None
                    or not isinstance(kind, str)
                    or type(seq) is not int
                    or type(at) is not int
                    or not isinstance(body, dict)
                ):
                    raise AgentRejectedError("events: an event is {topic, seq, at, fields}")
                check_topic(kind)
                self._events.received(
                    Event(topic=kind, origin=origin, seq=seq, at=at, fields=check_fields(body))
                )
                return {"ok": True}
        except KaiMeshError as exc:
            raise AgentRejectedError(str(exc)) from None
        raise UnknownIntent(f"events serves {', '.join(sorted(EVENTS_INTENTS))}")


def events_method(events: MeshEvents, method: str, params: dict[str, Any]) -> Any:
    """`events_publish` {topic, fields, must_arrive?}; `events_status`."""
    try:
        if method == "events_publish":
            topic, fields, must = _publish_params(params)
            return events.publish(topic, fields, must_arrive=must)
        if method == "events_status":
            return events.status()
    except KaiMeshError as exc:
        raise ControlError("bad_request", str(exc)) from None
    raise ControlError("unknown_method", f"unknown method {method!r}")
