"""The assessment report of a workspace over a period: its numbers are what the test did, in the
CLI's JSON and HTML, in the audit service's JSON, and on the page chromium shows.

Provisioning goes through the ``enclave`` CLI and the exports through the review service, which
write their own records; sandbox sessions, executions, terminal lines and egress notices are handed
over as the spawner and the receiver hand them (see ``services_hub``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import requests
from enclave_testing import HOLDER, PURPOSE

from enclave.exports import workflow
from enclave.rbac import AUDIT_SERVICE, EXPORTS_SERVICE

from .services_hub import (CJK_FONTS, SAFE_TABLE, SMALL_CELLS, SandboxRecords, browser, cjk_characters,  # noqa: F401
                           fonts_drawing, logged_in, running_hub)

WS = "report-pilot"
OPERATOR = "张三"  # an operator named by the identity provider, in Chinese
REJECTION = "小单元格计数低于阈值，不能发布"
RETURN = "请把收入四舍五入到百位后再提交"
# The reasons of the decisions the votes take: the rule, and for a return each reviewer's reason.
BY_REJECT_VOTES = workflow.TRANSITIONS[(workflow.IN_REVIEW, workflow.REJECTED, workflow.SYSTEM)].description
RETURN_REASON = (workflow.TRANSITIONS[(workflow.IN_REVIEW, workflow.RETURNED, workflow.SYSTEM)].description
                 + f"\nincome.csv: {RETURN}" * 2)
EXPECTED = {
    "requests": 3, "approved": 1, "rejected": 1, "returned": 1, "withdrawn": 0, "check_failures": 1,
    "files_released": 1, "downloads": 1, "revocations": 0, "egress_notices": 2, "active_operators": 2,
    "sessions": 3, "executions": 5, "terminal_lines": 1, "supplied": 2, "mounted": 2, "read_in_code": 2,
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with running_hub(tmp_path_factory.mktemp("report") / "home") as hub:
        yield hub


def now() -> str:
    return datetime.now(UTC).isoformat()


@pytest.fixture(scope="module")
def period(hub):
    """A period with known activity, and records before and after it that the report must leave out."""
    hub.cli("workspace", "create", WS, "--purpose", PURPOSE, "--holder", HOLDER)
    hub.cli("workspace", "add-member", WS, "olga", "--role", "operator")
    for reviewer in ("rita", "rob"):
        hub.cli("workspace", "add-member", WS, reviewer, "--role", "reviewer")
    hub.cli("workspace", "attach", WS, "people@1")
    hub.cli("workspace", "attach", WS, "census@2", "--columns", "district,size,rent")
    hub.cli("workspace", "attach", WS, "tax@3")
    for release in ("people@1", "census@2", "tax@3"):
        hub.consent(WS, release)
    # The CLI has no detach command: the record its library function hands over.
    sandbox = SandboxRecords(hub)
    sandbox.client.append("cli", "adam", "workspace.detach", workspace=WS, detail={"release": "tax@3"})
    before, _ = sandbox.start("olga", WS, ["people@1", "census@2"])
    sandbox.execute(before, "pd.read_csv('/data/tax@3/returns.csv')")
    since = now()

    # Sessions and code: olga twice, 张三 once.
    olga, _ = sandbox.start("olga", WS, ["people@1", "census@2"])
    sandbox.execute(olga, "people = pd.read_parquet('/data/people@1/persons.parquet')")
    sandbox.execute(olga, "people.groupby('district').age.mean()")
    sandbox.execute(olga, "pd.read_csv('/data/secret@9/all.csv')")  # not supplied to this workspace
    sandbox.terminal(olga, "head /data/census@2/households.csv")
    sandbox.egress(olga, "kernel_output", "an execution's output over its budget")
    sandbox.start("olga", WS, ["people@1", "census@2"])
    zhang, _ = sandbox.start(OPERATOR, WS, ["people@1", "census@2"])
    sandbox.execute(zhang, "h = pd.read_parquet('/data/census@2/households.parquet')\nh['size'].value_counts()")
    sandbox.execute(zhang, "h.plot()")
    sandbox.egress(zhang, "terminal_output", "终端输出超出预算")

    # Three export requests: released and downloaded; rejected (its table fails the checks); returned.
    server, rita, rob = hub.as_server("olga", WS), hub.as_user("rita"), hub.as_user("rob")
    # The votes decide each request: rob's, the second, approves, rejects or returns it.
    approved = server.submit({"counts.csv": SAFE_TABLE}, {}, "各区人数")
    for reviewer in (rita, rob):
        reviewer.vote(approved, "approve", "计数安全")
    hub.as_user("olga").download(approved, "counts.csv")
    rejected = server.submit({"small.csv": SMALL_CELLS}, {}, "小区人数")
    for reviewer in (rita, rob):
        reviewer.vote(rejected, "reject", REJECTION)
    returned = server.submit({"income.csv": SAFE_TABLE}, {}, "收入分布")
    for reviewer in (rita, rob):
        reviewer.vote(returned, "request_changes", RETURN)
    until = now()

    sandbox.execute(olga, "people.describe()")  # after the period
    sandbox.close()
    return {"since": since, "until": until, "rejected": rejected["id"], "returned": returned["id"]}


def cli_report(hub, period, *args: str) -> str:
    r = hub.enclave("audit", "report", WS, "--since", period["since"], "--until", period["until"], *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_the_report_counts_what_was_done(hub, period):
    report = json.loads(cli_report(hub, period, "--format", "json"))
    assert report["counts"] == EXPECTED
    assert [(o["user"], o["sessions"], o["executions"], o["terminal_lines"], o["requests"], o["egress_notices"])
            for o in report["operators"]] == [("olga", 2, 3, 1, 3, 1), (OPERATOR, 1, 2, 0, 0, 1)]
    assert [(d["decision"], d["actor"], d["reason"], d["request_id"]) for d in report["decisions"]] == [
        ("rejected", "rob", BY_REJECT_VOTES, period["rejected"]), ("returned", "rob", RETURN_REASON, period["returned"])]
    [failure] = report["check_failures"]
    assert (failure["file"], failure["request_id"], failure["checks"]) == ("small.csv", period["rejected"],
                                                                           ["small_cells"])
    assert [(d["actor"], d["file"]) for d in report["downloads"]] == [("olga", "counts.csv")]
    assert [e["actor"] for e in report["egress_notices"]] == ["olga", OPERATOR]

    data = {d["release"]: d for d in report["data"]}
    assert set(data) == {"people@1", "census@2", "secret@9"}  # tax@3: detached before the period
    people, census, secret = data["people@1"], data["census@2"], data["secret@9"]
    assert (people["supplied"], people["columns"], people["sessions_mounting"], people["executions_reading"],
            people["operators_reading"]) == (True, None, 3, 1, ["olga"])
    assert (census["supplied"], census["columns"], census["sessions_mounting"], census["executions_reading"],
            census["operators_reading"]) == (True, ["households.district", "households.size", "households.rent"],
                                             3, 2, ["olga", OPERATOR])
    assert census["columns_named"] == {"households.district": 1, "households.size": 1, "households.rent": 0}
    assert (secret["supplied"], secret["executions_reading"]) == (False, 1)
    granted = [r["seq"] for r in hub.audit_records(workspace=WS, action="workspace.attach")]
    assert [a["seq"] for a in people["attach_records"] + census["attach_records"]] == granted[:2]

    # The HTML form, written to a file: UTF-8, the same numbers.
    path = hub.home / "report.html"
    cli_report(hub, period, "-o", str(path))
    html = path.read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in html and RETURN in html and OPERATOR in html
    for metric, value in EXPECTED.items():
        assert f'data-metric="{metric}">{value}<' in html


def test_an_empty_or_backwards_period_is_refused(hub, period):
    r = hub.enclave("audit", "report", WS, "--since", period["until"], "--until", period["since"])
    assert r.returncode == 1 and "the period is empty" in r.stderr
    r = hub.enclave("audit", "report", WS, "--since", "soon", "--until", period["until"])
    assert r.returncode == 1 and "not an ISO 8601 date" in r.stderr


def test_the_audit_service_serves_the_same_numbers(hub, period):
    token = hub.token("adam", ["custom:audit:read", f"access:services!service={AUDIT_SERVICE}"])
    url = hub.service_url("audit") + "/report"
    args = {"workspace": WS, "since": period["since"], "until": period["until"]}
    served = requests.get(url, params={**args, "format": "json"}, headers={"Authorization": f"token {token}"},
                          timeout=60)
    assert served.status_code == 200, served.text
    on_cli = json.loads(cli_report(hub, period, "--format", "json"))
    assert {k: v for k, v in served.json().items() if k != "generated_at"} == \
        {k: v for k, v in on_cli.items() if k != "generated_at"}
    # An operator cannot even be given access to the service; with any token of theirs, it refuses them.
    operator = hub.token("olga", [f"access:services!service={EXPORTS_SERVICE}"])
    assert requests.get(url, params=args, headers={"Authorization": f"token {operator}"}, timeout=60).status_code == 403


async def test_the_report_renders_in_chromium(hub, period, browser):  # noqa: F811
    context, page = await logged_in(browser, hub, "adam")
    refused = []
    page.on("console", lambda m: "Content Security Policy" in m.text and refused.append(m.text))
    query = f"workspace={WS}&since={period['since']}&until={period['until']}".replace("+", "%2B")
    response = await page.goto(f"{hub.service_url('audit')}/report?{query}")
    assert response.status == 200
    await page.wait_for_selector("[data-metric=requests]")

    shown = {await m.get_attribute("data-metric"): int(await m.inner_text())
             for m in await page.locator("[data-metric]").all()}
    assert shown == EXPECTED

    # The figures are drawn: each is on screen, and each bar is as long as its number says.
    charts = page.locator("figure.chart svg")
    assert await charts.count() == 4
    for i in range(4):
        box = await charts.nth(i).bounding_box()
        assert box and box["width"] > 300 and box["height"] > 40
    bars = await page.locator("rect.bar").all()
    for bar in bars:
        value, box = int(await bar.get_attribute("data-value")), await bar.bounding_box()
        assert (box is not None and box["width"] > 0) == (value > 0), (value, box)
    outcomes = page.locator("figure.chart").first
    for label, value in (("requests", 3), ("approved", 1), ("rejected", 1), ("downloads", 1)):
        row = outcomes.locator(f"g.row[data-label='{label}']")
        assert await row.locator("rect.bar").get_attribute("data-value") == str(value)
    screenshot = await page.locator("figure.chart").nth(1).screenshot()
    assert len(screenshot) > 2000

    # Chinese text is drawn with a font that has its glyphs (no boxes), in the tables and the figures.
    returned = "#decisions tbody tr:nth-child(2) td.reason"
    for selector, text in ((returned, RETURN_REASON), (f"#operators tr[data-user='{OPERATOR}'] td", OPERATOR),
                           (f"g.row[data-label='{OPERATOR}'] text.label", OPERATOR)):
        assert (await page.locator(selector).first.text_content()).strip() == text
        fonts = await fonts_drawing(page, selector)
        assert sum(n for family, n in fonts.items() if family in CJK_FONTS) >= cjk_characters(text), fonts
    assert not refused, refused
    await context.close()
