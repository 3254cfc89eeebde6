"""Engines and migrations: the one way the project opens a database.

(Where the migrations are and which is the newest: mirror/revisions.py, light enough for `--version`.)

Owns: `make_engine(url)` (SQLite tuned for a daemon plus CLI commands side by side, PostgreSQL
through psycopg 3) and `upgrade(engine_or_url)` (alembic upgrade head, run by every command).

SQLite: WAL (readers never block the writer), synchronous=NORMAL (durable at checkpoints, safe
against corruption), a busy timeout, foreign keys on, and every transaction begun with
`BEGIN IMMEDIATE`: the Python driver's default (deferred, and no BEGIN before a SELECT) lets a
read-then-write transaction fail with "database is locked" instead of waiting, and lets two
writeback workers claim the same item. Serialising transactions costs little: they are short.
The exception is a reader (`reading`): a connection that only reads, in one transaction that
takes no write lock and cannot write (a dry run).

A SQLite file this project creates is readable by its owner only (0600), whatever the umask:
it holds the whole account. SQLite gives its -wal and -shm files the database file's mode.

Both: `hide_parameters` keeps records' data out of error messages and so out of the logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from clevertim_sync.errors import MirrorError
from clevertim_sync.mirror import failures
from clevertim_sync.mirror.revisions import MIGRATIONS_DIR, SOURCE_MIGRATIONS, head_revision

if TYPE_CHECKING:
    from alembic.config import Config

ALEMBIC_INI = SOURCE_MIGRATIONS.parent / "alembic.ini"


def normalise_url(url: str) -> str:
    """Pick psycopg 3 for a bare `postgresql://` URL (SQLAlchemy would pick psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def sqlite_file(url: str | sa.URL) -> Path | None:
    """The file behind a SQLite URL (`sqlite:///PATH`, `sqlite:///file:PATH?uri=true`), resolved;
    None for an in-memory database or another kind of database. The one reading of such a URL:
    the 0600 creation, the instance lock, backups, restores and Datasette all go by it."""
    parsed = make_url(url) if isinstance(url, str) else url
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file::memory:"):
        return None
    return Path(database.removeprefix("file:").split("?")[0]).resolve()


def make_engine(url: str, *, busy_timeout: float = 30, idle_connections: int = 5) -> Engine:
    """An Engine for `url`, set up as this project needs it (see the module docstring).

    `idle_connections`: how many connections the pool keeps once returned (more may be open at
    once; those are closed when returned); 0 keeps none. Each SQLite one holds the parsed schema,
    ~0.7 MB, and costs ~15 ms to open.
    """
    url = normalise_url(url)
    backend = make_url(url).get_backend_name()
    pool: dict[str, Any] = (
        {"poolclass": sa.NullPool} if idle_connections == 0 else {"pool_size": idle_connections}
    )
    if backend == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": busy_timeout}, hide_parameters=True, **pool)
        path = sqlite_file(url)

        @event.listens_for(engine, "do_connect")
        def _before_connect(*_args: Any) -> None:
            # Where SQLite would create the file (at the first connection, not when an engine is
            # merely made: `backup` of a wrong path must still find nothing there), create it 0600.
            _create_private(path)

        _tune_sqlite(engine, busy_timeout)
    elif backend == "postgresql":
        engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True, **pool)
    else:
        raise MirrorError(f"unsupported database {backend!r}: use a sqlite:/// or postgresql:// URL")
    failures.install(engine)  # a full disk or an I/O error: one clear DatabaseFailure
    return engine


def _create_private(path: Path | None) -> None:
    """Create a SQLite database file that does not exist yet as an empty file with mode 0600."""
    if path is None:  # in memory
        return
    # O_EXCL: an existing file (and its mode, which its owner may have chosen) is left alone.
    with contextlib.suppress(OSError):  # exists, or cannot be: SQLite says why when it opens it
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def _tune_sqlite(engine: Engine, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the driver; "begin" below issues it.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # A new database gets 16 KiB pages (records of ~1 KB with their raw JSON: a first sync of
        # 100,000 contacts ~10% faster than with 4 KiB, the file 5% smaller). Only a database not
        # written yet takes it (before WAL is on); an existing one keeps its size.
        cur.execute("PRAGMA page_size=16384")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        # 2 MiB (SQLite's default): a page cache of 64 MiB made no pull faster (measured at 100,000
        # contacts: first, no-change and 1%-changed syncs) and every pooled connection held it.
        cur.execute("PRAGMA cache_size=-2048")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(_READER):
            # A reader: any write fails (query_only), and a deferred BEGIN takes no write lock.
            conn.info[_READER] = True
            conn.exec_driver_sql("PRAGMA query_only=ON")
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_conn: Any, record: Any) -> None:
        # Back in the pool: writable again for the next user (None: invalidated, never reused).
        if record.info.pop(_READER, False) and dbapi_conn is not None:
            dbapi_conn.execute("PRAGMA query_only=OFF")


# The execution option that makes a connection a reader (see `reading`).
_READER = "clevertim_sync_reader"


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[sa.Connection]:
    """A connection that only reads: one transaction (one view of the database) that begins no
    write transaction and in which any statement that would write fails. SQLite: a deferred BEGIN
    under `PRAGMA query_only`; PostgreSQL: a READ ONLY transaction. For a dry run, which must
    show what a command would do without writing, not even a write rolled back."""
    option = {_READER: True} if engine.dialect.name == "sqlite" else {"postgresql_readonly": True}
    with engine.connect().execution_options(**option) as conn:
        yield conn


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config  # noqa: PLC0415 - alembic only when a migration is due

    """The alembic Config of this project, independent of the working directory."""
    # Installed there is no alembic.ini: everything upgrade() needs is set here.
    cfg = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.is_file() else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        # alembic's ini interpolation would eat a '%' in a password.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _at(conn: sa.Connection, revision: str) -> bool:
    """Whether the database is at `revision` already (read without alembic)."""
    try:
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == [revision]
    except sa.exc.DatabaseError:  # no alembic_version yet: an empty database
        return False


def upgrade(engine_or_url: Engine | str, revision: str = "head") -> None:
    """Bring the database's schema up to `revision` (default: the newest); a no-op when it is there."""
    engine = make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    # alembic narrates every "Context impl SQLiteImpl." at INFO: noise on every command.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        with engine.connect() as conn:
            if revision == "head" and _at(conn, head_revision()):
                return
        from alembic import command  # noqa: PLC0415 - alembic only when a migration is due

        from clevertim_sync.mirror import wide  # noqa: PLC0415 - as alembic

        with engine.begin() as conn:
            # The wide views stand on the tables a migration may change (PostgreSQL refuses to
            # alter a column a view reads): out of the way, then built anew for the new schema.
            wide.drop(conn)
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            if revision == "head":
                wide.refresh(conn)
    except sa.exc.OperationalError as exc:
        raise MirrorError(
            f"cannot migrate the database {engine.url.render_as_string(hide_password=True)}: "
            f"{exc.orig}; check that it is reachable and writable"
        ) from exc
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The alembic revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415 - see upgrade

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
