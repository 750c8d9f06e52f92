"""users' Kerberos credentials: principal, encrypted password or keytab, ticket state

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 05:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('kerberos_credentials',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('principal', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('secret', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('ticket_expires_at', sa.DateTime(), nullable=True),
    sa.Column('renew_until', sa.DateTime(), nullable=True),
    sa.Column('last_renewed_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('last_error_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id')
    )


def downgrade() -> None:
    op.drop_table('kerberos_credentials')
