"""Mesh events made real: published by the runtime and by agents, delivered to the nodes that
asked for them, followed with `kai-mesh events --mesh TOPIC…`.

**Who wants what.** A node's interest is the union of its in-process listeners (`listen`: the
autoscaler, the rule engines) and of the control-socket subscribers following `mesh:TOPIC` (or
`mesh:*`). It is told to peers in INTEREST frames (core.events.interest: on change, to new
peers, refreshed before it runs out) and a publisher sends each event only to the live peers
whose interest matches. Nobody interested: the event costs nothing on the air.

**Delivery.** Ephemeral by default: one EVENT frame per interested peer, `low` priority and
background traffic, so on a radio it waits for the background share of the airtime budget and is
shed (counted, not retried) when it cannot get it: at most once. A topic that asks for
must-arrive (`task.created`, the policy's `must_arrive_topics`, or a publisher's `must_arrive`)
goes instead as a message to the peer's `events` agent through the outbox: committed, retried
until acknowledged, de-duplicated by message id. Receivers also drop a repeated (origin, seq).

Each node numbers its events from a random start, so a restarted node is not taken for a replay.
Events reach the peers a transport can address (Reticulum: the whole mesh, through transport
nodes); nodes do not relay events for others.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import trio

from kai_mesh.core.errors import KaiMeshError, ProtocolError
from kai_mesh.core.events.interest import EventInterest, Seen
from kai_mesh.core.events.wire import (
    ALL,
    MUST_ARRIVE,
    Event,
    Interest,
    check_fields,
    check_topic,
    decode,
    encode_event,
    encode_interest,
    matches,
)
from kai_mesh.core.mesh.address import AgentAddress, NodeRef
from kai_mesh.core.messaging.envelope import StandardMessage
from kai_mesh.runtime.messaging.bus import new_message

log = logging.getLogger(__name__)

HUB_PREFIX = "mesh:"  # control-socket topics: mesh:TOPIC, mesh:* for all
EVENTS_AGENT = "events"
EVENT_TTL = 300  # seconds a must-arrive event may wait in the outbox
SEND_WAIT = 30.0  # an ephemeral frame not sent by then is given up (egress sheds it earlier)

SendFrame = Callable[[bytes, bytes], Awaitable[None]]
Submit = Callable[[StandardMessage], Awaitable[Any]]
Listener = Callable[[Event], None]


class MeshEvents:
    """See the module docstring. `run` in the node's nursery; `on_frame` is the EVENT frame's
    inline handler; `publish` from anywhere in the trio thread."""

    def __init__(
        self,
        *,
        node_id: bytes,
        send_frame: SendFrame,
        alive: Callable[[], list[bytes]],
        hub_topics: Callable[[], Iterable[str]] = lambda: (),
        to_hub: Callable[[str, Any], None] = lambda topic, data: None,
        submit: Submit | None = None,
        names: Callable[[bytes], str | None] = lambda node_id: None,
        must_arrive_topics: Callable[[], Iterable[str]] = lambda: (),
        refresh: float = 30.0,
        tick: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self._send_frame = send_frame
        self._alive = alive
        self._hub_topics = hub_topics
        self._to_hub = to_hub
        self.submit = submit
        self._names = names
        self._must_arrive_topics = must_arrive_topics
        self._wall = wall_clock
        self.tick = tick
        self.interest = EventInterest(refresh=refresh)
        self._seen = Seen()
        self._seq = (rng or random.Random()).randrange(2**31)
        self._listeners: list[tuple[str, Listener]] = []
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self.counters: dict[str, int] = {
            "published": 0,
            "sent_frames": 0,
            "sent_bytes": 0,
            "interest_frames": 0,
            "interest_bytes": 0,
            "must_arrive_sent": 0,
            "received": 0,
            "duplicates": 0,
            "send_failed": 0,
            "no_subscriber": 0,
        }
        self.refused: dict[str, int] = {}

    # ---- subscribing ------------------------------------------------------------------------

    def listen(self, topic: str, listener: Listener) -> None:
        """Call `listener` for every event of `topic` (`*`: all) from any node, this one too."""
        self._listeners.append((check_topic(topic, pattern=True), listener))
        self._wake.set()

    def wanted(self) -> frozenset[str]:
        topics = {t for t, _ in self._listeners}
        for hub_topic in self._hub_topics():
            if hub_topic.startswith(HUB_PREFIX):
                topics.add(hub_topic[len(HUB_PREFIX) :])
        if ALL in topics:
            return frozenset({ALL})
        return frozenset(sorted(topics)[:32])

    # ---- publishing -------------------------------------------------------------------------

    def must_arrive(self, topic: str) -> bool:
        return topic in MUST_ARRIVE or topic in set(self._must_arrive_topics())

    def publish(
        self, topic: str, fields: Mapping[str, Any], *, must_arrive: bool | None = None
    ) -> dict[str, Any]:
        """Deliver here, and send to every live peer that wants `topic`; never blocks (the
        sends run in the service's tasks). Returns what was done.

        Raises:
            UsageError: a bad topic; Malformed: fields that are not plain values;
            Oversize: an event larger than one radio packet.
        """
        check_topic(topic)
        clean = check_fields(fields)
        seq, self._seq = self._seq, (self._seq + 1) % 2**63
        at = int(self._wall())
        durable = self.must_arrive(topic) if must_arrive is None else must_arrive
        frame = encode_event(topic, seq, at, clean)  # checks the size even when durable
        self.counters["published"] += 1
        self._seen.first(self.node_id, seq)
        self._deliver(Event(topic=topic, origin=self.node_id, seq=seq, at=at, fields=clean))
        peers = self.interest.wanted_by(topic, self._alive(), trio.current_time())
        if not peers:
            self.counters["no_subscriber"] += 1
        for peer in peers:
            if durable and self.submit is not None:
                self._start(self._send_durable, peer, topic, seq, at, clean)
            else:
                self._start(self._send_ephemeral, peer, frame)
        return {"topic": topic, "seq": seq, "peers": len(peers), "must_arrive": durable}

    def _start(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        if self._nursery is None:
            self.counters["send_failed"] += 1  # not running yet: at most once allows a drop
            return
        self._nursery.start_soon(fn, *args)

    async def _send_ephemeral(self, peer: bytes, frame: bytes) -> None:
        try:
            with trio.fail_after(SEND_WAIT):
                await self._send_frame(peer, frame)
        except (KaiMeshError, trio.TooSlowError) as exc:
            self.counters["send_failed"] += 1
            log.debug("event to %s not sent: %s", peer.hex(), exc)
            return
        self.counters["sent_frames"] += 1
        self.counters["sent_bytes"] += len(frame)

    async def _send_durable(
        self, peer: bytes, topic: str, seq: int, at: int, fields: dict[str, Any]
    ) -> None:
        assert self.submit is not None
        message = new_message(
            sender=AgentAddress(NodeRef(node_id=self.node_id), EVENTS_AGENT),
            to=AgentAddress(NodeRef(node_id=peer), EVENTS_AGENT),
            intent="event",
            payload={"topic": topic, "seq": seq, "at": at, "fields": fields},
            ttl=EVENT_TTL,
            max_ttl=EVENT_TTL,
        )
        try:
            await self.submit(message)
        except KaiMeshError as exc:
            self.counters["send_failed"] += 1
            log.info("must-arrive event to %s not queued: %s", peer.hex(), exc)
            return
        self.counters["must_arrive_sent"] += 1

    # ---- receiving --------------------------------------------------------------------------

    def on_frame(self, transport: object, node_id: bytes, data: bytes) -> None:
        """The EVENT frame's inline handler: interest is remembered, events delivered."""
        try:
            got = decode(data, node_id)
        except ProtocolError as exc:
            self._refuse(f"event.{type(exc).__name__.lower()}")
            return
        if isinstance(got, Interest):
            self.interest.heard(node_id, got.topics, got.ttl, trio.current_time())
            return
        self.received(got)

    def received(self, event: Event) -> None:
        """An event from another node (a frame, or a must-arrive message)."""
        if not self._seen.first(event.origin, event.seq):
            self.counters["duplicates"] += 1
            return
        self.counters["received"] += 1
        self._deliver(event)

    def _deliver(self, event: Event) -> None:
        for pattern, listener in list(self._listeners):
            if matches(pattern, event.topic):
                try:
                    listener(event)
                except Exception:  # one listener's bug must not cost the others their event
                    log.exception("event listener for %s failed", event.topic)
        data = {
            "topic": event.topic,
            "origin": event.origin.hex(),
            "origin_name": self._names(event.origin),
            "seq": event.seq,
            "at": event.at,
            "fields": dict(event.fields),
        }
        self._to_hub(HUB_PREFIX + event.topic, data)
        self._to_hub(HUB_PREFIX + ALL, data)

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    # ---- the loop ---------------------------------------------------------------------------

    def forget(self, node_id: bytes) -> None:
        self.interest.forget(node_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                now = trio.current_time()
                self.interest.set_want(self.wanted())
                self.interest.expire(now)
                for peer in self.interest.due(self._alive(), now):
                    frame = encode_interest(self.interest.want, self.interest.ttl)
                    self.interest.told(peer, now)
                    nursery.start_soon(self._send_interest, peer, frame)
                with trio.move_on_after(self.tick):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def _send_interest(self, peer: bytes, frame: bytes) -> None:
        try:
            with trio.fail_after(SEND_WAIT):
                await self._send_frame(peer, frame)
        except (KaiMeshError, trio.TooSlowError):
            self.counters["send_failed"] += 1
            self.interest.untold(peer)  # not told after all: tell it again next round
            return
        self.counters["interest_frames"] += 1
        self.counters["interest_bytes"] += len(frame)

    def status(self) -> dict[str, Any]:
        now = trio.current_time()
        return {
            "wanted": sorted(self.interest.want),
            "peers_interested": {
                (self._names(p) or p.hex()): sorted(t)
                for p, t in self.interest.peer_topics(now).items()
            },
            **self.counters,
            "refused": dict(self.refused),
        }
