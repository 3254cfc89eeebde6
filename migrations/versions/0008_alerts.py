"""alerts: alert_state, what is wrong and what a person was told (daemon/alerts.py)

Written from clevertim_sync.mirror.schema.alert_state; change both together. One row per
condition (pull_failing, held, queue, unhealthy, backup), so that a restarted daemon neither
repeats a message nor forgets one it could not deliver.

Revision ID: 0008_alerts
Revises: 0007_versions
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clevertim_sync.mirror.types import UtcDateTime

revision = "0008_alerts"
down_revision = "0007_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_state",
        sa.Column(
            "condition",
            sa.String(32),
            primary_key=True,
            comment="pull_failing, held, queue, unhealthy, backup",
        ),
        sa.Column(
            "active", sa.Boolean(), nullable=False, server_default=sa.false(), comment="at the last evaluation"
        ),
        sa.Column("since", UtcDateTime(timezone=True), comment="when it became active"),
        sa.Column("members", sa.Text(), comment="JSON list: what it is about now (resources, queue item ids)"),
        sa.Column("detail", sa.Text(), comment="JSON list of the lines a message about it carries"),
        sa.Column("sent_active", sa.Boolean(), comment="what the last delivered message said; NULL: none yet"),
        sa.Column(
            "sent_members", sa.Text(), comment="JSON list: the members the last delivered message named"
        ),
        sa.Column("sent_at", UtcDateTime(timezone=True), comment="when the last message about it was delivered"),
        sa.Column("updated_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("condition", name=op.f("pk_alert_state")),
        comment="the daemon's alerts: what is wrong and what a person was told, kept across restarts",
    )


def downgrade() -> None:
    op.drop_table("alert_state")
