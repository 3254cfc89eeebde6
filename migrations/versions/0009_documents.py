"""documents: folders, files, linked files, the records' links to them, contact photos, text ids

- `folders`, `files`, `linked_files`: the current state of /folder, /file, /linkedfile. Their ids
  are text ("f1001"), and so are the references to them (`files.parent_id -> folders.id`).
- `<owner>_files(owner_id, position, file_id)` and `<owner>_linked_files(..., linked_file_id)` for
  contacts, companies, cases, opportunities and notes: every id of a record's `files` and
  `lfiles` lists, as text (joins `files.id`, `linked_files.id`). Filled here from what is already
  mirrored (the raw record's lists), since an unchanged record is not rewritten by a pull.
- `history.record_key`: the id of a record whose ids are text; `history.record_id` becomes
  nullable (NULL for those). Every existing row keeps its record_id.
- `resource_status.unavailable`: why an endpoint is missing for this account or token.
- `contact_photos`: the photos fetched when `pull.photos` is on.
- Views: `folders_versions`, `files_versions`, `linked_files_versions` (as 0007's, by record_key),
  `report_documents` (documents per customer: attached to it, and on its notes, cases and
  opportunities; how many the mirror holds no record of), and `report_changes` gains `record_key`.

Self-contained on purpose: a migration must not change when application code does.

Revision ID: 0009_documents
Revises: 0008_alerts
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clevertim_sync.mirror.types import UtcDateTime

revision = "0009_documents"
down_revision = "0008_alerts"
branch_labels = None
depends_on = None

# (resource as history names it, table) of the text-id resources.
DOCUMENTS = (("folder", "folders"), ("file", "files"), ("linkedfile", "linked_files"))
# (owner prefix, owner table) of the records that carry `files` and `lfiles`.
OWNERS = (
    ("contact", "contacts"),
    ("company", "companies"),
    ("case", "cases"),
    ("opportunity", "opportunities"),
    ("note", "notes"),
)
# (child suffix, api list, id column)
LISTS = (("files", "files", "file_id"), ("linked_files", "lfiles", "linked_file_id"))


def _common() -> list[sa.Column[object]]:
    return [
        sa.Column("added_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("modified_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("is_private", sa.Boolean(), nullable=True),
        sa.Column("group_mask", sa.BigInteger(), nullable=True),
        sa.Column("private_user_id", sa.BigInteger(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=False, comment="the record exactly as the API sent it"),
        sa.Column("content_hash", sa.String(length=64), nullable=False, comment="record_hash(raw)"),
    ]


def _current(table: str, resource: str, columns: list[sa.Column[object]], indexed: list[str]) -> None:
    op.create_table(
        table,
        sa.Column("id", sa.Text(), autoincrement=False, nullable=False),
        *columns,
        *_common(),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
        comment=f"current state of /{resource}",
    )
    for column in [*indexed, "private_user_id"]:
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)


def _backfill(sqlite: bool, child: str, owner: str, api: str, column: str) -> None:
    """Every usable id of each mirrored record's list, as the row builder writes it: a string
    trimmed (an empty one left out) or an integer as its text, in sorted (byte) order."""
    if sqlite:
        op.execute(f"""
INSERT INTO {child} (owner_id, position, {column})
SELECT owner_id, ROW_NUMBER() OVER (PARTITION BY owner_id ORDER BY v) - 1, v
FROM (
    SELECT o.id AS owner_id, j.key AS k,
           CASE WHEN j.type = 'integer' THEN CAST(j.value AS TEXT) ELSE trim(j.value) END AS v
    FROM {owner} o, json_each(o.raw, '$."{api}"') j
    WHERE json_type(o.raw, '$."{api}"') = 'array' AND j.type IN ('integer', 'text')
) AS e
WHERE v <> ''""")  # noqa: S608 - fixed names
    else:
        value = f"(o.raw::jsonb -> '{api}')"
        op.execute(f"""
INSERT INTO {child} (owner_id, position, {column})
SELECT owner_id, ROW_NUMBER() OVER (PARTITION BY owner_id ORDER BY v COLLATE "C") - 1, v
FROM (
    SELECT o.id AS owner_id, e.ord,
           CASE WHEN jsonb_typeof(e.x) = 'number' THEN e.x #>> '{{}}' ELSE trim(e.x #>> '{{}}') END AS v
    FROM {owner} o,
         jsonb_array_elements(CASE WHEN jsonb_typeof({value}) = 'array' THEN {value} END)
         WITH ORDINALITY AS e(x, ord)
    WHERE jsonb_typeof(e.x) = 'string'
       OR (jsonb_typeof(e.x) = 'number' AND e.x #>> '{{}}' ~ '^-?[0-9]+$')
) AS e
WHERE v <> ''""")  # noqa: S608 - fixed names


def _versions(resource: str, table: str) -> str:
    window = "OVER (PARTITION BY h.record_key ORDER BY h.id)"
    return f"""
CREATE VIEW {table}_versions AS
SELECT h.record_key AS record_id,
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


def _changes(with_key: bool) -> str:
    key = ", h.record_key" if with_key else ""
    return f"""
CREATE VIEW report_changes AS
SELECT h.at, h.resource, h.record_id, h.op, h.origin, h.changed, h.run_id, h.id AS history_id{key}
FROM history h
ORDER BY h.at DESC, h.id DESC
"""


def _documents() -> str:
    """One row per contact or company with a document: attached to it (`files`, `lfiles`), on
    the notes filed under it, on its cases and opportunities; `not_mirrored` counts those the
    mirror holds no record of (hidden from this token, or the endpoint is missing)."""
    links = []
    for kind, column in (("file", "file_id"), ("linked_file", "linked_file_id")):
        child = f"{kind}s"  # contact_files, contact_linked_files, ...
        links += [
            f"SELECT x.owner_id AS customer_id, '{kind}' AS doc, x.{column} AS doc_id, 1 AS direct "
            f"FROM contact_{child} x",
            f"SELECT x.owner_id, '{kind}', x.{column}, 1 FROM company_{child} x",
            f"SELECT nc.customer_id, '{kind}', x.{column}, 0 "
            f"FROM note_customers nc JOIN note_{child} x ON x.owner_id = nc.owner_id",
            f"SELECT r.customer_id, '{kind}', x.{column}, 0 "
            f"FROM cases r JOIN case_{child} x ON x.owner_id = r.id WHERE r.customer_id IS NOT NULL",
            f"SELECT r.customer_id, '{kind}', x.{column}, 0 "
            f"FROM opportunities r JOIN opportunity_{child} x ON x.owner_id = r.id "
            "WHERE r.customer_id IS NOT NULL",
        ]
    union = "\n    UNION ALL\n    ".join(links)
    return f"""
CREATE VIEW report_documents AS
WITH links AS (
    {union}
),
customers AS (
    SELECT c.id, 'contact' AS kind, TRIM(COALESCE(c.first_name, '') || ' ' || COALESCE(c.last_name, '')) AS name
    FROM contacts c
    UNION ALL
    SELECT co.id, 'company' AS kind, co.name FROM companies co
)
SELECT cu.id AS customer_id,
       cu.kind,
       cu.name,
       COUNT(DISTINCT CASE WHEN d.direct = 1 AND d.doc = 'file' THEN d.doc_id END) AS files,
       COUNT(DISTINCT CASE WHEN d.direct = 1 AND d.doc = 'linked_file' THEN d.doc_id END) AS linked_files,
       COUNT(DISTINCT CASE WHEN d.direct = 0 THEN d.doc || ':' || d.doc_id END) AS on_records,
       COUNT(DISTINCT d.doc || ':' || d.doc_id) AS documents,
       COUNT(DISTINCT CASE WHEN f.id IS NULL AND l.id IS NULL THEN d.doc || ':' || d.doc_id END) AS not_mirrored
FROM customers cu
JOIN links d ON d.customer_id = cu.id
LEFT JOIN files f ON d.doc = 'file' AND f.id = d.doc_id
LEFT JOIN linked_files l ON d.doc = 'linked_file' AND l.id = d.doc_id
GROUP BY cu.id, cu.kind, cu.name
"""


def _history_record_id(nullable: bool, sqlite: bool) -> None:
    if not sqlite:
        op.alter_column("history", "record_id", existing_type=sa.BigInteger(), nullable=nullable)
        return
    # SQLite rebuilds the table to change a NOT NULL. Views read `history` by name: with the legacy
    # rename, the new table takes its place without SQLite re-checking (or rewriting) them.
    op.execute("PRAGMA legacy_alter_table = ON")
    try:
        with op.batch_alter_table("history", recreate="always") as batch:
            batch.alter_column("record_id", existing_type=sa.BigInteger(), nullable=nullable)
    finally:
        op.execute("PRAGMA legacy_alter_table = OFF")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    _current(
        "folders",
        "folder",
        [
            sa.Column("name", sa.Text(), nullable=True),
            sa.Column("parent_id", sa.Text(), nullable=True),
            sa.Column("is_dir", sa.Boolean(), nullable=True),
        ],
        ["parent_id"],
    )
    _current(
        "files",
        "file",
        [sa.Column("name", sa.Text(), nullable=True), sa.Column("parent_id", sa.Text(), nullable=True)],
        ["parent_id"],
    )
    _current(
        "linked_files",
        "linkedfile",
        [
            sa.Column("name", sa.Text(), nullable=True),
            sa.Column("system", sa.Text(), nullable=True),
            sa.Column("size", sa.BigInteger(), nullable=True),
            sa.Column("link", sa.Text(), nullable=True),
            sa.Column("icon", sa.Text(), nullable=True),
        ],
        [],
    )
    for prefix, owner in OWNERS:
        for suffix, api, column in LISTS:
            child = f"{prefix}_{suffix}"
            op.create_table(
                child,
                sa.Column("owner_id", sa.BigInteger(), autoincrement=False, nullable=False),
                sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
                sa.Column(column, sa.Text(), nullable=False),
                sa.PrimaryKeyConstraint("owner_id", "position", name=op.f(f"pk_{child}")),
                sqlite_with_rowid=False,
            )
            op.create_index(f"ix_{child}_{column}", child, [column])
            _backfill(sqlite, child, owner, api, column)

    op.execute("DROP VIEW report_changes")
    op.add_column(
        "history",
        sa.Column(
            "record_key", sa.Text(), nullable=True, comment="the id of a record whose ids are text (folders: f1001)"
        ),
    )
    _history_record_id(True, sqlite)
    if not sqlite:
        op.execute("COMMENT ON COLUMN history.record_id IS 'the record''s id; NULL for a text id (record_key)'")
    op.create_index("ix_history_resource_record_key", "history", ["resource", "record_key", "id"])
    op.execute(_changes(with_key=True))

    op.add_column(
        "resource_status",
        sa.Column(
            "unavailable",
            sa.Text(),
            nullable=True,
            comment="why the endpoint is missing for this account or token (404/400/501); NULL: available",
        ),
    )
    op.create_table(
        "contact_photos",
        sa.Column("contact_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("cphoto", sa.Text(), nullable=False, comment="the contact's cphoto this row is about"),
        sa.Column("content_type", sa.Text(), nullable=True),
        sa.Column(
            "content", sa.LargeBinary(), nullable=True, comment="the image's bytes; NULL until one fetch succeeded"
        ),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("fetched_at", UtcDateTime(timezone=True), nullable=True, comment="when `content` was fetched"),
        sa.Column("attempted_at", UtcDateTime(timezone=True), nullable=True, comment="the last fetch, ok or not"),
        sa.Column(
            "last_error",
            sa.Text(),
            nullable=True,
            comment="why the last fetch failed (retried at the next pull); NULL: ok",
        ),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_contact_photos")),
        comment="contact photos (pull.photos = true): /getcphoto/{contact id}/{cphoto}",
    )
    for resource, table in DOCUMENTS:
        op.execute(_versions(resource, table))
    op.execute(_documents())


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute("DROP VIEW IF EXISTS report_documents")
    for _resource, table in DOCUMENTS:
        op.execute(f"DROP VIEW IF EXISTS {table}_versions")
    op.drop_table("contact_photos")
    op.drop_column("resource_status", "unavailable")
    op.execute("DROP VIEW report_changes")
    op.drop_index("ix_history_resource_record_key", "history")
    op.execute("DELETE FROM history WHERE record_id IS NULL")  # text-id records: gone with their tables
    _history_record_id(False, sqlite)
    op.drop_column("history", "record_key")
    op.execute(_changes(with_key=False))
    for prefix, _owner in reversed(OWNERS):
        for suffix, _api, column in reversed(LISTS):
            child = f"{prefix}_{suffix}"
            op.drop_index(f"ix_{child}_{column}", child)
            op.drop_table(child)
    for _resource, table in reversed(DOCUMENTS):
        op.drop_table(table)
