"""report_open_tasks names every customer a task is filed under

A task's `cust` may hold several customers (0006 keeps them in `task_customers`); the view's
`customer_id` is the scalar column, NULL for such a task, so the report hid whom those tasks
were for. Two columns are added at the end, in the list's order:

  customer_ids  the ids, comma-separated ("33,43"), from task_customers
  customers     their names ("Ann Lee; Acme Ltd"), a contact's full name or a company's name

`customer_id` stays as it was, so queries written against 0003's view keep working.

SQLite before 3.44 has no ORDER BY inside an aggregate: there the ids are concatenated from a
subquery ordered by position, which SQLite's group_concat follows.

Self-contained on purpose: a migration must not change when application code does.

Revision ID: 0010_open_task_customers
Revises: 0009_documents
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0010_open_task_customers"
down_revision = "0009_documents"
branch_labels = None
depends_on = None

FULL_NAME = "TRIM(COALESCE({t}.first_name, '') || ' ' || COALESCE({t}.last_name, ''))"
NOT_DONE = "NOT COALESCE({t}.is_completed, FALSE) AND NOT COALESCE({t}.is_deleted, FALSE)"
# One row per (task, customer) with the customer's name: contacts and companies share ids.
TASK_CUSTOMERS = f"""
SELECT x.owner_id, x.position, x.customer_id,
       COALESCE(co.name, NULLIF({FULL_NAME.format(t="c")}, '')) AS name
FROM task_customers x
LEFT JOIN contacts c ON c.id = x.customer_id
LEFT JOIN companies co ON co.id = x.customer_id
"""


def _aggregates(sqlite: bool) -> str:
    if sqlite:
        ordered = f"(SELECT * FROM ({TASK_CUSTOMERS}) WHERE owner_id = t.id ORDER BY position)"
        ids = f"(SELECT group_concat(customer_id, ',') FROM {ordered})"
        names = f"(SELECT group_concat(COALESCE(name, '#' || customer_id), '; ') FROM {ordered})"
    else:
        rows = f"FROM ({TASK_CUSTOMERS}) x WHERE x.owner_id = t.id"
        ids = f"(SELECT string_agg(x.customer_id::text, ',' ORDER BY x.position) {rows})"
        names = f"(SELECT string_agg(COALESCE(x.name, '#' || x.customer_id), '; ' ORDER BY x.position) {rows})"
    return f"{ids} AS customer_ids,\n       {names} AS customers"


def _open_tasks(sqlite: bool, with_customers: bool) -> str:
    now = "strftime('%Y-%m-%d %H:%M:%f', 'now')" if sqlite else "now()"
    extra = f",\n       {_aggregates(sqlite)}" if with_customers else ""
    return f"""
CREATE VIEW report_open_tasks AS
SELECT t.assigned_user_id,
       u.name AS assigned_user,
       t.id AS task_id,
       t.name AS task,
       t.activity_type,
       COALESCE(t.end_at, t.start_at) AS due_at,
       CASE WHEN COALESCE(t.end_at, t.start_at) < {now} THEN TRUE ELSE FALSE END AS overdue,
       t.customer_id{extra}
FROM tasks t
LEFT JOIN users u ON u.id = t.assigned_user_id
WHERE {NOT_DONE.format(t="t")}
ORDER BY u.name, overdue DESC, due_at, t.id
"""


def _replace(with_customers: bool) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute("DROP VIEW IF EXISTS report_open_tasks")
    op.execute(_open_tasks(sqlite, with_customers))


def upgrade() -> None:
    _replace(with_customers=True)


def downgrade() -> None:
    _replace(with_customers=False)
