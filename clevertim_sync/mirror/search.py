"""Upkeep of SQLite's full-text index (FTS5) over notes, contacts and companies, in bulk.

Owns: which tables are searchable and by which columns (the live copy; migration 0003 froze its
own), and the statements that keep the external-content FTS5 tables `notes_fts`, `contacts_fts`,
`companies_fts` equal to their tables. Since migration 0004 no trigger does this per row: every
writer of those tables calls these functions around its bulk writes, one statement per chunk of
ids (mirror/store.py for the pull and the writeback fold, backup.py after a restore).

External content means the index keeps no copy of the text: to take a row out, FTS5 must be given
the values it indexed. So `forget` runs BEFORE the row is rewritten or deleted (it reads them from
the table), `index` AFTER the new row is written.

PostgreSQL needs none of this: its GIN expression indexes (migration 0003) are kept by the
database itself. Every function here is a no-op there, and on a SQLite mirror migrated to a
revision without these tables (0001/0002) or still with the 0003 triggers (upkeep would then
index twice).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

# resource -> (table, fts table, indexed columns). Same columns as migration 0003's FTS and
# reports.SEARCH_DOCUMENTS.
FTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "note": ("notes", "notes_fts", ("headline", "body")),
    "contact": ("contacts", "contacts_fts", ("first_name", "last_name", "title", "description", "city")),
    "company": ("companies", "companies_fts", ("name", "description", "city")),
}


def maintained(conn: sa.Connection, resource: str) -> bool:
    """True when `resource`'s full-text index is this module's job on this connection's database."""
    if conn.dialect.name != "sqlite" or resource not in FTS:
        return False
    _table, fts, _cols = FTS[resource]
    names = set(
        conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE name IN (?, ?)", (fts, f"{fts}_ai")
        ).scalars()
    )
    return names == {fts}  # the FTS table, and no 0003 trigger keeping it


def _ids_sql(ids: Sequence[int]) -> str:
    return ", ".join(["?"] * len(ids))


def forget(conn: sa.Connection, resource: str, ids: Sequence[int]) -> None:
    """Take the rows `ids` (as currently stored) out of the index; call before rewriting them."""
    if not ids:
        return
    table, fts, cols = FTS[resource]
    col_list = ", ".join(cols)
    conn.exec_driver_sql(
        f"INSERT INTO {fts}({fts}, rowid, {col_list}) "  # noqa: S608 registry names
        f"SELECT 'delete', id, {col_list} FROM {table} WHERE id IN ({_ids_sql(ids)})",
        tuple(ids),
    )


def index(conn: sa.Connection, resource: str, ids: Sequence[int]) -> None:
    """Add the rows `ids` (just written) to the index."""
    if not ids:
        return
    table, fts, cols = FTS[resource]
    col_list = ", ".join(cols)
    conn.exec_driver_sql(
        f"INSERT INTO {fts}(rowid, {col_list}) "  # noqa: S608 registry names
        f"SELECT id, {col_list} FROM {table} WHERE id IN ({_ids_sql(ids)})",
        tuple(ids),
    )


def rebuild(conn: sa.Connection, resource: str) -> None:
    """Rebuild `resource`'s whole index from its table (a first load, a restore)."""
    _table, fts, _cols = FTS[resource]
    conn.exec_driver_sql(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")  # noqa: S608 registry names


def rebuild_all(conn: sa.Connection) -> list[str]:
    """Rebuild every index this module maintains on this database; returns the resources rebuilt."""
    done = [name for name in FTS if maintained(conn, name)]
    for name in done:
        rebuild(conn, name)
    return done
