"""Commands of backups: `backup`, `verify`, `restore` (of a backup, from restic, or `--from-export`),
and `restore --drill`, which proves a backup restores.

Owns: turning options into calls of clevertim_sync.backup (archive, restic, configured, asof) and
their output. `export --as-of` is an option of the pull's `export` command (cli/export.py), which
calls asof.export_as_of.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click

from clevertim_sync.backup import archive as backups
from clevertim_sync.backup import asof as export_asof
from clevertim_sync.backup import configured, restic
from clevertim_sync.cli import AppContext, cli, pass_app, quiet_logs
from clevertim_sync.cli.common import mirror
from clevertim_sync.errors import BackupError

CLI_ACCOUNT = "default"  # the account name the command line's backups carry in restic
IDENTITY_HELP = "The age identity file (AGE-SECRET-KEY-1...) of an encrypted backup."


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
    With backup.age_recipients the archive is encrypted to them. Without DEST, --keep and
    --method, the backup is the configured one: with backup.restic_repository it is (also) sent
    to restic as a snapshot.
    """
    quiet_logs()
    settings = app.settings
    # Here, not at the top: `verify` and `restore` start faster without it.
    from clevertim_sync.daemon.command_alerts import alerts_after  # noqa: PLC0415

    with mirror(app) as engine, alerts_after(engine, settings, backup=True):
        if dest is None and keep is None and method == "auto":
            done = configured.backup_as_configured(engine, settings, CLI_ACCOUNT)
            if done.archive is not None:
                _echo_archive(done.archive)
            if done.restic is not None:
                _echo_restic(done.restic)
            return
        result = backups.backup(
            engine,
            dest if dest is not None else backups.default_dir(settings),
            keep=keep if keep is not None else settings.backup.keep,
            daily=settings.backup.keep_daily,
            weekly=settings.backup.keep_weekly,
            method=cast(backups.Method, method),
            recipients=settings.backup.age_recipients,
        )
    _echo_archive(result)


def _rows(tables: dict[str, int]) -> int:
    return sum(n for t, n in tables.items() if t != "alembic_version")


def _echo_archive(result: backups.BackupResult) -> None:
    sealed = ", encrypted with age" if result.encrypted else ""
    click.echo(
        f"{result.path}: {result.manifest.method} backup{sealed}, {_rows(result.manifest.tables)} rows in "
        f"{len(result.manifest.tables)} tables, {result.size} bytes, {result.seconds:.2f}s"
        + (f"; removed {len(result.pruned)} older backup(s)" if result.pruned else "")
    )


def _echo_restic(sent: restic.Sent) -> None:
    click.echo(
        f"restic snapshot {sent.snapshot_id}: {sent.manifest.method} backup, "
        f"{_rows(sent.manifest.tables)} rows, {sent.bytes_sent} bytes sent, {sent.data_added} new "
        f"in the repository, {sent.seconds:.2f}s"
        + (f"; forgot {len(sent.forgotten)} older snapshot(s)" if sent.forgotten else "")
    )


@cli.command("verify")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--identity", type=click.Path(path_type=Path, dir_okay=False), help=IDENTITY_HELP)
def verify_command(path: Path, identity: Path | None) -> None:
    """Check a backup: checksums, row counts, and that its snapshot opens. Exit 1 if it is damaged.

    An encrypted backup is checked whole without --identity (its checksum, an age file inside)
    and completely with it.
    """
    quiet_logs()
    if identity is None and (envelope := backups.check_envelope(path)) is not None:
        click.echo(
            f"{path}: whole, encrypted with age: {envelope.method} backup taken {envelope.created_at}, "
            f"schema {envelope.schema_version}; its contents are checked with --identity FILE"
        )
        return
    manifest = backups.verify(path, identity=identity)
    click.echo(
        f"{path}: OK, {manifest.method} backup of {manifest.source} taken {manifest.created_at}, "
        f"schema {manifest.schema_version}, {_rows(manifest.tables)} rows in {len(manifest.tables)} tables"
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
    "--from-restic",
    "repository",
    help="Restore from this restic repository (its password: backup.restic_password_file, the "
    "credential, or RESTIC_PASSWORD_FILE).",
)
@click.option("--snapshot", help="With --from-restic: this snapshot id (default: the newest).")
@click.option("--account", help="With --from-restic: the newest snapshot of this account.")
@click.option("--identity", type=click.Path(path_type=Path, dir_okay=False), help=IDENTITY_HELP)
@click.option("--to", "to_url", help="Database URL to restore into (sqlite:///FILE, postgresql://...).")
@click.option(
    "--drill",
    is_flag=True,
    help="Restore into a temporary database, read every record back, report; no --to. Without "
    "PATH or --from-restic: the newest configured backup (restic, else backup.dir).",
)
@click.option("--force", is_flag=True, help="Replace the contents of a database that already holds data.")
@pass_app
def restore_command(
    app: AppContext,
    *,
    path: Path | None,
    export_dir: Path | None,
    repository: str | None,
    snapshot: str | None,
    account: str | None,
    identity: Path | None,
    to_url: str | None,
    drill: bool,
    force: bool,
) -> None:
    """Restore a backup (verified first) or an export into an empty database, then upgrade its schema."""
    quiet_logs()
    sources = [s for s in (path, export_dir, repository) if s is not None]
    if len(sources) > 1 or (not sources and not drill):
        raise BackupError(
            "give either a backup file, --from-restic REPOSITORY or --from-export DIR (one of them)"
        )
    if drill == (to_url is not None):
        raise BackupError("give --to URL to restore, or --drill to prove the backup restores (one of them)")
    if drill:
        if export_dir is not None:
            raise BackupError("--drill proves a backup or a restic snapshot, not an export")
        report = _drill(
            app, path=path, repository=repository, snapshot=snapshot, account=account, identity=identity
        )
        click.echo(report.line())
        return
    assert to_url is not None
    if export_dir is not None:
        counts = export_asof.restore_from_export(export_dir, to_url, force=force)
        click.echo(f"restored {sum(counts.values())} records from {export_dir}")
        return
    if repository is not None:
        snap, result = restic.restore_from(
            _repository(app, repository), to_url, snapshot=snapshot, account=account, force=force
        )
        where = f"restic snapshot {snap.short_id} of {snap.time:%Y-%m-%d %H:%M} UTC"
    else:
        assert path is not None
        result = backups.restore(path, to_url, force=force, identity=identity)
        where = str(path)
    click.echo(
        f"restored {_rows(result.rows)} rows from {where} into {result.target}, "
        f"now at schema {result.upgraded_to}"
    )


def _repository(app: AppContext, location: str) -> restic.Repository:
    """A repository named on the command line; its password file and options as configured, if a
    config file has them (on a fresh machine: RESTIC_PASSWORD_FILE)."""
    conf = app.settings.backup
    return restic.repository(location, conf.restic_password_file, options=conf.restic_options)


def _drill(
    app: AppContext,
    *,
    path: Path | None,
    repository: str | None,
    snapshot: str | None,
    account: str | None,
    identity: Path | None,
) -> configured.DrillReport:
    if path is not None:
        return configured.drill_archive(path, identity)
    repo = _repository(app, repository) if repository is not None else restic.configured(app.settings)
    if repo is not None:
        return configured.drill_restic(repo, snapshot=snapshot, account=account)
    return configured.drill_archive(backups.newest(backups.default_dir(app.settings)), identity)
