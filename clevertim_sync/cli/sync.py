"""Commands of the mirror: `db upgrade`, `sync` (and `--dry-run`), `status`, `export`.

Owns: turning those commands' options into calls of `mirror.db`, `pull.pull` / `pull.plan_pull`,
`mirror.store`, and their output (progress bar on a terminal, plain log lines otherwise, summary
tables, JSON). Every command migrates the database first.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import Engine

from clevertim_sync import resources
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.cli.common import mirror
from clevertim_sync.logs import configure_logging
from clevertim_sync.mirror import db, store
from clevertim_sync.mirror.store import ResourceCounts
from clevertim_sync.pull import photos
from clevertim_sync.pull.pipeline import PullReport, ResourcePlan, plan_pull, pull, resources_in_order


@cli.group("db")
def db_group() -> None:
    """The mirror database's schema."""


@db_group.command("upgrade")
@pass_app
def db_upgrade(app: AppContext) -> None:
    """Create or migrate the mirror's tables to the newest schema (every command also does this)."""
    with mirror(app) as engine:
        revision = db.current_revision(engine)
        where = engine.url.render_as_string(hide_password=True)
    click.echo(f"database {where} is at revision {revision}")


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
            lines.append(f"  {p.resource}: the listing failed: {p.error}")
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
            error += f"{'; ' if error else ''}{_bad_entries_text(c.bad_entries)}"
        table.add_row(
            name, str(c.inserted), str(c.updated), str(c.deleted), str(c.unchanged), f"{c.seconds:.2f}", error
        )
    console = Console(width=160 if not sys.stdout.isatty() else None)
    console.print(table)
    if report.photos is not None:
        console.print(photos.summary_line(report.photos), highlight=False)


def _bad_entries_text(counts: dict[str, int]) -> str:
    """`status`'s and `sync`'s line for the entries reported by reason (clevertim_sync/entries.py)."""
    return "odd entries: " + ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per resource, for scripts.")
@pass_app
def status_command(app: AppContext, as_json: bool) -> None:
    """Per resource: last pull, its age, record count, last counts, error, whether it is held.

    The table ends with a line about the writeback queue (--json: the resources only)."""
    # Here, not at the top: `sync` shares this module and starts faster without them.
    from clevertim_sync.daemon import members  # noqa: PLC0415
    from clevertim_sync.daemon.alerts import read_status  # noqa: PLC0415
    from clevertim_sync.writeback import outbox, queue  # noqa: PLC0415
    from clevertim_sync.writeback.outbox import CONFLICT  # noqa: PLC0415

    with mirror(app) as engine, engine.connect() as conn:
        statuses = store.resource_statuses(conn)
        counts = {name: store.mirrored_count(conn, name) for name in resources.PULL_ORDER}
        in_queue = outbox.depth(conn)
        active_alerts = read_status(conn)
        conflicts = [i.id for i in queue.list_items(conn, state=CONFLICT, limit=10)]
        photo_line = photos.status_line(conn, enabled=app.settings.pull.photos)
        # On PostgreSQL the server knows which daemon holds the mirror's lock (its session's name).
        served_by = members.holders(conn) if conn.dialect.name == "postgresql" else None
    now = datetime.now(UTC)
    rows = [_status_row(name, statuses.get(name), counts[name], now) for name in resources.PULL_ORDER]
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title="mirror status")
    for col in ("resource", "records", "last pull", "age", "last success", "+/~/-", "failures", "state"):
        table.add_column(col)
    for r in rows:
        last = r["last_counts"] or {}
        changes = (
            f"{last.get('inserted', 0)}/{last.get('updated', 0)}/{last.get('deleted', 0)}" if last else ""
        )
        state = (
            "HELD: " + (r["held_reason"] or "")
            if r["held"]
            else (r["last_error"] or "ok" if r["last_pull_at"] else "never pulled")
        )
        if r["unavailable"]:
            state = f"unavailable: {r['unavailable']} (asked again every pull.unavailable_retry)"
        if last.get("skipped"):
            reasons = "; ".join(last.get("skipped_reasons") or [])
            state += f"; {last['skipped']} entries left out ({reasons})"
        if last.get("bad_entries"):
            state += f"; {_bad_entries_text(last['bad_entries'])}"
        success = r["last_success_at"]
        table.add_row(
            r["resource"],
            str(r["records"]),
            _when(r["last_pull_at"]),
            _age(r["age_seconds"]),
            "same" if success and success == r["last_pull_at"] else _when(success),
            changes,
            str(r["consecutive_failures"]),
            state,
        )
    console = Console(width=200 if not sys.stdout.isatty() else None)
    console.print(table)
    console.print(_queue_line(in_queue), highlight=False)
    if photo_line:
        console.print(photo_line, highlight=False)
    if active_alerts:
        told = ", ".join(f"{r.condition}{'' if r.told else ' (not yet told)'}" for r in active_alerts)
        console.print(f"alerts: {told} (see `clevertim-sync alerts status`)", highlight=False)
    if conflicts:
        console.print(_conflicts_line(in_queue.get(CONFLICT, 0), conflicts), highlight=False)
    if served_by is not None:
        who = f"daemon {', '.join(served_by)}" if served_by else "no daemon now"
        console.print(f"served by: {who}", highlight=False)


def _when(iso: str | None) -> str:
    """An ISO-8601 UTC time as the table shows it: `2026-11-29 02:10:07` (the JSON keeps it whole)."""
    return iso[:19].replace("T", " ") if iso else ""


def _queue_line(by_state: dict[str, int]) -> str:
    """One line about the writeback queue: what waits, what needs a person, and where to look."""
    from clevertim_sync.writeback.outbox import ALL_STATES, NEEDS_A_PERSON  # noqa: PLC0415 - see status

    if not by_state:
        return "writeback queue: empty"
    parts = [f"{by_state[s]} {s}" for s in ALL_STATES if by_state.get(s)]
    needs_a_person = any(by_state.get(s) for s in NEEDS_A_PERSON)
    hint = f" (see `clevertim-sync queue list --state {'|'.join(NEEDS_A_PERSON)}`)" if needs_a_person else ""
    return "writeback queue: " + ", ".join(parts) + hint


def _conflicts_line(n: int, ids: list[int]) -> str:
    """The open conflicts, named, with the command that shows both sides of the first."""
    more = ", ..." if n > len(ids) else ""
    listed = ", ".join(map(str, ids)) + more
    return f"open conflicts: {n} (items {listed}); `clevertim-sync queue show {ids[0]}` shows both sides"


def _status_row(name: str, st: dict[str, Any] | None, records: int, now: datetime) -> dict[str, Any]:
    st = st or {}
    last: datetime | None = st.get("last_pull_at")
    success: datetime | None = st.get("last_success_at")
    return {
        "resource": name,
        "records": records,
        "last_pull_at": last.isoformat() if last else None,
        "age_seconds": round((now - last).total_seconds(), 1) if last else None,
        "last_success_at": success.isoformat() if success else None,
        "last_counts": orjson.loads(st["last_counts"]) if st.get("last_counts") else None,
        "last_error": st.get("last_error"),
        "consecutive_failures": st.get("consecutive_failures", 0),
        "held": bool(st.get("held", False)),
        "held_reason": st.get("held_reason"),
        "unavailable": st.get("unavailable"),
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


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
