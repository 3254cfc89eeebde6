"""The server-wide pause's row: every statement on `writeback_pause` (its columns: schema.py).

Owns: reading, setting (never shortening) and clearing the one row that says "no request to the
server before T". Whether and how long to pause is `health`'s decision (`ServerHealth`, which
reaches this module through `PauseRow`); nothing else reads or writes the row (the queue's rules
that depend on it, `outbox.stuck` and `newest_due`, are handed the pause by their callers, who ask
a `ServerHealth`). Who may build a `PauseRow` is an import-linter contract in pyproject.toml.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from clevertim_sync.health import Pause
from clevertim_sync.mirror.db import reading
from clevertim_sync.mirror.schema import writeback_pause

Bind = Engine | Connection
SERVER_SCOPE = "server"


@contextmanager
def _transaction(bind: Bind) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.begin() as conn:
            yield conn


def get(bind: Bind) -> Pause | None:
    with _transaction(bind) as conn:
        row = conn.execute(sa.select(writeback_pause).where(writeback_pause.c.scope == SERVER_SCOPE)).first()
    return Pause(row.not_before, row.failures, row.reason) if row else None


def put(bind: Bind, pause: Pause, now: datetime) -> None:
    """No request before `pause.not_before`. Never shortens a pause already set.

    One upsert: worker threads meeting the same outage set it at the same moment, and on
    PostgreSQL a read-then-insert let two of them insert (a unique violation mid-push)."""
    t = writeback_pause
    # The dialect's own insert (for its ON CONFLICT), imported here: PostgreSQL's dialect module
    # costs a SQLite mirror's every command 20 ms and a few MB.
    dialect = "postgresql" if bind.dialect.name == "postgresql" else "sqlite"
    upsert: Any = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert
    values = {
        "not_before": pause.not_before,
        "failures": pause.failures,
        "reason": pause.reason,
        "updated_at": now,
    }
    stmt = upsert(t).values(scope=SERVER_SCOPE, **values)
    asked = stmt.excluded.not_before
    later = sa.case((asked > t.c.not_before, asked), else_=t.c.not_before)
    stmt = stmt.on_conflict_do_update(index_elements=[t.c.scope], set_={**values, "not_before": later})
    with _transaction(bind) as conn:
        conn.execute(stmt)


def clear(bind: Bind) -> None:
    with _transaction(bind) as conn:
        conn.execute(sa.delete(writeback_pause).where(writeback_pause.c.scope == SERVER_SCOPE))


class PauseRow:
    """`health.PauseStore` on a mirror's database: an Engine (a transaction per statement) or the
    caller's Connection (its transaction). `read_only` (a dry run, the health check): read, never
    changed; on an Engine read through a reader (`mirror.db.reading`: no write transaction)."""

    def __init__(self, bind: Bind, *, read_only: bool = False) -> None:
        self.bind = bind
        self.read_only = read_only

    def get(self) -> Pause | None:
        if self.read_only and isinstance(self.bind, Engine):
            with reading(self.bind) as conn:
                return get(conn)
        return get(self.bind)

    def set(self, pause: Pause, now: datetime) -> None:
        if not self.read_only:
            put(self.bind, pause, now)

    def clear(self) -> None:
        if not self.read_only:
            clear(self.bind)
