"""The writeback queue: the ways in (enqueue) and the people's commands (list, retry, cancel,
resolve, adopt). The worker's claims and outcomes are in claims.py.

Owns: the queue's rows as people see them, the helpers claims.py shares (transactions, local
refs, conditional state changes).

Must not import: httpx, the API client, the worker.

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

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from clevertim_sync import resources, shapes
from clevertim_sync.errors import EditRejected, QueueItemError
from clevertim_sync.mirror.store import apply_local_result, load_record, record_hash
from clevertim_sync.resources import Kind
from clevertim_sync.writeback.tables import (
    CANCELLED,
    CONFLICT,
    DONE,
    FAILED,
    PENDING,
    QUARANTINED,
    RECONCILE,
    WAITING,
    writeback_queue,
)

Q = writeback_queue
Bind = Engine | Connection
LOCAL_REF = re.compile(r"^local:([a-z]+):(\d+)$")
SERVER_SCOPE = "server"


def utcnow() -> datetime:
    return datetime.now(UTC)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@contextmanager
def transaction(bind: Bind) -> Iterator[Connection]:
    """A transaction on an Engine, or the caller's own Connection (its transaction, its commit)."""
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.begin() as conn:
            yield conn


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
            local_ref=row["local_ref"]
            or (local_ref_of(row["resource"], row["id"]) if row["op"] == "create" else None),
            fields=loads_or(row["fields"], {}),
            state=row["state"],
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"],
            last_error=row["last_error"],
            server_message=row["server_message"],
            error_status=row["error_status"],
            remote_id=row["remote_id"],
            conflict=loads_or(row["conflict"], None),
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


def loads_or(text: str | None, default: Any) -> Any:
    if text is None:
        return default
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return default


def local_ref_of(resource: str, item_id: int) -> str:
    """The name a queued create goes by until it has a remote id: `local:company:7`."""
    return f"local:{resource}:{item_id}"


def _ref_targets(prop: resources.Prop) -> tuple[str, ...]:
    if prop.target == "customer":
        return resources.CUSTOMER_RESOURCES
    return (prop.target,) if prop.target else ()


def local_refs_in(resource: str, fields: Mapping[str, Any]) -> dict[str, str]:
    """{api field: local ref} for each REF field of a create that names a queued create."""
    res = resources.BY_NAME.get(resource)
    if res is None:
        return {}
    out = {}
    for key, value in fields.items():
        prop = res.by_api.get(key)
        if (
            prop is not None
            and prop.kind is Kind.REF
            and isinstance(value, str)
            and value.startswith("local:")
        ):
            out[key] = value
    return out


# --- ways in ----------------------------------------------------------------------------------


def ref_problems(conn: Connection, resource: str, fields: Mapping[str, Any]) -> list[str]:
    """Each local reference must name a queued create of a resource that field may point at."""
    refs = local_refs_in(resource, fields)
    if not refs:
        return []
    res = resources.get(resource)
    ids = {int(m.group(2)) for ref in refs.values() if (m := LOCAL_REF.match(ref))}
    rows = {
        r.id: r
        for r in conn.execute(sa.select(Q.c.id, Q.c.resource, Q.c.op, Q.c.state).where(Q.c.id.in_(ids)))
    }
    problems = []
    for key, ref in refs.items():
        m = LOCAL_REF.match(ref)
        row = rows.get(int(m.group(2))) if m else None
        targets = _ref_targets(res.by_api[key])
        if m is None or row is None or row.op != "create" or row.resource != m.group(1):
            problems.append(
                f"{key} points at {ref}, which is no queued create (expected local:<resource>:<id>)"
            )
        elif row.resource not in targets:
            problems.append(f"{key} must point at a {' or '.join(targets)}, but {ref} is a {row.resource}")
        elif row.state == CANCELLED:
            problems.append(f"{key} points at {ref}, whose create was cancelled")
    return problems


def _validate(conn: Connection, resource: str, op: str, fields: Mapping[str, Any]) -> None:
    refs = frozenset(local_refs_in(resource, fields).values())
    problems = resources.edit_problems(resource, op, fields, local_refs=refs)
    if not problems and op == "create":
        problems = ref_problems(conn, resource, fields)
    if problems:
        raise EditRejected(resource, problems)


def _insert(conn: Connection, values: dict[str, Any], now: datetime) -> QueueItem:
    values = {**values, "state": PENDING, "created_at": now, "updated_at": now}
    item_id = conn.execute(sa.insert(Q).values(**values).returning(Q.c.id)).scalar_one()
    if values["op"] == "create":
        conn.execute(
            sa.update(Q).where(Q.c.id == item_id).values(local_ref=local_ref_of(values["resource"], item_id))
        )
    return get_item(conn, item_id)


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
        _validate(conn, resource, "create", fields)
        values = {"resource": resource, "op": "create", "fields": dumps(dict(fields)), "source": source}
        return _insert(conn, values, now or utcnow())


def _target(conn: Connection, resource: str, op: str, record_id: Any) -> dict[str, Any]:
    if not isinstance(record_id, int) or isinstance(record_id, bool):
        problem = f"the {op} needs the integer id of a {resource}"
        if isinstance(record_id, str) and record_id.startswith("local:"):
            problem += f"; {record_id} is not created yet: push first, or change the queued create"
        raise EditRejected(resource, [problem])
    base = load_record(conn, resource, record_id)
    if base is None:
        raise EditRejected(
            resource,
            [f"{resource} {record_id} is not in the mirror: check the id, or pull first if it is new"],
        )
    return base


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
    with transaction(bind) as conn:
        problems = resources.edit_problems(resource, "update", fields)
        if problems:
            raise EditRejected(resource, problems)
        base = _target(conn, resource, "update", record_id)
        values = {
            "resource": resource,
            "op": "update",
            "target_id": record_id,
            "fields": dumps(dict(fields)),
            "base_record": dumps(base),
            "base_hash": record_hash(base),
            "source": source,
        }
        return _insert(conn, values, now or utcnow())


def enqueue_delete(
    bind: Bind, resource: str, record_id: int, *, source: str = "python", now: datetime | None = None
) -> QueueItem:
    with transaction(bind) as conn:
        problems = resources.edit_problems(resource, "delete", {})
        if problems:
            raise EditRejected(resource, problems)
        base = _target(conn, resource, "delete", record_id)
        values = {
            "resource": resource,
            "op": "delete",
            "target_id": record_id,
            "base_record": dumps(base),
            "base_hash": record_hash(base),
            "source": source,
        }
        return _insert(conn, values, now or utcnow())


def wake_children(conn: Connection, ref: str, now: datetime) -> None:
    # The JSON text holds the ref as a quoted string; the quotes keep local:company:7 from
    # matching local:company:71.
    conn.execute(
        sa.update(Q)
        .where(Q.c.state == WAITING, Q.c.fields.like(f'%"{ref}"%'))
        .values(state=PENDING, updated_at=now)
    )


# --- reading and the people's commands ---------------------------------------------------------


def get_item(bind: Bind, item_id: int) -> QueueItem:
    with transaction(bind) as conn:
        row = conn.execute(sa.select(Q).where(Q.c.id == item_id)).mappings().first()
    if row is None:
        raise QueueItemError(item_id, "no such item; `clevertim-sync queue list` shows the queue")
    return QueueItem.from_row(row)


def list_items(
    bind: Bind, *, state: str | None = None, resource: str | None = None, limit: int | None = None
) -> list[QueueItem]:
    query = sa.select(Q).order_by(Q.c.id)
    if state is not None:
        query = query.where(Q.c.state == state)
    if resource is not None:
        query = query.where(Q.c.resource == resource)
    if limit is not None:
        query = query.limit(limit)
    with transaction(bind) as conn:
        return [QueueItem.from_row(r) for r in conn.execute(query).mappings()]


def counts(bind: Bind) -> dict[str, int]:
    """{state: number of items}: what the daemon's health and metrics show."""
    with transaction(bind) as conn:
        rows = conn.execute(sa.select(Q.c.state, sa.func.count()).group_by(Q.c.state))
        return {str(state): int(n) for state, n in rows}


def set_state(conn: Connection, item_id: int, expected: Sequence[str], now: datetime, **values: Any) -> bool:
    """Conditional state change: only if the item is still in one of `expected`."""
    result = conn.execute(
        sa.update(Q).where(Q.c.id == item_id, Q.c.state.in_(expected)).values(updated_at=now, **values)
    )
    return result.rowcount == 1


def retry(
    bind: Bind, item_id: int | None = None, *, failed: bool = False, now: datetime | None = None
) -> int:
    """Put a failed item (or every failed item) back in the queue; returns how many.

    A create that may have gone out before (it has a `sent` body and no remote id) goes to
    `reconcile`, never straight to `pending`: the server is checked before it is sent again.
    """
    if (item_id is None) == (not failed):
        raise QueueItemError(item_id, "give an item id or --failed, not both and not neither")
    now = now or utcnow()
    with transaction(bind) as conn:
        query = sa.select(Q.c.id, Q.c.state, Q.c.op, Q.c.sent, Q.c.remote_id).where(Q.c.state == FAILED)
        if item_id is not None:
            item = get_item(conn, item_id)
            if item.state != FAILED:
                raise QueueItemError(item_id, f"is {item.state}, only failed items can be retried")
            query = query.where(Q.c.id == item_id)
        n = 0
        for row in conn.execute(query).all():
            unknown = row.op == "create" and row.sent is not None and row.remote_id is None
            n += set_state(
                conn,
                row.id,
                (FAILED,),
                now,
                state=RECONCILE if unknown else PENDING,
                attempts=0,
                next_attempt_at=None,
                resolution=f"retried at {now.isoformat()}",
            )
        return n


CANCELLABLE = (PENDING, WAITING, FAILED, CONFLICT, QUARANTINED)


def cancel(bind: Bind, item_id: int, *, now: datetime | None = None) -> QueueItem:
    """Drop an item that has not gone out (or has settled as failed/conflict/quarantined)."""
    now = now or utcnow()
    with transaction(bind) as conn:
        item = get_item(conn, item_id)
        if not set_state(
            conn, item_id, CANCELLABLE, now, state=CANCELLED, resolution="cancelled by a person"
        ):
            raise QueueItemError(
                item_id,
                f"is {item.state}; only {', '.join(CANCELLABLE)} items can be cancelled "
                "(an in-flight request cannot be called back: wait for the push to settle it)",
            )
        if item.op == "create":
            wake_children(conn, item.local_ref or local_ref_of(item.resource, item.id), now)
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
        return _settle(conn, item, choices, now or utcnow(), f"conflict resolved: {how}")


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
            conn, item, dict(choices), now or utcnow(), f"conflict resolved field by field: {how}; {tail}"
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
    local = {k: conflict[k] for k, side in choices.items() if side == "local"}
    if not local:
        set_state(
            conn, item.id, (CONFLICT,), now, state=DONE, conflict=dumps(conflict), resolution=resolution
        )
    else:
        set_state(
            conn,
            item.id,
            (CONFLICT,),
            now,
            state=PENDING,
            fields=dumps({k: c["local"] for k, c in local.items()}),
            base_record=dumps({k: c["remote"] for k, c in local.items()}),
            conflict=dumps(conflict),
            attempts=0,
            next_attempt_at=None,
            resolution=resolution,
        )
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
    now = now or utcnow()
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
            apply_local_result(conn, item.resource, remote_record, op="insert", queue_item_id=item_id)
        holder = conn.execute(
            sa.select(Q.c.id).where(
                Q.c.resource == item.resource, Q.c.remote_id == remote_id, Q.c.id != item_id
            )
        ).scalar()
        if holder is not None:
            raise QueueItemError(
                item_id, f"{item.resource} {remote_id} is already the record of queue item {holder}"
            )
        floor = conn.execute(sa.select(Q.c.max_id_seen).where(Q.c.id == item_id)).scalar()
        if floor is not None and remote_id <= floor:
            raise QueueItemError(
                item_id,
                f"{item.resource} {remote_id} existed before this create was sent (its record has an "
                f"id above {floor}); check the id among the candidates this item lists",
            )
        set_state(
            conn,
            item_id,
            (QUARANTINED,),
            now,
            state=DONE,
            remote_id=remote_id,
            last_error=None,
            resolution=f"adopted by a person: {item.resource} {remote_id}",
        )
        _rewrite_refs(conn, item.local_ref or local_ref_of(item.resource, item_id), remote_id, now)
        return get_item(conn, item_id)


def _rewrite_refs(conn: Connection, ref: str, remote_id: int, now: datetime) -> None:
    """Queued edits not yet sent that name `ref`: the remote id in its place, and released."""
    rows = conn.execute(
        sa.select(Q.c.id, Q.c.resource, Q.c.state, Q.c.fields).where(
            Q.c.state.in_((PENDING, WAITING, FAILED, CONFLICT, QUARANTINED)), Q.c.fields.like(f'%"{ref}"%')
        )
    ).all()
    for row in rows:
        fields = loads_or(row.fields, {})
        if not isinstance(fields, dict):
            continue
        refs = local_refs_in(row.resource, fields)
        fields.update({key: remote_id for key, value in refs.items() if value == ref})
        state = PENDING if row.state == WAITING else row.state
        set_state(conn, row.id, (row.state,), now, fields=dumps(fields), state=state)
