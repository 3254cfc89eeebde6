"""The mirror store: the only SQL of the pull, and the mirror functions other areas call.

Owns: loading a resource's `{id: (hash, modified_at)}` index in one query; applying one resource's
`Changes` in bulk (current rows, child rows, history rows) inside the caller's transaction; the
`runs` and `resource_status` bookkeeping; `load_record`, `apply_local_result` (writeback folds a
server answer in, history origin 'local') and `export_jsonl`.

Writes are bulk executemany / multi-row inserts in chunks, never one ORM object per record. A
changed record is rewritten as delete + insert of its current row and child rows: simpler than
diffing child lists, and the same cost on both databases.

Must not import: httpx, the API client, the pull.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from clevertim_sync import resources, shapes
from clevertim_sync.diff import Changes, changed_fields, record_hash
from clevertim_sync.errors import MirrorError
from clevertim_sync.mirror import schema, search
from clevertim_sync.mirror.columns import RowBuilder, child_columns, sqlite_datetime
from clevertim_sync.mirror.rowpool import BUILDERS, RowPool, Rows, build_rows

__all__ = [
    "ResourceCounts",
    "apply_changes",
    "apply_local_result",
    "export_jsonl",
    "finish_run",
    "lm_key",
    "load_index",
    "load_record",
    "record_hash",
    "record_outcome",
    "start_run",
    "stored_raws",
]

CHUNK = 2000  # rows per executemany / IN list: well under SQLite's bound-parameter limit
HISTORY_COLUMNS = (
    "resource", "record_id", "run_id", "origin", "op", "at", "raw", "content_hash", "changed",
    "queue_item_id", "record_key",
)  # fmt: skip


@dataclass
class ResourceCounts:
    """What one pull did to one resource (also the JSON kept in runs.counts and resource_status)."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    touched: int = 0
    unchanged: int = 0
    listed: int = 0
    seconds: float = 0.0
    error: str | None = None
    held: bool = False
    # Entries left out for having no usable id, and why (the first few): the rest was applied.
    skipped: int = 0
    skipped_reasons: list[str] = field(default_factory=list)
    # The endpoint is missing for this account or token (404/400/501 on an optional resource):
    # why. Not a failure: the tables stay as they were and no alert is raised.
    unavailable: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def now() -> datetime:
    return datetime.now(UTC)


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _is_sqlite(conn: sa.Connection) -> bool:
    return conn.dialect.name == "sqlite"


def _builder(conn: sa.Connection, resource: str) -> RowBuilder:
    return BUILDERS[(resource, _is_sqlite(conn))]


def _stored_time(conn: sa.Connection, at: datetime) -> Any:
    return sqlite_datetime(at.astimezone(UTC)) if _is_sqlite(conn) else at


def lm_key(conn: sa.Connection, resource: str) -> Callable[[Mapping[str, Any]], Any]:
    """For diff.compute_changes: a record's `lm` in the form `load_index` gives modified_at."""
    return _builder(conn, resource).lm


def lock_resource(conn: sa.Connection, resource: str) -> None:
    """Keep other writers (a push folding its result in) off this resource's table until the
    caller's transaction ends, so that the index it loads stays true while its diff is applied.
    Readers are not blocked. SQLite needs nothing: its transactions begin IMMEDIATE (mirror/db.py)."""
    if not _is_sqlite(conn):
        conn.exec_driver_sql(f"LOCK TABLE {schema.CURRENT[resource].name} IN SHARE ROW EXCLUSIVE MODE")


def load_index(conn: sa.Connection, resource: str) -> dict[Any, tuple[str, Any]]:
    """{id: (content_hash, modified_at as stored)} of every mirrored record, in one query.

    modified_at comes straight from the driver (SQLite: its text; PostgreSQL: a datetime), the
    same form `lm_key` gives, so no per-row conversion is spent on the index.
    """
    table = schema.CURRENT[resource]
    rows = conn.exec_driver_sql(f"SELECT id, content_hash, modified_at FROM {table.name}")  # noqa: S608 registry names
    return {rid: (digest, lm) for rid, digest, lm in rows}


def _executemany(
    conn: sa.Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """Plain driver executemany: the bulk path, past SQLAlchemy's per-row parameter processing."""
    if not rows:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"  # noqa: S608
    conn.exec_driver_sql(sql, rows)


def load_record(conn: sa.Connection, resource: str, record_id: int) -> dict[str, Any] | None:
    """The record as last pulled (or folded in after a push), or None when it is not mirrored."""
    table = schema.CURRENT[resources.get(resource).name]
    raw = conn.execute(sa.select(table.c.raw).where(table.c.id == record_id)).scalar_one_or_none()
    return None if raw is None else dict(orjson.loads(raw))


def _old_raws(conn: sa.Connection, resource: str, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    table = schema.CURRENT[resource]
    rows = conn.execute(sa.select(table.c.id, table.c.raw, table.c.content_hash).where(table.c.id.in_(ids)))
    return {rid: (raw, digest) for rid, raw, digest in rows}


def stored_raws(conn: sa.Connection, resource: str, ids: Sequence[int]) -> dict[int, str]:
    """{id: raw JSON text} of the mirrored records among `ids` (a dry run's "before")."""
    out: dict[int, str] = {}
    for chunk in _chunks(ids):
        out.update((rid, raw) for rid, (raw, _) in _old_raws(conn, resource, chunk).items())
    return out


def _delete_rows(conn: sa.Connection, resource: str, ids: Sequence[int]) -> None:
    table = schema.CURRENT[resource]
    conn.execute(table.delete().where(table.c.id.in_(ids)))
    for prop in resources.get(resource).child_props:
        child = schema.CHILDREN[(resource, prop.api)]
        conn.execute(child.delete().where(child.c.owner_id.in_(ids)))


def _insert_rows(conn: sa.Connection, resource: str, built: Rows) -> None:
    """Insert current and child rows (from rowpool) of records not currently stored."""
    builder = _builder(conn, resource)
    rows, children = built
    _executemany(conn, schema.CURRENT[resource].name, builder.columns, rows)
    for prop, child in zip(builder.children, children, strict=True):
        _executemany(conn, schema.CHILDREN[(resource, prop.api)].name, child_columns(prop), child)


def _history_row(
    resource: str,
    record_id: int | str,
    op: str,
    raw: str | None,
    digest: str | None,
    *,
    at: Any,
    run_id: int | None,
    origin: str = "pull",
    changed: dict[str, list[Any]] | None = None,
    queue_item_id: int | None = None,
) -> tuple[Any, ...]:
    """One history row in HISTORY_COLUMNS order; `at` already in its stored form. A text id (a
    text-id resource's) goes to record_key, record_id NULL."""
    changed_json = None if changed is None else orjson.dumps(changed).decode()
    key = record_id if isinstance(record_id, str) else None
    number = None if key is not None else record_id
    return (resource, number, run_id, origin, op, at, raw, digest, changed_json, queue_item_id, key)


def _copy_to_history(
    conn: sa.Connection, resource: str, ids: Sequence[int] | None, *, op: str, at: Any, run_id: int | None
) -> None:
    """History rows copied from the current rows `ids` (None: every row of the table), by id."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    table = schema.CURRENT[resource].name
    where = "" if ids is None else f"WHERE id IN ({', '.join([mark] * len(ids))}) "
    id_column = "record_key" if resource in resources.TEXT_ID_RESOURCES else "record_id"
    sql = (
        f"INSERT INTO history (resource, {id_column}, run_id, origin, op, at, raw, content_hash) "  # noqa: S608
        f"SELECT {mark}, id, {mark}, 'pull', {mark}, {mark}, raw, content_hash FROM {table} "
        f"{where}ORDER BY id"
    )
    conn.exec_driver_sql(sql, (resource, run_id, op, at, *(ids or ())))


def _write_history(conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
    _executemany(conn, schema.history.name, HISTORY_COLUMNS, rows)


def apply_changes(
    conn: sa.Connection,
    resource: str,
    changes: Changes,
    *,
    run_id: int | None,
    at: datetime,
    pool: RowPool | None = None,
) -> None:
    """Apply one resource's changes inside the caller's transaction: rows, children, history,
    and the full-text index (mirror/search.py) where the resource has one. With a `pool`, the
    rows of more than a chunk of inserts are built in its worker process while these insert."""
    table = schema.CURRENT[resource]
    at = _stored_time(conn, at)
    fts = search.maintained(conn, resource)
    first_load = bool(changes.inserts) and _is_empty(conn, resource)
    # Into an empty table (a first sync) the full-text index is built once at the end, from the
    # table: cheaper than adding each chunk, and right whatever the index held before.
    fts_rebuild = fts and first_load
    # Likewise SQLite's secondary indexes of the table and its child tables: dropped and created
    # again (same SQL, same transaction: nobody sees the difference) once the rows are in.
    deferred = _drop_secondary_indexes(conn, resource) if first_load and len(changes.inserts) > CHUNK else []

    # The history row of an insert is the row just written: copied inside the database rather
    # than bound again from Python (a first sync writes every raw twice). Into an empty table, from
    # a listing in id order (as the API sends it), in one statement once the rows are in: the same
    # rows in the same order as a copy per chunk, from one scan instead of a lookup per id.
    insert_ids = [rec["id"] for rec, _ in changes.inserts]
    history_once = first_load and insert_ids == sorted(insert_ids)  # ids are unique (diff)
    sqlite = _is_sqlite(conn)
    chunks = list(_chunks(changes.inserts))
    if pool is not None and len(chunks) > 1:
        built: Iterable[Rows] = pool.rows(resource, sqlite, chunks)
    else:
        built = (build_rows(resource, sqlite, chunk) for chunk in chunks)
    for ids, rows in zip(_chunks(insert_ids), built, strict=True):
        _insert_rows(conn, resource, rows)
        if not history_once:
            _copy_to_history(conn, resource, ids, op="insert", at=at, run_id=run_id)
        if fts and not fts_rebuild:
            search.index(conn, resource, ids)
    if history_once:
        _copy_to_history(conn, resource, None, op="insert", at=at, run_id=run_id)
    for create in deferred:
        conn.exec_driver_sql(create)

    for chunk in _chunks(changes.updates):
        ids = [rec["id"] for rec, _ in chunk]
        old = _old_raws(conn, resource, ids)
        if fts:
            search.forget(conn, resource, ids)
        _delete_rows(conn, resource, ids)
        rows = build_rows(resource, sqlite, chunk)
        _insert_rows(conn, resource, rows)
        if fts:
            search.index(conn, resource, ids)
        history = [
            _history_row(
                resource,
                rec["id"],
                "update",
                row[-2],  # a current row ends with raw, content_hash
                row[-1],
                at=at,
                run_id=run_id,
                changed=changed_fields(orjson.loads(old[rec["id"]][0]), rec),
            )
            for (rec, _), row in zip(chunk, rows[0], strict=True)
        ]
        _write_history(conn, history)

    for chunk in _chunks(changes.deletes):
        old = _old_raws(conn, resource, chunk)
        if fts:
            search.forget(conn, resource, chunk)
        _delete_rows(conn, resource, chunk)
        history = [
            _history_row(resource, rid, "delete", raw, d, at=at, run_id=run_id)
            for rid, (raw, d) in old.items()
        ]
        _write_history(conn, history)

    if fts_rebuild:
        search.rebuild(conn, resource)

    if changes.touches:
        # Only lm moved: refresh what is stored, but it is not a change (no history, no count).
        # Neither raw nor modified_at is indexed text: the full-text index stays as it is.
        lm = _builder(conn, resource).lm
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        sql = f"UPDATE {table.name} SET raw = {mark}, modified_at = {mark} WHERE id = {mark}"  # noqa: S608
        for chunk in _chunks(changes.touches):
            conn.exec_driver_sql(sql, [(orjson.dumps(r).decode(), lm(r), r["id"]) for r, _ in chunk])


def _drop_secondary_indexes(conn: sa.Connection, resource: str) -> list[str]:
    """SQLite only: drop the explicit indexes of `resource`'s table and child tables; returns
    their CREATE statements, to run again after a bulk load (one sort beats a b-tree insert per
    row: ~20% of a first sync's inserts into contacts, tasks, notes). PostgreSQL: nothing."""
    if not _is_sqlite(conn):
        return []
    res = resources.get(resource)
    tables = [
        schema.CURRENT[resource].name,
        *(schema.CHILDREN[(resource, p.api)].name for p in res.child_props),
    ]
    marks = ", ".join(["?"] * len(tables))
    where = f"type = 'index' AND sql IS NOT NULL AND tbl_name IN ({marks})"
    sql = f"SELECT name, sql FROM sqlite_master WHERE {where}"  # noqa: S608 only ? marks
    rows = conn.exec_driver_sql(sql + " ORDER BY name", tuple(tables)).all()
    for name, _sql in rows:
        conn.exec_driver_sql(f'DROP INDEX "{name}"')
    return [sql for _name, sql in rows]


def _is_empty(conn: sa.Connection, resource: str) -> bool:
    table = schema.CURRENT[resource].name
    return conn.exec_driver_sql(f"SELECT 1 FROM {table} LIMIT 1").first() is None  # noqa: S608


def apply_local_result(
    conn: sa.Connection,
    resource: str,
    record: Mapping[str, Any],
    *,
    op: str,
    queue_item_id: int | None,
    at: datetime | None = None,
) -> None:
    """Fold the server's answer to a pushed write into the mirror, inside the caller's transaction.

    `op` is "insert" (or "create"), "update" or "delete"; for a delete `record` needs only its
    `id`. The current row, child rows and hash become the server's version, and history gets a
    row with origin 'local' and the queue item id, so the next pull sees no news.
    """
    name = resources.get(resource).name
    if op not in ("insert", "create", "update", "delete"):
        raise MirrorError(f"apply_local_result: unknown op {op!r}; use insert, update or delete")
    record = shapes.with_int_id(dict(record))  # a server that answers "id": "445"
    rid: Any = record.get("id")  # checked below: an int (or a text-id resource's text)
    if (problem := resources.id_problem(name, rid)) is not None:
        raise MirrorError(f"apply_local_result: the {name} record's id: {problem}")
    at = _stored_time(conn, at or now())
    old = _old_raws(conn, name, [rid]).get(rid)
    fts = search.maintained(conn, name)
    if old is not None and fts:
        search.forget(conn, name, [rid])
    if op == "delete":
        if old is not None:
            _delete_rows(conn, name, [rid])
            row = _history_row(
                name,
                rid,
                "delete",
                old[0],
                old[1],
                at=at,
                run_id=None,
                origin="local",
                queue_item_id=queue_item_id,
            )
            _write_history(conn, [row])
        return
    rows = build_rows(name, _is_sqlite(conn), [(record, None)])
    raw, digest = rows[0][0][-2:]  # a current row ends with raw, content_hash
    if old is not None:
        _delete_rows(conn, name, [rid])
    _insert_rows(conn, name, rows)
    if fts:
        search.index(conn, name, [rid])
    if old is not None and old[1] == digest:
        return  # the server's answer changed nothing but lm: like a touch, no history
    changed = None if old is None else changed_fields(orjson.loads(old[0]), record)
    row = _history_row(
        name,
        rid,
        "insert" if old is None else "update",
        raw,
        digest,
        at=at,
        run_id=None,
        origin="local",
        changed=changed,
        queue_item_id=queue_item_id,
    )
    _write_history(conn, [row])


# --- SQLite WAL checkpoints --------------------------------------------------------------------


@contextlib.contextmanager
def checkpoint_deferred(conn: sa.Connection) -> Iterator[None]:
    """SQLite: no automatic WAL checkpoint at the commits made on `conn` inside the block.

    A big transaction (a first sync of contacts) otherwise ends with its own commit copying the
    whole WAL back into the database file, on the pull's thread; the pull runs `checkpoint()` on
    another thread instead, while it goes on with the next resource. The setting is the
    connection's own and is put back on the way out (the connection returns to the pool).
    """
    if not _is_sqlite(conn):
        yield
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    before = raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    raw.execute("PRAGMA wal_autocheckpoint=0")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA wal_autocheckpoint={int(before)}")


def checkpoint(engine: sa.Engine) -> None:
    """SQLite: copy what the WAL holds back into the database file (PASSIVE: never waits for, nor
    blocks, a writer or reader). No-op on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


# --- runs and resource_status ---------------------------------------------------------------


def start_run(conn: sa.Connection, kind: str = "pull", *, at: datetime | None = None) -> int:
    result = conn.execute(
        schema.runs.insert().values(kind=kind, started_at=at or now(), status="running", counts="{}")
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def finish_run(conn: sa.Connection, run_id: int, status: str, error: str | None = None) -> None:
    conn.execute(
        schema.runs.update()
        .where(schema.runs.c.id == run_id)
        .values(finished_at=now(), status=status, error=error)
    )


def record_outcome(
    conn: sa.Connection,
    run_id: int,
    resource: str,
    counts: ResourceCounts,
    *,
    at: datetime,
    held_reason: str | None = None,
) -> None:
    """Write one resource's outcome into runs.counts and resource_status (same transaction)."""
    runs = schema.runs
    current = conn.execute(sa.select(runs.c.counts).where(runs.c.id == run_id)).scalar_one_or_none()
    all_counts = orjson.loads(current or "{}")
    all_counts[resource] = counts.as_dict()
    conn.execute(runs.update().where(runs.c.id == run_id).values(counts=orjson.dumps(all_counts).decode()))

    status = schema.resource_status
    ok = counts.error is None and not counts.held
    previous = conn.execute(
        sa.select(status.c.consecutive_failures).where(status.c.resource == resource)
    ).scalar_one_or_none()
    table = schema.CURRENT[resource]
    values: dict[str, Any] = {
        "last_run_id": run_id,
        "last_pull_at": at,
        "last_error": counts.error,
        "consecutive_failures": 0 if ok else (previous or 0) + 1,
        "held": counts.held,
        "held_reason": held_reason,
        "record_count": conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one(),
        "last_counts": orjson.dumps(counts.as_dict()).decode(),
        "unavailable": counts.unavailable,
    }
    if ok:
        values["last_success_at"] = at
    if previous is None:
        conn.execute(status.insert().values(resource=resource, **values))
    else:
        conn.execute(status.update().where(status.c.resource == resource).values(**values))


def resource_statuses(conn: sa.Connection) -> dict[str, dict[str, Any]]:
    """resource_status rows by resource name (resources never pulled are absent)."""
    rows = conn.execute(sa.select(schema.resource_status)).mappings()
    return {row["resource"]: dict(row) for row in rows}


def mirrored_count(conn: sa.Connection, resource: str) -> int:
    table = schema.CURRENT[resource]
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# --- export ---------------------------------------------------------------------------------


def id_order(conn: sa.Connection, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """`column` to sort ids by: a text id (documents) in byte order on both databases, as SQLite
    sorts text; PostgreSQL would otherwise follow its locale."""
    if isinstance(column.type, sa.Text | sa.String) and not _is_sqlite(conn):
        return column.collate("C")
    return column


def export_jsonl(conn: sa.Connection, directory: str | os.PathLike[str]) -> dict[str, int]:
    """Write `<resource>.jsonl` per resource into `directory`: each line one record exactly as last
    pulled, sorted by id. Each file is written to a temporary name and renamed: a reader never sees
    half a file. Returns {resource: records written}."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for res in resources.RESOURCES:
        table = schema.CURRENT[res.name]
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{res.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                count = 0
                result = conn.execution_options(stream_results=True, yield_per=CHUNK).execute(
                    sa.select(table.c.raw).order_by(id_order(conn, table.c.id))
                )
                for (raw,) in result:
                    f.write(raw)
                    f.write("\n")
                    count += 1
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out / f"{res.name}.jsonl")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written[res.name] = count
    return written
