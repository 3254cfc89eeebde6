"""`status`: each resource's last pull, the queue, open conflicts: a table, or JSON for scripts."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from clevertim_sync import resources
from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.cli.common import bad_entries_text, mirror
from clevertim_sync.mirror import store
from clevertim_sync.pull import photos


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
            state += f"; {bad_entries_text(last['bad_entries'])}"
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
