"""The audit service's pages and the assessment report in Simplified Chinese, in English otherwise.

On a real hub with its audit service: an administrator reads the records page and a workspace's
assessment report with and without ``Accept-Language: zh-CN``, and with a language stored as their
choice, which wins over the browser's; ``enclave audit report`` writes the report in the locale's
language (``LANG=zh_CN.UTF-8``), or in the one ``--language`` names, and its errors in the locale's,
each with its stable code.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from enclave_testing import ENCLAVE, HOLDER

from enclave import languages

from .services_hub import PASSWORD, SandboxRecords, running_hub

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
WS = "zh-audit"
PURPOSE = "人口普查：按区统计年龄分布"
OPERATOR = "张三"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with running_hub(tmp_path_factory.mktemp("audit-zh") / "home") as hub:
        yield hub


@pytest.fixture(scope="module")
def period(hub):
    """A day around some activity of the workspace: a session with code that reads a release, and an
    egress notice."""
    hub.cli("workspace", "create", WS, "--purpose", PURPOSE, "--holder", HOLDER)
    hub.cli("workspace", "add-member", WS, "olga", "--role", "operator")
    hub.cli("workspace", "attach", WS, "people@1")
    hub.consent(WS, "people@1")
    sandbox = SandboxRecords(hub)
    session, _ = sandbox.start(OPERATOR, WS, ["people@1"])
    sandbox.execute(session, "people = pd.read_parquet('/data/people@1/persons.parquet')  # 读取人口表")
    sandbox.egress(session, "kernel_output", "输出超出预算")
    sandbox.close()
    now = datetime.now(UTC)
    return {"since": (now - timedelta(days=1)).isoformat(), "until": (now + timedelta(hours=1)).isoformat()}


def get(session, url: str, headers: dict | None = None, params: dict | None = None, status: int = 200):
    r = session.http.get(url, headers=headers or {}, params=params, timeout=60)
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert "accept-language" in r.headers["Vary"].lower()
    return r


def text_of(html: str, pattern: str) -> str:
    return unescape(re.search(pattern, html, re.DOTALL).group(1)).strip()


def test_the_records_page_in_chinese_and_in_english(hub, period):
    adam = hub.login("adam", PASSWORD)
    url = hub.service_url("audit") + "/"
    r = get(adam, url, ZH, {"workspace": WS})
    page = r.text
    assert r.headers["Content-Language"] == "zh-CN" and '<html lang="zh-CN">' in page
    for text in ("<title>审计记录 · Enclave</title>", "<h1>审计记录</h1>", "<strong>Enclave · 审计日志</strong>",
                 '<label for="user">用户（操作者）</label>', ">筛选</button>", ">生成报告</button>", "<th>操作</th>",
                 "<th>结果</th>", "最新的在前；本页",
                 # Actions and outcomes in words, an action's name after them (the filter takes it).
                 '<td class="action" data-action="kernel.execute">执行代码 <code class="name">kernel.execute</code>',
                 '<td class="action" data-action="workspace.create">创建工作空间',
                 '<td class="outcome" data-outcome="ok">成功</td>'):
        assert text in page, text
    # Times as a Chinese reader writes them; a Chinese actor and code as they were recorded.
    assert re.search(r"<td title=\"[^\"]+\">\d{4}年\d{1,2}月\d{1,2}日 \d\d:\d\d:\d\d UTC</td>", page)
    assert f'<td class="actor">{OPERATOR}</td>' in page and "读取人口表" in page
    for english in ("Audit records", ">Filter<", ">Report<", "Newest first"):
        assert english not in page, english

    for headers in ({}, {"Accept-Language": "fr-FR, de;q=0.8"}):
        r = get(adam, url, headers, {"workspace": WS})
        english = r.text
        assert r.headers["Content-Language"] == "en" and '<html lang="en">' in english
        for text in ("<h1>Audit records</h1>", ">Filter</button>", '<td class="action" data-action="kernel.execute">'
                     "kernel.execute</td>", '<td class="outcome" data-outcome="ok">ok</td>'):
            assert text in english, text
        assert "审计记录" not in english and "执行代码" not in english

    # A filter the log cannot match: the page says so in the reader's language, with the code.
    refused = get(adam, url, ZH, {"action": "export.sign"}, status=400).text
    assert text_of(refused, r'<p class="error" role="alert" data-code="audit.unknown_action">(.*?)</p>') == \
        "没有与 'export.sign' 匹配的操作（见 docs/audit.md）"
    refused = get(adam, url, {}, {"since": "soon"}, status=400).text
    assert text_of(refused, r'<p class="error" role="alert" data-code="audit.bad_time">(.*?)</p>').startswith(
        "since: 'soon' is not an ISO 8601 date or time")

    # The held egress budgets, a page of the same service: in the reader's language too.
    held = get(adam, url + "egress", ZH).text
    for text in ('<html lang="zh-CN">', "<h1>外发额度暂停</h1>", "<th>窗口</th>", "过去一天内没有额度被暂停。"):
        assert text in held, text
    assert "<h1>Held egress budgets</h1>" in get(adam, url + "egress").text


def test_the_report_page_in_chinese_and_in_english(hub, period):
    adam = hub.login("adam", PASSWORD)
    url = hub.service_url("audit") + "/report"
    args = {"workspace": WS, **period}
    r = get(adam, url, ZH, args)
    page = r.text
    assert r.headers["Content-Language"] == "zh-CN" and '<html lang="zh-CN">' in page
    for text in (f"<title>考核评估报告 · {WS} · Enclave</title>",
                 f'考核评估报告 · 工作空间 <span id="workspace">{WS}</span>', "统计期间：", "<h2>概览</h2>",
                 "<h2>图表</h2>", "<h2>数据供给与使用</h2>", "<h2>各项数字的统计口径</h2>",
                 '<div class="label">活跃操作员</div>', "<figcaption>导出申请及其结果</figcaption>",
                 "<figcaption>各操作员的会话与代码执行</figcaption>", ">挂载它的会话</text>",
                 "发送到内核执行的代码单元（kernel.execute 记录）", "<td>内核输出</td>",
                 # Sizes and dates for the locale.
                 '<td class="n" data-used="70000" data-budget="65536">70 kB / 65.5 kB</td>'):
        assert text in page, text
    assert re.search(r'<span id="since">\d{4}年\d{1,2}月\d{1,2}日 ', page)
    # The figures' rows keep their keys whatever the language; the numbers are the same.
    assert '<g class="row" data-label="requests">' in page and f'<g class="row" data-label="{OPERATOR}">' in page
    assert 'data-metric="executions">1<' in page and 'data-metric="active_operators">1<' in page
    for english in ("Summary", "Figures", "Export requests and their outcomes", "What each number counts"):
        assert english not in page, english

    english = get(adam, url, {}, args).text
    assert '<html lang="en">' in english
    for text in ("<h2>Summary</h2>", "<figcaption>Export requests and their outcomes</figcaption>",
                 '<div class="label">active operators</div>', "code cells sent to a kernel (kernel.execute records)",
                 '<td class="n" data-used="70000" data-budget="65536">70 kB / 65.5 kB</td>'):
        assert text in english, text
    assert "概览" not in english

    # The JSON form: the same keys and numbers, what each counts in the reader's language.
    zh_json = get(adam, url, ZH, {**args, "format": "json"}).json()
    en_json = get(adam, url, {}, {**args, "format": "json"}).json()
    assert (zh_json["locale"], en_json["locale"]) == ("zh_CN", "en")
    assert zh_json["counts"] == en_json["counts"] and set(zh_json["definitions"]) == set(en_json["definitions"])
    assert zh_json["definitions"]["sessions"] == "启动的沙箱会话（sandbox.start 记录）"

    # A report asked for without its period: refused in the reader's language, with the code.
    refused = get(adam, url, ZH, {"workspace": WS}, status=400).text
    assert "<h1>400 · 请求有误</h1>" in refused
    assert text_of(refused, r'<p class="error" role="alert" id="error" data-code="audit.report.incomplete">(.*?)</p>') \
        == "生成报告需要工作空间、起始时间和截止时间"


def test_the_language_chosen_on_the_hub_wins_over_the_browsers(hub, period):
    """An admin who chose Chinese on the hub's home page reads the audit pages in Chinese whatever
    their browser asks for, and in English once they choose English."""
    adam = hub.login("adam", PASSWORD)
    url = hub.service_url("audit") + "/"
    languages.set_language(hub.settings, "adam", "zh_CN")
    try:
        for headers in ({}, {"Accept-Language": "en-US,en;q=0.9"}):
            r = get(adam, url, headers)
            assert r.headers["Content-Language"] == "zh-CN" and "<h1>审计记录</h1>" in r.text
        report = get(adam, url + "report", {"Accept-Language": "en"}, {"workspace": WS, **period}).text
        assert "<h2>概览</h2>" in report
        languages.set_language(hub.settings, "adam", "en")
        assert "<h1>Audit records</h1>" in get(adam, url, ZH).text
    finally:
        languages.set_language(hub.settings, "adam", "en")


def enclave_in(hub, locale: str, *args: str) -> subprocess.CompletedProcess:
    """``enclave ARGS`` run against the hub's state under the locale ``LANG=locale`` alone."""
    env = {k: v for k, v in hub.env.items() if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    return subprocess.run([str(ENCLAVE), *args], env={**env, "LANG": locale}, capture_output=True, text=True,
                          timeout=120)


def test_the_command_writes_the_report_in_the_locales_language_or_the_one_asked_for(hub, period):
    report = ("audit", "report", WS, "--since", period["since"], "--until", period["until"])
    r = enclave_in(hub, "zh_CN.UTF-8", *report)
    assert r.returncode == 0, r.stderr
    for text in ('<html lang="zh-CN">', f"<title>考核评估报告 · {WS} · Enclave</title>", "<h2>概览</h2>",
                 "<figcaption>各操作员的会话与代码执行</figcaption>", '<div class="label">活跃操作员</div>'):
        assert text in r.stdout, text
    assert "Summary" not in r.stdout
    # Written to a file, the command says where, in the locale's language.
    path = hub.home / "报告.html"
    r = enclave_in(hub, "zh_CN.UTF-8", *report, "-o", str(path))
    assert r.returncode == 0 and r.stderr.strip() == f"已将 {WS} 的 HTML 报告写入 {path}", r.stderr
    assert "<h2>概览</h2>" in path.read_text(encoding="utf-8")

    # --language overrides the locale, either way.
    r = enclave_in(hub, "zh_CN.UTF-8", *report, "--language", "en")
    assert r.returncode == 0 and '<html lang="en">' in r.stdout and "<h2>Summary</h2>" in r.stdout
    assert "概览" not in r.stdout
    r = enclave_in(hub, "C.UTF-8", *report, "--format", "json", "--language", "zh_CN")
    numbers = json.loads(r.stdout)
    assert numbers["locale"] == "zh_CN" and numbers["definitions"]["sessions"] == "启动的沙箱会话（sandbox.start 记录）"
    assert numbers["counts"]["sessions"] == 1

    # Its errors: in the locale's language, with their stable code.
    backwards = ("audit", "report", WS, "--since", period["until"], "--until", period["since"])
    r = enclave_in(hub, "zh_CN.UTF-8", *backwards)
    assert r.returncode == 1 and "统计期间为空：--since 必须早于 --until [audit.report.empty_period]" in r.stderr
    r = enclave_in(hub, "C.UTF-8", *backwards)
    assert r.returncode == 1
    assert "the period is empty: --since must be before --until [audit.report.empty_period]" in r.stderr
    r = enclave_in(hub, "zh_CN.UTF-8", "audit", "trace", "/没有/这个/文件.csv")
    assert r.returncode == 1 and "文件不存在，也不是 SHA-256 值" in r.stderr and "[audit.trace_target]" in r.stderr
