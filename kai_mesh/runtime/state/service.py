"""The mesh's replicated state on this node: the replica, its logs in sqlite, and anti-entropy.

`core.replica.Replica` is the machine (signed streams, chains, ownership, reconciliation);
`core.ydoc` says what may be written and how values look. This shell adds what needs I/O:

- **Logs**: every header and entry is committed to the store before it is sent or acknowledged;
  on start the doc is rebuilt from them. A node that did not shut down cleanly opens a new stream
  (a fresh Yjs client id), so no (client, clock) pair is ever reused with other content.
- **Push**: a local change goes to every peer at once, as an ENTRIES frame. Where a transport
  can broadcast (a shared radio channel, a LAN), one packet (`broadcast`) reaches every
  neighbour, and only peers further away (or all, when the broadcast could not go) get it over a
  link: on a shared channel a push per peer costs the air once per peer. A broadcast is not
  repeated: a neighbour that lost it is repaired by the next digest round, which the loss costs
  anyway. Entries heard by broadcast are taken like entries from a link (each is signed by its
  stream's node and checked by the replica; the sender of the packet is not proven and need not
  be); they are not broadcast again.
- **Anti-entropy**: the replica's 8-byte digest rides on heartbeats; hearing a different digest
  from a peer starts a round with it (BUCKETS, then VECTORS for the buckets that differ, then the
  ENTRIES each side lacks), at most one round per peer per `min_round_gap`. Peers out of
  broadcast range get a round every `round_interval` anyway. A lost frame costs nothing but time:
  the next digest mismatch starts the next round. When to start one is decided by
  `core.sync.anti_entropy.AntiEntropy`, the machine governance uses too; this shell feeds it
  digests and the clock and sends the BUCKETS frame it asks for.
- **Revocations**: `on_governance` (a `GovernanceService.watch`er) hands the fold's revocations to
  the replica, which refuses a revoked node's entries past the cut and drops those it held. The
  logs keep what was persisted; a restore refuses it again, so a restart rebuilds the same doc.
  Governance opens after the state, so the first fold also takes the logs in once more if the
  start's restore refused entries as "untrusted" (members governance admitted, revoked nodes).
- **Events**: the control socket's `state` topic hears of every change, local or from a peer.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar

import trio

from kai_mesh.core.errors import KaiMeshError, TransportError, UsageError
from kai_mesh.core.governance.machine import GovernanceState
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.frames import FRAME_STATE
from kai_mesh.core.state import ydoc
from kai_mesh.core.state.replica import Evidence, Received, Replica
from kai_mesh.core.state.revocation import Revocation, revocations_of
from kai_mesh.core.state.wire import (
    ENTRY_FORMAT,
    HEADER_FORMAT,
    Entries,
    decode_sync,
    encode_sync,
    parse_entry,
    parse_header,
)
from kai_mesh.core.sync.anti_entropy import AntiEntropy, AskSync
from kai_mesh.runtime.messaging.frame_registry import FrameRegistry
from kai_mesh.runtime.store import Store
from kai_mesh.runtime.timers import TimerDriver

log = logging.getLogger(__name__)
_T = TypeVar("_T")

STATE_DIGEST = 1  # the heartbeat digest slot of the replicated state
SYNC_MAX_BYTES = 380  # a sync frame that fits one Reticulum link packet with room to spare
CLIENT_ID_META = "state_client_id"
_HEADER, _ENTRY = bytes([HEADER_FORMAT]), bytes([ENTRY_FORMAT])  # a record's format byte
FRAMES_PER_PEER = 2  # sync steps one peer may have this node working on at once
BROADCAST_MAX_BYTES = 380  # a push by broadcast: one packet (RNS's PLAIN MDU is 464)
BROADCASTS_AT_ONCE = 4  # broadcast ENTRIES being checked at once, from anyone

SendFrame = Callable[[bytes, bytes], Awaitable[None]]
Emit = Callable[[str, dict[str, Any]], None]


class StateService:
    """See the module docstring. `await start(store)`, then `run()` in the node's nursery."""

    def __init__(
        self,
        *,
        secrets: NodeSecrets,
        mesh_id: bytes,
        keys: Mapping[bytes, bytes],
        send: SendFrame,
        peers: Callable[[], list[bytes]],
        emit: Emit,
        round_interval: float = 30.0,
        min_round_gap: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        self._secrets = secrets
        self._mesh_id = mesh_id
        self._keys = keys
        self._send = send
        self._peers = peers
        self._emit = emit
        self.round_interval = round_interval
        self._sync = AntiEntropy(min_gap=min_round_gap)
        self._timers = TimerDriver(self)
        self._rng = rng or random.Random()
        self._store: Store | None = None
        self.replica: Replica | None = None
        self._revoked: dict[bytes, Revocation] = {}
        # The logs, kept from `start` to the first fold when that restore refused "untrusted".
        self._boot_logs: tuple[list[bytes], list[bytes]] | None = None
        self._kept: set[Evidence] = set()  # proofs already committed to the store
        # Entries each side turned out to lack, per peer, since the last `sync_now`.
        self._lacked_here: dict[bytes, int] = {}
        self._lacked_there: dict[bytes, set[bytes]] = {}  # distinct entries: rounds may overlap
        self._nursery: trio.Nursery | None = None
        self._write_lock = trio.Lock()  # one local transaction committed at a time, in order
        #: Called (no arguments) after every change of the doc, local or from a peer.
        self.watchers: list[Callable[[], None]] = []
        self.counters = {"local_entries": 0, "peer_entries": 0, "rounds": 0, "frames_sent": 0}
        self.counters.update({"bytes_sent": 0, "frames_received": 0, "send_failed": 0})
        self.counters.update({"local_entry_bytes": 0, "broadcasts_sent": 0})
        self.counters.update({"broadcasts_failed": 0, "broadcasts_received": 0})
        self.counters["broadcasts_refused"] = 0
        #: Sends a frame by broadcast on every transport that can; False if it could not (no
        #: airtime, no broadcast transport). Set by the wiring; None: links only.
        self.broadcast: Callable[[bytes], Awaitable[bool]] | None = None
        #: Hops to a peer (1: a neighbour that hears our broadcasts), None when unknown.
        self.hops: Callable[[bytes], int | None] = lambda node_id: None

    # ---- life cycle -------------------------------------------------------------------------

    async def start(self, store: Store) -> None:
        """Open our stream (a new one after an unclean shutdown) and rebuild the doc."""
        self._store = store
        saved = store.get_meta(CLIENT_ID_META)
        if saved is not None and store.was_clean:
            client_id = int(saved)
        else:
            # Yjs client ids are 32-bit in practice; a fresh one per unclean start.
            client_id = self._rng.randrange(1, 2**32)
            await self._db(store.put_meta, CLIENT_ID_META, str(client_id).encode())
            if saved is not None:
                log.info("state: unclean shutdown before, writing on a new stream %d", client_id)
        headers, entries = await self._open(store, client_id)
        log.info("state: %d streams, %d entries restored", len(headers), len(entries))

    async def _open(self, store: Store, client_id: int) -> tuple[list[bytes], list[bytes]]:
        """A replica writing on `client_id`, rebuilt from the store's logs; the logs."""
        headers, entries = await self._db(store.state_logs)
        # The proofs kept go back in with the logs and are judged again, so a stream convicted
        # before a restart is convicted again (its conflicting record is not in the logs).
        proofs = [
            r
            for *_, first, second in await self._db(store.state_evidence)
            for r in (first, second)
            if r
        ]
        if self.replica is not None:
            self.replica.close()
        self.replica = Replica(
            mesh_id=self._mesh_id,
            secrets=self._secrets,
            client_id=client_id,
            verify_key_for=self._keys.get,
        )
        self.replica.set_revoked(self._revoked)
        got = self.replica.restore(
            [*headers, *(r for r in proofs if r[:1] == _HEADER)],
            [*entries, *(r for r in proofs if r[:1] == _ENTRY)],
        )
        self._kept = set(self.replica.evidence())
        if got.refused.get("untrusted"):
            self._boot_logs = (headers, entries)
        return headers, entries

    async def _new_stream(self, why: str) -> Replica:
        """Our stream can take no more writes (`Replica.own_stream_blocked`): go on on a new
        one, as after an unclean shutdown, so that a write is never refused for it."""
        assert self._store is not None and self.replica is not None
        old = self.replica.client_id
        client_id = self._rng.randrange(1, 2**32)
        await self._db(self._store.put_meta, CLIENT_ID_META, str(client_id).encode())
        await self._open(self._store, client_id)
        self.counters["new_streams"] = self.counters.get("new_streams", 0) + 1
        log.warning("state: our stream %d is %s: writing on a new stream %d", old, why, client_id)
        return self._need()

    def on_governance(self, state: GovernanceState) -> None:
        """The governance fold changed (`governance.watch(state.on_governance)`): apply its
        revocations, and on the first fold after `start` take the logs in again if needed."""
        revoked = revocations_of(state)
        boot, self._boot_logs = self._boot_logs, None
        if revoked == self._revoked and boot is None:
            return
        self._revoked = revoked
        replica = self.replica
        if replica is None:
            return  # `start` applies them
        dropped = replica.set_revoked(revoked)
        if boot is not None:  # what was refused as "untrusted" is judged again; the rest is held
            got = replica.receive([*boot[0], *boot[1]])
            log.info("state: %d more entries restored with the fold's members", len(got.entries))
        if dropped:
            log.warning("state: %d entries past a revocation's cut dropped", dropped)
        if dropped or boot is not None:
            self._emit("state", {"event": "changed", "origin": "governance", "dropped": dropped})

    def revocation_cut(self, node_id: bytes) -> dict[int, int]:
        """The cut a revocation of `node_id` proposed now names: its streams' heads here."""
        return self._need().heads_of(node_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._timers.run)
            task_status.started()
            while True:
                await trio.sleep(self.round_interval * (0.5 + self._rng.random()))
                # Peers whose heartbeats we hear are compared by digest already; the rest
                # (out of broadcast range) get a round now and then.
                now = trio.current_time()
                self._rounds(self._ready().idle(self._peers(), now, 2 * self.round_interval))

    # ---- local reads and writes -------------------------------------------------------------

    def read(self, path: tuple[str, ...] = ()) -> Any:
        return ydoc.read(self._need().doc, path)

    def keys(self, path: tuple[str, ...]) -> list[str]:
        return ydoc.keys(self._need().doc, path)

    async def write(self, path: tuple[str, ...], value: Any) -> int:
        """Write `value` at `path` as a local transaction; committed before this returns.
        Returns the number of records made (0: nothing changed). Raises `UsageError`."""
        ydoc.check_value(value, path="/".join(path))
        return await self._local(lambda doc: ydoc.write(doc, path, value), [path])

    async def delete(self, path: tuple[str, ...]) -> int:
        return await self._local(lambda doc: ydoc.delete(doc, path), [path])

    async def import_update(self, update: bytes) -> int:
        """A Yjs update made by another program, written as this node's own transaction."""
        values = ydoc.import_values(update)

        def edit(doc: Any) -> None:
            for root, content in values.items():
                for key, value in content.items():
                    ydoc.write(doc, (root, key), value)

        return await self._local(edit, [(r, k) for r, c in values.items() for k in c])

    def export_update(self) -> bytes:
        return ydoc.export_update(self._need().doc)

    async def transact(self, edit: Callable[[Any], None]) -> int:
        """Run `edit(doc)` as one local transaction (several writes, one commit); returns the
        number of records made. The caller checks values (`ydoc.write` does)."""
        return await self._local(edit)

    async def _local(
        self, edit: Callable[[Any], None], paths: list[tuple[str, ...]] | None = None
    ) -> int:
        """Run `edit` as this node's transaction; the `state` push names the `paths` it wrote
        (so a follower refetches those alone) when they are known."""
        replica = self._need()
        async with self._write_lock:
            blocked = replica.own_stream_blocked()
            if blocked is not None and self._secrets.node_id not in self._revoked:
                replica = await self._new_stream(blocked)
            records = replica.transact(edit)
            if not records:
                return 0
            await self._persist(records)
        self.counters["local_entries"] += 1
        self.counters["local_entry_bytes"] += sum(len(r) for r in records)
        event: dict[str, Any] = {"event": "changed", "origin": "local"}
        if paths is not None:
            event["paths"] = ["/".join(p) for p in paths]
        self._emit("state", event)
        self._changed()
        self._push(records)
        return len(records)

    def _changed(self) -> None:
        for watcher in self.watchers:
            try:
                watcher()
            except Exception:
                log.exception("state watcher failed")

    def _push(self, records: list[bytes]) -> None:
        """Send a local change to every peer: by one broadcast where it can go, else by link."""
        if self._nursery is None:
            return
        headers = [r for r in records if r[:1] == _HEADER]
        entries = [r for r in records if r[:1] == _ENTRY]
        frame = encode_sync(Entries(headers=headers, entries=entries))
        peers = self._peers()
        if self.broadcast is not None and len(frame) <= BROADCAST_MAX_BYTES:
            self._nursery.start_soon(self._broadcast_then_links, frame, peers)
            return
        for node_id in peers:
            self._nursery.start_soon(self._send_to, node_id, frame)

    async def _broadcast_then_links(self, frame: bytes, peers: list[bytes]) -> None:
        assert self.broadcast is not None and self._nursery is not None
        sent = await self.broadcast(frame)
        if sent:
            self.counters["broadcasts_sent"] += 1
            self.counters["bytes_sent"] += len(frame)
        else:
            self.counters["broadcasts_failed"] += 1
        for node_id in peers:
            if not sent or self.hops(node_id) != 1:
                self._nursery.start_soon(self._send_to, node_id, frame)

    # ---- anti-entropy -----------------------------------------------------------------------

    def digests(self) -> dict[int, bytes]:
        """For heartbeats."""
        return {} if self.replica is None else {STATE_DIGEST: self.replica.digest()}

    def on_digests(self, node_id: bytes, digests: Mapping[int, bytes]) -> None:
        """A peer's heartbeat: a round with it when our states differ."""
        theirs = digests.get(STATE_DIGEST)
        if theirs is None or self.replica is None:
            return
        self._rounds(self._ready().digest_heard(node_id, theirs, trio.current_time()))

    def sync_now(self) -> int:
        """Start a round with every peer now (`kai-mesh state sync`); how many were started."""
        peers = self._peers()
        self._lacked_here.clear()
        self._lacked_there.clear()
        if self.replica is not None and self._nursery is not None:
            now = trio.current_time()
            self._rounds([self._sync.ask_now(node_id, now) for node_id in peers])
        return len(peers)

    @property
    def min_round_gap(self) -> float:
        """Seconds between two rounds with one peer, unless asked for (`sync_now`)."""
        return self._sync.min_gap

    @min_round_gap.setter
    def min_round_gap(self, value: float) -> None:
        self._sync.min_gap = value
        self._timers.moved()

    def get_timer(self) -> float | None:
        """For the timer driver: when the anti-entropy machine needs the clock."""
        return self._sync.get_timer()

    def handle_timer(self, now: float) -> None:
        self._rounds(self._ready().handle_timer(now))

    def _ready(self) -> AntiEntropy:
        """The anti-entropy machine, told our digest now (None: no rounds before `start`
        and `run`)."""
        ready = self.replica is not None and self._nursery is not None
        self._sync.local_digest(self.replica.digest() if self.replica and ready else None)
        return self._sync

    def _rounds(self, asks: list[AskSync]) -> None:
        """Start the rounds the machine asked for: our BUCKETS to each peer."""
        self._timers.moved()
        if not asks or self.replica is None or self._nursery is None:
            return
        start = self.replica.sync_start()
        for ask in asks:
            self.counters["rounds"] += 1
            self._nursery.start_soon(self._send_to, ask.peer, start)

    def register_frames(self, frames: FrameRegistry) -> None:
        """STATE frames come here, at most `FRAMES_PER_PEER` sync steps per peer at once."""
        frames.on_task(
            FRAME_STATE,
            lambda transport, node_id, data: self.on_frame(node_id, data),
            per_peer=FRAMES_PER_PEER,
        )
        frames.on_broadcast(FRAME_STATE, task=self.on_broadcast, limit=BROADCASTS_AT_ONCE)

    async def on_broadcast(self, data: bytes) -> None:
        """An ENTRIES frame heard by broadcast (its sender unproven: every entry is signed).
        Only ENTRIES: the sync steps that ask something are a conversation with one peer."""
        self.counters["broadcasts_received"] += 1
        try:
            message = decode_sync(data)
        except KaiMeshError as exc:
            self.counters["broadcasts_refused"] += 1
            log.debug("state broadcast refused: %s", exc)
            return
        if not isinstance(message, Entries):
            self.counters["broadcasts_refused"] += 1
            return
        await self._take(None, data)

    async def on_frame(self, node_id: bytes, data: bytes) -> None:
        """A sync frame from a peer (the link proved `node_id`)."""
        self.counters["frames_received"] += 1
        replies = await self._take(node_id, data)
        for reply in replies:
            sent = decode_sync(reply)
            if isinstance(sent, Entries):
                self._lacked_there.setdefault(node_id, set()).update(sent.entries)
        for reply in replies:
            await self._send_to(node_id, reply)

    async def _take(self, node_id: bytes | None, data: bytes) -> list[bytes]:
        """Apply a sync frame from `node_id` (None: heard by broadcast); the frames to answer."""
        replica = self._need()
        try:
            async with self._write_lock:
                replies, received = replica.on_sync(data, SYNC_MAX_BYTES, peer=node_id)
                await self._persist_received(received)
        except KaiMeshError as exc:
            log.debug("state frame from %s refused: %s", (node_id or b"").hex() or "?", exc)
            return []
        if node_id is not None:
            self._lacked_here[node_id] = self._lacked_here.get(node_id, 0) + len(received.entries)
        if received.entries:
            self.counters["peer_entries"] += len(received.entries)
            origin = "broadcast" if node_id is None else node_id.hex()
            self._emit(
                "state", {"event": "changed", "origin": origin, "entries": len(received.entries)}
            )
            self._changed()
        return replies

    async def _send_to(self, node_id: bytes, frame: bytes) -> None:
        try:
            await self._send(node_id, frame)
        except TransportError as exc:
            self.counters["send_failed"] += 1
            log.debug("state frame to %s not sent: %s", node_id.hex(), exc)
            return
        self.counters["frames_sent"] += 1
        self.counters["bytes_sent"] += len(frame)

    # ---- persistence ------------------------------------------------------------------------

    async def _persist(self, records: list[bytes]) -> None:
        headers = [(_header_client(r), r) for r in records if r[:1] == _HEADER]
        entries = []
        for record in records:
            if record[:1] == _ENTRY:
                entry = parse_entry(record)[0]
                entries.append((entry.client_id, entry.seq, record))
        store = self._store
        assert store is not None
        await self._db(store.state_append, headers, entries)

    async def _db(self, fn: Callable[..., _T], *args: Any) -> _T:
        # The store says how it is called (runtime/blocking.py): a worker thread in the daemon,
        # inline in simulations under the autojump clock.
        store = self._store
        assert store is not None
        return await store.run_sync(partial(fn, *args))

    async def _persist_received(self, received: Received) -> None:
        if received.headers or received.entries:
            await self._persist([*received.headers, *received.entries])
        await self._keep_evidence()

    async def _keep_evidence(self) -> None:
        """Commit the proofs the replica found since the last time (DESIGN.md: two entries with
        one seq are caught and kept as evidence), so they outlive a restart."""
        replica, store = self.replica, self._store
        if replica is None or store is None:
            return
        for proof in replica.evidence():
            if proof in self._kept:
                continue
            first, second = proof.records[0], (proof.records[1] if len(proof.records) > 1 else b"")
            await self._db(store.state_keep_evidence, proof.kind, proof.client_id, first, second)
            self._kept.add(proof)

    def _need(self) -> Replica:
        if self.replica is None:
            raise UsageError("the replicated state is not open yet")
        return self.replica

    # ---- reports ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        replica = self.replica
        if replica is None:
            return {"open": False}
        vector = replica.vector()
        return {
            "client_id": replica.doc.client_id,
            "streams": len(vector),
            "entries": sum(seq for seq, _ in vector.values()),
            "digest": replica.digest().hex(),
            "quarantined": sorted(replica.quarantined),
            "evidence": len(replica.evidence()),
            "refused": dict(replica.refused),
            "revoked_dropped": replica.counters.get("revoked_dropped", 0),
            # stream -> entries kept but not in the doc (waiting for items, or built past a cut)
            "held_back": {str(c): n for c, n in replica.held_back().items()},
            # records that cannot apply yet (no header or a gap), in all: bounded per peer
            "waiting": dict(zip(("records", "bytes"), replica.waiting(), strict=True)),
            **self.counters,
        }

    def sync_report(self, names: Callable[[bytes], str | None]) -> list[dict[str, Any]]:
        mine = None if self.replica is None else self.replica.digest()
        peers = sorted(set(self._sync.known()) | set(self._lacked_here) | set(self._peers()))
        report = []
        for node_id in peers:
            theirs = self._sync.heard(node_id)
            report.append(
                {
                    "node_id": node_id.hex(),
                    "name": names(node_id),
                    "their_digest": None if theirs is None else theirs.hex(),
                    "in_sync": theirs == mine,
                    "we_lacked": self._lacked_here.get(node_id, 0),
                    "they_lacked": len(self._lacked_there.get(node_id, ())),
                }
            )
        return report


def _header_client(record: bytes) -> int:
    """The client id a header claims (structure only; the replica checked the signature)."""
    return parse_header(record)[0].client_id
