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
Every refusal is counted by reason (`kai-mesh status`), never raised into the node.

Store-and-forward: when the direct send fails (the transport raises, or the deadline passes
before it could send) and a transport offers `store_and_forward(node_id, data)` (LXMF), the
envelope is left there and the caller gets a `queued` reply at once instead of waiting: payload
`{"queued": "lxmf-propagated", "node": …, "message_id": …}`. A reply that arrives later for such
a message is counted as `late_replies` (no one waits for it any more).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from kai_mesh.core.address import AgentAddress
from kai_mesh.core.envelope import EnvelopeDecoder, LinkEnds, StandardMessage, encode
from kai_mesh.core.errors import ProtocolError, TransportError, UsageError
from transports.base import MessageReceived, PeerInfo, PeerSeen, PingResult, Transport

log = logging.getLogger(__name__)

LocalHandler = Callable[[StandardMessage, float | None], Awaitable[StandardMessage]]
ErrorReply = Callable[[StandardMessage, str, str], StandardMessage]
StoreAndForward = Callable[[bytes, bytes], Awaitable[bool]]


@dataclass(eq=False)
class _Waiter:
    node_id: bytes
    done: trio.Event = field(default_factory=trio.Event)
    reply: StandardMessage | None = None


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
    ) -> None:
        self.node_id = node_id
        self.transports = list(transports)
        self.decoder = decoder
        self.local = local
        self.error_reply = error_reply
        # Defaults to the first transport that offers it (LXMF); transports that serve guests
        # get the local bus.
        offered = [getattr(t, "store_and_forward", None) for t in self.transports]
        self.store_and_forward = store_and_forward or next((f for f in offered if f), None)
        for transport in self.transports:
            bind_local = getattr(transport, "bind_local", None)
            if bind_local is not None:
                bind_local(local)
        self.refused: dict[str, int] = {}
        self.counters = {"sent": 0, "received": 0, "replies": 0, "queued": 0, "late_replies": 0}
        self._waiting: dict[bytes, _Waiter] = {}
        self._queued: dict[bytes, tuple[bytes, int]] = {}  # message id -> (node id, expires_at)
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for transport in self.transports:
                await nursery.start(transport.run)
                nursery.start_soon(self._pump, transport)
            task_status.started()

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    # ---- outbound ---------------------------------------------------------------------------

    def locate(self, node: str) -> tuple[Transport, bytes]:
        """The transport and node id for a node name or 32-hex id; raises `UsageError`."""
        node_id = bytes.fromhex(node) if len(node) == 32 and _is_hex(node) else None
        for transport in self.transports:
            if node_id is not None:
                if any(p.node_id == node_id for p in transport.peers()):
                    return transport, node_id
                continue
            resolve = getattr(transport, "resolve_name", None)
            found = resolve(node) if resolve is not None else None
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
        limit = max(0.0, message.expires_at - time.time())
        if reply_within is not None:
            limit = min(limit, reply_within)
        waiter = self._waiting[message.message_id] = _Waiter(node_id)
        # Every transport proves both ends (a verified link, an LXMF signature over a member
        # record): the envelope leaves their node ids out (core.envelope.LinkEnds).
        data = encode(message, link=LinkEnds(sender=self.node_id, receiver=node_id))
        failure: str | None = None
        sent = False
        try:
            with trio.move_on_after(limit):
                try:
                    await transport.send(node_id, data)
                except TransportError as exc:
                    failure = str(exc)
                else:
                    sent = True
                    self.counters["sent"] += 1
                    await waiter.done.wait()
        finally:
            del self._waiting[message.message_id]
        if not sent:
            queued = await self._store_and_forward(message, node_id, data)
            if queued is not None:
                return queued
            if failure is not None:
                return self.error_reply(message, "unreachable", failure)
        if waiter.reply is None:
            return self.error_reply(message, "timeout", f"no reply from {to.node} in time")
        return waiter.reply

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
        now = int(time.time())
        self._queued = {k: v for k, v in self._queued.items() if v[1] > now}
        self._queued[message.message_id] = (node_id, message.expires_at)
        self.counters["queued"] += 1
        payload = {
            "queued": "lxmf-propagated",
            "node": str(message.to.node) if isinstance(message.to, AgentAddress) else None,
            "message_id": message.message_id.hex(),
        }
        return replace(self.error_reply(message, "queued", ""), intent="queued", payload=payload)

    async def ping(self, node: str) -> tuple[PingResult, bytes]:
        transport, node_id = self.locate(node)
        return await transport.ping(node_id), node_id

    def peers(self) -> list[PeerInfo]:
        return [peer for transport in self.transports for peer in transport.peers()]

    # ---- inbound ----------------------------------------------------------------------------

    async def _pump(self, transport: Transport) -> None:
        async for event in transport.events:
            if isinstance(event, MessageReceived):
                self._on_message(transport, event)
            elif isinstance(event, PeerSeen):
                log.debug("peer %s seen on %s", event.peer.name, transport.name)

    def _on_message(self, transport: Transport, event: MessageReceived) -> None:
        self.counters["received"] += 1
        try:
            ends = LinkEnds(sender=event.node_id, receiver=self.node_id)
            decoded = self.decoder.decode(event.data, int(time.time()), link=ends)
        except ProtocolError as exc:
            self._refuse(f"envelope.{exc.reason}")
            log.debug("refused an envelope from %s: %s", event.node_id.hex(), exc)
            return
        message = decoded.message
        if not decoded.signed and message.sender.node.node_id != event.node_id:
            self._refuse("envelope.spoofed_sender")
            return
        if message.reply_to is not None:
            waiter = self._waiting.get(message.reply_to)
            if waiter is None and self._queued.get(message.reply_to, (b"",))[0] == event.node_id:
                del self._queued[message.reply_to]
                self.counters["late_replies"] += 1
                log.info(
                    "late reply to queued message %s from %s",
                    message.reply_to.hex(),
                    event.node_id.hex(),
                )
                return
            if waiter is None or waiter.node_id != event.node_id:
                self._refuse("envelope.unexpected_reply")
                return
            self.counters["replies"] += 1
            waiter.reply = message
            waiter.done.set()
            return
        assert self._nursery is not None
        self._nursery.start_soon(self._serve, transport, event.node_id, message)

    async def _serve(self, transport: Transport, node_id: bytes, message: StandardMessage) -> None:
        reply = await self.local(message, None)
        try:
            ends = LinkEnds(sender=self.node_id, receiver=node_id)
            await transport.send(node_id, encode(reply, link=ends))
        except (TransportError, UsageError) as exc:
            log.info("could not send the reply to %s: %s", node_id.hex(), exc)

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
                    **(getattr(transport, "describe", dict)()),
                }
            )
        return out


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True
