"""several clusters: clusters, grants on them, each project's home cluster, promotions

The workbench's one cluster becomes the default cluster (open to every user, its nodes every
node no other cluster claims) and every existing project is put on it, so nothing changes
until a second cluster is registered.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 08:20:00
"""
import datetime as dt

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    clusters = op.create_table('clusters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('requires_grant', sa.Boolean(), nullable=False),
    sa.Column('client_config_dir', sa.String(length=1024), nullable=False),
    sa.Column('krb5_conf', sa.String(length=1024), nullable=False),
    sa.Column('java_home', sa.String(length=1024), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('cluster_grants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('team_id', sa.Integer(), nullable=True),
    sa.Column('grantee', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint('(user_id IS NULL) <> (team_id IS NULL)',
                       name='ck_cluster_grant_one_grantee'),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cluster_id', 'grantee', name='uq_cluster_grant')
    )
    with op.batch_alter_table('cluster_grants', schema=None) as batch_op:
        batch_op.create_index('ix_cluster_grants_cluster_id', ['cluster_id'], unique=False)

    op.bulk_insert(clusters, [{
        'name': 'default', 'kind': 'default',
        'description': 'The cluster this workbench was installed with.',
        'is_default': True, 'requires_grant': False, 'client_config_dir': '', 'krb5_conf': '',
        'java_home': '', 'created_at': dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)}])

    # a plain ADD COLUMN (with its reference) on every database: recreating the projects table
    # (batch mode) would lose its CHECK constraint on SQLite
    if op.get_bind().dialect.name == 'sqlite':
        op.execute('ALTER TABLE projects ADD COLUMN cluster_id INTEGER '
                   'REFERENCES clusters (id) ON DELETE RESTRICT')
    else:
        op.add_column('projects', sa.Column('cluster_id', sa.Integer(), nullable=True))
        op.create_foreign_key('fk_projects_cluster_id', 'projects', 'clusters',
                              ['cluster_id'], ['id'], ondelete='RESTRICT')
    op.create_index('ix_projects_cluster_id', 'projects', ['cluster_id'], unique=False)
    op.execute("UPDATE projects SET cluster_id = "
               "(SELECT id FROM clusters WHERE name = 'default')")

    op.create_table('promotions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_project_id', sa.Integer(), nullable=False),
    sa.Column('target_project_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('snapshot', sa.JSON(), nullable=False),
    sa.Column('before', sa.JSON(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('requested_by_id', sa.Integer(), nullable=True),
    sa.Column('requested_at', sa.DateTime(), nullable=False),
    sa.Column('reviewed_by_id', sa.Integer(), nullable=True),
    sa.Column('reviewed_at', sa.DateTime(), nullable=True),
    sa.Column('review_note', sa.Text(), nullable=False),
    sa.Column('rolled_back_by_id', sa.Integer(), nullable=True),
    sa.Column('rolled_back_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['requested_by_id'], ['users.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['reviewed_by_id'], ['users.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['rolled_back_by_id'], ['users.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['source_project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['target_project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('promotions', schema=None) as batch_op:
        batch_op.create_index('ix_promotions_source_project_id', ['source_project_id'],
                              unique=False)
        batch_op.create_index('ix_promotions_target_project_id', ['target_project_id'],
                              unique=False)
        batch_op.create_index('ix_promotions_status', ['status'], unique=False)


def downgrade() -> None:
    op.drop_table('promotions')
    op.drop_index('ix_projects_cluster_id', table_name='projects')
    if op.get_bind().dialect.name == 'sqlite':  # 3.35+ drops a column without its table
        op.execute('ALTER TABLE projects DROP COLUMN cluster_id')
    else:
        op.drop_constraint('fk_projects_cluster_id', 'projects', type_='foreignkey')
        op.drop_column('projects', 'cluster_id')
    op.drop_table('cluster_grants')
    op.drop_table('clusters')
