"""The demo as ``enclave demo`` seeds it: every step it records is a record the audit log takes."""

from __future__ import annotations

from enclave import demo
from enclave.audit import records
from enclave.settings import Settings


def test_every_record_of_the_demos_seeding_is_one_the_audit_log_takes(tmp_path):
    taken = []

    def record(action, workspace=None, detail=None):
        # What the audit service checks before it appends (enclave.audit.records.check).
        taken.append(records.check({"source": "cli", "actor": "root", "action": action, "outcome": "ok",
                                    "workspace": workspace, "detail": detail}))

    created = demo.seed(Settings(home=tmp_path), record)
    assert created and "data.release_published" in [r.action for r in taken]
    published = next(r for r in taken if r.action == "data.release_published")
    # Verdicts only: a gate's detail and reason may name values of the data.
    assert published.detail["gates"] and all(set(g) == {"gate", "table", "value", "threshold", "passed"}
                                              for g in published.detail["gates"])
