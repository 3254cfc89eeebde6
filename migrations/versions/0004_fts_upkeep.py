"""full-text upkeep in bulk: drop the per-row FTS5 triggers of 0003 on SQLite

From this revision on, clevertim_sync.mirror.search keeps notes_fts, contacts_fts and
companies_fts current with one statement per chunk of written ids, called by every writer of
notes, contacts and companies (the pull, the writeback fold, a restore). The triggers cost a
first sync about as much CPU as everything else it writes. The FTS tables and their contents stay
as they are (they were current when the triggers went). PostgreSQL: nothing changes (GIN
expression indexes).

Self-contained on purpose: a migration must not change when application code does.

Revision ID: 0004_fts_upkeep
Revises: 0003_reports
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0004_fts_upkeep"
down_revision = "0003_reports"
branch_labels = None
depends_on = None

# (table, fts table, indexed columns), as in 0003.
FTS = (
    ("notes", "notes_fts", ("headline", "body")),
    ("contacts", "contacts_fts", ("first_name", "last_name", "title", "description", "city")),
    ("companies", "companies_fts", ("name", "description", "city")),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for _table, fts, _cols in FTS:
        for suffix in ("ai", "ad", "au"):
            op.execute(f"DROP TRIGGER IF EXISTS {fts}_{suffix}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, fts, cols in FTS:
        col_list = ", ".join(cols)
        new = ", ".join(f"new.{c}" for c in cols)
        old = ", ".join(f"old.{c}" for c in cols)
        op.execute(
            f"CREATE TRIGGER {fts}_ai AFTER INSERT ON {table} BEGIN "
            f"INSERT INTO {fts}(rowid, {col_list}) VALUES (new.id, {new}); END"
        )
        op.execute(
            f"CREATE TRIGGER {fts}_ad AFTER DELETE ON {table} BEGIN "
            f"INSERT INTO {fts}({fts}, rowid, {col_list}) VALUES ('delete', old.id, {old}); END"
        )
        op.execute(
            f"CREATE TRIGGER {fts}_au AFTER UPDATE OF id, {col_list} ON {table} BEGIN "
            f"INSERT INTO {fts}({fts}, rowid, {col_list}) VALUES ('delete', old.id, {old}); "
            f"INSERT INTO {fts}(rowid, {col_list}) VALUES (new.id, {new}); END"
        )
