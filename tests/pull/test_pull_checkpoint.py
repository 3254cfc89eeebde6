"""The pull's WAL checkpoints on a thread of its own (SQLite): the connection setting it turns off
for its transactions is put back on every pooled connection, also after an error."""

from __future__ import annotations

import sqlalchemy as sa

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import store
from clevertim_sync.mirror.db import make_engine, upgrade
from clevertim_sync.pull.pipeline import pull


def autocheckpoint(conn: sa.Connection) -> int:
    # On the driver's connection: through SQLAlchemy the PRAGMA would begin (IMMEDIATE) a transaction.
    raw = conn.connection.driver_connection
    assert raw is not None
    return int(raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def test_pull_leaves_autocheckpoint_on(sqlite_url: str, emulator: EmulatorServer) -> None:
    engine = make_engine(sqlite_url, busy_timeout=5)
    upgrade(engine)
    with ClevertimClient(emulator.base_url, "test-token") as client:
        assert pull(engine, client).ok
    for _ in range(3):  # every pooled connection, not only the one handed out first
        with engine.connect() as a, engine.connect() as b:
            for conn in (a, b):
                assert autocheckpoint(conn) == 1000
    engine.dispose()


def test_checkpoint_deferred_puts_the_setting_back_after_an_error(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    with engine.connect() as conn:
        try:
            with store.checkpoint_deferred(conn), conn.begin():
                assert autocheckpoint(conn) == 0
                raise sa.exc.OperationalError("x", {}, Exception("boom"))
        except sa.exc.OperationalError:
            pass
        assert autocheckpoint(conn) == 1000
    engine.dispose()
