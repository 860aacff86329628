"""The sqlite store: clean-shutdown marker, replay window, survival of SIGKILL, schema guard."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kai_mesh.core.errors import StoreError
from kai_mesh.runtime.store import InboxRow, OutboxRow, Store


def test_clean_shutdown_marker_and_run_count(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    first = Store(db)
    assert (first.runs, first.was_clean) == (1, False)
    first.close()
    second = Store(db)
    assert (second.runs, second.was_clean) == (2, True)
    del second  # no close(): an unclean end
    third = Store(db)
    assert (third.runs, third.was_clean) == (3, False)
    third.close()


def test_replays_are_refused_across_restarts_until_forgotten(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    store = Store(db)
    assert store.inbox_take(_inbox_row(b"a" * 16, 1, expires_at=100))
    assert not store.inbox_take(_inbox_row(b"a" * 16, 1, expires_at=100))
    assert store.inbox_take(_inbox_row(b"b" * 16, 1, expires_at=200))
    store.close()
    store = Store(db)
    assert not store.inbox_take(_inbox_row(b"a" * 16, 1, expires_at=100))
    assert store.forget_seen_before(150) == 1
    assert store.seen_count() == 1
    assert store.inbox_take(_inbox_row(b"a" * 16, 1, expires_at=300))
    store.close()


def test_a_commit_survives_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    code = (
        "import os, signal, sys\n"
        "from kai_mesh.runtime.store import Store\n"
        "s = Store(__import__('pathlib').Path(sys.argv[1]))\n"
        "from kai_mesh.runtime.store import InboxRow\n"
        "s.inbox_take(InboxRow(sender=b'x' * 16, message_id=b'y' * 8, envelope=b'e',"
        " expires_at=123, priority=2, received_at=1.0))\n"
        "print('acknowledged', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(db)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == -signal.SIGKILL and "acknowledged" in done.stdout
    store = Store(db)
    assert not store.was_clean
    assert [r.message_id for r in store.inbox_rows(now=0)] == [b"y" * 8]
    store.close()


def test_a_database_from_a_newer_kai_mesh_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    Store(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(StoreError, match="newer kai-mesh"):
        Store(db)


def test_garbage_instead_of_a_database_is_a_store_error(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    db.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError, match=str(db)):
        Store(db)


def _row(n: int, **changes: object) -> OutboxRow:
    values: dict[str, object] = {
        "message_id": n.to_bytes(8, "big"),
        "node_id": b"\x01" * 16,
        "destination": "kai://node2/echo",
        "intent": "echo",
        "priority": 1,
        "message": b"\x01envelope",
        "created_at": 1000.0 + n,
        "expires_at": 5000,
    }
    values.update(changes)
    return OutboxRow(**values)  # type: ignore[arg-type]


def test_outbox_rows_survive_a_reopen_and_change_state(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.db")
    store.outbox_add(_row(1))
    store.outbox_add(_row(2, priority=3))
    with pytest.raises(StoreError, match="already in the outbox"):
        store.outbox_add(_row(1))
    assert store.outbox_update(_row(1).message_id, attempts=2, last_error="no route")
    assert not store.outbox_update(b"\x09" * 8, attempts=1)
    with pytest.raises(StoreError, match="no columns"):
        store.outbox_update(_row(1).message_id, bogus=1)
    store.close()

    store = Store(tmp_path / "node.db")
    first = store.outbox_get(_row(1).message_id)
    assert first is not None and first.attempts == 2 and first.last_error == "no route"
    assert [r.message_id for r in store.outbox_rows(state="waiting")] == [
        _row(1).message_id,
        _row(2).message_id,
    ]
    store.outbox_update(_row(2).message_id, state="delivered", done_at=2000.0, reply=b"\x01r")
    assert store.outbox_counts() == {"waiting": 1, "delivered": 1}
    delivered = store.outbox_get(_row(2).message_id)
    assert delivered is not None and delivered.reply == b"\x01r"
    assert store.outbox_forget_done(before=1999.0) == 0
    assert store.outbox_forget_done(before=2001.0) == 1  # the waiting row is never forgotten
    assert store.outbox_counts() == {"waiting": 1}
    store.close()


def test_a_database_of_the_first_schema_gains_the_outbox(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
        "CREATE TABLE seen (sender BLOB NOT NULL, message_id BLOB NOT NULL,"
        " expires_at INTEGER NOT NULL, PRIMARY KEY (sender, message_id)) WITHOUT ROWID;"
        "PRAGMA user_version=1;"
    )
    db.close()
    store = Store(path)
    store.outbox_add(_row(7))
    assert store.outbox_counts() == {"waiting": 1}
    store.close()


def _inbox_row(sender: bytes, n: int, expires_at: int = 5000) -> InboxRow:
    return InboxRow(
        sender=sender,
        message_id=n.to_bytes(8, "big"),
        envelope=b"\x01envelope%d" % n,
        expires_at=expires_at,
        priority=2,
        received_at=1000.0 + n,
    )


def test_a_message_that_must_arrive_is_kept_once_with_its_id_until_served(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "node.db")
    first = _inbox_row(b"a" * 16, 1)
    assert store.inbox_take(first)
    assert not store.inbox_take(first)  # a retry: already seen, not kept again
    assert store.seen_count() == 1  # the id is in `seen`
    assert store.inbox_take(_inbox_row(b"b" * 16, 1))  # the same id from another sender
    assert [(r.sender, r.message_id) for r in store.inbox_rows(now=0)] == [
        (b"a" * 16, first.message_id),
        (b"b" * 16, first.message_id),
    ]
    del store  # no close(): a crash
    store = Store(tmp_path / "node.db")
    assert store.inbox_rows(now=0)[0] == first
    assert store.inbox_done(b"a" * 16, first.message_id)
    assert not store.inbox_done(b"a" * 16, first.message_id)
    assert not store.inbox_take(first)  # served and gone, still refused as a replay
    assert [r.sender for r in store.inbox_rows(now=0)] == [b"b" * 16]
    store.close()


def test_expired_inbox_rows_are_not_listed_and_are_forgotten_with_the_replay_window(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "node.db")
    assert store.inbox_take(_inbox_row(b"a" * 16, 1, expires_at=100))
    assert store.inbox_take(_inbox_row(b"a" * 16, 2, expires_at=300))
    assert [r.message_id for r in store.inbox_rows(now=200)] == [(2).to_bytes(8, "big")]
    assert len(store.inbox_rows(now=100)) == 2  # expiring this second: still served
    assert store.forget_seen_before(200) == 1
    assert len(store.inbox_rows(now=0)) == 1
    assert store.seen_count() == 1
    store.close()


def test_state_logs_only_grow_and_come_back_in_stream_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.db")
    store.state_append([(7, b"h7")], [(7, 2, b"e7.2"), (7, 1, b"e7.1")])
    store.state_append([(3, b"h3"), (7, b"other")], [(3, 1, b"e3.1"), (7, 1, b"forged")])
    store.state_keep_evidence("fork", 7, b"e7.1", b"forged")
    store.close()
    store = Store(tmp_path / "node.db")
    headers, entries = store.state_logs()
    assert sorted(headers) == [b"h3", b"h7"]  # the second claim of 7 did not replace the first
    assert entries == [b"e3.1", b"e7.1", b"e7.2"]
    store.close()


def test_durable_opens_with_synchronous_full_and_the_default_with_normal(tmp_path: Path) -> None:
    durable = Store(tmp_path / "a.db", durable=True)
    plain = Store(tmp_path / "b.db")
    try:
        assert durable.synchronous() == "FULL"
        assert plain.synchronous() == "NORMAL"
    finally:
        durable.close()
        plain.close()
