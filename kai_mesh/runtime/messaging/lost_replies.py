"""The router's half of `core.messaging.reply_asks`: ask for a reply that is late, answer such asks.

A requester whose reply has not come a few round trips after the request left sends an ASK (on
the same transport, at the request's priority, through the egress lanes like everything else),
backing off; an UNKNOWN answer sends the request again. The answerer remembers each request it
served and the bytes of its reply until the request expires, and answers from that. Transports
that acknowledge on their own (LXMF: delivery receipts, propagation) are never asked over.

A message that must arrive is acknowledged before its agent answers, and its reply travels as an
ordinary message: a reply lost after the ack would never come (the sender has no reason to send
again). So the sender asks for it too (`await_late_reply`), from the ack on, the same way, but
never resends the message (the ack proved it arrived) and stops after `MAX_LATE_ASKS` asks, at
an UNKNOWN (the recipient restarted and forgot the reply) or when the message expires.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio

from kai_mesh.core.errors import ProtocolError, TransportError
from kai_mesh.core.messaging.envelope import Priority, StandardMessage
from kai_mesh.core.messaging.reply_asks import (
    AnsweredRequests,
    AskOp,
    AskSchedule,
    Resend,
    decode_ask,
    encode_ask,
)
from kai_mesh.runtime.messaging.egress import AirtimeShed, Egress
from transports.base import Transport

log = logging.getLogger(__name__)

MIN_FIRST_ASK = 2.0  # seconds; a LAN round trip is far less, but an agent takes a moment
REPLY_BITS = 4_000  # a typical reply (about 500 bytes): its airtime is added to the first wait
# Asks for the reply to a delivered must-arrive message: 2, 4, 8 … 60 s apart, about four
# minutes in all on a LAN; a reply still not there by then is not coming (`kai-mesh outbox`
# shows the row delivered without it).
MAX_LATE_ASKS = 8


@dataclass(eq=False)
class Waiter:
    """One request waiting for its reply."""

    node_id: bytes
    done: trio.Event = field(default_factory=trio.Event)
    reply: StandardMessage | None = None
    unknown: bool = False  # the answerer said it never got the request
    wake: trio.Event = field(default_factory=trio.Event)

    def poke(self) -> None:
        self.wake.set()


def asks_over(transport: Transport) -> bool:
    """Whether a late reply is asked for over `transport` (not over one with its own receipts)."""
    return not transport.abilities.own_receipts


def _link_times(transport: Transport, node_id: bytes, bitrate: int | None) -> tuple[float, float]:
    rtt = next((p.rtt for p in transport.peers() if p.node_id == node_id and p.rtt), 0.0)
    return rtt, (REPLY_BITS / bitrate if bitrate else 0.0)


def first_wait(transport: Transport, node_id: bytes, bitrate: int | None) -> float:
    """How long after the request left to ask the first time: four round trips of the link,
    plus a reply's airtime on a slow interface, and never less than `MIN_FIRST_ASK`."""
    rtt, airtime = _link_times(transport, node_id, bitrate)
    return min(60.0, max(MIN_FIRST_ASK, 4 * rtt + airtime))


def crossing(transport: Transport, node_id: bytes, bitrate: int | None) -> float:
    """How soon after a reply left an ask may still have crossed it: a round trip plus the
    reply's airtime (at least half a second)."""
    rtt, airtime = _link_times(transport, node_id, bitrate)
    return max(0.5, 2 * rtt + airtime)


class LostReplies:
    """Both halves. `count` records what happened and `refuse` what was refused, by name
    (`kai-mesh status`)."""

    def __init__(
        self,
        egress: Egress,
        count: Callable[[str], None],
        refuse: Callable[[str], None],
        bitrate: Callable[[Transport, bytes], int | None],
    ) -> None:
        self.egress = egress
        self.count = count
        self.refuse = refuse
        self.bitrate = bitrate  # of the interface a peer is heard on
        self.answered = AnsweredRequests()

    # ---- the requester -------------------------------------------------------------------------

    async def await_reply(
        self,
        transport: Transport,
        waiter: Waiter,
        message_id: bytes,
        request: bytes,
        priority: Priority,
        first: float,
    ) -> None:
        """Wait until `waiter.done`, asking when the reply is late; cancel to give up."""
        schedule = AskSchedule(first=first)
        schedule.start(trio.current_time())
        while not waiter.done.is_set():
            with trio.move_on_at(schedule.next_at):
                await waiter.wake.wait()
            waiter.wake = trio.Event()
            if waiter.done.is_set():
                return
            now = trio.current_time()
            if waiter.unknown:
                waiter.unknown = False
                if schedule.may_resend():
                    self.count("requests_resent")
                    await self._send(transport, waiter.node_id, request, priority)
                    schedule.start(trio.current_time())
            elif now >= schedule.next_at:
                self.count("asks_sent")
                ask = encode_ask(AskOp.WHERE, message_id)
                await self._send(transport, waiter.node_id, ask, priority)
                schedule.asked(trio.current_time())

    async def await_late_reply(
        self,
        transport: Transport,
        waiter: Waiter,
        message_id: bytes,
        priority: Priority,
        first: float,
        replied: Callable[[], bool],
    ) -> bool:
        """After the ack of a must-arrive message: ask for its reply while it is late, until
        `waiter.done` or `replied()`; False when it gave up (cancel to stop at expiry)."""
        schedule = AskSchedule(first=first, resends=0)
        schedule.start(trio.current_time())
        asks = 0
        while True:
            with trio.move_on_at(schedule.next_at):
                await waiter.wake.wait()
            waiter.wake = trio.Event()
            if waiter.done.is_set() or replied():
                return True
            if waiter.unknown:
                return False  # the recipient no longer has it: asking again cannot help
            if trio.current_time() < schedule.next_at:
                continue
            if asks == MAX_LATE_ASKS:
                return False
            asks += 1
            self.count("asks_sent")
            ask = encode_ask(AskOp.WHERE, message_id)
            await self._send(transport, waiter.node_id, ask, priority)
            schedule.asked(trio.current_time())

    async def _send(
        self, transport: Transport, node_id: bytes, data: bytes, priority: Priority
    ) -> None:
        try:
            await self.egress.send(transport, node_id, data, priority)
        except (TransportError, AirtimeShed) as exc:
            # The next ask (or the caller's deadline) decides; nothing to tell anyone yet.
            log.debug("ask or resend to %s not sent: %s", node_id.hex(), exc)

    # ---- the answerer --------------------------------------------------------------------------

    def serving(self, node_id: bytes, message_id: bytes, expires_at: int, priority: int) -> None:
        self.answered.serving((node_id, message_id), expires_at, priority, time.time())

    async def send_reply(
        self,
        transport: Transport,
        node_id: bytes,
        request_id: bytes,
        reply: bytes,
        priority: Priority,
    ) -> None:
        """Send a reply, remembering it to send again if asked; raises what `Egress.send` does."""
        key = (node_id, request_id)
        self.answered.replying(key, reply)
        try:
            await self.egress.send(transport, node_id, reply, priority)
        finally:
            self.answered.sent(key, trio.current_time())

    async def on_ask(
        self,
        transport: Transport,
        node_id: bytes,
        data: bytes,
        waiters: Mapping[bytes, Waiter],
    ) -> None:
        """An ASK frame from `node_id` (proven by the transport)."""
        try:
            op, message_id = decode_ask(data)
        except ProtocolError as exc:
            self.refuse(f"ask.{exc.reason}")
            return
        if op is not AskOp.WHERE:
            waiter = waiters.get(message_id)
            if waiter is None or waiter.node_id != node_id:
                self.refuse("ask.unexpected")
            elif op is AskOp.UNKNOWN:
                waiter.unknown = True
                waiter.poke()
            return
        grace = crossing(transport, node_id, self.bitrate(transport, node_id))
        key = (node_id, message_id)
        said = self.answered.answer(key, trio.current_time(), time.time(), grace)
        if isinstance(said, Resend):
            self.count("replies_resent")
            data, priority = said.reply, Priority(said.priority)
        else:
            data, priority = encode_ask(said, message_id), Priority.NORMAL
        try:
            await self.egress.send(transport, node_id, data, priority)
        except (TransportError, AirtimeShed) as exc:
            log.debug("answer to an ask from %s not sent: %s", node_id.hex(), exc)
