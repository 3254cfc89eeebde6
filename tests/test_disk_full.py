"""A full disk loses nothing and says so in one clear sentence: during a pull, an edit, a backup.

Two ways to fill the disk: SQLite's `max_page_count` (the database then fails with SQLITE_FULL,
the very error a full disk gives, always available), and a real tiny tmpfs for the command line
and for backups (mounting needs root: the test says so and skips without it).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.backup import archive as bk
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.errors import BackupError, DatabaseFailure
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.db import make_engine, upgrade
from clevertim_sync.mirror.failures import failure_kind
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.writeback import queue
from clevertim_sync.writeback import tables as wb

TOKEN = "test-token"


def _limit_pages(engine: sa.Engine, pages: int) -> None:
    """Every new connection of `engine` may grow the file to `pages` pages and no further."""

    @sa.event.listens_for(engine, "connect")
    def _limit(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count={pages}")


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_driver_errors_a_user_must_act_on_are_recognised() -> None:
    full = sqlite3_error(13)
    assert failure_kind(full) == "full"
    assert failure_kind(sqlite3_error(10 | (12 << 8))) == "io"  # an extended I/O code
    assert failure_kind(sqlite3_error(19)) is None  # a constraint: the program's business
    assert failure_kind(psycopg.errors.DiskFull("no space")) == "full"
    assert failure_kind(psycopg.errors.OutOfMemory("oom")) == "resources"
    assert failure_kind(psycopg.errors.UniqueViolation("dup")) is None
    assert failure_kind(ValueError("x")) is None


def sqlite3_error(code: int) -> BaseException:
    exc = sqlite3.OperationalError("database or disk is full" if code == 13 else "error")
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


def test_a_pull_into_a_full_database_keeps_it_consistent_and_catches_up_later(
    sqlite_url: str, emulator: EmulatorServer
) -> None:
    emulator.reset(contacts=300)
    engine = make_engine(sqlite_url)
    upgrade(engine)
    with engine.connect() as conn:
        pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
    engine.dispose()

    full = make_engine(sqlite_url)
    _limit_pages(full, pages + 40)  # room for the small resources, not for contacts or notes
    with ClevertimClient(emulator.base_url, TOKEN) as client:
        report = pull(full, client)
        assert not report.ok
        failed = {name: c.error for name, c in report.resources.items() if c.error}
        assert failed, "the limit must make some resource fail"
        for name, error in failed.items():
            assert error and "disk" in error and "full" in error, error
            assert "INSERT" not in error and "sqlalche.me" not in error, error  # no statement dump
            assert _count(full, schema.CURRENT[name]) == 0  # rolled back whole: nothing half-written
        with pytest.raises(DatabaseFailure) as refused:
            queue.enqueue_create(full, "company", {"cn": "x" * 200_000})
        assert refused.value.kind == "full"
        assert _count(full, wb.writeback_queue) == 0
        full.dispose()

        roomy = make_engine(sqlite_url)  # space freed
        again = pull(roomy, client)
        assert again.ok, again
        remote = emulator.control.state(as_token=TOKEN)
        for name in failed:
            assert _count(roomy, schema.CURRENT[name]) == len(remote[name])
        with roomy.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
        roomy.dispose()


def test_the_commands_on_a_full_disk_say_so_and_lose_nothing(
    tiny_disk: Path, emulator: EmulatorServer, tmp_path: Path, cli_process: Any
) -> None:
    emulator.reset(contacts=400)
    db_url = f"sqlite:///{tiny_disk / 'mirror.sqlite3'}"
    synced = cli_process(db_url, "sync")
    assert synced.returncode != 0, synced.stdout
    assert "is full" in synced.stderr + synced.stdout
    assert "Traceback" not in synced.stderr and "INSERT" not in synced.stderr, synced.stderr

    # Whatever the pull managed to commit is whole; nothing failed half-way.
    with contextlib.closing(make_engine(db_url).connect()) as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"

    filler = tiny_disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as f:  # take the last free bytes too
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    edit = cli_process(db_url, "edit", "create", "company", "--json", '{"cn": "' + "x" * 100_000 + '"}')
    assert edit.returncode == 1, edit.stdout + edit.stderr
    assert "is full" in edit.stderr and "Traceback" not in edit.stderr, edit.stderr
    filler.unlink()


def test_a_backup_onto_a_full_disk_fails_cleanly_and_keeps_older_backups(
    tiny_disk: Path, sqlite_url: str, emulator: EmulatorServer
) -> None:
    emulator.reset(contacts=400)
    engine = make_engine(sqlite_url)
    upgrade(engine)
    with ClevertimClient(emulator.base_url, TOKEN) as client:
        assert pull(engine, client).ok
    older = tiny_disk / "older.tar"
    older.write_bytes(b"an older backup")
    with pytest.raises(BackupError) as failed:
        bk.backup(engine, tiny_disk, keep=1)
    message = str(failed.value)
    assert "space" in message and "nothing was written" in message, message
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["older.tar"]  # no temp file left
    assert older.read_bytes() == b"an older backup"
    engine.dispose()
