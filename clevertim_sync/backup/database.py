"""The database side of backups: consistent snapshots in, restored tables out, on SQLite and PostgreSQL.

Owns: the SQLite online-backup snapshot, `pg_dump`/`pg_restore` invocation (custom format, one
exported snapshot shared with the row counts), the logical dump (one JSON-lines file per table)
used when `pg_dump` is missing, copying rows into another database, and "is this database empty"
and "wipe it" for `restore --force`.

Does not know the archive format (that is backup.py) and must not import httpx, the pull or the
store. Secrets: a PostgreSQL password goes to pg_dump through the PGPASSWORD environment variable,
never on a command line, and URLs are only ever rendered with the password hidden.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from clevertim_sync.errors import BackupError
from clevertim_sync.mirror import schema, wide
from clevertim_sync.mirror.db import sqlite_file
from clevertim_sync.mirror.failures import failure_kind

ALEMBIC_TABLE = "alembic_version"
# Rows copied per INSERT when loading a table: big enough to be fast, small enough for memory.
COPY_BATCH = 2000


def q(name: str) -> str:
    """A quoted SQL identifier. Table names here come from the database's own catalog, not users."""
    return '"' + name.replace('"', '""') + '"'


def safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def sqlite_path(engine: Engine) -> Path:
    """The file behind a SQLite engine; an in-memory database has nothing to back up."""
    path = sqlite_file(engine.url)
    if path is None:
        raise BackupError("an in-memory SQLite database cannot be backed up: use a sqlite:///FILE URL")
    return path


# --- SQLite ----------------------------------------------------------------------------------


def sqlite_snapshot(source: Path, dest: Path) -> None:
    """Copy `source` into a new file `dest` as one consistent point in time, while others write.

    The online backup API in a single step holds one read transaction for the whole copy; in WAL
    mode that never blocks the daemon's writer, and the copy is exactly one committed state.
    """
    if not source.is_file():
        raise BackupError(f"the database file {source} does not exist: check database.url")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst, pages=-1)
            # A self-contained file: no -wal beside it, readable by any SQLite.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        if failure_kind(exc) == "full":
            raise BackupError(
                f"no space left for the backup in {dest.parent} ({exc}): nothing was written and "
                "older backups are untouched; free space there or back up elsewhere"
            ) from exc
        raise BackupError(f"cannot snapshot {source}: {exc}; is it a SQLite database?") from exc
    finally:
        src.close()


def _sqlite_user_tables(conn: sqlite3.Connection) -> list[str]:
    """Ordinary tables, without SQLite's own and without FTS virtual tables and their shadow tables."""
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    virtual = [name for name, sql in rows if (sql or "").upper().startswith("CREATE VIRTUAL")]
    return [
        name
        for name, _sql in rows
        if name not in virtual and not any(name.startswith(v + "_") for v in virtual)
    ]


def sqlite_facts(path: Path) -> tuple[str | None, dict[str, int]]:
    """(alembic revision, row count per table) of a SQLite file, after an integrity check."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"the snapshot does not open as SQLite: {exc}") from exc
    try:
        check = conn.execute("PRAGMA quick_check").fetchone()
        if not check or check[0] != "ok":
            raise BackupError(f"the snapshot fails SQLite's integrity check: {check[0] if check else '?'}")
        tables = _sqlite_user_tables(conn)
        counts = {t: int(conn.execute(f"SELECT count(*) FROM {q(t)}").fetchone()[0]) for t in tables}  # noqa: S608
        revision = None
        if ALEMBIC_TABLE in tables:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        return revision, counts
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"the snapshot is not a readable SQLite database: {exc}") from exc
    finally:
        conn.close()


# --- PostgreSQL --------------------------------------------------------------------------------


def _pg_tables(conn: sa.Connection) -> list[str]:
    rows = conn.execute(
        sa.text(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
    )
    return [r[0] for r in rows]


def _counts(conn: sa.Connection, tables: list[str]) -> dict[str, int]:
    return {t: int(conn.execute(sa.text(f"SELECT count(*) FROM {q(t)}")).scalar_one()) for t in tables}  # noqa: S608


def _revision(conn: sa.Connection, tables: list[str]) -> str | None:
    if ALEMBIC_TABLE not in tables:
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


@contextmanager
def pg_snapshot(engine: Engine) -> Iterator[tuple[sa.Connection, str, str | None, dict[str, int]]]:
    """A REPEATABLE READ transaction whose snapshot is exported, with the revision and counts in it.

    pg_dump joins the same snapshot (`--snapshot`), so the manifest's counts describe exactly
    the rows in the dump even while the daemon keeps writing.
    """
    with engine.connect() as plain:
        conn = plain.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            snapshot_id = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
            tables = _pg_tables(conn)
            yield conn, snapshot_id, _revision(conn, tables), _counts(conn, tables)


def _libpq_env(engine: Engine) -> dict[str, str]:
    """Connection parameters for pg_dump/pg_restore as libpq environment variables."""
    url = engine.url
    env = dict(os.environ)
    for var, value in (
        ("PGHOST", url.host or url.query.get("host")),
        ("PGPORT", str(url.port) if url.port else None),
        ("PGUSER", url.username),
        ("PGPASSWORD", url.password),
        ("PGDATABASE", url.database),
        ("PGSSLMODE", url.query.get("sslmode")),
    ):
        if isinstance(value, str) and value:
            env[var] = value
    return env


def pg_tool(name: str, engine: Engine | None = None) -> str | None:
    """Path of pg_dump/pg_restore when installed and not older than the server (else None)."""
    path = shutil.which(name)
    if path is None or engine is None:
        return path
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout  # noqa: S603
    match = re.search(r"\)\s+(\d+)", out)  # "pg_dump (PostgreSQL) 15.18 (Debian ...)"
    with engine.connect() as conn:
        server_major = int(conn.execute(sa.text("SHOW server_version_num")).scalar_one()) // 10000
    if match is None or int(match.group(1)) < server_major:
        return None  # an older pg_dump refuses a newer server: fall back to the logical dump
    return path


def _run_tool(argv: list[str], engine: Engine, what: str) -> None:
    done = subprocess.run(argv, env=_libpq_env(engine), capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise BackupError(
            f"{what} failed for {safe_url(engine)} (exit {done.returncode}): {done.stderr.strip()}"
        )


def pg_dump(engine: Engine, conn_snapshot: str, dest: Path, tool: str, *, compress: bool = True) -> None:
    # The wide views are derived (one column per custom field) and rebuilt by the next pull; a pull
    # that renames a field drops and re-creates one, which a pg_dump reading it by OID at that
    # moment would fail on. They are left out of the dump.
    skip = [f"--exclude-table=public.{view}" for view in wide.VIEWS]
    _run_tool(
        [tool, "--format=custom", "--no-owner", "--no-privileges", f"--snapshot={conn_snapshot}",
         f"--file={dest}", *skip, *([] if compress else ["--compress=0"])],
        engine,
        "pg_dump",
    )  # fmt: skip


def pg_restore_list(path: Path) -> None:
    """Fail unless pg_restore can read the archive's table of contents (the dump 'opens')."""
    tool = shutil.which("pg_restore")
    if tool is None:
        return
    done = subprocess.run([tool, "--list", str(path)], capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise BackupError(f"the pg_dump payload does not open: {done.stderr.strip()}")


def pg_restore(path: Path, engine: Engine) -> None:
    tool = shutil.which("pg_restore")
    if tool is None:
        raise BackupError("this backup was made with pg_dump; install pg_restore (postgresql-client)")
    _run_tool(
        [tool, "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
         f"--dbname={engine.url.database}", str(path)],
        engine,
        "pg_restore",
    )  # fmt: skip


# --- logical dump: one gzip'd JSON-lines file per table ---------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot write {type(value).__name__} to a logical backup")


def logical_dump(
    conn: sa.Connection, tables: list[str], dest_dir: Path, *, compress: bool = True
) -> dict[str, str]:
    """Write every table's rows to `<table>.jsonl.gz` (`.jsonl` uncompressed); returns {table: file name}."""
    files: dict[str, str] = {}
    for table in tables:
        name = f"{table}.jsonl.gz" if compress else f"{table}.jsonl"
        result = conn.execution_options(stream_results=True).execute(sa.text(f"SELECT * FROM {q(table)}"))  # noqa: S608
        with _opened_for_write(dest_dir / name, compress) as out:
            keys = list(result.keys())
            for row in result:
                out.write(orjson.dumps(dict(zip(keys, row, strict=True)), default=_json_default) + b"\n")
        files[table] = name
    return files


def _opened_for_write(path: Path, compress: bool) -> BinaryIO:
    return cast(BinaryIO, gzip.open(path, "wb", compresslevel=6)) if compress else path.open("wb")


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
        for line in f:
            if line.strip():
                yield orjson.loads(line)


# --- loading rows into a database (restore across engines, logical restore) ------------------


def is_empty(engine: Engine) -> bool:
    """True when the database holds no table with a row in it (alembic's bookkeeping aside)."""
    inspector = sa.inspect(engine)
    with engine.connect() as conn:
        for table in inspector.get_table_names():
            if table == ALEMBIC_TABLE:
                continue
            if conn.execute(sa.text(f"SELECT 1 FROM {q(table)} LIMIT 1")).first() is not None:  # noqa: S608
                return False
    return True


def wipe_postgres(engine: Engine) -> None:
    """Drop everything in the current schema (restore --force into PostgreSQL)."""
    with engine.begin() as conn:
        schema_name = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        conn.execute(sa.text(f'DROP SCHEMA "{schema_name}" CASCADE'))
        conn.execute(sa.text(f'CREATE SCHEMA "{schema_name}"'))


def _coerce(column: sa.Column[Any], value: Any) -> Any:
    """Turn a JSON or SQLite value back into what the column's type binds (timestamps, decimals)."""
    if value is None:
        return None
    kind = column.type.impl if isinstance(column.type, sa.TypeDecorator) else column.type
    if isinstance(kind, sa.Boolean) and isinstance(value, int):
        return bool(value)  # SQLite keeps booleans as 0/1
    if not isinstance(value, str):
        return value
    if isinstance(kind, sa.DateTime):
        return datetime.fromisoformat(value)
    if isinstance(kind, sa.Date):
        return date.fromisoformat(value)
    if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
        return Decimal(value)
    if isinstance(kind, sa.LargeBinary):
        return bytes.fromhex(value)  # a logical dump writes bytes (contact photos) as hex
    return value


def target_tables(engine: Engine) -> dict[str, sa.Table]:
    """The target's tables in insert order, typed by the project's metadata where it knows them."""
    reflected = sa.MetaData()
    reflected.reflect(engine)
    out: dict[str, sa.Table] = {}
    for table in reflected.sorted_tables:
        name = table.name
        if name == ALEMBIC_TABLE:
            continue
        known = schema.metadata.tables.get(name)
        out[name] = known if known is not None and set(known.c.keys()) == set(table.c.keys()) else table
    return out


def load_rows(
    engine: Engine,
    sources: Mapping[str, Callable[[], Iterator[dict[str, Any]]]],
) -> dict[str, int]:
    """Insert each source table's rows into the same-named target table; returns rows per table.

    Columns the target computes (a generated tsvector) are left to it; tables the target does not
    have (SQLite's FTS shadow tables in a PostgreSQL restore) are skipped on purpose: the target
    builds its search index from the rows (PostgreSQL: its GIN indexes; SQLite: the caller,
    backup._load, runs mirror.search.rebuild_all afterwards).
    """
    tables = target_tables(engine)
    loaded: dict[str, int] = {}
    with engine.begin() as conn:
        for name, table in tables.items():
            rows = sources.get(name)
            if rows is None:
                continue
            cols = {c.name: c for c in table.columns if c.computed is None}
            # The target was just migrated, empty but for what a migration seeds (customer_types,
            # 0011): the backup's copy of such a table replaces the seed, it does not collide.
            conn.execute(table.delete())
            count = 0
            batch: list[dict[str, Any]] = []
            for row in rows():
                batch.append({k: _coerce(cols[k], v) for k, v in row.items() if k in cols})
                if len(batch) >= COPY_BATCH:
                    conn.execute(table.insert(), batch)
                    count += len(batch)
                    batch = []
            if batch:
                conn.execute(table.insert(), batch)
                count += len(batch)
            loaded[name] = count
        if engine.dialect.name == "postgresql":
            _reset_sequences(conn, [name for name in loaded if "id" in tables[name].c])
    return loaded


def _reset_sequences(conn: sa.Connection, tables: list[str]) -> None:
    """Rows came in with their ids: move each serial/identity sequence past the largest one."""
    for table in tables:
        seq = conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar()
        if seq:
            conn.execute(
                sa.text(f"SELECT setval(:s, COALESCE((SELECT max(id) FROM {q(table)}), 0) + 1, false)"),  # noqa: S608
                {"s": seq},
            )


def sqlite_rows(path: Path, table: str) -> Callable[[], Iterator[dict[str, Any]]]:
    """Rows of one table of a SQLite snapshot as stored (text timestamps, 0/1 booleans)."""

    def rows() -> Iterator[dict[str, Any]]:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            cur = conn.execute(f"SELECT * FROM {q(table)}")  # noqa: S608
            keys = [d[0] for d in cur.description]
            for row in cur:
                yield dict(zip(keys, row, strict=True))
        finally:
            conn.close()

    return rows
