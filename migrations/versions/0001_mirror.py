"""mirror tables: current state, child tables, history, runs, resource_status

One current-state table per resource (typed columns, `raw`, `content_hash`), the child tables of
list-valued properties, `history`, `runs` and `resource_status`. REF columns are indexed but carry
no foreign key on purpose: a record may point at one this token cannot see.

Revision ID: 0001_mirror
Revises: 
Create Date: 2026-11-28 (written from clevertim_sync.mirror.schema; edit by hand from now on)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clevertim_sync.mirror.types import ExactDecimal, UtcDateTime


revision = '0001_mirror'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('case_custom_values',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('custom_field_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('owner_id', 'custom_field_id', 'position', name=op.f('pk_case_custom_values')),
    sqlite_with_rowid=False
    )
    with op.batch_alter_table('case_custom_values', schema=None) as batch_op:
        batch_op.create_index('ix_case_custom_values_custom_field_id', ['custom_field_id'], unique=False)

    op.create_table('case_tags',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('owner_id', 'position', name=op.f('pk_case_tags')),
    sqlite_with_rowid=False
    )
    op.create_table('cases',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('lead_user_id', sa.BigInteger(), nullable=True),
    sa.Column('customer_id', sa.BigInteger(), nullable=True),
    sa.Column('added_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('modified_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('is_private', sa.Boolean(), nullable=True),
    sa.Column('group_mask', sa.BigInteger(), nullable=True),
    sa.Column('private_user_id', sa.BigInteger(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False, comment='the record exactly as the API sent it'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment='record_hash(raw)'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cases')),
    comment='current state of /case'
    )
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cases_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_cases_lead_user_id'), ['lead_user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_cases_private_user_id'), ['private_user_id'], unique=False)

    op.create_table('comments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('body', sa.Text(), nullable=True),
    sa.Column('note_id', sa.BigInteger(), nullable=True),
    sa.Column('task_id', sa.BigInteger(), nullable=True),
    sa.Column('created_by_user_id', sa.BigInteger(), nullable=True),
    sa.Column('added_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('modified_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('is_private', sa.Boolean(), nullable=True),
    sa.Column('group_mask', sa.BigInteger(), nullable=True),
    sa.Column('private_user_id', sa.BigInteger(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False, comment='the record exactly as the API sent it'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment='record_hash(raw)'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_comments')),
    comment='current state of /comment'
    )
    with op.batch_alter_table('comments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_comments_created_by_user_id'), ['created_by_user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_comments_note_id'), ['note_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_comments_private_user_id'), ['private_user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_comments_task_id'), ['task_id'], unique=False)

    op.create_table('companies',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('is_company', sa.Boolean(), nullable=True),
    sa.Column('address', sa.Text(), nullable=True),
    sa.Column('city', sa.Text(), nullable=True),
    sa.Column('postcode', sa.Text(), nullable=True),
    sa.Column('region', sa.Text(), nullable=True),
    sa.Column('country', sa.Text(), nullable=True),
    sa.Column('customer_type', sa.Text(), nullable=True),
    sa.Column('last_contacted_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('photo', sa.Text(), nullable=True),
    sa.Column('added_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('modified_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('is_private', sa.Boolean(), nullable=True),
    sa.Column('group_mask', sa.BigInteger(), nullable=True),
    sa.Column('private_user_id', sa.BigInteger(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False, comment='the record exactly as the API sent it'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment='record_hash(raw)'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_companies')),
    comment='current state of /company'
    )
    with op.batch_alter_table('companies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_companies_private_user_id'), ['private_user_id'], unique=False)

    op.create_table('company_custom_values',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('custom_field_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('owner_id', 'custom_field_id', 'position', name=op.f('pk_company_custom_values')),
    sqlite_with_rowid=False
    )
    with op.batch_alter_table('company_custom_values', schema=None) as batch_op:
        batch_op.create_index('ix_company_custom_values_custom_field_id', ['custom_field_id'], unique=False)

    op.create_table('company_emails',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('owner_id', 'position', name=op.f('pk_company_emails')),
    sqlite_with_rowid=False
    )
    op.create_table('company_phones',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('type', sa.Text(), nullable=True),
    sa.Column('number', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('owner_id', 'position', name=op.f('pk_company_phones')),
    sqlite_with_rowid=False
    )
    op.create_table('company_social_ids',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('type', sa.Text(), nullable=True),
    sa.Column('social_id', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('owner_id', 'position', name=op.f('pk_company_social_ids')),
    sqlite_with_rowid=False
    )
    op.create_table('company_tags',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('owner_id', 'position', name=op.f('pk_company_tags')),
    sqlite_with_rowid=False
    )
    op.create_table('company_websites',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('owner_id', 'position', name=op.f('pk_company_websites')),
    sqlite_with_rowid=False
    )
    op.create_table('contact_custom_values',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('custom_field_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('owner_id', 'custom_field_id', 'position', name=op.f('pk_contact_custom_values')),
    sqlite_with_rowid=False
    )
    with op.batch_alter_table('contact_custom_values', schema=None) as batch_op:
        batch_op.create_index('ix_contact_custom_values_custom_field_id', ['custom_field_id'], unique=False)

    op.create_table('contact_emails',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('owner_id', 'position', name=op.f('pk_contact_emails')),
    sqlite_with_rowid=False
    )
    op.create_table('contact_phones',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('type', sa.Text(), nullable=True),
    sa.Column('number', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('owner_id', 'position', name=op.f('pk_contact_phones')),
    sqlite_with_rowid=False
    )
    op.create_table('contact_social_ids',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('type', sa.Text(), nullable=True),
    sa.Column('social_id', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('owner_id', 'position', name=op.f('pk_contact_social_ids')),
    sqlite_with_rowid=False
    )
    op.create_table('contact_tags',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('owner_id', 'position', name=op.f('pk_contact_tags')),
    sqlite_with_rowid=False
    )
    op.create_table('contact_websites',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('owner_id', 'position', name=op.f('pk_contact_websites')),
    sqlite_with_rowid=False
    )
    op.create_table('contacts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('first_name', sa.Text(), nullable=True),
    sa.Column('last_name', sa.Text(), nullable=True),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('company_id', sa.BigInteger(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('is_company', sa.Boolean(), nullable=True),
    sa.Column('address', sa.Text(), nullable=True),
    sa.Column('city', sa.Text(), nullable=True),
    sa.Column('postcode', sa.Text(), nullable=True),
    sa.Column('region', sa.Text(), nullable=True),
    sa.Column('country', sa.Text(), nullable=True),
    sa.Column('customer_type', sa.Text(), nullable=True),
    sa.Column('last_contacted_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('photo', sa.Text(), nullable=True),
    sa.Column('added_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('modified_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('is_private', sa.Boolean(), nullable=True),
    sa.Column('group_mask', sa.BigInteger(), nullable=True),
    sa.Column('private_user_id', sa.BigInteger(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False, comment='the record exactly as the API sent it'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment='record_hash(raw)'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contacts')),
    comment='current state of /contact'
    )
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contacts_company_id'), ['company_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_contacts_private_user_id'), ['private_user_id'], unique=False)

    op.create_table('custom_fields',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('full_name', sa.Text(), nullable=True),
    sa.Column('element_type', sa.Text(), nullable=True),
    sa.Column('multiple', sa.Boolean(), nullable=True),
    sa.Column('added_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('modified_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('is_private', sa.Boolean(), nullable=True),
    sa.Column('group_mask', sa.BigInteger(), nullable=True),
    sa.Column('private_user_id', sa.BigInteger(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False, comment='the record exactly as the API sent it'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment='record_hash(raw)'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_custom_fields')),
    comment='current state of /customfield'
    )
    with op.batch_alter_table('custom_fields', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_custom_fields_private_user_id'), ['private_user_id'], unique=False)

    op.create_table('groups',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('group_bit', sa.BigInteger(), nullable=True),
    sa.Column('added_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('modified_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('is_private', sa.Boolean(), nullable=True),
    sa.Column('private_user_id', sa.BigInteger(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False, comment='the record exactly as the API sent it'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment='record_hash(raw)'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_groups')),
    comment='current state of /group'
    )
    with op.batch_alter_table('groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_groups_private_user_id'), ['private_user_id'], unique=False)

    op.create_table('history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource', sa.String(length=32), nullable=False),
    sa.Column('record_id', sa.BigInteger(), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True, comment='runs.id of the pull that saw it (null for local)'),
    sa.Column('origin', sa.String(length=8), nullable=False, comment='pull or local'),
    sa.Column('op', sa.String(length=8), nullable=False, comment='insert, update or delete'),
    sa.Column('at', UtcDateTime(timezone=True), nullable=False),
    sa.Column('raw', sa.Text(), nullable=True, comment='this version of the record (the last one seen, for a delete)'),
    sa.Column('content_hash', sa.String(length=64), nullable=True),
    sa.Column('changed', sa.Text(), nullable=True, comment='JSON {api_field: [old, new]} for an update'),
    sa.Column('queue_item_id', sa.BigInteger(), nullable=True, comment='the writeback queue item, for origin local'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_history'))
    )
    with op.batch_alter_table('history', schema=None) as batch_op:
        batch_op.create_index('ix_history_resource_record_id', ['resource', 'record_id', 'id'], unique=False)
        batch_op.create_index('ix_history_run_id', ['run_id'], unique=False)

    op.create_table('notes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('body', sa.Text(), nullable=True),
    sa.Column('headline', sa.Text(), nullable=True),
    sa.Column('note_type', sa.Text(), nullable=True),
    sa.Column('customer_id', sa.BigInteger(), nullable=True),
    sa.Column('case_id', sa.BigInteger(), nullable=True),
    sa.Column('opportunity_id', sa.BigInteger(), nullable=True),
    sa.Column('created_by_user_id', sa.BigInteger(), nullable=True),
    sa.Column('added_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('modified_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('is_private', sa.Boolean(), nullable=True),
    sa.Column('group_mask', sa.BigInteger(), nullable=True),
    sa.Column('private_user_id', sa.BigInteger(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False, comment='the record exactly as the API sent it'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment='record_hash(raw)'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notes')),
    comment='current state of /note'
    )
    with op.batch_alter_table('notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notes_case_id'), ['case_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_notes_created_by_user_id'), ['created_by_user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_notes_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_notes_opportunity_id'), ['opportunity_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_notes_private_user_id'), ['private_user_id'], unique=False)

    op.create_table('opportunities',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('status', sa.Text(), nullable=True),
    sa.Column('lead_user_id', sa.BigInteger(), nullable=True),
    sa.Column('value', ExactDecimal(precision=18, scale=4), nullable=True),
    sa.Column('currency', sa.Text(), nullable=True),
    sa.Column('customer_id', sa.BigInteger(), nullable=True),
    sa.Column('created_by_user_id', sa.BigInteger(), nullable=True),
    sa.Column('added_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('modified_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('is_private', sa.Boolean(), nullable=True),
    sa.Column('group_mask', sa.BigInteger(), nullable=True),
    sa.Column('private_user_id', sa.BigInteger(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False, comment='the record exactly as the API sent it'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment='record_hash(raw)'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_opportunities')),
    comment='current state of /opportunity'
    )
    with op.batch_alter_table('opportunities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_opportunities_created_by_user_id'), ['created_by_user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_opportunities_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_opportunities_lead_user_id'), ['lead_user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_opportunities_private_user_id'), ['private_user_id'], unique=False)

    op.create_table('opportunity_custom_values',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('custom_field_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('owner_id', 'custom_field_id', 'position', name=op.f('pk_opportunity_custom_values')),
    sqlite_with_rowid=False
    )
    with op.batch_alter_table('opportunity_custom_values', schema=None) as batch_op:
        batch_op.create_index('ix_opportunity_custom_values_custom_field_id', ['custom_field_id'], unique=False)

    op.create_table('opportunity_tags',
    sa.Column('owner_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('owner_id', 'position', name=op.f('pk_opportunity_tags')),
    sqlite_with_rowid=False
    )
    op.create_table('resource_status',
    sa.Column('resource', sa.String(length=32), nullable=False),
    sa.Column('last_run_id', sa.BigInteger(), nullable=True),
    sa.Column('last_pull_at', UtcDateTime(timezone=True), nullable=True, comment='when the last pull of it finished, ok or not'),
    sa.Column('last_success_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('consecutive_failures', sa.Integer(), server_default='0', nullable=False),
    sa.Column('held', sa.Boolean(), server_default=sa.false(), nullable=False, comment='mass-delete guard'),
    sa.Column('held_reason', sa.Text(), nullable=True),
    sa.Column('record_count', sa.BigInteger(), nullable=True),
    sa.Column('last_counts', sa.Text(), nullable=True, comment='JSON counts of the last pull'),
    sa.PrimaryKeyConstraint('resource', name=op.f('pk_resource_status'))
    )
    op.create_table('runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False, comment='pull, push, backup, ...'),
    sa.Column('started_at', UtcDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False, comment='running, ok, partial, failed'),
    sa.Column('counts', sa.Text(), nullable=True, comment='JSON {resource: {inserted, updated, deleted, ...}}'),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs'))
    )
    op.create_table('tasks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('location', sa.Text(), nullable=True),
    sa.Column('activity_type', sa.Text(), nullable=True),
    sa.Column('start_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('start_at_all_day', sa.Boolean(), nullable=True),
    sa.Column('end_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('end_at_all_day', sa.Boolean(), nullable=True),
    sa.Column('customer_id', sa.BigInteger(), nullable=True),
    sa.Column('case_id', sa.BigInteger(), nullable=True),
    sa.Column('opportunity_id', sa.BigInteger(), nullable=True),
    sa.Column('assigned_user_id', sa.BigInteger(), nullable=True),
    sa.Column('created_by_user_id', sa.BigInteger(), nullable=True),
    sa.Column('is_completed', sa.Boolean(), nullable=True),
    sa.Column('is_deleted', sa.Boolean(), nullable=True),
    sa.Column('recurrence', sa.Text(), nullable=True),
    sa.Column('recurrence_every', sa.BigInteger(), nullable=True),
    sa.Column('added_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('modified_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('is_private', sa.Boolean(), nullable=True),
    sa.Column('group_mask', sa.BigInteger(), nullable=True),
    sa.Column('private_user_id', sa.BigInteger(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False, comment='the record exactly as the API sent it'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment='record_hash(raw)'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks')),
    comment='current state of /task'
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tasks_assigned_user_id'), ['assigned_user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_case_id'), ['case_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_created_by_user_id'), ['created_by_user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_opportunity_id'), ['opportunity_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_private_user_id'), ['private_user_id'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('email', sa.Text(), nullable=True),
    sa.Column('is_owner', sa.Boolean(), nullable=True),
    sa.Column('is_admin', sa.Boolean(), nullable=True),
    sa.Column('pending', sa.Boolean(), nullable=True),
    sa.Column('added_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('modified_at', UtcDateTime(timezone=True), nullable=True),
    sa.Column('is_private', sa.Boolean(), nullable=True),
    sa.Column('group_mask', sa.BigInteger(), nullable=True),
    sa.Column('private_user_id', sa.BigInteger(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False, comment='the record exactly as the API sent it'),
    sa.Column('content_hash', sa.String(length=64), nullable=False, comment='record_hash(raw)'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    comment='current state of /user'
    )
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_users_private_user_id'), ['private_user_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_users_private_user_id'))

    op.drop_table('users')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tasks_private_user_id'))
        batch_op.drop_index(batch_op.f('ix_tasks_opportunity_id'))
        batch_op.drop_index(batch_op.f('ix_tasks_customer_id'))
        batch_op.drop_index(batch_op.f('ix_tasks_created_by_user_id'))
        batch_op.drop_index(batch_op.f('ix_tasks_case_id'))
        batch_op.drop_index(batch_op.f('ix_tasks_assigned_user_id'))

    op.drop_table('tasks')
    op.drop_table('runs')
    op.drop_table('resource_status')
    op.drop_table('opportunity_tags')
    with op.batch_alter_table('opportunity_custom_values', schema=None) as batch_op:
        batch_op.drop_index('ix_opportunity_custom_values_custom_field_id')

    op.drop_table('opportunity_custom_values')
    with op.batch_alter_table('opportunities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_opportunities_private_user_id'))
        batch_op.drop_index(batch_op.f('ix_opportunities_lead_user_id'))
        batch_op.drop_index(batch_op.f('ix_opportunities_customer_id'))
        batch_op.drop_index(batch_op.f('ix_opportunities_created_by_user_id'))

    op.drop_table('opportunities')
    with op.batch_alter_table('notes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notes_private_user_id'))
        batch_op.drop_index(batch_op.f('ix_notes_opportunity_id'))
        batch_op.drop_index(batch_op.f('ix_notes_customer_id'))
        batch_op.drop_index(batch_op.f('ix_notes_created_by_user_id'))
        batch_op.drop_index(batch_op.f('ix_notes_case_id'))

    op.drop_table('notes')
    with op.batch_alter_table('history', schema=None) as batch_op:
        batch_op.drop_index('ix_history_run_id')
        batch_op.drop_index('ix_history_resource_record_id')

    op.drop_table('history')
    with op.batch_alter_table('groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_groups_private_user_id'))

    op.drop_table('groups')
    with op.batch_alter_table('custom_fields', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_custom_fields_private_user_id'))

    op.drop_table('custom_fields')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contacts_private_user_id'))
        batch_op.drop_index(batch_op.f('ix_contacts_company_id'))

    op.drop_table('contacts')
    op.drop_table('contact_websites')
    op.drop_table('contact_tags')
    op.drop_table('contact_social_ids')
    op.drop_table('contact_phones')
    op.drop_table('contact_emails')
    with op.batch_alter_table('contact_custom_values', schema=None) as batch_op:
        batch_op.drop_index('ix_contact_custom_values_custom_field_id')

    op.drop_table('contact_custom_values')
    op.drop_table('company_websites')
    op.drop_table('company_tags')
    op.drop_table('company_social_ids')
    op.drop_table('company_phones')
    op.drop_table('company_emails')
    with op.batch_alter_table('company_custom_values', schema=None) as batch_op:
        batch_op.drop_index('ix_company_custom_values_custom_field_id')

    op.drop_table('company_custom_values')
    with op.batch_alter_table('companies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_companies_private_user_id'))

    op.drop_table('companies')
    with op.batch_alter_table('comments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_comments_task_id'))
        batch_op.drop_index(batch_op.f('ix_comments_private_user_id'))
        batch_op.drop_index(batch_op.f('ix_comments_note_id'))
        batch_op.drop_index(batch_op.f('ix_comments_created_by_user_id'))

    op.drop_table('comments')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cases_private_user_id'))
        batch_op.drop_index(batch_op.f('ix_cases_lead_user_id'))
        batch_op.drop_index(batch_op.f('ix_cases_customer_id'))

    op.drop_table('cases')
    op.drop_table('case_tags')
    with op.batch_alter_table('case_custom_values', schema=None) as batch_op:
        batch_op.drop_index('ix_case_custom_values_custom_field_id')

    op.drop_table('case_custom_values')
