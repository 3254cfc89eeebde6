"""reports: everyday reporting views and full-text search over notes, contacts and companies

Views (same names and columns on SQLite and PostgreSQL; `clevertim_sync.reports` lists them):
  report_contacts           each contact with its company, primary (first) email and phone
  report_pipeline           opportunities by status and currency: count and total value
  report_open_tasks         tasks neither completed nor deleted, by assigned user, overdue first
  report_customer_activity  per contact/company: notes, tasks, open tasks, last note, last contacted
  report_custom_values      one row per record and custom field, with the field's name
  report_changes            history, newest first: filter with `WHERE at >= ...`

Full-text search:
  SQLite      FTS5 external-content tables notes_fts, contacts_fts, companies_fts, kept current
              by AFTER INSERT/DELETE/UPDATE OF <indexed columns> triggers (an update that leaves
              the text alone, the common case in a pull, costs nothing extra).
  PostgreSQL  GIN expression indexes on to_tsvector('simple', ...) of the same columns; queries use
              the identical expressions (clevertim_sync.reports.SEARCH_DOCUMENTS). No column is
              added to the mirror's tables, so the pull's bulk writes are untouched.

Self-contained on purpose: a migration must not change when application code does.

Revision ID: 0003_reports
Revises: 0002_writeback_queue
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0003_reports"
down_revision = "0002_writeback_queue"
branch_labels = None
depends_on = None

FULL_NAME = "TRIM(COALESCE({t}.first_name, '') || ' ' || COALESCE({t}.last_name, ''))"
NOT_DONE = "NOT COALESCE({t}.is_completed, FALSE) AND NOT COALESCE({t}.is_deleted, FALSE)"

# The searchable text of each table: (table, fts table, columns).
FTS = (
    ("notes", "notes_fts", ("headline", "body")),
    ("contacts", "contacts_fts", ("first_name", "last_name", "title", "description", "city")),
    ("companies", "companies_fts", ("name", "description", "city")),
)

VIEWS = (
    "report_changes",
    "report_custom_values",
    "report_customer_activity",
    "report_open_tasks",
    "report_pipeline",
    "report_contacts",
)


def _contacts() -> str:
    return f"""
CREATE VIEW report_contacts AS
SELECT c.id AS contact_id,
       {FULL_NAME.format(t="c")} AS name,
       c.title,
       c.company_id,
       co.name AS company,
       (SELECT e.value FROM contact_emails e WHERE e.owner_id = c.id ORDER BY e.position LIMIT 1) AS email,
       (SELECT p.number FROM contact_phones p WHERE p.owner_id = c.id ORDER BY p.position LIMIT 1) AS phone,
       c.city,
       c.country,
       c.customer_type,
       c.modified_at
FROM contacts c
LEFT JOIN companies co ON co.id = c.company_id
"""


def _pipeline(sqlite: bool) -> str:
    # SQLite keeps the exact decimal as text; its SUM works on numbers (so this total is a float).
    value = "CAST(o.value AS NUMERIC)" if sqlite else "o.value"
    return f"""
CREATE VIEW report_pipeline AS
SELECT o.status,
       o.currency,
       COUNT(*) AS opportunities,
       COALESCE(SUM({value}), 0) AS total_value
FROM opportunities o
GROUP BY o.status, o.currency
"""


def _open_tasks(sqlite: bool) -> str:
    now = "strftime('%Y-%m-%d %H:%M:%f', 'now')" if sqlite else "now()"
    return f"""
CREATE VIEW report_open_tasks AS
SELECT t.assigned_user_id,
       u.name AS assigned_user,
       t.id AS task_id,
       t.name AS task,
       t.activity_type,
       COALESCE(t.end_at, t.start_at) AS due_at,
       CASE WHEN COALESCE(t.end_at, t.start_at) < {now} THEN TRUE ELSE FALSE END AS overdue,
       t.customer_id
FROM tasks t
LEFT JOIN users u ON u.id = t.assigned_user_id
WHERE {NOT_DONE.format(t="t")}
ORDER BY u.name, overdue DESC, due_at, t.id
"""


def _customer_activity() -> str:
    return f"""
CREATE VIEW report_customer_activity AS
WITH customers AS (
    SELECT c.id, 'contact' AS kind, {FULL_NAME.format(t="c")} AS name, c.last_contacted_at FROM contacts c
    UNION ALL
    SELECT co.id, 'company' AS kind, co.name, co.last_contacted_at FROM companies co
)
SELECT cu.id AS customer_id,
       cu.kind,
       cu.name,
       (SELECT COUNT(*) FROM notes n WHERE n.customer_id = cu.id) AS notes,
       (SELECT MAX(n.added_at) FROM notes n WHERE n.customer_id = cu.id) AS last_note_at,
       (SELECT COUNT(*) FROM tasks t WHERE t.customer_id = cu.id AND NOT COALESCE(t.is_deleted, FALSE)) AS tasks,
       (SELECT COUNT(*) FROM tasks t WHERE t.customer_id = cu.id AND {NOT_DONE.format(t="t")}) AS open_tasks,
       cu.last_contacted_at
FROM customers cu
"""


def _custom_values(sqlite: bool) -> str:
    parts = []
    for resource, table, name in (
        ("contact", "contacts", FULL_NAME.format(t="r")),
        ("company", "companies", "r.name"),
        ("opportunity", "opportunities", "r.name"),
        ("case", "cases", "r.name"),
    ):
        values = f"{resource}_custom_values"
        if sqlite:  # group_concat follows the order of its (ordered) input
            source = f"(SELECT * FROM {values} ORDER BY owner_id, custom_field_id, position) v"
            agg = "group_concat(v.value, ', ')"
        else:
            source = f"{values} v"
            agg = "string_agg(v.value, ', ' ORDER BY v.position)"
        parts.append(f"""
SELECT '{resource}' AS resource, v.owner_id AS record_id, {name} AS record_name,
       v.custom_field_id, f.name AS field_name, {agg} AS value
FROM {source}
LEFT JOIN custom_fields f ON f.id = v.custom_field_id
LEFT JOIN {table} r ON r.id = v.owner_id
GROUP BY v.owner_id, v.custom_field_id, f.name, {name}""")
    return "CREATE VIEW report_custom_values AS" + "\nUNION ALL".join(parts) + "\n"


def _changes() -> str:
    return """
CREATE VIEW report_changes AS
SELECT h.at, h.resource, h.record_id, h.op, h.origin, h.changed, h.run_id, h.id AS history_id
FROM history h
ORDER BY h.at DESC, h.id DESC
"""


def _sqlite_fts() -> None:
    for table, fts, cols in FTS:
        col_list = ", ".join(cols)
        new = ", ".join(f"new.{c}" for c in cols)
        old = ", ".join(f"old.{c}" for c in cols)
        op.execute(
            f"CREATE VIRTUAL TABLE {fts} USING fts5({col_list}, content='{table}', content_rowid='id')"
        )
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
        op.execute(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")  # rows already mirrored


def _postgres_fts() -> None:
    for table, fts, cols in FTS:
        document = " || ' ' || ".join(f"COALESCE({c}, '')" for c in cols)
        op.execute(f"CREATE INDEX ix_{fts} ON {table} USING gin (to_tsvector('simple', {document}))")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute(_contacts())
    op.execute(_pipeline(sqlite))
    op.execute(_open_tasks(sqlite))
    op.execute(_customer_activity())
    op.execute(_custom_values(sqlite))
    op.execute(_changes())
    op.create_index("ix_history_at", "history", ["at"])
    if sqlite:
        _sqlite_fts()
    else:
        _postgres_fts()


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for _table, fts, _cols in FTS:
        if sqlite:
            for suffix in ("ai", "ad", "au"):
                op.execute(f"DROP TRIGGER IF EXISTS {fts}_{suffix}")
            op.execute(f"DROP TABLE IF EXISTS {fts}")
        else:
            op.execute(f"DROP INDEX IF EXISTS ix_{fts}")
    op.drop_index("ix_history_at", "history")
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
