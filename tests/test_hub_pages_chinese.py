"""The hub's own pages in their reader's language (issue #17): the login page, the home page, the
spawn page and a failed start, a 404, a refused start and the admin page render in Chinese for a
browser asking for ``zh-CN`` (``<html lang="zh-CN">``, translated texts, dates for the locale), in
English otherwise; a person's stored choice wins over their browser's. Through the session's real
hub, with accounts and workspaces of this module's own (so that other tests' users keep reading
their browser's language).
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime

import pytest
import requests
from conftest import PASSWORD
from enclave_testing import cookie_value, grant

from enclave import accounts, languages, workspaces
from enclave.settings import Settings

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
EN = {"Accept-Language": "en-US,en;q=0.9"}
FROZEN_REASON = "数据持有方要求暂停 (holder's request)"


@pytest.fixture(scope="module")
def settings(enclave) -> Settings:
    """The operator hua, of the workspaces zhanting (frozen) and queshi (expiring in 2031, whose
    release is missing from the release store, so that a start of it fails at once); ming, who
    chose Chinese."""
    settings = Settings(home=enclave.home)
    for name in ("hua", "ming"):
        accounts.add_user(settings, name, ["operator"], PASSWORD)
    for ws in ("zhanting", "queshi"):
        workspaces.create(settings, ws)
        workspaces.add_member(settings, ws, "hua", "operator")
    workspaces.freeze(settings, "zhanting", FROZEN_REASON)
    # A release attached, then gone from the store (as after a store restored from an old backup).
    store = settings.release_store / "missing@1"
    (store / "data").mkdir(parents=True)
    grant(settings, "queshi", "missing@1")
    shutil.rmtree(store)
    workspaces.set_expiry(settings, "queshi", datetime(2031, 6, 30, 8, 0, tzinfo=UTC))
    languages.set_language(settings, "ming", "zh_CN")
    return settings


@pytest.fixture(scope="module")
def hua(enclave, settings):
    return enclave.login("hua", PASSWORD)


def page(session_or_http, url: str, headers: dict, status: int = 200) -> str:
    http = getattr(session_or_http, "http", session_or_http)
    r = http.get(url, headers=headers)
    assert r.status_code == status, r.text[:800]
    assert r.headers["Content-Type"] == "text/html; charset=UTF-8"
    return r.text


def html_lang(text: str) -> str:
    return re.search(r'<html lang="([^"]+)">', text).group(1)


def refusal(text: str) -> tuple[str, str]:
    """The code and the words of the refusal an error page shows."""
    m = re.search(r'<p id="refusal" data-code="([^"]+)">(.*?)</p>', text, re.S)
    assert m, text[:2000]
    return m.group(1), m.group(2).strip()


def anonymous() -> requests.Session:
    http = requests.Session()
    http.trust_env = False
    return http


def test_the_login_page_follows_the_browser(enclave):
    text = page(anonymous(), f"{enclave.url}/hub/login", ZH)
    assert html_lang(text) == "zh-CN"
    assert "<h1>登录</h1>" in text and "用户名：" in text and "密码：" in text and "value='登录'" in text
    text = page(anonymous(), f"{enclave.url}/hub/login", EN)
    assert html_lang(text) == "en" and "<h1>Sign in</h1>" in text and "Username:" in text and "登录" not in text


def test_a_refused_login_says_why_in_the_browsers_language(enclave, settings):
    http = anonymous()
    http.get(f"{enclave.url}/hub/login", headers=ZH)
    r = http.post(f"{enclave.url}/hub/login", headers=ZH, data={
        "username": "hua", "password": "not-the-password",
        "_xsrf": cookie_value(http, f"{enclave.url}/hub/login", "_xsrf")})
    assert r.status_code == 403 and html_lang(r.text) == "zh-CN"
    assert '<p class="login_error">用户名或密码错误</p>' in r.text


def test_the_home_page_and_its_navigation_in_chinese(enclave, hua):
    text = page(hua, f"{enclave.url}/hub/home", ZH)
    assert html_lang(text) == "zh-CN"
    assert "<h1>我的工作空间</h1>" in text and ">首页</a>" in text and "退出登录</a>" in text
    # The frozen workspace says so, with the admin's reason as it was written; the other offers a start.
    assert f'id="state-zhanting">已冻结：{FROZEN_REASON}<'.replace("'", "&#39;") in text
    assert "管理员解冻前无法启动" in text and 'id="start-queshi"' in text and ">启动</a>" in text
    assert 'id="expiry-queshi">2031年6月30日 08:00:00 UTC 到期<' in text
    text = page(hua, f"{enclave.url}/hub/home", EN)
    assert html_lang(text) == "en" and "<h1>Your workspaces</h1>" in text and ">Home</a>" in text
    assert "我的工作空间" not in text and 'id="expiry-queshi">expires Jun 30, 2031, 8:00:00\u202fAM UTC<' in text


def test_a_refused_start_says_why_in_the_readers_language(enclave, hua):
    url = f"{enclave.url}/hub/spawn/hua/zhanting"
    text = page(hua, url, ZH, status=403)
    assert html_lang(text) == "zh-CN" and "<h1>403 : 无权访问</h1>" in text
    assert refusal(text) == ("start.workspace_frozen",
                             f"工作空间“zhanting”已冻结（{FROZEN_REASON}）：在管理员解冻前，其中不能启动沙箱。"
                             .replace("'", "&#39;"))
    text = page(hua, url, EN, status=403)
    assert refusal(text) == ("start.workspace_frozen",
                             f"Workspace &#39;zhanting&#39; is frozen ({FROZEN_REASON}): no sandbox starts in it"
                             " until an administrator unfreezes it.".replace("'", "&#39;"))
    # A workspace one is not an operator of is refused by name too.
    code, words = refusal(page(hua, f"{enclave.url}/hub/spawn/hua/alpha", ZH, status=403))
    assert code == "start.not_an_operator" and words == "hua 不是工作空间“alpha”的操作员。"


def test_a_failed_start_and_the_not_running_page_in_chinese(enclave, hua):
    """queshi's release is not in the release store: the start fails at once, and the spawn page,
    then the workspace's "not running" page, say why in Chinese."""
    text = page(hua, f"{enclave.url}/hub/spawn/hua/queshi", ZH, status=500)
    assert "<h1>500 : 服务器内部错误</h1>" in text
    assert refusal(text) == ("start.releases_missing", "工作空间“queshi”关联的发布版本不在发布库中：missing@1")
    text = page(hua, f"{enclave.url}/hub/spawn-pending/hua/queshi", ZH, status=500)
    assert html_lang(text) == "zh-CN" and "<h1>沙箱未能启动</h1>" in text
    assert "最近一次启动您在工作空间 queshi 的沙箱失败。" in text and "重新启动 queshi" in text
    assert refusal(text)[0] == "start.releases_missing"
    text = page(hua, f"{enclave.url}/hub/spawn-pending/hua/queshi", EN, status=500)
    assert "<h1>The sandbox did not start</h1>" in text and "Start queshi again" in text
    assert refusal(text)[1] == ("Workspace &#39;queshi&#39; has releases attached that are not in the release store:"
                                " missing@1")


def test_a_404_in_chinese(enclave, hua):
    text = page(hua, f"{enclave.url}/hub/no-such-page", ZH, status=404)
    assert html_lang(text) == "zh-CN" and "<h1>404 : 未找到</h1>" in text and "此地址没有页面。" in text
    assert "moons" not in text
    code, words = refusal(page(hua, f"{enclave.url}/hub/spawn/hua/no-such-ws", ZH, status=404))
    assert code == "start.unknown_workspace" and words == "不存在名为“no-such-ws”的工作空间。"
    # The pages the proxy shows for an address nothing serves, and for a sandbox that is down
    # (JupyterHub's proxy error pages: the proxy answers with their status, the hub with 200).
    text = page(hua, f"{enclave.url}/hub/error/404?url=/user/hua/gone/", ZH)
    assert "<h1>404 : 未找到</h1>" in text and "此地址没有页面。" in text
    text = page(hua, f"{enclave.url}/hub/error/503?url=/user/hua/queshi/", ZH)
    assert "<h1>503 : 服务暂不可用</h1>" in text
    assert '您的沙箱似乎已停止运行。请从<a href="/hub/home">首页</a>重新启动。' in text
    text = page(anonymous(), f"{enclave.url}/hub/no-such-page", EN, status=404)
    assert html_lang(text) == "en" and "<h1>404 : Not Found</h1>" in text and "There is no page at this address." in text


def test_the_admin_page_in_chinese_with_dates_for_the_locale(enclave):
    admin = enclave.login("root-admin", PASSWORD)
    text = page(admin, f"{enclave.url}/hub/admin", ZH)
    assert html_lang(text) == "zh-CN" and "<h1>系统管理</h1>" in text and "<h2>账户</h2>" in text
    # root-admin has logged in: a date as Chinese writes it (2026年11月30日 …), in UTC.
    row = re.search(r"<td>root-admin</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>", text, re.S)
    assert row and row.group(1) == "管理员" and re.fullmatch(r"\d{4}年\d{1,2}月\d{1,2}日 \d{2}:\d{2}:\d{2} UTC", row.group(2)), row
    assert "从未登录" in text  # hua's neighbours who never logged in
    text = page(admin, f"{enclave.url}/hub/admin", EN)
    assert "<h1>Administration</h1>" in text and "never logged in" in text


def test_a_stored_choice_wins_over_the_browser(enclave, settings):
    ming = enclave.login("ming", PASSWORD)
    text = page(ming, f"{enclave.url}/hub/home", EN)
    assert html_lang(text) == "zh-CN" and "<h1>我的工作空间</h1>" in text
    assert "您还不是任何工作空间的成员。" in text
    text = page(ming, f"{enclave.url}/hub/no-such-page", EN, status=404)
    assert "<h1>404 : 未找到</h1>" in text
