"""Fail closed: what the audit log cannot record, the review service does not do.

The audit service is stopped as JupyterHub stops a service (SIGTERM). JupyterHub starts a managed
service that exited again at its next poll, every 30 s; so that the audit log stays closed for as
long as the test needs, the test holds the log's writer lock meanwhile, as a service that is still
stopping would: the hub's new audit service waits for the lock and takes no record until then.
"""

from __future__ import annotations

import contextlib
import os
import signal

from sqlalchemy import select

from enclave.audit.writer import WriterLock
from enclave.exports.models import Base, db_url, make_engine

from .conftest import accepts_connections
from .test_api import SAFE_TABLE, move, submit, vote

AUDIT_SERVICE = "enclave.audit.service"
REFUSAL = "the audit log cannot record this; nothing was changed"


@contextlib.contextmanager
def audit_service_stopped(hub):
    """The hub's audit service stopped for the while; running again (the hub's next one) after."""
    pid = hub.service_pid(AUDIT_SERVICE)
    os.kill(pid, signal.SIGTERM)
    lock = WriterLock(hub.settings.audit_db_url, None, wait=60)  # free once the service has exited
    try:
        assert not accepts_connections(hub.audit_socket), "the audit service still takes records"
        yield
    finally:
        lock.release()
        hub.wait_for_restart(pid, AUDIT_SERVICE)


def database(hub) -> dict[str, list]:
    """Every row of every table of the review service's database."""
    engine = make_engine(db_url(hub.settings))
    try:
        with engine.connect() as c:
            return {table.name: c.execute(select(table)).all() for table in Base.metadata.sorted_tables}
    finally:
        engine.dispose()


def assert_refused(r) -> None:
    assert r.status_code == 503, f"{r.status_code}: {r.text}"
    assert r.json()["error"] == REFUSAL


def test_nothing_is_done_that_the_audit_log_cannot_record(hub, tokens, client, intake):
    ready = submit(client, tokens["olga@ws1"])  # one vote in: the next one decides it
    assert vote(client, tokens["rita"], ready["id"], ready["files"][0]["id"]).status_code == 201
    waiting = submit(client, tokens["olga@ws1"])  # no vote yet
    before = database(hub)

    with audit_service_stopped(hub):
        assert_refused(vote(client, tokens["rita"], waiting["id"], waiting["files"][0]["id"]))
        assert_refused(intake(tokens["olga@ws1"]).submit({"table.csv": SAFE_TABLE}, title="while unrecorded"))
        # The deciding vote: not the vote, nor the decision, nor the release it would take.
        assert_refused(vote(client, tokens["rob"], ready["id"], ready["files"][0]["id"]))
        assert database(hub) == before

    # The audit log takes records again: so does the review service, and each is recorded.
    assert vote(client, tokens["rita"], waiting["id"], waiting["files"][0]["id"]).status_code == 201
    r = intake(tokens["olga@ws1"]).submit({"table.csv": SAFE_TABLE}, title="once recorded")
    assert r.status_code == 201, r.text
    assert vote(client, tokens["rob"], ready["id"], ready["files"][0]["id"]).json()["state"] == "released"
    assert [v["actor"] for v in hub.records("export.vote", waiting["id"])] == ["rita"]
    assert len(hub.records("export.request", r.json()["id"])) == 1
    assert [d["detail"]["decision"] for d in hub.records("export.decision", ready["id"])] == ["approved"]
    hub.verify_audit_log()
