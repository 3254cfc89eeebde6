"""Commands of the writeback queue: `edit create|update|delete`, `push`, `queue ...`, `revert`.

Owns: parsing `--json` / `--set key=value` into fields, and printing queue items and push
reports. Every command migrates the database first (through `cli.sync.mirror`).

Must not import: httpx directly (the client is `ClevertimClient.from_settings`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import click
import orjson
import sqlalchemy as sa

from clevertim_sync import resources
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.api.errors import NotFound
from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.cli.sync import mirror
from clevertim_sync.daemon import lock as instance_lock
from clevertim_sync.errors import ClevertimSyncError, EditRejected
from clevertim_sync.logs import configure_logging
from clevertim_sync.mirror.store import load_record
from clevertim_sync.resources import Kind
from clevertim_sync.writeback import queue
from clevertim_sync.writeback.revert import revert as revert_record
from clevertim_sync.writeback.tables import ALL_STATES, QUARANTINED
from clevertim_sync.writeback.worker import push as push_queue

# Kinds whose --set value is taken as written (a name "123" stays a string).
_TEXT_KINDS = frozenset({Kind.STR, Kind.DECIMAL, Kind.TIMESTAMP})


def parse_set(resource: str, assignment: str) -> tuple[str, Any]:
    """`key=value`: JSON when the value parses as JSON and the property is not text; else a string.

    So `--set title=CTO`, `--set fn=007` (a string), `--set companyId=12`, `--set is_private=true`,
    `--set tags='["a","b"]'` and `--set companyId=local:company:3` all do what they say.
    """
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise EditRejected(resource, [f"--set takes key=value, got {assignment!r}"])
    res = resources.BY_NAME.get(resource)
    prop = res.by_api.get(key) if res else None
    if text == "null":
        return key, None
    if prop is not None and prop.kind in _TEXT_KINDS:
        return key, text
    try:
        return key, orjson.loads(text)
    except orjson.JSONDecodeError:
        return key, text


def gather_fields(resource: str, as_json: str | None, sets: tuple[str, ...]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if as_json is not None:
        try:
            parsed = orjson.loads(as_json)
        except orjson.JSONDecodeError as exc:
            raise EditRejected(resource, [f"--json is not valid JSON: {exc}"]) from None
        if not isinstance(parsed, dict):
            raise EditRejected(resource, ['--json must be a JSON object such as {"title": "CTO"}'])
        fields.update(parsed)
    for assignment in sets:
        key, value = parse_set(resource, assignment)
        fields[key] = value
    return fields


def _item_line(item: queue.QueueItem) -> str:
    target = item.local_ref if item.op == "create" else f"{item.resource} {item.target_id}"
    return f"queued item {item.id}: {item.op} {target} {orjson.dumps(item.fields).decode()}"


_fields_options = [
    click.option("--json", "as_json", help='The fields as a JSON object: \'{"fn": "Ada"}\'.'),
    click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="One field (repeatable)."),
]


def _with_fields(f: Any) -> Any:
    for option in reversed(_fields_options):
        f = option(f)
    return f


@cli.group("edit")
def edit_group() -> None:
    """Queue a local edit (validated now, sent by `push` or the daemon)."""


@edit_group.command("create")
@click.argument("resource")
@_with_fields
@pass_app
def edit_create(app: AppContext, resource: str, as_json: str | None, sets: tuple[str, ...]) -> None:
    """Queue a new RESOURCE; prints the item and its local reference (local:RESOURCE:ID), which
    other queued creates may use as a pointer (e.g. --set companyId=local:company:7)."""
    fields = gather_fields(resource, as_json, sets)
    with mirror(app) as engine:
        item = queue.enqueue_create(engine, resource, fields, source="cli")
    click.echo(_item_line(item))
    click.echo(f"local reference: {item.local_ref}")


@edit_group.command("update")
@click.argument("resource")
@click.argument("record_id", type=int)
@_with_fields
@pass_app
def edit_update(
    app: AppContext, resource: str, record_id: int, as_json: str | None, sets: tuple[str, ...]
) -> None:
    """Queue new values for some fields of RESOURCE RECORD_ID (only those are ever sent)."""
    fields = gather_fields(resource, as_json, sets)
    with mirror(app) as engine:
        item = queue.enqueue_update(engine, resource, record_id, fields, source="cli")
    click.echo(_item_line(item))


@edit_group.command("delete")
@click.argument("resource")
@click.argument("record_id", type=int)
@pass_app
def edit_delete(app: AppContext, resource: str, record_id: int) -> None:
    """Queue the deletion of RESOURCE RECORD_ID."""
    with mirror(app) as engine:
        item = queue.enqueue_delete(engine, resource, record_id, source="cli")
    click.echo(_item_line(item))


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
@pass_app
def push_command(app: AppContext, as_json: bool) -> None:
    """Send every due queue item once; exit 1 if an item failed or was quarantined."""
    settings = app.settings
    configure_logging(settings.log_format, settings.log_level, stream=sys.stderr)
    with (
        mirror(app) as engine,
        ClevertimClient.from_settings(settings) as client,
        _instance_lock(app) as holder,
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


@cli.group("queue")
def queue_group() -> None:
    """Look at and settle the writeback queue."""


@queue_group.command("list")
@click.option("--state", type=click.Choice(ALL_STATES), help="Only items in this state.")
@click.option("--resource", help="Only items of this resource.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects.")
@pass_app
def queue_list(app: AppContext, state: str | None, resource: str | None, as_json: bool) -> None:
    """The queue, oldest first."""
    with mirror(app) as engine:
        items = queue.list_items(engine, state=state, resource=resource)
    if as_json:
        click.echo(orjson.dumps([i.as_json() for i in items]).decode())
        return
    if not items:
        click.echo("the queue is empty" if state is None else f"no {state} items")
        return
    for i in items:
        target = i.target_id if i.target_id is not None else (i.remote_id or i.local_ref)
        why = f"  {i.last_error}" if i.last_error and i.state != "done" else ""
        click.echo(f"{i.id:>6} {i.state:<11} {i.op:<6} {i.resource:<12} {target!s:<18} {i.attempts}{why}")


@queue_group.command("retry")
@click.argument("item_id", type=int, required=False)
@click.option("--failed", is_flag=True, help="Every failed item.")
@pass_app
def queue_retry(app: AppContext, item_id: int | None, failed: bool) -> None:
    """Put a failed item (or --failed: all of them) back in the queue, after fixing the cause."""
    with mirror(app) as engine:
        n = queue.retry(engine, item_id, failed=failed)
    click.echo(f"{n} item(s) queued again")


@queue_group.command("cancel")
@click.argument("item_id", type=int)
@pass_app
def queue_cancel(app: AppContext, item_id: int) -> None:
    """Drop an item that has not been sent (pending, waiting, failed, conflict, quarantined)."""
    with mirror(app) as engine:
        item = queue.cancel(engine, item_id)
    click.echo(f"item {item.id} cancelled")


@queue_group.command("adopt")
@click.argument("item_id", type=int)
@click.argument("remote_id", type=int)
@pass_app
def queue_adopt(app: AppContext, item_id: int, remote_id: int) -> None:
    """Settle a quarantined create: REMOTE_ID is the record it made (one of the candidates the item
    lists). The item becomes done with that id; edits waiting for it are released."""
    with mirror(app) as engine:
        item = queue.get_item(engine, item_id)
        remote = None
        if item.state == QUARANTINED and not _mirrored(engine, item.resource, remote_id):
            # Newer than the last pull: ask Clevertim whether it is a record of that resource.
            remote = _fetch(app, item.resource, remote_id)
        item = queue.adopt(engine, item_id, remote_id, remote_record=remote)
    click.echo(f"item {item.id}: {item.resolution}")


def _mirrored(engine: sa.Engine, resource: str, record_id: int) -> bool:
    with engine.connect() as conn:
        return load_record(conn, resource, record_id) is not None


def _fetch(app: AppContext, resource: str, record_id: int) -> dict[str, Any] | None:
    with ClevertimClient.from_settings(app.settings) as client:
        try:
            return client.get(resource, record_id)
        except NotFound:
            return None


@queue_group.command("resolve")
@click.argument("item_id", type=int)
@click.option("--keep", type=click.Choice(["local", "remote"]), required=True)
@pass_app
def queue_resolve(app: AppContext, item_id: int, keep: Literal["local", "remote"]) -> None:
    """Settle a conflict: keep the local values (queued again) or the remote ones (item closed)."""
    with mirror(app) as engine:
        item = queue.resolve(engine, item_id, keep)
    click.echo(f"item {item.id}: {item.resolution}")


@cli.command("revert")
@click.argument("resource")
@click.argument("record_id", type=int)
@click.option("--to", "version", type=int, required=True, help="The history version (history.id).")
@pass_app
def revert_command(app: AppContext, resource: str, record_id: int, version: int) -> None:
    """Queue the writes that bring RESOURCE RECORD_ID back to an earlier VERSION from history
    (re-creating it, with a new id, if it was deleted)."""
    with mirror(app) as engine:
        item = revert_record(engine, resource, record_id, version)
    if item is None:
        click.echo(f"{resource} {record_id} is already as it was at version {version}: nothing queued")
    else:
        click.echo(_item_line(item))
