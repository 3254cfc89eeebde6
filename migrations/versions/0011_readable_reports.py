"""readable reports: the customer types' words, beside the letter in report_contacts

A contact's or company's `customer_type` is one letter (the API's `ctype`); a report for a person
should not need a code book. This revision adds:

  customer_types   one row per letter the API reference lists: code (the letter) -> name (its word)
  report_contacts  a new revision of 0003's view with `customer_type_name` beside `customer_type`
                   (every other column as it was, in its place)

The wide views (`contacts_wide`, `companies_wide`, `cases_wide`, `opportunities_wide`: one column
per custom field) are not made here: their columns follow the account's custom fields, so the
application (clevertim_sync/mirror/wide.py) builds them after each migration and after a pull that
added, renamed or removed a field. The downgrade drops them first, since they depend on the tables
an older revision may change.

Written from clevertim_sync.mirror.schema.customer_types; change both together.
Self-contained on purpose: a migration must not change when application code does.

Revision ID: 0011_readable_reports
Revises: 0010_open_task_customers
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_readable_reports"
down_revision = "0010_open_task_customers"
branch_labels = None
depends_on = None

# The API reference's list (contact `ctype`), in its order.
CUSTOMER_TYPES = (
    ("C", "Customer"),
    ("P", "Prospect"),
    ("S", "Supplier"),
    ("R", "Reseller"),
    ("E", "Employee"),
    ("O", "Competitor"),
    ("N", "Consultant"),
    ("T", "Contractor"),
    ("D", "Distributor"),
    ("X", "Influencer"),
    ("I", "Investor"),
    ("M", "Manufacturer"),
    ("A", "Retailer"),
    ("V", "Vendor"),
    ("W", "Wholesaler"),
    ("L", "Lead"),
    ("F", "Friend"),
    ("H", "Other"),
)
WIDE_VIEWS = ("contacts_wide", "companies_wide", "cases_wide", "opportunities_wide")
FULL_NAME = "TRIM(COALESCE({t}.first_name, '') || ' ' || COALESCE({t}.last_name, ''))"


def _contacts(with_word: bool) -> str:
    word = "\n       ct.name AS customer_type_name," if with_word else ""
    join = "\nLEFT JOIN customer_types ct ON ct.code = c.customer_type" if with_word else ""
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
       c.customer_type,{word}
       c.modified_at
FROM contacts c
LEFT JOIN companies co ON co.id = c.company_id{join}
"""


def upgrade() -> None:
    table = op.create_table(
        "customer_types",
        sa.Column("code", sa.String(1), primary_key=True, comment="the letter: contacts.customer_type"),
        sa.Column("name", sa.Text(), nullable=False, comment="its word, as the API reference gives it"),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_customer_types")),
        comment="customer types: the letter of contacts.customer_type and companies.customer_type -> its word",
    )
    op.bulk_insert(table, [{"code": code, "name": name} for code, name in CUSTOMER_TYPES])
    op.execute("DROP VIEW report_contacts")
    op.execute(_contacts(with_word=True))


def downgrade() -> None:
    for view in WIDE_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.execute("DROP VIEW report_contacts")
    op.execute(_contacts(with_word=False))
    op.drop_table("customer_types")
