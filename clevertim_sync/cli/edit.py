"""Commands of the writeback queue: `edit create|update|delete`, `push` (and `--dry-run`),
`queue ...` (`show` puts a conflict's three sides side by side), `revert`, `history`.

Owns: parsing `--json` / `--set key=value` into fields, and printing queue items, conflicts,
push reports and plans, and a record's versions. Every command migrates the database first
(through `cli.sync.mirror`).

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
from clevertim_sync.errors import ClevertimSyncError, EditRejected, QueueItemError, ReportError
from clevertim_sync.logs import configure_logging
from clevertim_sync.mirror.store import load_record
from clevertim_sync.reports import Version, record_versions
from clevertim_sync.resources import Kind
from clevertim_sync.writeback import queue
from clevertim_sync.writeback.dryrun import PushPlan, plan_push
from clevertim_sync.writeback.outbox import ALL_STATES, CONFLICT, QUARANTINED
from clevertim_sync.writeback.revert import revert as revert_record
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


# Which side is which, in the words `queue show` uses.
SIDES = (
    ("base", "as it was when you edited"),
    ("local", "your edit"),
    ("remote", "changed in Clevertim since"),
)


def _value(value: Any, width: int = 32) -> str:
    text = "(empty)" if value is None else orjson.dumps(value).decode()
    return text if len(text) <= width else text[: width - 1] + "…"


def show_lines(item: queue.QueueItem) -> list[str]:
    """`queue show`: the item, and for a conflict each field's three sides and the commands."""
    target = item.local_ref if item.op == "create" else f"{item.resource} {item.target_id}"
    lines = [
        f"queue item {item.id}: {item.op} {target}, {item.state}",
        f"queued {_stamp(item.created_at)} from {item.source}, last changed {_stamp(item.updated_at)}, "
        f"{item.attempts} attempt(s)",
    ]
    if item.last_error:
        lines.append(f"why: {item.last_error}")
    if item.server_message:
        lines.append(f"Clevertim said: {item.server_message}")
    if item.resolution:
        lines.append(f"settled: {item.resolution}")
    conflict = item.conflict or {}
    plain = {k: v for k, v in item.fields.items() if k not in conflict}
    if plain:
        label = "the rest of this edit (no conflict, sent)" if conflict else "fields"
        lines.append(f"{label}: " + ", ".join(f"{k}={_value(v)}" for k, v in plain.items()))
    if not conflict:
        return lines
    header = ["field", *(label for _, label in SIDES), "kept"]
    rows = [header]
    for key in sorted(conflict):
        c = conflict[key]
        winner = c.get("winner")
        kept = "? (you decide)" if winner == "none" else f"{winner} ({c.get('decided_by', 'policy')})"
        rows.append([key, *(_value(c.get(side)) for side, _ in SIDES), kept])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines.append("")
    lines.extend("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    undecided = queue.open_conflict_fields(item)
    if item.state == CONFLICT and undecided:
        example = " ".join(
            f"--field {k}={'local' if i % 2 == 0 else 'remote'}" for i, k in enumerate(undecided)
        )
        cmd = f"clevertim-sync queue resolve {item.id}"
        lines += [
            "",
            "to settle it:",
            f"  {cmd} --keep local    # your edit wins for every field above (sent again)",
            f"  {cmd} --keep remote   # keep what Clevertim has now; your edit of them is dropped",
            f"  {cmd} {example}",
            "      # field by field: local or remote for each of " + ", ".join(undecided),
            f"  clevertim-sync queue cancel {item.id}   # drop the whole edit",
        ]
    return lines


def _stamp(when: Any) -> str:
    return str(when.isoformat()).replace("+00:00", "Z")[:19] + "Z" if when is not None else "-"


@queue_group.command("show")
@click.argument("item_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="The item as a JSON object.")
@pass_app
def queue_show(app: AppContext, item_id: int, as_json: bool) -> None:
    """One item in full; for a conflict, each field as it was, as you set it and as Clevertim has it
    now, with the commands that settle it."""
    with mirror(app) as engine:
        item = queue.get_item(engine, item_id)
    if as_json:
        out = item.as_json() | {"undecided": queue.open_conflict_fields(item)}
        click.echo(orjson.dumps(out).decode())
    else:
        click.echo("\n".join(show_lines(item)))


def parse_choice(item_id: int, text: str) -> tuple[str, Literal["local", "remote"]]:
    key, sep, side = text.partition("=")
    if not sep or side not in ("local", "remote") or not key:
        raise QueueItemError(item_id, f"--field takes FIELD=local or FIELD=remote, got {text!r}")
    return key.strip(), "local" if side == "local" else "remote"


@queue_group.command("resolve")
@click.argument("item_id", type=int)
@click.option("--keep", type=click.Choice(["local", "remote"]), help="One side for every field.")
@click.option(
    "--field", "choices", multiple=True, metavar="FIELD=local|remote", help="One field's side (repeatable)."
)
@pass_app
def queue_resolve(
    app: AppContext, item_id: int, keep: Literal["local", "remote"] | None, choices: tuple[str, ...]
) -> None:
    """Settle a conflict: keep the local values (queued again) or the remote ones (item closed),
    for the whole item (--keep) or field by field (--field title=local --field city=remote)."""
    if (keep is None) == (not choices):
        raise QueueItemError(item_id, "give --keep local|remote, or --field FIELD=local|remote per field")
    with mirror(app) as engine:
        if keep is not None:
            item = queue.resolve(engine, item_id, keep)
        else:
            item = queue.resolve_fields(engine, item_id, dict(parse_choice(item_id, c) for c in choices))
    click.echo(f"item {item.id}: {item.resolution}")


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
    _known_resource(resource)
    with mirror(app) as engine:
        item = revert_record(engine, resource, record_id, version)
    if item is None:
        click.echo(f"{resource} {record_id} is already as it was at version {version}: nothing queued")
    else:
        click.echo(_item_line(item))


def _unknown(resource: str) -> str | None:
    if resource in resources.BY_NAME:
        return None
    return f"no resource named {resource!r}; use one of {', '.join(resources.BY_NAME)}"


def _known_resource(resource: str) -> None:
    if (problem := _unknown(resource)) is not None:
        raise EditRejected(resource, [problem])


def _change_text(v: Version, previous: Version | None) -> str:
    """What a version changed, shortened: `title: "VP" -> "CTO", city: ...`."""
    if v.op == "delete":
        return "deleted"
    if v.op == "insert":
        return "created again" if previous is not None else "created"
    if not v.changed:
        return "changed"
    parts = [f"{k}: {_value(old, 24)} -> {_value(new, 24)}" for k, (old, new) in v.changed.items()]
    text = ", ".join(parts)
    return text if len(text) <= 160 else text[:159] + "…"


def _version_json(v: Version) -> dict[str, Any]:
    return {
        "version": v.number,
        "history_id": v.history_id,
        "valid_from": _iso(v.valid_from),
        "valid_to": _iso(v.valid_to) if v.valid_to else None,
        "op": v.op,
        "origin": v.origin,
        "run_id": v.run_id,
        "queue_item_id": v.queue_item_id,
        "changed": v.changed,
        "raw": v.raw,
    }


def _iso(when: Any) -> str:
    return str(when.isoformat()).replace("+00:00", "Z")


@cli.command("history")
@click.argument("resource")
@click.argument("record_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of versions (with each one's record).")
@pass_app
def history_command(app: AppContext, resource: str, record_id: int, as_json: bool) -> None:
    """A record's versions, oldest first: number, when, where from, what changed."""
    if (problem := _unknown(resource)) is not None:
        raise ReportError(problem)
    name = resources.get(resource).name
    with mirror(app) as engine, engine.connect() as conn:
        found = record_versions(conn, name, record_id)
    if as_json:
        click.echo(orjson.dumps([_version_json(v) for v in found]).decode())
        return
    if not found:
        click.echo(f"{name} {record_id} has no history: the mirror never held it")
        return
    click.echo(f"{name} {record_id}: {len(found)} version(s)")
    for i, v in enumerate(found):
        source = f"pull (run {v.run_id})" if v.origin == "pull" else f"{v.origin} (item {v.queue_item_id})"
        when = _iso(v.valid_from)[:19].replace("T", " ")
        previous = found[i - 1] if i else None
        click.echo(f"  v{v.number:<3} {when}  {source:<18} {_change_text(v, previous)}")
    if len(found) > 1:
        back = found[-2].number
        click.echo(f"back to an earlier one, e.g.: clevertim-sync revert {name} {record_id} --to v{back}")
