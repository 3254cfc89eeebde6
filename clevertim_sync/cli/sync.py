"""`sync` (and `--dry-run`): one pull, with a progress bar on a terminal, plain log lines otherwise.

Owns: turning the command's options into `pull.pipeline.pull` / `plan_pull` and their output
(summary table, the dry run's plan as lines or JSON). It migrates the database first.
"""

from __future__ import annotations

import sys

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import Engine

from clevertim_sync import resources
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.cli.common import bad_entries_text, mirror
from clevertim_sync.logs import configure_logging
from clevertim_sync.mirror.store import ResourceCounts
from clevertim_sync.pull import photos
from clevertim_sync.pull.pipeline import PullReport, ResourcePlan, plan_pull, pull, resources_in_order


@cli.command("sync")
@click.option(
    "--resource",
    "-r",
    "names",
    multiple=True,
    type=click.Choice(list(resources.PULL_ORDER)),
    help="Pull only this resource (repeatable); default: all, parents first.",
)
@click.option(
    "--allow-mass-delete",
    is_flag=True,
    help="Apply a listing even if it deletes more than pull.mass_delete_threshold of a resource.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print per resource what a pull would insert, update and delete (and whether the "
    "mass-delete guard would hold it); write nothing, not even a run row.",
)
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: the plan as JSON.")
@pass_app
def sync_command(
    app: AppContext, names: tuple[str, ...], allow_mass_delete: bool, dry_run: bool, as_json: bool
) -> None:
    """Pull the account once into the mirror; exit 1 if any resource failed or was held."""
    settings = app.settings
    if dry_run:
        _dry_run(app, names, allow_mass_delete, as_json)
        return
    if as_json:
        raise click.UsageError("--json goes with --dry-run (the pull's own summary is a table)")
    interactive = sys.stderr.isatty()
    # On a terminal the progress bar speaks; only warnings and errors are logged beside it.
    level = settings.log_level if not interactive or settings.log_level == "debug" else "warning"
    configure_logging(settings.log_format, level, stream=sys.stderr)
    wanted = resources_in_order(names or None)
    # Here, not at the top: the other commands of this module start faster without it.
    from clevertim_sync.daemon.command_alerts import alerts_after  # noqa: PLC0415

    with (
        mirror(app) as engine,
        ClevertimClient.from_settings(settings) as client,
        alerts_after(engine, settings),
    ):
        if interactive:
            report = _pull_with_progress(engine, client, wanted, allow_mass_delete, app)
        else:
            report = pull(
                engine, client, resources=wanted, allow_mass_delete=allow_mass_delete, settings=settings
            )
    _print_summary(report)
    if report.halted:
        click.echo(f"clevertim-sync: {report.halted}: {', '.join(report.skipped)}", err=True)
    if not report.ok:
        click.echo(
            f"clevertim-sync: {len(report.failed)} resource(s) failed or held: {', '.join(report.failed)}",
            err=True,
        )
        sys.exit(1)


def _dry_run(app: AppContext, names: tuple[str, ...], allow_mass_delete: bool, as_json: bool) -> None:
    settings = app.settings
    configure_logging(settings.log_format, "warning", stream=sys.stderr)
    with mirror(app) as engine, ClevertimClient.from_settings(settings) as client:
        plans = plan_pull(
            engine, client, resources=names or None, allow_mass_delete=allow_mass_delete, settings=settings
        )
    if as_json:
        click.echo(orjson.dumps([p.as_dict() for p in plans]).decode())
    else:
        click.echo("\n".join(dry_run_lines(plans)))
    if any(p.held or p.error for p in plans):
        sys.exit(1)


def _ids(ids: list[int], limit: int = 20) -> str:
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def dry_run_lines(plans: list[ResourcePlan]) -> list[str]:
    """`sync --dry-run` as text: a line per resource, then the ids (and changed fields) per change."""
    lines = ["sync --dry-run: what a pull would do now; nothing was written"]
    for p in plans:
        if p.unavailable:
            lines.append(f"  {p.resource}: unavailable, nothing would change: {p.unavailable}")
            continue
        if p.error:
            lines.append(f"  {p.resource}: would fail, as in a pull: {p.error}")
            continue
        lines.append(
            f"  {p.resource}: {p.listed} listed, {len(p.inserts)} to insert, {len(p.updates)} to update, "
            f"{len(p.deletes)} to delete, {p.touched} touched (lm only), {p.unchanged} unchanged"
        )
        if p.inserts:
            lines.append(f"    insert: {_ids(p.inserts)}")
        if p.updates:
            shown = [f"{rid} ({', '.join(fields)})" for rid, fields in list(p.updates.items())[:20]]
            more = f", ... ({len(p.updates) - 20} more)" if len(p.updates) > 20 else ""
            lines.append(f"    update: {', '.join(shown)}{more}")
        if p.deletes:
            lines.append(f"    delete: {_ids(p.deletes)}")
        if p.held:
            lines.append(f"    HELD by the mass-delete guard, nothing would be applied: {p.held}")
    return lines


def _pull_with_progress(
    engine: Engine, client: ClevertimClient, wanted: list[str], allow_mass_delete: bool, app: AppContext
) -> PullReport:
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("pulling", total=len(wanted))

        def progress(name: str, counts: ResourceCounts | None) -> None:
            if counts is None:
                bar.update(task, description=f"pulling {name}")
            else:
                bar.advance(task)

        return pull(
            engine,
            client,
            resources=wanted,
            allow_mass_delete=allow_mass_delete,
            settings=app.settings,
            progress=progress,
        )


def _print_summary(report: PullReport) -> None:
    table = Table(title=f"pull run {report.run_id}: {report.status}")
    for col in ("resource", "inserted", "updated", "deleted", "unchanged", "seconds", "error"):
        table.add_column(col, justify="left" if col in ("resource", "error") else "right")
    for name, c in report.resources.items():
        error = ("HELD: " if c.held else "") + (c.error or "")
        if c.unavailable:
            error = f"unavailable (not an error): {c.unavailable}"
        if c.skipped:
            error += f"{'; ' if error else ''}{c.skipped} left out: {'; '.join(c.skipped_reasons)}"
        if c.bad_entries:
            error += f"{'; ' if error else ''}{bad_entries_text(c.bad_entries)}"
        table.add_row(
            name, str(c.inserted), str(c.updated), str(c.deleted), str(c.unchanged), f"{c.seconds:.2f}", error
        )
    console = Console(width=160 if not sys.stdout.isatty() else None)
    console.print(table)
    if report.photos is not None:
        console.print(photos.summary_line(report.photos), highlight=False)
