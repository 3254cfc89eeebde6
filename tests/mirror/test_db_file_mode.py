"""The SQLite mirror the project creates is readable by its owner only (0600), database file and
its -wal and -shm files alike, whatever the umask, outside systemd too (issue 11)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from clevertim_sync.cli import cli
from clevertim_sync.mirror.db import make_engine, upgrade


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_mirror_file_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files would be world-readable
    try:
        db = tmp_path / "mirror.sqlite3"
        engine = make_engine(f"sqlite:///{db}")
        upgrade(engine)
        with engine.connect() as conn:  # open: the -wal and -shm files exist now
            conn.execute(sa.text("SELECT count(*) FROM writeback_queue")).scalar_one()
            wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
            assert wal.exists() and shm.exists()
            assert (mode(db), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)
        engine.dispose()
    finally:
        os.umask(old)


def test_an_existing_file_keeps_the_mode_its_owner_chose(tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite3"
    db.touch()
    db.chmod(0o640)  # e.g. readable by a reporting group on purpose
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    engine.dispose()
    assert mode(db) == 0o640


def test_the_cli_creates_a_private_mirror(tmp_path: Path) -> None:
    db = tmp_path / "state" / "clevertim-sync.sqlite3"
    db.parent.mkdir()
    old = os.umask(0o002)
    try:
        result = CliRunner().invoke(
            cli,
            ["db", "upgrade"],
            env={"CLEVERTIM_SYNC_DATABASE_URL": f"sqlite:///{db}", "CLEVERTIM_SYNC_CONFIG": ""},
            catch_exceptions=False,
        )
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert mode(db) == 0o600
