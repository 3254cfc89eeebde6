"""Which daemons are alive and which one serves an account, told by the PostgreSQL server itself.

Owns: a daemon's membership (one session holding a *shared* advisory lock in the first account's
database), counting the live members, the session names (`application_name`) that say which
daemon holds which account's instance lock, and reading that back for `status` and `/metrics`.

Why sessions and advisory locks, not a table with heartbeats: an account's owner is already "the
session that holds its advisory lock" (lock.py), and the server ends a dead daemon's sessions by
itself (at once when its process dies, after the TCP keepalives below when its host does). A
membership made the same way can never disagree with the ownership it is used to share out: no
heartbeat to write, no clock to compare, no timeout to tune, no row left behind by a crash. Why not
APScheduler 4's shared data store or procrastinate: both distribute jobs, not ownership, and would
replace the scheduler rather than tell it which accounts are its own.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

import sqlalchemy as sa
import structlog

from clevertim_sync.mirror.db import normalise_url
from clevertim_sync.mirror.lock import advisory_key

log = structlog.get_logger(__name__)

MEMBERS_KEY = advisory_key("members")
MIRROR_KEY = advisory_key("mirror")  # lock.py's key for an account's instance lock
SESSION_PREFIX = "clevertim-sync "
# As lock.py sets them on its lock's session: the server notices a dead host in 5 + 2 x 3 s, and
# no idle timeout ends a membership that only waits.
_SESSION_OPTIONS = (
    "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 "
    "-c idle_session_timeout=0"
)

# The sessions that hold an advisory lock `key` in this database, with their names.
_HOLDERS = sa.text(
    "SELECT a.application_name, l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid::bigint = :hi AND l.objid::bigint = :lo ORDER BY a.application_name"
)


def this_daemon() -> str:
    """This daemon's name among its peers: host and pid, unique while it lives."""
    return f"{socket.gethostname()}:{os.getpid()}"


def named_url(database_url: str, daemon: str) -> str:
    """`database_url` with the session named after `daemon` (PostgreSQL; others as they are)."""
    url = sa.make_url(normalise_url(database_url))
    if url.get_backend_name() != "postgresql":
        return database_url
    name = (SESSION_PREFIX + daemon)[:63]  # PostgreSQL keeps 63 bytes of a name
    return url.update_query_dict({"application_name": name}).render_as_string(hide_password=False)


def _split(key: int) -> dict[str, int]:
    return {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}


def holders(conn: sa.Connection, key: int = MIRROR_KEY) -> list[str]:
    """The daemons holding `key` in this database (an account's mirror: at most one)."""
    rows = conn.execute(_HOLDERS, _split(key)).all()
    return [str(name).removeprefix(SESSION_PREFIX) if name else f"server pid {pid}" for name, pid in rows]


class Membership:
    """This daemon's place among the live ones, on one dedicated session of its own."""

    def __init__(self, database_url: str, daemon: str) -> None:
        self.daemon = daemon
        url = sa.make_url(named_url(database_url, daemon)).update_query_dict({"options": _SESSION_OPTIONS})
        self._engine = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
        self._conn: sa.Connection | None = None
        self._guard = threading.Lock()

    def join(self) -> None:
        with self._guard:
            if self._conn is None:
                conn = self._engine.connect()
                conn.execute(sa.text("SELECT pg_advisory_lock_shared(:k)"), {"k": MEMBERS_KEY})
                self._conn = conn
                log.info("members.joined", daemon=self.daemon)

    def live(self) -> list[str] | None:
        """The live daemons (this one included), or None when the server cannot be asked now."""
        try:
            self.join()  # again after a lost session: a database restart ends it
            with self._guard:
                assert self._conn is not None
                return holders(self._conn, MEMBERS_KEY)
        except sa.exc.DBAPIError as exc:
            log.warning("members.unreachable", daemon=self.daemon, error=str(exc.orig))
            with self._guard:
                if self._conn is not None:
                    with contextlib.suppress(sa.exc.DBAPIError):
                        self._conn.close()
                    self._conn = None
            return None

    def leave(self) -> None:
        with self._guard:
            if self._conn is not None:
                with contextlib.suppress(sa.exc.DBAPIError):
                    self._conn.close()
                self._conn = None
        self._engine.dispose()


def fair_share(accounts: int, members: int) -> int:
    """The most accounts one of `members` live daemons should hold: never more than the fair
    share plus one, and together they hold them all."""
    return -(-accounts // max(members, 1))
