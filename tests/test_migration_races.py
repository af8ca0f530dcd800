"""Migrations under concurrency: every process that opens a database migrates it (enclave.migrate).

After an upgrade, the hub, the review service, the provisioning service and a CLI command all open
Enclave's database at once, each finding it migrations behind; the review service and the CLI do
the same to the review service's. Each must find it at the newest revision, none may fail on what
another has just migrated, and each migration runs once.
"""

from __future__ import annotations

import importlib
import multiprocessing
from pathlib import Path

import pytest
from enclave_testing import alembic_revisions

from enclave import db, migrate
from enclave.exports import models as exports_models

PROCESSES = 4
ROUNDS = 3
# Two migrations behind each: the processes must not interleave between two migrations either.
DATABASES = {"enclave": (db.MIGRATIONS, "0003"), "exports": (exports_models.MIGRATIONS, "0001")}


def _open_at_once(url: str, migrations: str, barrier, results) -> None:
    importlib.import_module("alembic.command")  # imported before the barrier: the processes race on the database

    barrier.wait()
    try:
        migrate.upgrade(url, Path(migrations))
        results.put("ok")
    except Exception as exc:  # what the process's user would have seen
        results.put(f"{type(exc).__name__}: {exc}"[:500])


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request, tmp_path):
    if request.param == "sqlite":
        names = iter(range(1000))
        return lambda name: f"sqlite:///{tmp_path / f'{name}-{next(names)}.sqlite'}"
    return request.getfixturevalue("postgres").new_database


@pytest.mark.parametrize("name", DATABASES)
def test_processes_opening_a_database_a_revision_behind_at_once_all_find_it_migrated(new_database, name):
    from alembic import command

    migrations, previous = DATABASES[name]
    ctx = multiprocessing.get_context("spawn")
    for _ in range(ROUNDS):
        url = new_database(name)
        command.upgrade(migrate.alembic_config(url, migrations), previous)
        barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
        processes = [ctx.Process(target=_open_at_once, args=(url, str(migrations), barrier, results))
                     for _ in range(PROCESSES)]
        for p in processes:
            p.start()
        outcomes = [results.get(timeout=120) for _ in processes]
        for p in processes:
            p.join(30)
        assert outcomes == ["ok"] * PROCESSES
        assert alembic_revisions(url) == migrate.head_revisions(migrations)


# Three migrations of a database of its own; the last one looks at the database from another
# connection, as another process opening it would, and writes down the revision it finds there.
_ENV = """
from alembic import context
from sqlalchemy import MetaData

from enclave.exports.models import make_engine
from enclave.migrate import run_online

run_online(make_engine(context.config.get_main_option("sqlalchemy.url")), MetaData())
"""
_MIGRATION = """
import sqlite3
from pathlib import Path

from alembic import op

revision = {revision!r}
down_revision = {down_revision!r}


def upgrade():
    op.execute("CREATE TABLE table_{revision} (id INTEGER)")
    if revision == "0003":
        path = op.get_bind().engine.url.database
        seen = sqlite3.connect(path).execute("SELECT version_num FROM alembic_version").fetchall()
        Path(path + ".seen").write_text(" ".join(row[0] for row in seen))
"""


def test_a_sqlite_database_is_seen_at_its_old_revision_until_its_last_migration_is_done(tmp_path):
    """Alembic gives each SQLite migration a transaction of its own, and so let go of the write lock
    between two of them: another process took it there, ran the next migration, and the first then
    ran it again ("duplicate column name"). One transaction holds the lock from the revision read to
    the last migration."""
    from alembic import command

    migrations = tmp_path / "migrations"
    (migrations / "versions").mkdir(parents=True)
    (migrations / "env.py").write_text(_ENV)
    for revision, down_revision in (("0001", None), ("0002", "0001"), ("0003", "0002")):
        (migrations / "versions" / f"{revision}.py").write_text(
            _MIGRATION.format(revision=revision, down_revision=down_revision))
    database = tmp_path / "db.sqlite"
    url = f"sqlite:///{database}"
    command.upgrade(migrate.alembic_config(url, migrations), "0001")

    migrate.upgrade(url, migrations)

    assert (tmp_path / "db.sqlite.seen").read_text() == "0001"
    assert alembic_revisions(url) == {"0003"}
