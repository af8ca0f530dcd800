"""Migrations under concurrency: every process that opens a database migrates it (enclave.migrate).

After an upgrade, the hub, the review service, the provisioning service and a CLI command all open
Enclave's database at once, each finding it a revision behind; the review service and the CLI do
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
DATABASES = {"enclave": (db.MIGRATIONS, "0004"), "exports": (exports_models.MIGRATIONS, "0001")}


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
