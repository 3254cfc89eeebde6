"""How changes become rows: one resource's `Changes` written in bulk inside the caller's
transaction (current rows, child rows, history rows, the full-text index).

Owns: the rows of a record (`build_rows`: raw text, content hash, typed row and child rows, from
the generated builders of mirror/columns.py), the bulk statements (`executemany` on SQLite,
`COPY` on PostgreSQL), `Gatherer` (a listing's changes gathered across its batches and written
`ROWS` / `COPY_ROWS` / `CHANGED` at a time, so that a few changes in each batch cost a few
statements, not a few per batch) and `ChangeWriter` (the SQL of a resource's changes), with
what makes a big load fast:

- PostgreSQL: every batch of rows, child rows and history rows of more than a few rows goes in
  by a binary `COPY ... FROM STDIN` (psycopg 3, on the caller's connection and transaction),
  5,000 records at a time.
- Into an empty table (a first load): SQLite's secondary indexes of the table and its child
  tables are dropped at the first big batch and created again at the end (same SQL, same
  transaction: nobody sees the difference; one sort beats a b-tree insert per row), and the
  full-text index is built once at the end, from the table.
- The history row of an insert is the row just written: copied inside the database rather than
  bound again from Python (a first load writes every raw twice), by id range while a first load
  comes in id order (as the API sends it): one range scan instead of a lookup per id.

A changed record is rewritten as delete + insert of its current row and child rows: simpler than
diffing child lists, and the same cost on both databases.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import sqlalchemy as sa

from clevertim_sync import jsontext, resources
from clevertim_sync.mirror import schema, search
from clevertim_sync.mirror.columns import RowBuilder, child_columns, sqlite_datetime
from clevertim_sync.pull.diff import Changes, changed_fields, record_hash

CHUNK = 2000  # ids per IN list: well under SQLite's bound-parameter limit
ROWS = 1000  # records turned into rows and written at a time on SQLite (a pull's batch)
# PostgreSQL: each COPY has a fixed cost (a round trip, the server's setup): 5,000 records a time
# made a first sync of 100,000 contacts ~15% faster than 1,000 (for ~25 MB more at the peak).
COPY_ROWS = 5000
CHANGED = 500  # updated or touched records gathered (across batches) before they are written
BIG_LOAD = 1000  # a first load whose first rows come this many at a time drops its indexes
COPY_FROM = 50  # PostgreSQL: this many rows or more go in by COPY, fewer by executemany
HISTORY_COLUMNS = (
    "resource", "record_id", "run_id", "origin", "op", "at", "raw", "content_hash", "changed",
    "queue_item_id", "record_key",
)  # fmt: skip

# (current rows, [child rows of each of the builder's child props]), as RowBuilder.rows gives.
Rows = tuple[list[tuple[Any, ...]], list[list[tuple[Any, ...]]]]
# A record to write and its content hash, None when not computed yet (a first load's diff).
Item = tuple[Mapping[str, Any], str | None]


@functools.cache
def row_builder(resource: str, sqlite: bool) -> RowBuilder:
    """`resource`'s generated row builder (made at its first use: a command that writes one
    resource does not pay for compiling all of them)."""
    return RowBuilder(resources.get(resource), sqlite=sqlite)


def build_rows(resource: str, sqlite: bool, items: Sequence[Item]) -> Rows:
    """The rows of `items`: the raw is the record's JSON text, exactly as served (jsontext.dumps,
    once); typed columns and child rows are built from the record as `jsontext.typed_text` gives
    it when that text holds a NUL or a lone surrogate (PostgreSQL's text refuses NUL, no database
    stores a lone surrogate: U+FFFD on both, the one rule), else from the record itself."""
    rows = []
    for rec, digest in items:
        try:  # jsontext.dumps's fast path, inlined: this runs once a record
            text = orjson.dumps(rec)
        except orjson.JSONEncodeError:
            raw = jsontext.dumps(rec)
            odd = jsontext.odd_text(raw)
        else:
            raw = text.decode()
            # orjson writes a backslash only to escape: memchr over the bytes, then the exact test.
            odd = b"\\" in text and jsontext.odd_text(raw)
        typed = jsontext.typed_text(rec) if odd else rec
        rows.append((typed, raw, digest or record_hash(rec)))
    return row_builder(resource, sqlite).rows(rows)


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_sqlite(conn: sa.Connection) -> bool:
    return conn.dialect.name == "sqlite"


def builder(conn: sa.Connection, resource: str) -> RowBuilder:
    return row_builder(resource, is_sqlite(conn))


def stored_time(conn: sa.Connection, at: datetime) -> Any:
    return sqlite_datetime(at.astimezone(UTC)) if is_sqlite(conn) else at


def _mark(conn: sa.Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def executemany(
    conn: sa.Connection, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Rows in by the driver, past SQLAlchemy's per-row parameter processing: `executemany` on
    SQLite; on PostgreSQL `COPY ... FROM STDIN (FORMAT BINARY)` for more than a few rows (several
    times faster than executemany's statements; binary rather than text: 1.2 s less client CPU
    and 0.5 s less in all for a first load of 100,000 contacts, measured)."""
    if not rows:
        return
    if not is_sqlite(conn) and len(rows) >= COPY_FROM:
        types = _column_types(conn, table, columns)
        driver = conn.connection.driver_connection
        assert driver is not None
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        with driver.cursor() as cur, cur.copy(sql) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
        return
    mark = _mark(conn)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"  # noqa: S608
    conn.exec_driver_sql(sql, list(rows))


def _column_types(conn: sa.Connection, table: str, columns: Sequence[str]) -> list[str]:
    """PostgreSQL: the types of `columns` as the database has them (a binary COPY must name
    them), read once per connection and table."""
    known: dict[tuple[str, tuple[str, ...]], list[str]] = conn.connection.info.setdefault("copy_types", {})
    key = (table, tuple(columns))
    if key not in known:
        found: dict[str, str] = dict(
            conn.exec_driver_sql(
                "SELECT column_name, udt_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = %s",
                (table,),
            ).all()
        )
        known[key] = [found[c] for c in columns]
    return known[key]


def old_raws(conn: sa.Connection, resource: str, ids: Sequence[Any]) -> dict[Any, tuple[str, str]]:
    """{id: (raw, content_hash)} of the stored records among `ids` (at most a chunk of them)."""
    table = schema.CURRENT[resource]
    rows = conn.execute(sa.select(table.c.id, table.c.raw, table.c.content_hash).where(table.c.id.in_(ids)))
    return {rid: (raw, digest) for rid, raw, digest in rows}


def delete_rows(conn: sa.Connection, resource: str, ids: Sequence[Any]) -> None:
    table = schema.CURRENT[resource]
    conn.execute(table.delete().where(table.c.id.in_(ids)))
    for prop in resources.get(resource).child_props:
        child = schema.CHILDREN[(resource, prop.api)]
        conn.execute(child.delete().where(child.c.owner_id.in_(ids)))


def insert_rows(conn: sa.Connection, resource: str, built: Rows) -> None:
    """Insert current and child rows (from `build_rows`) of records not currently stored."""
    rows, children = built
    cols = builder(conn, resource)
    executemany(conn, schema.CURRENT[resource].name, cols.columns, rows)
    for prop, child in zip(cols.children, children, strict=True):
        executemany(conn, schema.CHILDREN[(resource, prop.api)].name, child_columns(prop), child)


def history_row(
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
    changed_json = None if changed is None else jsontext.dumps(changed)
    key = record_id if isinstance(record_id, str) else None
    number = None if key is not None else record_id
    return (resource, number, run_id, origin, op, at, raw, digest, changed_json, queue_item_id, key)


def write_history(conn: sa.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    executemany(conn, schema.history.name, HISTORY_COLUMNS, rows)


def _copy_to_history(
    conn: sa.Connection,
    resource: str,
    ids: Sequence[Any],
    *,
    at: Any,
    run_id: int | None,
    origin: str,
    block: bool,
) -> None:
    """Insert history rows copied from the current rows `ids`, in id order. `block`: the table holds
    no other row with an id between the first and the last of `ids` (sorted; a first load in the
    listing's id order), so one range scan finds them instead of a lookup per id. A text-id
    resource's ids go to record_key."""
    mark = _mark(conn)
    table = schema.CURRENT[resource].name
    id_column = "record_key" if resource in resources.TEXT_ID_RESOURCES else "record_id"
    args: tuple[Any, ...]
    if block:
        where, args = f"id BETWEEN {mark} AND {mark}", (ids[0], ids[-1])
    else:
        where, args = f"id IN ({', '.join([mark] * len(ids))})", tuple(ids)
    sql = (
        f"INSERT INTO history (resource, {id_column}, run_id, origin, op, at, raw, content_hash) "  # noqa: S608
        f"SELECT {mark}, id, {mark}, {mark}, 'insert', {mark}, raw, content_hash FROM {table} "
        f"WHERE {where} ORDER BY id"
    )
    conn.exec_driver_sql(sql, (resource, run_id, origin, at, *args))


def is_empty(conn: sa.Connection, resource: str) -> bool:
    table = schema.CURRENT[resource].name
    return conn.exec_driver_sql(f"SELECT 1 FROM {table} LIMIT 1").first() is None  # noqa: S608


def _drop_secondary_indexes(conn: sa.Connection, resource: str) -> list[str]:
    """SQLite only: drop the explicit indexes of `resource`'s table and child tables; returns
    their CREATE statements, to run again after a bulk load. PostgreSQL: nothing."""
    if not is_sqlite(conn):
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


class RowWriter(Protocol):
    """What writes a resource's changes inside its transaction: `ChangeWriter` on this
    connection, or mirror/writer.py's proxy to a process of its own."""

    def insert(self, ids: list[Any], rows: Rows) -> None: ...

    def update(self, items: Sequence[Item]) -> None: ...

    def touch(self, items: Sequence[Item]) -> None: ...

    def delete(self, ids: Sequence[Any]) -> None: ...


class Gatherer:
    """A listing's inserts, updates and touches gathered across its batches and handed to a
    `RowWriter` `ROWS` or `CHANGED` at a time (a listing with a few changes in each batch costs
    a few statements, not a few per batch). The rows of inserts are built here: in the pull's
    process, whichever process writes them."""

    def __init__(self, writer: RowWriter, resource: str, *, sqlite: bool) -> None:
        self.writer, self.resource, self.sqlite = writer, resource, sqlite
        self._inserts: list[Item] = []
        self._updates: list[Item] = []
        self._touches: list[Item] = []

    def apply(self, changes: Changes) -> None:
        """One batch: its inserts, updates, touches and (when given) deletes."""
        self._inserts += changes.inserts
        self._updates += changes.updates
        self._touches += changes.touches
        self._hand_over(ROWS if self.sqlite else COPY_ROWS, CHANGED)
        self.delete(changes.deletes)

    def delete(self, ids: Sequence[Any]) -> None:
        """Delete the mirrored records `ids`, after what is gathered (history in listing order)."""
        if ids:
            self.flush()
            self.writer.delete(ids)

    def flush(self) -> None:
        """Hand over everything gathered."""
        self._hand_over(0, 0)

    def _hand_over(self, rows: int, changed: int) -> None:
        """`rows` inserts and `changed` updates or touches at a time; less than that stays
        gathered (0 and 0: everything)."""
        jobs: list[tuple[list[Item], int, Callable[[Sequence[Item]], None]]] = [
            (self._inserts, rows, self._insert),
            (self._updates, changed, self.writer.update),
            (self._touches, changed, self.writer.touch),
        ]
        for gathered, size, write in jobs:
            while gathered and len(gathered) >= size:
                write(gathered[: size or len(gathered)])
                del gathered[: size or len(gathered)]

    def _insert(self, items: Sequence[Item]) -> None:
        rows = build_rows(self.resource, self.sqlite, items)
        self.writer.insert([row[0] for row in rows[0]], rows)  # a current row starts with its id


class ChangeWriter:
    """Writes one resource's changes inside the caller's transaction: rows, child rows, history
    and the full-text index (mirror/search.py) where the resource has one, with a first load's
    machinery (see the module's docstring). Call `finish()` once, after the last change: it puts
    the indexes back and builds the full-text index of a first load."""

    def __init__(
        self,
        conn: sa.Connection,
        resource: str,
        *,
        run_id: int | None,
        at: datetime,
        origin: str = "pull",
        queue_items: Mapping[Any, int | None] | None = None,
    ) -> None:
        self.conn, self.resource, self.run_id = conn, resource, run_id
        # Who wrote it, for history: a pull (its run), or the writeback folding a push's answers
        # in ('local', each record's queue item: {id: queue item id}).
        self.origin, self.queue_items = origin, queue_items or {}
        self.at = stored_time(conn, at)
        self.sqlite = is_sqlite(conn)
        self.fts = search.maintained(conn, resource)
        self.first_load = is_empty(conn, resource)
        self.deferred: list[str] | None = None  # CREATE INDEX statements to run at the end
        self.loaded = False  # any row inserted
        self.ordered = self.first_load  # a first load that has come in id order so far
        self.highest: Any = None  # the last id it inserted

    def insert(self, ids: list[Any], rows: Rows) -> None:
        """Records not stored yet, as `build_rows` made them (`ids` in the same order)."""
        conn, resource = self.conn, self.resource
        if self.first_load and self.deferred is None:
            # A big first batch: a big load, worth dropping the indexes for.
            self.deferred = _drop_secondary_indexes(conn, resource) if len(ids) >= BIG_LOAD else []
        insert_rows(conn, resource, rows)
        self.loaded = True
        if not self.queue_items:
            in_order = self._in_id_order(ids)
            for part in [ids] if in_order else chunks(ids):
                _copy_to_history(
                    conn, resource, part, at=self.at, run_id=self.run_id, origin=self.origin, block=in_order
                )
        else:  # a push's few answers, each with its own queue item: bound from here
            write_history(
                conn,
                [
                    self._history(rid, "insert", row[-2], row[-1])
                    for rid, row in zip(ids, rows[0], strict=True)
                ],
            )
        if self.fts and not self.first_load:
            for part in chunks(ids):
                search.index(conn, resource, part)

    def _in_id_order(self, ids: Sequence[Any]) -> bool:
        """Whether a first load has come in id order so far, `ids` (just inserted) included: then
        they are the only rows in their id range. Once out of order, it stays out of order. Only
        integer ids: text sorts by the database's collation, which need not be Python's order."""
        if self.ordered:
            self.ordered = (
                all(i.__class__ is int for i in ids)
                and (self.highest is None or ids[0] > self.highest)
                and all(a < b for a, b in itertools.pairwise(ids))
            )
            self.highest = ids[-1]
        return self.ordered

    def update(self, items: Sequence[Item]) -> None:
        """Records whose content changed (at most a chunk of them)."""
        conn, resource = self.conn, self.resource
        rows = build_rows(resource, self.sqlite, items)
        ids = [row[0] for row in rows[0]]  # a current row starts with its id
        old = old_raws(conn, resource, ids)
        if self.fts:
            search.forget(conn, resource, ids)
        delete_rows(conn, resource, ids)
        insert_rows(conn, resource, rows)
        if self.fts:
            search.index(conn, resource, ids)
        history = [
            self._history(
                row[0],
                "update",
                row[-2],  # a current row ends with raw, content_hash
                row[-1],
                changed=changed_fields(jsontext.loads(old[row[0]][0]), rec),
            )
            for (rec, _), row in zip(items, rows[0], strict=True)
        ]
        write_history(conn, history)

    def replace(self, record: Mapping[str, Any], digest: str, before: str | None) -> None:
        """Put `record` (a later copy of an id served twice) in place of the copy this writer wrote
        earlier in its run, with the history the listing would have made had it held `record`
        alone: an insert when the mirror did not hold it (`before` is None), an update against
        its last version when the content differs from `before`, else nothing."""
        conn, resource = self.conn, self.resource
        rows = build_rows(resource, self.sqlite, [(record, digest)])
        rid = rows[0][0][0]
        key = "record_key" if resource in resources.TEXT_ID_RESOURCES else "record_id"
        mark = _mark(conn)
        conn.exec_driver_sql(
            f"DELETE FROM history WHERE resource = {mark} AND {key} = {mark} AND run_id = {mark}",  # noqa: S608
            (resource, rid, self.run_id),
        )
        if self.fts and not self.first_load:
            search.forget(conn, resource, [rid])
        delete_rows(conn, resource, [rid])
        insert_rows(conn, resource, rows)
        if self.fts and not self.first_load:
            search.index(conn, resource, [rid])
        raw = rows[0][0][-2]
        if before is None:
            write_history(conn, [self._history(rid, "insert", raw, digest)])
        elif before != digest:
            last = conn.exec_driver_sql(
                f"SELECT raw FROM history WHERE resource = {mark} AND {key} = {mark} "  # noqa: S608
                "ORDER BY id DESC LIMIT 1",
                (resource, rid),
            ).scalar()
            changed = changed_fields(jsontext.loads(last), record) if last else None
            write_history(conn, [self._history(rid, "update", raw, digest, changed=changed)])

    def delete(self, ids: Sequence[Any]) -> None:
        """Delete the mirrored records `ids` (history keeps their last version)."""
        conn, resource = self.conn, self.resource
        for chunk in chunks(ids):
            old = old_raws(conn, resource, chunk)
            if self.fts:
                search.forget(conn, resource, chunk)
            delete_rows(conn, resource, chunk)
            # in the order given (the diff's: by id), not the database's
            write_history(conn, [self._history(rid, "delete", *old[rid]) for rid in chunk if rid in old])

    def _history(
        self,
        rid: Any,
        op: str,
        raw: str | None,
        digest: str | None,
        *,
        changed: dict[str, list[Any]] | None = None,
    ) -> tuple[Any, ...]:
        return history_row(
            self.resource,
            rid,
            op,
            raw,
            digest,
            at=self.at,
            run_id=self.run_id,
            origin=self.origin,
            changed=changed,
            queue_item_id=self.queue_items.get(rid),
        )

    def touch(self, items: Sequence[Item]) -> None:
        """Only lm moved: refresh what is stored, but it is not a change (no history, no count).
        Neither raw nor modified_at is indexed text: the full-text index stays as it is."""
        built = builder(self.conn, self.resource)
        mark = _mark(self.conn)
        table = schema.CURRENT[self.resource].name
        sql = f"UPDATE {table} SET raw = {mark}, modified_at = {mark} WHERE id = {mark}"  # noqa: S608
        self.conn.exec_driver_sql(sql, [(jsontext.dumps(r), built.lm(r), built.id_of(r)) for r, _ in items])

    def finish(self) -> None:
        """The end of a load: secondary indexes back, the full-text index built from the table."""
        for create in self.deferred or ():
            self.conn.exec_driver_sql(create)
        self.deferred = []
        if self.fts and self.first_load and self.loaded:
            search.rebuild(self.conn, self.resource)
