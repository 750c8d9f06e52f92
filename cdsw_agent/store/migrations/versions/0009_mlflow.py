"""MLflow-compatible tracking: experiments per project, runs' params, tags and metric steps

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 06:05:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('experiment_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tracker', sa.String(length=16), server_default='cdsw',
                                      nullable=False))
    op.create_table('mlflow_experiments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=500), nullable=False),
    sa.Column('lifecycle_stage', sa.String(length=16), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('mlflow_experiments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mlflow_experiments_project_id'), ['project_id'],
                              unique=False)
    op.create_table('mlflow_runs',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=250), nullable=False),
    sa.Column('lifecycle_stage', sa.String(length=16), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('start_time', sa.BigInteger(), nullable=True),
    sa.Column('end_time', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['experiment_id'], ['mlflow_experiments.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['experiment_runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id')
    )
    with op.batch_alter_table('mlflow_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mlflow_runs_experiment_id'), ['experiment_id'],
                              unique=False)
    op.create_table('mlflow_metrics',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=250), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('timestamp', sa.BigInteger(), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['experiment_runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_mlflow_metrics_run_key', 'mlflow_metrics', ['run_id', 'key'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_mlflow_metrics_run_key', table_name='mlflow_metrics')
    op.drop_table('mlflow_metrics')
    op.drop_table('mlflow_runs')
    op.drop_table('mlflow_experiments')
    with op.batch_alter_table('experiment_runs', schema=None) as batch_op:
        batch_op.drop_column('tracker')
