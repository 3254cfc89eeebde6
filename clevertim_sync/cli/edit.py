"""`edit create|update|delete`: queue a local edit from the shell.

Owns: parsing `--json` / `--set key=value` into fields (typed by the registry), and the line that
names a queued item (also printed by `revert`). Every command migrates the database first
(through `cli.common.mirror`).
"""

from __future__ import annotations

from typing import Any

import click
import orjson

from clevertim_sync import resources
from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.cli.common import mirror
from clevertim_sync.errors import EditRejected
from clevertim_sync.resources import Kind
from clevertim_sync.writeback import queue

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


def item_line(item: queue.QueueItem) -> str:
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
    click.echo(item_line(item))
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
    click.echo(item_line(item))


@edit_group.command("delete")
@click.argument("resource")
@click.argument("record_id", type=int)
@pass_app
def edit_delete(app: AppContext, resource: str, record_id: int) -> None:
    """Queue the deletion of RESOURCE RECORD_ID."""
    with mirror(app) as engine:
        item = queue.enqueue_delete(engine, resource, record_id, source="cli")
    click.echo(item_line(item))


def unknown_resource(resource: str) -> str | None:
    if resource in resources.BY_NAME:
        return None
    return f"no resource named {resource!r}; use one of {', '.join(resources.BY_NAME)}"


def known_resource(resource: str) -> None:
    if (problem := unknown_resource(resource)) is not None:
        raise EditRejected(resource, [problem])
