"""The one SQLAlchemy `metadata` of the project, and the mirror's tables on it.

Owns: the current-state table of every resource (derived from `clevertim_sync.resources`), their
child tables, `history`, `runs`, `resource_status` and `writeback_pause` (the server-wide pause).
Other areas (writeback queue, reports) put their tables on this same `metadata` in their own
modules; migrations are written out explicitly in migrations/versions (0001_mirror creates what
this module defines).

Relations, documented here because they are deliberately NOT foreign keys: a record may point at
a record this token cannot see (private to another user or group), and that dangling pointer must
be storable. So REF columns (`contacts.company_id -> companies.id`, `*.customer_id -> contacts.id
or companies.id` (one shared id space), `tasks.case_id -> cases.id`, `comments.note_id -> notes.id`,
`*_user_id -> users.id`, ...) are plain indexed BIGINTs, and child tables' `owner_id` is the
parent's `id` without a constraint either (they are rewritten in the same transaction as it).
A reference that may hold several ids (note cust, case, opportunity; task cust, case, opp;
comment nid, tid) also has a child table (`note_customers(owner_id, position, customer_id)`):
its scalar column is the id when the reference holds exactly one, else NULL.

Documents (`folders`, `files`, `linked_files`) have text ids ("f1001"), so their `id`, the
references to them (`files.parent_id -> folders.id`) and the child tables of a record's `files`
and `lfiles` lists (`contact_files(owner_id, position, file_id) -> files.id`,
`contact_linked_files(..., linked_file_id) -> linked_files.id`) are TEXT. In `history`, a
text-id record has `record_key` (its id) and a NULL `record_id`; every other record the reverse.
"""

from __future__ import annotations

import sqlalchemy as sa

from clevertim_sync import resources
from clevertim_sync.mirror.columns import all_day_column
from clevertim_sync.mirror.types import ExactDecimal, UtcDateTime
from clevertim_sync.resources import Kind, Prop, Resource

# Constraint and index names are spelled out so that migrations and both databases agree.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)

# An autoincrementing 64-bit key on PostgreSQL that is still SQLite's rowid alias.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Kinds kept only in `raw` (lists of ids, free JSON): the child tables or json functions serve them.
RAW_ONLY_KINDS = frozenset({Kind.INT_LIST, Kind.JSON})
CHILD_KINDS = frozenset({Kind.STR_LIST, Kind.PHONES, Kind.SMIDS, Kind.CUSTOM_FIELDS})


def _scalar_columns(prop: Prop) -> list[sa.Column[object]]:
    k = prop.kind
    if k is Kind.STR:
        return [sa.Column(prop.column, sa.Text)]
    if k is Kind.INT:
        return [sa.Column(prop.column, sa.BigInteger)]
    if k is Kind.REF:
        return [sa.Column(prop.column, sa.BigInteger, index=True)]
    if k is Kind.TEXT_REF:
        return [sa.Column(prop.column, sa.Text, index=True)]
    if k is Kind.BOOL:
        return [sa.Column(prop.column, sa.Boolean)]
    if k is Kind.DECIMAL:
        return [sa.Column(prop.column, ExactDecimal)]
    if k is Kind.TIMESTAMP:
        return [sa.Column(prop.column, UtcDateTime)]
    if k is Kind.DATE_PARTS:
        return [sa.Column(prop.column, UtcDateTime), sa.Column(all_day_column(prop), sa.Boolean)]
    return []


def _current_table(res: Resource) -> sa.Table:
    # INTEGER PRIMARY KEY on SQLite is the rowid itself: one b-tree instead of two.
    id_type = sa.Text() if res.text_ids else BigId
    cols: list[sa.Column[object]] = [sa.Column("id", id_type, primary_key=True, autoincrement=False)]
    for prop in res.props:
        if prop.kind not in RAW_ONLY_KINDS and prop.kind not in CHILD_KINDS:
            cols.extend(_scalar_columns(prop))
    cols.append(sa.Column("raw", sa.Text, nullable=False, comment="the record exactly as the API sent it"))
    cols.append(sa.Column("content_hash", sa.String(64), nullable=False, comment="record_hash(raw)"))
    return sa.Table(res.table, metadata, *cols, comment=f"current state of /{res.name}")


def _child_table(prop: Prop) -> sa.Table:
    assert prop.child_table is not None
    owner = sa.Column("owner_id", sa.BigInteger, primary_key=True, autoincrement=False)
    position = sa.Column("position", sa.Integer, primary_key=True, autoincrement=False)
    if prop.kind is Kind.STR_LIST:
        rest = [sa.Column("value", sa.Text, nullable=False)]
    elif prop.kind is Kind.PHONES:
        rest = [sa.Column("type", sa.Text), sa.Column("number", sa.Text)]
    elif prop.kind is Kind.SMIDS:
        rest = [sa.Column("type", sa.Text), sa.Column("social_id", sa.Text)]
    elif prop.kind is Kind.REF or prop.kind is Kind.INT_LIST:
        # INT_LIST: a record's `files`/`lfiles`, ids typed as the target's ids (text: documents).
        target = resources.BY_NAME.get(prop.target or "")
        id_type = sa.Text() if target is not None and target.text_ids else sa.BigInteger()
        # Every id of a reference that may hold several (note_customers.customer_id), indexed
        # like the scalar column: "the notes of customer 33" reads it.
        return sa.Table(
            prop.child_table,
            metadata,
            owner,
            position,
            sa.Column(prop.column, id_type, nullable=False),
            sa.Index(f"ix_{prop.child_table}_{prop.column}", prop.column),
            sqlite_with_rowid=False,
        )
    else:  # CUSTOM_FIELDS: one row per value; a multi-value field has several positions
        return sa.Table(
            prop.child_table,
            metadata,
            owner,
            sa.Column("custom_field_id", sa.BigInteger, primary_key=True, autoincrement=False),
            position,
            sa.Column("value", sa.Text),
            sa.Index(f"ix_{prop.child_table}_custom_field_id", "custom_field_id"),
            sqlite_with_rowid=False,
        )
    # WITHOUT ROWID: the (owner_id, position) key is the table, no second b-tree.
    return sa.Table(prop.child_table, metadata, owner, position, *rest, sqlite_with_rowid=False)


CURRENT: dict[str, sa.Table] = {}  # resource name -> its current-state table
CHILDREN: dict[tuple[str, str], sa.Table] = {}  # (resource name, api prop) -> child table
for _res in resources.RESOURCES:
    CURRENT[_res.name] = _current_table(_res)
    for _prop in _res.child_props:
        CHILDREN[(_res.name, _prop.api)] = _child_table(_prop)


runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False, comment="pull, push, backup, ..."),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("status", sa.String(16), nullable=False, comment="running, ok, partial, failed"),
    sa.Column("counts", sa.Text, comment="JSON {resource: {inserted, updated, deleted, ...}}"),
    sa.Column("error", sa.Text),
)

history = sa.Table(
    "history",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("resource", sa.String(32), nullable=False),
    sa.Column("record_id", sa.BigInteger, comment="the record's id; NULL for a text id (record_key)"),
    sa.Column("run_id", sa.BigInteger, comment="runs.id of the pull that saw it (null for local)"),
    sa.Column("origin", sa.String(8), nullable=False, comment="pull or local"),
    sa.Column("op", sa.String(8), nullable=False, comment="insert, update or delete"),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("raw", sa.Text, comment="this version of the record (the last one seen, for a delete)"),
    sa.Column("content_hash", sa.String(64)),
    sa.Column("changed", sa.Text, comment="JSON {api_field: [old, new]} for an update"),
    sa.Column("queue_item_id", sa.BigInteger, comment="the writeback queue item, for origin local"),
    sa.Column("record_key", sa.Text, comment="the id of a record whose ids are text (folders: f1001)"),
    sa.Index("ix_history_resource_record_id", "resource", "record_id", "id"),
    sa.Index("ix_history_resource_record_key", "resource", "record_key", "id"),
    sa.Index("ix_history_run_id", "run_id"),
)

resource_status = sa.Table(
    "resource_status",
    metadata,
    sa.Column("resource", sa.String(32), primary_key=True),
    sa.Column("last_run_id", sa.BigInteger),
    sa.Column("last_pull_at", UtcDateTime, comment="when the last pull of it finished, ok or not"),
    sa.Column("last_success_at", UtcDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false(), comment="mass-delete guard"),
    sa.Column("held_reason", sa.Text),
    sa.Column("record_count", sa.BigInteger),
    sa.Column("last_counts", sa.Text, comment="JSON counts of the last pull"),
    sa.Column(
        "unavailable",
        sa.Text,
        comment="why the endpoint is missing for this account or token (404/400/501); NULL: available",
    ),
)

alert_state = sa.Table(
    "alert_state",
    metadata,
    sa.Column(
        "condition", sa.String(32), primary_key=True, comment="pull_failing, held, queue, unhealthy, backup"
    ),
    sa.Column(
        "active", sa.Boolean, nullable=False, server_default=sa.false(), comment="at the last evaluation"
    ),
    sa.Column("since", UtcDateTime, comment="when it became active"),
    sa.Column("members", sa.Text, comment="JSON list: what it is about now (resources, queue item ids)"),
    sa.Column("detail", sa.Text, comment="JSON list of the lines a message about it carries"),
    sa.Column("sent_active", sa.Boolean, comment="what the last delivered message said; NULL: none yet"),
    sa.Column("sent_members", sa.Text, comment="JSON list: the members the last delivered message named"),
    sa.Column("sent_at", UtcDateTime, comment="when the last message about it was delivered"),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    comment="the daemon's alerts: what is wrong and what a person was told, kept across restarts",
)

customer_types = sa.Table(
    "customer_types",
    metadata,
    sa.Column("code", sa.String(1), primary_key=True, comment="the letter: contacts.customer_type"),
    sa.Column("name", sa.Text, nullable=False, comment="its word, as the API reference gives it"),
    comment="customer types: the letter of contacts.customer_type and companies.customer_type -> its word",
)

contact_photos = sa.Table(
    "contact_photos",
    metadata,
    sa.Column("contact_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("cphoto", sa.Text, nullable=False, comment="the contact's cphoto this row is about"),
    sa.Column("content_type", sa.Text),
    sa.Column("content", sa.LargeBinary, comment="the image's bytes; NULL until one fetch succeeded"),
    sa.Column("size", sa.BigInteger),
    sa.Column("sha256", sa.String(64)),
    sa.Column("fetched_at", UtcDateTime, comment="when `content` was fetched"),
    sa.Column("attempted_at", UtcDateTime, comment="the last fetch, ok or not"),
    sa.Column(
        "last_error", sa.Text, comment="why the last fetch failed (retried at the next pull); NULL: ok"
    ),
    comment="contact photos (pull.photos = true): /getcphoto/{contact id}/{cphoto}",
)

# The server-wide pause (migration 0002 made it beside the queue, hence its name): one row, read
# and written by mirror/pause.py only, decided by `health` for the pull, photos and the push.
writeback_pause = sa.Table(
    "writeback_pause",
    metadata,
    sa.Column("scope", sa.String(32), primary_key=True, comment="'server': every request"),
    sa.Column("not_before", UtcDateTime, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0", comment="outage failures in a row"),
    sa.Column("reason", sa.Text),
    sa.Column("updated_at", UtcDateTime, nullable=False, server_default=sa.text("CURRENT_TIMESTAMP")),
    comment="set when the server asks to wait (429/503 Retry-After) or is down; no push before not_before",
)
