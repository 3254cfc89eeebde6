"""report_pipeline on SQLite: the total rounded to the mirror's 4 decimal places

SQLite has no decimal type: 0003's `SUM(CAST(value AS NUMERIC))` adds binary floats, so a total
of prices such as 12.50 and 99.99 printed as 3004712.4800000004. Every value the mirror stores has
at most 4 decimals (NUMERIC(18, 4) on PostgreSQL), so the exact total has at most 4 as well, and
rounding to them gives back the exact figure (a float sum is off by far less than 0.00005 below
10^11). PostgreSQL: nothing changes (its SUM of NUMERIC is exact).

Self-contained on purpose: a migration must not change when application code does.

Revision ID: 0005_pipeline_total
Revises: 0004_fts_upkeep
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0005_pipeline_total"
down_revision = "0004_fts_upkeep"
branch_labels = None
depends_on = None


def _pipeline(total: str) -> str:
    return f"""
CREATE VIEW report_pipeline AS
SELECT o.status,
       o.currency,
       COUNT(*) AS opportunities,
       {total} AS total_value
FROM opportunities o
GROUP BY o.status, o.currency
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP VIEW report_pipeline")
    total = "SUM(CAST(o.value AS NUMERIC))"  # an integer when every value is a whole number
    op.execute(
        _pipeline(f"CASE WHEN typeof({total}) = 'real' THEN ROUND({total}, 4) ELSE COALESCE({total}, 0) END")
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP VIEW report_pipeline")
    op.execute(_pipeline("COALESCE(SUM(CAST(o.value AS NUMERIC)), 0)"))
