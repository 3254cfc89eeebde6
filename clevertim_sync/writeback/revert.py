"""Revert: queue the writes that bring a record back to an earlier version from `history`.

Owns: turning (resource, id, history version) into queue items: an update of the writable fields
that differ, a create when the record is gone (Clevertim gives it a new id: ids cannot be chosen),
or a delete when the chosen version is the record's deletion. Undo for a bad edit made in the web
UI, or for a local one.

Everything goes through the queue, so a revert is merged against the remote record like any other
edit when it is pushed.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from clevertim_sync import jsontext, resources, shapes
from clevertim_sync.errors import EditRejected, ReportError
from clevertim_sync.mirror import schema
from clevertim_sync.mirror import versions as record_versions
from clevertim_sync.mirror.store import load_record
from clevertim_sync.resources import Kind
from clevertim_sync.writeback import queue
from clevertim_sync.writeback.merge import loosely_same

_EMPTY: dict[Kind, Any] = {
    Kind.STR_LIST: [],
    Kind.PHONES: [],
    Kind.SMIDS: [],
    Kind.CUSTOM_FIELDS: {},
}


def versions(conn: sa.Connection, resource: str, record_id: int) -> list[dict[str, Any]]:
    """The record's history, oldest first: {version, at, origin, op} (version = history.id)."""
    h = schema.history
    rows = conn.execute(
        sa.select(h.c.id, h.c.at, h.c.origin, h.c.op)
        .where(h.c.resource == resource, h.c.record_id == record_id)
        .order_by(h.c.id)
    ).all()
    return [{"version": r.id, "at": r.at, "origin": r.origin, "op": r.op} for r in rows]


VERSION_NUMBER = re.compile(r"^[vV](\d+)$")


def find_version(conn: sa.Connection, resource: str, record_id: int, to: str) -> int:
    """The history id `revert --to` means: `3` is history id 3 (what --to always took), `v3` the
    record's third version (the numbers `clevertim-sync history` shows), and a time such as
    `2026-11-27T18:00Z` the version that was current then (its deletion, if it was deleted)."""
    res = resources.get(resource)
    text = to.strip()
    if text.isdigit():
        return int(text)
    found = record_versions.record_versions(conn, res.name, record_id)
    if (m := VERSION_NUMBER.match(text)) is not None:
        number = int(m.group(1))
        if not 1 <= number <= len(found):
            have = f"v1 to v{len(found)}" if found else "none (it was never mirrored)"
            raise EditRejected(res.name, [f"{res.name} {record_id} has no version v{number}; it has {have}"])
        return found[number - 1].history_id
    try:
        at = record_versions.parse_timestamp(text)
    except ReportError:
        raise EditRejected(
            res.name,
            [f"--to {to!r} is neither a history id (3), a version (v3) nor a time (2026-11-27T18:00Z)"],
        ) from None
    version = record_versions.version_at(found, at)
    if version is None:
        first = (
            f"its first version is from {found[0].valid_from.isoformat()}"
            if found
            else "it was never mirrored"
        )
        raise EditRejected(
            res.name, [f"{res.name} {record_id} was not in the mirror yet at {at.isoformat()}; {first}"]
        )
    return version.history_id


def writable_fields(resource: str, record: dict[str, Any]) -> dict[str, Any]:
    """The properties of `record` a write may carry (read-only and unknown ones left out), each
    as its own type (a server's 0/1 and "445" spellings as false/true and 445: what an edit takes)."""
    res = resources.get(resource)
    return {p.api: shapes.typed(p, record[p.api]) for p in res.writable_props if p.api in record}


def revert(engine: Engine, resource: str, record_id: int, version: int | str) -> queue.QueueItem | None:
    """Queue what brings `resource` `record_id` back to history version `version` (a history id,
    or any text `find_version` takes: `v3`, `2026-11-27T18:00Z`).

    Returns the queued item, or None when the record is already as it was then.
    """
    res = resources.get(resource)
    h = schema.history
    with engine.begin() as conn:
        if isinstance(version, str):
            version = find_version(conn, res.name, record_id, version)
        row = conn.execute(
            sa.select(h.c.op, h.c.raw).where(
                h.c.id == version, h.c.resource == res.name, h.c.record_id == record_id
            )
        ).first()
        if row is None:
            known = [v["version"] for v in versions(conn, res.name, record_id)]
            raise EditRejected(
                res.name,
                [
                    f"version {version} is not in the history of {res.name} {record_id}; "
                    f"its versions are: {', '.join(map(str, known)) or 'none (it was never mirrored)'}"
                    + (f" (history ids; --to v1 to v{len(known)} names them by number)" if known else "")
                ],
            )
        current = load_record(conn, res.name, record_id)
        if row.op == "delete":
            if current is None:
                return None
            return queue.enqueue_delete(conn, res.name, record_id, source="revert")
        target = writable_fields(res.name, jsontext.loads(row.raw))
        if current is None:
            fields = {k: v for k, v in target.items() if v is not None}
            return queue.enqueue_create(conn, res.name, fields, source="revert")
        now = writable_fields(res.name, current)
        changes = {}
        for prop in res.writable_props:
            if prop.api not in target and prop.api not in now:
                continue
            want = target.get(prop.api, _EMPTY.get(prop.kind))
            if not loosely_same(now.get(prop.api, _EMPTY.get(prop.kind)), want, prop):
                changes[prop.api] = want
        if not changes:
            return None
        return queue.enqueue_update(conn, res.name, record_id, changes, source="revert")
