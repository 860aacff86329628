"""The outbox: messages that must arrive, until the recipient says they did.

A message the caller marks as one that must arrive (`send --must-arrive`, or an intent listed in
`[delivery] must_arrive`) is committed to the store's `outbox` table before the caller hears
"queued" (so a `kill -9` a moment later loses nothing), then sent as a DELIVER frame
(`core.frames`). The recipient commits the message id to its replay table, answers with an ACKS
frame and hands the message to its agent only the first time; a duplicate is acknowledged again
and dropped. The sender marks the row delivered on the ack; a reply that comes later is kept with
the row (`kai-mesh outbox`). The reply is an ordinary message, not one that must arrive: a row
delivered without its reply stays in `unreplied` for a while, and the router asks the recipient for
the reply if it is late (runtime/messaging/lost_replies.py), as it does for a plain request.

When to try again, when to leave a message with LXMF propagation and when to give it up is
decided by the sans-IO scheduler (`core.messaging.outbox.OutboxScheduler`: backoff, "heard from
the recipient → retry now", hand-off, expiry); this module is its shell. It keeps the rows, does
the store I/O (through `Store.run_sync`), sends over the router, feeds the scheduler what happens
and carries out its commands; the timer driver (runtime/timers.py) calls it back. Each retry goes
over a freshly opened link: after a partition an old link can look alive for minutes and swallow
what is sent on it (LAB.md).

The scheduler runs on trio's clock; the rows keep wall-clock times (`created_at`, `expires_at`),
which are turned into trio time once, when a row is committed or loaded. Rows are loaded again
when the node starts, so a message committed before a crash goes out after it. The recipient
acknowledges once the message is committed to its inbox, before its agent has run; a recipient
that crashes before serving it serves it after its restart (runtime/messaging/durable_inbox.py).
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import trio

from kai_mesh.core.errors import StoreError, TransportError
from kai_mesh.core.messaging.envelope import Priority
from kai_mesh.core.messaging.frames import encode_deliver
from kai_mesh.core.messaging.outbox import (
    ATTEMPT_TIMEOUT,
    CancelSend,
    Command,
    Expire,
    HandOff,
    MarkDelivered,
    OutboxScheduler,
    Record,
    SendNow,
)
from kai_mesh.core.messaging.retry import RetryPolicy
from kai_mesh.runtime.store import OutboxRow, Store
from kai_mesh.runtime.timers import TimerDriver

log = logging.getLogger(__name__)

SendFrame = Callable[[bytes, bytes, Priority], Awaitable[None]]
StoreAndForward = Callable[[bytes, bytes], Awaitable[bool]]
Emit = Callable[[str, dict[str, Any]], None]

HANDOFF_TIMEOUT = 10.0  # store-and-forward that has not taken the message in this long did not
KEEP_DONE_FOR = 7 * 24 * 3600.0  # finished rows stay visible in `kai-mesh outbox` this long
MAX_UNREPLIED = 1024  # delivered rows whose reply may still be asked for (the oldest go first)


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
        self._clock = clock  # wall clock: the rows' times, `done_at`
        self.scheduler = OutboxScheduler(
            policy,
            rng or random.Random(),
            attempt_timeout=ATTEMPT_TIMEOUT,
            can_hand_off=store_and_forward is not None,
        )
        self._timer = TimerDriver(self)
        self._store: Store | None = None
        self._rows: dict[bytes, OutboxRow] = {}  # waiting rows, by message id
        self._sending: dict[bytes, trio.CancelScope] = {}  # attempts under way
        self._nursery: trio.Nursery | None = None
        self.counters = {"committed": 0, "attempts": 0, "delivered": 0, "expired": 0}
        self.counters["handed_off"] = 0
        #: Rows delivered whose reply has not come yet, oldest first: what the router may ask for.
        self.unreplied: OrderedDict[bytes, OutboxRow] = OrderedDict()

    def attach(self, store: Store) -> None:
        self._store = store

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        store = self._need_store()
        rows = await store.run_sync(lambda: store.outbox_rows(state="waiting"))
        for row in rows:
            self._add(row)
        if rows:
            log.info("outbox: %d message(s) from before the restart still wait", len(rows))
        before = self._clock() - KEEP_DONE_FOR
        await store.run_sync(lambda: store.outbox_forget_done(before))
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._timer.run)
            task_status.started()

    # ---- what the router and the node call ----------------------------------------------------

    async def commit(self, row: OutboxRow) -> None:
        """Commit `row` (it is safe once this returns) and schedule its first attempt."""
        store = self._need_store()
        await store.run_sync(lambda: store.outbox_add(row))
        self.counters["committed"] += 1
        self._add(row)

    def heard_from(self, node_id: bytes) -> None:
        """The recipient is back (a heartbeat, a message): retry what waits for it now, unless
        it went out so recently that its ack may still be on the way."""
        self._start(self.scheduler.heard_from(node_id, trio.current_time()))

    def busy(self, node_id: bytes, message_id: bytes) -> None:
        """The recipient dropped this message's DELIVER as busy: slow down (core scheduler)."""
        self.counters["busy"] = self.counters.get("busy", 0) + 1
        self._start(self.scheduler.busy(node_id, message_id, trio.current_time()))

    async def acked(self, node_id: bytes, message_ids: list[bytes]) -> None:
        await self._carry_out(self.scheduler.acked(node_id, message_ids, trio.current_time()))

    async def replied(self, node_id: bytes, message_id: bytes, reply: bytes) -> bool:
        """Keep a reply to an outbox message with its row; True if it was one of ours."""
        store = self._need_store()
        row = self._rows.get(message_id) or await store.run_sync(
            lambda: store.outbox_get(message_id)
        )
        if row is None or row.node_id != node_id:
            return False
        if row.state == "waiting":  # the reply overtook the ack: it proves delivery as well
            await self.acked(node_id, [message_id])
        self.unreplied.pop(message_id, None)
        await store.run_sync(lambda: store.outbox_update(message_id, reply=reply))
        self._emit("outbox", {"event": "reply", "message_id": message_id.hex()})
        return True

    def waiting(self) -> int:
        return len(self._rows)

    def sending(self, message_id: bytes) -> bool:
        """Whether an attempt for this message is under way now (opening a link, say)."""
        return message_id in self._sending

    # ---- the timer driver's side --------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self.scheduler.get_timer()

    def handle_timer(self, now: float) -> None:
        self._start(self.scheduler.handle_timer(now))

    # ---- carrying out the scheduler's commands ------------------------------------------------

    def _add(self, row: OutboxRow) -> None:
        """Hand a committed or reloaded row to the scheduler, its wall-clock times on trio's."""
        now, wall = trio.current_time(), self._clock()
        self._rows[row.message_id] = row
        self.scheduler.add(
            row.message_id,
            row.node_id,
            now=now,
            created_at=now - (wall - row.created_at),
            expires_at=now + (row.expires_at - wall),
            attempts=row.attempts,
            last_error=row.last_error,
            handed_off=row.handed_off,
        )
        self._timer.moved()

    def _start(self, commands: list[Command]) -> None:
        """Carry out commands from a synchronous caller: what must wait for I/O gets a task."""
        for command in commands:
            if isinstance(command, CancelSend):
                scope = self._sending.get(command.message_id)
                if scope is not None:
                    scope.cancel()
            elif self._nursery is not None:
                self._nursery.start_soon(self._carry_out, [command])
        self._timer.moved()

    async def _carry_out(self, commands: Sequence[Command]) -> None:
        """Carry out, in order, the commands the scheduler just gave (its timer may have moved)."""
        self._timer.moved()
        for command in commands:
            if isinstance(command, SendNow):
                await self._attempt(command)
            elif isinstance(command, HandOff):
                taken = await self._hand_off(command)
                now = trio.current_time()
                await self._carry_out(
                    self.scheduler.handed_off(command.message_id, now, taken=taken)
                )
            elif isinstance(command, Record):
                await self._record(command)
            elif isinstance(command, MarkDelivered):
                await self._finish(command.message_id, "delivered")
            elif isinstance(command, Expire):
                await self._finish(command.message_id, "expired")
            else:
                self._start([command])

    async def _attempt(self, command: SendNow) -> None:
        row = self._rows.get(command.message_id)
        if row is None:
            return  # acknowledged between the timer and this task: the scheduler forgot it too
        if command.fresh_link:
            self._reset_link(row.node_id)  # never trust a link that already lost this message
        error: str | None = None
        with trio.CancelScope() as scope:
            self._sending[row.message_id] = scope
            try:
                await self._send(row.node_id, encode_deliver(row.message), Priority(row.priority))
            except TransportError as exc:
                error = str(exc)
            finally:
                del self._sending[row.message_id]
        self.counters["attempts"] += 1
        now = trio.current_time()
        await self._carry_out(
            self.scheduler.sent(row.message_id, now, error=error, cancelled=scope.cancelled_caught)
        )

    async def _hand_off(self, command: HandOff) -> bool:
        row = self._rows.get(command.message_id)
        if self._store_and_forward is None or row is None:
            return False
        taken = False
        with trio.move_on_after(HANDOFF_TIMEOUT):
            try:
                taken = await self._store_and_forward(row.node_id, encode_deliver(row.message))
            except TransportError as exc:
                log.info("outbox: store-and-forward of %s failed: %s", row.message_id.hex(), exc)
        if taken:
            self.counters["handed_off"] += 1
            self._emit("outbox", {"event": "handed_off", "message_id": row.message_id.hex()})
        return taken

    async def _record(self, record: Record) -> None:
        row = self._rows.get(record.message_id)
        if row is None:
            return
        attempts, last_error, handed_off = record.attempts, record.last_error, record.handed_off
        self._rows[row.message_id] = replace(
            row, attempts=attempts, last_error=last_error, handed_off=handed_off
        )
        await self._update(
            row.message_id, attempts=attempts, last_error=last_error, handed_off=handed_off
        )

    async def _finish(self, message_id: bytes, state: str) -> None:
        row = self._rows.pop(message_id, None)
        if row is None:
            return
        done_at = self._clock()
        if state == "delivered":
            self.unreplied[message_id] = row
            while len(self.unreplied) > MAX_UNREPLIED:
                self.unreplied.popitem(last=False)
        await self._update(message_id, state=state, done_at=done_at)
        self.counters[state] += 1
        self._emit(
            "outbox",
            {
                "event": state,
                "message_id": message_id.hex(),
                "to": row.destination,
                "attempts": row.attempts,
                "after_s": round(done_at - row.created_at, 3),
            },
        )
        log.info("outbox: %s %s after %d attempt(s)", message_id.hex(), state, row.attempts)

    async def _update(self, message_id: bytes, **changes: Any) -> None:
        store = self._need_store()
        try:
            await store.run_sync(lambda: store.outbox_update(message_id, **changes))
        except StoreError as exc:  # the row stays in memory; the next change tries again
            log.warning("outbox: could not record %s: %s", message_id.hex(), exc)

    def _need_store(self) -> Store:
        if self._store is None:
            raise StoreError("the outbox has no store attached")
        return self._store
