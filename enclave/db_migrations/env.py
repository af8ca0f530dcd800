"""Alembic environment of Enclave's own database (run through ``enclave.db``)."""

from alembic import context

from enclave.db import Base, engine_for

config = context.config


def run_migrations() -> None:
    engine = engine_for(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        # render_as_batch: SQLite can only alter tables by copying them.
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
