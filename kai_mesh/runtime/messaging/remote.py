"""Messages to and from other nodes: the part of the bus that crosses transports.

Outbound, a message for another node is resolved to a node id (an id in the address, or a name a
transport has seen — checked against the peer's signed member record before anything is sent),
encoded without a signature (the transport's link already proves the sender: DESIGN.md, one
authentication is enough) and sent; the caller waits for the envelope whose `reply_to` is the
message's id, from that same node, until its deadline.

Inbound, every `MessageReceived` is decoded by the core's `EnvelopeDecoder` (size, format,
fields, signature, expiry, replay); an unsigned envelope must come from the node it names as its
sender. Replies wake their waiter; requests go to the local bus in their own task, so a slow agent
never holds up the transport's event stream, and the reply goes back the way the request came.
A reply that is late is asked for, and one that was lost is sent again
(runtime/messaging/lost_replies.py).
Every refusal is counted by reason (`kai-mesh status`), never raised into the node. A request the
governance policy forbids (`admit`, runtime/governance/policy.py: `critical` from a role not in
`critical_roles`) gets a `forbidden` error reply, judged by the node the link proved, and is
counted as `policy.forbidden`.

Besides envelopes, the same byte strings carry frames (`core.messaging.frames`), dispatched by
type through a registry (`frame_registry.FrameRegistry`) that the services owning them fill:
the router's own DELIVER, ACKS and ASK (the outbox, `outbox.py`; the inbox that keeps a message
from its ack until it is served, `durable_inbox.py`; lost replies, `lost_replies.py`), the
liveness service's SWIM and heartbeats (which also arrive as broadcasts), the state and
governance services' sync. A type nobody registered is refused and counted by name. Work a frame
starts runs in a task, bounded per peer (`PeerTasks`: full means dropped and counted, since every
such frame is repeated by its sender). Everything sent leaves through the egress lanes
(`egress.py`), in priority order and within the airtime budget, and frames to one peer leave in
the order they were sent.

Clocks: trio's clock for every wait; the wall clock (`wall_clock`, `time.time` unless a test
gives another) only where the wire carries wall time (`expires_at`, decoding `now`), converted
once into a trio deadline per request.

Store-and-forward: when the direct send fails (the transport raises, the deadline passes
before it could send, or no reply came back in time: the link may have been dead) and a
transport offers `store_and_forward(node_id, data)` (LXMF), the envelope is left there and the
caller gets a `queued` reply instead of an error: payload
`{"queued": "lxmf-propagated", "node": …, "message_id": …}`. A reply that arrives later for such
a message is counted as `late_replies` (no one waits for it any more).

A message that must arrive (`submit`) goes to the outbox even when its node is not heard now:
named by id, or by a name a transport reported for that node when it was heard, in this run or
an earlier one (kept in the store's meta, names of current members only), or by the name the
member signed for itself and the mesh passed on (NAME_CLAIMS, runtime/messaging/names.py). A
node restarted after a crash, or one that never heard that member, can so queue for it.
"""

from __future__ import annotations

import logging
import time
from collections import ChainMap
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import replace
from functools import partial
from typing import Any

import trio

from kai_mesh.core.codec import pack, unpack_exact
from kai_mesh.core.errors import (
    KaiMeshError,
    NameMismatch,
    ProtocolError,
    StoreError,
    TransportError,
    UsageError,
)
from kai_mesh.core.mesh.address import AgentAddress
from kai_mesh.core.messaging.batch import decode_batch
from kai_mesh.core.messaging.envelope import (
    EnvelopeDecoder,
    LinkEnds,
    Priority,
    StandardMessage,
    encode,
)
from kai_mesh.core.messaging.frames import (
    FRAME_ACKS,
    FRAME_ASK,
    FRAME_BATCH,
    FRAME_BUSY,
    FRAME_DELIVER,
    FRAME_ENVELOPE,
    FRAME_HEARTBEAT,
    FRAME_NAME_CLAIMS,
    decode_acks,
    decode_busy,
    decode_deliver,
    encode_acks,
    encode_busy,
    frame_kind,
)
from kai_mesh.core.messaging.name_claims import NameClaim, decode_claims
from kai_mesh.runtime.liveness.service import Liveness
from kai_mesh.runtime.messaging.durable_inbox import Inbox
from kai_mesh.runtime.messaging.egress import AirtimeShed, Egress
from kai_mesh.runtime.messaging.frame_registry import FrameRegistry, PeerTasks
from kai_mesh.runtime.messaging.lost_replies import LostReplies, Waiter, asks_over, first_wait
from kai_mesh.runtime.messaging.names import NameBook
from kai_mesh.runtime.messaging.outbox import Outbox
from kai_mesh.runtime.store import OutboxRow, Store
from transports.base import (
    REPLYING_TO,
    BroadcastReceived,
    LocalHandler,
    MessageReceived,
    PeerInfo,
    PeerSeen,
    PingResult,
    Transport,
)

log = logging.getLogger(__name__)

#: The carrier ref of the frame whose dispatch started this task (tasks inherit it from the
#: pump at dispatch): what `_serve` names in `REPLYING_TO` when it sends the reply.
_REQUEST_REF: ContextVar[str | None] = ContextVar("_REQUEST_REF", default=None)

ErrorReply = Callable[[StandardMessage, str, str], StandardMessage]
StoreAndForward = Callable[[bytes, bytes], Awaitable[bool]]
NAMES_META = "peer_names"  # store meta: msgpack {name: node id} of the members heard
MAX_NAMES = 4096

# Tasks one peer may have running at once, by what started them (frame_registry: full means
# the frame is dropped and counted; its sender repeats it).
REQUESTS_PER_PEER = 32  # agents serving a peer's requests; the bus bounds each agent besides.
# 32, not 16: one coalesced packet brings several requests at once (three ~130-byte ones in a
# 431-byte link packet, more on a link with a larger MTU), so a client with 32
# in flight (the control socket runs up to 64) would otherwise see requests dropped as busy.
DELIVERIES_PER_PEER = 8  # must-arrive messages being committed and served
ACKS_PER_PEER = 4  # outbox commits of a peer's acks
OUTBOX_REPLIES_PER_PEER = 8  # outbox commits of replies to must-arrive messages
ASKS_PER_PEER = 4  # lost-reply asks being answered
LATE_REPLIES_PER_PEER = 8  # delivered must-arrive messages whose late reply is being asked for
BUSY_ANSWERS_PER_PEER = 4  # BUSY frames being sent to a peer; past it a dropped DELIVER is silent


class RemoteRouter:
    """Routes between this node's bus and its transports. Run `run()` in the node's nursery."""

    def __init__(
        self,
        *,
        node_id: bytes,
        transports: Sequence[Transport],
        decoder: EnvelopeDecoder,
        local: LocalHandler,
        error_reply: ErrorReply,
        store_and_forward: StoreAndForward | None = None,
        egress: Egress | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id
        self.transports = list(transports)
        self.egress = egress or Egress(self.transports, lambda interface: None)
        self.wall_clock = wall_clock
        self.outbox: Outbox | None = None  # set by `wiring.wire_delivery` once the store is open
        #: The failure detector's service, for status and `alive_peers` (set by
        #: `wiring.wire_delivery`); its frames reach it through `frames`, not through this.
        self.liveness: Liveness | None = None
        self.store: Store | None = None
        self.inbox: Inbox | None = None  # on the store, when `run()` starts
        #: node id -> key of the mesh's members now (wire_delivery: the governance fold's)
        self.members: Mapping[bytes, bytes] | None = None
        self._names: dict[str, bytes] | None = None  # NAMES_META, read on first use
        #: Members' own signed names (runtime/messaging/names.py; set by `wire_delivery`).
        self.names: NameBook | None = None
        self._claims_sent: set[bytes] = set()  # peers handed every claim in this run
        self.decoder = decoder
        self.local = local
        self.error_reply = error_reply
        #: Set by the node (runtime/governance/policy.py): why a request from a peer at a priority
        #: is
        #: refused by policy, else None.
        self.admit: Callable[[bytes, Priority], str | None] = lambda node_id, priority: None
        # Defaults to the first transport that declares it (LXMF); transports that serve
        # guests get the local bus.
        offered = [t.store_and_forward for t in self.transports if t.abilities.store_and_forward]
        self.store_and_forward = store_and_forward or next(iter(offered), None)
        for transport in self.transports:
            if transport.abilities.guests:
                transport.bind_local(local)
        self.refused: dict[str, int] = {}
        self.counters = {"sent": 0, "received": 0, "replies": 0, "queued": 0, "late_replies": 0}
        self._waiting: dict[bytes, Waiter] = {}
        self._late: dict[bytes, Waiter] = {}  # delivered outbox messages asked for their reply
        self.lost = LostReplies(self.egress, self._count, self._refuse, self._peer_bitrate)
        self._queued: dict[bytes, tuple[bytes, int]] = {}  # message id -> (node id, expires_at)
        self.tasks = PeerTasks(self._count)
        self.frames = FrameRegistry(self.tasks, self._refuse)
        self.frames.on(FRAME_ENVELOPE, self._on_message)
        self.frames.on(FRAME_DELIVER, self._on_deliver)
        self.frames.on(FRAME_ACKS, self._on_acks)
        self.frames.on_task(FRAME_ASK, self._on_ask, per_peer=ASKS_PER_PEER)
        self.frames.on(FRAME_BATCH, self._on_batch)
        self.frames.on(FRAME_NAME_CLAIMS, self._on_name_claims)
        self.frames.on(FRAME_BUSY, self._on_busy)
        #: Called for each peer a live-link transport announces: (node id, rtt, bitrate).
        self.peer_seen: list[Callable[[bytes, float | None, int | None], None]] = []
        #: Services that run inside the router's nursery, after its transports (the outbox,
        #: liveness): each a `run(task_status=...)`.
        self.services: list[Callable[..., Awaitable[None]]] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.store is not None and self.inbox is None:
            self.inbox = self._new_inbox(self.store)
        async with trio.open_nursery() as nursery:
            self.tasks.nursery = nursery
            await nursery.start(self.egress.run)
            for transport in self.transports:
                await nursery.start(transport.run)
                nursery.start_soon(self._pump, transport)
            for service in self.services:
                await nursery.start(service)
            if self.inbox is not None:
                nursery.start_soon(self.inbox.run)  # what a stop interrupted is served again
            task_status.started()

    def _new_inbox(self, store: Store) -> Inbox:
        return Inbox(
            store=store,
            node_id=self.node_id,
            decoder=self.decoder,
            answer=self._answer,
            send=self.send_frame,
            refuse=self._refuse,
            count=self._count,
            policy=None if self.outbox is None else self.outbox.policy,
            wall_clock=self.wall_clock,
        )

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # ---- outbound ---------------------------------------------------------------------------

    def locate(self, node: str) -> tuple[Transport, bytes]:
        """The transport and node id for a node name or 32-hex id; raises `UsageError`."""
        node_id = bytes.fromhex(node) if len(node) == 32 and _is_hex(node) else None
        for transport in self.transports:
            if node_id is not None:
                if any(p.node_id == node_id for p in transport.peers()):
                    return transport, node_id
                continue
            found = transport.resolve_name(node) if transport.abilities.names else None
            if found is None:
                found = next((p.node_id for p in transport.peers() if p.name == node), None)
            if found is not None:
                return transport, found
        known = ", ".join(sorted({p.name or p.node_id.hex() for p in self.peers()})) or "none"
        raise UsageError(f"no known node {node!r} (peers heard: {known})")

    async def request(
        self, message: StandardMessage, reply_within: float | None
    ) -> StandardMessage:
        """Send `message` to its node and wait for the reply; failures are `error` replies."""
        to = message.to
        assert isinstance(to, AgentAddress)
        try:
            transport, node_id = self.locate(str(to.node))
        except UsageError as exc:
            return self.error_reply(message, "unknown_node", str(exc))
        # The one conversion from wall time (the envelope's expiry) to a trio deadline; every
        # wait of this request is against that deadline.
        limit = max(0.0, message.expires_at - self.wall_clock())
        if reply_within is not None:
            limit = min(limit, reply_within)
        deadline = trio.current_time() + limit
        if to.node.name is not None and transport.abilities.names:
            # A name resolves only through a member record: a name taken from an announce is
            # checked against the record before the message goes.
            try:
                with trio.move_on_at(deadline):
                    await transport.confirm_name(node_id, to.node.name)
            except NameMismatch as exc:
                return self.error_reply(message, "unknown_node", str(exc))
        waiter = self._waiting[message.message_id] = Waiter(node_id)
        # Every transport proves both ends (a verified link, an LXMF signature over a member
        # record): the envelope leaves their node ids out (core.messaging.envelope.LinkEnds).
        data = encode(message, link=LinkEnds(sender=self.node_id, receiver=node_id))
        failure: str | None = None
        sent = False
        try:
            with trio.move_on_at(deadline):
                try:
                    await self.egress.send(transport, node_id, data, message.priority)
                except AirtimeShed as exc:
                    # Store-and-forward would spend the same airtime: the sender hears now.
                    return self.error_reply(message, "overloaded", str(exc))
                except TransportError as exc:
                    failure = str(exc)
                else:
                    sent = True
                    self.counters["sent"] += 1
                    await self._await_reply(transport, waiter, message, data)
        finally:
            del self._waiting[message.message_id]
        if isinstance(waiter.reply, StandardMessage):
            return waiter.reply
        # Not sent, or sent on a link that may be dead (a peer killed a moment ago still has a
        # link that looks alive): leave it with store-and-forward. A copy that did arrive is
        # refused there as a replay, so the agent never runs twice.
        queued = await self._store_and_forward(message, node_id, data)
        if queued is not None:
            return queued
        if not sent and failure is not None:
            return self.error_reply(message, "unreachable", failure)
        return self.error_reply(message, "timeout", f"no reply from {to.node} in time")

    async def _await_reply(
        self, transport: Transport, waiter: Waiter, message: StandardMessage, data: bytes
    ) -> None:
        """Wait for the reply; over a link, ask for it when it is late
        (core.messaging.reply_asks)."""
        if not asks_over(transport):
            await waiter.done.wait()
            return
        first = first_wait(transport, waiter.node_id, self._peer_bitrate(transport, waiter.node_id))
        await self.lost.await_reply(
            transport, waiter, message.message_id, data, message.priority, first
        )

    async def _store_and_forward(
        self, message: StandardMessage, node_id: bytes, data: bytes
    ) -> StandardMessage | None:
        """Leave the message with the store-and-forward transport; the `queued` reply, or None
        when there is none or it could not take the message."""
        if self.store_and_forward is None:
            return None
        taken = False
        with trio.move_on_after(10):
            try:
                taken = await self.store_and_forward(node_id, data)
            except TransportError as exc:
                log.info("store-and-forward to %s failed: %s", node_id.hex(), exc)
        if not taken:
            return None
        now = int(self.wall_clock())
        self._queued = {k: v for k, v in self._queued.items() if v[1] > now}
        self._queued[message.message_id] = (node_id, message.expires_at)
        self.counters["queued"] += 1
        payload = {
            "queued": "lxmf-propagated",
            "node": str(message.to.node) if isinstance(message.to, AgentAddress) else None,
            "message_id": message.message_id.hex(),
        }
        return replace(self.error_reply(message, "queued", ""), intent="queued", payload=payload)

    async def submit(self, message: StandardMessage) -> dict[str, Any]:
        """Commit a message that must arrive to the outbox; what to tell the caller.

        Raises `UsageError` for an unknown node (a 32-hex node id is taken as it is, and so is
        the name of a member heard before: the peer may be away now) and `StoreError` when the
        node has no outbox."""
        to = message.to
        assert isinstance(to, AgentAddress)
        if self.outbox is None:
            raise StoreError("this node has no outbox (no store, or no transport)")
        node = str(to.node)
        if len(node) == 32 and _is_hex(node):
            node_id = bytes.fromhex(node)
        else:
            try:
                _, node_id = self.locate(node)
            except UsageError:
                remembered = self._member_named(node)
                if remembered is None:
                    remembered = self._claimed(node)
                if remembered is None:
                    raise
                node_id = remembered  # a member not heard now (it is away, or we restarted)
        row = OutboxRow(
            message_id=message.message_id,
            node_id=node_id,
            destination=str(to),
            intent=message.intent,
            priority=int(message.priority),
            message=encode(message, link=LinkEnds(sender=self.node_id, receiver=node_id)),
            created_at=self.wall_clock(),
            expires_at=message.expires_at,
        )
        await self.outbox.commit(row)
        return {
            "queued": "outbox",
            "node": node,
            "node_id": node_id.hex(),
            "message_id": message.message_id.hex(),
        }

    async def send_frame(
        self, node_id: bytes, data: bytes, priority: Priority, *, background: bool = False
    ) -> None:
        """A router frame to a peer, over the first transport that knows it."""
        for transport in self.transports:
            if any(p.node_id == node_id for p in transport.peers()):
                await self.egress.send(transport, node_id, data, priority, background=background)
                return
        raise TransportError(f"no transport knows node {node_id.hex()} now")

    def reset_link(self, node_id: bytes) -> None:
        for transport in self.transports:
            if transport.abilities.link_reset:
                transport.reset_link(node_id)

    def broadcasts(
        self, *, background: bool = True, wait: float = 0.0
    ) -> list[Callable[[bytes], Awaitable[None]]]:
        """One sender per transport that can broadcast, each held to its airtime budget
        (`Egress.broadcast`: background or not, and how long it may wait for room)."""
        out: list[Callable[[bytes], Awaitable[None]]] = []
        for transport in self.transports:
            if transport.abilities.broadcast:
                out.append(
                    partial(self.egress.broadcast, transport, background=background, wait=wait)
                )
        return out

    async def ping(self, node: str) -> tuple[PingResult, bytes]:
        transport, node_id = self.locate(node)
        return await transport.ping(node_id), node_id

    def peers(self) -> list[PeerInfo]:
        return [peer for transport in self.transports for peer in transport.peers()]

    def _known_names(self) -> dict[str, bytes]:
        if self._names is None:
            self._names = {}
            raw = None if self.store is None else self.store.get_meta(NAMES_META)
            try:
                loaded = unpack_exact(raw, 64 * MAX_NAMES) if raw is not None else {}
            except KaiMeshError:
                loaded = {}
            if isinstance(loaded, dict):
                for name, node_id in list(loaded.items())[:MAX_NAMES]:
                    if isinstance(name, str) and isinstance(node_id, bytes):
                        self._names[name] = node_id
        return self._names

    def _remember_name(self, peer: PeerInfo) -> None:
        """Keep the name a transport reports for a member, for `submit` while it is away."""
        names = self._known_names()
        if not peer.name or names.get(peer.name) == peer.node_id or self.store is None:
            return
        if self.members is None or peer.node_id not in self.members:
            return
        if peer.name not in names and len(names) >= MAX_NAMES:
            return
        names[peer.name] = peer.node_id
        self.store.put_meta(NAMES_META, pack(names))  # rare: only when a name is new

    def attach_names(self, mesh_id: bytes, own: NameClaim | None) -> None:
        """Keep members' signed names in the store (set `store` and `members` first)."""
        assert self.store is not None and self.members is not None
        self.names = NameBook(
            store=self.store, mesh_id=mesh_id, members=self.members, own=own, refuse=self._refuse
        )

    def _claimed(self, name: str) -> bytes | None:
        """The member whose own signed claim is `name` (names.py); `UsageError` when two
        members claim it."""
        if self.names is None:
            return None
        claimants = self.names.claimants(name)
        if len(claimants) > 1:
            ids = ", ".join(sorted(c.hex() for c in claimants))
            raise UsageError(f"two members claim the name {name!r} ({ids}): send by node id")
        return claimants[0] if claimants else None

    def _share_names(self, node_id: bytes) -> None:
        """Hand a peer heard for the first time in this run every member's claim we hold."""
        names, nursery = self.names, self.tasks.nursery
        if names is None or nursery is None or node_id in self._claims_sent:
            return
        frames = names.frames()
        if frames:
            self._claims_sent.add(node_id)
            nursery.start_soon(self._send_claims, node_id, frames)

    async def _send_claims(self, node_id: bytes, frames: list[bytes]) -> None:
        # Background and low: names matter only once a message is sent by name.
        try:
            for frame in frames:
                await self.send_frame(node_id, frame, Priority.LOW, background=True)
        except (TransportError, AirtimeShed):
            self._claims_sent.discard(node_id)  # handed over again when next heard

    def _on_name_claims(self, transport: Transport, node_id: bytes, frame: bytes) -> None:
        """Claims a peer passed on: keep those that verify; pass the new ones to the peers
        heard now, so a claim crosses the mesh once per link."""
        names, nursery = self.names, self.tasks.nursery
        if names is None:
            self._refuse("name_claims.no_book")
            return
        try:
            claims = decode_claims(frame)
        except ProtocolError as exc:
            self._refuse(f"name_claims.{exc.reason}")
            return
        new = names.take(claims)
        if not new or nursery is None:
            return
        frames = names.frames(new)
        for peer in {p.node_id for p in self.peers()} - {node_id}:
            if peer in self._claims_sent:  # the others get every claim when first heard
                nursery.start_soon(self._send_claims, peer, frames)

    def _member_named(self, name: str) -> bytes | None:
        node_id = self._known_names().get(name)
        if node_id is None or self.members is None or node_id not in self.members:
            return None
        return node_id

    # ---- inbound ----------------------------------------------------------------------------

    async def _pump(self, transport: Transport) -> None:
        async for event in transport.events:
            if isinstance(event, MessageReceived):
                self._on_frame(transport, event)
            elif isinstance(event, BroadcastReceived):
                kind = event.data[0] if event.data else None
                self.frames.dispatch_broadcast(kind, event.data)
            elif isinstance(event, PeerSeen):
                log.debug("peer %s seen on %s", event.peer.name, transport.name)
                self._remember_name(event.peer)
                self._share_names(event.peer.node_id)
                if transport.abilities.live_links:
                    bitrate = self._bitrate(transport, event.peer.interface)
                    for seen in self.peer_seen:
                        seen(event.peer.node_id, event.peer.rtt, bitrate)

    def _peer_bitrate(self, transport: Transport, node_id: bytes) -> int | None:
        interface = next((p.interface for p in transport.peers() if p.node_id == node_id), None)
        return self._bitrate(transport, interface)

    @staticmethod
    def _bitrate(transport: Transport, interface: str | None) -> int | None:
        rates = [i.bitrate for i in transport.interfaces() if i.name == interface or not interface]
        known = [r for r in rates if r]
        return min(known) if known else None

    def _on_frame(self, transport: Transport, event: MessageReceived) -> None:
        try:
            kind = frame_kind(event.data)
        except ProtocolError as exc:
            self._refuse(f"frame.{exc.reason}")
            return
        if kind != FRAME_HEARTBEAT:  # the link proved who sent it (a heartbeat: its signature)
            for heard in self.frames.contact:
                heard(event.node_id)
        # Set for the dispatch alone: the tasks it starts inherit it, the next frame sets its own.
        token = _REQUEST_REF.set(event.ref)
        try:
            self.frames.dispatch(transport, event.node_id, kind, event.data)
        finally:
            _REQUEST_REF.reset(token)

    def _on_batch(self, transport: Transport, node_id: bytes, frame: bytes) -> None:
        """Frames the peer packed into one packet (`core.messaging.batch`): each is handled as
        if it had come alone, with the same refusals; a batch that is not well formed is
        refused whole (`batch.<reason>`), since nothing in it can be told apart."""
        try:
            frames = decode_batch(frame)
        except ProtocolError as exc:
            self._refuse(f"batch.{exc.reason}")
            return
        self._count("batches_received")
        for data in frames:
            try:
                kind = frame_kind(data)
            except ProtocolError as exc:
                self._refuse(f"frame.{exc.reason}")
                continue
            self.frames.dispatch(transport, node_id, kind, data)

    async def _on_ask(self, transport: Transport, node_id: bytes, data: bytes) -> None:
        await self.lost.on_ask(transport, node_id, data, ChainMap(self._waiting, self._late))

    def _on_acks(self, transport: Transport, node_id: bytes, frame: bytes) -> None:
        try:
            ids = decode_acks(frame)
        except ProtocolError as exc:
            self._refuse(f"acks.{exc.reason}")
            return
        outbox = self.outbox
        if outbox is None:
            self._refuse("acks.no_outbox")
            return
        self.tasks.start(
            node_id, "acks", ACKS_PER_PEER, lambda: self._take_acks(outbox, transport, node_id, ids)
        )

    async def _take_acks(
        self, outbox: Outbox, transport: Transport, node_id: bytes, ids: list[bytes]
    ) -> None:
        """Mark the messages delivered, then ask for the reply of each whose reply is late."""
        await outbox.acked(node_id, ids)
        if not asks_over(transport):
            return
        for message_id in ids:
            row = outbox.unreplied.get(message_id)
            if row is None or row.node_id != node_id or message_id in self._late:
                continue
            watch = partial(self._ask_late_reply, outbox, transport, row)
            self.tasks.start(node_id, "late_reply", LATE_REPLIES_PER_PEER, watch)

    async def _ask_late_reply(self, outbox: Outbox, transport: Transport, row: OutboxRow) -> None:
        message_id, node_id = row.message_id, row.node_id
        waiter = self._late[message_id] = Waiter(node_id)
        first = first_wait(transport, node_id, self._peer_bitrate(transport, node_id))
        came = False
        try:
            with trio.move_on_after(max(0.0, row.expires_at - self.wall_clock())):
                came = await self.lost.await_late_reply(
                    transport,
                    waiter,
                    message_id,
                    Priority(row.priority),
                    first,
                    replied=lambda: message_id not in outbox.unreplied,
                )
        finally:
            del self._late[message_id]
            outbox.unreplied.pop(message_id, None)
        if not came:
            self._count("late_replies_given_up")
            log.info("no reply to delivered message %s from %s", message_id.hex(), node_id.hex())

    def _on_deliver(self, transport: Transport, node_id: bytes, frame: bytes) -> None:
        """A message that must arrive: check it, then commit, ack and serve (in a task)."""
        self.counters["received"] += 1
        try:
            data = decode_deliver(frame)
            ends = LinkEnds(sender=node_id, receiver=self.node_id)
            # No in-memory replay check: a retry is expected here and answered with an ack;
            # the store's replay table decides whether it is served.
            now = int(self.wall_clock())
            decoded = self.decoder.decode(data, now, link=ends, remember=False)
        except ProtocolError as exc:
            self._refuse(f"deliver.{exc.reason}")
            return
        message = decoded.message
        if not decoded.signed and message.sender.node.node_id != node_id:
            self._refuse("envelope.spoofed_sender")
            return
        if not self.tasks.start(
            node_id,
            "deliver",
            DELIVERIES_PER_PEER,
            lambda: self._take_delivery(transport, node_id, message, data),
        ):
            # Dropped: say so in 9 bytes, so the sender slows down instead of retrying at its
            # usual pace on a fresh link (the outbox scheduler's window). Bounded in turn.
            busy = encode_busy(message.message_id)
            self.tasks.start(
                node_id,
                "busy_answer",
                BUSY_ANSWERS_PER_PEER,
                lambda: self._answer_busy(transport, node_id, busy, message.priority),
            )

    async def _answer_busy(
        self, transport: Transport, node_id: bytes, frame: bytes, priority: Priority
    ) -> None:
        try:
            await self.egress.send(transport, node_id, frame, priority)
        except (TransportError, AirtimeShed) as exc:
            log.debug("busy answer to %s not sent: %s", node_id.hex(), exc)

    def _on_busy(self, transport: Transport, node_id: bytes, frame: bytes) -> None:
        try:
            message_id = decode_busy(frame)
        except ProtocolError as exc:
            self._refuse(f"busy.{exc.reason}")
            return
        if self.outbox is None:
            self._refuse("busy.no_outbox")
            return
        self.outbox.busy(node_id, message_id)

    async def _take_delivery(
        self, transport: Transport, node_id: bytes, message: StandardMessage, envelope: bytes
    ) -> None:
        """Commit (replay table and inbox), ack, serve, then drop the inbox row: a crash
        before the row is dropped has the message served again at the next start."""
        inbox = self.inbox
        if inbox is None:
            self._refuse("deliver.no_store")
            return
        fresh = await inbox.take(node_id, message, envelope)
        try:
            ack = encode_acks([message.message_id])
            await self.egress.send(transport, node_id, ack, message.priority)
        except TransportError as exc:
            log.info("ack to %s not sent: %s", node_id.hex(), exc)
        if not fresh:
            self.counters["duplicates"] = self.counters.get("duplicates", 0) + 1
            return
        # Remembered with its reply, for the sender's ask if the reply is lost after the ack.
        self.lost.serving(node_id, message.message_id, message.expires_at, message.priority)
        await self._serve(transport, node_id, message)
        await inbox.done(node_id, message.message_id)

    def _on_message(self, transport: Transport, node_id: bytes, frame: bytes) -> None:
        self.counters["received"] += 1
        try:
            ends = LinkEnds(sender=node_id, receiver=self.node_id)
            decoded = self.decoder.decode(frame, int(self.wall_clock()), link=ends)
        except ProtocolError as exc:
            self._refuse(f"envelope.{exc.reason}")
            log.debug("refused an envelope from %s: %s", node_id.hex(), exc)
            return
        message = decoded.message
        if not decoded.signed and message.sender.node.node_id != node_id:
            self._refuse("envelope.spoofed_sender")
            return
        if message.reply_to is not None:
            self._on_reply(node_id, message, message.reply_to)
            return
        # When the peer's requests are full this one is not served, nor remembered as served
        # (nor as seen: the replay guard forgets it): an ask for it is answered "never got
        # it", and the requester sends it again. Coalescing makes this common: a packet can
        # bring more requests at once than `REQUESTS_PER_PEER`.
        if not self.tasks.start(
            node_id,
            "request",
            REQUESTS_PER_PEER,
            lambda: self._serve_request(transport, node_id, message),
        ):
            self.decoder.replays.forget(message)

    async def _serve_request(
        self, transport: Transport, node_id: bytes, message: StandardMessage
    ) -> None:
        self.lost.serving(node_id, message.message_id, message.expires_at, message.priority)
        await self._serve(transport, node_id, message)

    def _on_reply(self, node_id: bytes, message: StandardMessage, reply_to: bytes) -> None:
        waiter = self._waiting.get(reply_to)
        outbox = self.outbox
        if waiter is None and outbox is not None:
            self.tasks.start(
                node_id,
                "outbox_reply",
                OUTBOX_REPLIES_PER_PEER,
                lambda: self._outbox_reply(outbox, node_id, message, reply_to),
            )
            return
        if waiter is None and self._queued.get(reply_to, (b"",))[0] == node_id:
            del self._queued[reply_to]
            self.counters["late_replies"] += 1
            log.info("late reply to queued message %s from %s", reply_to.hex(), node_id.hex())
            return
        if waiter is None or waiter.node_id != node_id:
            self._refuse("envelope.unexpected_reply")
            return
        self.counters["replies"] += 1
        waiter.reply = message
        waiter.done.set()
        waiter.poke()

    async def _outbox_reply(
        self, outbox: Outbox, node_id: bytes, message: StandardMessage, reply_to: bytes
    ) -> None:
        kept = pack(
            {"from": str(message.sender), "intent": message.intent, "payload": message.payload}
        )
        if await outbox.replied(node_id, reply_to, kept):
            self.counters["replies"] += 1
            late = self._late.get(reply_to)
            if late is not None:
                late.done.set()
                late.poke()
        elif self._queued.get(reply_to, (b"",))[0] == node_id:
            del self._queued[reply_to]
            self.counters["late_replies"] += 1
        else:
            self._refuse("envelope.unexpected_reply")

    async def _answer(self, node_id: bytes, message: StandardMessage) -> StandardMessage:
        """The reply to a request from `node_id`: the local bus's, or `forbidden` by policy."""
        why = self.admit(node_id, message.priority)
        if why is not None:
            self._refuse("policy.forbidden")
            log.info("refused a request from %s: %s", node_id.hex(), why)
            return self.error_reply(message, "forbidden", why)
        return await self.local(message, None)

    async def _serve(self, transport: Transport, node_id: bytes, message: StandardMessage) -> None:
        reply = await self._answer(node_id, message)
        token = REPLYING_TO.set(_REQUEST_REF.get())  # the request's event, for Nostr's e tag
        try:
            ends = LinkEnds(sender=self.node_id, receiver=node_id)
            data = encode(reply, link=ends)
            await self.lost.send_reply(transport, node_id, message.message_id, data, reply.priority)
        except (TransportError, UsageError) as exc:
            log.info("could not send the reply to %s: %s", node_id.hex(), exc)
        finally:
            REPLYING_TO.reset(token)

    def status(self) -> list[dict[str, Any]]:
        out = []
        for transport in self.transports:
            out.append(
                {
                    "name": transport.name,
                    "interfaces": [
                        {
                            "name": i.name,
                            "kind": i.kind,
                            "online": i.online,
                            "bitrate": i.bitrate,
                            "mtu": i.mtu,
                            "tx_bytes": i.tx_bytes,
                            "rx_bytes": i.rx_bytes,
                        }
                        for i in transport.interfaces()
                    ],
                    "peers": len(transport.peers()),
                    "counters": transport.counters(),
                    **transport.describe(),
                }
            )
        return out


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True
