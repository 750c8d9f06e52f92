"""Indexes for list orderings: the project list reads newest change first (updated_at, id)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 06:00:00
"""
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.create_index('ix_projects_updated_at_id', ['updated_at', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_index('ix_projects_updated_at_id')
