"""jobs.script_sha256: the digest of the script as the job's run_as saved it; scheduled and
dependent runs run only that version (jobs/identity.py). NULL for jobs saved before: their next
scheduled run records what it runs.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 08:15:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('script_sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('script_sha256')
