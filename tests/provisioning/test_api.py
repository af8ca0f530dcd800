"""The provisioning REST API on a real hub, with the real audit service and SQLite: what admins,
data holders, operators and reviewers may do through JupyterHub's scopes, the service layer's rules
through the API, the OpenAPI document against the routes served, and the CLI's root-only socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_unix_socket

from enclave import accounts, rbac, workspaces
from enclave.audit.client import AuditClient
from enclave.provisioning import openapi
from enclave.provisioning.app import BODY_LIMIT, Provisioning, cli_socket, make_app, make_cli_app
from enclave.provisioning.client import APPLY_BODY_LIMIT, ProvisioningError, call, path, socket_path
from enclave.provisioning.hub import provisioning_service
from enclave.settings import Settings

PURPOSE = "人口普查：按区统计收入分布，不做个体识别"


def records(hub, action: str, **filters) -> list[dict]:
    return hub.audit_records(action=action, **filters)


def test_a_workspace_built_through_the_api_is_the_service_layers(hub, apis):
    admin, holder = apis["adam"], apis["hana"]
    assert admin.put("/sources/people/holder", {"holder": "hana"}) == {"name": "people", "holder": "hana"}
    created = admin.post("/workspaces", {"name": "census", "purpose": PURPOSE, "holder": "hana"}, expect=201)
    assert (created["purpose"], created["holder"], created["state"]) == (PURPOSE, "hana", "active")
    for user, role in (("olga", "operator"), ("rita", "reviewer"), ("adam", "owner")):
        admin.post("/workspaces/census/members", {"user": user, "role": role}, expect=201)
    admin.put("/workspaces/census/limits", {"memory_mb": 1024, "cpus": 0.5})
    admin.put("/workspaces/census/expiry", {"expires_at": "2031-06-30T08:00:00+08:00"})
    asked = admin.post("/workspaces/census/releases", {"release": "people@1", "columns": ["region", "age"],
                                                       "reason": "分区汇总"}, expect=201)
    assert asked["releases"]["people@1"]["status"] == "awaiting_consent"

    # The holder sees the request with the workspace's purpose, may read the workspace that asks, and consents.
    [request] = holder.get("/consents")
    assert request == {"workspace": "census", "purpose": PURPOSE, "release": "people@1",
                       "columns": {"people": ["region", "age"]}, "reason": "分区汇总", "requested_by": "adam"}
    assert holder.get("/workspaces/census")["purpose"] == PURPOSE
    holder.post(path("consents", "census", "people@1", "consent"))
    assert holder.get("/consents") == []

    shown = admin.get("/workspaces/census")
    assert shown == workspaces.get(hub.settings, "census").describe()
    assert shown["members"] == {"owner": ["adam"], "operator": ["olga"], "reviewer": ["rita"]}
    assert shown["releases"] == {"people@1": {"columns": {"people": ["region", "age"]}, "reason": "分区汇总",
                                              "status": "attached"}}
    assert (shown["limits"], shown["expires_at"]) == ({"cpus": 0.5, "memory_mb": 1024}, "2031-06-30T00:00:00+00:00")
    assert shown in admin.get("/workspaces")

    # Each change is the acting account's record, handed over by the service as the hub.
    [create] = records(hub, "workspace.create", workspace="census")
    assert (create["actor"], create["source"], create["detail"]["purpose"]) == ("adam", "hub", PURPOSE)
    [attach] = records(hub, "workspace.attach", workspace="census")
    assert (attach["actor"], attach["source"]) == ("hana", "hub")

    # The CLI's socket answers the same, and its changes are the OS user's, from the CLI.
    assert call("GET", path("workspaces", "census"), home=hub.home) == shown
    call("PUT", path("workspaces", "census", "purpose"), {"purpose": PURPOSE + "（第二期）"}, home=hub.home,
         as_user="ops")
    [changed] = records(hub, "workspace.purpose_set", workspace="census")
    assert (changed["actor"], changed["source"]) == ("ops", "cli")
    assert admin.get("/workspaces/census")["purpose"] == PURPOSE + "（第二期）"


def test_accounts_round_trip(hub, apis):
    admin = apis["adam"]
    made = admin.post("/accounts", {"name": "nina", "roles": ["operator"], "expires_at": "2030-01-01T00:00:00Z"},
                      expect=201)
    assert len(made["password"]) >= 12 and made["usable"] and made["expires_at"] == "2030-01-01T00:00:00+00:00"
    assert "password" not in admin.get("/accounts/nina")
    given = admin.post("/accounts", {"name": "nils", "roles": ["reviewer"], "password": "a-password-of-mine"},
                       expect=201)
    assert "password" not in given
    assert admin.put("/accounts/nina/roles", {"roles": ["operator", "reviewer"]})["roles"] == ["operator", "reviewer"]
    disabled = admin.post("/accounts/nina/disable", {"reason": "离职"})
    assert (disabled["state"], disabled["state_reason"], disabled["usable"]) == ("disabled", "离职", False)
    assert admin.post("/accounts/nina/enable")["state"] == "active"
    assert admin.put("/accounts/nina/expiry", {"expires_at": None})["expires_at"] is None
    assert {"nina", "nils"} <= {a["name"] for a in admin.get("/accounts")}
    assert admin.delete("/accounts/nils") == {"name": "nils", "removed": True}
    assert admin.get("/accounts/nils", expect=404)["error"] == "no account named 'nils'"
    [removed] = records(hub, "account.remove")
    assert (removed["actor"], removed["detail"]["user"]) == ("adam", "nils")


def _sample(route: str) -> str:
    return route.format(username="olga", workspace="census", release="people@1", source="people", role="operator")


@pytest.mark.parametrize("user", ["olga", "rita", "dual"])
def test_operators_and_reviewers_are_refused_on_every_route(apis, user):
    for route, methods in openapi.openapi_document("/")["paths"].items():
        for method in methods:
            r = apis[user].request(method.upper(), _sample(route), {})
            assert r.status_code == 403, (user, method, route, r.text)
            assert r.json()["error"] == f"user {user} may not use the provisioning service"


def test_a_holder_answers_only_its_own_requests(hub, apis):
    admin, hana, hugo = apis["adam"], apis["hana"], apis["hugo"]
    admin.put("/sources/people/holder", {"holder": "hana"})
    admin.post("/workspaces", {"name": "survey", "purpose": "住户调查", "holder": "hana"}, expect=201)
    admin.post("/workspaces/survey/releases", {"release": "people@1"}, expect=201)
    # Another holder is told nothing of it, and provisions nothing.
    assert hugo.get("/consents") == []
    assert "hugo may not provision" in hugo.get("/workspaces/survey", expect=403)["error"]
    r = hugo.post(path("consents", "survey", "people@1", "consent"), expect=404)
    assert r["error"] == "no request for 'people@1' in 'survey' awaits the consent of hugo"
    for method, route, body in (("GET", "/accounts", None), ("POST", "/workspaces", {"name": "mine"}),
                                ("PUT", "/sources/people/holder", {"holder": "hugo"}),
                                ("DELETE", "/workspaces/survey/releases/people@1", None)):
        assert hana.request(method, route, body).status_code == 403, (method, route)
    # Admins do everything but consent.
    assert "answers no attachment requests" in admin.post(path("consents", "survey", "people@1", "consent"),
                                                          expect=403)["error"]
    refused = hana.post(path("consents", "survey", "people@1", "refuse"), {"reason": "用途不符"})
    assert refused["releases"] == {}
    [record] = records(hub, "workspace.attach_refuse", workspace="survey")
    assert (record["actor"], record["detail"]["reason"]) == ("hana", "用途不符")


def test_bad_input_is_named(apis):
    admin = apis["adam"]
    assert admin.get("/workspaces/nowhere", expect=404)["error"] == "no workspace named 'nowhere'"
    assert admin.get("/accounts/nobody", expect=404)["error"] == "no account named 'nobody'"
    assert admin.post("/workspaces/nowhere/members", {"user": "olga", "role": "operator"},
                      expect=404)["error"] == "no workspace named 'nowhere'"
    assert admin.post("/workspaces", {"name": "x1", "holder": "ghost"}, expect=409)["error"] == \
        "no account named 'ghost'"
    r = admin.request("POST", "/workspaces", data=b'{"name": ', headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"], r.json()["code"]) == (400, "the request body is not valid JSON",
                                                                    "request.bad_json")
    assert admin.post("/accounts", {"name": "x1", "roles": "admin"}, expect=400)["error"] == \
        "roles must be a list, not text"
    assert admin.put("/workspaces/census/operators-may-review", {"allowed": "yes"}, expect=400)["error"] == \
        "allowed must be true or false, not text"
    assert admin.put("/workspaces/census/limits", {"memory_mb": "lots"}, expect=400)["error"] == \
        "memory_mb must be a whole number, not text"
    assert "needs its offset from UTC" in admin.put("/accounts/olga/expiry", {"expires_at": "2030-01-01T00:00"},
                                                    expect=400)["error"]
    assert admin.get("/workspaces/Not_A_Name", expect=400)["error"].startswith(
        "workspace name 'Not_A_Name' is not allowed: use 1-40 lower-case letters")
    assert admin.post("/accounts", {"name": "Bad/Name", "roles": ["operator"]}, expect=400)["error"].startswith(
        "user name 'Bad/Name' is not allowed")
    assert admin.put("/workspaces/census/purpose", {"purpose": "x", "colour": "red"}, expect=400)["error"] == \
        "unknown field 'colour'; this operation takes purpose"
    assert apis[None].get("/workspaces", expect=403)["error"].startswith("not authenticated")
    assert admin.get("/no/such/route", expect=404)["error"] == "no such route: /services/provisioning/api/no/such/route"
    assert admin.request("PATCH", "/workspaces/census", {}).status_code == 405


def test_a_refusal_carries_its_stable_code_and_what_fills_its_text(hub, apis):
    """Beside its English ``error``, a refusal answers the ``code`` the service layer raised it with
    (clients decide on it, never on the English), and its ``text`` and ``params``, from which the
    client of the CLI's socket rebuilds it in its reader's language. A refusal with no code of its
    own (a body that is no JSON) answers its English alone."""
    admin = apis["adam"]
    admin.post("/workspaces", {"name": "coded"}, expect=201)
    admin.post("/accounts", {"name": "cora", "roles": ["operator"]}, expect=201)
    admin.post("/accounts/cora/disable", {"reason": "借调"})
    assert admin.post("/workspaces/coded/members", {"user": "cora", "role": "operator"}, expect=409) == {
        "status": 409, "error": "'cora' is disabled: enable the account first", "code": "account.disabled",
        "text": "'%(account)s' is disabled: enable the account first", "params": {"account": "cora"}}
    assert admin.get("/workspaces/nowhere", expect=404) == {
        "status": 404, "error": "no workspace named 'nowhere'", "code": "workspace.unknown",
        "text": "no workspace named '%(workspace)s'", "params": {"workspace": "nowhere"}}
    limits = admin.put("/workspaces/coded/limits", {"memory_mb": 100}, expect=409)
    assert (limits["code"], limits["params"]["workspace"]) == ("limits.invalid", "coded")
    assert limits["error"] == limits["text"] % limits["params"] and "memory_mb: " in limits["params"]["problems"]
    naive = admin.put("/accounts/cora/expiry", {"expires_at": "2030-01-01T00:00"}, expect=400)
    assert (naive["code"], naive["params"]) == ("request.moment_without_offset",
                                                {"field": "expires_at", "value": "'2030-01-01T00:00'"})
    r = admin.request("POST", "/workspaces", data=b'{"name": ', headers={"Content-Type": "application/json"})
    assert (r.json()["code"], r.json()["params"]) == ("request.bad_json", {"what": "the request body"})

    with pytest.raises(ProvisioningError) as refused:
        call("POST", path("workspaces", "coded", "members"), {"user": "cora", "role": "operator"}, home=hub.home)
    assert (refused.value.status, refused.value.code, str(refused.value)) == (
        409, "account.disabled", "'cora' is disabled: enable the account first")
    assert refused.value.message.render("zh_CN") == "'cora' 已停用：请先启用该账户"


def test_what_the_cli_lists_besides_the_declared_state(hub, apis):
    """A workspace's status (homes' disk use, quota, who asked, the export policy's version), the
    releases in the store with their holders, the export policy and login throttles: what ``enclave
    workspace show|list|set-export-policy``, ``data sources`` and ``user throttles|clear-throttle`` ask."""
    admin, holder = apis["adam"], apis["hana"]
    admin.put("/sources/people/holder", {"holder": "hana"})
    admin.post("/workspaces", {"name": "listed", "purpose": PURPOSE, "holder": "hana"}, expect=201)
    admin.post("/workspaces/listed/releases", {"release": "people@1"}, expect=201)
    assert {"name": "people@1", "source": "people", "holder": "hana"} in admin.get("/releases")
    assert admin.get("/workspaces/listed/status") == {
        "name": "listed", "disk_mb": int(hub.env["ENCLAVE_SANDBOX__LIMITS__DISK_MB"]), "homes": {},
        "requested_by": {"people@1": "adam"}, "export_policy_version": 0, "export_policy_label": "listed/default"}
    changed = admin.put("/workspaces/listed/export-policy", {"min_cell_count": 20})
    assert changed == workspaces.get(hub.settings, "listed").describe()
    assert changed["export_policy"] == {"min_cell_count": 20}
    assert admin.get("/workspaces/listed/status")["export_policy_label"] == "listed/v1"
    assert "unknown export policy key(s) colour" in admin.put("/workspaces/listed/export-policy", {"colour": "red"},
                                                              expect=409)["error"]
    [record] = records(hub, "workspace.export_policy_set", workspace="listed")
    assert (record["actor"], record["detail"]["version"]) == ("adam", 1)
    assert isinstance(admin.get("/throttles"), list)
    assert admin.delete("/accounts/olga/throttles?client=127.0.0.9") == {"name": "olga", "forgotten": 0}
    assert admin.delete("/accounts/nobody/throttles", expect=404)["error"] == "no account named 'nobody'"
    # A data holder reads none of it.
    for route in ("/workspaces/listed/status", "/releases", "/throttles"):
        assert "hana may not provision" in holder.get(route, expect=403)["error"], route


def test_a_body_over_the_limit_is_refused_before_it_is_sent(hub):
    """The service's own port (the proxy may answer 503 for a connection the service closed): the
    headers alone get the refusal."""
    port = int(hub.env["ENCLAVE_PROVISIONING__PORT"])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"POST /services/provisioning/api/workspaces HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (BODY_LIMIT + 1))
        assert conn.recv(100).startswith(b"HTTP/1.1 400 ")


def test_the_last_admin_stays(hub, apis):
    admin = apis["adam"]
    admin.post("/accounts", {"name": "ada", "roles": ["admin"]}, expect=201)
    admin.put("/accounts/ada/roles", {"roles": ["holder"]})  # adam is an admin still
    for method, route, body in (("PUT", "/accounts/adam/roles", {"roles": ["operator"]}),
                                ("POST", "/accounts/adam/disable", {"reason": "test"}),
                                ("PUT", "/accounts/adam/expiry", {"expires_at": "2000-01-01T00:00:00Z"}),
                                ("DELETE", "/accounts/adam", None)):
        r = admin.request(method, route, body)
        assert r.status_code == 409, (route, r.text)
        assert "it is the last active admin account" in r.json()["error"]
    assert admin.get("/accounts/adam")["roles"] == ["admin"]
    assert [r for r in records(hub, "account.disable") if r["detail"]["user"] == "adam"] == []


def test_operators_and_reviewers_stay_apart_unless_the_workspace_allows_it(apis):
    admin = apis["adam"]
    admin.post("/workspaces", {"name": "apart"}, expect=201)
    admin.post("/workspaces/apart/members", {"user": "dual", "role": "operator"}, expect=201)
    r = admin.post("/workspaces/apart/members", {"user": "dual", "role": "reviewer"}, expect=409)
    assert "keeps operators and reviewers apart" in r["error"]
    assert admin.put("/workspaces/apart/operators-may-review", {"allowed": True})["operators_may_review"] is True
    both = admin.post("/workspaces/apart/members", {"user": "dual", "role": "reviewer"}, expect=201)
    assert both["members"]["operator"] == both["members"]["reviewer"] == ["dual"]
    assert "both operator and reviewer" in admin.put("/workspaces/apart/operators-may-review", {"allowed": False},
                                                     expect=409)["error"]
    # Frozen, archived: the lifecycle through the API.
    assert admin.post("/workspaces/apart/freeze", {"reason": "审计"})["state"] == "frozen"
    assert admin.post("/workspaces/apart/unfreeze")["state"] == "active"
    assert admin.post("/workspaces/apart/archive", {"reason": "项目结束"})["state"] == "archived"
    assert "archived" in admin.delete("/workspaces/apart/members/dual/reviewer", expect=409)["error"]


def test_the_document_lists_exactly_the_routes_served(hub, apis):
    prefix = "/services/provisioning/"
    served = apis[None].get("/openapi.json")
    assert served == openapi.openapi_document(prefix)
    assert served["servers"] == [{"url": prefix + "api"}]
    app = make_app(None, prefix)  # only its routes are read: it serves nothing
    routes = {}
    for rule in app.wildcard_router.rules:
        pattern = rule.matcher.regex.pattern.removesuffix("$")
        if pattern.startswith(prefix + "api/"):
            routes[pattern[len(prefix + "api"):]] = {
                m for m in ("get", "post", "put", "patch", "delete")
                if getattr(rule.target, m) is not getattr(web.RequestHandler, m)}
    documented = {re.sub(r"\{[a-z_]+\}", "([^/]+)", p): set(ops) for p, ops in served["paths"].items()}
    assert routes == documented


APPLY_FILE = """\
accounts:
  ap-op: {roles: [operator]}
workspaces:
  ap-ws:
    purpose: 人口普查：按区统计收入分布
    holder: hana
    members:
      operator: [ap-op]
    limits: {memory_mb: 2048}
"""


def test_a_file_applied_through_the_api(hub, apis):
    """``POST /apply``: a dry run answers the changes and makes none; the file then applied, its new
    account's password given once, every change the admin's record; the same file again changes nothing."""
    admin = apis["adam"]
    before = len(hub.audit_records())
    dry = admin.post("/apply", {"file": "普查.yaml", "text": APPLY_FILE, "dry_run": True})
    assert (dry["file"], dry["dry_run"], dry["applied"], dry["passwords"]) == ("普查.yaml", True, False, {})
    assert [(c["sign"], c["subject"], c["what"], c["line"], c["key"]) for c in dry["changes"]] == [
        ("+", "account ap-op", "create (operator); its password is printed once", 2, "accounts.ap-op"),
        ("+", "workspace ap-ws", "create, purpose: 人口普查：按区统计收入分布, holder hana", 4, "workspaces.ap-ws"),
        ("+", "workspace ap-ws", "add operator ap-op", 8, "workspaces.ap-ws.members.operator[0]"),
        ("~", "workspace ap-ws", "limits: memory_mb - → 2048", 9, "workspaces.ap-ws.limits"),
    ]
    assert admin.get("/workspaces/ap-ws", expect=404) and admin.get("/accounts/ap-op", expect=404)
    assert len(hub.audit_records()) == before

    done = admin.post("/apply", {"file": "普查.yaml", "text": APPLY_FILE})
    assert done["applied"] and done["changes"] == dry["changes"] and list(done["passwords"]) == ["ap-op"]
    hub.login("ap-op", done["passwords"]["ap-op"])
    shown = admin.get("/workspaces/ap-ws")
    assert (shown["purpose"], shown["members"]["operator"], shown["limits"]) == (
        "人口普查：按区统计收入分布", ["ap-op"], {"memory_mb": 2048})
    made = [r for r in hub.audit_records()[before:] if r["actor"] != "ap-op"]  # not ap-op's login
    assert [(r["actor"], r["source"], r["action"]) for r in made] == [
        ("adam", "hub", "account.create"), ("adam", "hub", "workspace.create"), ("adam", "hub", "workspace.member_add"),
        ("adam", "hub", "workspace.limits_set")]
    again = admin.post("/apply", {"file": "普查.yaml", "text": APPLY_FILE})
    assert (again["applied"], again["changes"], again["passwords"]) == (False, [], {})


def test_a_file_is_applied_whole_or_refused_whole(hub, apis):
    """Every problem of a bad file at once (422), nothing applied; a file whose last record the
    audit log refuses leaves neither its changes nor the records before that one (they go together)."""
    admin = apis["adam"]
    before = len(hub.audit_records())
    bad = ("accounts:\n  aw-new: {roles: [operator]}\n  aw-bad: {roles: [operator, superuser]}\n"
           "workspaces:\n  aw-ws:\n    members: {operator: [aw-nobody]}\n    colour: 红\n")
    r = admin.request("POST", "/apply", {"file": "bad.yaml", "text": bad})
    assert r.status_code == 422
    refusal = r.json()
    assert refusal["problems"] == [
        {"line": 3, "key": "accounts.aw-bad.roles[1]",
         "problem": "unknown role 'superuser' (one of: admin, holder, operator, reviewer)"},
        {"line": 6, "key": "workspaces.aw-ws.members.operator[0]",
         "problem": "no account named 'aw-nobody' in the file or in Enclave"},
        {"line": 7, "key": "workspaces.aw-ws.colour", "problem": refusal["problems"][2]["problem"]},
    ]
    assert refusal["problems"][2]["problem"].startswith("unknown key (keys in workspace: purpose, ")
    assert refusal["error"].splitlines() == [
        "bad.yaml is refused; nothing was applied (3 problem(s)):",
        *(f"bad.yaml:{p['line']}: {p['key']}: {p['problem']}" for p in refusal["problems"])]
    assert (refusal["status"], refusal["file"]) == (422, "bad.yaml")
    assert (refusal["code"], refusal["params"]["file"], refusal["params"]["count"]) == ("apply.refused", "bad.yaml", 3)
    r = admin.request("POST", "/apply", {"file": "ctl.yaml", "text": "accounts:\n  aw-x: \x0f\n"})
    assert (r.status_code, r.json()["problems"]) == (422, [
        {"line": 2, "key": "YAML syntax", "problem": "unacceptable character #x000f: special characters are not allowed"}])
    # The CLI's socket answers the same refusal, with its problems.
    with pytest.raises(ProvisioningError) as refused:
        call("POST", "/apply", {"file": "bad.yaml", "text": bad}, home=hub.home)
    assert (refused.value.status, refused.value.answer["problems"]) == (422, refusal["problems"])

    # The account's record is one the log takes, the workspace's is not (its detail is over 64 KiB):
    # all of them go together, so neither is recorded, and neither change is made.
    too_big = "accounts:\n  aw-new: {roles: [operator]}\nworkspaces:\n  aw-ws: {purpose: " + "数" * 30_000 + "}\n"
    r = admin.request("POST", "/apply", {"file": "big.yaml", "text": too_big})
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith("big.yaml is refused; nothing was applied: the audit log does not take its"
                                        " records (record 2 of 2: detail is ")
    assert admin.get("/accounts/aw-new", expect=404) and admin.get("/workspaces/aw-ws", expect=404)
    assert len(hub.audit_records()) == before
    assert admin.request("POST", "/apply", {"file": "x.yaml", "text": "{}", "colour": 1}).json()["error"] == \
        "unknown field 'colour'; this operation takes file, text, dry_run"


def test_only_admins_apply(hub, apis):
    """An operator's token and a data holder's are refused before anything is read or applied."""
    file = "accounts:\n  ao-sneak: {roles: [admin]}\n"
    for user, error in (("olga", "user olga may not use the provisioning service"),
                        ("hana", "hana may not provision: that takes the scope custom:workspaces:admin (admins)"),
                        (None, "not authenticated: send 'Authorization: token ...'")):
        r = apis[user].request("POST", "/apply", {"file": "x.yaml", "text": file})
        assert (r.status_code, r.json()["error"]) == (403, error), user
    assert apis["adam"].get("/accounts/ao-sneak", expect=404)


def test_a_whole_file_may_be_larger_than_other_bodies_but_not_without_limit(hub, apis):
    """A file over the 64 KiB of other bodies is taken from an admin; over APPLY_BODY_LIMIT it is
    refused by its headers alone, and so is a body over 64 KiB from anyone else (on the service's own
    port, as in the test of BODY_LIMIT: the proxy may answer 503 for a connection the service closed)."""
    comment = "# 说明：" + "数据" * 20_000 + "\n"  # 120 KB of comment: a file with nothing to change
    assert apis["adam"].post("/apply", {"file": "long.yaml", "text": comment + "{}\n"})["changes"] == []
    port = int(hub.env["ENCLAVE_PROVISIONING__PORT"])
    for user, size in (("adam", APPLY_BODY_LIMIT + 1), ("olga", BODY_LIMIT + 1), ("hana", BODY_LIMIT + 1)):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(b"POST /services/provisioning/api/apply HTTP/1.1\r\nHost: localhost\r\n"
                         b"Authorization: token %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % (hub.token(user, ["inherit"]).encode(), size))
            assert conn.recv(100).startswith(b"HTTP/1.1 400 "), user


def test_setting_a_password_is_the_cli_sockets_alone(hub, apis):
    """An admin's token cannot set another account's password (and so take it over): the HTTP API
    has no such route. Root on the hub host can, with ``enclave user set-password`` on the socket."""
    admin = apis["adam"]
    admin.post("/accounts", {"name": "pete", "roles": ["operator"], "password": "pete-s-own-password"}, expect=201)
    for method in ("PUT", "POST"):
        r = admin.request(method, "/accounts/pete/password", {"password": "taken-over-by-adam"})
        assert (r.status_code, r.json()["error"]) == (404, "no such route: /services/provisioning/api/accounts/pete/password")
    with pytest.raises(AssertionError, match="login as pete failed"):
        hub.login("pete", "taken-over-by-adam")
    hub.login("pete", "pete-s-own-password")

    given = hub.enclave("user", "set-password", "pete", "--password-stdin", input="新的口令：足够长的一个密码\n")
    assert (given.returncode, given.stdout) == (0, "password set for pete\n"), given.stderr
    hub.login("pete", "新的口令：足够长的一个密码")
    generated = hub.enclave("user", "set-password", "pete")
    assert generated.returncode == 0 and generated.stdout.startswith("password set for pete\npassword: ")
    hub.login("pete", generated.stdout.split("password: ")[1].strip())
    assert [(r["source"], r["detail"]) for r in records(hub, "account.password_set")] == [("cli", {"user": "pete"})] * 2
    assert hub.enclave("user", "set-password", "nobody").stderr == "Error: no account named 'nobody' [account.unknown]\n"


def test_the_cli_socket_is_roots_alone(hub):
    settings = hub.settings
    sock = cli_socket(settings)
    assert socket_path(hub.home) == sock
    folder = sock.parent.stat()
    assert (folder.st_uid, folder.st_mode & 0o777) == (0, 0o700)
    assert as_nobody(hub.home) == f"only root may reach the provisioning service ({sock}): run with sudo"
    # Even with the folder's path known, the socket itself is root's alone.
    assert (sock.stat().st_uid, sock.stat().st_mode & 0o777) == (0, 0o600)
    assert isinstance(call("GET", "/workspaces", home=hub.home), list)
    with pytest.raises(ProvisioningError, match="no workspace named 'nowhere'") as refused:
        call("GET", path("workspaces", "nowhere"), home=hub.home)
    assert refused.value.status == 404


def test_the_cli_socket_refuses_anyone_but_root_even_when_its_folder_is_loosened(hub):
    home = Path(tempfile.mkdtemp(prefix="provisioning-open-"))
    home.chmod(0o755)
    provisioning = Provisioning(hub.settings)
    try:
        with serving(make_cli_app(provisioning), cli_socket(Settings(home=home)), folder_mode=0o755, mode=0o666):
            assert as_nobody(home) == "only root may use the CLI's socket (uid 65534 is not)"
            assert isinstance(call("GET", "/workspaces", home=home), list)
    finally:
        provisioning.close()
        shutil.rmtree(home)


def as_nobody(home: Path) -> str:
    """What the client says when user nobody asks the service at ``home`` for the workspaces."""
    attempt = ("import json, sys\nfrom enclave.provisioning.client import ProvisioningError, call\n"
               "try:\n    call('GET', '/workspaces', home=sys.argv[1])\nexcept ProvisioningError as exc:\n"
               "    print(json.dumps(str(exc)))\nelse:\n    print(json.dumps('answered'))\n")
    nobody = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-I",
                             "-c", attempt, str(home)], capture_output=True, text=True, timeout=60)
    assert nobody.returncode == 0, nobody.stderr
    return json.loads(nobody.stdout)


def test_the_client_imports_only_the_standard_library():
    loaded = subprocess.run([sys.executable, "-I", "-c", "import sys, enclave.provisioning.client;"
                             " print(' '.join(sorted(sys.modules)))"], capture_output=True, text=True, timeout=60)
    modules = {m.split(".")[0] for m in loaded.stdout.split()}
    assert not modules & {"sqlalchemy", "pydantic", "tornado", "jupyterhub", "pydantic_settings"}, modules


def test_service_entry(tmp_path):
    entry = provisioning_service(Settings(home=tmp_path, provisioning={"port": 8123}))
    assert (entry["name"], entry["url"], entry["cwd"]) == (rbac.PROVISIONING_SERVICE, "http://127.0.0.1:8123", "/")
    assert entry["command"] == [sys.executable, "-I", "-m", "enclave.provisioning.app"]
    assert set(entry["oauth_client_allowed_scopes"]) == {"custom:workspaces:admin", "custom:sources:consent",
                                                         "read:servers", "delete:servers"}


def test_a_change_the_audit_log_does_not_take_is_not_made(hub, tmp_path):
    """The API on a provisioning service whose audit log cannot be reached (a socket nobody serves):
    every change is refused with 503, and nothing changed."""
    provisioning = Provisioning(hub.settings)
    provisioning.audit = AuditClient(tmp_path / "no-audit-service.sock", timeout=5)
    with serving(make_cli_app(provisioning), cli_socket(Settings(home=tmp_path))):
        with pytest.raises(ProvisioningError) as refused:
            call("POST", "/workspaces", {"name": "unrecorded", "purpose": PURPOSE}, home=tmp_path)
        assert refused.value.status == 503
        assert str(refused.value).startswith("the audit log cannot record this change, so nothing was changed")
        with pytest.raises(ProvisioningError, match="nothing was changed"):
            call("POST", "/accounts/olga/disable", {"reason": "test"}, home=tmp_path)
    assert "unrecorded" not in {ws.name for ws in workspaces.all_workspaces(hub.settings)}
    assert accounts.get_account(hub.settings, "olga").state == "active"


@contextlib.contextmanager
def serving(app, sock: Path, folder_mode: int = 0o700, mode: int = 0o600):
    """``app`` on the unix socket ``sock``, served from a thread of its own while the block runs."""
    sock.parent.mkdir(parents=True)
    for folder in (sock.parent, sock.parent.parent):
        folder.chmod(folder_mode)
    started, loop = threading.Event(), asyncio.new_event_loop()

    def run():
        asyncio.set_event_loop(loop)
        server = HTTPServer(app)
        server.add_socket(bind_unix_socket(str(sock), mode=mode))
        loop.call_soon(started.set)
        loop.run_forever()
        server.stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(30)
    try:
        yield
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
