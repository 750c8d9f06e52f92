"""identity: whom scheduled job runs and model replicas act as

A job's scheduled and dependent runs act as the person who last changed what the job runs
(jobs.run_as_user_id, since jobs.run_as_since); each run records whom it acted as. A model
deployment's replicas act as whoever last deployed it (model_deployments.deployed_by_id), and
each replica records whom it acts as. Existing rows keep acting as their creator.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 05:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run_as_user_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('run_as_since', sa.DateTime(), nullable=True))
        batch_op.create_foreign_key('fk_jobs_run_as_user_id_users', 'users',
                                    ['run_as_user_id'], ['id'], ondelete='SET NULL')
    op.execute("UPDATE jobs SET run_as_user_id = created_by_id, run_as_since = created_at")

    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run_as_user_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_job_runs_run_as_user_id_users', 'users',
                                    ['run_as_user_id'], ['id'], ondelete='SET NULL')
    # what happened: runs so far acted as their job's creator
    op.execute("UPDATE job_runs SET run_as_user_id = (SELECT j.created_by_id FROM jobs j "
               "WHERE j.id = job_runs.job_id)")

    with op.batch_alter_table('model_deployments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deployed_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('deployed_at', sa.DateTime(), nullable=True))
        batch_op.create_foreign_key('fk_model_deployments_deployed_by_id_users', 'users',
                                    ['deployed_by_id'], ['id'], ondelete='SET NULL')
    op.execute("UPDATE model_deployments SET deployed_by_id = created_by_id, "
               "deployed_at = created_at")

    with op.batch_alter_table('model_replicas', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run_as_user_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_model_replicas_run_as_user_id_users', 'users',
                                    ['run_as_user_id'], ['id'], ondelete='SET NULL')
    op.execute("UPDATE model_replicas SET run_as_user_id = (SELECT d.deployed_by_id FROM "
               "model_deployments d WHERE d.id = model_replicas.deployment_id)")


def downgrade() -> None:
    with op.batch_alter_table('model_replicas', schema=None) as batch_op:
        batch_op.drop_constraint('fk_model_replicas_run_as_user_id_users', type_='foreignkey')
        batch_op.drop_column('run_as_user_id')
    with op.batch_alter_table('model_deployments', schema=None) as batch_op:
        batch_op.drop_constraint('fk_model_deployments_deployed_by_id_users',
                                 type_='foreignkey')
        batch_op.drop_column('deployed_at')
        batch_op.drop_column('deployed_by_id')
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_job_runs_run_as_user_id_users', type_='foreignkey')
        batch_op.drop_column('run_as_user_id')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_jobs_run_as_user_id_users', type_='foreignkey')
        batch_op.drop_column('run_as_since')
        batch_op.drop_column('run_as_user_id')
