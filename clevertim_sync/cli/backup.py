"""Commands of backups: `backup`, `verify`, `restore` (of a backup, or `--from-export`).

Owns: turning options into calls of clevertim_sync.backup.archive and export_asof, and their output.
`export --as-of` is an option of the pull's `export` command (cli/sync.py), which calls
export_asof.export_as_of.

Must not import: httpx, the API client.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click

from clevertim_sync.backup import archive as backups
from clevertim_sync.backup import asof as export_asof
from clevertim_sync.cli import AppContext, cli, pass_app, quiet_logs
from clevertim_sync.cli.common import mirror
from clevertim_sync.errors import BackupError


@cli.command("backup")
@click.argument("dest", required=False, type=click.Path(path_type=Path))
@click.option(
    "--keep", type=click.IntRange(min=1), default=None, help="Keep only the newest N backups in DEST."
)
@click.option(
    "--method",
    type=click.Choice(["auto", "sqlite", "pg_dump", "logical"]),
    default="auto",
    show_default=True,
    help="auto: the SQLite online backup, or pg_dump when installed, else a logical dump.",
)
@pass_app
def backup_command(app: AppContext, dest: Path | None, keep: int | None, method: str) -> None:
    """Write a verified, compressed snapshot of the mirror into DEST (a directory, or a .tar path).

    Safe while the daemon runs. DEST defaults to backup.dir (else <state dir>/backups); --keep
    defaults to backup.keep, and backup.keep_daily / keep_weekly keep one per day / week more.
    """
    quiet_logs()
    target = dest if dest is not None else backups.default_dir(app.settings)
    keep = keep if keep is not None else app.settings.backup.keep
    # Here, not at the top: `verify` and `restore` start faster without it.
    from clevertim_sync.daemon.command_alerts import alerts_after  # noqa: PLC0415

    with mirror(app) as engine, alerts_after(engine, app.settings, backup=True):
        result = backups.backup(
            engine,
            target,
            keep=keep,
            daily=app.settings.backup.keep_daily,
            weekly=app.settings.backup.keep_weekly,
            method=cast(backups.Method, method),
        )
    rows = sum(n for t, n in result.manifest.tables.items() if t != "alembic_version")
    click.echo(
        f"{result.path}: {result.manifest.method} backup, {rows} rows in {len(result.manifest.tables)} "
        f"tables, {result.size} bytes, {result.seconds:.2f}s"
        + (f"; removed {len(result.pruned)} older backup(s)" if result.pruned else "")
    )


@cli.command("verify")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
def verify_command(path: Path) -> None:
    """Check a backup: checksums, row counts, and that its snapshot opens. Exit 1 if it is damaged."""
    quiet_logs()
    manifest = backups.verify(path)
    rows = sum(n for t, n in manifest.tables.items() if t != "alembic_version")
    click.echo(
        f"{path}: OK, {manifest.method} backup of {manifest.source} taken {manifest.created_at}, "
        f"schema {manifest.schema_version}, {rows} rows in {len(manifest.tables)} tables"
    )


@cli.command("restore")
@click.argument("path", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--from-export",
    "export_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Load a directory written by `export` (or `export --as-of`) instead of a backup file.",
)
@click.option(
    "--to", "to_url", required=True, help="Database URL to restore into (sqlite:///FILE, postgresql://...)."
)
@click.option("--force", is_flag=True, help="Replace the contents of a database that already holds data.")
def restore_command(path: Path | None, export_dir: Path | None, to_url: str, force: bool) -> None:
    """Restore a backup (verified first) or an export into an empty database, then upgrade its schema."""
    quiet_logs()
    if (path is None) == (export_dir is None):
        raise BackupError("give either a backup file or --from-export DIR (one of them)")
    if export_dir is not None:
        counts = export_asof.restore_from_export(export_dir, to_url, force=force)
        click.echo(f"restored {sum(counts.values())} records from {export_dir}")
        return
    assert path is not None
    result = backups.restore(path, to_url, force=force)
    rows = sum(n for t, n in result.rows.items() if t != "alembic_version")
    click.echo(f"restored {rows} rows from {path} into {result.target}, now at schema {result.upgraded_to}")
