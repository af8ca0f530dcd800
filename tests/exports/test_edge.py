"""The edge of the review service: who is asking is settled before anything they sent is parsed,
and input the OpenAPI document does not allow is a 400 naming the field, never a crash or a hang."""

from __future__ import annotations

import json

import pytest
import requests

from .test_api import SAFE_TABLE, submit

DEEP = "[" * 5000 + "]" * 5000
# The operations that write to the audit log, and so fail closed with 503 when it cannot record.
AUDITED = {("post", "/requests"), ("post", "/requests/{request_id}/files"), ("post", "/requests/{request_id}/votes"),
           ("post", "/requests/{request_id}/transitions"), ("post", "/sealed-runs"),
           ("post", "/sealed-runs/{run_id}/withdraw"), ("post", "/sealed-runs/{run_id}/decision"),
           ("put", "/workspaces/{workspace}/sealed-run-policy")}
# Lists of the caller's own: nothing to be missing (a sandbox's list answers 404 when its workspace is gone).
LISTS = {("get", "/requests"), ("get", "/sealed-runs/awaiting")}
HUGE_FILE_ID = "9" * 5000


def comment_as_browser_with_a_foreign_xsrf_cookie(hub, request_id: str) -> requests.Response:
    """olga, logged in to the service in her browser, POSTs a comment with an _xsrf cookie that is not
    her session's (omar's) and no Sec-Fetch-Mode header, as an old or non-browser client does."""
    olga, omar = hub.login("olga"), hub.login("omar")
    for browser in (olga, omar):
        assert browser.get(f"{hub.service}/", timeout=30).status_code == 200  # through the service's OAuth
    path = "/services/exports/"
    foreign = omar.cookies.get("_xsrf", path=path)
    (own,) = [c for c in olga.cookies if c.name == "_xsrf" and c.path == path]
    olga.cookies.set("_xsrf", foreign, domain=own.domain, path=path)
    assert olga.cookies.get("_xsrf", path=path) == foreign
    return olga.post(f"{hub.service}/api/requests/{request_id}/comments", json={"text": "hello"},
                     headers={"X-XSRFToken": foreign}, timeout=10)


def test_a_request_whose_xsrf_cookie_is_not_the_session_s_freezes_nothing(hub, tokens, client):
    rid = submit(client, tokens["olga@ws1"])["id"]
    r = comment_as_browser_with_a_foreign_xsrf_cookie(hub, rid)
    assert r.status_code == 403 and r.json()["error"].startswith("not authenticated"), r.text
    # Everyone else is still answered, promptly: tokens, cookies, pages.
    for token, path in ((tokens["rita"], f"/requests/{rid}"), (tokens["olga"], "/requests?mine=1"),
                        (tokens["omar@ws2"], "/requests?mine=1"), (tokens["adam"], f"/requests/{rid}")):
        assert client(token).session.get(f"{hub.service}/api{path}", timeout=1).status_code == 200
    rita = hub.login("rita")
    assert rita.get(f"{hub.service}/queue", timeout=30).status_code == 200
    assert rita.get(f"{hub.service}/requests/{rid}", timeout=1).status_code == 200
    assert requests.get(f"{hub.service}/api/openapi.json", timeout=1).status_code == 200


@pytest.mark.parametrize(("query", "field"), [
    ("page=99999999999999999999", "page"),
    ("page=" + "9" * 5000, "page"),
    ("page=0", "page"),
    ("max_age_days=99999999999", "max_age_days"),
    ("max_age_days=-1", "max_age_days"),
    ("state=bogus", "state"),
    ("mine=perhaps", "mine"),
    ("stat=submitted", "stat"),
])
def test_query_parameters_out_of_range_are_bad_input(hub, tokens, client, query, field):
    for token in (tokens["rita"], tokens["olga"]):
        r = client(token).get(f"/requests?{query}")
        assert r.status_code == 400 and field in r.json()["error"], r.text
    # The queue page takes the same filters, with the same rules (a field its form does not have, it ignores).
    r = client(tokens["rita"]).session.get(f"{hub.service}/queue?{query}", timeout=30)
    assert (r.status_code == 400 and field in r.text) if field != "stat" else r.status_code == 200, r.text


def test_file_ids_out_of_range_are_bad_input(hub, tokens, client):
    rid = submit(client, tokens["olga@ws1"])["id"]
    rita, olga = client(tokens["rita"]), client(tokens["olga"])
    for fid in (HUGE_FILE_ID, str(2**64), "0"):
        for r in (olga.get(f"/requests/{rid}/files/{fid}/manifest"), olga.post(f"/requests/{rid}/files/{fid}/links"),
                  rita.session.get(f"{hub.service}/requests/{rid}/files/{fid}/raw", timeout=30)):
            assert r.status_code == 400 and "file_id" in r.text, r.text
    for body in ({"file_id": 2**64, "decision": "approve", "reason": "fine"}, {"file_id": 0, "decision": "approve",
                                                                               "reason": "fine"}):
        r = rita.post(f"/requests/{rid}/votes", body)
        assert r.status_code == 400 and "file_id" in r.json()["error"], r.text
    r = rita.post(f"/requests/{rid}/comments", {"text": "see this", "file_id": 2**64})
    assert r.status_code == 400 and "file_id" in r.json()["error"], r.text


@pytest.mark.parametrize("value", [["a", "list"], 42, {"an": "object"}, None])
def test_text_fields_of_other_types_are_bad_input(hub, tokens, client, value):
    rid = submit(client, tokens["olga@ws1"])["id"]
    fid = client(tokens["rita"]).get(f"/requests/{rid}").json()["files"][0]["id"]
    for path, body, field in (
        ("comments", {"text": value}, "text"),
        ("comments", {"text": "fine", "visibility": value}, "visibility"),
        ("transitions", {"to": "returned", "reason": value}, "reason"),
        ("transitions", {"to": value}, "to"),
        ("votes", {"file_id": fid, "decision": "approve", "reason": value}, "reason"),
    ):
        r = client(tokens["rita"]).post(f"/requests/{rid}/{path}", body)
        assert r.status_code == 400 and field in r.json()["error"], (path, body, r.text)
    assert client(tokens["rita"]).get(f"/requests/{rid}").json()["state"] == "submitted"


def test_overlong_text_is_refused_at_the_edge(hub, tokens, client):
    rid = submit(client, tokens["olga@ws1"])["id"]
    r = client(tokens["rita"]).post(f"/requests/{rid}/comments", {"text": "x" * 5001})
    assert r.status_code == 400 and r.json()["error"] == "text may be at most 5000 characters; this one has 5001"
    r = client(tokens["olga@ws1"]).submit({"table.csv": SAFE_TABLE}, title="t" * 201)
    assert r.status_code == 400 and r.json()["error"].startswith("title may be at most 200 characters"), r.text


def test_deeply_nested_json_is_bad_input_and_only_for_a_known_caller(hub, tokens, client):
    rid = submit(client, tokens["olga@ws1"])["id"]
    url = f"{hub.service}/api/requests/{rid}/comments"
    # Nobody: refused for that, before the body is looked at.
    r = requests.post(url, data=DEEP, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 403 and r.json()["error"].startswith("not authenticated"), r.text
    r = client(tokens["rita"]).session.post(url, data=DEEP, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"] == "the request body nests JSON more than 32 levels deep"
    r = client(tokens["rita"]).session.post(url, data='{"text": ' + "[" * 33 + "]" * 33 + "}", timeout=30)
    assert r.status_code == 400 and "more than 32 levels deep" in r.json()["error"], r.text
    # Brackets inside strings are text, not nesting.
    r = client(tokens["rita"]).post(f"/requests/{rid}/comments", {"text": "[{" * 100})
    assert r.status_code == 201, r.text


def test_an_upload_s_manifest_is_validated(hub, tokens, client):
    api = client(tokens["olga@ws1"])
    for raw, message in (
        (DEEP, "the 'manifest' field nests JSON more than 32 levels deep"),
        ("{not json", "the 'manifest' field is not valid JSON"),
        (json.dumps({"files": []}), "manifest.files must be an object, not a list"),
        (json.dumps({"files": {"table.csv": {"sha256": 7}}}), "manifest.files.table.csv.sha256 must be text"),
        (json.dumps({"files": {"table.csv": "abc"}}), "manifest.files.table.csv must be an object"),
    ):
        r = api.session.post(f"{hub.service}/api/requests", data={"title": "t", "context": "c", "manifest": raw},
                             files=[("file", ("table.csv", SAFE_TABLE, "text/csv"))], timeout=60)
        assert r.status_code == 400 and r.json()["error"].startswith(message), r.text


def test_paths_no_route_takes_are_json_404s_under_the_api(hub, tokens, client):
    r = client(tokens["rita"]).get("/requests/not-an-id")
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/json", r.text
    r = client(tokens["rita"]).session.delete(f"{hub.service}/api/requests", timeout=30)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, POST", r.headers


def test_every_status_the_service_answers_is_documented(hub):
    doc = requests.get(f"{hub.service}/api/openapi.json", timeout=30).json()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            assert {"400", "403", "415"} <= set(op["responses"]), (method, path)
            assert ("503" in op["responses"]) == ((method, path) in AUDITED), (method, path)
            assert "404" in op["responses"] or (method, path) in LISTS, (method, path)
            if "multipart/form-data" in op.get("requestBody", {}).get("content", {}):
                assert {"411", "413"} <= set(op["responses"]), (method, path)
