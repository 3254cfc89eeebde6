"""<table>_versions views: one row per version of a record, with when it was valid

For BI tools and plain SQL: "what did this opportunity look like on 1 March" becomes

    SELECT * FROM opportunities_versions
    WHERE record_id = 42 AND valid_from <= '2026-03-01' AND (valid_to IS NULL OR valid_to > '2026-03-01')

Each view reads `history` for one resource. `version` numbers a record's versions 1, 2, 3, ...
in the order they were recorded; `valid_to` is when the next version was recorded (NULL for the
latest). A deletion is a version too (op 'delete', raw = the record as last seen), valid until a
re-insert of the same id, if any: filter `op <> 'delete'` for the records that existed at t.
An lm-only change (a "touch") writes no history row, so it is no version.

Self-contained on purpose: a migration must not change when application code does (the list of
resources is written out; a new resource gets its view in its own migration).

Revision ID: 0007_versions
Revises: 0006_multi_refs
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0007_versions"
down_revision = "0006_multi_refs"
branch_labels = None
depends_on = None

# (resource as history names it, its current-state table): the view is <table>_versions.
RESOURCES = (
    ("customfield", "custom_fields"),
    ("user", "users"),
    ("group", "groups"),
    ("company", "companies"),
    ("contact", "contacts"),
    ("opportunity", "opportunities"),
    ("case", "cases"),
    ("task", "tasks"),
    ("note", "notes"),
    ("comment", "comments"),
)


def _view(resource: str, table: str) -> str:
    window = "OVER (PARTITION BY h.record_id ORDER BY h.id)"
    return f"""
CREATE VIEW {table}_versions AS
SELECT h.record_id,
       ROW_NUMBER() {window} AS version,
       h.at AS valid_from,
       LEAD(h.at) {window} AS valid_to,
       h.op,
       h.origin,
       h.run_id,
       h.queue_item_id,
       h.raw,
       h.changed,
       h.id AS history_id
FROM history h
WHERE h.resource = '{resource}'
"""


def upgrade() -> None:
    for resource, table in RESOURCES:
        op.execute(_view(resource, table))


def downgrade() -> None:
    for _resource, table in RESOURCES:
        op.execute(f"DROP VIEW IF EXISTS {table}_versions")
