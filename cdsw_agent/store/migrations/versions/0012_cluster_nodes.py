"""cluster nodes: what each worker host last reported, in the database instead of the memory
of the master process that received it

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 22:50:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cluster_nodes',
    sa.Column('hostname', sa.String(length=253), nullable=False),
    sa.Column('report', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('hostname')
    )


def downgrade() -> None:
    op.drop_table('cluster_nodes')
