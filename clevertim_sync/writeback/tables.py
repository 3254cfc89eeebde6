"""The writeback queue's table, on the project's one `metadata`: its columns, as migration
0002_writeback_queue creates them (change both together).

Owns: the columns of `writeback_queue` (one row per local edit, its whole life). The states an
item goes through, their rules and every statement on it are outbox.py's: nothing else issues
SQL on it. (`writeback_pause`, the server-wide "do not send before" that 0002 made beside it, is
the mirror's: mirror/schema.py, its statements mirror/pause.py, decided by `health`.)


The queue is also a public interface for people who only have a SQL client: a plain

    INSERT INTO writeback_queue (resource, op, target_id, fields)
    VALUES ('contact', 'update', 42, '{"title": "CTO"}');

is a valid edit. Every column but `resource` and `op` has a default, nothing is checked by the
database (so that a bad row can be stored and then dead-lettered with its reason instead of
being refused with a database error), and the worker validates each item against the resource
registry when it claims it.
"""

from __future__ import annotations

import sqlalchemy as sa

from clevertim_sync.mirror.schema import BigId, metadata
from clevertim_sync.mirror.types import UtcDateTime

NOW = sa.text("CURRENT_TIMESTAMP")

writeback_queue = sa.Table(
    "writeback_queue",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("resource", sa.String(32), nullable=False, comment="API resource name: contact, note, ..."),
    sa.Column("op", sa.String(8), nullable=False, comment="create, update or delete"),
    sa.Column("target_id", sa.BigInteger, comment="the record an update or delete is for"),
    sa.Column("local_ref", sa.String(64), comment="a create's name before it has an id: local:<res>:<id>"),
    sa.Column("fields", sa.Text, nullable=False, server_default="{}", comment="JSON of the values to write"),
    sa.Column("base_record", sa.Text, comment="JSON: the mirror's record when the edit was queued"),
    # Never read, so no longer written (NULL in new rows): dropping the column takes a
    # migration, which can come with the next change of this table.
    sa.Column("base_hash", sa.String(64), comment="record_hash(base_record)"),
    sa.Column("state", sa.String(16), nullable=False, server_default="pending"),  # outbox.PENDING
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime, comment="not before this instant; NULL: at once"),
    sa.Column("last_error", sa.Text, comment="why it failed, waits or conflicts, and what to do"),
    sa.Column("server_message", sa.Text, comment="the API's own error text"),
    sa.Column("error_status", sa.Integer, comment="HTTP status of the last failure"),
    sa.Column("remote_id", sa.BigInteger, comment="the id the server gave a create"),
    sa.Column("max_id_seen", sa.BigInteger, comment="highest remote id known before a create went out"),
    sa.Column("sent", sa.Text, comment="JSON body of the last request sent (a create's POST)"),
    sa.Column("conflict", sa.Text, comment="JSON {field: {base, local, remote, winner}}"),
    sa.Column("resolution", sa.Text, comment="how a conflict or quarantine was settled"),
    sa.Column("batch_id", sa.BigInteger, comment="id of the item whose PUT carried this coalesced one"),
    sa.Column(
        "source", sa.String(16), nullable=False, server_default="sql", comment="python, cli, revert, sql"
    ),
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("lease_until", UtcDateTime),
    sa.Column("created_at", UtcDateTime, nullable=False, server_default=NOW),
    sa.Column("updated_at", UtcDateTime, nullable=False, server_default=NOW),
    sa.Index("ix_writeback_queue_state_next_attempt_at", "state", "next_attempt_at"),
    sa.Index("ix_writeback_queue_resource_target_id", "resource", "target_id"),
    comment="local edits on their way to Clevertim; INSERT here to queue one from SQL",
)
