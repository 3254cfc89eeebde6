"""What `[backup]` says to do: the scheduled backup (a directory, restic, or both) and the restore drill.

Owns: `backup_as_configured` (the daemon's backup job and `clevertim-sync backup` without a DEST)
and the drill: a backup restored into a temporary SQLite mirror, every record read back, a
report; or a BackupError saying why the backup does not restore. The drill proves a backup the
way a fresh machine would use it: from the archive (with its age identity) or from restic (with
its password), never from the mirror it was taken of.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from clevertim_sync.backup import archive, restic
from clevertim_sync.errors import BackupError
from clevertim_sync.mirror import store
from clevertim_sync.mirror.db import make_engine
from clevertim_sync.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ConfiguredBackup:
    archive: archive.BackupResult | None  # written into backup.dir
    restic: restic.Sent | None  # sent to backup.restic_repository


def backup_as_configured(engine: Engine, settings: Settings, account: str) -> ConfiguredBackup:
    """An archive into backup.dir (unless restic alone is configured: no `dir` and a repository),
    and a snapshot to the restic repository when there is one, each pruned by keep*."""
    conf = settings.backup
    repo = restic.configured(settings)
    written = None
    if repo is None or conf.dir is not None:
        written = archive.backup_with_settings(engine, settings)
    sent = None
    if repo is not None:
        sent = restic.send(
            engine,
            repo,
            account,
            work_dir=Path(settings.state_dir),
            keep=conf.keep,
            daily=conf.keep_daily,
            weekly=conf.keep_weekly,
        )
    return ConfiguredBackup(written, sent)


@dataclass(frozen=True)
class DrillReport:
    source: str  # the archive, or "restic <repository> snapshot <id>"
    taken_at: str
    schema: str | None
    rows: int  # rows restored, every table
    records: dict[str, int]  # records read back from the restored mirror, per resource
    seconds: float

    def line(self) -> str:
        return (
            f"drill OK: {self.source} (taken {self.taken_at}, schema {self.schema}) restored "
            f"{self.rows} rows; read back {sum(self.records.values())} records; {self.seconds:.2f}s"
        )


def drill_archive(path: Path, identity: Path | None = None) -> DrillReport:
    """Restore the archive at `path` into a temporary mirror and read every record back."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="clevertim-sync-drill-") as tmp:
        restored = archive.restore(path, f"sqlite:///{Path(tmp) / 'drill.sqlite3'}", identity=identity)
        records = _read_back(f"sqlite:///{Path(tmp) / 'drill.sqlite3'}", Path(tmp) / "export")
    return _report(str(path), restored, records, started)


def drill_restic(
    repo: restic.Repository, *, snapshot: str | None = None, account: str | None = None
) -> DrillReport:
    """Fetch a restic snapshot (the newest of `account` by default), restore it, read it back."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="clevertim-sync-drill-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'drill.sqlite3'}"
        snap, restored = restic.restore_from(repo, url, snapshot=snapshot, account=account)
        records = _read_back(url, Path(tmp) / "export")
    source = f"restic {restic.shown(repo.location)} snapshot {snap.short_id}"
    return _report(source, restored, records, started)


def scheduled_drill(settings: Settings, account: str) -> DrillReport:
    """The daemon's drill job: the newest restic snapshot of this account."""
    repo = restic.configured(settings)
    if repo is None:  # settings refuse drill_interval without a repository
        raise BackupError("the drill needs backup.restic_repository")
    return drill_restic(repo, account=account)


def _read_back(url: str, directory: Path) -> dict[str, int]:
    """Every record of the restored mirror, read as `export` reads it: the rows are whole JSON."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return store.export_jsonl(conn, directory)
    except sa.exc.SQLAlchemyError as exc:
        raise BackupError(
            f"the restored mirror does not read back: {getattr(exc, 'orig', None) or exc}"
        ) from exc
    finally:
        engine.dispose()


def _report(
    source: str, restored: archive.RestoreResult, records: dict[str, int], started: float
) -> DrillReport:
    rows = sum(n for t, n in restored.rows.items() if t != "alembic_version")
    report = DrillReport(
        source,
        restored.manifest.created_at,
        restored.manifest.schema_version,
        rows,
        records,
        time.monotonic() - started,
    )
    log.info(
        "backup.drill_passed", rows=rows, records=sum(records.values()), seconds=round(report.seconds, 3)
    )
    return report
