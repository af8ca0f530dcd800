"""The automated checks' findings in the reader's language, by their stable codes (issue #17).

A request with a small cell goes through the package's real hub: its finding carries the code
``check.small_cells.below_threshold``, its params and the English reason it is stored with; a
reviewer reading the request page in Chinese sees the reason in Chinese, and a requester whose stored
language is zh_CN gets it in Chinese through the API (``message``), over the intake socket as the
guard calls it and through the proxy. A finding stored before findings had codes keeps showing its
English reason.
"""

from __future__ import annotations

import html

import pytest

from enclave import accounts, languages, workspaces
from enclave.exports.models import Database, RequestFile, db_url

ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
FILE = "各区户数.csv"
# 区域 3 has 4 households: under the minimum of 10.
TABLE = "区域,户数\n东城区,120\n西城区,4\n朝阳区,350\n".encode()
ENGLISH = "1 count cell(s) under the minimum of 10"
CHINESE = "1 个计数单元格低于最小值 10"
# An operator of ws1 of this module's own, who chose Chinese (the package's others keep their language).
OPERATOR = "lan"


def small_cells(files: list[dict]) -> dict:
    (found,) = [c for f in files for c in f["checks"] if c["check"] == "small_cells" and c["status"] == "fail"]
    return found


@pytest.fixture(scope="module")
def lan(hub) -> str:
    accounts.add_user(hub.settings, OPERATOR, ["operator"], hub.password)
    workspaces.add_member(hub.settings, "ws1", OPERATOR, "operator")
    languages.set_language(hub.settings, OPERATOR, "zh_CN")
    hub.login(OPERATOR)  # the hub learns the account and its role groups
    return hub.server_token(OPERATOR, "ws1")


@pytest.fixture(scope="module")
def submitted(intake, lan) -> dict:
    r = intake(lan).submit({FILE: TABLE}, title="各区户数统计", context="季度报告用的各区户数。")
    assert r.status_code == 201, r.text
    return r.json()


def test_a_finding_has_its_code_params_and_english_reason(submitted):
    found = small_cells(submitted["files"])
    assert found["code"] == "check.small_cells.below_threshold"
    assert found["params"] == {"cells": 1, "minimum": 10}
    assert found["reason"] == ENGLISH
    assert found["location"] == "row 2 column '户数'"


def test_the_requester_who_chose_chinese_reads_findings_in_chinese_through_the_api(submitted, intake, client, lan):
    # As it was answered on submission, as the guard reads it later (no Accept-Language: the stored
    # choice), and through the proxy even when the request asks for English: the choice wins.
    for doc in (submitted, intake(lan).get(f"/requests/{submitted['id']}").json(),
                client(lan).get(f"/requests/{submitted['id']}", headers={"Accept-Language": "en"}).json()):
        found = small_cells(doc["files"])
        assert found["message"] == CHINESE and found["reason"] == ENGLISH
    # The checks before submitting, too.
    r = intake(lan).submit({FILE: TABLE}, path="/checks")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Language"] == "zh-CN"
    assert small_cells(r.json()["files"])["message"] == CHINESE


def test_a_requester_without_a_stored_language_gets_their_accept_language(client, tokens):
    api = client(tokens["olga@ws1"])
    english = api.submit({FILE: TABLE}, path="/checks")
    assert english.status_code == 200, english.text
    assert small_cells(english.json()["files"])["message"] == ENGLISH
    api.session.headers.update(ZH)
    chinese = api.submit({FILE: TABLE}, path="/checks")
    assert chinese.status_code == 200, chinese.text
    assert chinese.headers["Content-Language"] == "zh-CN"
    assert small_cells(chinese.json()["files"])["message"] == CHINESE


def test_a_chinese_reviewer_reads_the_finding_in_chinese_on_the_request_page(hub, submitted):
    rita = hub.login("rita")
    page = rita.get(f"{hub.service}/requests/{submitted['id']}", headers=ZH, timeout=30)
    assert page.status_code == 200, page.text[:500]
    text = html.unescape(page.text)
    assert CHINESE in text and "小单元格" in text
    assert ENGLISH not in text
    english = html.unescape(rita.get(f"{hub.service}/requests/{submitted['id']}", timeout=30).text)
    assert ENGLISH in english and CHINESE not in english


def test_a_finding_stored_without_a_code_shows_its_english_reason(hub, intake, lan):
    r = intake(lan).submit({"旧表.csv": TABLE}, title="旧申请")
    assert r.status_code == 201, r.text
    request_id = r.json()["id"]
    # As a request stored before findings had codes: the findings hold only check, status, reason.
    with Database(db_url(hub.settings), migrate=False).transaction() as s:
        for f in s.query(RequestFile).filter_by(request_id=request_id):
            f.checks = [{k: c[k] for k in ("check", "status", "reason", "location", "cells")} for c in f.checks]
    found = small_cells(intake(lan).get(f"/requests/{request_id}").json()["files"])
    assert "code" not in found and found["message"] == ENGLISH == found["reason"]
    page = hub.login("rita").get(f"{hub.service}/requests/{request_id}", headers=ZH, timeout=30)
    assert page.status_code == 200 and ENGLISH in html.unescape(page.text)
