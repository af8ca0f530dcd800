"""The holder's report reads well: labels full size and level, bands in their order, axes not
stretched by outliers, bands ranked in correlations, Chinese labels drawn, refused attempts shown."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from synthetic import report


def _panel(n_people: int = 60, years: int = 4, seed: int = 3) -> pd.DataFrame:
    """A small panel shaped like a wage survey: sorted ids, several rows per person, missing
    wages, one outlier, Chinese categories."""
    rng = np.random.default_rng(seed)
    person = np.repeat(np.arange(1, n_people + 1), years)
    age = np.repeat(rng.integers(18, 80, n_people), years) + np.tile(np.arange(years), n_people)
    wage = np.round(1500 + 90 * age + rng.normal(0, 800, len(age)), 0)
    wage[rng.random(len(wage)) < 0.1] = np.nan
    wage[5] = 9_000_000  # one outlier
    return pd.DataFrame({
        "person_id": [f"P{p:05d}" for p in person],
        "year": np.tile(np.arange(2018, 2018 + years), n_people),
        "age": age,
        "wage": wage,
        "province": rng.choice(["北京市", "上海市", "广东省", "四川省", "新疆维吾尔自治区"], len(age)),
    })


def _axes(fig, title: str):
    return next(a for a in fig.axes if a.get_title(loc="left") == title)


def _bands(age: pd.Series, new_notation: bool) -> pd.Series:
    edges = [-10, 0, 30, 45, 60, np.inf]
    if new_notation:
        labels = ["[-10, 0)", "[0, 30)", "[30, 45)", "[45, 60)", "[60, inf)"]
    else:
        labels = ["-10--1", "0-29", "30-44", "45-59", "60+"]
    return pd.cut(age, edges, right=False, labels=labels).astype(object)


@pytest.mark.parametrize("label, edge", [
    ("[30, 45)", 30), ("[75, inf)", 75), ("[-5, 5)", -5), ("[0.5, 1.5)", 0.5), ("(-inf, 0)", -np.inf),
    ("30-44", 30), ("-5-4", -5), ("-15--6", -15), ("75+", 75),
    ("2020-01", None), ("高中", None), ("11", None), ("[45, 30)", None),
])
def test_band_labels_old_and_new_are_read(label, edge):
    assert report.band_lower_edge(label) == edge


@pytest.mark.parametrize("new_notation", [True, False])
def test_bands_are_plotted_in_their_order_not_by_frequency(new_notation):
    real = _panel()
    released = real.assign(age=_bands(real["age"] - 15, new_notation))
    fig, _ = report.distribution_figure(real, released)
    ax = _axes(fig, "age")
    shown = [t.get_text() for t in ax.get_yticklabels()]
    by_frequency = list(released["age"].value_counts().index)
    assert shown == report.band_order(released["age"].dropna().unique())
    assert shown != by_frequency  # the generated ages make the two orders differ
    assert [report.band_lower_edge(s) for s in shown] == sorted(report.band_lower_edge(s) for s in shown)


def test_every_tick_label_is_full_size_and_level_even_for_long_category_lists():
    real = _panel()
    real["occupation"] = [f"occupation number {i % 40:02d}" for i in range(len(real))]
    fig, _ = report.distribution_figure(real, real)
    heat, _ = report.correlation_figure(real, real)
    for f in (fig, heat):
        f.canvas.draw()
        labels = [t for ax in f.axes for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
        assert labels
        assert min(t.get_fontsize() for t in labels) >= 8
        assert {t.get_rotation() for t in labels} == {0.0}
    occupation = _axes(fig, "occupation")
    names = [t.get_text() for t in occupation.get_yticklabels()]  # horizontal bars: names down the side
    assert names[:2] == ["occupation number 00", "occupation number 01"] or "occupation number 00" in names
    assert names[-1] == f"other ({40 - report.MAX_CATEGORIES} values)"


def test_an_outlier_does_not_stretch_the_axis_and_is_counted():
    real = _panel()
    released = real.assign(wage=real["wage"].where(real.index != 7, -3_000_000))
    fig, _ = report.distribution_figure(real, released)
    ax = _axes(fig, "wage")
    lo, hi = ax.get_xlim()
    assert hi < 50_000 and lo > 0  # the 9,000,000 and -3,000,000 are not on the axis
    q1, q99 = real["wage"].quantile([0.01, 0.99])
    assert (lo, hi) == (q1, q99)
    outside = [int(((s < q1) | (s > q99)).sum()) for s in (real["wage"], released["wage"])]
    assert outside[1] == outside[0] + 1
    assert f"not shown: {outside[0]} real, {outside[1]} released value(s) outside" in ax.get_xlabel()


def test_bands_count_by_their_order_in_correlations():
    real = _panel().dropna(subset=["wage"])
    real = real[real["wage"] < 1_000_000]
    # Rows start with the oldest people, so first-seen codes run against the bands' order.
    real = real.sort_values("age", ascending=False)
    released = real.assign(age=_bands(real["age"], new_notation=True))
    real_codes, released_codes, left_out = report.rank_codes(real, released, ["age", "wage", "province"])
    assert left_out == ["province"]  # five provinces have no order
    rho_real = pd.Series(real_codes["age"]).corr(pd.Series(real_codes["wage"]), method="spearman")
    rho_released = pd.Series(released_codes["age"]).corr(pd.Series(released_codes["wage"]), method="spearman")
    assert rho_real > 0.5 and rho_released > 0.5 and abs(rho_real - rho_released) < 0.15
    # The same labels get the same rank whichever side they are on.
    two = pd.DataFrame({"sex": ["女", "男"] * 20, "wage": np.arange(40.0)})
    a, b, _ = report.rank_codes(two, two.iloc[::-1], ["sex", "wage"])
    assert a["sex"].iloc[0] == b["sex"].loc[0]


def test_chinese_labels_are_drawn_with_the_cjk_font():
    assert report.cjk_font() is not None  # Debian's fonts-noto-cjk (the Makefile installs it)
    real = _panel()
    fig, codes = report.distribution_figure(real, real)
    ax = _axes(fig, "province")
    assert "新疆维吾尔自治区" in [t.get_text() for t in ax.get_yticklabels()] and codes == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)"
        report._png(fig)


def test_without_a_cjk_font_chinese_labels_become_codes_listed_in_the_page(monkeypatch):
    monkeypatch.setattr(report, "cjk_font", lambda: None)
    real = _panel()
    page = report.render(_manifest(), {"wages": real}, {"wages": real})
    for province in ("北京市", "新疆维吾尔自治区"):
        assert f"<td>province</td><td>#" in page and f"<td>{province}</td>" in page


def _manifest(**extra) -> dict:
    return {
        "method": "masked", "generated": True, "created_at": "2026-11-30T19:00:00+00:00", "created_by": "hana",
        "contract": {"name": "wages", "description": "工资面板（生成）"},
        "parameters": {"k": 5, "l": 2},
        "gates": [
            {"gate": "k_anonymity", "table": "wages", "value": 5, "threshold": ">= 5", "passed": True, "detail": ""},
            {"gate": "max_suppressed", "table": "wages", "value": 0.31, "threshold": "<= 0.1", "passed": False,
             "detail": "年龄 (age) banded too finely"},
        ],
    } | extra


def test_a_refused_attempt_has_a_report_with_its_failed_gates_first():
    real = _panel()
    page = report.render(_manifest(), {"wages": real}, {"wages": real})  # no release, content_hash, files
    assert "<title>REFUSED release wages</title>" in page
    banner = page.index("REFUSED</b>: nothing was published")
    assert banner < page.index("max_suppressed") < page.index("k_anonymity")
    assert "年龄 (age) banded too finely" in page and "Content hash" not in page
    assert "data:image/png;base64," in page


def test_a_published_release_reports_without_a_banner():
    real = _panel()
    manifest = _manifest(release="wages@2", content_hash="ab" * 32, files=["wages.csv"])
    manifest["gates"] = manifest["gates"][:1]
    page = report.render(manifest, {"wages": real}, {"wages": real})
    assert "<title>Release wages@2</title>" in page and "REFUSED" not in page and "ab" * 32 in page


def test_identifiers_and_free_text_named_by_the_contract_are_not_plotted():
    real = _panel().assign(备注=lambda d: ["复诊，血压平稳"] * len(d))
    manifest = _manifest(contract={"name": "wages", "description": "", "tables": {"wages": {"columns": {
        "person_id": {"role": "direct_identifier"}, "备注": {"role": "free_text"}, "wage": {"role": "measure"}}}}})
    hidden = report.hidden_columns(manifest, "wages")
    assert hidden == {"person_id", "备注"}
    fig, _ = report.distribution_figure(real, real, hidden)
    # A panel's ids repeat (4 rows a person), so only the contract tells they are identifiers.
    assert [a.get_title(loc="left") for a in fig.axes if a.get_title(loc="left")] == ["year", "age", "wage", "province"]
    year = _axes(fig, "year")
    assert [t.get_text() for t in year.get_yticklabels()] == ["2018", "2019", "2020", "2021"]  # few years: bars
