"""Alembic, as every Enclave database uses it: migrations run in code, from the package.

Importing Alembic takes a good part of a second, and every command that opens a database asks for
the newest schema: a SQLite database already at the newest revision (read with the standard
library) is left alone without it.
"""

from __future__ import annotations

import ast
import re
import sqlite3
from pathlib import Path
from urllib.parse import quote

# ``revision = '0002'`` and ``down_revision = '0001'`` (or a tuple, for a merge) in a migration.
_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.MULTILINE)


def alembic_config(url: str, script_location: Path):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, script_location: Path) -> None:
    """Bring the database to the newest migration (creating it if need be)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        if sqlite_revisions(path) == head_revisions(script_location):
            return
    from alembic import command

    command.upgrade(alembic_config(url, script_location), "head")


def head_revisions(script_location: Path) -> set[str]:
    """The newest revisions of the migrations in ``script_location``: those no other one follows."""
    revisions, followed = set(), set()
    for script in (script_location / "versions").glob("*.py"):
        for name, value in _REVISION_LINE.findall(script.read_text(encoding="utf-8")):
            found = ast.literal_eval(value)
            found = set(found) if isinstance(found, (tuple, list)) else {found} if found else set()
            (revisions if name == "revision" else followed).update(found)
    return revisions - followed


def sqlite_revisions(path: Path) -> set[str] | None:
    """The revisions Alembic stamped on the SQLite database at ``path``; None when there is no
    database there yet, or it cannot be read (Alembic then creates or explains it)."""
    if not path.is_file():
        return None
    try:
        connection = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        return {row[0] for row in connection.execute("SELECT version_num FROM alembic_version")}
    except sqlite3.Error:
        return None
    finally:
        connection.close()


# The PostgreSQL advisory lock a migration holds for its transaction (any number: advisory locks are
# per database, and nothing else of Enclave takes one).
_MIGRATION_LOCK = 0x656E636C  # "encl"


def run_online(engine, metadata) -> None:
    """The body of a migrations ``env.py``: run the pending migrations on ``engine``.

    Every process that opens a database migrates it, and after an upgrade several do so at once
    (the hub, the services, a CLI command). One migrates; the others wait for it and then find
    nothing left to do. So the whole run is one transaction of ours, which Alembic joins. It takes
    the database's migration lock as it begins and holds it from the revision read to the last
    migration: on PostgreSQL an advisory lock; on SQLite the write lock, which the engines of
    ``enclave.db`` and the export service take as a transaction begins (the audit log is migrated
    only by its one writer, under the writer's lock). Left to itself, Alembic gives each SQLite
    migration a transaction of its own and lets the lock go between two of them, where another
    process could run the next migration before this one ran it again."""
    from alembic import context
    from sqlalchemy import text

    with engine.connect() as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        # render_as_batch: SQLite can only alter tables by copying them.
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        context.run_migrations()
    engine.dispose()
