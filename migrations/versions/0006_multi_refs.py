"""multi-valued references: child tables with every id, and the activity view counting by them

A note can be filed under several contacts and companies (`"cust": [33, 43]`), and the vendor's
client models task cust/case/opp and comment nid/tid the same way. Each such reference gets a child
table `<table>(owner_id, position, <column>)` holding every id; the scalar column keeps the id when
the reference holds exactly one, else NULL. The tables are filled from what is already mirrored
(the scalar column, or the raw record's list), so nothing waits for the next change of a record.

report_customer_activity counts a note or task filed under several customers for each of them.

Booleans a server sent as 0/1, "0"/"1" or "true"/"false" were stored NULL before (completed tasks
read as open); the rows already mirrored get their boolean columns from `raw` here, since an
unchanged record is not rewritten by a pull.

Self-contained on purpose: a migration must not change when application code does.

Revision ID: 0006_multi_refs
Revises: 0005_pipeline_total
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_multi_refs"
down_revision = "0005_pipeline_total"
branch_labels = None
depends_on = None

# (child table, owner table, api property, id column)
TABLES = (
    ("task_customers", "tasks", "cust", "customer_id"),
    ("task_cases", "tasks", "case", "case_id"),
    ("task_opportunities", "tasks", "opp", "opportunity_id"),
    ("note_customers", "notes", "cust", "customer_id"),
    ("note_cases", "notes", "case", "case_id"),
    ("note_opportunities", "notes", "opportunity", "opportunity_id"),
    ("comment_notes", "comments", "nid", "note_id"),
    ("comment_tasks", "comments", "tid", "task_id"),
)

# Every boolean column: (table, column, api property).
BOOLEANS = (
    ("custom_fields", "multiple", "multiple"),
    ("users", "is_owner", "is_owner"),
    ("users", "is_admin", "is_admin"),
    ("users", "pending", "pending"),
    ("companies", "is_company", "is_company"),
    ("contacts", "is_company", "is_company"),
    ("tasks", "is_completed", "is_completed"),
    ("tasks", "is_deleted", "is_deleted"),
    *(
        (table, "is_private", "is_private")
        for table in (
            "custom_fields", "users", "groups", "companies", "contacts",
            "opportunities", "cases", "tasks", "notes", "comments",
        )
    ),
)  # fmt: skip

FULL_NAME = "TRIM(COALESCE({t}.first_name, '') || ' ' || COALESCE({t}.last_name, ''))"
NOT_DONE = "NOT COALESCE({t}.is_completed, FALSE) AND NOT COALESCE({t}.is_deleted, FALSE)"


def _activity(by_child: bool) -> str:
    if by_child:  # one row per (record, customer); DISTINCT: a list may name a customer twice
        notes = "FROM notes n JOIN note_customers x ON x.owner_id = n.id WHERE x.customer_id = cu.id"
        tasks = "FROM tasks t JOIN task_customers x ON x.owner_id = t.id WHERE x.customer_id = cu.id"
        count_n, count_t = "COUNT(DISTINCT n.id)", "COUNT(DISTINCT t.id)"
    else:  # 0003's definition, for the downgrade
        notes = "FROM notes n WHERE n.customer_id = cu.id"
        tasks = "FROM tasks t WHERE t.customer_id = cu.id"
        count_n = count_t = "COUNT(*)"
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
       (SELECT {count_n} {notes}) AS notes,
       (SELECT MAX(n.added_at) {notes}) AS last_note_at,
       (SELECT {count_t} {tasks} AND NOT COALESCE(t.is_deleted, FALSE)) AS tasks,
       (SELECT {count_t} {tasks} AND {NOT_DONE.format(t="t")}) AS open_tasks,
       cu.last_contacted_at
FROM customers cu
"""


def _backfill(sqlite: bool, child: str, owner: str, api: str, column: str) -> None:
    if sqlite:
        is_list = f"json_type(o.raw, '$.\"{api}\"') = 'array'"
        from_list = f"""
INSERT INTO {child} (owner_id, position, {column})
SELECT o.id, CAST(j.key AS INTEGER), CAST(j.value AS INTEGER)
FROM {owner} o, json_each(o.raw, '$."{api}"') j
WHERE {is_list} AND (j.type = 'integer'
      OR (j.type = 'text' AND length(j.value) BETWEEN 1 AND 18 AND j.value NOT GLOB '*[^0-9]*'))"""
        not_list = f"COALESCE({is_list}, 0) = 0"
    else:
        value = f"(o.raw::jsonb -> '{api}')"
        from_list = f"""
INSERT INTO {child} (owner_id, position, {column})
SELECT o.id, e.ord - 1, e.v::bigint
FROM {owner} o, jsonb_array_elements_text(CASE WHEN jsonb_typeof({value}) = 'array' THEN {value} END)
     WITH ORDINALITY AS e(v, ord)
WHERE e.v ~ '^[0-9]{{1,18}}$'"""
        not_list = f"jsonb_typeof({value}) IS DISTINCT FROM 'array'"
    op.execute(from_list)
    op.execute(
        f"INSERT INTO {child} (owner_id, position, {column}) "
        f"SELECT o.id, 0, o.{column} FROM {owner} o WHERE o.{column} IS NOT NULL AND {not_list}"
    )


def _retype_booleans(sqlite: bool) -> None:
    """A NULL boolean column whose raw value is 0/1, "0"/"1", "true"/"false": typed now."""
    for table, column, api in BOOLEANS:
        if sqlite:  # json_extract gives JSON true as 1
            text = f"lower(trim(CAST(json_extract(raw, '$.\"{api}\"') AS TEXT)))"
            yes, no = "1", "0"
        else:
            text = f"lower(trim(raw::jsonb ->> '{api}'))"
            yes, no = "TRUE", "FALSE"
        op.execute(
            f"UPDATE {table} SET {column} = CASE WHEN {text} IN ('1', 'true') THEN {yes} "
            f"WHEN {text} IN ('0', 'false') THEN {no} END WHERE {column} IS NULL"
        )


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    _retype_booleans(sqlite)
    for child, owner, api, column in TABLES:
        op.create_table(
            child,
            sa.Column("owner_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column(column, sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("owner_id", "position", name=op.f(f"pk_{child}")),
            sqlite_with_rowid=False,
        )
        op.create_index(f"ix_{child}_{column}", child, [column])
        _backfill(sqlite, child, owner, api, column)
    op.execute("DROP VIEW report_customer_activity")
    op.execute(_activity(by_child=True))


def downgrade() -> None:
    op.execute("DROP VIEW report_customer_activity")
    op.execute(_activity(by_child=False))
    for child, _owner, _api, column in TABLES:
        op.drop_index(f"ix_{child}_{column}", child)
        op.drop_table(child)
