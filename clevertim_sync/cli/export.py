"""`export`: every record as last pulled (or as it was at a time, from history), as JSON lines."""

from __future__ import annotations

from pathlib import Path

import click

from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.cli.common import mirror
from clevertim_sync.mirror import store


@cli.command("export")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--as-of", "as_of", help="Every record as it was at this ISO-8601 time, rebuilt from history.")
@pass_app
def export_command(app: AppContext, directory: Path, as_of: str | None) -> None:
    """Write DIRECTORY/<resource>.jsonl: every record exactly as last pulled, sorted by id."""
    if as_of is not None:  # the backup engineer's part: clevertim_sync/backup/asof.py
        from clevertim_sync.backup import asof as export_asof  # noqa: PLC0415
        from clevertim_sync.mirror import versions  # noqa: PLC0415

        with mirror(app) as engine:
            written = export_asof.export_as_of(engine, directory, versions.parse_timestamp(as_of))
    else:
        with mirror(app) as engine, engine.connect() as conn:
            written = store.export_jsonl(conn, directory)
    for name, count in written.items():
        click.echo(f"{directory / (name + '.jsonl')}: {count} records")
