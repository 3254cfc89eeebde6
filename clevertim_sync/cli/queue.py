"""`queue ...`: look at and settle the writeback queue (list, show, retry, cancel, resolve, adopt).

Owns: printing queue items, and a conflict's three sides side by side (`show`), with the commands
that settle it; fetching the record a quarantined create is adopted with when the mirror has not
pulled it yet.
"""

from __future__ import annotations

from typing import Any, Literal

import click
import orjson
import sqlalchemy as sa

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.api.errors import NotFound
from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.cli.common import mirror
from clevertim_sync.errors import QueueItemError
from clevertim_sync.mirror.store import load_record
from clevertim_sync.writeback import queue
from clevertim_sync.writeback.outbox import ALL_STATES, CONFLICT, QUARANTINED


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
        if why and i.server_message:  # your own queue: what the server said, in full (show has it too)
            why += f" Clevertim said: {i.server_message}"
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


def value_text(value: Any, width: int = 32) -> str:
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
        lines.append(f"{label}: " + ", ".join(f"{k}={value_text(v)}" for k, v in plain.items()))
    if not conflict:
        return lines
    header = ["field", *(label for _, label in SIDES), "kept"]
    rows = [header]
    for key in sorted(conflict):
        c = conflict[key]
        winner = c.get("winner")
        kept = "? (you decide)" if winner == "none" else f"{winner} ({c.get('decided_by', 'policy')})"
        rows.append([key, *(value_text(c.get(side)) for side, _ in SIDES), kept])
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
