"""The writeback queue: the ways in (enqueue) and the people's commands (list, show, retry,
cancel, resolve, adopt).

Owns: validating an edit before it is stored, and the queue's items as people see them
(`QueueItem`). The states, their rules and every statement on the queue are outbox.py's; what a
push takes and records is claims.py's and outbox.py's.


Python API (each takes an Engine, or a Connection whose transaction the caller owns):

    from clevertim_sync.writeback import queue
    item = queue.enqueue_create(engine, "company", {"cn": "Acme"})          # item.local_ref
    queue.enqueue_create(engine, "contact", {"fn": "Ann", "companyId": item.local_ref})
    queue.enqueue_update(engine, "contact", 42, {"title": "CTO"})
    queue.enqueue_delete(engine, "note", 7)

Every edit is validated against the resource registry (`resources.edit_problems`) and refused
with EditRejected before anything is stored. Rows INSERTed by hand are validated when claimed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clevertim_sync import resources, shapes
from clevertim_sync.errors import EditRejected, QueueItemError
from clevertim_sync.mirror.store import load_record
from clevertim_sync.writeback import outbox
from clevertim_sync.writeback.fold import Fold, fold_many
from clevertim_sync.writeback.outbox import CANCELLABLE, CONFLICT, QUARANTINED, Bind, transaction

# --- what an item looks like to Python callers ------------------------------------------------


@dataclass(frozen=True)
class QueueItem:
    id: int
    resource: str
    op: str
    target_id: int | None
    local_ref: str | None
    fields: dict[str, Any]
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    server_message: str | None
    error_status: int | None
    remote_id: int | None
    conflict: dict[str, Any] | None
    resolution: str | None
    source: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: sa.RowMapping) -> QueueItem:
        return cls(
            id=row["id"],
            resource=row["resource"],
            op=row["op"],
            target_id=row["target_id"],
            local_ref=outbox.local_ref_of(row["resource"], row["id"]) if row["op"] == "create" else None,
            fields=outbox.loads_or(row["fields"], {}),
            state=row["state"],
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"],
            last_error=row["last_error"],
            server_message=row["server_message"],
            error_status=row["error_status"],
            remote_id=row["remote_id"],
            conflict=outbox.loads_or(row["conflict"], None),
            resolution=row["resolution"],
            source=row["source"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def as_json(self) -> dict[str, Any]:
        """The `queue list --json` shape."""
        out: dict[str, Any] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key in ("next_attempt_at", "created_at", "updated_at"):
            value = out[key]
            out[key] = value.isoformat().replace("+00:00", "Z") if value is not None else None
        return out


# --- ways in ----------------------------------------------------------------------------------


def enqueue_create(
    bind: Bind,
    resource: str,
    fields: Mapping[str, Any],
    *,
    source: str = "python",
    now: datetime | None = None,
) -> QueueItem:
    """Queue a new record; REF fields may name earlier queued creates by their `local_ref`."""
    with transaction(bind) as conn:
        refs = frozenset(outbox.local_refs_in(resource, fields).values())
        problems = resources.edit_problems(resource, "create", fields, local_refs=refs)
        if not problems:
            problems = outbox.ref_problems(conn, resource, fields)
        if problems:
            raise EditRejected(resource, problems)
        values = {
            "resource": resource,
            "op": "create",
            "fields": outbox.dumps(dict(fields)),
            "source": source,
        }
        return get_item(conn, outbox.insert(conn, values, now or datetime.now(UTC)))


def enqueue_update(
    bind: Bind,
    resource: str,
    record_id: int,
    fields: Mapping[str, Any],
    *,
    source: str = "python",
    now: datetime | None = None,
) -> QueueItem:
    """Queue changed fields of a mirrored record; the mirror's current record becomes the base."""
    return _enqueue_change(bind, resource, "update", record_id, fields, source, now)


def enqueue_delete(
    bind: Bind, resource: str, record_id: int, *, source: str = "python", now: datetime | None = None
) -> QueueItem:
    """Queue the deletion of a mirrored record."""
    return _enqueue_change(bind, resource, "delete", record_id, {}, source, now)


def _enqueue_change(  # noqa: PLR0917 - the arguments of enqueue_update/delete, passed through
    bind: Bind,
    resource: str,
    op: Literal["update", "delete"],
    record_id: Any,
    fields: Mapping[str, Any],
    source: str,
    now: datetime | None,
) -> QueueItem:
    """An update or delete of a mirrored record, with the mirror's record as its base."""
    with transaction(bind) as conn:
        problems = resources.edit_problems(resource, op, fields)
        if problems:
            raise EditRejected(resource, problems)
        if (problem := resources.id_problem(resource, record_id)) is not None:
            if isinstance(record_id, str) and record_id.startswith("local:"):
                problem += f"; {record_id} is not created yet: push first, or change the queued create"
            raise EditRejected(resource, [f"the {op} needs the id of a mirrored {resource}: {problem}"])
        base = load_record(conn, resource, record_id)
        if base is None:
            raise EditRejected(
                resource,
                [f"{resource} {record_id} is not in the mirror: check the id, or pull first if it is new"],
            )
        values = {
            "resource": resource,
            "op": op,
            "target_id": record_id,
            "base_record": outbox.dumps(base),
            "source": source,
        }
        if op == "update":
            values["fields"] = outbox.dumps(dict(fields))
        return get_item(conn, outbox.insert(conn, values, now or datetime.now(UTC)))


# --- reading and the people's commands ---------------------------------------------------------


def get_item(bind: Bind, item_id: int) -> QueueItem:
    with transaction(bind) as conn:
        row = outbox.get_row(conn, item_id)
    if row is None:
        raise QueueItemError(item_id, "no such item; `clevertim-sync queue list` shows the queue")
    return QueueItem.from_row(row)


def list_items(
    bind: Bind, *, state: str | None = None, resource: str | None = None, limit: int | None = None
) -> list[QueueItem]:
    with transaction(bind) as conn:
        rows = outbox.select_rows(conn, state=state, resource=resource, limit=limit)
    return [QueueItem.from_row(r) for r in rows]


def retry(
    bind: Bind, item_id: int | None = None, *, failed: bool = False, now: datetime | None = None
) -> int:
    """Put a failed item (or every failed item) back in the queue; returns how many.

    A create that may have gone out before (it has a `sent` body and no remote id) goes to
    `reconcile`, never straight to `pending`: the server is checked before it is sent again.
    """
    if (item_id is None) == (not failed):
        raise QueueItemError(item_id, "give an item id or --failed, not both and not neither")
    with transaction(bind) as conn:
        if item_id is not None:
            item = get_item(conn, item_id)
            if item.state != outbox.FAILED:
                raise QueueItemError(item_id, f"is {item.state}, only failed items can be retried")
        return outbox.requeue_failed(conn, item_id, now or datetime.now(UTC))


def cancel(bind: Bind, item_id: int, *, now: datetime | None = None) -> QueueItem:
    """Drop an item that has not gone out (or has settled as failed/conflict/quarantined)."""
    with transaction(bind) as conn:
        item = get_item(conn, item_id)
        if not outbox.cancel(conn, item_id, now or datetime.now(UTC)):
            raise QueueItemError(
                item_id,
                f"is {item.state}; only {', '.join(CANCELLABLE)} items can be cancelled "
                "(an in-flight request cannot be called back: wait for the push to settle it)",
            )
        return get_item(conn, item_id)


Side = Literal["local", "remote"]


def open_conflict_fields(item: QueueItem) -> list[str]:
    """The fields of a conflict item that wait for a person (the policy left them undecided)."""
    return sorted(k for k, c in (item.conflict or {}).items() if c.get("winner") == "none")


def resolve(bind: Bind, item_id: int, keep: Side, *, now: datetime | None = None) -> QueueItem:
    """Settle a conflict: `local` queues the local values again (against the remote values the
    conflict saw, so they are sent unless the remote changed once more); `remote` keeps the
    server's values and closes the item."""
    with transaction(bind) as conn:
        item = _conflict_item(conn, item_id)
        choices = dict.fromkeys(open_conflict_fields(item), keep)
        how = "keep local, queued again" if keep == "local" else "kept remote"
        return _settle(conn, item, choices, now or datetime.now(UTC), f"conflict resolved: {how}")


def resolve_fields(
    bind: Bind, item_id: int, choices: Mapping[str, Side], *, now: datetime | None = None
) -> QueueItem:
    """Settle a conflict field by field: {field: "local" | "remote"} for every undecided field.

    The fields kept local are queued again (each against the remote value the conflict saw);
    when every field keeps the remote value the item is closed. Naming a field that is not in
    conflict, or leaving one out, is refused and changes nothing.
    """
    with transaction(bind) as conn:
        item = _conflict_item(conn, item_id)
        undecided = open_conflict_fields(item)
        unknown = sorted(set(choices) - set(undecided))
        missing = [k for k in undecided if k not in choices]
        bad = sorted(k for k, side in choices.items() if side not in ("local", "remote"))
        problems = []
        if unknown:
            problems.append(f"not in conflict: {', '.join(unknown)}")
        if bad:
            problems.append(f"keep local or remote, not {', '.join(f'{k}={choices[k]}' for k in bad)}")
        if missing:
            problems.append(
                f"say which side to keep for {', '.join(missing)} too (e.g. --field {missing[0]}=local)"
            )
        if problems:
            raise QueueItemError(
                item_id, "; ".join(problems) + f"; the fields in conflict are: {', '.join(undecided)}"
            )
        how = ", ".join(f"{k}={choices[k]}" for k in undecided)
        locally = [k for k in undecided if choices[k] == "local"]
        tail = "the local ones queued again" if locally else "item closed"
        return _settle(
            conn,
            item,
            dict(choices),
            now or datetime.now(UTC),
            f"conflict resolved field by field: {how}; {tail}",
        )


def _conflict_item(conn: Connection, item_id: int) -> QueueItem:
    item = get_item(conn, item_id)
    if item.state != CONFLICT or not item.conflict:
        raise QueueItemError(item_id, f"is {item.state}, not a conflict: nothing to resolve")
    return item


def _settle(
    conn: Connection, item: QueueItem, choices: Mapping[str, Side], now: datetime, resolution: str
) -> QueueItem:
    """Record a person's choice per field; the fields kept local go out again, or the item closes."""
    conflict = dict(item.conflict or {})
    for key, side in choices.items():
        conflict[key] = {**conflict[key], "winner": side, "decided_by": "person"}
    again = {
        k: (conflict[k]["local"], conflict[k]["remote"]) for k, side in choices.items() if side == "local"
    }
    outbox.settle_conflict(conn, item.id, now, conflict=conflict, resolution=resolution, again=again)
    return get_item(conn, item.id)


def adopt(
    bind: Bind,
    item_id: int,
    remote_id: int,
    *,
    remote_record: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> QueueItem:
    """Settle a quarantined create by naming the remote record it made: the item becomes done
    with that remote id, and the queued edits that point at it by its local ref get the remote id
    written into their fields and are released.

    The record must be a `item.resource` in the mirror; `remote_record` (the server's copy, when
    the caller fetched it because the mirror has not pulled it yet) is folded in first.
    """
    now = now or datetime.now(UTC)
    with transaction(bind) as conn:
        item = get_item(conn, item_id)
        if item.state != QUARANTINED or item.op != "create":
            raise QueueItemError(
                item_id, f"is a {item.state} {item.op}; only a quarantined create can adopt a remote record"
            )
        if load_record(conn, item.resource, remote_id) is None:
            if remote_record is None or shapes.record_id(remote_record)[0] != remote_id:  # "445" is 445
                raise QueueItemError(
                    item_id,
                    f"{item.resource} {remote_id} is not in the mirror (nor in Clevertim as a "
                    f"{item.resource}); check the id among the candidates this item lists",
                )
            fold_many(conn, [Fold(item.resource, remote_record, "insert", item_id)])
        holder = outbox.item_of_remote(conn, item.resource, remote_id, other_than=item_id)
        if holder is not None:
            raise QueueItemError(
                item_id, f"{item.resource} {remote_id} is already the record of queue item {holder}"
            )
        row = outbox.get_row(conn, item_id)
        floor = row["max_id_seen"] if row is not None else None
        if floor is not None and remote_id <= floor:
            raise QueueItemError(
                item_id,
                f"{item.resource} {remote_id} existed before this create was sent (its record has an "
                f"id above {floor}); check the id among the candidates this item lists",
            )
        outbox.adopt(conn, item_id, remote_id, now, f"adopted by a person: {item.resource} {remote_id}")
        return get_item(conn, item_id)
