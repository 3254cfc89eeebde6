"""Database failures the user has to act on, told in one short sentence.

A full disk, an I/O error, a read-only or damaged file are not bugs of a statement: SQLAlchemy's
own text for them carries the whole statement and its parameters (the records' data, thousands
of placeholders), which is useless to the person who has to free space and leaks data into logs.
`install(engine)` hooks SQLAlchemy's documented `handle_error` event so that these failures, and
only these, are raised as `DatabaseFailure` (a MirrorError: the pull records it on the resource
and goes on, the CLI prints it, the daemon reports it). Everything else (integrity errors, lock
timeouts, serialization failures the code catches on purpose) passes through unchanged. The
transaction is rolled back as for any other error: nothing half-written stays.

`error_text(exc)` is how any error is told where a record's data must not go (`last_error`,
`status`, logs, alerts): a SQLAlchemy error (or any other that is not the package's own) by its
driver's class and first line with every quoted span left out (PostgreSQL quotes the offending
value: `invalid input syntax for type integer: "..."`), never with the statement or parameters.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from clevertim_sync.errors import ClevertimSyncError, DatabaseFailure
from clevertim_sync.logs import without_quotes

# SQLite primary result codes (sqlite3 exceptions carry them as `sqlite_errorcode` since 3.11).
_SQLITE_KINDS = {13: "full", 10: "io", 8: "read_only", 11: "corrupt", 26: "corrupt"}
# PostgreSQL SQLSTATE classes: 53 insufficient resources (53100 disk full), 58 system error (I/O).
_PG_KINDS = {"53100": "full", "53": "resources", "58": "io", "XX001": "corrupt", "XX002": "corrupt"}


def failure_kind(dbapi_error: BaseException | None) -> str | None:
    """'full', 'io', 'read_only', 'corrupt', 'resources' for a driver error the user must act on."""
    code = getattr(dbapi_error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return _SQLITE_KINDS.get(code & 0xFF)
    sqlstate = getattr(dbapi_error, "sqlstate", None)
    if isinstance(sqlstate, str):
        return _PG_KINDS.get(sqlstate) or _PG_KINDS.get(sqlstate[:2])
    return None


def driver_message(dbapi_error: BaseException) -> str:
    """The driver's own first line, without statement, parameters or SQLAlchemy's links."""
    text = str(dbapi_error).strip()
    return text.splitlines()[0] if text else type(dbapi_error).__name__


def error_text(exc: BaseException | None) -> str:
    """`exc` told without the data it may carry (see the module doc). The package's own errors
    are told as they are: their messages are written to hold no record data."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, ClevertimSyncError):
        return str(exc) or type(exc).__name__
    original = exc.orig if isinstance(exc, sa.exc.StatementError) and exc.orig is not None else exc
    return f"{type(original).__name__}: " + without_quotes(driver_message(original))


def install(engine: sa.Engine) -> None:
    """Raise `DatabaseFailure` instead of SQLAlchemy's error for the failures above."""

    @event.listens_for(engine, "handle_error", retval=True)
    def _translate(context: Any) -> BaseException | None:
        original = context.original_exception
        kind = failure_kind(original)
        if kind is None:
            return None
        return DatabaseFailure(kind, _where(engine), driver_message(original))


def _where(engine: sa.Engine) -> str:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return str(url.database or "SQLite in memory")
    return url.render_as_string(hide_password=True)
