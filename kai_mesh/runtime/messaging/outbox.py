"""The outbox: messages that must arrive, until the recipient says they did.

A message the caller marks as one that must arrive (`send --must-arrive`, or an intent listed in
`[delivery] must_arrive`) is committed to the store's `outbox` table before the caller hears
"queued" (so a `kill -9` a moment later loses nothing), then sent as a DELIVER frame
(`core.frames`). The recipient commits the message id to its replay table, answers with an ACKS
frame and hands the message to its agent only the first time; a duplicate is acknowledged again
and dropped. The sender marks the row delivered on the ack; a reply that comes later is kept with
the row (`kai-mesh outbox`).

Without an ack the message is tried again with backoff (`core.retry`), each retry over a freshly
opened link: after a partition an old link can look alive for minutes and swallow what is sent on
it (LAB.md). Hearing from the recipient again (its heartbeat, any message) retries at once, which is
what bounds delivery after a heal. A message still unacknowledged `handoff_after` seconds after it
was committed is also left with LXMF propagation; direct retries continue until an ack or until the
message expires.

Rows are loaded again when the node starts, so a message committed before a crash goes out after
it. The recipient acknowledges once the message is committed to its inbox, before its agent has
run; a recipient that crashes before serving it serves it after its restart (runtime/inbox.py).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import trio

from kai_mesh.core.errors import StoreError, TransportError
from kai_mesh.core.messaging.envelope import Priority
from kai_mesh.core.messaging.frames import encode_deliver
from kai_mesh.core.messaging.retry import RetryPolicy
from kai_mesh.runtime.store import OutboxRow, Store

log = logging.getLogger(__name__)

SendFrame = Callable[[bytes, bytes, Priority], Awaitable[None]]
StoreAndForward = Callable[[bytes, bytes], Awaitable[bool]]
Emit = Callable[[str, dict[str, Any]], None]

ATTEMPT_TIMEOUT = 60.0  # an attempt that cannot even hand the frame over in this long has failed
KEEP_DONE_FOR = 7 * 24 * 3600.0  # finished rows stay visible in `kai-mesh outbox` this long


class Outbox:
    """See the module docstring. `run()` in the node's nursery after `attach(store)`."""

    def __init__(
        self,
        *,
        send: SendFrame,
        reset_link: Callable[[bytes], None],
        emit: Emit,
        policy: RetryPolicy,
        store_and_forward: StoreAndForward | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._send = send
        self._reset_link = reset_link
        self._emit = emit
        self.policy = policy
        self._store_and_forward = store_and_forward
        self._clock = clock
        self._rng = rng or random.Random()
        self._store: Store | None = None
        self._rows: dict[bytes, OutboxRow] = {}  # waiting rows, by message id
        self._due: dict[bytes, float] = {}  # message id -> trio time of its next attempt
        self._busy: set[bytes] = set()  # attempts in flight
        self._tried_at: dict[bytes, float] = {}  # trio time each message was last handed over
        # Attempts in flight (opening a link can take a minute): cancelled when the recipient
        # is heard again, so that a heal is not kept waiting by an attempt begun before it.
        self._in_flight: dict[bytes, tuple[float, trio.CancelScope]] = {}
        self._wake = trio.Event()
        self.counters = {"committed": 0, "attempts": 0, "delivered": 0, "expired": 0}
        self.counters["handed_off"] = 0

    def attach(self, store: Store) -> None:
        self._store = store

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        store = self._need_store()
        rows = await trio.to_thread.run_sync(lambda: store.outbox_rows(state="waiting"))
        now = trio.current_time()
        for row in rows:
            self._rows[row.message_id] = row
            self._due[row.message_id] = now
        if rows:
            log.info("outbox: %d message(s) from before the restart still wait", len(rows))
        await trio.to_thread.run_sync(store.outbox_forget_done, self._clock() - KEEP_DONE_FOR)
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                now = trio.current_time()
                for message_id in [m for m, at in self._due.items() if at <= now]:
                    del self._due[message_id]
                    if message_id not in self._busy:
                        self._busy.add(message_id)
                        nursery.start_soon(self._attempt, message_id)
                wake_at = min(self._due.values(), default=now + 3600)
                self._wake = trio.Event()
                with trio.move_on_at(wake_at):
                    await self._wake.wait()

    # ---- what the router and the node call ----------------------------------------------------

    async def commit(self, row: OutboxRow) -> None:
        """Commit `row` (it is safe once this returns) and schedule its first attempt."""
        store = self._need_store()
        await trio.to_thread.run_sync(store.outbox_add, row)
        self.counters["committed"] += 1
        self._rows[row.message_id] = row
        self._schedule(row.message_id, trio.current_time())

    def heard_from(self, node_id: bytes) -> None:
        """The recipient is back (a heartbeat, a message): retry what waits for it now, unless
        it went out so recently that its ack may still be on the way."""
        now = trio.current_time()
        for message_id, row in self._rows.items():
            if row.node_id != node_id:
                continue
            started, scope = self._in_flight.get(message_id, (now, None))
            if scope is not None and now - started >= self.policy.cap:
                scope.cancel()  # begun before the recipient came back: begin again
                continue
            if not row.attempts or message_id in self._busy:
                continue
            if (
                row.last_error is None
                and now - self._tried_at.get(message_id, 0.0) < self.policy.base
            ):
                continue
            self._schedule(message_id, now)

    async def acked(self, node_id: bytes, message_ids: list[bytes]) -> None:
        for message_id in message_ids:
            row = self._rows.get(message_id)
            if row is None or row.node_id != node_id:
                continue  # an ack for a message already settled, or not sent to that node
            await self._finish(row, "delivered")

    async def replied(self, node_id: bytes, message_id: bytes, reply: bytes) -> bool:
        """Keep a reply to an outbox message with its row; True if it was one of ours."""
        store = self._need_store()
        row = self._rows.get(message_id) or await trio.to_thread.run_sync(
            store.outbox_get, message_id
        )
        if row is None or row.node_id != node_id:
            return False
        if row.state == "waiting":  # the reply overtook the ack: it proves delivery as well
            await self._finish(row, "delivered")
        await trio.to_thread.run_sync(lambda: store.outbox_update(message_id, reply=reply))
        self._emit("outbox", {"event": "reply", "message_id": message_id.hex()})
        return True

    def waiting(self) -> int:
        return len(self._rows)

    def sending(self, message_id: bytes) -> bool:
        """Whether an attempt for this message is under way now (opening a link, say)."""
        return message_id in self._in_flight

    # ---- attempts ---------------------------------------------------------------------------

    def _schedule(self, message_id: bytes, at: float) -> None:
        self._due[message_id] = min(at, self._due.get(message_id, at))
        self._wake.set()

    async def _attempt(self, message_id: bytes) -> None:
        try:
            await self._try_once(message_id)
        finally:
            self._busy.discard(message_id)

    async def _try_once(self, message_id: bytes) -> None:
        row = self._rows.get(message_id)
        if row is None:
            return
        if row.expires_at <= self._clock():
            await self._finish(row, "expired")
            return
        if row.attempts:
            self._reset_link(row.node_id)  # never trust a link that already lost this message
        error: str | None = None
        with trio.move_on_after(ATTEMPT_TIMEOUT) as scope:
            self._in_flight[message_id] = (trio.current_time(), scope)
            try:
                await self._send(row.node_id, encode_deliver(row.message), Priority(row.priority))
            except TransportError as exc:
                error = str(exc)
            finally:
                del self._in_flight[message_id]
        again_now = scope.cancelled_caught and trio.current_time() < scope.deadline
        if scope.cancelled_caught:
            error = (
                "interrupted: the recipient was heard again"
                if again_now
                else (f"could not hand the message over in {ATTEMPT_TIMEOUT:.0f} s")
            )
        self._tried_at[message_id] = trio.current_time()
        self.counters["attempts"] += 1
        if message_id not in self._rows:
            return  # acknowledged while we were sending
        row = replace(row, attempts=row.attempts + 1, last_error=error)
        if not row.handed_off and self.policy.handoff_due(row.created_at, self._clock()):
            row = await self._hand_off(row)
        self._rows[message_id] = row
        await self._update(row, attempts=row.attempts, last_error=error, handed_off=row.handed_off)
        delay = 0.0 if again_now else self.policy.delay(row.attempts, self._rng.random())
        self._schedule(message_id, trio.current_time() + delay)

    async def _hand_off(self, row: OutboxRow) -> OutboxRow:
        if self._store_and_forward is None:
            return row
        taken = False
        with trio.move_on_after(10):
            try:
                taken = await self._store_and_forward(row.node_id, encode_deliver(row.message))
            except TransportError as exc:
                log.info("outbox: store-and-forward of %s failed: %s", row.message_id.hex(), exc)
        if not taken:
            return row
        self.counters["handed_off"] += 1
        self._emit("outbox", {"event": "handed_off", "message_id": row.message_id.hex()})
        return replace(row, handed_off=True)

    async def _finish(self, row: OutboxRow, state: str) -> None:
        if self._rows.pop(row.message_id, None) is None:
            return
        self._due.pop(row.message_id, None)
        self._tried_at.pop(row.message_id, None)
        done_at = self._clock()
        await self._update(row, state=state, done_at=done_at)
        self.counters[state] += 1
        self._emit(
            "outbox",
            {
                "event": state,
                "message_id": row.message_id.hex(),
                "to": row.destination,
                "attempts": row.attempts,
                "after_s": round(done_at - row.created_at, 3),
            },
        )
        log.info("outbox: %s %s after %d attempt(s)", row.message_id.hex(), state, row.attempts)

    async def _update(self, row: OutboxRow, **changes: Any) -> None:
        store = self._need_store()
        try:
            await trio.to_thread.run_sync(lambda: store.outbox_update(row.message_id, **changes))
        except StoreError as exc:  # the row stays in memory; the next change tries again
            log.warning("outbox: could not record %s: %s", row.message_id.hex(), exc)

    def _need_store(self) -> Store:
        if self._store is None:
            raise StoreError("the outbox has no store attached")
        return self._store
