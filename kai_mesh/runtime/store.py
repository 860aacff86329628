"""The node's sqlite database (WAL) in its data directory.

"Acknowledged" means committed here before the reply or the send: every write method commits
before it returns, and the node awaits it (in a worker thread) before answering anyone. WAL with
`synchronous=NORMAL` survives a `kill -9` of the process with every commit intact, but a power
loss can take the last transactions; `durable=True` (`synchronous=FULL`, what the node opens)
fsyncs the WAL at every commit, so they survive that too (bench/durability.py: ~21,000 against
250 to 1,000 commits/s on this development VM; hardware/README.md for the Pi and its SD card).

Tables: `meta` (schema version, run count, the clean-shutdown marker) and `seen` (the replay window
of messages that arrived from other nodes, so a replay is refused across restarts too, and a message
that must arrive is handed to its agent once however often it is retried) and `outbox` (messages
that must arrive, until the recipient acknowledges them or they expire), and the replicated state's
logs: `state_headers` (signed stream claims), `state_entries` (signed entries, by stream and seq)
and `state_evidence` (conflicting claims and forks, both records), and `gov_objects` (every
governance record kept: proposals, votes, redemptions, by the SHA-256 of their bytes), and `inbox`
(messages that must arrive, from their ack until their agent's reply has left:
runtime/messaging/durable_inbox.py).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from kai_mesh.core.errors import StoreError
from kai_mesh.runtime.blocking import RunSync, in_thread

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE seen (
        sender BLOB NOT NULL, message_id BLOB NOT NULL, expires_at INTEGER NOT NULL,
        PRIMARY KEY (sender, message_id)
    ) WITHOUT ROWID;
    CREATE INDEX seen_expiry ON seen (expires_at);
    """,
    """
    CREATE TABLE outbox (
        message_id BLOB PRIMARY KEY, node_id BLOB NOT NULL, destination TEXT NOT NULL,
        intent TEXT NOT NULL, priority INTEGER NOT NULL, message BLOB NOT NULL,
        created_at REAL NOT NULL, expires_at INTEGER NOT NULL, state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, handed_off INTEGER NOT NULL DEFAULT 0,
        done_at REAL, reply BLOB
    ) WITHOUT ROWID;
    CREATE INDEX outbox_state ON outbox (state);
    """,
    """
    CREATE TABLE state_headers (client_id INTEGER PRIMARY KEY, data BLOB NOT NULL);
    CREATE TABLE state_entries (
        client_id INTEGER NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (client_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE state_evidence (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, client_id INTEGER NOT NULL,
        first BLOB NOT NULL, second BLOB NOT NULL
    );
    """,
    """
    CREATE TABLE gov_objects (id BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
    """,
    """
    CREATE TABLE inbox (
        sender BLOB NOT NULL, message_id BLOB NOT NULL, envelope BLOB NOT NULL,
        expires_at INTEGER NOT NULL, priority INTEGER NOT NULL, received_at REAL NOT NULL,
        PRIMARY KEY (sender, message_id)
    ) WITHOUT ROWID;
    CREATE INDEX inbox_expiry ON inbox (expires_at);
    """,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRow:
    """One message that must arrive. `message` is its envelope with both node ids (no link
    elision: it may leave over any transport); times are wall-clock seconds."""

    message_id: bytes
    node_id: bytes
    destination: str
    intent: str
    priority: int
    message: bytes
    created_at: float
    expires_at: int
    state: str = "waiting"
    attempts: int = 0
    last_error: str | None = None
    handed_off: bool = False
    done_at: float | None = None
    reply: bytes | None = None


_OUTBOX_COLUMNS = tuple(f.name for f in fields(OutboxRow))


@dataclass(frozen=True, slots=True, kw_only=True)
class InboxRow:
    """One message that must arrive, acknowledged and not yet served to the end. `envelope` is
    as it came in the DELIVER frame (node ids may be left out: the link proved them)."""

    sender: bytes
    message_id: bytes
    envelope: bytes
    expires_at: int
    priority: int
    received_at: float


_INBOX_COLUMNS = tuple(f.name for f in fields(InboxRow))


class Store:
    """One connection, used from one thread at a time (the lock makes that so). Trio code calls
    it through `run_sync` (runtime/blocking.py): a worker thread unless the opener chose inline."""

    def __init__(self, path: Path, *, durable: bool = False, run_sync: RunSync = in_thread) -> None:
        self.path = path
        self.run_sync = run_sync
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
            self.was_clean = self._get("clean_shutdown") == b"1"
            runs = int(self._get("runs") or b"0") + 1
            self._put_many([("runs", str(runs).encode()), ("clean_shutdown", b"0")])
            self.runs = runs
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the node database: {exc}") from None

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(_MIGRATIONS):
            raise StoreError(
                f"{self.path}: written by a newer kai-mesh (schema {version}); upgrade kai-mesh"
            )
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            self._db.executescript(f"BEGIN; {script} PRAGMA user_version={number}; COMMIT;")

    def _get(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def _put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(items))

    def synchronous(self) -> str:
        """The connection's `PRAGMA synchronous` as sqlite names it (`NORMAL`, `FULL`, ...): what
        a commit survives, read back rather than trusted, so a test can hold the node to FULL."""
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        with self._lock:
            level = int(self._db.execute("PRAGMA synchronous").fetchone()[0])
        return names.get(level, str(level))

    def get_meta(self, key: str) -> bytes | None:
        with self._lock:
            return self._get(key)

    def put_meta(self, key: str, value: bytes) -> None:
        with self._lock:
            self._put_many([(key, value)])

    def forget_seen_before(self, now: int) -> int:
        """Drop the replay window's and the inbox's rows that expired before `now` (the decoder
        refuses an expired message anyway); how many `seen` rows went."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM inbox WHERE expires_at < ?", (now,))
            return self._db.execute("DELETE FROM seen WHERE expires_at < ?", (now,)).rowcount

    def seen_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM seen").fetchone()[0])

    # ---- inbox ------------------------------------------------------------------------------

    def inbox_take(self, row: InboxRow) -> bool:
        """Record a message that must arrive in the replay window and, only the first time, in
        the inbox, in one transaction; False if it was already seen (a retry: not kept again)."""
        marks = ", ".join("?" * len(_INBOX_COLUMNS))
        with self._lock, self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                "INSERT OR IGNORE INTO seen VALUES (?, ?, ?)",
                (row.sender, row.message_id, row.expires_at),
            )
            if cur.rowcount != 1:
                return False
            self._db.execute(f"INSERT INTO inbox VALUES ({marks})", astuple(row))
            return True

    def inbox_done(self, sender: bytes, message_id: bytes) -> bool:
        """Drop a served message's row; False when there was none."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                "DELETE FROM inbox WHERE sender=? AND message_id=?", (sender, message_id)
            )
            return cur.rowcount == 1

    def inbox_rows(self, now: int, *, limit: int = 1000) -> list[InboxRow]:
        """Rows not expired at `now`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_INBOX_COLUMNS)} FROM inbox WHERE expires_at >= ?"
                " ORDER BY received_at LIMIT ?",
                (now, limit),
            ).fetchall()
        return [
            InboxRow(
                sender=bytes(sender),
                message_id=bytes(message_id),
                envelope=bytes(envelope),
                expires_at=int(expires_at),
                priority=int(priority),
                received_at=float(received_at),
            )
            for sender, message_id, envelope, expires_at, priority, received_at in rows
        ]

    # ---- outbox -----------------------------------------------------------------------------

    def outbox_add(self, row: OutboxRow) -> None:
        """Commit a new message that must arrive. Raises `StoreError` for a known message id."""
        marks = ", ".join("?" * len(_OUTBOX_COLUMNS))
        try:
            with self._lock, self._db:
                self._db.execute("BEGIN")
                self._db.execute(f"INSERT INTO outbox VALUES ({marks})", astuple(row))
        except sqlite3.IntegrityError:
            raise StoreError(f"message {row.message_id.hex()} is already in the outbox") from None

    def outbox_update(self, message_id: bytes, **changes: Any) -> bool:
        """Change some columns of one row; False when there is no such row."""
        unknown = set(changes) - set(_OUTBOX_COLUMNS[1:])
        if unknown or not changes:
            raise StoreError(f"outbox has no columns {sorted(unknown)}")
        assignments = ", ".join(f"{name}=?" for name in changes)
        with self._lock, self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                f"UPDATE outbox SET {assignments} WHERE message_id=?",
                (*changes.values(), message_id),
            )
            return cur.rowcount == 1

    def outbox_get(self, message_id: bytes) -> OutboxRow | None:
        rows = self._outbox_select("WHERE message_id=?", (message_id,))
        return rows[0] if rows else None

    def outbox_rows(self, *, state: str | None = None, limit: int = 1000) -> list[OutboxRow]:
        """Rows oldest first, all states or one."""
        if state is None:
            return self._outbox_select("ORDER BY created_at LIMIT ?", (limit,))
        return self._outbox_select("WHERE state=? ORDER BY created_at LIMIT ?", (state, limit))

    def outbox_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, count(*) FROM outbox GROUP BY state")
            return {str(state): int(n) for state, n in rows}

    def outbox_forget_done(self, before: float) -> int:
        """Drop finished rows (delivered, expired, failed) finished before `before`."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                "DELETE FROM outbox WHERE state != 'waiting' AND done_at < ?", (before,)
            )
            return cur.rowcount

    def _outbox_select(self, where: str, args: tuple[Any, ...]) -> list[OutboxRow]:
        with self._lock:
            cur = self._db.execute(f"SELECT {', '.join(_OUTBOX_COLUMNS)} FROM outbox {where}", args)
            rows = cur.fetchall()
        out = []
        for row in rows:
            values = dict(zip(_OUTBOX_COLUMNS, row, strict=True))
            values["handed_off"] = bool(values["handed_off"])
            for name in ("message_id", "node_id", "message"):
                values[name] = bytes(values[name])
            if values["reply"] is not None:
                values["reply"] = bytes(values["reply"])
            out.append(OutboxRow(**values))
        return out

    # ---- replicated state --------------------------------------------------------------------

    def state_append(
        self, headers: Iterable[tuple[int, bytes]], entries: Iterable[tuple[int, int, bytes]]
    ) -> None:
        """Commit stream headers `(client_id, data)` and entries `(client_id, seq, data)` in one
        transaction; a record already there is left as it is (the logs only grow)."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO state_headers VALUES (?, ?)", headers)
            self._db.executemany("INSERT OR IGNORE INTO state_entries VALUES (?, ?, ?)", entries)

    def state_logs(self) -> tuple[list[bytes], list[bytes]]:
        """Every header, and every entry in stream and seq order: what rebuilds the doc."""
        with self._lock:
            headers = [bytes(r[0]) for r in self._db.execute("SELECT data FROM state_headers")]
            entries = [
                bytes(r[0])
                for r in self._db.execute("SELECT data FROM state_entries ORDER BY client_id, seq")
            ]
        return headers, entries

    def state_keep_evidence(self, kind: str, client_id: int, first: bytes, second: bytes) -> None:
        """Keep signed records that prove a stream broke a rule (the replica's `Evidence`;
        `second` is empty when one record is the proof). Kept once: the same proof again is
        not stored twice."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            row = (kind, client_id, first, second)
            known = self._db.execute(
                "SELECT 1 FROM state_evidence"
                " WHERE kind=? AND client_id=? AND first=? AND second=?",
                row,
            ).fetchone()
            if known is None:
                self._db.execute(
                    "INSERT INTO state_evidence (kind, client_id, first, second)"
                    " VALUES (?, ?, ?, ?)",
                    row,
                )

    def state_evidence(self) -> list[tuple[str, int, bytes, bytes]]:
        """Every proof kept, oldest first: (kind, client id, first record, second or b"")."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, client_id, first, second FROM state_evidence ORDER BY id"
            ).fetchall()
        return [(str(k), int(c), bytes(a), bytes(b)) for k, c, a, b in rows]

    # ---- governance --------------------------------------------------------------------------

    def gov_add(self, records: Iterable[bytes]) -> None:
        """Commit governance records in one transaction (keyed by their SHA-256; a record
        already there is left as it is)."""
        rows = [(hashlib.sha256(r).digest(), r) for r in records]
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO gov_objects VALUES (?, ?)", rows)

    def gov_objects(self) -> list[bytes]:
        """Every governance record kept, in no particular order (the machine needs none)."""
        with self._lock:
            return [bytes(r[0]) for r in self._db.execute("SELECT data FROM gov_objects")]

    def close(self) -> None:
        """Mark a clean shutdown and close. The next open sees `was_clean`."""
        with self._lock:
            try:
                self._put_many([("clean_shutdown", b"1")])
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()
