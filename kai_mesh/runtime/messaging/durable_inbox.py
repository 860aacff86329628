"""The inbox: a message that must arrive, kept from its ack until its reply has left.

The recipient of a DELIVER frame commits the message id to the replay table and the envelope, as
it came, to the store's `inbox` table in one transaction (`Store.inbox_take`), and only then
acknowledges it: from the ack on, the sender holds the message delivered and a retry is refused as
a replay, so the inbox is the message's only copy. The row is dropped once the agent's reply has
been handed to the transport (or could not be: a reply to a message that must arrive is sent once,
as any reply is).

A row still there when the node starts belongs to a message whose serving a crash interrupted:
it is decoded again and served again, and its reply goes to the sender over whichever transport
knows it (tried again with backoff until the message expires: right after a start no peer may
have been heard yet). So the agent may run twice for such a message, once before the crash and
once after: at-least-once across a crash in the agent, exactly-once otherwise (docs/delivery.md).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable

import trio

from kai_mesh.core.errors import ProtocolError, StoreError, TransportError, UsageError
from kai_mesh.core.messaging.envelope import (
    EnvelopeDecoder,
    LinkEnds,
    Priority,
    StandardMessage,
    encode,
)
from kai_mesh.core.messaging.retry import RetryPolicy
from kai_mesh.runtime.store import InboxRow, Store

log = logging.getLogger(__name__)

#: Run the message through policy and the local bus; the reply (an error reply when refused).
Answer = Callable[[bytes, StandardMessage], Awaitable[StandardMessage]]
#: Send bytes to a peer over any transport that knows it; raises `TransportError`.
SendFrame = Callable[[bytes, bytes, Priority], Awaitable[None]]


class Inbox:
    """See the module docstring. `run()` once the router's transports run."""

    def __init__(
        self,
        *,
        store: Store,
        node_id: bytes,
        decoder: EnvelopeDecoder,
        answer: Answer,
        send: SendFrame,
        refuse: Callable[[str], None],
        count: Callable[[str], None],
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._wall_clock = wall_clock  # only for what the wire carries as wall time
        self._store = store
        self._node_id = node_id
        self._decoder = decoder
        self._answer = answer
        self._send = send
        self._refuse = refuse
        self._count = count
        self._policy = policy or RetryPolicy()
        self._rng = rng or random.Random()

    async def take(self, sender: bytes, message: StandardMessage, envelope: bytes) -> bool:
        """Commit the message's id and envelope (safe to ack once this returns); False for a
        message already seen, which is not kept again. Raises `StoreError`."""
        row = InboxRow(
            sender=sender,
            message_id=message.message_id,
            envelope=envelope,
            expires_at=message.expires_at,
            priority=int(message.priority),
            received_at=self._wall_clock(),
        )
        return await self._store.run_sync(lambda: self._store.inbox_take(row))

    async def done(self, sender: bytes, message_id: bytes) -> None:
        """The message was served: drop its row. A row that cannot be dropped is served again
        after the next start, which the contract allows."""
        try:
            await self._store.run_sync(lambda: self._store.inbox_done(sender, message_id))
        except StoreError as exc:
            log.warning("inbox: could not drop %s: %s", message_id.hex(), exc)

    async def run(self) -> None:
        """Serve again, each in its own task, every message a stop interrupted."""
        now = int(self._wall_clock())
        store = self._store
        await store.run_sync(lambda: store.forget_seen_before(now))
        rows = await store.run_sync(lambda: store.inbox_rows(now))
        if not rows:
            return
        log.info("inbox: %d message(s) interrupted by the last stop are served again", len(rows))
        async with trio.open_nursery() as nursery:
            for row in rows:
                nursery.start_soon(self._serve_again, row)

    async def _serve_again(self, row: InboxRow) -> None:
        ends = LinkEnds(sender=row.sender, receiver=self._node_id)
        now = int(self._wall_clock())
        try:
            decoded = self._decoder.decode(row.envelope, now, link=ends, remember=False)
        except ProtocolError as exc:  # expired since, or its sender is no longer a member
            self._refuse(f"inbox.{exc.reason}")
            await self.done(row.sender, row.message_id)
            return
        message = decoded.message
        if not decoded.signed and message.sender.node.node_id != row.sender:
            self._refuse("inbox.spoofed_sender")  # checked on arrival: a row written by hand
            await self.done(row.sender, row.message_id)
            return
        self._count("inbox_reserved")
        log.info("inbox: serving %s from %s again", row.message_id.hex(), row.sender.hex())
        reply = await self._answer(row.sender, message)
        try:
            data = encode(reply, link=LinkEnds(sender=self._node_id, receiver=row.sender))
        except UsageError as exc:
            log.info("inbox: the reply to %s cannot be encoded: %s", row.message_id.hex(), exc)
        else:
            await self._send_until_expiry(row.sender, data, reply.priority, message.expires_at)
        await self.done(row.sender, row.message_id)

    async def _send_until_expiry(
        self, node_id: bytes, data: bytes, priority: Priority, expires_at: int
    ) -> None:
        # The envelope's wall-clock expiry becomes one trio deadline; the retries wait on trio's.
        deadline = trio.current_time() + (expires_at - self._wall_clock())
        attempts = 0
        while True:
            try:
                await self._send(node_id, data, priority)
                return
            except TransportError as exc:
                attempts += 1
                delay = self._policy.delay(attempts, self._rng.random())
                if trio.current_time() + delay > deadline:
                    log.info("inbox: no reply sent to %s before expiry: %s", node_id.hex(), exc)
                    return
            await trio.sleep(delay)
