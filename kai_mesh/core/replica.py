"""The replica: one mesh's Yjs doc, the signed streams that write it, and the rules that guard it.

A node writes only through `transact`: the update of each local transaction becomes the next
signed entry of the node's own stream (`state_wire`). Records from anyone — peers, relays, the
node's own logs at start — go through `receive`, which checks each entry in this order and never
raises for bad input, counting each refusal by reason:

1. structure (a `ProtocolError` reason);
2. the stream's header is known, else the entry waits (bounded) until it arrives;
3. the signature is the header's node's, and `verify_key_for` still accepts that node, or
   the node is revoked and the entry is at or below the revocation's cut (`core.revocation`:
   it is checked under the key the node had; past the cut it is refused as "revoked");
4. the chain: the next seq after the current head applies; an entry already held is a duplicate;
   a different entry at a held seq (or one whose `prev` is not our head) is a **fork**; one
   beyond the next waits for its predecessors;
5. ownership: the update adds items under no client id but the stream's own (deleting others'
   items is fine);
6. pycrdt applies it; a decoding error is "bad_update", and after any other failure (pycrdt
   raises `RuntimeError` on some malformed updates, and a `PanicException`, a BaseException, on
   others) the doc is rebuilt from the accepted logs, since it may hold part of the update.

A fork, foreign items or a bad update quarantine the stream (its later entries are refused) and
are kept as `Evidence`; so is a header claiming a client id another node claimed first.
Quarantined streams leave the vector, so peers who agree about them stop syncing them; a peer
still listing one is sent the evidence, which makes it quarantine the stream too.

`set_revoked` takes the governance fold's revocations: held entries past a cut are dropped and
the doc rebuilt, so a node that applied them before it learned of the revocation ends with the
same doc as one that never did; a quarantine for a fault past the cut is lifted, as a node that
learned first never sees that fault. A revoked node's own replica refuses to write.

Callers read `replica.doc`, and should fetch it afresh each time: a rebuild replaces it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import pycrdt
from pycrdt import Doc, TransactionEvent

from kai_mesh.core.errors import BadSignature, ProtocolError, UsageError
from kai_mesh.core.identity import NodeSecrets, verify
from kai_mesh.core.revocation import Revocation, Revocations, keep_after_revocation
from kai_mesh.core.state_sync import (
    differing_buckets,
    entries_frames,
    plan,
    vector_frames,
    want_frames,
)
from kai_mesh.core.state_wire import (
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

MAX_PENDING = 10_000
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
    ) -> None:
        self.mesh_id = mesh_id
        self.secrets = secrets
        self.client_id = client_id_ok(client_id, UsageError)
        self.verify_key_for = verify_key_for
        self.refused: dict[str, int] = {}
        self.counters: dict[str, int] = {}
        self._revoked: dict[bytes, Revocation] = {}  # from governance: outlives `_reset`
        self._own_header = encode_header(Header(secrets.node_id, client_id), secrets, mesh_id)
        self._reset()

    def _reset(self) -> None:
        self.quarantined: set[int] = set()
        self._claims: dict[int, bytes] = {self.client_id: self.secrets.node_id}
        self._headers: dict[int, bytes] = {}
        self._logs: dict[int, list[bytes]] = {}
        self._hashes: dict[int, list[bytes]] = {}
        self._pending: dict[int, dict[bytes, int]] = {}
        self._pending_count = 0
        self._evidence: dict[Evidence, None] = {}
        self._buckets: dict[int, bytes] | None = None
        self._new_doc()

    def _new_doc(self) -> None:
        self.doc: YDoc = Doc(client_id=self.client_id)
        self._capture: list[bytes] | None = None
        self.doc.observe(self._on_commit)

    def _on_commit(self, event: TransactionEvent) -> None:
        if self._capture is not None:
            self._capture.append(event.update)

    # Local writes ---------------------------------------------------------------------------------

    def transact(self, edit: Callable[[YDoc], None]) -> list[bytes]:
        """Run `edit(doc)` in one transaction; its update becomes our stream's next entry.

        Returns the records to persist, then send: our header the first time, then the entry;
        nothing when the edit changed nothing. If `edit` raises, the doc is rebuilt from the
        logs (it may hold part of the edit) and the exception propagates.

        Raises:
            UsageError: our own stream is quarantined, or the edit imported other clients' items
                (a foreign update is imported by re-doing it as local edits), or the update is
                larger than a record can be.
        """
        if self.client_id in self.quarantined:
            raise UsageError("our own stream is quarantined: open a new stream (client id)")
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
        return [*records, data]

    # Ingress --------------------------------------------------------------------------------------

    def receive(self, records: Iterable[bytes]) -> Received:
        """Headers and entries in any order, duplicated, from anyone. Never raises for bad input."""
        out = Received()
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
        out.pending = self._pending_count
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
        except _EXITS:
            raise
        except BaseException:
            self._convict("bad_update", client_id, (record,), out)
            return None
        if foreign:
            self._convict("foreign_items", client_id, (record,), out)
            return None
        if not self._apply_foreign(client_id, entry.update, record, out):
            return None
        self._append(client_id, record, entry_hash(record))
        out.entries.append(record)
        return client_id

    def _key_for(self, node_id: bytes) -> bytes | None:
        """The key `node_id` signs with: a revoked node's comes from the fold, as it is no
        longer a member (and a revoked node id never becomes one again)."""
        revocation = self._revoked.get(node_id)
        return self.verify_key_for(node_id) if revocation is None else revocation.key

    def _apply_foreign(self, client_id: int, update: bytes, record: bytes, out: Received) -> bool:
        try:
            _apply(self.doc, update)
            return True
        except ValueError:  # could not decode: nothing was applied
            self._convict("bad_update", client_id, (record,), out)
        except Exception:  # failed while integrating: part of it may be in the doc
            self._convict("bad_update", client_id, (record,), out)
            self._rebuild()
        except _EXITS:
            raise
        except BaseException:  # pyo3's PanicException
            self._convict("panic", client_id, (record,), out)
            self._rebuild()
        return False

    def _append(self, client_id: int, record: bytes, digest: bytes) -> None:
        self._logs.setdefault(client_id, []).append(record)
        self._hashes.setdefault(client_id, []).append(digest)
        self._buckets = None
        self._count("applied")

    def _hold(self, client_id: int, seq: int, record: bytes, out: Received) -> None:
        waiting = self._pending.setdefault(client_id, {})
        if record in waiting:
            self._duplicate(out)
        elif self._pending_count >= MAX_PENDING:
            self._refuse("pending_full", out)
        else:
            waiting[record] = seq
            self._pending_count += 1

    def _drain(self, client_id: int, out: Received) -> None:
        """Retry what waits for `client_id` now that its header or a predecessor arrived."""
        while waiting := self._pending.get(client_id):
            top = len(self._hashes.get(client_id, ())) + 1
            ready = sorted((seq, record) for record, seq in waiting.items() if seq <= top)
            if not ready:
                return
            for _, record in ready:
                del waiting[record]
            self._pending_count -= len(ready)
            if not waiting:
                del self._pending[client_id]
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
            self._pending_count -= len(self._pending.pop(client_id, {}))
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
        """A fresh doc with every accepted entry applied again, stream by stream in seq order."""
        self._count("rebuilds")
        self._new_doc()
        for client_id in sorted(self._logs):
            for record in self._logs[client_id]:
                try:
                    _apply(self.doc, parse_entry(record)[0].update)
                except _EXITS:
                    raise
                except BaseException:  # an accepted entry that fails now: count it, go on
                    self._count("rebuild_failures")

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
        for client_id in list(self._pending):
            revocation = self._revoked.get(self._claims.get(client_id, b""))
            if revocation is not None:
                self._forget_pending(client_id, revocation.last_valid(client_id))
        lifted = self._lift_quarantines()
        if dropped or lifted:
            self._buckets = None
        if dropped:
            self.counters["revoked_dropped"] = self.counters.get("revoked_dropped", 0) + dropped
            self._rebuild()
        return dropped

    def _forget_pending(self, client_id: int, last_valid: int) -> None:
        waiting = self._pending[client_id]
        for record in [r for r, seq in waiting.items() if seq > last_valid]:
            del waiting[record]
            self._pending_count -= 1
        if not waiting:
            del self._pending[client_id]

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

    def on_sync(self, data: bytes, max_bytes: int) -> tuple[list[bytes], Received]:
        """A sync frame from a peer -> the frames to send back, and what got applied."""
        try:
            message = decode_sync(data)
        except ProtocolError as exc:
            out = Received()
            self._refuse(exc.reason, out)
            return [], out
        if isinstance(message, Entries):
            return [], self.receive([*message.headers, *message.entries])
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
