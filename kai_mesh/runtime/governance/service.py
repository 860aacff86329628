"""The mesh's governance on this node: the machine, its records in sqlite, and their sync.

`core.governance.Governance` is the machine (proposals, votes, redemptions, certification, the
fold); this shell adds what needs I/O:

- **Records**: every record the machine keeps is committed to the store (`gov_objects`) before it
  is sent or acknowledged; on start the machine is rebuilt from them (the fold depends only on the
  set held, so the order does not matter, and a certified shutdown holds across restarts).
- **Push**: a record made here, or newly kept from a peer, is passed on at once. Where a
  transport can broadcast, one packet (`broadcast`) reaches every neighbour, and only peers
  further away get it over a link; a record heard by broadcast is passed on over links to peers
  further away, not broadcast again. Without a broadcast it goes over a link to every alive peer
  (a record already held is not kept again, so not pushed again). A neighbour that missed the
  packet catches up by the digest on the next heartbeat or announce.
- **Shutdown**: `halted()` gives the reason while a certified `emergency_shutdown` holds; the bus
  then refuses every request to a local agent (code `shutdown`). It holds across restarts, since
  the fold is rebuilt from the stored records, until a certified `shutdown_lift`.
- **Sync by digest**: the first 8 bytes of `Governance.sync_digest()` (the head, the winning
  invite claims and the head's open proposals with their votes) ride on heartbeats (slot 2);
  hearing another digest from a peer sends it our head (`[2, head]`, at most once per peer per
  `min_round_gap`: `core.sync.anti_entropy.AntiEntropy` decides when, as for the replicated
  state), and the peer answers with what we may lack (`Governance.objects_after`) in frames
  of at most `SYNC_MAX_BYTES` (a larger record goes alone).

Frames (`core.governance.sync_wire`): `0x15 ‖ msgpack [1, [record, …]]` (records) or
`0x15 ‖ msgpack [2, head]` (ask). Governance
traffic is rare and decides who may do what, so it goes at HIGH priority, never as background.
`now` for this node's own signatures is the wall clock here, never in the core.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar

import trio

from kai_mesh.core.errors import KaiMeshError, TransportError, UsageError
from kai_mesh.core.governance.machine import Governance, GovernanceState, Outcome
from kai_mesh.core.governance.sync_wire import (
    AskAfter,
    Records,
    chunk_records,
    decode_sync,
    encode_ask,
    encode_records,
)
from kai_mesh.core.governance.wire import parse_proposal
from kai_mesh.core.mesh.genesis import Genesis
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.frames import FRAME_GOVERNANCE
from kai_mesh.core.sync.anti_entropy import AntiEntropy, AskSync
from kai_mesh.runtime.messaging.frame_registry import FrameRegistry
from kai_mesh.runtime.store import Store
from kai_mesh.runtime.timers import TimerDriver

log = logging.getLogger(__name__)
_T = TypeVar("_T")

GOV_DIGEST = 2  # the heartbeat digest slot of the governance head
HEAD_PREFIX = 8  # bytes of the sync digest on heartbeats
SYNC_MAX_BYTES = 380  # as the replicated state's: one Reticulum link packet with room to spare
BROADCAST_MAX_BYTES = 380  # a record pushed by broadcast: one packet (RNS's PLAIN MDU is 464)
REPEAT_AFTER = (1.0, 2.0)  # a broadcast record goes again after 1 s plus up to 2 s (jitter)
FRAMES_PER_PEER = 2  # sync steps one peer may have this node working on at once
BROADCASTS_AT_ONCE = 4  # broadcast records being checked at once, from anyone
DEFAULT_EXPIRY = 7 * 24 * 3600  # seconds a proposal stays open unless told otherwise

SendFrame = Callable[[bytes, bytes], Awaitable[None]]
Emit = Callable[[str, dict[str, Any]], None]
Watcher = Callable[[GovernanceState], object]


def _call(watcher: Watcher, state: GovernanceState) -> None:
    try:
        watcher(state)
    except Exception:  # one broken watcher must not stop the others or the sync
        log.exception("governance watcher failed")


class GovernanceService:
    """See the module docstring. `await start(store)`, then `run()` in the node's nursery."""

    def __init__(
        self,
        *,
        secrets: NodeSecrets,
        genesis: Genesis,
        send: SendFrame,
        peers: Callable[[], list[bytes]],
        emit: Emit,
        initial_members: Mapping[bytes, bytes] | None = None,
        min_round_gap: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secrets = secrets
        self._genesis = genesis
        self._initial_members = initial_members
        self._send = send
        self._peers = peers
        self._emit = emit
        self._sync = AntiEntropy(min_gap=min_round_gap)
        self._timers = TimerDriver(self)
        self._clock = clock
        self._store: Store | None = None
        self.gov: Governance | None = None
        self._nursery: trio.Nursery | None = None
        self._lock = trio.Lock()  # receive + persist, one at a time
        self._watchers: list[Watcher] = []
        #: Sends a frame by broadcast on every transport that can; False if it could not (no
        #: airtime, no broadcast transport). Set by the wiring; None: links only.
        self.broadcast: Callable[[bytes], Awaitable[bool]] | None = None
        #: Hops to a peer (1: a neighbour that hears our broadcasts), None when unknown.
        self.hops: Callable[[bytes], int | None] = lambda node_id: None
        self._seen: GovernanceState | None = None
        #: Called (no arguments) whenever a record is newly kept, local or from a peer, even
        #: when the fold did not move (an open proposal, a vote): the sync digest changed.
        self.on_records: list[Callable[[], None]] = []
        self.counters = {"local_records": 0, "peer_records": 0, "asks_sent": 0, "frames_sent": 0}
        self.counters.update({"frames_received": 0, "send_failed": 0, "frames_refused": 0})
        self.counters.update({"broadcasts_sent": 0, "broadcasts_failed": 0})
        self.counters.update({"broadcasts_received": 0, "broadcast_unvouched": 0})

    # ---- life cycle -------------------------------------------------------------------------

    async def start(self, store: Store) -> None:
        """Rebuild the machine from every stored record."""
        self._store = store
        gov = Governance(self._genesis, self._initial_members)
        records = await self._db(store.gov_objects)
        for record in records:
            gov.receive(record)
        self.gov = gov
        state = gov.state
        self._changed()
        log.info(
            "governance: %d records restored, height %d%s",
            len(records),
            state.height,
            ", the mesh is SHUT DOWN" if state.shutdown else "",
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._timers.run)
            task_status.started()
            await trio.sleep_forever()

    # ---- local writes -----------------------------------------------------------------------

    def now(self) -> int:
        return int(self._clock())

    @property
    def own_key(self) -> bytes:
        """This node's public key."""
        return self._secrets.verify_key

    async def propose(
        self, kind: str, body: Mapping[str, Any], expires_in: int = DEFAULT_EXPIRY
    ) -> bytes:
        """A proposal by this node on the head, carrying its vote; returns its id.
        Raises `UsageError` (not an admin, bad kind or body, ...)."""
        gov = self.machine()
        if type(expires_in) is not int or expires_in <= 0:
            raise UsageError("expires_in: a positive whole number of seconds")
        now = self.now()
        async with self._lock:
            data = gov.propose(self._secrets, kind, body, now + expires_in, os.urandom(8), now)
            await self._persist([data])
        self._after_local(data)
        return parse_proposal(data).id

    async def vote(self, proposal_id: bytes) -> None:
        """This node's vote for an open proposal. Raises `UsageError`."""
        gov = self.machine()
        async with self._lock:
            data = gov.vote(self._secrets, proposal_id, self.now())
            await self._persist([data])
        self._after_local(data)

    async def withdraw(self, proposal_id: bytes) -> None:
        """This node's withdrawal of its own open proposal. Raises `UsageError`."""
        gov = self.machine()
        async with self._lock:
            data = gov.withdraw(self._secrets, proposal_id, self.now())
            await self._persist([data])
        self._after_local(data)

    def watch(self, watcher: Watcher) -> None:
        """Call `watcher(state)` now (if open) and whenever the fold changes: members,
        roles, policy and shutdown are read from the fold, never copied at start."""
        self._watchers.append(watcher)
        if self.gov is not None:
            _call(watcher, self.gov.state)

    def _changed(self) -> None:
        # Compared whole, not by head: a redeemed invite admits a member without moving the head.
        state = self.machine().state
        if state == self._seen:
            return
        self._seen = state
        for watcher in self._watchers:
            _call(watcher, state)

    def _records_kept(self) -> None:
        for hook in self.on_records:
            try:
                hook()
            except Exception:
                log.exception("governance records hook failed")

    def _after_local(self, data: bytes) -> None:
        self._changed()
        self._records_kept()
        self.counters["local_records"] += 1
        self._emit("governance", {"event": "changed", "origin": "local", "head": self.head_hex()})
        self._push(data, exclude=None)

    async def submit(self, data: bytes) -> Outcome:
        """A record from anywhere (this node's own or a peer's): kept, persisted, pushed on."""
        return (await self._take([data], origin=None))[0]

    # ---- sync -------------------------------------------------------------------------------

    async def _take(
        self, records: list[bytes], origin: bytes | None, *, broadcast: bool = False
    ) -> list[Outcome]:
        gov = self.machine()
        async with self._lock:
            outcomes = [gov.receive(r) for r in records]
            new = [r for r, o in zip(records, outcomes, strict=True) if o.stored]
            if new:
                await self._persist(new)
        if new:
            self._changed()
            self._records_kept()
            self.counters["peer_records" if origin or broadcast else "local_records"] += len(new)
            changed = any(o.changed for o in outcomes)
            self._emit(
                "governance",
                {
                    "event": "changed" if changed else "records",
                    "origin": "broadcast"
                    if broadcast
                    else "local"
                    if origin is None
                    else origin.hex(),
                    "records": len(new),
                    "head": self.head_hex(),
                },
            )
            for record in new:
                self._push(record, exclude=origin, heard_by_broadcast=broadcast)
        return outcomes

    def _push(self, record: bytes, exclude: bytes | None, heard_by_broadcast: bool = False) -> None:
        """Pass a new record on. With a broadcast, one packet reaches every neighbour (a shared
        radio channel carries it once, not once per peer), and only peers further away get it
        over a link; a record heard by broadcast is not broadcast again, since the sender's
        neighbours heard it too. A neighbour that missed the packet catches up by the digest
        on the next heartbeat."""
        if self._nursery is None:
            return
        frame = encode_records([record])
        targets = [node_id for node_id in self._peers() if node_id != exclude]
        if self.broadcast is None or len(frame) > BROADCAST_MAX_BYTES:
            for node_id in targets:
                self._nursery.start_soon(self._send_to, node_id, frame)
        elif heard_by_broadcast:
            for node_id in targets:
                if self.hops(node_id) != 1:
                    self._nursery.start_soon(self._send_to, node_id, frame)
        else:
            self._nursery.start_soon(self._broadcast_then_links, frame, targets)

    async def _broadcast_then_links(self, frame: bytes, targets: list[bytes]) -> None:
        assert self.broadcast is not None and self._nursery is not None
        sent = await self.broadcast(frame)
        self.counters["broadcasts_sent" if sent else "broadcasts_failed"] += 1
        for node_id in targets:
            if not sent or self.hops(node_id) != 1:
                self._nursery.start_soon(self._send_to, node_id, frame)
        if sent:
            # Once more, a moment later: a neighbour that lost the packet (radio loss, a
            # collision) gets it for one more packet, where the repair by digest costs a link
            # set-up and an exchange, and waits for a heartbeat (6.4 s apart at 5 kbit/s).
            await trio.sleep(REPEAT_AFTER[0] + random.random() * REPEAT_AFTER[1])
            if await self.broadcast(frame):
                self.counters["broadcasts_sent"] += 1

    def register_frames(self, frames: FrameRegistry) -> None:
        """GOVERNANCE frames come here, over links (at most `FRAMES_PER_PEER` per peer at once)
        and by broadcast (at most `BROADCASTS_AT_ONCE` from all broadcasters together)."""
        frames.on_task(
            FRAME_GOVERNANCE,
            lambda transport, node_id, data: self.on_frame(node_id, data),
            per_peer=FRAMES_PER_PEER,
        )
        frames.on_broadcast(FRAME_GOVERNANCE, task=self.on_broadcast, limit=BROADCASTS_AT_ONCE)

    async def on_broadcast(self, data: bytes) -> None:
        """A governance frame heard by broadcast: records only, and only those an admin signed
        or that claim an authorized invite (`Governance.vouched`): the sender is not proven."""
        self.counters["broadcasts_received"] += 1
        try:
            message = decode_sync(data)
        except KaiMeshError as exc:
            self.counters["frames_refused"] += 1
            log.debug("governance broadcast refused: %s", exc)
            return
        if not isinstance(message, Records):
            self.counters["frames_refused"] += 1
            return
        gov = self.machine()
        vouched = [record for record in message.records if gov.vouched(record)]
        self.counters["broadcast_unvouched"] += len(message.records) - len(vouched)
        if vouched:
            await self._take(vouched, origin=None, broadcast=True)

    def digests(self) -> dict[int, bytes]:
        """For heartbeats."""
        return {} if self.gov is None else {GOV_DIGEST: self.gov.sync_digest()[:HEAD_PREFIX]}

    def on_digests(self, node_id: bytes, digests: Mapping[int, bytes]) -> None:
        """A peer's heartbeat or announce: another digest starts an exchange with it."""
        theirs = digests.get(GOV_DIGEST)
        if theirs is None or self.gov is None:
            return
        self._asks(self._ready().digest_heard(node_id, theirs, trio.current_time()))

    @property
    def min_round_gap(self) -> float:
        """Seconds between two asks to one peer."""
        return self._sync.min_gap

    @min_round_gap.setter
    def min_round_gap(self, value: float) -> None:
        self._sync.min_gap = value
        self._timers.moved()

    def get_timer(self) -> float | None:
        """For the timer driver: when the anti-entropy machine needs the clock."""
        return self._sync.get_timer()

    def handle_timer(self, now: float) -> None:
        self._asks(self._ready().handle_timer(now))

    def _ready(self) -> AntiEntropy:
        """The anti-entropy machine, told our digest now (None: no asks before `start` and
        `run`)."""
        gov = self.gov if self._nursery is not None else None
        self._sync.local_digest(None if gov is None else gov.sync_digest()[:HEAD_PREFIX])
        return self._sync

    def _asks(self, asks: list[AskSync]) -> None:
        """Send the peers the machine chose our head, so that each answers with what we lack."""
        self._timers.moved()
        if not asks or self.gov is None or self._nursery is None:
            return
        frame = encode_ask(self.gov.head())
        for ask in asks:
            self.counters["asks_sent"] += 1
            self._nursery.start_soon(self._send_to, ask.peer, frame)

    async def on_frame(self, node_id: bytes, data: bytes) -> None:
        """A governance frame from a peer (the link proved `node_id`)."""
        gov = self.machine()
        self.counters["frames_received"] += 1
        try:
            message = decode_sync(data)
        except KaiMeshError as exc:
            self.counters["frames_refused"] += 1
            log.debug("governance frame from %s refused: %s", node_id.hex(), exc)
            return
        if isinstance(message, Records):
            await self._take(list(message.records), origin=node_id)
            return
        assert isinstance(message, AskAfter)
        for chunk in chunk_records(gov.objects_after(message.head), SYNC_MAX_BYTES):
            await self._send_to(node_id, encode_records(chunk))

    async def _send_to(self, node_id: bytes, frame: bytes) -> None:
        try:
            await self._send(node_id, frame)
        except TransportError as exc:
            self.counters["send_failed"] += 1
            log.debug("governance frame to %s not sent: %s", node_id.hex(), exc)
            return
        self.counters["frames_sent"] += 1

    # ---- persistence ------------------------------------------------------------------------

    async def _persist(self, records: list[bytes]) -> None:
        store = self._store
        assert store is not None
        await self._db(store.gov_add, records)

    async def _db(self, fn: Callable[..., _T], *args: Any) -> _T:
        # The store says how it is called (runtime/blocking.py): a worker thread in the daemon,
        # inline in simulations under the autojump clock.
        store = self._store
        assert store is not None
        return await store.run_sync(partial(fn, *args))

    def machine(self) -> Governance:
        """The machine; raises `UsageError` before `start`."""
        if self.gov is None:
            raise UsageError("governance is not open yet")
        return self.gov

    # ---- reports ----------------------------------------------------------------------------

    def halted(self) -> str | None:
        """The reason while a certified emergency shutdown holds (until a certified lift)."""
        if self.gov is None:
            return None
        state = self.gov.state
        if not state.shutdown:
            return None
        return state.shutdown_reason or "emergency shutdown"

    def head_hex(self) -> str:
        return "" if self.gov is None else self.gov.head().hex()

    def status(self) -> dict[str, Any]:
        gov = self.gov
        if gov is None:
            return {"open": False}
        state = gov.state
        now = self.now()
        return {
            "head": gov.head().hex(),
            "height": state.height,
            "admins": [a.hex() for a in state.admins],
            "threshold": state.threshold,
            "members": len(state.members),
            "shutdown": state.shutdown,
            "shutdown_reason": state.shutdown_reason,
            "open_proposals": sum(1 for p in gov.proposals(now) if p.status == "open"),
            "evidence": len(gov.evidence()),
            "refused": dict(gov.refused),
            **self.counters,
        }
