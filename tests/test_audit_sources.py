"""Every operation is recorded, through its real path, in the hub-side audit log; records leave a
sandbox when they are made and cannot be forged or taken back from inside it.

A hub of its own: frank operates ``audited`` (terminals allowed); a client is throttled after 3
failed logins in a row.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import PASSWORD, seed
from enclave_testing import CHROMIUM, CHROMIUM_ARGS, HOLDER, PURPOSE, log_in, processes_of_uid, wait_for

from enclave.exports import workflow

WS = "audited"


@pytest.fixture(scope="module")
def hub(hub_factory):
    hub = hub_factory("audited", ENCLAVE_SANDBOX__IDLE_TIMEOUT="0", ENCLAVE_ACCOUNTS__ALLOWED_FAILED_LOGINS="3",
                      ENCLAVE_EXPORTS__APPROVALS_REQUIRED="1")
    seed(hub)
    hub.start()
    for args in (("user", "add", "frank", "--role", "operator", "--password-stdin"),):
        r = hub.enclave(*args, input=PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
    for args in (("workspace", "create", WS, "--purpose", PURPOSE, "--holder", HOLDER),
                 ("workspace", "add-member", WS, "frank", "--role", "operator"),
                 ("workspace", "attach", WS, "households@1", "--reason", "Household sizes by district"),
                 ("workspace", "set-limits", WS, "memory_mb=1536", "cpus=1.5"),
                 ("workspace", "set-guard", WS, "terminals=true", "output_message_max_kb=16",
                  "output_cell_max_kb=64")):
        r = hub.enclave(*args)
        assert r.returncode == 0, (args, r.stderr)
    hub.consent(WS, "households@1")
    yield hub
    hub.stop_all_sandboxes()


def only(records: list[dict]) -> dict:
    assert len(records) == 1, records
    return records[0]


def verify(hub) -> None:
    r = hub.enclave("audit", "verify")
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr


def audit_service_pid(hub) -> int:
    for p in Path("/proc").iterdir():
        try:
            if (p.name.isdigit() and b"enclave.audit.service" in (p / "cmdline").read_bytes()
                    and f"ENCLAVE_HOME={hub.home}".encode() in (p / "environ").read_bytes().split(b"\0")):
                return int(p.name)
        except OSError:
            continue
    raise AssertionError("no audit service runs for this hub")


# -- the hub: logins, failures, throttles, logouts; the CLI: accounts and workspaces ---------------


def test_admin_changes_through_the_cli_are_recorded(hub):
    created = only(hub.audit_records(action="account.create", user="root"))
    assert created["source"] == "cli" and created["detail"] == {"user": "frank", "roles": ["operator"]}
    assert only(hub.audit_records(action="workspace.create", workspace=WS))["actor"] == "root"
    member = only(hub.audit_records(action="workspace.member_add", workspace=WS))
    assert member["detail"] == {"user": "frank", "role": "operator"}
    asked = only(hub.audit_records(action="workspace.attach_request", workspace=WS))
    assert (asked["source"], asked["actor"]) == ("cli", "root")
    assert asked["detail"] == {"release": "households@1", "user": HOLDER, "reason": "Household sizes by district"}
    attached = only(hub.audit_records(action="workspace.attach", workspace=WS))  # the holder's consent
    assert (attached["source"], attached["actor"]) == ("hub", HOLDER)
    assert attached["detail"] == {"release": "households@1", "reason": "Household sizes by district", "user": HOLDER}
    limits = only(hub.audit_records(action="workspace.limits_set", workspace=WS))["detail"]
    assert limits == {"limits": {"memory_mb": 1536, "cpus": "1.5"}, "before": {}}
    guard = only(hub.audit_records(action="workspace.guard_set", workspace=WS))["detail"]
    assert guard["guard"] == {"terminals": True, "output_message_max_kb": 16, "output_cell_max_kb": 64}
    assert guard["before"] == {}
    # A refused change leaves no record (nothing changed), and says why.
    r = hub.enclave("workspace", "add-member", WS, "nobody", "--role", "operator")
    assert r.returncode != 0 and "no account named 'nobody'" in r.stderr
    assert len(hub.audit_records(action="workspace.member_add", workspace=WS)) == 1
    verify(hub)


def test_logins_failures_throttles_and_logouts_are_recorded(hub):
    import requests

    def attempt(username: str, password: str) -> int:
        s = requests.Session()
        s.get(hub.url + "/hub/login")
        from enclave_testing import cookie_value

        r = s.post(hub.url + "/hub/login", data={"username": username, "password": password,
                                                 "_xsrf": cookie_value(s, hub.url + "/hub/login", "_xsrf")},
                   allow_redirects=False)
        return r.status_code

    attempt("nosuch", "whatever-it-is")
    unknown = hub.audit_records(action="auth.login", user="anonymous")[-1]
    assert unknown["outcome"] == "denied" and unknown["detail"]["reason"] == "unknown account"
    assert unknown["detail"]["user"] == "nosuch" and unknown["detail"]["remote_ip"] == "127.0.0.1"
    for _ in range(3):
        attempt("frank", "not-the-password")
    failures = [r for r in hub.audit_records(action="auth.login", user="frank") if r["outcome"] == "denied"]
    assert [r["detail"]["failures"] for r in failures] == [1, 2, 3]
    throttled = only(hub.audit_records(action="auth.throttle", user="frank"))
    assert throttled["outcome"] == "denied" and throttled["detail"]["failures"] == 3
    attempt("frank", PASSWORD)  # refused: this client is throttled
    assert "throttled until" in hub.audit_records(action="auth.login", user="frank")[-1]["detail"]["reason"]
    r = hub.enclave("user", "set-password", "frank", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert only(hub.audit_records(action="account.password_set"))["detail"] == {"user": "frank"}
    frank = hub.login("frank", PASSWORD)
    ok = hub.audit_records(action="auth.login", user="frank")[-1]
    assert ok["outcome"] == "ok" and ok["detail"]["method"] == "native"
    frank.http.get(hub.url + "/hub/logout")
    assert only(hub.audit_records(action="auth.logout", user="frank"))["source"] == "hub"
    verify(hub)


# -- a sandbox: its start, executions, terminal input, files, egress notices, stop ----------------


def test_a_sandbox_s_life_is_recorded(hub):
    frank = hub.login("frank", PASSWORD)
    assert frank.start(WS).status_code == 200
    start = hub.audit_records(action="sandbox.start", workspace=WS)[-1]
    sandbox = start["sandbox"]
    assert sandbox.startswith(f"frank/{WS}/") and start["actor"] == "frank"
    policy = start["detail"]["policy"]
    # The policy applied, as the sandbox saw it: the release read-only under /data; no environment.
    assert [d["target"] for d in policy["data"]] == ["/data/households@1"]
    assert not any(m["target"].startswith("/data") for m in policy["mounts"])  # the server sees no data
    assert policy["limits"]["memory_mb"] == 1536 and policy["limits"]["cpus"] == "1.5"
    assert "env" not in policy and "JUPYTERHUB_API_TOKEN" not in json.dumps(start)

    kernel = frank.kernel(WS)
    code = f"probe = '{uuid.uuid4().hex}'"
    kernel.run(code)
    executed = [r for r in hub.audit_records(action="kernel.execute", workspace=WS) if r["detail"]["code"] == code]
    assert only(executed)["sandbox"] == sandbox and executed[0]["actor"] == "frank"
    assert executed[0]["detail"]["code_sha256"] == hashlib.sha256(code.encode()).hexdigest()
    out, _ = kernel.run("print('Z' * 200_000)")
    assert "output withheld" in out
    notice = hub.audit_records(action="egress.notice", workspace=WS)[-1]
    assert notice["detail"]["channel"] == "kernel_output" and notice["detail"]["kernel"] == kernel.id
    kernel.close()

    r = frank.server_api(WS, "PUT", "/contents/notes.md", json={"type": "file", "format": "text", "content": "# 笔记\n"})
    assert r.status_code in (200, 201), r.text
    assert frank.server_api(WS, "GET", "/contents/notes.md").json()["content"] == "# 笔记\n"
    assert frank.server_api(WS, "PATCH", "/contents/notes.md", json={"path": "summary.md"}).status_code == 200
    assert frank.server_api(WS, "DELETE", "/contents/summary.md").status_code == 204
    files = [(r["action"], r["detail"]) for r in hub.audit_records(action="contents.*", workspace=WS)
             if r["sandbox"] == sandbox]
    digest = hashlib.sha256("# 笔记\n".encode()).hexdigest()
    assert ("contents.save", {"path": "notes.md", "size": 9, "sha256": digest}) in files
    assert ("contents.read", {"path": "notes.md", "size": 9, "sha256": digest}) in files
    assert ("contents.rename", {"path": "notes.md", "new_path": "summary.md"}) in files
    assert ("contents.delete", {"path": "summary.md"}) in files

    terminal = frank.terminal(WS)
    terminal.run("echo typed-in-a-terminal")
    terminal.close()
    typed = [r["detail"]["text"] for r in hub.audit_records(action="terminal.input", workspace=WS)
             if r["sandbox"] == sandbox]
    assert any("echo typed-in-a-terminal" in t for t in typed)

    frank.stop(WS)
    stop = hub.audit_records(action="sandbox.stop", workspace=WS)[-1]
    assert stop["sandbox"] == sandbox and stop["actor"] == "frank" and "asked by user frank" in stop["detail"]["reason"]
    verify(hub)


def test_a_sandbox_that_fails_to_start_has_its_end_recorded_too(hub):
    """Its start was recorded (before it ran): the failure is its stop, with the reason."""
    for args in (("workspace", "create", "broken"), ("workspace", "add-member", "broken", "frank", "--role", "operator")):
        assert hub.enclave(*args).returncode == 0
    home = hub.home / "homes" / "frank" / "broken"
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("a file where the home should be: the supervisor cannot prepare it")
    try:
        frank = hub.login("frank", PASSWORD)
        frank.http.get(f"{hub.url}/hub/spawn/frank/broken")
        wait_for(lambda: hub.audit_records(action="sandbox.stop", workspace="broken"), 60, "the failed start's record")
        start = only(hub.audit_records(action="sandbox.start", workspace="broken"))
        stop = only(hub.audit_records(action="sandbox.stop", workspace="broken"))
        assert stop["sandbox"] == start["sandbox"] and stop["detail"]["reason"].startswith("did not start: ")
    finally:
        home.unlink()


# -- nothing from inside a sandbox can write, forge or take back a record -------------------------

FORGER = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
replies = s.makefile("rb")
def send(record):
    s.sendall(json.dumps(record).encode() + b"\\n")
    return json.loads(replies.readline())
print(json.dumps([
    send({"id": 1, "action": "kernel.execute", "user": "admin", "workspace": "other", "sandbox": "admin/other/x",
          "time": "2020-01-01T00:00:00Z", "detail": {"kernel": "k", "code": "forged", "code_sha256": "0" * 64}}),
    send({"id": 2, "action": "export.vote", "detail": {"request_id": "r", "file": "f", "decision": "approve",
                                                      "reason": "x"}}),
    send({"id": 3, "action": "auth.login", "detail": {"method": "native"}}),
    send({"id": 4, "action": "sandbox.stop", "detail": {}}),
]))
"""


def test_a_taken_over_server_reports_only_as_its_own_sandbox(hub):
    """What a taken-over server can do: run code of its choosing in the server's sandbox (here:
    entering its mount namespace as its uid) and talk to its receiver. Its records are stamped with its
    own sandbox, user and workspace; it cannot report anything that does not happen in a sandbox; the
    audit service itself is out of its reach."""
    frank = hub.login("frank", PASSWORD)
    assert frank.start(WS).status_code == 200
    try:
        spec = json.loads((hub.home / "run" / "sandboxes" / "frank" / WS / "spec.json").read_text())
        uid, sandbox = spec["server"]["identity"]["uid"], spec["audit"]["sandbox"]
        server_pid = next(pid for pid in processes_of_uid(uid)
                          if b"enclave_singleuser" in Path(f"/proc/{pid}/cmdline").read_bytes())
        in_the_server = ["nsenter", f"--target={server_pid}", "--mount", "--", "setpriv", f"--reuid={uid}",
                         f"--regid={uid}", "--clear-groups", "/opt/enclave/env/bin/python", "-I", "-c"]
        forged_run = subprocess.run([*in_the_server, FORGER, "/run/enclave/audit/receiver.sock"],
                                    capture_output=True, text=True, timeout=60)
        assert forged_run.returncode == 0, forged_run.stderr
        replies = json.loads(forged_run.stdout)
        assert "seq" in replies[0]
        assert [r.get("error") for r in replies[1:]] == [
            "a sandbox may not report 'export.vote'", "a sandbox may not report 'auth.login'",
            "a sandbox may not report 'sandbox.stop'"]
        forged = [r for r in hub.audit_records(action="kernel.execute") if r["detail"]["code"] == "forged"]
        assert only(forged)["actor"] == "frank" and forged[0]["workspace"] == WS and forged[0]["sandbox"] == sandbox
        assert forged[0]["time"].startswith(time.strftime("%Y-", time.gmtime()))
        # The audit service's socket is root's alone; a kernel sees neither it nor the receiver.
        probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
                 "try:\n s.connect(sys.argv[1]); print('connected')\nexcept OSError as e: print(type(e).__name__)")
        as_the_uid_on_the_host = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                                  sys.executable, "-I", "-c"]
        reached = subprocess.run([*as_the_uid_on_the_host, probe, str(hub.home / "run" / "audit" / "audit.sock")],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
        assert reached == "PermissionError"
        reached = subprocess.run([*in_the_server, "import os; print(os.path.exists('/run/enclave/hub')"
                                  " and not any('audit.sock' in f for f in os.listdir('/run/enclave/hub')))"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
        assert reached == "True"  # the server has the hub's API socket, and no way to the audit service
        kernel = frank.kernel(WS)
        seen = kernel.value("import os, json\nprint(json.dumps([p for p in ('/run/enclave/audit', '/run/enclave/server',"
                            f" {str(hub.home)!r}) if os.path.exists(p)]))")
        kernel.close()
        assert seen == []
        # What was sent stays: nothing in the sandbox holds a copy to take back, and the log verifies.
        verify(hub)
    finally:
        frank.stop(WS)


# -- fail closed ------------------------------------------------------------------------------------


def test_with_the_audit_log_down_code_is_held_back_and_logins_refused(hub):
    frank = hub.login("frank", PASSWORD)
    assert frank.start(WS).status_code == 200
    kernel = frank.kernel(WS)
    assert kernel.run("print('before')")[0] == "before\n"
    home = hub.home / "homes" / "frank" / WS
    os.kill(audit_service_pid(hub), signal.SIGTERM)
    wait_for(lambda: not (hub.home / "run" / "audit" / "audit.sock").exists(), 30, "the audit service to stop")
    try:
        out, err = kernel.run("open('/home/frank/ran-unrecorded', 'w').write('x')")
        assert err is not None and err.startswith("ExecutionNotRecorded") and "audit log" in err
        assert not (home / "ran-unrecorded").exists()
        r = frank.server_api(WS, "GET", "/contents/")
        assert r.status_code == 200  # listing a folder reads no file
        r = frank.server_api(WS, "PUT", "/contents/held.md", json={"type": "file", "format": "text", "content": "x"})
        assert r.status_code == 503 and "audit log" in r.text and not (home / "held.md").exists()
        with pytest.raises(AssertionError, match="login as frank failed"):
            hub.login("frank", PASSWORD)
    finally:
        kernel.close()
        hub.restart()  # the hub starts its audit service again; the sandbox lives on
    kernel = frank.kernel(WS)
    assert kernel.run("print('after')")[0] == "after\n"
    kernel.close()
    frank.stop(WS)
    verify(hub)


# -- kill -9 of the hub under load -----------------------------------------------------------------


def test_kill_9_of_the_hub_during_heavy_logging_loses_no_acknowledged_record(hub):
    frank = hub.login("frank", PASSWORD)
    assert frank.start(WS).status_code == 200
    acknowledged: list[str] = []
    stop = threading.Event()

    def execute_until_stopped():
        kernel = frank.kernel(WS)
        while not stop.is_set():
            code = f"tag = '{uuid.uuid4().hex}'"
            try:
                out, err = kernel.run(code, timeout=30)
            except Exception:  # the connection went with the hub
                break
            if err is None:
                acknowledged.append(code)  # the kernel ran it, so its record was committed first

    workers = [threading.Thread(target=execute_until_stopped) for _ in range(3)]
    for w in workers:
        w.start()
    wait_for(lambda: len(acknowledged) >= 60, 120, "executions under way")
    os.kill(hub.proc.pid, signal.SIGKILL)
    stop.set()
    for w in workers:
        w.join(60)
    hub.proc.wait()
    hub.start()
    logged = {r["detail"]["code"] for r in hub.audit_records(action="kernel.execute", workspace=WS)}
    assert set(acknowledged) <= logged, f"{len(set(acknowledged) - logged)} acknowledged executions not in the log"
    verify(hub)
    frank = hub.login("frank", PASSWORD)
    frank.stop(WS)
    wait_for(lambda: not processes_of_uid(json.loads((hub.home / "run" / "sandboxes" / "frank" / WS / "spec.json")
                                                     .read_text())["server"]["identity"]["uid"]), 30, "the sandbox to stop")


@pytest.mark.browser
async def test_a_held_back_cell_says_why_in_jupyterlab(hub):
    """As the operator sees it in chromium: a cell runs; the audit log goes down; the next cell is
    held back with the reason under it; the log comes back and cells run again."""
    from playwright.async_api import async_playwright, expect

    frank = hub.login("frank", PASSWORD)
    assert frank.start(WS).status_code == 200
    nb = {"cells": [], "metadata": {"kernelspec": {"name": "enclave-python", "display_name": "Python"}},
          "nbformat": 4, "nbformat_minor": 5}
    assert frank.server_api(WS, "PUT", "/contents/held.ipynb",
                            json={"type": "notebook", "format": "json", "content": nb}).status_code in (200, 201)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        page.set_default_timeout(90_000)
        await log_in(page, hub, "frank", PASSWORD)
        await page.goto(f"{hub.user_origin('frank')}/user/frank/{WS}/lab/tree/held.ipynb")
        await page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content")
        await expect(page.locator(".jp-StatusBar-Widget", has_text="Idle").first).to_be_visible(timeout=90_000)

        async def run_cell(code: str):
            """Type into the last cell and run it (Lab adds a new one below); return the cell that ran."""
            cells = page.locator(".jp-Notebook .jp-Cell")
            cell = cells.nth(await cells.count() - 1)
            await cell.locator(".cm-content").click()
            await page.keyboard.type(code)
            await page.keyboard.press("Shift+Enter")
            return cell

        cell = await run_cell("print('recorded' + ' and run')")
        await expect(cell.locator(".jp-OutputArea-output")).to_contain_text("recorded and run", timeout=90_000)
        os.kill(audit_service_pid(hub), signal.SIGTERM)
        wait_for(lambda: not (hub.home / "run" / "audit" / "audit.sock").exists(), 30, "the audit service to stop")
        try:
            cell = await run_cell("print('should' + ' not run')")
            output = cell.locator(".jp-OutputArea-output")
            await expect(output).to_contain_text("Enclave held this cell back: the audit log cannot record it",
                                                 timeout=60_000)
            assert "should not run" not in await output.inner_text()
        finally:
            await browser.close()
            hub.restart()
    kernel = frank.kernel(WS)
    assert kernel.run("print('after')")[0] == "after\n"
    kernel.close()
    frank.stop(WS)


# -- end to end: a released file traced back to its code and data; the workspace's report --------

TRACED = "traced"
# The reason of the approval the votes take: the rule that decided it.
APPROVAL = workflow.TRANSITIONS[(workflow.IN_REVIEW, workflow.APPROVED, workflow.SYSTEM)].description


@pytest.mark.browser
async def test_a_released_file_traces_back_to_its_code_and_data_and_the_report_counts_it(hub, tmp_path):
    from datetime import UTC, datetime, timedelta

    from enclave_testing import cookie_value
    from playwright.async_api import async_playwright

    for args in (("workspace", "create", TRACED, "--purpose", PURPOSE, "--holder", HOLDER),
                 ("workspace", "add-member", TRACED, "frank", "--role", "operator"),
                 ("workspace", "add-member", TRACED, "carol", "--role", "reviewer"),
                 ("workspace", "attach", TRACED, "households@1", "--reason", "住户规模统计")):
        r = hub.enclave(*args)
        assert r.returncode == 0, (args, r.stderr)
    hub.consent(TRACED, "households@1")
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()

    # frank works in the sandbox: reads the release, writes a summary, asks for it to leave.
    frank = hub.login("frank", PASSWORD)
    assert frank.start(TRACED).status_code == 200
    kernel = frank.notebook_kernel(TRACED, "summary.ipynb")
    read = "import csv\nrows = list(csv.DictReader(open('/data/households@1/table.csv')))"
    write = "open('/home/frank/sizes.csv', 'w').write('district,households\\n' + ''.join(f\"{r['district']},{r['size']}\\n\" for r in rows))"
    for code in (read, write):
        assert kernel.run(code)[1] is None
    kernel.close()
    r = frank.server_request(TRACED, "POST", "enclave/api/exports",
                             json={"paths": ["sizes.csv"], "justification": "各区住户数，用于年度报告"})
    assert r.status_code == 201, r.text
    request_id = r.json()["id"]

    # carol reviews it in the review service; frank downloads the released file.
    service = hub.service_url("exports")
    carol = hub.login("carol", PASSWORD)
    carol.http.get(service + "/")

    def as_carol(path: str, body: dict):
        url = f"{service}/api/requests/{request_id}/{path}"
        return carol.http.post(url, json=body, headers={"X-XSRFToken": cookie_value(carol.http, url, "_xsrf") or ""})

    file_id = carol.http.get(f"{service}/api/requests/{request_id}").json()["files"][0]["id"]
    # One approval is the workspace's policy: carol's vote approves and releases the file.
    voted = as_carol("votes", {"file_id": file_id, "decision": "approve", "reason": "汇总表，无个体"})
    assert voted.status_code == 201 and voted.json()["state"] == "released", voted.text
    frank.http.get(service + "/")
    link_url = f"{service}/api/requests/{request_id}/files/{file_id}/links"
    link = frank.http.post(link_url, headers={"X-XSRFToken": cookie_value(frank.http, link_url, "_xsrf") or ""})
    assert link.status_code == 201, link.text
    downloaded = tmp_path / "sizes.csv"
    service_origin = service.rsplit("/services/", 1)[0]  # the link is a path on the service's origin
    released = frank.http.get(service_origin + link.json()["url"])
    assert released.status_code == 200, released.text
    downloaded.write_bytes(released.content)
    frank.stop(TRACED)
    until = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()

    # The trace: file -> request -> carol's vote and decision -> the two executions -> the session -> the data.
    r = hub.enclave("audit", "trace", str(downloaded), "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    t = json.loads(r.stdout)
    assert t["released"] and t["problems"] == [], t["problems"]
    assert t["request"]["id"] == request_id and t["request"]["requester"] == "frank"
    assert [(v["actor"], v["reason"]) for v in t["votes"]] == [("carol", "汇总表，无个体")]
    assert [(d["actor"], d["decision"], d["reason"]) for d in t["decisions"]] == [("carol", "approved", APPROVAL)]
    assert [d["actor"] for d in t["release"]["downloads"]] == ["frank"]
    assert write in [e["code"] for e in t["executions"]]
    [session] = t["sessions"]
    assert {e["sandbox"] for e in t["executions"]} == {session["sandbox"]}
    assert session["start"]["actor"] == "frank" and session["end"] is not None
    assert [(m["release"], m["reason"]) for m in session["mounts"]] == [("households@1", "住户规模统计")]

    # The report for the period counts exactly what was done; the page shows the same numbers.
    r = hub.enclave("audit", "report", TRACED, "--since", since, "--until", until, "--format", "json")
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout)["counts"]
    assert {k: counts[k] for k in ("requests", "approved", "rejected", "files_released", "downloads", "sessions",
                                   "executions", "active_operators", "supplied", "mounted", "read_in_code")} == {
        "requests": 1, "approved": 1, "rejected": 0, "files_released": 1, "downloads": 1, "sessions": 1,
        "executions": 2, "active_operators": 1, "supplied": 1, "mounted": 1, "read_in_code": 1}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        await log_in(page, hub, "root-admin", PASSWORD)
        query = f"workspace={TRACED}&since={since}&until={until}".replace("+", "%2B")
        response = await page.goto(f"{hub.service_url('audit')}/report?{query}")
        assert response.status == 200
        shown = {await m.get_attribute("data-metric"): int(await m.inner_text())
                 for m in await page.locator("[data-metric]").all()}
        await browser.close()
    assert {k: shown[k] for k in counts if k in shown} == {k: counts[k] for k in shown}
