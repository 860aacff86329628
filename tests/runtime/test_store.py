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
from kai_mesh.runtime.store import Store


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
    assert store.remember_seen(b"a" * 16, b"m" * 8, expires_at=100)
    assert not store.remember_seen(b"a" * 16, b"m" * 8, expires_at=100)
    assert store.remember_seen(b"b" * 16, b"m" * 8, expires_at=200)
    store.close()
    store = Store(db)
    assert not store.remember_seen(b"a" * 16, b"m" * 8, expires_at=100)
    assert store.forget_seen_before(150) == 1
    assert store.seen_count() == 1
    assert store.remember_seen(b"a" * 16, b"m" * 8, expires_at=300)
    store.close()


def test_a_commit_survives_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    code = (
        "import os, signal, sys\n"
        "from kai_mesh.runtime.store import Store\n"
        "s = Store(__import__('pathlib').Path(sys.argv[1]))\n"
        "s.remember_seen(b'x' * 16, b'y' * 8, 123)\n"
        "print('acknowledged', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(db)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == -signal.SIGKILL and "acknowledged" in done.stdout
    store = Store(db)
    assert not store.was_clean
    assert not store.remember_seen(b"x" * 16, b"y" * 8, 123)
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
