"""Alembic environment: the engine is handed over by cdsw_agent.store.db.Database."""

from alembic import context

import cdsw_agent.store.experiments_models  # noqa: F401  (each registers its tables)
import cdsw_agent.store.jobs_models  # noqa: F401
import cdsw_agent.store.models_models  # noqa: F401
import cdsw_agent.store.sessions_models  # noqa: F401
from cdsw_agent.store.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs table rebuilds
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
