"""Alembic, as every Enclave database uses it: migrations run in code, from the package."""

from __future__ import annotations

from pathlib import Path


def alembic_config(url: str, script_location: Path):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, script_location: Path) -> None:
    """Bring the database to the newest migration (creating it if need be)."""
    from alembic import command

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url, script_location), "head")


def run_online(engine, metadata) -> None:
    """The body of a migrations ``env.py``: run the pending migrations on ``engine``."""
    from alembic import context

    with engine.connect() as connection:
        # render_as_batch: SQLite can only alter tables by copying them.
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
