"""`search`: full-text search of notes, contacts and companies (reports.search)."""

from __future__ import annotations

import click

from clevertim_sync.cli import AppContext, cli, pass_app, quiet_logs
from clevertim_sync.cli.common import mirror
from clevertim_sync.cli.report import format_option
from clevertim_sync.reporting import reports


@cli.command("search")
@click.argument("words", nargs=-1, required=True)
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="At most this many hits."
)
@format_option
@pass_app
def search_command(app: AppContext, words: tuple[str, ...], limit: int, fmt: str) -> None:
    """Full-text search of notes, contacts and companies: records holding every word."""
    quiet_logs()
    with mirror(app) as engine:
        hits = reports.search(engine, " ".join(words), limit=limit)
    rows = [(h.kind, h.record_id, h.title, h.snippet) for h in hits]
    click.echo(reports.render(["kind", "id", "title", "snippet"], rows, fmt))
