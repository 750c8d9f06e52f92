"""engine sessions and their shares

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 11:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('engine_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('kernel', sa.String(length=16), nullable=False),
    sa.Column('kernelspec', sa.String(length=64), nullable=False),
    sa.Column('engine_image_id', sa.Integer(), nullable=True),
    sa.Column('image', sa.String(length=512), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('workload_id', sa.String(length=255), nullable=True),
    sa.Column('node', sa.String(length=255), nullable=True),
    sa.Column('host_port', sa.Integer(), nullable=True),
    sa.Column('kernel_id', sa.String(length=64), nullable=True),
    sa.Column('stop_requested', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('last_activity_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['engine_image_id'], ['engine_images.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['profile_id'], ['engine_profiles.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('engine_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_engine_sessions_project_id'), ['project_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_engine_sessions_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_engine_sessions_user_id'), ['user_id'], unique=False)

    op.create_table('engine_session_shares',
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['engine_sessions.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('session_id', 'user_id')
    )


def downgrade() -> None:
    op.drop_table('engine_session_shares')
    with op.batch_alter_table('engine_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_engine_sessions_user_id'))
        batch_op.drop_index(batch_op.f('ix_engine_sessions_status'))
        batch_op.drop_index(batch_op.f('ix_engine_sessions_project_id'))

    op.drop_table('engine_sessions')
