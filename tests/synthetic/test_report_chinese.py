"""The data holder's release report in the holder's language: ``LANG=zh_CN.UTF-8 enclave data release``
writes it in Chinese (headings, gate names, verdicts, figure words; dates and numbers as Chinese
writes them), a refused release's report too, and the C locale keeps it English.

The releases are of the GENERATED 人口抽样 fixture (``synthetic.demo``), whose column names are Chinese.
"""

from __future__ import annotations

import io
import json
import re
import warnings

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from matplotlib import font_manager

from enclave import i18n
from enclave.cli import main
from synthetic import demo, gates, pipeline, report

TABLE = "人口抽样"
# A command's locale comes from these (enclave.i18n.locale_from_environment); each test sets LANG.
LOCALE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


@pytest.fixture(scope="module")
def population_dir(tmp_path_factory):
    """1,000 GENERATED rows of 人口抽样 and their contract."""
    folder = tmp_path_factory.mktemp("population")
    demo.write_population_sample(folder, n=1000)
    return folder


@pytest.fixture
def holder_locale(monkeypatch):
    """Sets the locale of the data holder's shell (only LANG, as most shells have it)."""

    def use(lang: str, **others: str) -> None:
        for name in LOCALE_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("LANG", lang)
        for name, value in others.items():
            monkeypatch.setenv(name, value)

    return use


def _without_images(page: str) -> str:
    return re.sub(r"base64,[^\"]+", "base64,", page)


def test_a_release_under_a_chinese_locale_writes_a_chinese_report(settings, population_dir, holder_locale):
    holder_locale("zh_CN.UTF-8")
    out = CliRunner().invoke(main, ["data", "release", str(population_dir / "population_sample.yaml"),
                                    "--method", "masked"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    root = settings.release_store / "population_sample@1"
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    page = _without_images((root / "report.html").read_text(encoding="utf-8"))

    assert '<html lang="zh-CN">' in page
    assert "<title>发布版本 population_sample@1</title>" in page and "已拒绝" not in page
    assert "仅供数据持有方查看" in page and "源数据为<b>生成数据</b>" in page
    assert "<tr><th>发布方式</th><td>脱敏</td></tr>" in page
    # Headings, table headers, gate names and verdicts in words; the gates' stable codes beside them.
    for text in ("<h2>发布检查</h2>", "<th>检查项</th>", "<th>结论</th>", "<th>要求</th>", f"<h2>表 {TABLE}</h2>",
                 "<h3>脱敏处理</h3>", "<h3>分布（真实数据与发布数据）</h3>", "<h3>相关性（真实数据与发布数据）</h3>",
                 "k-匿名<br><code>k_anonymity</code>", "l-多样性<br><code>l_diversity</code>",
                 "无直接标识符<br><code>no_direct_identifiers</code>", "<td>通过</td>", "<td>≥ 5</td>",
                 "<th>处理方式</th>", "年龄：分段", "编号：假名化"):
        assert text in page, text
    for english in ("Gates", "Distributions", "Correlations", "Masking", "passed", "real rows", "For the data holder"):
        assert english not in page, english
    # Dates and numbers as Chinese writes them.
    created = i18n.format_datetime(manifest["created_at"], "zh_CN")
    assert re.fullmatch(r"\d{4}年\d{1,2}月\d{1,2}日 \d{2}:\d{2}:\d{2} UTC", created)
    assert f"<td>{created}，创建人：" in page
    assert f"<p>真实数据 1,000 行，发布数据 {manifest['tables'][TABLE]['rows']:,} 行。</p>" in page
    # The figures are described with their Chinese column names (the identifier 编号 is not plotted).
    alt = re.search(r'<img alt="(表 人口抽样 中 [^"]+ 的分布（真实数据与发布数据）)"', page).group(1)
    assert "性别" in alt and "月收入" in alt and "编号" not in alt


def test_a_refused_release_under_a_chinese_locale_has_a_chinese_report(settings, population_dir, holder_locale):
    holder_locale("zh_CN.UTF-8")
    contract = yaml.safe_load((population_dir / "population_sample.yaml").read_text(encoding="utf-8"))
    contract["privacy"]["k"] = 50  # far more rows suppressed than the contract's 15 %
    path = population_dir / "population_sample.k50.yaml"
    path.write_text(yaml.safe_dump(contract, allow_unicode=True), encoding="utf-8")
    with pytest.raises(gates.GateFailure) as refused:
        pipeline.release(settings, path, "masked", by="hana", progress=False)
    assert refused.value.report.parent == settings.holder_dir / "refused"
    page = _without_images(refused.value.report.read_text(encoding="utf-8"))

    assert '<html lang="zh-CN">' in page and "<title>已拒绝发布：发布版本 population_sample@1</title>" in page
    assert "<b>已拒绝发布</b>：未发布任何内容。未通过的发布检查：" in page
    # Each failed gate in the banner: its name, code, table, value and what it needs, Chinese-punctuated.
    assert re.search(r"<li>被抑制行的占比 <code>suppressed_share</code> \[人口抽样\]：[\d.]+（要求 ≤ 0\.15）：", page)
    assert "<td>未通过</td>" in page and "<td>通过</td>" in page
    assert "REFUSED" not in page and "Failed gate" not in page

    # The failed gate's reason in Chinese, with the figures it measured: rows lost, and why (k=50).
    failed = next(g for g in refused.value.manifest["gates"] if g["gate"] == "suppressed_share")
    lost = failed["reason"]["parts"][0]["params"]
    assert f"1000 行中的 {lost['lost']} 行" in page
    assert re.search(r"实体数少于 k=50 的等价类：\d+ 个实体", page)
    assert "rows" not in page and "classes with fewer than" not in page
    # The manifest keeps each reason as plain JSON next to the English detail, which it renders to.
    json.dumps(refused.value.manifest["gates"], allow_nan=False)
    for g in refused.value.manifest["gates"]:
        assert report.gate_detail(g, "en") == g["detail"], g["gate"]
    assert failed["reason"]["code"] == "gate.detail" and failed["detail"].startswith(f"{lost['lost']} of 1000 rows")


def test_a_manifest_written_before_gates_kept_reasons_shows_their_english_detail():
    earlier = {"release": "population_sample@1", "method": "masked", "refused": True, "gates": [
        {"gate": "suppressed_share", "table": TABLE, "value": 0.4, "threshold": "<= 0.15", "passed": False,
         "detail": "400 of 1000 rows; classes with fewer than k=50 entities: 400 entities"},
        {"gate": "k_anonymity", "table": TABLE, "value": 50, "threshold": ">= 50", "passed": True,
         "detail": "over ['性别', '年龄'], counting rows (one entity per row)"}]}
    page = report.render(earlier, {}, {}, "zh_CN")
    assert ("<li>被抑制行的占比 <code>suppressed_share</code> [人口抽样]：0.4（要求 ≤ 0.15）：400 of 1000 rows; classes"
            " with fewer than k=50 entities: 400 entities</li>") in page
    assert "<td>over [&#39;性别&#39;, &#39;年龄&#39;], counting rows (one entity per row)</td>" in page


def test_a_reason_that_is_no_message_is_refused_naming_the_gate():
    with pytest.raises(ValueError, match="reason of the gate 'k_anonymity' cannot be shown: a gate's reason is"
                                         " neither a message"):
        report.gate_detail({"gate": "k_anonymity", "detail": "d", "reason": {"words": "k"}}, "zh_CN")


def test_the_c_locale_keeps_the_report_english(settings, population_dir, holder_locale):
    holder_locale("C.UTF-8", LANGUAGE="zh_CN")  # as GNU gettext, the C locale ignores LANGUAGE
    released = pipeline.release(settings, population_dir / "population_sample.yaml", "masked", by="hana",
                                progress=False)
    page = _without_images((settings.release_store / released.release / "report.html").read_text(encoding="utf-8"))
    assert '<html lang="en">' in page and "<title>Release population_sample@1</title>" in page
    for text in ("<h2>Gates</h2>", "<th>Verdict</th>", "k-anonymity<br><code>k_anonymity</code>", "<td>passed</td>",
                 f"<h2>Table {TABLE}</h2>", "<p>1,000 real rows,", "<h3>Distributions (real, released)</h3>",
                 f"<td>{i18n.format_datetime(released.manifest['created_at'], 'en')} by hana</td>"):
        assert text in page, text
    assert "发布检查" not in page and "真实数据" not in page


def _glyphs(figure) -> str:
    """The figure as SVG (every character drawn as a path named after its font and glyph), with
    matplotlib's warning about a glyph missing from every font made an error."""
    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure.savefig(out, format="svg")
    return out.getvalue()


def test_figures_draw_their_chinese_words_and_column_names_with_the_cjk_font():
    assert report.cjk_font() == "Noto Sans CJK SC"  # the font the Makefile installs (fonts-noto-cjk)
    real = demo.generate_population_sample(n=300)
    released = real.assign(年龄=pd.cut(real["年龄"], [18, 45, 90], right=False, labels=["[18, 45)", "[45, 90)"]))
    distributions, codes = report.distribution_figure(real, released, {"编号"}, "zh_CN")
    heatmaps, left_out = report.correlation_figure(real, released, {"编号"}, "zh_CN")
    panels = [a for a in distributions.axes if a.get_title(loc="left")]
    assert [a.get_title(loc="left") for a in panels] == ["性别", "年龄", "区县", "月收入", "诊断"] and codes == []
    assert {a.get_xlabel() for a in panels if a.get_title(loc="left") != "月收入"} == {"行占比"}
    assert [t.get_text() for t in panels[0].get_legend().get_texts()] == ["真实数据", "发布数据"]
    assert [a.get_title() for a in heatmaps.axes[:2]] == ["真实数据", "发布数据"] and left_out == ["区县", "诊断"]
    assert heatmaps.axes[2].get_ylabel() == "斯皮尔曼等级相关系数"
    assert "性别  1" in [t.get_text() for t in heatmaps.axes[0].get_yticklabels()]

    # Every Chinese character is drawn with its own glyph of the CJK font: no empty boxes.
    font = font_manager.get_font(font_manager.findfont(font_manager.FontProperties(family=report.cjk_font()),
                                                       fallback_to_default=False))
    for figure, text in ((distributions, "性别年龄区县月收入诊断行占比真实数据发布男女"), (heatmaps, "性别年龄月收入斯皮尔曼等级相关系数")):
        svg = _glyphs(figure)
        for character in text:
            glyph = font.get_char_index(ord(character))
            assert glyph and f'id="{font.postscript_name}-{glyph:x}"' in svg, character


def test_without_a_cjk_font_the_figures_words_stay_english(monkeypatch):
    monkeypatch.setattr(report, "cjk_font", lambda: None)
    real = demo.generate_population_sample(n=200)[["性别", "区县"]].set_axis(["sex", "district"], axis=1)
    figure, codes = report.distribution_figure(real, real, locale="zh_CN")
    assert {a.get_xlabel() for a in figure.axes if a.get_title(loc="left")} == {"share of rows"}
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["real", "released"]
    assert ("sex", "#1", real["sex"].value_counts().index[0]) in codes  # Chinese values as codes, as before
    _glyphs(figure)


def test_gate_values_thresholds_and_masking_follow_the_locale():
    rows = report.gate_rows([
        {"gate": "attack_risk:inference:月收入", "table": TABLE, "value": 0.0123, "threshold": "<= 0.05",
         "passed": True, "detail": "anonymeter, 500 attacks"},
        {"gate": "analysis:收入模型", "table": TABLE, "value": None, "threshold": "a regression that runs",
         "passed": False, "detail": "cannot run: 收入 is not a column"},
        {"gate": "a_gate_of_tomorrow", "table": None, "value": 12345, "threshold": ">= 1000", "passed": True},
    ], "zh_CN")
    assert [(r["named"], r["verdict"], r["value"], r["threshold"]) for r in rows] == [
        ("攻击风险：推断 月收入<br><code>attack_risk:inference:月收入</code>", "通过", "0.0123", "≤ 0.05"),
        ("声明的分析 收入模型<br><code>analysis:收入模型</code>", "未通过", "—", "a regression that runs"),
        ("a_gate_of_tomorrow", "通过", "12,345", "≥ 1,000"),  # a gate without words: its code, once
    ]
    assert rows[1]["failure"] == ("声明的分析 收入模型 <code>analysis:收入模型</code> [人口抽样]：—（要求 a regression"
                                  " that runs）：cannot run: 收入 is not a column")
    masking = dict(report.masking_rows({
        "rows_in": 12000, "suppressed_rows": 31, "quasi_identifiers": ["性别", "年龄"],
        "bounds": {"月收入": {"bottom": 1234.5, "top": 98765.25}}, "redacted": {"备注": {"mobile": 3, "email": 1}},
        "entity_column": None,
    }, "zh_CN"))
    assert masking == {"读取行数": "12,000", "被抑制的行数": "31", "准标识符": "性别和年龄",
                       "上下限截尾": "月收入：1,234.5 至 98,765.25", "自由文本中遮蔽的内容": "备注：手机号码（3 个）和电子邮箱地址（1 个）"}
