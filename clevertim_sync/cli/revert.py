"""`revert`: queue the writes that bring a record back to an earlier version from history.

Owns: the command; which version `--to` means and what is queued are writeback/revert.py's.
"""

from __future__ import annotations

import click

from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.cli.common import mirror
from clevertim_sync.cli.edit import item_line, known_resource
from clevertim_sync.writeback.revert import revert as revert_record


@cli.command("revert")
@click.argument("resource")
@click.argument("record_id", type=int)
@click.option(
    "--to",
    "version",
    required=True,
    metavar="ID|vN|TIME",
    help="A history id (3, as `revert` always took), a version number as `history` shows it (v3), "
    "or a time (2026-11-27T18:00Z: the version current then).",
)
@pass_app
def revert_command(app: AppContext, resource: str, record_id: int, version: str) -> None:
    """Queue the writes that bring RESOURCE RECORD_ID back to an earlier VERSION from history
    (re-creating it, with a new id, if it was deleted)."""
    known_resource(resource)
    with mirror(app) as engine:
        item = revert_record(engine, resource, record_id, version)
    if item is None:
        click.echo(f"{resource} {record_id} is already as it was at version {version}: nothing queued")
    else:
        click.echo(item_line(item))
