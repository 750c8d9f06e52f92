"""Alembic environment: the engine is handed over by cdsw_agent.store.db.Database.

Each revision runs in its own transaction (the version row moves with it): a failure in the
middle of an upgrade leaves the database at the last revision that completed. On SQLite this
needs the engine from `make_engine(url, transactional_ddl=True)`, which Database.upgrade uses.
"""

from alembic import context

import cdsw_agent.store.experiments_models  # noqa: F401  (each registers its tables)
import cdsw_agent.store.jobs_models  # noqa: F401
import cdsw_agent.store.kerberos_models  # noqa: F401
import cdsw_agent.store.mlflow_models  # noqa: F401
import cdsw_agent.store.models_models  # noqa: F401
import cdsw_agent.store.promotions_models  # noqa: F401
import cdsw_agent.store.sessions_models  # noqa: F401
from cdsw_agent.store.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs table rebuilds
        compare_type=True,
        transaction_per_migration=True,
        transactional_ddl=True,  # SQLite too: its DDL is transactional under our BEGIN
    )
    with context.begin_transaction():
        context.run_migrations()
    if connection.in_transaction():  # reading the version table may have opened one
        connection.commit()
