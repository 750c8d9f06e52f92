"""models, builds, deployments and replicas

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 11:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('file', sa.String(length=1024), nullable=False),
    sa.Column('function', sa.String(length=255), nullable=False),
    sa.Column('example_input', sa.JSON(), nullable=True),
    sa.Column('engine_image_id', sa.Integer(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['engine_image_id'], ['engine_images.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'name', name='uq_model_project_name')
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_models_project_id'), ['project_id'], unique=False)

    op.create_table('model_access_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    with op.batch_alter_table('model_access_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_access_keys_model_id'), ['model_id'], unique=False)

    op.create_table('model_builds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('file', sa.String(length=1024), nullable=False),
    sa.Column('function', sa.String(length=255), nullable=False),
    sa.Column('artifact', sa.String(length=1024), nullable=False),
    sa.Column('log_path', sa.String(length=1024), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('model_builds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_builds_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_builds_status'), ['status'], unique=False)

    op.create_table('model_deployments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('build_id', sa.Integer(), nullable=False),
    sa.Column('replicas', sa.Integer(), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('stopped_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['build_id'], ['model_builds.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['profile_id'], ['engine_profiles.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('model_deployments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_deployments_build_id'), ['build_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_deployments_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_deployments_status'), ['status'], unique=False)

    op.create_table('model_replicas',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('deployment_id', sa.Integer(), nullable=False),
    sa.Column('build_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('workload_id', sa.String(length=255), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('node', sa.String(length=255), nullable=True),
    sa.Column('address', sa.String(length=255), nullable=True),
    sa.Column('token', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('ready_at', sa.DateTime(), nullable=True),
    sa.Column('stopped_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['build_id'], ['model_builds.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['deployment_id'], ['model_deployments.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('model_replicas', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_replicas_deployment_id'), ['deployment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_replicas_state'), ['state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('model_replicas', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_replicas_state'))
        batch_op.drop_index(batch_op.f('ix_model_replicas_deployment_id'))

    op.drop_table('model_replicas')
    with op.batch_alter_table('model_deployments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_deployments_status'))
        batch_op.drop_index(batch_op.f('ix_model_deployments_model_id'))
        batch_op.drop_index(batch_op.f('ix_model_deployments_build_id'))

    op.drop_table('model_deployments')
    with op.batch_alter_table('model_builds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_builds_status'))
        batch_op.drop_index(batch_op.f('ix_model_builds_model_id'))

    op.drop_table('model_builds')
    with op.batch_alter_table('model_access_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_access_keys_model_id'))

    op.drop_table('model_access_keys')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_models_project_id'))

    op.drop_table('models')
