"""The mirror store: the only SQL of the pull, and the mirror functions other areas call.

Owns: `bulk_writes`, the one context through which a pull writes (everything that makes its
writes fast lives behind it, see its docstring), and within it one transaction per resource:
loading the resource's index (`diff.MirrorIndex`, in one query), applying its changes batch by
batch (mirror/writes.py: current rows, child rows, history rows, full-text index), recording the
outcome. Also the `runs` and `resource_status` bookkeeping; `load_record`, `apply_changes` (one
batch of changes in the caller's transaction, history labelled with who wrote it: the
writeback's fold of a push's answers, a restore) and `export_jsonl`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
import structlog

from clevertim_sync import jsontext, resources
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.failures import error_text
from clevertim_sync.mirror.writes import (
    CHUNK,
    ChangeWriter,
    Gatherer,
    builder,
    chunks,
    is_sqlite,
    old_raws,
)
from clevertim_sync.pull.diff import Changes, MirrorIndex, preferred, record_hash

__all__ = [
    "ResourceCounts",
    "apply_changes",
    "builder",
    "bulk_writes",
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

log = structlog.get_logger(__name__)


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
    # Entries left out (no usable id, not an object, unreadable), and why (the first few): the
    # rest was applied.
    skipped: int = 0
    skipped_reasons: list[str] = field(default_factory=list)
    # Entries reported, by reason (clevertim_sync/entries.py: left out, kept altered, served
    # twice): `status`, /metrics and the run show them.
    bad_entries: dict[str, int] = field(default_factory=dict)
    # The endpoint is missing for this account or token (404/400/501 on an optional resource):
    # why. Not a failure: the tables stay as they were and no alert is raised.
    unavailable: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def now() -> datetime:
    return datetime.now(UTC)


def lm_key(conn: sa.Connection, resource: str) -> Callable[[Mapping[str, Any]], Any]:
    """For diff.ListingDiff: a record's `lm` in the form `load_index` gives modified_at."""
    return builder(conn, resource).lm


def lock_resource(conn: sa.Connection, resource: str) -> None:
    """Keep other writers (a push folding its result in) off this resource's table until the
    caller's transaction ends, so that the index it loads stays true while its diff is applied.
    Readers are not blocked. SQLite needs nothing: its transactions begin IMMEDIATE (mirror/db.py)."""
    if not is_sqlite(conn):
        conn.exec_driver_sql(f"LOCK TABLE {schema.CURRENT[resource].name} IN SHARE ROW EXCLUSIVE MODE")


def load_index(conn: sa.Connection, resource: str) -> MirrorIndex:
    """The mirror's index of `resource` (id -> content_hash, modified_at as stored), in one query.

    modified_at comes straight from the driver (SQLite: its text; PostgreSQL: a datetime), the
    same form `lm_key` gives, so no per-row conversion is spent on the index. In id order: a
    listing in id order then finds each id without a search.
    """
    return MirrorIndex(row for rows in index_rows(conn, resource) for row in rows)


def index_rows(conn: sa.Connection, resource: str) -> Iterator[list[tuple[Any, str, Any]]]:
    """The (id, content_hash, modified_at) rows of `resource` in id order, a chunk at a time,
    through the driver's own cursor (SQLAlchemy's rows cost a third of a no-change pull's index
    load); on PostgreSQL a server-side one, so that the client never holds the whole result."""
    table = schema.CURRENT[resource]
    driver = conn.connection.dbapi_connection
    assert driver is not None
    cursor = driver.cursor() if is_sqlite(conn) else driver.cursor(name="clevertim_sync_index")
    try:
        cursor.execute(f"SELECT id, content_hash, modified_at FROM {table.name} ORDER BY id")  # noqa: S608
        while rows := cursor.fetchmany(CHUNK):
            yield list(rows)
    finally:
        cursor.close()


# --- the pull's writes -----------------------------------------------------------------------


@contextlib.contextmanager
def bulk_writes(engine: sa.Engine) -> Iterator[BulkWrites]:
    """The pull's writes, one transaction per resource (`BulkWrites.resource`), with everything
    that makes them fast kept here and out of the pull:

    - the cyclic garbage collector is paused: a pull makes ~10^6 short-lived acyclic objects
      (parsed records, rows) per 100,000 records, and each of its passes walks the batch again
      (measured: a first sync of 100k contacts 14.6 s with it, 10.5 s without). Cycles left
      meanwhile are collected when the block ends;
    - SQLite: each resource's transaction runs with automatic WAL checkpoints off, and the
      checkpoint runs after its commit on a thread of its own while the pull goes on with the
      next resource (see `_Checkpoints`);
    - within a resource, mirror/writes.py's `ChangeWriter`: COPY on PostgreSQL, a first load's
      dropped indexes, one full-text build and history copied by id range.
    """
    writes = BulkWrites(engine)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield writes
    finally:
        writes.close()
        if gc_was_enabled:
            gc.enable()


class BulkWrites:
    """See `bulk_writes`."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._checkpoints = _Checkpoints(engine)

    @contextlib.contextmanager
    def resource(self, resource: str, *, run_id: int) -> Iterator[ResourceWrites]:
        """One resource's transaction: committed when the block ends, rolled back (every batch
        written in it) if it raises. The block calls `commit(counts)` last."""
        with self.engine.connect() as conn, checkpoint_deferred(conn), conn.begin():
            lock_resource(conn, resource)
            yield ResourceWrites(conn, resource, run_id=run_id, at=now())
        self._checkpoints.after_commit()

    def close(self) -> None:
        """Wait for the last checkpoint (the WAL is left as automatic checkpoints would leave it)."""
        self._checkpoints.finish()


class ResourceWrites:
    """One resource inside its transaction: its index, then batches of changes, then the outcome."""

    def __init__(self, conn: sa.Connection, resource: str, *, run_id: int, at: datetime) -> None:
        self.conn, self.resource, self.run_id, self.at = conn, resource, run_id, at
        self.index = load_index(conn, resource)
        self.lm_key = lm_key(conn, resource)
        self._writer = ChangeWriter(conn, resource, run_id=run_id, at=at)
        self._gathered = Gatherer(self._writer, resource, sqlite=is_sqlite(conn))

    def apply(self, changes: Changes) -> None:
        """One batch of the listing's inserts, updates and touches (and deletes, if any)."""
        self._gathered.apply(changes)

    def delete(self, ids: Sequence[Any]) -> None:
        """What the listing no longer holds (known at its end, after the guard's decision)."""
        self._gathered.delete(ids)

    def resolve(
        self, duplicates: Sequence[tuple[Mapping[str, Any], Any, str]], counts: ResourceCounts
    ) -> None:
        """Later copies of ids already listed (`Changes.duplicates`): each is kept instead of the
        copy written so far when `diff.preferred` says so, as if the listing had held it alone
        (history and counts as the mirror held it before this pull). Rare: the gathered changes
        are written first, so the copy so far is read back from the table."""
        self._gathered.flush()
        for record, rid, digest in duplicates:
            (held, held_hash) = old_raws(self.conn, self.resource, [rid])[rid]
            if not preferred(jsontext.loads(held), held_hash, record, digest, self.lm_key):
                continue
            pos = self.index.position(rid)
            before = self.index.digest_at(pos).hex() if pos >= 0 else None
            self._writer.replace(record, digest, before)
            _recount(counts, _outcome(before, held_hash), -1)
            _recount(counts, _outcome(before, digest), +1)

    def commit(self, counts: ResourceCounts) -> None:
        """Finish the load (indexes, full-text) and record the outcome, in the same transaction."""
        self._gathered.flush()
        self._writer.finish()
        record_outcome(self.conn, self.run_id, self.resource, counts, at=self.at)


def _outcome(before: str | None, digest: str) -> str:
    """What a listed copy of a record counts as, against the mirror before this pull."""
    if before is None:
        return "inserted"
    return "unchanged" if before == digest else "updated"


def _recount(counts: ResourceCounts, outcome: str, delta: int) -> None:
    setattr(counts, outcome, getattr(counts, outcome) + delta)


class _Checkpoints:
    """SQLite: the WAL checkpoint after each resource's commit, on a thread of its own.

    The resource transactions run with automatic checkpoints off (`checkpoint_deferred`), so
    copying a big transaction's WAL back into the database file (seconds, after a first sync of
    contacts) overlaps with fetching, parsing and writing the next resource instead of holding up
    the pull. One at a time; `finish` waits for a last one, so the pull leaves the WAL as the
    automatic checkpoints would have.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="pull-checkpoint")
            if engine.dialect.name == "sqlite"
            else None
        )
        self.pending: Future[None] | None = None

    def after_commit(self) -> None:
        if self.pool is None or (self.pending is not None and not self.pending.done()):
            return  # the running one will be followed by the final one
        self.pending = self.pool.submit(self._run)

    def finish(self) -> None:
        if self.pool is None:
            return
        self.pool.submit(self._run)
        self.pool.shutdown(wait=True)

    def _run(self) -> None:
        try:
            checkpoint(self.engine)
        except sa.exc.SQLAlchemyError as exc:  # housekeeping: the next one, or SQLite's own, catches up
            log.warning("pull.checkpoint_failed", error=error_text(exc))


def load_record(conn: sa.Connection, resource: str, record_id: int) -> dict[str, Any] | None:
    """The record as last pulled (or folded in after a push), or None when it is not mirrored."""
    table = schema.CURRENT[resources.get(resource).name]
    raw = conn.execute(sa.select(table.c.raw).where(table.c.id == record_id)).scalar_one_or_none()
    return None if raw is None else dict(jsontext.loads(raw))


def stored_raws(conn: sa.Connection, resource: str, ids: Sequence[Any]) -> dict[Any, str]:
    """{id: raw JSON text} of the mirrored records among `ids` (a dry run's "before")."""
    out: dict[Any, str] = {}
    for chunk in chunks(ids):
        out.update((rid, raw) for rid, (raw, _) in old_raws(conn, resource, chunk).items())
    return out


def apply_changes(
    conn: sa.Connection,
    resource: str,
    changes: Changes,
    *,
    run_id: int | None,
    at: datetime,
    origin: str = "pull",
    queue_items: Mapping[Any, int | None] | None = None,
) -> None:
    """Apply one resource's changes (deletes included) inside the caller's transaction: the same
    writes as a pull's. The one way into the mirror outside a pull's batches: the writeback's
    fold of a push's answers (origin 'local', each record's queue item in `queue_items`), a
    restore from an export."""
    writer = ChangeWriter(conn, resource, run_id=run_id, at=at, origin=origin, queue_items=queue_items)
    gatherer = Gatherer(writer, resource, sqlite=is_sqlite(conn))
    gatherer.apply(changes)
    gatherer.flush()
    writer.finish()


# --- SQLite WAL checkpoints --------------------------------------------------------------------


@contextlib.contextmanager
def checkpoint_deferred(conn: sa.Connection) -> Iterator[None]:
    """SQLite: no automatic WAL checkpoint at the commits made on `conn` inside the block.

    A big transaction (a first sync of contacts) otherwise ends with its own commit copying the
    whole WAL back into the database file, on the pull's thread; the pull runs `checkpoint()` on
    another thread instead, while it goes on with the next resource. The setting is the
    connection's own and is put back on the way out (the connection returns to the pool).
    """
    if not is_sqlite(conn):
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
    if isinstance(column.type, sa.Text | sa.String) and not is_sqlite(conn):
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
