"""The replica: one mesh's Yjs doc, the signed streams that write it, and the rules that guard it.

A node writes only through `transact`: the update of each local transaction becomes the next
signed entry of the node's own stream (`state_wire`). Records from anyone — peers, relays, the
node's own logs at start — go through `receive`, which checks each entry in this order and never
raises for bad input, counting each refusal by reason:

1. structure (a `ProtocolError` reason);
2. the stream's header is known, else the entry waits (bounded) until it arrives;
3. the signature is the header's node's, and `verify_key_for` still accepts that node, or
   the node is revoked and the entry is at or below the revocation's cut (`core.state.revocation`:
   it is checked under the key the node had; past the cut it is refused as "revoked");
4. the chain: the next seq after the current head applies; an entry already held is a duplicate;
   a different entry at a held seq (or one whose `prev` is not our head) is a **fork**; one
   beyond the next waits for its predecessors;
5. ownership: the update adds items under no client id but the stream's own (deleting others'
   items is fine);
6. the entry joins the log, and pycrdt applies it once the doc holds every item its update
   names (origins, parents, deleted items: `ydoc.update_refs`); until then it is **held back**,
   with its stream's later entries. (pycrdt would keep it pending, but what it then shows, such
   as deletions done early, depends on the order updates came in; taking only whole updates,
   the doc is the same for the same logs.) An unreadable update is "bad_update", and after any
   other failure (pycrdt raises `RuntimeError` on some malformed updates, and a
   `PanicException`, a BaseException, on others) the doc is rebuilt from the logs, since it may
   hold part of the update; a held entry failing so leaves the log with its stream's later ones.

A fork, foreign items or a bad update quarantine the stream (its later entries are refused) and
are kept as `Evidence`; so is a header claiming a client id another node claimed first.
Quarantined streams leave the vector, so peers who agree about them stop syncing them; a peer
still listing one is sent the evidence, which makes it quarantine the stream too.

`set_revoked` takes the governance fold's revocations: held entries past a cut are dropped and
the doc rebuilt, so a node that applied them before it learned of the revocation ends with the
same doc as one that never did; a quarantine for a fault past the cut is lifted, as a node that
learned first never sees that fault. A revoked node's own replica refuses to write. Another
node's entry built on one past a cut is held back for good, on every node alike (`held_back`):
kept in the log, since it is valid and peers sync it, but never in the doc. So are its stream's
later entries, and a node whose own stream is held back refuses to write on it: it must open a
new stream (a fresh client id) to write again.

Callers read `replica.doc`, and should fetch it afresh each time: a rebuild replaces it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import pycrdt
from pycrdt import Doc, Subscription, TransactionEvent

from kai_mesh.core.errors import BadSignature, Malformed, ProtocolError, UsageError
from kai_mesh.core.mesh.identity import NodeSecrets, verify
from kai_mesh.core.state.revocation import Revocation, Revocations, keep_after_revocation
from kai_mesh.core.state.sync import (
    differing_buckets,
    entries_frames,
    plan,
    vector_frames,
    want_frames,
)
from kai_mesh.core.state.waiting import Waiting
from kai_mesh.core.state.wire import (
    ENTRY_FORMAT,
    ENTRY_KIND,
    HEADER_FORMAT,
    ZERO_HASH,
    Buckets,
    Entries,
    Entry,
    Header,
    bucket_hashes,
    client_id_ok,
    decode_header,
    decode_sync,
    encode_entry,
    encode_header,
    encode_sync,
    entry_hash,
    foreign_items,
    parse_entry,
    state_digest,
)
from kai_mesh.core.state.ydoc import UpdateRefs, update_refs

MAX_EVIDENCE = 1_000
_EXITS = (KeyboardInterrupt, SystemExit, GeneratorExit)
YDoc: TypeAlias = Doc[Any]


def _apply(doc: YDoc, update: bytes) -> None:
    """The one place foreign bytes enter pycrdt (tests replace it to simulate a panic)."""
    doc.apply_update(update)


@dataclass(frozen=True, slots=True)
class Evidence:
    """Signed records that together prove a stream or node broke a rule.

    kind: "claim_taken" (the first header, then the later one), "fork" (ours, then theirs),
    "foreign_items", "bad_update" or "panic" (the entry)."""

    kind: str
    client_id: int
    records: tuple[bytes, ...]


@dataclass(slots=True)
class Received:
    """What one `receive` (or `on_sync`) did: new headers and applied entries (persist both),
    refusals by reason, duplicates, and how many records wait in total afterwards."""

    headers: list[bytes] = field(default_factory=list)
    entries: list[bytes] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    pending: int = 0


class Replica:
    """The replicated state of one mesh, as this node holds it. Sans-IO: bytes in, bytes out."""

    def __init__(
        self,
        *,
        mesh_id: bytes,
        secrets: NodeSecrets,
        client_id: int,
        verify_key_for: Callable[[bytes], bytes | None],
        waiting: Callable[[], Waiting] = Waiting,
    ) -> None:
        """`waiting` makes the (empty) pool of entries waiting for a header or a predecessor, with
        its bounds."""
        self.mesh_id = mesh_id
        self._new_waiting = waiting
        self.secrets = secrets
        self.client_id = client_id_ok(client_id, UsageError)
        self.verify_key_for = verify_key_for
        self.refused: dict[str, int] = {}
        self.counters: dict[str, int] = {}
        self._revoked: dict[bytes, Revocation] = {}  # from governance: outlives `_reset`
        self._own_header = encode_header(Header(secrets.node_id, client_id), secrets, mesh_id)
        self._observed: tuple[YDoc, Subscription] | None = None
        self._reset()

    def _reset(self) -> None:
        self.quarantined: set[int] = set()
        self._claims: dict[int, bytes] = {self.client_id: self.secrets.node_id}
        self._headers: dict[int, bytes] = {}
        self._logs: dict[int, list[bytes]] = {}
        self._hashes: dict[int, list[bytes]] = {}
        self._held = self._new_waiting()  # cannot apply yet; bounded: core/state/waiting.py
        self._source: bytes | None = None  # the peer whose records `receive` is taking
        self._evidence: dict[Evidence, None] = {}
        self._buckets: dict[int, bytes] | None = None
        self._new_doc()

    def _new_doc(self) -> None:
        # pycrdt keeps the callback (which holds the doc) in the Rust doc: a cycle the garbage
        # collector cannot see, so a doc replaced without unobserving it is never freed.
        self.close()
        self.doc: YDoc = Doc(client_id=self.client_id)
        self._capture: list[bytes] | None = None
        self._observed = (self.doc, self.doc.observe(self._on_commit))
        self._in_doc: dict[int, int] = {}  # client id -> how many of its log entries it holds
        self._clocks: dict[int, int] = {}  # the doc's state vector (it holds no pending update)
        self._waiting_on: dict[int, set[int]] = {}  # client id -> streams held back for it
        self._last_read: tuple[bytes, tuple[bytes, UpdateRefs]] | None = None

    def close(self) -> None:
        """Let go of the doc (call before dropping a replica): an observed pycrdt doc is never
        freed otherwise. The replica must not be used afterwards."""
        if self._observed is not None:
            self._observed[0].unobserve(self._observed[1])
            self._observed = None

    def _on_commit(self, event: TransactionEvent) -> None:
        if self._capture is not None:
            self._capture.append(event.update)

    # Local writes ---------------------------------------------------------------------------------

    def own_stream_blocked(self) -> str | None:
        """Why this node may not write on its stream any more (it must open a new one), or
        None. Held back: its next clocks are taken by entries no doc may ever hold (they built
        on items the doc lacks, such as a revoked node's past its cut)."""
        if self.client_id in self.quarantined:
            return "quarantined"
        if self._in_doc.get(self.client_id, 0) < len(self._hashes.get(self.client_id, ())):
            return "held back"
        return None

    def transact(self, edit: Callable[[YDoc], None]) -> list[bytes]:
        """Run `edit(doc)` in one transaction; its update becomes our stream's next entry.

        Returns the records to persist, then send: our header the first time, then the entry;
        nothing when the edit changed nothing. If `edit` raises, the doc is rebuilt from the
        logs (it may hold part of the edit) and the exception propagates.

        Raises:
            UsageError: our own stream is quarantined or held back (`held_back`: open a new
                stream), or the edit imported other clients' items (a foreign update is imported
                by re-doing it as local edits) or named items no doc holds, or the update is
                larger than a record can be.
        """
        if (blocked := self.own_stream_blocked()) is not None:
            raise UsageError(f"our own stream is {blocked}: open a new stream (client id)")
        if self.secrets.node_id in self._revoked:
            raise UsageError("this node is revoked: it may no longer write the replicated state")
        captured: list[bytes] = []
        self._capture = captured
        try:
            with self.doc.transaction():
                edit(self.doc)
        except BaseException:
            self._capture = None
            self._rebuild()
            raise
        self._capture = None
        if not captured:
            return []
        update = captured[0] if len(captured) == 1 else pycrdt.merge_updates(*captured)
        hashes = self._hashes.get(self.client_id, [])
        try:
            if foreign_items(update, self.client_id):
                raise UsageError("the edit brought in items of other client ids")
            try:
                refs: UpdateRefs | None = update_refs(update)
            except Malformed:
                refs = None
            if refs is None or refs.lacks(self._clocks) is not None:
                raise UsageError(  # pycrdt makes one, given a text index inside a character
                    "the edit made an update that names items no doc holds: nothing was written"
                )
            entry = Entry(
                self.client_id, len(hashes) + 1, hashes[-1] if hashes else ZERO_HASH, update
            )
            data = encode_entry(entry, self.secrets, self.mesh_id)
        except BaseException:
            self._rebuild()
            raise
        records = []
        if self.client_id not in self._headers:
            self._headers[self.client_id] = self._own_header
            records.append(self._own_header)
        self._append(self.client_id, data, entry_hash(data))
        self._in_doc[self.client_id] = len(self._hashes[self.client_id])
        if woken := self._advance(refs):  # a peer may name our items before we write them
            self._integrate(woken, Received())
        return [*records, data]

    # Ingress --------------------------------------------------------------------------------------

    def receive(self, records: Iterable[bytes], *, peer: bytes | None = None) -> Received:
        """Headers and entries in any order, duplicated, from anyone. Never raises for bad input.
        `peer`: the node whose link delivered them, charged for what is held back (None: our
        own store)."""
        out = Received()
        self._source = peer
        for record in records:
            if type(record) is not bytes or not record:
                self._refuse("malformed", out)
                continue
            if record[0] == HEADER_FORMAT:
                progressed = self._on_header(record, out)
            elif record[0] == ENTRY_FORMAT:
                progressed = self._on_entry(record, out)
            else:
                self._refuse("unknown_version", out)
                continue
            if progressed is not None:
                self._drain(progressed, out)
        self._source = None
        out.pending = self._held.count
        return out

    def restore(self, headers: Iterable[bytes], entries: Iterable[bytes]) -> Received:
        """Start again from the logs (every header and entry persisted, in any order; evidence
        records too, which are judged again). Our own stream continues where its log ends."""
        self._reset()
        return self.receive([*headers, *entries])

    def _on_header(self, record: bytes, out: Received) -> int | None:
        try:
            header = decode_header(record, self.mesh_id, self._key_for)
        except ProtocolError as exc:
            self._refuse(exc.reason, out)
            return None
        client_id = header.client_id
        owner = self._claims.get(client_id)
        if owner is not None and owner != header.node_id:
            first = self._headers.get(client_id, self._own_header)
            self._convict("claim_taken", client_id, (first, record), out, quarantine=False)
            return None
        if client_id in self._headers:
            self._duplicate(out)
            return None
        self._claims[client_id] = header.node_id
        self._headers[client_id] = record
        out.headers.append(record)
        return client_id

    def _on_entry(self, record: bytes, out: Received) -> int | None:
        try:
            entry, body, signature = parse_entry(record)
        except ProtocolError as exc:
            self._refuse(exc.reason, out)
            return None
        client_id, seq = entry.client_id, entry.seq
        if client_id in self.quarantined:
            self._refuse("quarantined", out)
            return None
        node_id = self._claims.get(client_id)
        if node_id is None:
            self._hold(client_id, seq, record, out)
            return None
        log, hashes = self._logs.get(client_id, []), self._hashes.get(client_id, [])
        if seq <= len(hashes) and hashes[seq - 1] == entry_hash(record):
            self._duplicate(out)
            return None
        revocation = self._revoked.get(node_id)
        if revocation is not None and seq > revocation.last_valid(client_id):
            self._refuse("revoked", out)
            return None
        key = self._key_for(node_id)
        if key is None:
            self._refuse("untrusted", out)
            return None
        try:
            verify(key, ENTRY_KIND, self.mesh_id, body, signature)
        except BadSignature as exc:
            self._refuse(exc.reason, out)
            return None
        if seq > len(hashes) + 1:
            self._hold(client_id, seq, record, out)
            return None
        if seq <= len(hashes) or entry.prev != (hashes[-1] if hashes else ZERO_HASH):
            self._convict("fork", client_id, (log[min(seq, len(log)) - 1], record), out)
            return None
        try:
            foreign = foreign_items(entry.update, client_id)
            self._read(record)
        except _EXITS:
            raise
        except BaseException:
            self._convict("bad_update", client_id, (record,), out)
            return None
        if foreign:
            self._convict("foreign_items", client_id, (record,), out)
            return None
        self._append(client_id, record, entry_hash(record))
        out.entries.append(record)
        self._integrate([client_id], out)
        return client_id

    def _key_for(self, node_id: bytes) -> bytes | None:
        """The key `node_id` signs with: a revoked node's comes from the fold, as it is no
        longer a member (and a revoked node id never becomes one again)."""
        revocation = self._revoked.get(node_id)
        return self.verify_key_for(node_id) if revocation is None else revocation.key

    def _take(self, update: bytes) -> tuple[str, bool] | None:
        """Apply an update the doc holds every reference of; on failure, the refusal's reason
        and whether the doc may hold part of it."""
        try:
            _apply(self.doc, update)
            return None
        except ValueError:  # could not decode: nothing was applied
            return "bad_update", False
        except Exception:  # failed while integrating: part of it may be in the doc
            return "bad_update", True
        except _EXITS:
            raise
        except BaseException:  # pyo3's PanicException
            return "panic", True

    def _advance(self, refs: UpdateRefs) -> list[int]:
        """The doc took an update: its clocks move on. Returns the streams that waited for them."""
        woken: list[int] = []
        for client, (_, end) in refs.items.items():
            self._clocks[client] = end
            woken += self._waiting_on.pop(client, ())
        return woken

    def _integrate(self, streams: Iterable[int], out: Received | None) -> None:
        """Move the held entries of `streams` into the doc, in seq order, as far as the doc
        holds what each refers to; a stream stopped by a lack waits for that client's items.

        An entry that fails now is refused as it would have been on arrival: it and its stream's
        later entries leave the log, and the stream is quarantined (`out` None: a rebuild, which
        only counts the failure and stops the stream)."""
        todo = sorted(set(streams))
        while todo:
            client_id = heapq.heappop(todo)
            log = self._logs.get(client_id, [])
            while (done := self._in_doc.get(client_id, 0)) < len(log):
                record = log[done]
                update, refs = self._read(record)
                lacking = refs.lacks(self._clocks)
                if lacking is not None:
                    self._waiting_on.setdefault(lacking, set()).add(client_id)
                    break
                if fault := self._take(update):
                    if out is None:
                        self._count("rebuild_failures")
                        break
                    dropped = set(log[done:])
                    del log[done:], self._hashes[client_id][done:]
                    out.entries = [r for r in out.entries if r not in dropped]
                    self._convict(fault[0], client_id, (record,), out)  # quarantined
                    if fault[1]:
                        self._rebuild()
                    break
                self._in_doc[client_id] = done + 1
                for woken in self._advance(refs):
                    heapq.heappush(todo, woken)

    def _read(self, record: bytes) -> tuple[bytes, UpdateRefs]:
        """An entry's update and what it names; the last one is kept, as `_on_entry` reads the
        entry just before `_integrate` takes it. Raises `Malformed` (an unreadable update)."""
        if self._last_read is None or self._last_read[0] is not record:
            update = parse_entry(record)[0].update
            self._last_read = record, (update, update_refs(update))
        return self._last_read[1]

    def _append(self, client_id: int, record: bytes, digest: bytes) -> None:
        self._logs.setdefault(client_id, []).append(record)
        self._hashes.setdefault(client_id, []).append(digest)
        self._buckets = None
        self._count("applied")

    def _hold(self, client_id: int, seq: int, record: bytes, out: Received) -> None:
        refused = self._held.add(client_id, seq, record, self._source)
        if refused == "duplicate":
            self._duplicate(out)
        elif refused is not None:
            self._refuse(refused, out)

    def _drain(self, client_id: int, out: Received) -> None:
        """Retry what waits for `client_id` now that its header or a predecessor arrived."""
        while True:
            ready = self._held.take_ready(client_id, len(self._hashes.get(client_id, ())) + 1)
            if not ready:
                return
            progressed = [self._on_entry(record, out) for _, record in ready]
            if not any(p is not None for p in progressed):
                return

    def _convict(
        self,
        kind: str,
        client_id: int,
        records: tuple[bytes, ...],
        out: Received,
        quarantine: bool = True,
    ) -> None:
        self._refuse(kind, out)
        if quarantine:
            self.quarantined.add(client_id)
            self._held.drop(client_id)
            self._buckets = None
        evidence = Evidence(kind, client_id, records)
        if evidence not in self._evidence and len(self._evidence) >= MAX_EVIDENCE:
            self._count("evidence_dropped")
        else:
            self._evidence[evidence] = None

    def _refuse(self, reason: str, out: Received) -> None:
        out.refused[reason] = out.refused.get(reason, 0) + 1
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def _duplicate(self, out: Received) -> None:
        out.duplicates += 1
        self._count("duplicates")

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _rebuild(self) -> None:
        """A fresh doc with every accepted entry the doc can hold applied again (see
        `_integrate`); an entry that fails now is counted and stops its stream."""
        self._count("rebuilds")
        self._new_doc()
        self._integrate(self._logs, None)

    # Revocations ----------------------------------------------------------------------------------

    def set_revoked(self, revoked: Revocations) -> int:
        """Take the governance fold's revocations (node id -> key and cut; all of them, each
        time). Entries held past a cut are dropped and the doc rebuilt without them; returns how
        many were dropped (the shell may forget them in its logs too: restore refuses them)."""
        self._revoked = dict(revoked)
        lengths = {c: len(h) for c, h in self._hashes.items()}
        dropped = 0
        for client_id, keep in keep_after_revocation(self._claims, lengths, revoked).items():
            dropped += lengths[client_id] - keep
            del self._logs[client_id][keep:]
            del self._hashes[client_id][keep:]
        for client_id in self._held.streams():
            revocation = self._revoked.get(self._claims.get(client_id, b""))
            if revocation is not None:
                self._held.drop(client_id, revocation.last_valid(client_id))
        lifted = self._lift_quarantines()
        if dropped or lifted:
            self._buckets = None
        if dropped:
            self.counters["revoked_dropped"] = self.counters.get("revoked_dropped", 0) + dropped
            self._rebuild()
        return dropped

    def _lift_quarantines(self) -> bool:
        """Lift each quarantine of a revoked node's stream whose every fault lies past the cut:
        a node that learned of the revocation first refused those entries as "revoked". (One
        whose evidence was not kept stays: where its fault lies is unknown.)"""
        lifted = False
        for client_id in sorted(self.quarantined):
            revocation = self._revoked.get(self._claims.get(client_id, b""))
            if revocation is None:
                continue
            faults = [e for e in self._evidence if e.client_id == client_id]
            faults = [e for e in faults if e.kind != "claim_taken"]
            last_valid = revocation.last_valid(client_id)
            if faults and all(parse_entry(e.records[-1])[0].seq > last_valid for e in faults):
                self.quarantined.discard(client_id)
                for evidence in faults:
                    del self._evidence[evidence]
                lifted = True
        return lifted

    def _past_cut(self, client_id: int, seq: int) -> bool:
        """Whether a stream's entries after `seq` are all past a revocation's cut."""
        revocation = self._revoked.get(self._claims.get(client_id, b""))
        return revocation is not None and seq >= revocation.last_valid(client_id)

    def heads_of(self, node_id: bytes) -> dict[int, int]:
        """client id -> the highest seq held, of every stream `node_id` claimed with entries
        held (quarantined ones too: their entries before the fault are valid). The cut a
        revocation of `node_id` proposed by this node names."""
        return {
            c: len(h)
            for c, h in sorted(self._hashes.items())
            if h and self._claims.get(c) == node_id
        }

    def waiting(self) -> tuple[int, int]:
        """Records and bytes received but not yet applicable (no header, or a gap before them),
        bounded per peer and in all (core/state/waiting.py)."""
        return self._held.count, self._held.size

    def held_back(self) -> dict[int, int]:
        """client id -> how many of the stream's entries held are not in the doc: they build on
        items it lacks. For a moment, until another stream's entry arrives; for good, on every
        node, when they build on a revoked node's entry past its cut."""
        behind = {c: len(h) - self._in_doc.get(c, 0) for c, h in sorted(self._hashes.items())}
        return {c: n for c, n in behind.items() if n}

    # Reconciliation -------------------------------------------------------------------------------

    def vector(self) -> dict[int, tuple[int, bytes]]:
        """client_id -> (highest seq, head hash) of every stream with entries, quarantined ones
        left out."""
        return {
            c: (len(h), h[-1])
            for c, h in sorted(self._hashes.items())
            if h and c not in self.quarantined
        }

    def _bucket_hashes(self) -> dict[int, bytes]:
        if self._buckets is None:
            self._buckets = bucket_hashes(self.vector())
        return self._buckets

    def digest(self) -> bytes:
        """8 bytes for heartbeats; peers with equal digests have the same vectors."""
        return state_digest(self._bucket_hashes())

    def sync_start(self) -> bytes:
        """The first frame of a sync session (BUCKETS), to a peer whose digest differs."""
        return encode_sync(Buckets(self._bucket_hashes()))

    def on_sync(
        self, data: bytes, max_bytes: int, *, peer: bytes | None = None
    ) -> tuple[list[bytes], Received]:
        """A sync frame from `peer` -> the frames to send back, and what got applied."""
        try:
            message = decode_sync(data)
        except ProtocolError as exc:
            out = Received()
            self._refuse(exc.reason, out)
            return [], out
        if isinstance(message, Entries):
            return [], self.receive([*message.headers, *message.entries], peer=peer)
        if isinstance(message, Buckets):
            differ = differing_buckets(self._bucket_hashes(), message.hashes)
            return vector_frames(self.vector(), differ, max_bytes), Received()
        serve, want = plan(message, self.vector())
        want = {c: seq for c, seq in want.items() if not self._past_cut(c, seq)}
        for client_id, seq in message.seqs.items():
            if client_id in self.quarantined:
                want.pop(client_id, None)
                serve[client_id] = seq
        records = [r for c, seq in serve.items() for r in self._records_after(c, seq)]
        return entries_frames(records, max_bytes) + want_frames(want, max_bytes), Received()

    def _records_after(self, client_id: int, seq: int) -> list[bytes]:
        """What a peer that holds a stream up to `seq` lacks (header too if seq is 0); for a
        stream we quarantined, the evidence instead, to a peer that holds some of it."""
        log = self._logs.get(client_id, [])
        if client_id not in self.quarantined:
            header = self._headers.get(client_id, self._own_header)
            return log[seq:] if seq else [header, *log] if log else []
        if not seq:
            return []
        records = log[seq:]
        for evidence in self._evidence:
            if evidence.client_id == client_id and evidence.kind != "claim_taken":
                records += [r for r in evidence.records if r not in records]
        return records

    def evidence(self) -> list[Evidence]:
        return list(self._evidence)
