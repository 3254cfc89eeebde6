"""`history`: a record's versions, oldest first: number, when, where from, what changed.

Owns: printing a record's versions (`mirror.versions.record_versions`), each with what it changed, and
the `revert` command line that goes back to one (cli/revert.py).
"""

from __future__ import annotations

from typing import Any

import click
import orjson

from clevertim_sync import resources, shapes
from clevertim_sync.cli import AppContext, cli, pass_app
from clevertim_sync.cli.common import mirror
from clevertim_sync.cli.edit import unknown_resource
from clevertim_sync.cli.queue import value_text
from clevertim_sync.errors import ReportError
from clevertim_sync.mirror.versions import Version, record_versions


def _change_text(v: Version, previous: Version | None) -> str:
    """What a version changed, shortened: `title: "VP" -> "CTO", city: ...`."""
    if v.op == "delete":
        return "deleted"
    if v.op == "insert":
        return "created again" if previous is not None else "created"
    if not v.changed:
        return "changed"
    parts = [f"{k}: {value_text(old, 24)} -> {value_text(new, 24)}" for k, (old, new) in v.changed.items()]
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
@click.argument("record_id")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of versions (with each one's record).")
@pass_app
def history_command(app: AppContext, resource: str, record_id: str, as_json: bool) -> None:
    """A record's versions, oldest first: number, when, where from, what changed.

    RECORD_ID is a number, or for a folder, file or linked file its text id (f1001)."""
    if (problem := unknown_resource(resource)) is not None:
        raise ReportError(problem)
    res = resources.get(resource)
    name = res.name
    rid: int | str | None = shapes.as_text_id(record_id) if res.text_ids else shapes.as_int(record_id)
    if rid is None:
        raise ReportError(f"{record_id!r} is not an id of a {name}: give its number")
    with mirror(app) as engine, engine.connect() as conn:
        found = record_versions(conn, name, rid)
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
    if len(found) > 1 and res.writable:  # documents are read-only: nothing to revert
        back = found[-2].number
        click.echo(f"back to an earlier one, e.g.: clevertim-sync revert {name} {record_id} --to v{back}")
