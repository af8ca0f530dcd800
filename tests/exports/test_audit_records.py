"""Every export operation in the audit log: one test per ``export.*`` action.

Each test acts through the real paths (submissions over the intake socket, as a sandbox's server
sends them; votes, decisions and downloads through the proxy), finds the operation's record in the
audit log with the acting user, the request's workspace and the detail the action lists, and runs
``enclave audit verify``.
"""

from __future__ import annotations

from enclave.exports import workflow

from .conftest import sha
from .test_api import SAFE_TABLE, approve_all, figure, move, submit, vote

SMALL_TABLE = b"region,count\nnorth,3\nsouth,40\n"


def record_of(hub, action: str, request_id: str) -> dict:
    """The one record of ``action`` for the request."""
    records = hub.records(action, request_id)
    assert len(records) == 1, f"{len(records)} {action} records for request {request_id}: {records}"
    return records[0]


def assert_by(record: dict, actor: str, workspace: str = "ws1") -> None:
    """Handed over by the review service, for ``actor`` in ``workspace``."""
    assert (record["source"], record["actor"], record["outcome"]) == ("exports", actor, "ok")
    assert (record["workspace"], record["sandbox"]) == (workspace, None)


def test_a_submission_is_recorded_with_its_files(hub, tokens, intake):
    files = {"table.csv": SAFE_TABLE, "figure.png": figure()}
    r = intake(tokens["olga@ws1"]).submit(files, title="各区人数 by region")
    assert r.status_code == 201, r.text
    rid = r.json()["id"]

    record = record_of(hub, "export.request", rid)
    assert_by(record, "olga")
    assert record["detail"] == {
        "request_id": rid, "title": "各区人数 by region", "justification": "Tables for the report.",
        "files": [{"name": name, "sha256": sha(data), "size": len(data)} for name, data in files.items()],
    }
    hub.verify_audit_log()


def test_each_file_s_checks_are_recorded_and_so_are_a_new_version_s(hub, tokens, client, intake):
    req = submit(client, tokens["olga@ws1"], {"safe.csv": SAFE_TABLE, "small.csv": SMALL_TABLE})
    rid = req["id"]
    safe, small = hub.records("export.check", rid)
    for record in (safe, small):
        assert_by(record, "olga")
    assert (safe["detail"]["file"], safe["detail"]["status"], safe["detail"]["sha256"]) == \
        ("safe.csv", "pass", sha(SAFE_TABLE))
    assert (small["detail"]["file"], small["detail"]["status"], small["detail"]["sha256"]) == \
        ("small.csv", "fail", sha(SMALL_TABLE))
    # The findings, small: which check, its status, the reason's stable code and the reason (in
    # English); the worst first.
    first = small["detail"]["checks"][0]
    assert set(first) == {"check", "status", "code", "reason"}
    assert (first["check"], first["status"], first["code"]) == ("small_cells", "fail", "check.small_cells.below_threshold")
    assert "under the minimum" in first["reason"]

    # Returned, and a new version of small.csv sent from the sandbox: its checks are a record too.
    for who in ("rita", "rob"):
        assert vote(client, tokens[who], rid, req["files"][0]["id"], "approve", "safe").status_code == 201
        assert vote(client, tokens[who], rid, req["files"][1]["id"], "request_changes", "a cell under 10").status_code == 201
    assert client(tokens["olga"]).get(f"/requests/{rid}").json()["state"] == "returned"
    rounded = b"region,count\nnorth,10\nsouth,40\n"
    r = intake(tokens["olga@ws1"]).submit({"safe.csv": SAFE_TABLE, "small.csv": rounded},
                                          path=f"/requests/{rid}/files")
    assert r.status_code == 200 and r.json()["changed"] == [{"name": "small.csv", "version": 2}], r.text
    records = hub.records("export.check", rid)
    assert len(records) == 3, "an unchanged file is not checked again"
    assert_by(records[2], "olga")
    assert (records[2]["detail"]["file"], records[2]["detail"]["status"], records[2]["detail"]["sha256"]) == \
        ("small.csv", "pass", sha(rounded))
    hub.verify_audit_log()


def test_each_vote_is_recorded_with_the_version_voted_on(hub, tokens, client):
    req = submit(client, tokens["olga@ws1"])
    rid, table = req["id"], req["files"][0]
    assert vote(client, tokens["rita"], rid, table["id"], "reject", "a count of 35 is too precise").status_code == 201
    # Until the second vote is in, a reviewer may change theirs: the change is a vote of its own.
    assert vote(client, tokens["rita"], rid, table["id"], "approve", "35 is above the minimum").status_code == 201

    first, changed = hub.records("export.vote", rid)
    for record in (first, changed):
        assert_by(record, "rita")
    assert first["detail"] == {"request_id": rid, "file": "table.csv", "sha256": sha(SAFE_TABLE),
                               "decision": "reject", "reason": "a count of 35 is too precise"}
    assert changed["detail"] == {"request_id": rid, "file": "table.csv", "sha256": sha(SAFE_TABLE),
                                 "decision": "approve", "reason": "35 is above the minimum"}
    hub.verify_audit_log()


def test_a_reason_longer_than_the_log_keeps_whole_is_refused_before_anything_is_done(hub, tokens, client):
    req = submit(client, tokens["olga@ws1"])
    r = vote(client, tokens["rita"], req["id"], req["files"][0]["id"], "approve", "理由" * 2501)
    assert r.status_code == 400 and "at most 5000 characters" in r.json()["error"]
    r = move(client, tokens["olga@ws1"], req["id"], "withdrawn", "x" * 5001)
    assert r.status_code == 400 and "at most 5000 characters" in r.json()["error"]
    assert client(tokens["rita"]).get(f"/requests/{req['id']}").json()["state"] == "submitted"
    assert hub.records("export.vote", req["id"]) == hub.records("export.decision", req["id"]) == []


def test_every_decision_is_recorded_with_its_reason(hub, tokens, client, intake):
    """Decisions by hand carry the reason given; those the votes take name the reviewer whose vote
    decided, with the rule as the reason (and a return's reasons for the changes)."""
    by_vote = workflow.BY_VOTE
    returned = submit(client, tokens["olga@ws1"])
    fid = returned["files"][0]["id"]
    assert vote(client, tokens["rita"], returned["id"], fid, "approve", "fine").status_code == 201
    assert vote(client, tokens["rob"], returned["id"], fid, "request_changes", "说明各区的划分").status_code == 201
    r = intake(tokens["olga@ws1"]).submit({"table.csv": b"region,count\nnorth,120\nsouth,40\n"},
                                          path=f"/requests/{returned['id']}/files")
    assert r.status_code == 200, r.text
    assert move(client, tokens["olga@ws1"], returned["id"], "submitted").status_code == 200
    assert move(client, tokens["olga@ws1"], returned["id"], "withdrawn", "no longer needed").status_code == 200
    rejected = submit(client, tokens["olga@ws1"])
    for who in ("rita", "rob"):
        r = vote(client, tokens[who], rejected["id"], rejected["files"][0]["id"], "reject", "too fine")
        assert r.status_code == 201
    conflict = submit(client, tokens["olga@ws1"])
    for who, decision in (("rita", "approve"), ("rob", "reject")):
        assert vote(client, tokens[who], conflict["id"], conflict["files"][0]["id"], decision, "因为").status_code == 201
    assert move(client, tokens["rob"], conflict["id"], "rejected", "cells too small").status_code == 200
    approved = submit(client, tokens["olga@ws1"])
    approve_all(client, tokens, approved)  # rob's vote is the last

    decisions = [(r["actor"], r["detail"]) for r in hub.records("export.decision", returned["id"])]
    return_rule = workflow.TRANSITIONS[(workflow.IN_REVIEW, workflow.RETURNED, workflow.SYSTEM)].description
    assert decisions == [
        ("rob", {"request_id": returned["id"], "decision": "returned",
                 "reason": f"{return_rule}\ntable.csv: 说明各区的划分"}),
        ("olga", {"request_id": returned["id"], "decision": "submitted"}),  # resubmitted, no reason needed
        ("olga", {"request_id": returned["id"], "decision": "withdrawn", "reason": "no longer needed"}),
    ]
    record = record_of(hub, "export.decision", rejected["id"])
    assert_by(record, "rob")
    assert record["detail"] == {"request_id": rejected["id"], "decision": "rejected",
                                "reason": by_vote + "every file is rejected."}
    record = record_of(hub, "export.decision", conflict["id"])
    assert_by(record, "rob")
    assert record["detail"] == {"request_id": conflict["id"], "decision": "rejected", "reason": "cells too small"}
    record = record_of(hub, "export.decision", approved["id"])
    assert_by(record, "rob")
    assert record["detail"]["decision"] == "approved" and record["detail"]["reason"].startswith(by_vote)
    hub.verify_audit_log()


def test_each_released_file_is_recorded_with_the_bytes_handed_out(hub, tokens, client):
    req = submit(client, tokens["olga@ws1"], {"table.csv": SAFE_TABLE, "figure.png": figure()})
    rid, (table, png) = req["id"], req["files"]
    for who in ("rita", "rob"):
        assert vote(client, tokens[who], rid, table["id"], "approve", "safe counts").status_code == 201
        r = vote(client, tokens[who], rid, png["id"], "reject", "shows a small group")
    assert r.json()["state"] == "released"  # rob's last vote decided it

    # Only the approved file is released; the record names the deciding reviewer and the released bytes
    # (metadata stripped, watermarked where the format allows), as its signed manifest does.
    record = record_of(hub, "export.release", rid)
    assert_by(record, "rob")
    manifest = client(tokens["olga"]).get(f"/requests/{rid}/files/{table['id']}/manifest").json()["manifest"]
    assert record["detail"] == {"request_id": rid, "file": "table.csv", "sha256": manifest["file"]["sha256"],
                                "release_id": manifest["release_id"]}
    hub.verify_audit_log()


def test_a_download_is_recorded(hub, tokens, client):
    req = submit(client, tokens["olga@ws1"])
    rid, fid = req["id"], req["files"][0]["id"]
    approve_all(client, tokens, req)
    link = client(tokens["olga"]).post(f"/requests/{rid}/files/{fid}/links")
    assert link.status_code == 201
    assert hub.records("export.download", rid) == [], "a link is not a download"
    data = client(tokens["olga"]).session.get(hub.url + link.json()["url"], timeout=30)
    assert data.status_code == 200

    record = record_of(hub, "export.download", rid)
    assert_by(record, "olga")
    release_id = record_of(hub, "export.release", rid)["detail"]["release_id"]
    assert record["detail"] == {"request_id": rid, "release_id": release_id, "file": "table.csv",
                                "sha256": sha(data.content)}
    hub.verify_audit_log()


def test_a_revocation_is_recorded_for_each_release(hub, tokens, client):
    req = submit(client, tokens["olga@ws1"], {"a.csv": SAFE_TABLE, "b.csv": b"group,count\nx,50\ny,60\n"})
    rid = req["id"]
    approve_all(client, tokens, req)
    assert move(client, tokens["adam"], rid, "revoked", "released by mistake").status_code == 200

    released = {r["detail"]["release_id"] for r in hub.records("export.release", rid)}
    revoked = hub.records("export.revoke", rid)
    assert len(released) == 2 and {r["detail"]["release_id"] for r in revoked} == released
    for record in revoked:
        assert_by(record, "adam")
        assert record["detail"] == {"request_id": rid, "release_id": record["detail"]["release_id"],
                                    "reason": "released by mistake"}
    hub.verify_audit_log()
