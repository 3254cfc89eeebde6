"""writeback queue: writeback_queue (local edits on their way out) and writeback_pause

Written from clevertim_sync.writeback.tables; change both together. No CHECK constraints on
purpose: a bad row INSERTed by hand must be storable, so that the worker can dead-letter it with
its reason instead of the database refusing it with an opaque error.

Revision ID: 0002_writeback_queue
Revises: 0001_mirror
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clevertim_sync.mirror.types import UtcDateTime

revision = "0002_writeback_queue"
down_revision = "0001_mirror"
branch_labels = None
depends_on = None

NOW = sa.text("CURRENT_TIMESTAMP")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "writeback_queue",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("resource", sa.String(32), nullable=False, comment="API resource name: contact, note, ..."),
        sa.Column("op", sa.String(8), nullable=False, comment="create, update or delete"),
        sa.Column("target_id", sa.BigInteger(), comment="the record an update or delete is for"),
        sa.Column(
            "local_ref", sa.String(64), comment="a create's name before it has an id: local:<res>:<id>"
        ),
        sa.Column(
            "fields", sa.Text(), nullable=False, server_default="{}", comment="JSON of the values to write"
        ),
        sa.Column("base_record", sa.Text(), comment="JSON: the mirror's record when the edit was queued"),
        sa.Column("base_hash", sa.String(64), comment="record_hash(base_record)"),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column(
            "next_attempt_at", UtcDateTime(timezone=True), comment="not before this instant; NULL: at once"
        ),
        sa.Column("last_error", sa.Text(), comment="why it failed, waits or conflicts, and what to do"),
        sa.Column("server_message", sa.Text(), comment="the API's own error text"),
        sa.Column("error_status", sa.Integer(), comment="HTTP status of the last failure"),
        sa.Column("remote_id", sa.BigInteger(), comment="the id the server gave a create"),
        sa.Column("max_id_seen", sa.BigInteger(), comment="highest remote id known before a create went out"),
        sa.Column("sent", sa.Text(), comment="JSON body of the last request sent (a create's POST)"),
        sa.Column("conflict", sa.Text(), comment="JSON {field: {base, local, remote, winner}}"),
        sa.Column("resolution", sa.Text(), comment="how a conflict or quarantine was settled"),
        sa.Column("batch_id", sa.BigInteger(), comment="id of the item whose PUT carried this coalesced one"),
        sa.Column(
            "source", sa.String(16), nullable=False, server_default="sql", comment="python, cli, revert, sql"
        ),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("lease_until", UtcDateTime(timezone=True)),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", UtcDateTime(timezone=True), nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_writeback_queue")),
        comment="local edits on their way to Clevertim; INSERT here to queue one from SQL",
    )
    with op.batch_alter_table("writeback_queue", schema=None) as batch_op:
        batch_op.create_index(
            "ix_writeback_queue_state_next_attempt_at", ["state", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "ix_writeback_queue_resource_target_id", ["resource", "target_id"], unique=False
        )

    op.create_table(
        "writeback_pause",
        sa.Column("scope", sa.String(32), nullable=False, comment="'server': every request"),
        sa.Column("not_before", UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "failures", sa.Integer(), nullable=False, server_default="0", comment="outage failures in a row"
        ),
        sa.Column("reason", sa.Text()),
        sa.Column("updated_at", UtcDateTime(timezone=True), nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_writeback_pause")),
        comment="set when the server asks to wait (429/503 Retry-After) or is down; no push before not_before",
    )


def downgrade() -> None:
    op.drop_table("writeback_pause")
    with op.batch_alter_table("writeback_queue", schema=None) as batch_op:
        batch_op.drop_index("ix_writeback_queue_resource_target_id")
        batch_op.drop_index("ix_writeback_queue_state_next_attempt_at")
    op.drop_table("writeback_queue")
