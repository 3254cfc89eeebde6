"""`report`: print one of the reporting views (reports.REPORTS) as a table, CSV or JSON."""

from __future__ import annotations

import click

from clevertim_sync.cli import AppContext, cli, pass_app, quiet_logs
from clevertim_sync.cli.common import mirror
from clevertim_sync.mirror import versions
from clevertim_sync.reporting import reports

# --format of `report` and `search` alike (reports.render's formats).
format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="How to print the rows: an aligned table, CSV or JSON.",
)


@cli.command("report")
@click.argument("name", required=False)
@click.option("--list", "list_reports", is_flag=True, help="Name every report and what it shows.")
@format_option
@click.option("--since", help="Only rows at or after this ISO-8601 time (changes, contacts).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many rows.")
@pass_app
def report_command(
    app: AppContext, *, name: str | None, list_reports: bool, fmt: str, since: str | None, limit: int | None
) -> None:
    """Print one of the reporting views (see --list); each is also a SQL view named report_<name>."""
    quiet_logs()
    if list_reports or name is None:
        for report in reports.REPORTS.values():
            click.echo(f"{report.name:<18} {report.view:<25} {report.description}")
        return
    when = versions.parse_timestamp(since) if since else None
    with mirror(app) as engine:
        columns, rows = reports.run_report(engine, name, since=when, limit=limit)
    click.echo(reports.render(columns, rows, fmt))
