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
