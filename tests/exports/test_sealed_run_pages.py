"""The data holder's "Sealed runs" page of the review service (issue #18), through the package's real
hub and service: the holder sets a workspace's sealed-run policy with the page's form and approves or
refuses the runs awaiting them; a reader who holds nothing, or holds another workspace, is refused by
the service layer and changes nothing; the page and its messages read in Chinese.

The module has a workspace of its own, ``sealed-pages``, whose data holder ``hana`` and operator
``otto`` log in with the package's password; ``hugo`` holds another workspace. Runs awaiting approval
are inserted as rows of the review service's database: a real submission needs a synthetic release
with a sealed view, whose generation takes minutes (``tests/test_sealed_runs.py`` submits real ones);
what the page does with a run (show it, ask ``SealedRuns.decide``) is the same. Their release is not
attached to the workspace, so the service's queue, taking an approved run, refuses it before any
sandbox starts.
"""

from __future__ import annotations

import hashlib
import html
import re
import uuid
from dataclasses import asdict

import pytest

from enclave import accounts, workspaces
from enclave.exports.models import Database, SealedRun, db_url
from enclave.exports.service import now
from enclave.sealed.runner import RunLimits

WS = "sealed-pages"
OTHER_WS = "sealed-pages-other"
HOLDER, OTHER_HOLDER, OPERATOR = "hana", "hugo", "otto"
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
EN = {"Accept-Language": "en"}
NOTEBOOK, INPUT, OUTPUT = "分析/回归.ipynb", "参数/设置.json", "结果/系数.json"


@pytest.fixture(scope="module")
def holders(hub) -> dict:
    """The module's accounts and workspaces; each reader's browser session, logged in."""
    for name, roles in ((HOLDER, ["holder"]), (OTHER_HOLDER, ["holder"]), (OPERATOR, ["operator"])):
        accounts.add_user(hub.settings, name, roles, hub.password)
    workspaces.create(hub.settings, WS, holder=HOLDER, purpose="收入与年龄的回归分析")
    workspaces.add_member(hub.settings, WS, OPERATOR, "operator")
    workspaces.create(hub.settings, OTHER_WS, holder=OTHER_HOLDER, purpose="另一项分析")
    return {name: hub.login(name) for name in (HOLDER, OTHER_HOLDER, OPERATOR, "rita")}


@pytest.fixture(scope="module")
def api(hub, holders, client):
    """The JSON API as the operator's sandbox (its server token) and as a reviewer."""
    return {"otto@ws": client(hub.server_token(OPERATOR, WS)), "rita": client(hub.user_token("rita"))}


def awaiting_run(hub) -> str:
    """A run of otto's in ``sealed-pages`` awaiting the holder's approval, as a submission leaves it."""
    notebook, settings_file = b'{"cells": []}', '{"阈值": 10}'.encode()
    run_id = uuid.uuid4().hex
    with Database(db_url(hub.settings), migrate=False).transaction() as s:
        s.add(SealedRun(
            id=run_id, workspace=WS, requester=OPERATOR, release="incomes@1", notebook_path=NOTEBOOK,
            notebook_sha256=hashlib.sha256(notebook).hexdigest(),
            inputs=[{"path": INPUT, "sha256": hashlib.sha256(settings_file).hexdigest(), "size": len(settings_file)}],
            outputs=[OUTPUT], limits=asdict(RunLimits(seconds=600, memory_mb=2048, disk_mb=512, cpus=1.0)),
            policy_version=0, state="awaiting_approval", submitted_at=now(), updated_at=now()))
    return run_id


def run_row(hub, run_id: str) -> SealedRun:
    with Database(db_url(hub.settings), migrate=False).snapshot() as s:
        return s.get(SealedRun, run_id)


def get_page(hub, session, headers=EN, status: int = 200) -> str:
    r = session.get(f"{hub.service}/sealed-runs", headers=headers, timeout=30)
    assert r.status_code == status, r.text[:500]
    return r.text


def post(hub, session, action: str, fields: dict, headers=EN, status: int = 200):
    """Send a form of the reader's sealed-runs page (with the page's _xsrf token), as a browser does:
    the page it comes back to (after the redirect, when the form was taken)."""
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', get_page(hub, session, headers)).group(1)
    r = session.post(f"{hub.service}/{action}", data={"_xsrf": xsrf, **fields}, headers=headers, timeout=60)
    assert r.status_code == status, r.text[:2000]
    return r


def flash_on(page: str) -> str:
    return html.unescape(re.search(r'id="flash">([^<]*)</p>', page).group(1))


def refusal_on(page: str) -> tuple[str, str]:
    """The refusal a page shows: its stable code and its text."""
    found = re.search(r'<p class="error" role="alert" id="error" data-code="([^"]+)">([^<]*)</p>', page)
    assert found, page[:2000]
    return found.group(1), html.unescape(found.group(2))


def policy_form(workspace: str = WS, **fields) -> dict:
    """The policy form of ``workspace`` as a browser sends it: the defaults, but for ``fields``."""
    return {"workspace": workspace, "approval_required": "true", "runs_per_day": "3", "reviewers": "",
            "seconds": "600", "memory_mb": "2048", "disk_mb": "512", **fields}


def policy(api) -> dict:
    r = api["rita"].get(f"/workspaces/{WS}/sealed-run-policy")
    assert r.status_code == 200, r.text
    return r.json()


def test_the_holder_sets_the_policy_through_the_form(hub, holders, api):
    hana = holders[HOLDER]
    page = get_page(hub, hana)
    assert f'id="policy-{WS}"' in page and f'id="policy-{OTHER_WS}"' not in page
    assert "No sealed run awaits your approval." in page  # the module's first test: none made yet
    assert ("The reviewers you appoint will see results computed on the raw data; the workspace's operators"
            " cannot be appointed.") in html.unescape(page)
    assert "<script" not in page  # the pages' CSP forbids scripts: the forms work without any

    # Reviewers as people type them: a Chinese comma, a new line; a number in full-width digits.
    sent = policy_form(approval_required="false", runs_per_day="５", reviewers="rita，rob\nrhea",
                       seconds="120", memory_mb="1024", disk_mb="256")
    saved = post(hub, hana, "sealed-runs/policy", sent)
    assert flash_on(saved.text) == f"The sealed-run policy of {WS} is saved (version 1)."
    assert policy(api) == {"approval_required": False, "runs_per_day": 5, "reviewers": ["rhea", "rita", "rob"],
                           "limits": {"seconds": 120, "memory_mb": 1024, "disk_mb": 256, "cpus": 1.0}, "version": 1}
    # The page shows what is set.
    assert re.search(r'name="runs_per_day" required\s+value="5"', saved.text)
    assert '<option value="false" selected>' in saved.text
    [record] = hub.records("sealed_run.policy", workspace=WS)
    assert record["actor"] == HOLDER and record["detail"]["reviewers"] == ["rhea", "rita", "rob"]

    # The same form again changes nothing: no new version, nothing recorded.
    again = post(hub, hana, "sealed-runs/policy", sent)
    assert flash_on(again.text) == f"Nothing changed in the sealed-run policy of {WS}."
    assert policy(api)["version"] == 1
    # One field changed: a new version, the rest as it was.
    post(hub, hana, "sealed-runs/policy", {**sent, "approval_required": "true"})
    assert policy(api) == {"approval_required": True, "runs_per_day": 5, "reviewers": ["rhea", "rita", "rob"],
                           "limits": {"seconds": 120, "memory_mb": 1024, "disk_mb": 256, "cpus": 1.0}, "version": 2}
    assert len(hub.records("sealed_run.policy", workspace=WS)) == 2


def test_appointing_an_operator_is_refused_with_its_code(hub, holders, api):
    hana = holders[HOLDER]
    before = policy(api)
    refused = post(hub, hana, "sealed-runs/policy", policy_form(reviewers="rita, otto"), headers=ZH, status=403)
    assert refusal_on(refused.text) == (
        "sealed_run.reviewer_is_operator",
        f"otto 是工作空间 '{WS}' 的操作员：操作员不得审核基于原始数据计算的结果")
    # The form comes back with what was sent, to be corrected.
    assert re.search(r'name="reviewers">rita, otto</textarea>', refused.text)
    english = post(hub, hana, "sealed-runs/policy", policy_form(reviewers="otto"), status=403)
    assert refusal_on(english.text) == (
        "sealed_run.reviewer_is_operator",
        f"otto is an operator of workspace '{WS}': operators never review results computed on the raw data")
    # A value the policy does not take is refused naming the field, before the service is asked.
    bad = post(hub, hana, "sealed-runs/policy", policy_form(runs_per_day="很多"), headers=ZH, status=400)
    assert refusal_on(bad.text)[0] == "request.wrong_type" and "runs_per_day" in refusal_on(bad.text)[1]
    assert policy(api) == before


def test_a_reader_who_is_not_the_holder_is_refused_and_nothing_changes(hub, holders, api):
    before = policy(api)
    run_id = awaiting_run(hub)
    # hugo holds another workspace: his page has his own form, which he sends for hana's workspace.
    hugo = holders[OTHER_HOLDER]
    page = get_page(hub, hugo)
    assert f'id="policy-{OTHER_WS}"' in page and f'id="policy-{WS}"' not in page and run_id not in page
    refused = post(hub, hugo, "sealed-runs/policy", policy_form(WS, reviewers="hugo", runs_per_day="99"),
                   status=403)
    assert refusal_on(refused.text) == (
        "sealed_run.not_the_holder",
        f"only the data holder of workspace '{WS}' ({HOLDER}) sets and approves its sealed runs")
    assert policy(api) == before
    # Nor can he decide hana's runs.
    for fields in ({"approve": "true"}, {"approve": "false", "reason": "不批准"}):
        refused = post(hub, hugo, f"sealed-runs/{run_id}/decision", fields, status=403)
        assert refusal_on(refused.text)[0] == "sealed_run.not_the_holder"
    assert run_row(hub, run_id).state == "awaiting_approval"
    assert not [r for r in hub.records("sealed_run.step") if r["detail"]["run_id"] == run_id]

    # A form another site makes hana's browser send (her cookie, no _xsrf token) is refused too.
    hana = holders[HOLDER]
    forged = hana.post(f"{hub.service}/sealed-runs/policy", data=policy_form(reviewers="hugo", runs_per_day="99"),
                       allow_redirects=False, timeout=30)
    assert forged.status_code == 403
    forged = hana.post(f"{hub.service}/sealed-runs/{run_id}/decision", data={"approve": "true"},
                       allow_redirects=False, timeout=30)
    assert forged.status_code == 403
    assert policy(api) == before and run_row(hub, run_id).state == "awaiting_approval"

    # A reviewer who holds nothing reads that sealed runs are set by data holders, and has no link to them.
    rita = holders["rita"]
    page = get_page(hub, rita)
    assert "Sealed runs are set by the data holders of workspaces, and you are the data holder of none." in page
    assert 'name="workspace"' not in page and 'id="nav-sealed-runs"' not in page
    assert 'id="nav-sealed-runs"' not in rita.get(f"{hub.service}/queue", timeout=30).text
    assert policy(api) == before


def test_the_holder_approves_one_run_and_refuses_another_with_a_chinese_reason(hub, holders, api):
    hana = holders[HOLDER]
    approved, refused = awaiting_run(hub), awaiting_run(hub)
    page = get_page(hub, hana, ZH)
    run = page[page.index(f'id="run-{approved}"'):page.index(f'id="run-{refused}"')]
    row = run_row(hub, approved)
    for shown in (f"<td>{OPERATOR}</td>", f"<td>{WS}</td>", "<td>incomes@1</td>", NOTEBOOK, row.notebook_sha256,
                  f"{INPUT} <code", row.inputs[0]["sha256"][:12], OUTPUT,
                  f'<time datetime="{row.submitted_at.isoformat()}"'):
        assert shown in run, shown

    done = post(hub, hana, f"sealed-runs/{approved}/decision", {"approve": "true"}, headers=ZH)
    assert flash_on(done.text) == f"{NOTEBOOK} 的密封运行已批准，正在排队等候运行。"
    assert f'id="run-{approved}"' not in done.text and f'id="run-{refused}"' in done.text
    assert run_row(hub, approved).state != "awaiting_approval"  # queued (the queue may have taken it since)
    [step] = [r for r in hub.records("sealed_run.step") if r["detail"]["run_id"] == approved
              and r["detail"]["step"] == "approve"]
    assert step["actor"] == HOLDER and step["detail"]["state"] == "queued"

    # A refusal needs a reason: a blank one is refused, in Chinese, with its code; the run still waits.
    blank = post(hub, hana, f"sealed-runs/{refused}/decision", {"approve": "false", "reason": "   "},
                 headers=ZH, status=400)
    assert refusal_on(blank.text) == ("sealed_run.reason_required", "拒绝密封运行必须填写理由")
    assert run_row(hub, refused).state == "awaiting_approval"

    reason = "数据用途与申请不符：请先说明回归分析的目的（见《数据使用协议》第3条）。"
    done = post(hub, hana, f"sealed-runs/{refused}/decision", {"approve": "false", "reason": reason}, headers=ZH)
    assert flash_on(done.text) == f"{NOTEBOOK} 的密封运行已拒绝；申请人会看到您的理由。"
    assert f'id="run-{refused}"' not in done.text
    row = run_row(hub, refused)
    assert row.state == "refused" and row.refusal["text"] == reason
    [step] = [r for r in hub.records("sealed_run.step") if r["detail"]["run_id"] == refused]
    assert (step["actor"], step["detail"]["step"], step["detail"]["reason"]) == (HOLDER, "refuse", reason)
    # The operator reads the reason as it was written.
    mine = api["otto@ws"].get("/sealed-runs", headers=ZH)
    assert mine.status_code == 200, mine.text
    [shown] = [r for r in mine.json()["runs"] if r["id"] == refused]
    assert shown["state"] == "refused" and shown["notebook"] == NOTEBOOK
    assert (shown["refusal"]["code"], shown["refusal"]["message"]) == ("sealed_run.refused_by_holder", reason)


def test_the_page_in_chinese_and_its_link_for_holders(hub, holders):
    hana = holders[HOLDER]
    page = get_page(hub, hana, ZH)
    assert '<html lang="zh-CN">' in page
    for text in ("<title>密封运行 · Enclave</title>", "<h1>密封运行</h1>", f"<h2>{WS} 的密封运行策略",
                 "待您批准", "运行须经您批准", ">是</option>", ">否</option>", "每名操作员 24 小时内可提交的运行次数",
                 "指定的审核人（用户名，以逗号或换行分隔）",
                 "您指定的审核人将看到基于原始数据计算的结果；不能指定该工作空间的操作员。",
                 "时间上限（秒）", "内存（MiB）", "磁盘（MiB）", f"保存 {WS} 的策略"):
        assert text in page, text
    for english in ("Sealed runs", "Appointed reviewers", "Awaiting your approval", "Time limit"):
        assert english not in page, english
    # A run's labels, in Chinese too.
    run_id = awaiting_run(hub)
    run = get_page(hub, hana, ZH)
    run = run[run.index(f'id="run-{run_id}"'):]
    for text in ("<th>申请人</th>", "<th>数据版本</th>", "<th>笔记本</th>", "<th>输入文件</th>", "<th>申请保留的输出</th>",
                 ">批准</button>", ">拒绝</button>", "拒绝理由（必填，操作员会看到）"):
        assert text in run, text
    assert "密封运行由工作空间的数据持有方设置，而您不是任何工作空间的数据持有方。" in get_page(hub, holders["rita"], ZH)

    # The link: in the header of every page for a holder, and the service's home sends a holder there.
    assert re.search(r'<a href="[^"]*/sealed-runs" id="nav-sealed-runs">密封运行</a>', page)
    home = hana.get(f"{hub.service}/", allow_redirects=False, timeout=30)
    assert home.status_code == 302 and home.headers["Location"].endswith("/sealed-runs")
    assert 'id="nav-sealed-runs"' not in holders[OPERATOR].get(f"{hub.service}/mine", timeout=30).text
