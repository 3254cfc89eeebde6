"""`push` (and `push --dry-run`): send the due queue items now, or show what would be sent.

Owns: taking the mirror's instance lock for a push when it is free, and printing push reports and
plans.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click
import orjson

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.cli.common import mirror
from clevertim_sync.daemon.command_alerts import alerts_after
from clevertim_sync.errors import ClevertimSyncError
from clevertim_sync.logs import configure_logging
from clevertim_sync.mirror import lock as instance_lock
from clevertim_sync.writeback.dryrun import PushPlan, plan_push
from clevertim_sync.writeback.worker import push as push_queue


@contextmanager
def _instance_lock(app: AppContext) -> Iterator[str | None]:
    """The mirror's instance lock for this push when it is free (no daemon runs): its holder id,
    so that what a killed earlier push left in flight is reconciled at once, not after
    push.lease. None when a daemon holds it: this push then runs beside it, as before."""
    try:
        held = instance_lock.acquire(app.settings.database.url)
    except ClevertimSyncError:  # InstanceLocked, or a database the lock cannot cover
        yield None
        return
    try:
        yield held.holder_id
    finally:
        held.release()


@cli.command("push")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the requests a push would send now (after the merge) and send none; "
    "only reads go to Clevertim and the queue and mirror are left as they are.",
)
@pass_app
def push_command(app: AppContext, as_json: bool, dry_run: bool) -> None:
    """Send every due queue item once; exit 1 if an item failed or was quarantined."""
    settings = app.settings
    configure_logging(settings.log_format, settings.log_level, stream=sys.stderr)
    if dry_run:
        with mirror(app) as engine, ClevertimClient.from_settings(settings) as client:
            plan = plan_push(engine, client, settings)
        click.echo(orjson.dumps(plan.as_dict()).decode() if as_json else "\n".join(plan_lines(plan)))
        return
    with (
        mirror(app) as engine,
        ClevertimClient.from_settings(settings) as client,
        _instance_lock(app) as holder,
        # Under the lock (the push's own): one sender. Without it a daemon runs and tells.
        alerts_after(engine, settings, holding_lock=holder is not None),
    ):
        report = push_queue(engine, client, settings, holder=holder)
    if as_json:
        click.echo(orjson.dumps(report.as_dict()).decode())
    else:
        click.echo(
            f"push: {report.done} done ({report.adopted} adopted after a lost answer), "
            f"{report.conflicts} in conflict, {report.failed} failed, {report.quarantined} quarantined, "
            f"{report.retry_later} to retry, {report.waiting} waiting; {report.writes} writes sent"
        )
        if report.stopped:
            click.echo(f"stopped: {report.stopped}")
    if not report.ok:
        sys.exit(1)


def plan_lines(plan: PushPlan) -> list[str]:
    """`push --dry-run` as text: each request as it would go out, then what would stay behind."""
    if plan.paused_until is not None:
        return [
            f"push --dry-run: a push now would send nothing: paused until {plan.paused_until.isoformat()}"
        ]
    lines = [
        f"push --dry-run: a push now would send {len(plan.requests)} request(s); nothing was sent or changed"
    ]
    for r in plan.requests:
        items = ", ".join(map(str, r.items))
        lines.append(f"  {r.method} {r.path}  (queue item{'s' if len(r.items) > 1 else ''} {items})")
        if r.body is not None:
            lines.append(f"    {orjson.dumps(r.body).decode()}")
        if r.note:
            lines.append(f"    {r.note}")
    if plan.not_sent:
        lines.append("not sent by a push now:")
        lines.extend(f"  item {n.item} ({n.op} {n.resource}): {n.why}" for n in plan.not_sent)
    return lines
