"""The full-text index kept in bulk by mirror/search.py (migration 0004 dropped the triggers).

On SQLite each step is checked two ways: FTS5's own 'integrity-check' against the content table
(an index entry missing, extra, or left over from an old version fails it) and a search by word.
On PostgreSQL (GIN expression indexes) the searches alone: the same code must stay correct there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.backup import archive as bk
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import search, store
from clevertim_sync.mirror.db import make_engine, upgrade
from clevertim_sync.pull.diff import compute_changes
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.reporting import reports
from clevertim_sync.writeback.fold import Fold, fold_many

EMULATOR_TOKEN = "test-token"  # the `emulator` fixture's owner token


def pull_ok(engine: sa.Engine, emulator: EmulatorServer) -> None:
    with ClevertimClient(emulator.base_url, EMULATOR_TOKEN) as client:
        report = pull(engine, client)
    assert report.ok, report.resources


def assert_index_true(engine: sa.Engine) -> None:
    """FTS5 compares every index entry with the content table's current values (SQLite)."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        for _table, fts, _cols in search.FTS.values():
            conn.exec_driver_sql(f"INSERT INTO {fts}({fts}, rank) VALUES ('integrity-check', 1)")
            assert conn.exec_driver_sql(f"SELECT count(*) FROM {fts}").scalar_one() >= 0


def note_hits(engine: sa.Engine, words: str) -> list[int]:
    return [h.record_id for h in reports.search(engine, words) if h.kind == "note"]


def test_the_columns_are_the_ones_reports_search(mirror_engine: sa.Engine) -> None:
    by_kind = {kind: (table, fts, cols) for kind, table, fts, _title, cols in reports.SEARCH_DOCUMENTS}
    assert by_kind == search.FTS


def test_migration_0004_leaves_no_trigger_and_keeps_the_index(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine, "0003_reports")
    with engine.begin() as conn:
        assert not search.maintained(conn, "note")  # the triggers still do it: upkeep would double
        conn.exec_driver_sql(
            "INSERT INTO notes (id, headline, raw, content_hash) VALUES (1, 'kilimanjaro', '{}', 'x')"
        )
    upgrade(engine)
    with engine.connect() as conn:
        triggers = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'").scalars()
        assert not [t for t in triggers if "_fts_" in t]
        assert search.maintained(conn, "note") and not search.maintained(conn, "task")
    assert note_hits(engine, "kilimanjaro") == [1]  # indexed by the 0003 trigger, kept by 0004
    assert_index_true(engine)
    engine.dispose()


def test_first_pull_updates_and_deletes_keep_search_current(
    mirror_engine: sa.Engine, emulator: EmulatorServer
) -> None:
    engine = mirror_engine
    pull_ok(engine, emulator)  # a first load: the index is built once at the end
    assert_index_true(engine)
    contact = emulator.control.state()["contact"][0]
    assert any(h.record_id == contact["id"] for h in reports.search(engine, contact["fn"]))

    note = emulator.control.create(
        "note", {"desc": "the Zanzibar renewal", "type": "N", "cust": contact["id"]}
    )
    emulator.control.update("contact", contact["id"], {"fn": "Quetzalcoatl"})
    pull_ok(engine, emulator)  # an insert and an update into non-empty tables: per chunk
    assert_index_true(engine)
    assert note_hits(engine, "zanzibar renewal") == [note["id"]]
    hits = [(h.kind, h.record_id) for h in reports.search(engine, "quetzalcoatl")]
    assert hits == [("contact", contact["id"])]

    emulator.control.update("note", note["id"], {"desc": "the Mombasa renewal"})
    pull_ok(engine, emulator)
    assert_index_true(engine)
    assert note_hits(engine, "zanzibar") == [] and note_hits(engine, "mombasa") == [note["id"]]

    emulator.control.delete("note", note["id"])
    pull_ok(engine, emulator)
    assert_index_true(engine)
    assert note_hits(engine, "mombasa") == []


def test_a_touch_leaves_the_index_alone(mirror_engine: sa.Engine, emulator: EmulatorServer) -> None:
    pull_ok(mirror_engine, emulator)
    note = emulator.control.state()["note"][0]
    emulator.control.update("note", note["id"], {}, bump_lm=True)  # only lm moves
    pull_ok(mirror_engine, emulator)
    assert_index_true(mirror_engine)


def test_the_writeback_fold_keeps_search_current(mirror_engine: sa.Engine) -> None:
    engine = mirror_engine
    note: dict[str, Any] = {"id": 501, "desc": "Serengeti pricing", "type": "N", "lm": "2026-01-01T00:00:00Z"}
    with engine.begin() as conn:
        fold_many(conn, [Fold("note", note, "insert", 1)])
    assert note_hits(engine, "serengeti") == [501]
    with engine.begin() as conn:
        changed = {**note, "desc": "Kalahari pricing"}
        fold_many(conn, [Fold("note", changed, "update", 2)])
    assert note_hits(engine, "serengeti") == [] and note_hits(engine, "kalahari") == [501]
    assert_index_true(engine)
    with engine.begin() as conn:
        fold_many(conn, [Fold("note", {"id": 501}, "delete", 3)])
    assert note_hits(engine, "kalahari") == []
    assert_index_true(engine)


def test_a_first_load_over_a_stale_index_rebuilds_it(sqlite_url: str) -> None:
    """A first load into an empty table rebuilds the index from the table, so an index left
    inconsistent (rows deleted by hand, no trigger to take them out) cannot survive it."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
    notes = [{"id": i, "desc": f"note {i} Timbuktu", "type": "N"} for i in (1, 2)]
    with engine.begin() as conn:
        store.apply_changes(conn, "note", compute_changes("note", notes, {}), run_id=None, at=store.now())
        conn.exec_driver_sql("DELETE FROM notes")  # by hand: the index still lists 1 and 2
    with engine.begin() as conn:
        store.apply_changes(conn, "note", compute_changes("note", notes[:1], {}), run_id=None, at=store.now())
    assert note_hits(engine, "timbuktu") == [1]
    assert_index_true(engine)
    engine.dispose()


def test_a_logical_restore_into_sqlite_is_searchable(
    mirror_engine: sa.Engine, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Rows copied in by a restore (SQLite or PostgreSQL source) get their index rebuilt."""
    pull_ok(mirror_engine, emulator)
    with mirror_engine.connect() as conn:
        note_id, headline = conn.execute(sa.text("SELECT id, headline FROM notes ORDER BY id")).first() or (
            0,
            "",
        )
    word = max(headline.split(), key=len)
    # From PostgreSQL a logical dump whose rows are copied in; from SQLite the file itself.
    method = "logical" if mirror_engine.dialect.name == "postgresql" else "auto"
    taken = bk.backup(mirror_engine, tmp_path / "b", method=method)
    target_url = f"sqlite:///{tmp_path / 'restored.sqlite3'}"
    bk.restore(taken.path, target_url)
    target = make_engine(target_url)
    assert note_id in note_hits(target, word)
    assert_index_true(target)
    target.dispose()


def test_a_bulk_first_load_leaves_the_schema_as_it_was(sqlite_url: str) -> None:
    """More than a chunk into an empty table: its secondary indexes are dropped and created again
    inside the transaction; afterwards sqlite_master is exactly as before and the indexes work."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
    catalog = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
    with engine.connect() as conn:
        before = conn.exec_driver_sql(catalog).all()
    contacts = [
        {"id": i, "fn": f"Name{i}", "companyId": 7, "cf": {"3": ["a", "b"]}, "tags": ["t"]}
        for i in range(1, store.CHUNK * 2 + 2)
    ]
    with engine.begin() as conn:
        changes = compute_changes("contact", contacts, {})
        store.apply_changes(conn, "contact", changes, run_id=None, at=store.now())
    with engine.connect() as conn:
        assert conn.exec_driver_sql(catalog).all() == before
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN SELECT id FROM contacts WHERE company_id = 7").all()
        assert "ix_contacts_company_id" in str(plan)
        assert conn.exec_driver_sql("SELECT count(*) FROM contacts WHERE company_id = 7").scalar_one() == len(
            contacts
        )
        count = "SELECT count(*) FROM contact_custom_values WHERE custom_field_id = 3"
        assert conn.exec_driver_sql(count).scalar_one() == 2 * len(contacts)
    assert_index_true(engine)
    engine.dispose()
