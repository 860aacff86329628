"""The node's sqlite database (WAL) in its data directory.

"Acknowledged" means committed here before the reply or the send: every write method commits
before it returns, and the node awaits it (in a worker thread) before answering anyone. WAL with
`synchronous=NORMAL` survives a `kill -9` of the process with every commit intact (only a power
loss can take the last transactions; `durable=True` trades speed for that too).

Tables: `meta` (schema version, run count, the clean-shutdown marker) and `seen` (the replay window
of messages that arrived from other nodes, so a replay is refused across restarts too). Later issues
add the outbox, the signed update logs and governance objects through `_MIGRATIONS`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from kai_mesh.core.errors import StoreError

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE seen (
        sender BLOB NOT NULL, message_id BLOB NOT NULL, expires_at INTEGER NOT NULL,
        PRIMARY KEY (sender, message_id)
    ) WITHOUT ROWID;
    CREATE INDEX seen_expiry ON seen (expires_at);
    """,
)


class Store:
    """One connection, used from one thread at a time (the lock makes that so)."""

    def __init__(self, path: Path, *, durable: bool = False) -> None:
        self.path = path
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

    def get_meta(self, key: str) -> bytes | None:
        with self._lock:
            return self._get(key)

    def put_meta(self, key: str, value: bytes) -> None:
        with self._lock:
            self._put_many([(key, value)])

    def remember_seen(self, sender: bytes, message_id: bytes, expires_at: int) -> bool:
        """Record a message from another node; False if it was already there (a replay)."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                "INSERT OR IGNORE INTO seen VALUES (?, ?, ?)", (sender, message_id, expires_at)
            )
            return cur.rowcount == 1

    def forget_seen_before(self, now: int) -> int:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            return self._db.execute("DELETE FROM seen WHERE expires_at < ?", (now,)).rowcount

    def seen_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM seen").fetchone()[0])

    def close(self) -> None:
        """Mark a clean shutdown and close. The next open sees `was_clean`."""
        with self._lock:
            try:
                self._put_many([("clean_shutdown", b"1")])
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()
