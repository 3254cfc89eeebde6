"""A second daemon on a mirror whose lock is held is refused before it migrates the database or
sends a single request to the API (lock file on SQLite, advisory lock on PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from clevertim_sync.cli import cli
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import lock as instance_lock
from clevertim_sync.mirror.db import current_revision, make_engine


def test_a_twin_is_refused_before_migrating_or_calling_the_api(
    emulator: EmulatorServer, database_url: str, tmp_path: Path
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'log_format = "json"\n[clevertim]\nurl = "{emulator.base_url}"\ntoken = "test-token"\n'
        f'[database]\nurl = "{database_url}"\n'
    )
    emulator.control.clear_requests()
    held = instance_lock.acquire(database_url)  # the running daemon, as far as the twin can tell
    try:
        result = CliRunner().invoke(cli, ["--config", str(cfg), "run"])
    finally:
        held.release()
    assert result.exit_code == 1, result.output
    assert "already runs against this mirror" in result.output
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None  # no migration ran
    finally:
        engine.dispose()
    assert emulator.control.requests() == []  # not even the token check
