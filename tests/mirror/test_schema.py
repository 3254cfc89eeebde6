"""The migration creates exactly the tables schema.py describes, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from clevertim_sync import resources
from clevertim_sync.errors import MirrorError
from clevertim_sync.mirror import db, schema


def _mirror_diffs(engine: sa.Engine) -> list[object]:
    mine = set(schema.CURRENT.values()) | set(schema.CHILDREN.values())
    mine |= {schema.history, schema.runs, schema.resource_status, schema.contact_photos}
    names = {t.name for t in mine}
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                # Other areas' tables share the metadata: compare only the mirror's, on both sides.
                "include_name": lambda name, type_, parent: type_ != "table" or name in names,
                "include_object": lambda obj, name, type_, reflected, compare_to: (
                    type_ != "table" or name in names
                ),
            },
        )
        diffs = compare_metadata(ctx, schema.metadata)
    # Later migrations (reports) may add indexes and triggers of their own to these tables.
    return [d for d in diffs if not (isinstance(d, tuple) and d[0] == "remove_index")]


def test_upgrade_creates_the_schema_and_is_idempotent(database_url: str) -> None:
    engine = db.make_engine(database_url)
    try:
        db.upgrade(engine)
        db.upgrade(engine)  # at head already: nothing to do, no error
        assert db.current_revision(engine) is not None
        assert _mirror_diffs(engine) == []
        tables = set(sa.inspect(engine).get_table_names())
        assert {r.table for r in resources.RESOURCES} <= tables
        assert {"history", "runs", "resource_status", "contact_emails", "contact_custom_values"} <= tables
    finally:
        engine.dispose()


def test_the_head_read_from_the_files_is_alembics_and_at_head_no_migration_runs(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command upgrades first: at head it must not even import alembic's runner (start-up
    time), and the head it compares with is the one alembic would reach."""
    assert db.head_revision() == ScriptDirectory.from_config(db.alembic_config()).get_current_head()
    engine = db.make_engine(database_url)
    try:
        db.upgrade(engine)
        assert db.current_revision(engine) == db.head_revision()

        def refuse(*_args: object, **_kw: object) -> None:
            raise AssertionError("alembic ran although the database is at head")

        monkeypatch.setattr(command, "upgrade", refuse)
        db.upgrade(engine)
    finally:
        engine.dispose()


def test_upgrade_from_a_url_string(sqlite_url: str) -> None:
    db.upgrade(sqlite_url)
    engine = db.make_engine(sqlite_url)
    try:
        assert db.current_revision(engine) == "0001_mirror" or db.current_revision(engine)
    finally:
        engine.dispose()


def test_sqlite_is_tuned(sqlite_url: str) -> None:
    engine = db.make_engine(sqlite_url, busy_timeout=7)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA page_size").scalar() == 16384  # a new database
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -2048
    finally:
        engine.dispose()


def test_timestamps_and_decimals_round_trip_exactly(database_url: str) -> None:
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    opp = schema.CURRENT["opportunity"]
    plus2 = timezone(timedelta(hours=2))
    value = Decimal("12345678901234.5678")
    try:
        with engine.begin() as conn:
            conn.execute(
                opp.insert(),
                [
                    {
                        "id": 1,
                        "value": value,
                        "added_at": datetime(2017, 1, 2, 7, 22, 12, tzinfo=plus2),
                        "raw": "{}",
                        "content_hash": "h",
                    },
                    {"id": 2, "value": None, "added_at": None, "raw": "{}", "content_hash": "h"},
                ],
            )
        with engine.connect() as conn:
            rows = conn.execute(sa.select(opp.c.id, opp.c.value, opp.c.added_at).order_by(opp.c.id)).all()
        assert rows[0].value == value
        assert rows[0].added_at == datetime(2017, 1, 2, 5, 22, 12, tzinfo=UTC)
        assert rows[0].added_at.tzinfo is not None
        assert rows[1].value is None and rows[1].added_at is None
    finally:
        engine.dispose()


def test_unsupported_database_is_a_clear_error() -> None:
    with pytest.raises(MirrorError, match="unsupported database"):
        db.make_engine("mysql://u@localhost/x")
