"""The provisioning pages in Simplified Chinese for a browser that asks for it, in English otherwise.

On the package's real hub: an admin asks, through the API, for a release for a workspace with a Chinese
purpose; the data holder reads the request on the consent page and consents through its form, and the
admin reads the workspace's page, each with and without ``Accept-Language: zh-CN``.
"""

from __future__ import annotations

import re
from html import unescape

import pytest

from enclave import accounts, languages, workspaces

from .conftest import PASSWORD

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
WORKSPACE = "zh-pages"
PURPOSE = "人口普查：按区统计年龄分布，不做个体识别"
REASON = "分区年龄汇总"


@pytest.fixture(scope="module")
def asked(hub, apis):
    """``people@1``'s region and age columns asked for ``zh-pages``, awaiting hana's consent."""
    admin = apis["adam"]
    admin.put("/sources/people/holder", {"holder": "hana"})
    admin.post("/workspaces", {"name": WORKSPACE, "purpose": PURPOSE, "holder": "hana",
                               "expires_at": "2031-06-30T08:00:00+00:00"}, expect=201)
    admin.post(f"/workspaces/{WORKSPACE}/members", {"user": "olga", "role": "operator"}, expect=201)
    admin.post(f"/workspaces/{WORKSPACE}/releases", {"release": "people@1", "columns": ["region", "age"],
                                                     "reason": REASON}, expect=201)
    return WORKSPACE


def get(session, url: str, headers: dict | None = None):
    r = session.http.get(url, headers=headers or {}, timeout=30)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["Vary"].lower().count("accept-language") == 1
    return r


def test_the_consent_page_in_chinese_and_the_consent_confirmed_in_chinese(hub, asked):
    hana = hub.login("hana", PASSWORD)
    consents = f"{hub.service_url('provisioning')}/consents"
    r = get(hana, consents, ZH)
    assert r.headers["Content-Language"] == "zh-CN"
    page = r.text
    assert '<html lang="zh-CN">' in page
    for text in ("<title>待您同意的申请 · Enclave</title>", "<h1>待您同意的申请</h1>",
                 f"工作空间 {WORKSPACE} 申请使用 people@1", "<th>工作空间的应用场景</th>", "<th>申请内容</th>",
                 "<th>申请理由</th>", "<th>申请人</th>", ">同意</button>", ">拒绝</button>", "拒绝理由（必填）",
                 "people：region, age", PURPOSE, REASON, ">待我同意的申请</a>"):
        assert text in page, text
    for english in ("Requests awaiting your consent", "Consent", "Refuse", "Purpose of the workspace"):
        assert english not in page, english

    # In English by default, and for a browser asking for neither language.
    for headers in ({}, {"Accept-Language": "fr-FR, de;q=0.8"}):
        r = get(hana, consents, headers)
        assert r.headers["Content-Language"] == "en" and '<html lang="en">' in r.text
        for text in ("<h1>Requests awaiting your consent</h1>", f"people@1 for workspace {WORKSPACE}",
                     ">Consent</button>", "Reason to refuse (required)", PURPOSE):
            assert text in r.text, text
        assert "同意" not in r.text and "工作空间" not in r.text

    # Consenting through the page's form: the confirmation is in Chinese too.
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    done = hana.http.post(consents, headers=ZH, timeout=30, data={
        "_xsrf": xsrf, "action": "consent", "workspace": WORKSPACE, "release": "people@1"})
    assert done.status_code == 200 and done.url == consents, done.text[:500]
    flash = unescape(re.search(r'<p class="flash" role="status" id="flash">([^<]*)</p>', done.text).group(1))
    assert flash == f"您已同意：people@1 将在 {WORKSPACE} 的沙箱下次启动时接入。"
    # The request is no longer awaiting (other tests of the package may leave hana others).
    assert f'data-workspace="{WORKSPACE}" data-release="people@1"' not in done.text


def test_an_admin_page_in_chinese_and_in_english(hub, asked):
    adam = hub.login("adam", PASSWORD)
    url = f"{hub.service_url('provisioning')}/workspaces/{WORKSPACE}"
    page = get(adam, url, ZH).text
    assert '<html lang="zh-CN">' in page
    for text in (f"<h1>工作空间 {WORKSPACE} <span", ">启用</span>", "<h2>应用场景</h2>", "<h2>成员</h2>",
                 "<th>数据持有方</th>", "<td>olga</td><td>操作员</td>", ">添加成员</button>", "<h2>数据版本</h2>",
                 "每个沙箱的资源限制", "内存（MiB）", "<h2>导出策略</h2>", "p% 规则比率", "<h2>防护设置</h2>",
                 ">冻结</button>", ">归档…</button>", "永久归档", "（默认）", 'placeholder="不变"', PURPOSE,
                 # The expiry as a Chinese reader writes a date.
                 '<td id="expiry">2031年6月30日 08:00:00 UTC</td>'):
        assert text in page, text
    for english in ("Members", "Freeze", "Data holder", "Export policy", "(default)"):
        assert english not in page, english
    # The navigation, in every admin page.
    for text in (">工作空间</a>", ">账户</a>", ">数据源</a>"):
        assert text in page, text

    english = get(adam, url).text
    for text in (f"<h1>Workspace {WORKSPACE} <span", ">active</span>", "<h2>Members</h2>", "<th>Data holder</th>",
                 "<td>olga</td><td>operator</td>", ">Freeze</button>", "p% rule ratio", "memory (MiB)",
                 '<td id="expiry">Jun 30, 2031, 8:00:00\u202fAM UTC</td>'):
        assert text in english, text
    assert "成员" not in english and "冻结" not in english

    accounts = get(adam, f"{hub.service_url('provisioning')}/accounts", ZH).text
    for text in ("<h1>账户</h1>", "<th>角色</th>", "<td>管理员</td>", "<td>操作员和审核人</td>", ">创建账户</button>"):
        assert text in accounts, text


def test_the_language_chosen_on_the_hub_wins_over_the_browsers(hub):
    """A data holder who chose Chinese on the hub's home page reads these pages in Chinese whatever
    their browser asks for (the choice is stored by user name, :mod:`enclave.languages`)."""
    accounts.add_user(hub.settings, "lena", ["holder"], PASSWORD)
    languages.set_language(hub.settings, "lena", "zh_CN")
    lena = hub.login("lena", PASSWORD)
    consents = f"{hub.service_url('provisioning')}/consents"
    for headers in ({}, {"Accept-Language": "en-US,en;q=0.9"}):
        r = get(lena, consents, headers)
        assert r.headers["Content-Language"] == "zh-CN"
        assert "<h1>待您同意的申请</h1>" in r.text and "没有待您同意的申请。" in r.text
    languages.set_language(hub.settings, "lena", "en")
    assert "<h1>Requests awaiting your consent</h1>" in get(lena, consents, ZH).text


def test_a_refused_form_says_why_in_chinese_with_its_code(hub, asked):
    """A form's own refusals (a limit that is no number, a date that is none) and the service layer's
    (an unknown member, a disabled one, a limit it refuses, a member without the role) are shown on
    the page in its language, each with the stable code the service layer raised it with."""
    adam = hub.login("adam", PASSWORD)
    url = f"{hub.service_url('provisioning')}/workspaces/{WORKSPACE}"
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', get(adam, url, ZH).text).group(1)

    def refused(headers: dict, status: int, **fields) -> tuple[str, str]:
        r = adam.http.post(url, headers=headers, timeout=30, data={"_xsrf": xsrf, **fields})
        assert r.status_code == status, (r.status_code, r.text[:500])
        found = re.search(r'<p class="error" role="alert" id="error" data-code="([^"]+)">([^<]*)</p>', r.text)
        return found.group(1), unescape(found.group(2))

    assert refused(ZH, 400, action="limits", cpus="lots") == ("form.not_number", "cpus 的值 'lots' 不是数字")
    assert refused(ZH, 400, action="limits", pids="8.5") == ("form.not_whole_number", "pids 的值 '8.5' 不是整数")
    assert refused(ZH, 400, action="limits") == ("form.no_limit", "请至少填写一项资源限制")
    assert refused(ZH, 400, action="expiry", expires_at="明年六月") == (
        "form.bad_moment", "expiry 的值 '明年六月' 不是日期和时间（如 2027-06-30T00:00，UTC）")
    assert refused(ZH, 409, action="add-member", user="nobody", role="operator") == (
        "account.unknown", "不存在名为 'nobody' 的账户")
    # The codes come from where the service layer raises its refusals, not from its English words.
    accounts.add_user(hub.settings, "zora", ["operator"], PASSWORD)
    accounts.disable(hub.settings, "zora", "借调")
    assert refused(ZH, 409, action="add-member", user="zora", role="operator") == (
        "account.disabled", "'zora' 已停用：请先启用该账户")
    assert refused(ZH, 409, action="add-member", user="hugo", role="operator") == (
        "workspace.member_lacks_role", "'hugo' 不能担任工作空间的操作员：该账户没有操作员角色")
    code, message = refused(ZH, 409, action="limits", memory_mb="100")
    assert code == "limits.invalid" and message.startswith(f"'{WORKSPACE}' 的资源限制无效：memory_mb: "), message
    # In English, as before, with the same codes.
    assert refused({}, 400, action="limits", cpus="lots") == ("form.not_number", "cpus 'lots' is not a number")
    assert refused({}, 409, action="add-member", user="nobody", role="operator") == (
        "account.unknown", "no account named 'nobody'")
    assert refused({}, 409, action="add-member", user="zora", role="operator") == (
        "account.disabled", "'zora' is disabled: enable the account first")
    assert workspaces.get(hub.settings, WORKSPACE).describe().get("limits") in (None, {})
