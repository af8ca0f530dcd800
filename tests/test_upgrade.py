"""Upgrades: databases a previous release left migrate when the hub starts (docs/production.md).

A deployment on PostgreSQL, as docker-compose.yml runs it, is made and used; its databases are then
taken back to the schema of the release before the newest migrations (Alembic's downgrades, which
keep the data), and the hub is started again on them: every database is at its newest revision, and
what was there before is still there.
"""

from __future__ import annotations

import pytest
from conftest import PASSWORD
from enclave_testing import alembic_revisions as revisions

from enclave import db, migrate
from enclave.exports import models as exports_models

# What the release before this one had: Enclave's database before language preferences (0005), the
# review service's before policies moved to workspaces (0002).
PREVIOUS = {"enclave": (db.MIGRATIONS, "0004"), "exports": (exports_models.MIGRATIONS, "0001")}


@pytest.fixture(scope="module")
def urls(postgres):
    return {name: postgres.new_database(name) for name in ("enclave", "hub", "exports", "audit")}


def test_databases_of_the_previous_release_migrate_at_start(hub_factory, urls):
    from alembic import command

    hub = hub_factory("upgrade", ENCLAVE_DB_URL=urls["enclave"], ENCLAVE_HUB__DB_URL=urls["hub"],
                      ENCLAVE_EXPORTS__DB_URL=urls["exports"], ENCLAVE_AUDIT__DB_URL=urls["audit"])
    try:
        hub.start()
        for args in (("user", "add", "alice", "--role", "operator", "--password-stdin"),
                     ("workspace", "create", "alpha"),
                     ("workspace", "add-member", "alpha", "alice", "--role", "operator")):
            r = hub.enclave(*args, input=PASSWORD + "\n")
            assert r.returncode == 0, (args, r.stderr)
        hub.login("alice", PASSWORD)
        hub.stop()

        for name, (migrations, revision) in PREVIOUS.items():
            command.downgrade(migrate.alembic_config(urls[name], migrations), revision)
            assert revisions(urls[name]) == {revision}

        hub.start()  # the hub, the review service and the audit service each open theirs
        hub.login("alice", PASSWORD)
        for name, (migrations, _) in PREVIOUS.items():
            assert revisions(urls[name]) == migrate.head_revisions(migrations), name
        shown = hub.enclave("workspace", "show", "alpha")
        assert shown.returncode == 0 and "alice" in shown.stdout
        # What the newest migration added is in use.
        assert hub.enclave("user", "set-language", "alice", "zh_CN").returncode == 0
    finally:
        hub.stop()  # before the session's PostgreSQL cluster stops, or its shutdown waits on a lost database
