"""One active daemon per mirror: a lock file beside a SQLite database, an advisory lock on PostgreSQL.

Owns: acquiring, checking and releasing that lock, and the standby wait on PostgreSQL.

It only needs a database URL.

Why these mechanisms: flock() is released by the kernel when the holder dies, however it dies,
so a crashed daemon never leaves a stale lock behind. A PostgreSQL session advisory lock is held
by one dedicated connection and released by the server when that connection ends; the session's
TCP keepalives are shortened so the server notices a holder whose host died, and a standby on
another host takes over then. Other SQL databases are refused: we cannot promise one instance.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
import structlog

from clevertim_sync.errors import InstanceLocked, MirrorError
from clevertim_sync.mirror.db import normalise_url, sqlite_file

log = structlog.get_logger(__name__)

# How fast the PostgreSQL server notices a dead lock holder: idle + interval * count seconds.
_PG_KEEPALIVE = {"tcp_keepalives_idle": 5, "tcp_keepalives_interval": 2, "tcp_keepalives_count": 3}


class InstanceLock(Protocol):
    description: str
    # Unique to this holding of the lock: a push run under it tags its claims with it, so the next
    # holder knows they belong to a process that is gone (writeback/outbox.py, recover_dead_holders).
    holder_id: str

    def check(self) -> bool:
        """True while the lock is still ours (a PostgreSQL connection can drop under us)."""

    def release(self) -> None: ...


class FileLock:
    """An exclusive flock() on `<database>.lock`; the file records who holds it, for the error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"lock file {path}"
        self.holder_id = secrets.token_hex(6)
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InstanceLocked(
                f"another clevertim-sync daemon (pid {holder}) already runs against this mirror "
                f"(it holds {self.path}); stop it first, or point this one at another database"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def check(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            # Unlock before close; the file itself stays: deleting it would race a new holder.
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock, from the mirror's name."""
    digest = hashlib.sha256(f"clevertim-sync:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresLock:
    """A session advisory lock held by one dedicated AUTOCOMMIT connection for the daemon's life."""

    def __init__(self, url: sa.URL, name: str = "mirror") -> None:
        self.key = advisory_key(name)
        self.description = f"PostgreSQL advisory lock {self.key} on database {url.database}"
        self.holder_id = secrets.token_hex(6)
        # No pool: the lock lives and dies with exactly this one connection.
        self._engine = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
        self._conn: sa.Connection | None = None
        self._guard = threading.Lock()

    def try_acquire(self) -> bool:
        try:
            conn = self._engine.connect()
        except sa.exc.OperationalError as exc:
            raise MirrorError(
                f"cannot connect to {self._engine.url.render_as_string(hide_password=True)} to take the "
                f"instance lock: {exc.orig}; check that PostgreSQL is up and the URL is right"
            ) from None
        try:
            for setting, value in _PG_KEEPALIVE.items():
                conn.execute(sa.text(f"SET {setting} = {int(value)}"))
            # Server-side idle timeouts would end the session and silently drop the lock.
            conn.execute(sa.text("SET idle_session_timeout = 0"))
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar_one()
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def holder_pid(self) -> int | None:
        """The server-side pid of the session holding the lock, for the error message."""
        with self._engine.connect() as conn:
            hi, lo = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF
            row = conn.execute(
                sa.text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid::bigint = :hi AND objid::bigint = :lo LIMIT 1"
                ),
                {"hi": hi, "lo": lo},
            ).first()
        return int(row[0]) if row else None

    def check(self) -> bool:
        with self._guard:
            if self._conn is None:
                return False
            try:
                self._conn.execute(sa.text("SELECT 1"))
            except sa.exc.DBAPIError:
                log.error("lock.lost", lock=self.description)
                self._conn = None
                return False
            return True

    def release(self) -> None:
        with self._guard:
            if self._conn is not None:
                # A failure means the connection is gone, and with it the lock.
                with contextlib.suppress(sa.exc.DBAPIError):
                    self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._conn.close()
                self._conn = None
        self._engine.dispose()


def acquire(
    database_url: str,
    *,
    name: str = "mirror",  # the key within the database: keep the default, the mirror IS the database
    standby: bool = False,
    retry_every: float = 2.0,
    stop: threading.Event | None = None,
    on_wait: Callable[[str], object] | None = None,
    tick: Callable[[], object] | None = None,
) -> InstanceLock:
    """Take the mirror's instance lock or raise InstanceLocked.

    With `standby` (PostgreSQL only) wait instead, retrying every `retry_every` seconds until the
    lock is ours or `stop` is set (then InstanceLocked). `on_wait` hears a status line once;
    `tick` is called on every retry (the systemd watchdog must hear from a waiting standby too).
    """
    url = sa.make_url(normalise_url(database_url))  # postgresql:// means psycopg 3 here too
    backend = url.get_backend_name()
    if backend == "sqlite":
        if standby:
            raise InstanceLocked(
                "--standby needs a PostgreSQL mirror: a SQLite file cannot be shared between hosts"
            )
        path = sqlite_file(url)
        if path is None:
            raise MirrorError("an in-memory SQLite database cannot be shared with a daemon; use a file")
        lock = FileLock(path.with_name(path.name + ".lock"))
        lock.acquire()
        log.info("lock.acquired", lock=lock.description)
        return lock
    if backend != "postgresql":
        raise MirrorError(f"the daemon supports SQLite and PostgreSQL mirrors, not {backend}")
    pg = PostgresLock(url, name)
    announced = False
    while True:
        try:
            got = pg.try_acquire()
        except MirrorError as exc:
            if not standby:
                raise
            # A standby outlives a database restart: keep waiting, it is what it is for.
            log.warning("lock.standby_cannot_connect", error=str(exc))
            got = False
        if got:
            log.info("lock.acquired", lock=pg.description, standby=standby)
            return pg
        if not standby:
            holder = pg.holder_pid()
            pg.release()
            raise InstanceLocked(
                f"another clevertim-sync daemon already runs against this mirror (it holds "
                f"{pg.description}, server pid {holder}); stop it first, or start this one with "
                f"--standby to take over when it stops"
            )
        if not announced:
            announced = True
            log.info("lock.standby", lock=pg.description, retry_every=retry_every)
            if on_wait is not None:
                on_wait("standby: waiting for the active daemon to stop")
        if tick is not None:
            tick()
        if stop is not None and stop.wait(retry_every):
            pg.release()
            raise InstanceLocked("stopped while waiting as a standby; the active daemon still runs")
        if stop is None:
            time.sleep(retry_every)
