"""The review service's pages in Simplified Chinese for a browser that asks for it, in English otherwise.

A request with a Chinese file name and title goes through the package's real hub; a reviewer and the
requester fetch its pages through the proxy with and without ``Accept-Language: zh-CN``; reviewers vote
and comment through the pages' forms in Chinese, and the messages confirming it are Chinese too.
"""

from __future__ import annotations

import csv
import html
import io
import re

import pytest
import requests

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
TITLE = "各区人数统计"
FILE = "区域人数.csv"


def table() -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([["区域", "人数"], ["北区", "120"], ["南区", "340"]])
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def request_id(client, tokens) -> str:
    r = client(tokens["olga@ws1"]).submit({FILE: table()}, title=TITLE, context="季度报告用的各区人数。")
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture(scope="module")
def rita(hub):
    return hub.login("rita")


def get(session, url: str, headers: dict | None = None, status: int = 200):
    r = session.get(url, headers=headers or {}, timeout=30)
    assert r.status_code == status, r.text[:500]
    assert r.headers["Vary"].lower().count("accept-language") == 1
    return r


def test_the_queue_and_a_request_page_in_chinese(hub, rita, request_id):
    queue = get(rita, f"{hub.service}/queue", ZH)
    assert queue.headers["Content-Language"] == "zh-CN"
    html = queue.text
    assert '<html lang="zh-CN">' in html
    for text in ("<title>审核队列 · Enclave</title>", "<h1>审核队列</h1>", "待您投票", "全部导出申请",
                 ">筛选</button>", ">任意时间</option>", ">已提交</span>", "<th>申请人</th>", TITLE):
        assert text in html, text
    # Dates as Chinese readers write them: 2026/3/5 14:07 UTC.
    assert re.search(r'<time datetime="[^"]+">\d{4}/\d{1,2}/\d{1,2} \d{2}:\d{2} UTC</time>', html)
    for english in ("Review queue", "Awaiting your vote", "Filter", "Submitted"):
        assert english not in html, english

    page = get(rita, f"{hub.service}/requests/{request_id}", ZH).text
    assert '<html lang="zh-CN">' in page
    for text in ("<h2>下一步</h2>", "有 1 个文件待您投票：", f"对 {FILE} 投票", ">批准</option>",
                 ">退回修改</option>", ">拒绝</option>", "理由（必填）", "<th>提交时间</th>", "每个文件需 2 票",
                 "<h2>历史记录</h2>", "投票互不可见", "仅审核人", "添加评论", ">检查：通过</span>", ">待定</span>",
                 "第 1 版 · 36字节 · 文本", "<th>检查项</th>"):
        assert text in page, text
    assert re.search(r"\d{4}年\d{1,2}月\d{1,2}日 \d{2}:\d{2}:\d{2} UTC", page)
    for english in ("Next step", "Your vote", "Add comment", "History", "bytes", "KiB"):
        assert english not in page, english


def test_the_same_pages_in_english_by_default(hub, rita, request_id):
    for headers in ({}, {"Accept-Language": "en-US,en;q=0.9"}, {"Accept-Language": "fr-FR, de;q=0.8"}):
        queue = get(rita, f"{hub.service}/queue", headers)
        assert queue.headers["Content-Language"] == "en"
        assert '<html lang="en">' in queue.text and "<h1>Review queue</h1>" in queue.text and TITLE in queue.text
        assert "审核队列" not in queue.text and "待您投票" not in queue.text
        page = get(rita, f"{hub.service}/requests/{request_id}", headers).text
        for text in ("<h2>Next step</h2>", f"Vote on {FILE}", "version 1 · 36 bytes · text", "Reason (required)"):
            assert text in page, text
        assert "下一步" not in page and "批准" not in page
        assert re.search(r"[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d{2}:\d{2}\s[AP]M UTC", page)


def test_the_requesters_list_and_an_error_page_in_chinese(hub, request_id):
    olga = hub.login("olga")
    mine = get(olga, f"{hub.service}/mine", ZH).text
    assert "<h1>我的导出申请</h1>" in mine and TITLE in mine and "共 " in mine
    missing = get(olga, f"{hub.service}/requests/{'0' * 32}", ZH, status=404).text
    assert '<html lang="zh-CN">' in missing and "<title>错误 404 · Enclave</title>" in missing


def post_form(session, page: str, action: str, fields: dict) -> str:
    """Send a form of the request page ``page`` (its ``_xsrf`` token with it) in Chinese; the flash
    message of the page the browser is sent back to."""
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    r = session.post(action, data={"_xsrf": xsrf, **fields}, headers=ZH, timeout=60)
    assert r.status_code == 200, r.text[:500]
    return html.unescape(re.search(r'id="flash">([^<]*)</p>', r.text).group(1))


def test_the_messages_after_a_vote_and_a_comment_in_chinese(hub, client, tokens, rita):
    r = client(tokens["olga@ws1"]).submit({FILE: table()}, title="各区人数（投票）", context="季度报告用的各区人数。")
    assert r.status_code == 201, r.text
    url = f"{hub.service}/requests/{r.json()['id']}"
    page = get(rita, url, ZH).text
    file_id = re.search(r'name="file_id" value="(\d+)"', page).group(1)
    vote = {"file_id": file_id, "decision": "approve", "reason": "各区汇总，每格不少于 10 人"}
    assert post_form(rita, page, f"{url}/vote", vote) == f"您对 {FILE} 的投票已记录：批准。"
    assert post_form(rita, page, f"{url}/comment", {"text": "已核对各区合计。", "visibility": "private"}) == (
        "您的评论已添加。")
    # The second vote decides the request: the message says so, the state in words.
    rob = hub.login("rob")
    page = get(rob, url, ZH).text
    assert post_form(rob, page, f"{url}/vote", vote) == (
        f"您对 {FILE} 的投票已记录：批准。投票已决定该导出申请的结果：“已放行”。")


def refusal_on(page: str) -> tuple[str, str]:
    """The refusal a page shows: its stable code and its text."""
    found = re.search(r'<p class="error" role="alert" id="error" data-code="([^"]+)">([^<]*)</p>', page)
    assert found, page[:2000]
    return found.group(1), html.unescape(found.group(2))


def test_refusals_on_the_pages_in_chinese_with_their_codes(hub, client, tokens):
    # 'dual' operates and reviews ws1: voting on their own request is refused, in Chinese, with its code.
    r = client(tokens["dual@ws1"]).submit({FILE: table()}, title="自审测试", context="季度报告用的各区人数。")
    assert r.status_code == 201, r.text
    request_id, file_id = r.json()["id"], r.json()["files"][0]["id"]
    url = f"{hub.service}/requests/{request_id}"
    dual = hub.login("dual")
    page = get(dual, url, ZH).text
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    vote = {"_xsrf": xsrf, "file_id": file_id, "decision": "approve", "reason": "我自己看过了"}
    refused = dual.post(f"{url}/vote", data=vote, headers=ZH, timeout=60)
    assert refused.status_code == 403 and refused.headers["Content-Language"] == "zh-CN"
    assert refusal_on(refused.text) == ("export.self_review", "任何人都不能审核自己提出的导出申请")
    # The same refusal in English for an English browser: the code does not change with the language.
    refused = dual.post(f"{url}/vote", data=vote, headers={"Accept-Language": "en"}, timeout=60)
    assert refusal_on(refused.text) == ("export.self_review", "nobody reviews a request they made")

    # A reviewer's vote without a reason: the form is refused naming the field, in Chinese.
    rita = hub.login("rita")
    page = get(rita, url, ZH).text
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    blank = rita.post(f"{url}/vote", data={"_xsrf": xsrf, "file_id": file_id, "decision": "approve", "reason": "  "},
                      headers=ZH, timeout=60)
    assert blank.status_code == 400
    assert refusal_on(blank.text) == ("request.empty", "reason 不能为空")  # the form's blanks are stripped
    assert client(tokens["rita"]).get(f"/requests/{request_id}").json()["state"] == "submitted"

    # An error page of its own: a request that does not exist, its number in the Chinese message.
    missing = get(rita, f"{hub.service}/requests/{'0' * 32}", ZH, status=404).text
    assert refusal_on(missing) == ("export.not_found", f"不存在导出申请 {'0' * 32}")


def test_refusals_through_the_api_carry_code_params_and_the_callers_language(hub, client, tokens):
    r = client(tokens["dual@ws1"]).submit({FILE: table()}, title="自审测试（接口）", context="季度报告用的各区人数。")
    assert r.status_code == 201, r.text
    request_id, file_id = r.json()["id"], r.json()["files"][0]["id"]
    body = {"file_id": file_id, "decision": "approve", "reason": "我自己看过了"}

    refused = client(tokens["dual"]).post(f"/requests/{request_id}/votes", body, headers=ZH)
    assert refused.status_code == 403 and refused.headers["Content-Language"] == "zh-CN"
    assert refused.json() == {"status": 403, "error": "nobody reviews a request they made", "code": "export.self_review",
                              "text": "nobody reviews a request they made", "params": {},
                              "message": "任何人都不能审核自己提出的导出申请"}

    # A refusal with params: the English text keeps its placeholders, the params fill them.
    missing = client(tokens["rita"]).post(f"/requests/{request_id}/votes", {**body, "file_id": 987654}, headers=ZH)
    assert missing.status_code == 404
    assert {k: missing.json()[k] for k in ("code", "text", "params")} == {
        "code": "export.no_current_file", "text": "request %(request)s has no current file %(file_id)s",
        "params": {"request": request_id, "file_id": 987654}}
    assert missing.json()["error"] == missing.json()["text"] % missing.json()["params"]
    assert missing.json()["message"] == f"导出申请 {request_id} 没有当前文件 987654"

    # Without Accept-Language the message is English, as the error is.
    english = client(tokens["dual"]).post(f"/requests/{request_id}/votes", body).json()
    assert (english["code"], english["message"]) == ("export.self_review", "nobody reviews a request they made")

    # A refusal of the web edge (no token at all) has its code too.
    anonymous = requests.post(f"{hub.service}/api/requests/{request_id}/votes", json=body, headers=ZH, timeout=30)
    assert anonymous.status_code == 403 and anonymous.json()["code"] == "export.not_authenticated"
    assert anonymous.json()["message"].startswith("未登录")

    # A file the checks refuse outright (a table saved as GBK, as Excel does by default in China):
    # the check's answer names the refusal's code, and says it in the caller's language.
    checker = client(tokens["olga@ws1"])
    checker.session.headers.update(ZH)
    checked = checker.submit({"区域人数_gbk.csv": "区域,人数\n北区,120\n".encode("gbk")}, path="/checks")
    assert checked.status_code == 200, checked.text
    rejected = checked.json()["files"][0]
    assert (rejected["code"], rejected["params"]["file"]) == ("export.file.not_utf8", "'区域人数_gbk.csv'")
    assert rejected["rejected"].startswith("file '区域人数_gbk.csv' is not UTF-8 text")
    assert rejected["message"].startswith("文件 '区域人数_gbk.csv' 不是 UTF-8 文本"), rejected["message"]
