"""The export review service behind a real JupyterHub: workflow, separation of duties, bad input,
CSRF, restarts. Tokens come from the hub; user and workspace are never taken from request bodies."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import socket
import time
from datetime import timedelta

import pytest
import requests
from click.testing import CliRunner
from PIL import Image, PngImagePlugin
from sqlalchemy import func, select

from enclave import workspaces
from enclave.cli import main as cli
from enclave.exports import release, signing
from enclave.exports.models import Database, ExportRequest, Vote, db_url
from enclave.exports.service import ExportService, Refused, now

SAFE_TABLE = b"region,count\nnorth,120\nsouth,35\neast,45\n"


def figure(comment: str = "made by olga") -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", comment)
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "green").save(out, "PNG", pnginfo=info)
    return out.getvalue()


def stored(hub) -> tuple[int, set[str]]:
    """Requests in the database and files in the blob store."""
    with Database(db_url(hub.settings), migrate=False).snapshot() as s:
        n = s.scalar(select(func.count()).select_from(ExportRequest))
    store = hub.settings.home / "exports" / "store"
    return n, {str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()}


def submit(client, token, files=None, **kw) -> dict:
    r = client(token).submit(files or {"table.csv": SAFE_TABLE}, **kw)
    assert r.status_code == 201, r.text
    return r.json()


def vote(client, token, rid, fid, decision="approve", reason="checked: counts are safe"):
    return client(token).post(f"/requests/{rid}/votes", {"file_id": fid, "decision": decision, "reason": reason})


def move(client, token, rid, to, reason="") -> requests.Response:
    return client(token).post(f"/requests/{rid}/transitions", {"to": to, "reason": reason})


def approve_all(client, tokens, req, reviewers=("rita", "rob")) -> dict:
    """Every reviewer approves every file; the last vote decides the request. Its answer."""
    for f in req["files"]:
        for who in reviewers:
            r = vote(client, tokens[who], req["id"], f["id"])
            assert r.status_code == 201, r.text
    return r.json()


def test_full_workflow_through_the_api(hub, tokens, client):
    req = submit(client, tokens["olga@ws1"], {"table.csv": SAFE_TABLE, "figure.png": figure()})
    rid = req["id"]
    assert (req["workspace"], req["requester"], req["state"]) == ("ws1", "olga", "submitted")
    assert req["datasets"] == ["people"] and req["policy_version"] == "ws1/default"
    table, png = req["files"]
    assert table["check_status"] == "pass" and png["check_status"] == "review"  # metadata to strip

    mine = client(tokens["olga"]).get("/requests?mine=1").json()
    assert rid in [r["id"] for r in mine["requests"]]
    queue = client(tokens["rita"]).get("/requests?workspace=ws1&state=submitted").json()
    assert rid in [r["id"] for r in queue["requests"]]

    # Blind review: rob does not see rita's vote until both are in.
    assert vote(client, tokens["rita"], rid, table["id"]).status_code == 201
    seen_by_rob = client(tokens["rob"]).get(f"/requests/{rid}").json()
    assert seen_by_rob["state"] == "in_review"
    assert seen_by_rob["files"][0]["votes"] == [] and seen_by_rob["files"][0]["votes_in"] == 1
    # Nor who voted first, nor when: the review's start is left out of his history too.
    assert [e["action"] for e in seen_by_rob["history"]] == ["submit"]
    assert [f["awaiting_my_vote"] for f in seen_by_rob["files"]] == [True, True]
    assert seen_by_rob["allowed"] == []  # nothing but votes can succeed now
    assert vote(client, tokens["rob"], rid, table["id"]).status_code == 201
    seen_by_rita = client(tokens["rita"]).get(f"/requests/{rid}").json()
    assert {v["reviewer"] for v in seen_by_rita["files"][0]["votes"]} == {"rita", "rob"}
    # Votes once visible to all cannot be changed.
    assert vote(client, tokens["rita"], rid, table["id"], "reject", "changed my mind").status_code == 409

    r = vote(client, tokens["rita"], rid, png["id"], "approve", "plot of safe counts")
    assert r.status_code == 201 and r.json()["state"] == "in_review"
    # The requester sees neither votes nor decisions while the request is open.
    for f in client(tokens["olga"]).get(f"/requests/{rid}").json()["files"]:
        assert f["votes"] == [] and f["decision"] is None
    # The request-level decision is not taken by hand: the vote that decides it takes it.
    r = move(client, tokens["rita"], rid, "approved", "safe aggregate outputs")
    assert r.status_code == 409 and "not taken by hand" in r.json()["error"]
    r = vote(client, tokens["rob"], rid, png["id"], "approve", "plot of safe counts")
    assert r.status_code == 201 and r.json()["state"] == "released"

    # Download: an expiring link for the requester, recorded.
    link = client(tokens["olga"]).post(f"/requests/{rid}/files/{png['id']}/links")
    assert link.status_code == 201
    data = client(tokens["olga"]).session.get(hub.url + link.json()["url"], timeout=30)
    assert data.status_code == 200
    released = Image.open(io.BytesIO(data.content))
    assert "Comment" not in released.info and release.read_watermark(data.content)

    manifest = client(tokens["olga"]).get(f"/requests/{rid}/files/{png['id']}/manifest").json()
    m = manifest["manifest"]
    assert m["file"]["sha256"] == hashlib.sha256(data.content).hexdigest()
    assert {a["reviewer"] for a in m["approvers"]} == {"rita", "rob"}
    assert m["request_id"] == rid and m["workspace"] == "ws1" and m["requester"] == "olga"
    assert m["policy"] == {"version": "ws1/default", "approvals_required": 2} and m["datasets"] == ["people"]
    assert signing.verify(signing.load_public_key(hub.settings), m, manifest["signature"])

    history = client(tokens["olga"]).get(f"/requests/{rid}").json()["history"]
    assert [(e["actor"], e["action"]) for e in history] == [
        ("olga", "submit"), ("system", "start review"), ("system", "approve"), ("system", "release"),
        ("olga", "download")]
    assert m["approved_by"]["reviewer"] == "system" and m["approved_by"]["decided_by_vote_of"] == "rob"
    assert manifest["signature_valid"] and not manifest["revoked"]

    # enclave exports verify: by hash, then a modified copy by its watermark, then an unknown file.
    path = hub.settings.home / "downloaded.png"
    path.write_bytes(data.content)
    out = CliRunner().invoke(cli, ["exports", "verify", str(path)])
    assert out.exit_code == 0, out.output
    assert rid in out.output and "rita" in out.output and "signature:  valid" in out.output
    altered = Image.open(io.BytesIO(data.content)).copy()
    altered.putpixel((0, 0), (255, 0, 0))
    info = PngImagePlugin.PngInfo()
    info.add_text(release.WATERMARK_KEY, release.read_watermark(data.content))
    buf = io.BytesIO()
    altered.save(buf, "PNG", pnginfo=info)
    path.write_bytes(buf.getvalue())
    out = CliRunner().invoke(cli, ["exports", "verify", str(path)])
    assert out.exit_code == 1 and "found by:   watermark" in out.output and "MODIFIED" in out.output
    path.write_bytes(b"region,count\nnorth,999\n")
    out = CliRunner().invoke(cli, ["exports", "verify", str(path)])
    assert out.exit_code == 1 and "NOT released" in out.output

    # Revocation stops downloads, through old links too; only an admin may revoke.
    assert move(client, tokens["rita"], rid, "revoked", "leak").status_code == 403
    assert move(client, tokens["adam"], rid, "revoked", "published by mistake").status_code == 200
    assert client(tokens["olga"]).post(f"/requests/{rid}/files/{png['id']}/links").status_code == 403
    again = client(tokens["olga"]).session.get(hub.url + link.json()["url"], timeout=30)
    assert again.status_code == 403 and "revoked" in again.text
    path.write_bytes(data.content)
    out = CliRunner().invoke(cli, ["exports", "verify", str(path)])
    assert out.exit_code == 1 and "REVOKED" in out.output


def test_verify_reports_every_release_of_the_same_bytes(hub, tokens, client):
    """A table released by two requests, the first then revoked: the file is still validly released."""
    table = b"region,count\nnorth,130\nsouth,55\neast,65\n"
    first, second = (submit(client, tokens["olga@ws1"], {"repeat.csv": table}) for _ in range(2))
    for req in (first, second):
        assert approve_all(client, tokens, req)["state"] == "released"
    assert move(client, tokens["adam"], first["id"], "revoked", "sent to the wrong party").status_code == 200
    path = hub.settings.home / "repeat.csv"
    path.write_bytes(table)

    out = CliRunner().invoke(cli, ["exports", "verify", str(path)])
    assert out.exit_code == 0, out.output
    assert "released 2 time(s)" in out.output and "VALID" in out.output
    assert first["id"] in out.output and second["id"] in out.output and "REVOKED" in out.output
    found = json.loads(CliRunner().invoke(cli, ["exports", "verify", "--json", str(path)]).output)
    assert found["valid"] and [(r["manifest"]["request_id"], r["revoked"], r["valid"]) for r in found["releases"]] == [
        (first["id"], True, False), (second["id"], False, True)]

    # Both revoked: no valid release is left.
    assert move(client, tokens["adam"], second["id"], "revoked", "withdrawn by the data holder").status_code == 200
    out = CliRunner().invoke(cli, ["exports", "verify", str(path)])
    assert out.exit_code == 1 and "no valid release" in out.output and out.output.count("REVOKED") == 2


def test_self_review_is_refused_even_holding_both_roles(hub, tokens, client):
    req = submit(client, tokens["dual@ws1"])
    r = vote(client, tokens["dual"], req["id"], req["files"][0]["id"])
    assert r.status_code == 403 and "nobody reviews a request they made" in r.json()["error"]
    queue = client(tokens["dual"]).get("/requests?workspace=ws1").json()
    assert req["id"] not in [q["id"] for q in queue["requests"]]
    # Conflicting votes leave the decision to a reviewer: never the requester, whatever roles they hold.
    assert vote(client, tokens["rita"], req["id"], req["files"][0]["id"]).status_code == 201
    assert vote(client, tokens["rob"], req["id"], req["files"][0]["id"], "reject", "too fine").status_code == 201
    r = move(client, tokens["dual"], req["id"], "rejected", "looks wrong to me")
    assert r.status_code == 403
    assert client(tokens["dual"]).get(f"/requests/{req['id']}").json()["allowed"] == [
        {"to": "withdrawn", "action": "withdraw", "reason_required": False,
         "description": "The requester takes the request back."}]


def test_no_decision_by_hand_before_the_votes_are_in(hub, tokens, client):
    req = submit(client, tokens["olga@ws1"])
    assert vote(client, tokens["rita"], req["id"], req["files"][0]["id"]).status_code == 201
    r = move(client, tokens["rita"], req["id"], "approved", "one is enough")
    assert r.status_code == 409 and "not taken by hand" in r.json()["error"]
    for to in ("rejected", "returned"):
        r = move(client, tokens["rita"], req["id"], to, "not without the others")
        assert r.status_code == 409 and "1 of the 2 votes the policy requires" in r.json()["error"]
    assert client(tokens["rita"]).get(f"/requests/{req['id']}").json()["state"] == "in_review"


def test_non_reviewers_cannot_vote(hub, tokens, client):
    req = submit(client, tokens["dual@ws1"])
    fid = req["files"][0]["id"]
    assert vote(client, tokens["olga"], req["id"], fid).status_code == 404  # an operator of the workspace
    r = vote(client, tokens["adam"], req["id"], fid)  # an admin is not a reviewer
    assert r.status_code == 403 and "not a reviewer" in r.json()["error"]
    assert vote(client, tokens["rhea"], req["id"], fid).status_code == 404  # a reviewer of another workspace
    assert client(tokens["rita"]).get(f"/requests/{req['id']}").json()["files"][0]["votes_in"] == 0


def test_reviewer_of_one_workspace_cannot_read_another(hub, tokens, client):
    req = submit(client, tokens["olga@ws1"])
    assert client(tokens["rhea"]).get(f"/requests/{req['id']}").status_code == 404
    assert client(tokens["rhea"]).get("/requests?workspace=ws1").json()["total"] == 0
    listed = client(tokens["rhea"]).get("/requests").json()["requests"]
    assert all(r["workspace"] == "ws2" for r in listed)
    r = client(tokens["rhea"]).session.get(f"{hub.service}/requests/{req['id']}/files/{req['files'][0]['id']}/raw")
    assert r.status_code == 404


def test_requester_cannot_download_before_release(hub, tokens, client):
    req = submit(client, tokens["olga@ws1"])
    fid = req["files"][0]["id"]
    r = client(tokens["olga"]).post(f"/requests/{req['id']}/files/{fid}/links")
    assert r.status_code == 403 and "not released" in r.json()["error"]
    raw = client(tokens["olga"]).session.get(f"{hub.service}/requests/{req['id']}/files/{fid}/raw")
    assert raw.status_code == 403
    approve_all(client, tokens, req)
    assert client(tokens["rita"]).post(f"/requests/{req['id']}/files/{fid}/links").status_code == 403


def test_user_and_workspace_come_from_the_token_not_the_body(hub, tokens, client, intake):
    before = stored(hub)[0]
    forged = {"files": {"table.csv": {"provenance": {}}}, "workspace": "ws2", "requester": "omar"}
    req = submit(client, tokens["olga@ws1"], manifest=forged, workspace="ws2", requester="omar", user="omar")
    assert (req["workspace"], req["requester"]) == ("ws1", "olga")
    # A token that is not a sandbox server's (no server scope) cannot submit.
    r = intake(tokens["olga"]).submit({"table.csv": SAFE_TABLE})
    assert r.status_code == 403 and "server token" in r.json()["error"]
    # A server token for a workspace the user is not an operator of.
    stray = hub.server_token("olga", "ws2")
    r = intake(stray).submit({"table.csv": SAFE_TABLE})
    assert r.status_code == 403 and "not an operator of workspace 'ws2'" in r.json()["error"]
    # The hub does not mint a token for another user's server.
    r = hub.harness.post(f"{hub.url}/hub/api/users/olga/tokens",
                         json={"scopes": ["access:servers!server=omar/ws2"]}, timeout=30)
    assert r.status_code == 400
    # An unknown token on the intake socket.
    assert intake("not-a-token").get("/requests?mine=1").status_code == 403
    assert stored(hub)[0] == before + 1


def test_export_policy_per_workspace(hub, tokens, client):
    """The workspace's export policy (set through provisioning) decides approvals and caps of the
    requests made under it, and each request records its version."""
    settings = hub.settings
    ws2 = workspaces.set_export_policy(settings, "ws2", {"approvals_required": 1, "max_files_per_request": 1})
    r = client(tokens["omar@ws2"]).submit({"a.csv": SAFE_TABLE, "b.csv": SAFE_TABLE})
    assert r.status_code == 400 and r.json()["error"] == "at most 1 files per request"
    req = submit(client, tokens["omar@ws2"])
    assert req["approvals_required"] == 1 and req["policy_version"] == ws2.export_policy_label() == f"ws2/v{ws2.export_policy_version}"
    workspaces.set_export_policy(settings, "ws2", {"max_files_per_request": settings.exports.max_files_per_request})
    assert approve_all(client, tokens, req, reviewers=("rhea",))["state"] == "released"
    # The review service no longer sets policies: provisioning does.
    assert client(tokens["adam"]).put("/policies/ws2", {"approvals_required": 3}).status_code == 404


def test_return_new_version_resets_its_votes_and_comments_visibility(hub, tokens, client, intake):
    req = submit(client, tokens["olga@ws1"], {"a.csv": SAFE_TABLE, "b.csv": b"group,count\nx,50\ny,60\n"})
    rid, (a, b) = req["id"], req["files"]
    assert vote(client, tokens["rita"], rid, a["id"], "request_changes", "round to 10").status_code == 201
    assert vote(client, tokens["rita"], rid, b["id"], "approve", "fine").status_code == 201
    assert vote(client, tokens["rob"], rid, b["id"], "approve", "fine").status_code == 201
    assert vote(client, tokens["rita"], rid, a["id"], "approve", "").status_code == 400  # a reason is required
    assert client(tokens["rita"]).post(f"/requests/{rid}/comments",
                                       {"text": "dominance worry", "visibility": "private"}).status_code == 201
    assert client(tokens["rob"]).post(f"/requests/{rid}/comments",
                                      {"text": "please round a.csv", "visibility": "public"}).status_code == 201
    assert client(tokens["olga"]).post(f"/requests/{rid}/comments",
                                       {"text": "secret", "visibility": "private"}).status_code == 403
    # rob's vote on a.csv completes the votes: they return the request, with the reasons for changes.
    r = vote(client, tokens["rob"], rid, a["id"], "request_changes", "round a.csv to base 10")
    assert r.status_code == 201 and r.json()["state"] == "returned"
    seen = client(tokens["olga"]).get(f"/requests/{rid}").json()
    assert seen["return_reason"] == "a.csv: round to 10\na.csv: round a.csv to base 10"
    assert {f["name"]: f["decision"] for f in seen["files"]} == {"a.csv": "changes_requested", "b.csv": "approved"}
    # Resubmitting the same files is refused: a.csv needs a new version first.
    r = move(client, tokens["olga@ws1"], rid, "submitted")
    assert r.status_code == 409 and "send a new version of it first" in r.json()["error"]
    assert [t["to"] for t in seen["allowed"]] == ["withdrawn"]
    assert [c["text"] for c in seen["comments"]] == ["please round a.csv"]
    # Nor does the history tell the requester that a private comment exists.
    assert [e["detail"] for e in seen["history"] if e["action"] == "comment"] == [{"visibility": "public"}]
    reviewers_view = client(tokens["rob"]).get(f"/requests/{rid}").json()
    assert [e["detail"]["visibility"] for e in reviewers_view["history"] if e["action"] == "comment"] == [
        "private", "public"]

    new_a = b"region,count\nnorth,120\nsouth,40\neast,40\n"
    r = intake(tokens["olga@ws1"]).submit({"a.csv": new_a, "b.csv": b"group,count\nx,50\ny,60\n"},
                                          path=f"/requests/{rid}/files")
    assert r.status_code == 200, r.text
    assert r.json()["changed"] == [{"name": "a.csv", "version": 2}]
    files = {f["name"]: f for f in client(tokens["rita"]).get(f"/requests/{rid}").json()["files"]}
    assert files["a.csv"]["version"] == 2 and files["a.csv"]["votes_in"] == 0
    assert files["b.csv"]["votes_in"] == 2
    assert move(client, tokens["olga@ws1"], rid, "submitted").status_code == 200
    assert vote(client, tokens["rita"], rid, files["a.csv"]["id"]).json()["state"] == "in_review"
    assert vote(client, tokens["rob"], rid, files["a.csv"]["id"]).json()["state"] == "released"
    m = client(tokens["olga"]).get(f"/requests/{rid}/files/{files['a.csv']['id']}/manifest").json()["manifest"]
    assert m["file"]["version"] == 2 and m["file"]["submitted_sha256"] == hashlib.sha256(new_a).hexdigest()


def test_checks_before_submitting_store_nothing(hub, tokens, intake):
    before = stored(hub)
    r = intake(tokens["olga@ws1"]).submit({"t.csv": b"region,count\nnorth,3\n", "../x.csv": b"a\n"}, path="/checks")
    assert r.status_code == 200, r.text
    table, bad = r.json()["files"]
    assert table["status"] == "fail" and any(c["check"] == "small_cells" for c in table["checks"])
    assert "not allowed" in bad["rejected"]
    assert stored(hub) == before


def _zip() -> bytes:
    import zipfile
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.csv", b"0" * (32 * 2**20))
    return out.getvalue()


@pytest.mark.parametrize("name, data, status, message", [
    ("t.csv", _zip(), 400, "archives and compressed files are not accepted"),
    ("big.txt", b"x" * (16 * 2**20 + 1), 413, "over the 16 MiB cap"),
    ("../../../etc/cron.d/x.csv", SAFE_TABLE, 400, "is not allowed"),
    ("t.csv", "region,count\nnörth,20\n".encode("gb18030"), 400, "is not UTF-8 text"),
    ("t.csv", b"region,count\nnorth,20\nsouth\n", 400, "ragged"),
])
def test_bad_input_is_rejected_and_nothing_stored(hub, tokens, client, name, data, status, message):
    before = stored(hub)
    r = client(tokens["olga@ws1"]).submit({"ok.csv": SAFE_TABLE, name: data})
    assert r.status_code == status and message in r.json()["error"], r.text
    assert stored(hub) == before


def test_truncated_upload_is_rejected_and_nothing_stored(hub, tokens, client):
    before = stored(hub)
    # A body cut short of its declared hash (a client that lost the end of the file).
    manifest = {"files": {"t.csv": {"sha256": hashlib.sha256(SAFE_TABLE + b"west,55\n").hexdigest()}}}
    r = client(tokens["olga@ws1"]).submit({"t.csv": SAFE_TABLE}, manifest=manifest)
    assert r.status_code == 400 and "truncated or corrupted" in r.json()["error"]
    # A file the manifest names but no part carries.
    manifest = {"files": {"t.csv": {}, "u.csv": {}}}
    r = client(tokens["olga@ws1"]).submit({"t.csv": SAFE_TABLE}, manifest=manifest)
    assert r.status_code == 400 and "no file part carries it" in r.json()["error"]
    # A connection that closes before the announced Content-Length.
    _send_partial(hub, tokens["olga@ws1"], total=200_000, sent=50_000)
    # Compressed request bodies are refused.
    r = client(tokens["olga@ws1"]).session.post(f"{hub.service}/api/requests", data=b"x",
                                                headers={"Content-Encoding": "gzip"}, timeout=30)
    assert r.status_code == 415
    assert stored(hub) == before


def _send_partial(hub, token: str, total: int, sent: int) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(hub.intake_socket))
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nt\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"context\"\r\n\r\nc\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.csv\"\r\n\r\n"
            "region,count\n").encode()
    sock.sendall((f"POST /api/requests HTTP/1.1\r\nHost: intake\r\nAuthorization: token {token}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {total}\r\n\r\n").encode()
                 + head + b"north,20\n" * ((sent - len(head)) // 9))
    sock.close()


def test_service_killed_mid_upload_keeps_committed_requests_and_no_partial_one(hub, tokens, client):
    committed = submit(client, tokens["olga@ws1"])
    store = hub.settings.home / "exports" / "store"
    # What a crash between writing blobs and committing leaves behind: a temporary file, a lone blob.
    (store / ".tmp-interrupted").write_bytes(b"partial")
    (store / "00").mkdir(exist_ok=True)
    orphan = store / "00" / ("00" + "1" * 62)
    orphan.write_bytes(b"never committed")
    before_count = stored(hub)[0]

    # An upload in flight (headers and half the body sent) when the service is killed.
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(hub.intake_socket))
    sock.sendall(f"POST /api/requests HTTP/1.1\r\nHost: intake\r\nAuthorization: token {tokens['olga@ws1']}\r\n"
                 "Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 4000000\r\n\r\n".encode()
                 + b"--zz\r\n" + b"x" * 1_000_000)
    pid = hub.service_pid()
    os.kill(pid, signal.SIGKILL)
    sock.close()
    # JupyterHub restarts its managed service.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if hub.service_pid() != pid:
                break
        except AssertionError:
            pass
        time.sleep(0.5)
    hub.wait_for_service()

    assert client(tokens["olga"]).get(f"/requests/{committed['id']}").json()["state"] == "submitted"
    count, blobs = stored(hub)
    assert count == before_count
    assert not (store / ".tmp-interrupted").exists() and not orphan.exists()
    assert any(committed["files"][0]["sha256"] in b for b in blobs)


def test_download_links_expire(hub, tokens, client):
    req = submit(client, tokens["olga@ws1"])
    approve_all(client, tokens, req)
    service = ExportService(hub.settings)
    from enclave.exports.service import Actor
    olga = Actor("olga", frozenset({"custom:exports:request!user=olga"}))
    link = service.create_link(olga, req["id"], req["files"][0]["id"], at=now() - timedelta(hours=2))
    with pytest.raises(Refused, match="expired"):
        service.download(olga, link["token"])
    fresh = service.create_link(olga, req["id"], req["files"][0]["id"])
    assert service.download(olga, fresh["token"])[1] == SAFE_TABLE
    # A link is bound to the user it was made for.
    r = client(tokens["adam"]).session.get(f"{hub.service}/download/{fresh['token']}", timeout=30)
    assert r.status_code == 404


def test_forms_need_the_xsrf_token(hub, tokens, client):
    req = submit(client, tokens["olga@ws1"])
    browser = hub.login("rita")
    page = browser.get(f"{hub.service}/requests/{req['id']}", timeout=30)
    assert page.status_code == 200 and "Vote on table.csv" in page.text
    form = {"file_id": str(req["files"][0]["id"]), "decision": "approve", "reason": "ok"}
    r = browser.post(f"{hub.service}/requests/{req['id']}/vote", data=form, allow_redirects=False, timeout=30)
    assert r.status_code == 403
    assert client(tokens["rob"]).get(f"/requests/{req['id']}").json()["files"][0]["votes_in"] == 0
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    r = browser.post(f"{hub.service}/requests/{req['id']}/vote", data={**form, "_xsrf": xsrf},
                     allow_redirects=False, timeout=30)
    assert r.status_code == 303
    assert client(tokens["rob"]).get(f"/requests/{req['id']}").json()["files"][0]["votes_in"] == 1


def test_openapi_document_lists_the_api(hub, tokens, client, intake):
    doc = requests.get(f"{hub.service}/api/openapi.json", timeout=30).json()
    assert doc["openapi"].startswith("3.1") and doc["servers"] == [{"url": "/services/exports/api"}]
    assert {"/requests", "/checks", "/requests/{request_id}/votes"} <= set(doc["paths"]) and "/policies/{workspace}" not in doc["paths"]
    sandbox_doc = intake(tokens["olga@ws1"]).get("/openapi.json").json()
    assert "/requests/{request_id}/votes" not in sandbox_doc["paths"]
    # The intake socket does not serve reviewer operations at all.
    r = intake(tokens["rita"]).post("/requests/" + "0" * 32 + "/votes", {"file_id": 1})
    assert r.status_code == 404
    assert json.loads(client(tokens["rita"]).get("/requests?state=bogus").text)["error"].startswith("unknown state")


def test_rows_of_the_workspace_released_dataset_are_caught(hub, tokens, client):
    people = (hub.settings.release_store / "people" / "data" / "people.csv").read_text().splitlines()
    extract = "\n".join([people[0]] + people[5:9]) + "\n"
    req = submit(client, tokens["olga@ws1"], {"extract.csv": extract.encode()})
    [table] = req["files"]
    assert table["check_status"] == "fail"
    [hit] = [c for c in table["checks"] if c["check"] == "microdata" and c["status"] == "fail"]
    assert "copy rows of released dataset people/people.csv" in hit["reason"]
    # A workspace without that release attached is not matched against it.
    other = submit(client, tokens["omar@ws2"], {"extract.csv": extract.encode()})
    assert not [c for c in other["files"][0]["checks"] if c["check"] == "microdata" and c["status"] == "fail"]


def test_the_votes_decide_the_request(hub, tokens, client):
    """Every file rejected: rejected. One approved, one rejected: released, only the approved file.
    A conflict: the request waits for a reviewer, who alone can decide it. Each automatic decision is
    recorded in the audit log as the deciding reviewer's, with the rule that decided as its reason."""
    two = {"a.csv": SAFE_TABLE, "b.csv": b"group,count\nx,50\ny,60\n"}

    rejected = submit(client, tokens["olga@ws1"], two)
    for f in rejected["files"]:
        for who in ("rob", "rita"):
            r = vote(client, tokens[who], rejected["id"], f["id"], "reject", "拒绝：单元格过细")
    assert r.json()["state"] == "rejected"
    [record] = hub.records("export.decision", rejected["id"])
    assert (record["actor"], record["detail"]["decision"]) == ("rita", "rejected")
    assert record["detail"]["reason"].startswith("Taken by the vote that decides it: every file is rejected")
    assert not hub.records("export.release", rejected["id"])

    mixed = submit(client, tokens["olga@ws1"], two)
    (a, b) = mixed["files"]
    for who in ("rita", "rob"):
        vote(client, tokens[who], mixed["id"], a["id"], "approve", "safe")
        r = vote(client, tokens[who], mixed["id"], b["id"], "reject", "too fine")
    assert r.json()["state"] == "released"
    seen = client(tokens["olga"]).get(f"/requests/{mixed['id']}").json()
    assert [(f["name"], f["release"] is not None) for f in seen["files"]] == [("a.csv", True), ("b.csv", False)]
    assert [(r["actor"], r["detail"]["file"]) for r in hub.records("export.release", mixed["id"])] == [("rob", "a.csv")]
    assert [r["detail"]["decision"] for r in hub.records("export.decision", mixed["id"])] == ["approved"]

    conflict = submit(client, tokens["olga@ws1"])
    fid = conflict["files"][0]["id"]
    assert vote(client, tokens["rita"], conflict["id"], fid, "approve", "safe").json()["state"] == "in_review"
    assert vote(client, tokens["rob"], conflict["id"], fid, "reject", "region south is too small").json()["state"] == "in_review"
    seen = client(tokens["rita"]).get(f"/requests/{conflict['id']}").json()
    assert seen["conflicts"] == ["table.csv"]
    assert [(t["to"], t["reason_required"]) for t in seen["allowed"]] == [("rejected", True), ("returned", True)]
    assert not hub.records("export.decision", conflict["id"])
    assert move(client, tokens["rita"], conflict["id"], "approved", "I still think it is safe").status_code == 409
    assert move(client, tokens["rita"], conflict["id"], "returned").status_code == 400  # a reason is required
    r = move(client, tokens["rita"], conflict["id"], "returned", "merge south into a larger region")
    assert r.status_code == 200 and r.json()["state"] == "returned"
    [record] = hub.records("export.decision", conflict["id"])
    assert (record["actor"], record["detail"]) == ("rita", {"request_id": conflict["id"], "decision": "returned",
                                                            "reason": "merge south into a larger region"})


def test_the_queue_lists_what_awaits_each_reviewers_vote_first(hub, tokens, client):
    older = submit(client, tokens["olga@ws1"], title="先提交的请求")
    newer = submit(client, tokens["olga@ws1"], title="后提交的请求")
    assert vote(client, tokens["rita"], older["id"], older["files"][0]["id"]).status_code == 201

    def queue(who: str, query: str = "") -> list[tuple[str, bool]]:
        r = client(tokens[who]).get(f"/requests?workspace=ws1{query}")
        assert r.status_code == 200, r.text
        return [(q["id"], q["awaiting_my_vote"]) for q in r.json()["requests"]]

    # rita voted on the older one: the newer awaits her; rob has both to vote on, newest first.
    assert (newer["id"], True) in queue("rita") and (older["id"], False) in queue("rita")
    assert [rid for rid, awaits in queue("rita") if awaits][:1] == [newer["id"]]
    assert queue("rob")[:2] == [(newer["id"], True), (older["id"], True)]
    mine = [rid for rid, _ in queue("rita", "&awaiting_my_vote=1")]
    assert newer["id"] in mine and older["id"] not in mine
    # Every request awaiting rita's vote comes before every other one.
    flags = [awaits for _, awaits in queue("rita")]
    assert flags == sorted(flags, reverse=True)
    # Requesters and admins vote on nothing.
    assert not any(awaits for _, awaits in queue("adam"))
    assert client(tokens["olga"]).get("/requests?mine=1&awaiting_my_vote=1").json()["total"] == 0


def test_requests_voted_on_before_votes_decided_are_settled_at_start(hub, tokens, client):
    """A request whose votes were all in under rules that waited for a reviewer's request-level
    approval: the service's start (``settle``) takes the steps its votes decide, as that vote would now."""
    req = submit(client, tokens["olga@ws1"])
    fid = req["files"][0]["id"]
    with Database(db_url(hub.settings), migrate=False).transaction() as s:
        for reviewer in ("rita", "rob"):
            s.add(Vote(file_id=fid, reviewer=reviewer, decision="approve", reason="审核通过：计数安全。", at=now()))
        s.get(ExportRequest, req["id"]).state = "in_review"
    assert client(tokens["rita"]).get(f"/requests/{req['id']}").json()["state"] == "in_review"

    service = ExportService(hub.settings)
    try:
        assert service.settle() == 1
        assert service.settle() == 0  # nothing left to take
    finally:
        service.close()
    settled = client(tokens["olga"]).get(f"/requests/{req['id']}").json()
    assert settled["state"] == "released" and settled["files"][0]["release"] is not None
    [decision] = hub.records("export.decision", req["id"])
    assert decision["actor"] == "rob" and decision["detail"]["decision"] == "approved"
