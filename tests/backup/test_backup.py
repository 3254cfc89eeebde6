"""Backups on real SQLite files and the real PostgreSQL: archive, verify, restore, retention.

The emulator-driven scenarios (backup during a pull, as-of export) are in test_backup_live.py.
"""

from __future__ import annotations

import stat
import tarfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from support.mirror_data import PHOTO, dump, seed

from clevertim_sync.backup import archive as bk
from clevertim_sync.errors import BackupError
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.db import alembic_config, make_engine, upgrade
from clevertim_sync.reporting import reports
from clevertim_sync.settings import Settings

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def target_url(empty_database: Callable[[], str]) -> str:
    """A second, empty database of the same kind as `database_url`: where restores go."""
    return empty_database()


def test_backup_verify_restore_round_trip(
    mirror: sa.Engine, migrated_database_url: str, target_url: str, tmp_path: Path
) -> None:
    result = bk.backup(mirror, tmp_path / "backups")
    assert result.path.parent == tmp_path / "backups"
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(result.path.parent.stat().st_mode) == 0o700
    assert result.manifest.tables["contacts"] == 30 and result.manifest.tables["history"] == 31
    assert result.manifest.tables["folders"] == 2 and result.manifest.tables["contact_photos"] == 1
    assert result.manifest.schema_version is not None
    assert result.manifest.method == ("sqlite" if migrated_database_url.startswith("sqlite") else "pg_dump")
    assert "password" not in result.manifest.source
    assert bk.verify(result.path) == result.manifest

    restored = bk.restore(result.path, target_url)
    assert restored.rows["contacts"] == 30
    assert dump(target_url) == dump(migrated_database_url)
    assert bytes(dump(target_url)["contact_photos"][0][3]) == PHOTO  # the photo's bytes, exactly
    # The restored mirror is a working mirror: new history rows get fresh ids.
    engine = make_engine(target_url)
    with engine.begin() as conn:
        new_id = conn.execute(
            schema.history.insert().returning(schema.history.c.id),
            {"resource": "contact", "record_id": 1, "origin": "pull", "op": "update", "at": T0},
        ).scalar_one()
    engine.dispose()
    assert new_id == 32


@pytest.mark.postgres
def test_logical_backup_and_restores_across_databases(postgres_url: str, tmp_path: Path):
    pg = make_engine(postgres_url)
    upgrade(pg)
    seed(pg)
    logical = bk.backup(pg, tmp_path, method="logical")
    assert logical.manifest.method == "logical"
    bk.verify(logical.path)
    sqlite_target = f"sqlite:///{tmp_path / 'from-pg.sqlite3'}"
    bk.restore(logical.path, sqlite_target)
    assert dump(sqlite_target) == dump(postgres_url)
    assert bytes(dump(sqlite_target)["contact_photos"][0][3]) == PHOTO  # hex in the dump, bytes again

    # A pg_dump cannot go into SQLite: refused before anything in the target is touched.
    dumped = bk.backup(pg, tmp_path / "dump")
    assert dumped.manifest.method == "pg_dump"
    with pytest.raises(BackupError, match="only into PostgreSQL"):
        bk.restore(dumped.path, sqlite_target, force=True)
    assert dump(sqlite_target) == dump(postgres_url)

    # ... and a SQLite snapshot restores into PostgreSQL (after a wipe: --force).
    snap = bk.backup(sqlite_target, tmp_path)
    with pytest.raises(BackupError, match="already holds data"):
        bk.restore(snap.path, postgres_url)
    bk.restore(snap.path, postgres_url, force=True)
    assert dump(postgres_url) == dump(sqlite_target)
    pg.dispose()


def _cut(src: Path, dest: Path, size: int) -> Path:
    dest.write_bytes(src.read_bytes()[:size])
    return dest


def _flip_byte_in(src: Path, dest: Path, member: str) -> Path:
    """Change one byte inside a member's data, the way bit rot or tampering would."""
    with tarfile.open(src) as tar:
        offset = tar.getmember(member).offset_data
    data = bytearray(src.read_bytes())
    data[offset + 10] ^= 0xFF
    dest.write_bytes(bytes(data))
    return dest


def test_truncated_or_altered_backups_are_refused(mirror: sa.Engine, target_url: str, tmp_path: Path):
    good = bk.backup(mirror, tmp_path / "b").path
    payload = next(iter(bk.verify(good).files))
    with tarfile.open(good) as tar:  # cut inside the content, not in tar's zero padding
        data, end = tar.getmember(payload), tar.getmember(bk.END_MARKER)
    bad = {
        "cut in payload": (_cut(good, tmp_path / "half.tar", data.offset_data + data.size // 2), "truncated"),
        "manifest only": (_cut(good, tmp_path / "head.tar", data.offset), "truncated"),
        "end marker cut": (_cut(good, tmp_path / "tail.tar", end.offset), "truncated"),
        "empty": (_cut(good, tmp_path / "empty.tar", 0), "truncated or not a tar"),
        "payload altered": (_flip_byte_in(good, tmp_path / "p.tar", payload), "checksum of payload/"),
        "manifest altered": (_flip_byte_in(good, tmp_path / "m.tar", bk.MANIFEST), "altered|not valid JSON"),
    }
    for label, (path, message) in bad.items():
        with pytest.raises(BackupError, match=message):
            bk.verify(path)
        with pytest.raises(BackupError, match=message):
            bk.restore(path, target_url)
        assert label and dump(target_url) == {}  # nothing was created in the target
    with pytest.raises(BackupError, match="no backup file"):
        bk.verify(tmp_path / "missing.tar")


def test_restore_refuses_a_database_with_data(mirror: sa.Engine, migrated_database_url: str, tmp_path: Path):
    backup = bk.backup(mirror, tmp_path).path
    with mirror.begin() as conn:
        conn.execute(schema.CURRENT["contact"].delete().where(schema.CURRENT["contact"].c.id > 10))
    with pytest.raises(BackupError, match=r"already holds data.*--force"):
        bk.restore(backup, migrated_database_url)
    assert len(dump(migrated_database_url)["contacts"]) == 10  # untouched
    mirror.dispose()
    bk.restore(backup, migrated_database_url, force=True)
    assert len(dump(migrated_database_url)["contacts"]) == 30


@pytest.fixture
def sqlite_mirror(sqlite_mirror_engine: sa.Engine) -> sa.Engine:
    """For tests of what does not depend on the database (retention): SQLite only, for speed."""
    seed(sqlite_mirror_engine, n=3)
    return sqlite_mirror_engine


def test_retention_keeps_the_newest_and_nothing_else(sqlite_mirror: sa.Engine, tmp_path: Path):
    mirror = sqlite_mirror
    where = tmp_path / "backups"
    where.mkdir()
    (where / "notes.txt").write_text("not a backup")
    made = [bk.backup(mirror, where, keep=3, now=T0 + timedelta(days=d)).path for d in range(5)]
    left = sorted(p.name for p in where.iterdir())
    assert left == sorted([*(p.name for p in made[-3:]), "notes.txt"])
    with pytest.raises(BackupError, match="at least 1"):
        bk.prune(where, 0)

    # Daily and weekly: the newest of each of the last N days / ISO weeks are kept too.
    spread = tmp_path / "spread"
    for hours in (0, 5, 24, 30, 48, 24 * 8, 24 * 15, 24 * 15 + 1):
        bk.backup(mirror, spread, now=T0 + timedelta(hours=hours))

    def hours_left() -> list[int]:
        return sorted(int((bk._taken_at(p) - T0).total_seconds() // 3600) for p in spread.iterdir())

    bk.prune(spread, 1, daily=4)  # the newest of Jan 17, 10, 4 and 3
    assert hours_left() == [30, 48, 24 * 8, 24 * 15 + 1]
    bk.prune(spread, 1, weekly=2)  # the newest of ISO weeks 3 and 2 of 2026
    assert hours_left() == [24 * 8, 24 * 15 + 1]

    # Another mirror backed up into the same directory keeps its own backups.
    other_url = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    upgrade(other_url)
    theirs = bk.backup(other_url, where, keep=1, now=T0 + timedelta(days=9)).path
    assert theirs.exists() and all(p.exists() for p in made[-3:])
    bk.backup(mirror, where, keep=1, now=T0 + timedelta(days=10))
    assert theirs.exists() and not any(p.exists() for p in made)


def test_backup_while_writing_is_one_committed_state(mirror: sa.Engine, target_url: str, tmp_path: Path):
    """A writer commits a contact and its history row together; every backup has both or neither."""
    stop = threading.Event()

    def writer() -> None:
        i = 1000
        while not stop.is_set():
            i += 1
            with mirror.begin() as conn:
                conn.execute(schema.CURRENT["contact"].insert(), {"id": i, "raw": "{}", "content_hash": "w"})
                conn.execute(
                    schema.history.insert(),
                    {"resource": "contact", "record_id": i, "origin": "pull", "op": "insert", "at": T0},
                )

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        backups = [bk.backup(mirror, tmp_path / "live") for _ in range(3)]
    finally:
        stop.set()
        thread.join()
    counts = [b.manifest.tables["contacts"] for b in backups]
    assert counts == sorted(counts) and counts[-1] > 30  # the writer really ran during the backups
    for b in backups:  # seed's history also holds one folder's row
        assert b.manifest.tables["contacts"] == b.manifest.tables["history"] - 1
    restored = bk.restore(backups[-1].path, target_url)
    assert restored.rows["contacts"] == restored.rows["history"] - 1 == counts[-1]


def test_an_older_backup_is_upgraded_on_restore(database_url: str, target_url: str, tmp_path: Path) -> None:
    """A backup taken before the reports migration restores into a mirror with views and search."""
    engine = make_engine(database_url)
    upgrade(engine, "0002_writeback_queue")
    seed(engine, documents=False)
    old = bk.backup(engine, tmp_path)
    engine.dispose()
    assert old.manifest.schema_version == "0002_writeback_queue"

    restored = bk.restore(old.path, target_url)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert restored.upgraded_to == head and restored.rows["contacts"] == 30
    target = make_engine(target_url)
    hits = reports.search(target, "Zoë 7")
    columns, rows = reports.run_report(target, "contacts")
    target.dispose()
    assert [(h.kind, h.record_id) for h in hits] == [("contact", 7)]  # indexed by the upgrade
    assert len(rows) == 30 and "email" in columns


def test_backup_with_settings_uses_the_configured_directory_and_retention(
    sqlite_mirror: sa.Engine, tmp_path: Path
) -> None:
    mirror = sqlite_mirror
    settings = Settings.model_validate({"state_dir": tmp_path, "backup": {"keep": 2}})
    for _ in range(3):
        bk.backup_with_settings(mirror, settings)
    assert len(list((tmp_path / "backups").glob("clevertim-sync-*.tar"))) == 2
    elsewhere = Settings.model_validate({"backup": {"dir": tmp_path / "elsewhere", "keep": 1}})
    assert bk.backup_with_settings(mirror, elsewhere).path.parent == tmp_path / "elsewhere"


def test_a_backup_that_cannot_be_written_says_so(mirror: sa.Engine, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the backup directory should be")
    with pytest.raises(BackupError, match="nothing was written"):
        bk.backup(mirror, blocker / "backups")
    with pytest.raises(BackupError, match="does not exist"):
        bk.backup(f"sqlite:///{tmp_path / 'no-such.sqlite3'}", tmp_path / "b")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
