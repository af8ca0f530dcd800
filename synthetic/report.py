"""The data holder's HTML report for a release attempt: real vs released distributions,
correlations, gates.

It shows real-data distributions, so it lives beside the release's ``data/`` folder, never in it;
for a refused attempt the pipeline writes it in the holder's records (``holder/refused/``), with the
failed gates first under a REFUSED banner. Plots are embedded PNGs (matplotlib, Agg) so the report
is one self-contained file.

How the plots read:

* Real and released values share one axis per column, as shares of their rows, so they compare
  directly although the row counts differ.
* Numeric axes span the 1st to 99th percentile of the real values, so one outlier does not squash
  the rest; how many values (real and released) lie outside, not shown, is written on the plot.
* Categories are horizontal bars with their label in full. Band labels (``[30, 45)``,
  ``[75, inf)``, or the older ``30-44`` and ``75+``) are plotted in the order of their lower edge,
  other categories by their frequency in the real data.
* Chinese labels are drawn with a CJK font when one is installed (Debian's ``fonts-noto-cjk`` or
  ``fonts-wqy-microhei``); without one they are shown as codes (``#1``) listed under the plot.
* In the correlation heatmaps a banded column counts by its bands' order, and a category column
  with more than two values (which has no order) is left out and named.

The report is in the holder's language: :func:`render` takes a locale, by default the one of the
command that runs the release (:func:`enclave.i18n.locale_from_environment`, so
``LANG=zh_CN.UTF-8 enclave data release …`` writes a Chinese report). Headings, gate names, verdicts,
figure titles and axis labels are translated; dates and numbers follow the locale. Gates name
themselves by stable codes (``k_anonymity``), shown under their translated names; a gate's detail
(the figures it measured) is shown from its ``reason`` in the manifest, a message rendered in the
report's language (:func:`gate_reason`), or as the English ``detail`` for a manifest written before
gates kept their reasons.
Without a CJK font the figures' own words stay English (Chinese words would be empty boxes).
"""

from __future__ import annotations

import base64
import functools
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from babel import lists, numbers  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from markupsafe import Markup, escape  # noqa: E402

from enclave import i18n  # noqa: E402
from synthetic.contract import Problem  # noqa: E402
from synthetic.gates.base import Joined  # noqa: E402

MAX_COLUMNS = 16  # plots per table; wide tables show the first ones
MAX_CATEGORIES = 15  # bars per column; the rest are summed into one "other" bar
LABEL_SIZE = 9  # points, for every tick label
CLIP = (0.01, 0.99)  # numeric axes span these quantiles of the real values
HIDDEN_ROLES = ("direct_identifier", "free_text")  # never plotted: bars would print identifiers
CJK_FONTS = ("Noto Sans CJK SC", "WenQuanYi Micro Hei")
CJK_FONT_FILE = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")  # Debian's fonts-noto-cjk
REAL, RELEASED = "#4a7bb7", "#d9822b"

# The page. Its texts come translated from page_words() and the functions below (Python, so that
# babel.cfg's synthetic/**.py section extracts them), dates and numbers formatted for the locale; the
# environment is enclave.i18n.environment's (it gives html_lang).
_TEMPLATE = """<!doctype html>
<html lang="{{ html_lang }}"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
.fail{background:#fdd}.pass{background:#dfd}.banner{background:#ffe9a8;padding:.6em;border:1px solid #d9b300}
.refused{background:#b00020;color:#fff;padding:.8em;font-size:1.2em}.refused li{font-size:.9em}
.refused code{color:#fff}code{font-size:.85em;color:#555}
img{max-width:100%}.legend{font-size:.9em}
</style></head><body>
<h1>{{ title }}</h1>
{% if refused %}<div class="refused" role="alert">{{ w.refused_failed if failed else w.refused }}
<ul>{% for g in failed %}<li>{{ g.failure }}</li>{% endfor %}</ul></div>{% endif %}
<p class="banner">{{ w.holder_only_generated if m.generated else w.holder_only }}</p>
<table>
<tr><th>{{ w.method }}</th><td>{{ method }}</td></tr>
{% if m.created_at %}<tr><th>{{ w.created }}</th><td>{{ created }}</td></tr>{% endif %}
{% if m.content_hash %}<tr><th>{{ w.content_hash }}</th><td><code>{{ m.content_hash }}</code></td></tr>{% endif %}
<tr><th>{{ w.contract }}</th><td>{{ contract }}</td></tr>
</table>
<h2>{{ w.gates }}</h2>
<table><tr><th>{{ w.gate }}</th><th>{{ w.table }}</th><th>{{ w.verdict }}</th><th>{{ w.value }}</th>
<th>{{ w.needs }}</th><th>{{ w.detail }}</th></tr>
{% for g in gates %}<tr class="{{ 'pass' if g.passed else 'fail' }}"><td>{{ g.named }}</td>
<td>{{ g.table or '' }}</td><td>{{ g.verdict }}</td><td>{{ g.value }}</td><td>{{ g.threshold }}</td><td>{{ g.detail }}</td></tr>
{% endfor %}</table>
{% if m.anonymeter %}<p>{{ m.anonymeter }}</p>{% endif %}
{% for t in tables %}
<h2>{{ t.heading }}</h2>
<p>{{ t.rows }}</p>
{% if t.masking %}<h3>{{ w.masking }}</h3><table>
{% for label, value in t.masking %}<tr><th>{{ label }}</th><td>{{ value }}</td></tr>{% endfor %}</table>{% endif %}
<h3>{{ w.distributions }}</h3><img alt="{{ t.distributions_alt }}" src="data:image/png;base64,{{ t.distributions.png }}">
{% if t.distributions.codes %}<table class="legend"><tr><th>{{ w.column }}</th><th>{{ w.code }}</th><th>{{ w.value }}</th></tr>
{% for c in t.distributions.codes %}<tr><td>{{ c[0] }}</td><td>{{ c[1] }}</td><td>{{ c[2] }}</td></tr>{% endfor %}</table>{% endif %}
{% if t.correlations %}<h3>{{ w.correlations }}</h3>
<img alt="{{ t.correlations_alt }}" src="data:image/png;base64,{{ t.correlations.png }}">
{% if t.correlations.left_out %}<p>{{ t.left_out }}</p>{% endif %}
{% endif %}
{% endfor %}
</body></html>
"""


# -- band labels ------------------------------------------------------------------------------------

_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?"
_INTERVAL = re.compile(rf"^\s*[\[(]\s*(-inf|{_NUMBER})\s*,\s*(inf|\+inf|{_NUMBER})\s*[\])]\s*$", re.IGNORECASE)
_OLD_RANGE = re.compile(rf"^\s*({_NUMBER})\s*-\s*({_NUMBER})\s*$")  # 30-44, -5-4
_OLD_TOP = re.compile(rf"^\s*({_NUMBER})\s*\+\s*$")  # 75+


def band_edges(label: str) -> tuple[float, float] | None:
    """The interval ``[lo, hi)`` of a band label, or None when ``label`` is not one.

    Reads the one interval notation (``[30, 45)``, ``[75, inf)``, ``[-5, 5)``) and the older
    labels of whole numbers (``30-44`` is ``[30, 45)``, ``-5-4`` is ``[-5, 5)``, ``75+`` is
    ``[75, inf)``).
    """
    if m := _INTERVAL.match(label):
        lo, hi = float(m.group(1)), float(m.group(2))
        return (lo, hi) if lo < hi else None
    if m := _OLD_RANGE.match(label):
        lo, hi = float(m.group(1)), float(m.group(2))
        return (lo, hi + 1) if lo <= hi else None  # "2020-01" is a month, not a band
    if m := _OLD_TOP.match(label):
        return float(m.group(1)), math.inf
    return None


def band_lower_edge(label: str) -> float | None:
    edges = band_edges(label)
    return None if edges is None else edges[0]


def band_order(labels) -> list[str] | None:
    """``labels`` (distinct, text) sorted by their bands' lower edges; None unless all are bands."""
    edges = {str(x): band_lower_edge(str(x)) for x in labels}
    if not edges or any(e is None for e in edges.values()):
        return None
    return sorted(edges, key=lambda x: edges[x])


# -- fonts ------------------------------------------------------------------------------------------


@functools.cache
def cjk_font() -> str | None:
    """The installed CJK font charts use for Chinese labels (Noto Sans CJK SC, the one the Makefile
    installs, when it is there), or None."""
    if not _font_known(CJK_FONTS[0]) and CJK_FONT_FILE.exists():
        # matplotlib's font cache lists the fonts installed when it was built: one built before
        # fonts-noto-cjk was installed does not know it.
        font_manager.fontManager.addfont(CJK_FONT_FILE)
    return next((name for name in CJK_FONTS if _font_known(name)), None)


def _font_known(name: str) -> bool:
    try:
        font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False)
        return True
    except ValueError:
        return False


def figure_locale(locale: str) -> str:
    """The language of the figures' own words: the report's, unless it needs a CJK font that is not
    installed (English then, rather than empty boxes)."""
    return locale if locale == i18n.SOURCE_LOCALE or cjk_font() else i18n.SOURCE_LOCALE


def _side_names(locale: str) -> tuple[str, str]:
    """The legend's and the heatmaps' names of the two sides: the real data and the release's."""
    pgettext = i18n.translations(locale).pgettext
    return pgettext("release report", "real"), pgettext("release report", "released")


def _rc() -> dict:
    # matplotlib falls back along font.family: Latin from DejaVu Sans, Chinese from the CJK font.
    font = cjk_font()
    return {"font.family": ["DejaVu Sans", font] if font else ["DejaVu Sans"], "font.size": LABEL_SIZE,
            "xtick.labelsize": LABEL_SIZE, "ytick.labelsize": LABEL_SIZE}


# -- distributions ----------------------------------------------------------------------------------


@dataclass
class Plot:
    """A figure as an embedded PNG, with what the reader needs beside it."""

    png: str
    codes: list[tuple[str, str, str]] = field(default_factory=list)  # (column, code, label) without CJK font
    left_out: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)  # the columns shown, for the image's description


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _is_number(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


def _numbers_or_dates(s: pd.Series) -> bool:
    return _is_number(s) or pd.api.types.is_datetime64_any_dtype(s.dtype)


def _as_numbers(s: pd.Series) -> pd.Series:
    s = s.dropna()
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return s.dt.year + (s.dt.dayofyear - 1) / 366  # fractional years
    return s.astype("float64")


def _numeric(ax, real: pd.Series | None, released: pd.Series, locale: str) -> None:
    rel = _as_numbers(released)
    ref = _as_numbers(real) if real is not None and not real.dropna().empty else rel
    lo, hi = (float(x) for x in ref.quantile(list(CLIP)))
    if lo == hi:
        lo, hi = float(min(ref.min(), rel.min())), float(max(ref.max(), rel.max()))
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 31)
    outside = {}  # values not shown, by side
    for side, s, colour, label in zip(("real", "released"), (None if real is None else ref, rel), (REAL, RELEASED),
                                      _side_names(locale)):
        if s is None or s.empty:
            continue
        inside = s[(s >= lo) & (s <= hi)]
        ax.hist(inside, bins=bins, weights=np.full(len(inside), 1 / len(s)), histtype="step", linewidth=1.6,
                color=colour, label=label)
        if len(s) > len(inside):
            outside[side] = i18n.format_decimal(len(s) - len(inside), locale)
    ax.set_xlim(lo, hi)
    pgettext = i18n.translations(locale).pgettext
    ax.set_ylabel(pgettext("release report", "share of rows"))
    if outside:
        if len(outside) == 2:
            text = pgettext("release report",
                            "not shown: %(real)s real, %(released)s released value(s) outside [%(low)s, %(high)s]")
        elif "real" in outside:
            text = pgettext("release report", "not shown: %(real)s real value(s) outside [%(low)s, %(high)s]")
        else:
            text = pgettext("release report", "not shown: %(released)s released value(s) outside [%(low)s, %(high)s]")
        ax.set_xlabel(text % (outside | {"low": _axis_number(lo, locale), "high": _axis_number(hi, locale)}))


def _axis_number(value: float, locale: str) -> str:
    """An axis end as the locale writes numbers, to six significant digits (``1,234.5``, ``0.00012``)."""
    if value == 0 or not math.isfinite(value):
        return i18n.format_decimal(value, locale)
    decimals = max(0, 5 - int(math.floor(math.log10(abs(value)))))
    pattern = "#,##0." + "#" * decimals if decimals else "#,##0"
    return numbers.format_decimal(round(value, decimals), format=pattern, locale=locale)


def _in_bands(values: pd.Series, labels) -> pd.Series | None:
    """Real numbers put in the released bands ``labels`` (None when they are not all bands)."""
    intervals = sorted((band_edges(str(x)) or (math.nan, math.nan), str(x)) for x in labels)
    if not intervals or any(math.isnan(lo) for (lo, _), _ in intervals):
        return None
    nums = _as_numbers(values)
    out = pd.Series(None, index=nums.index, dtype=object)
    for (lo, hi), label in intervals:
        out[(nums >= lo) & (nums < hi)] = label
    return out.dropna()


def _few_whole_numbers(*sides: pd.Series | None) -> bool:
    """Numbers taking few whole values (a year, a count): bars, not a histogram."""
    present = [s.dropna() for s in sides if s is not None]
    present = [s for s in present if len(s)]
    if not present:
        return False
    values = pd.concat(present)
    return (_is_number(values) and values.nunique() <= MAX_CATEGORIES
            and bool((values.astype("float64") % 1 == 0).all()))


def _whole_numbers_as_text(s: pd.Series) -> pd.Series:
    return s.dropna().astype("float64").astype("int64").astype(str)


def _categories(ax, column: str, real: pd.Series | None, released: pd.Series,
                codes: list[tuple[str, str, str]], locale: str) -> None:
    numbers = _few_whole_numbers(real, released)
    if numbers:
        rel, ref = _whole_numbers_as_text(released), None if real is None else _whole_numbers_as_text(real)
    else:
        rel = released.dropna().astype(str)
        ref = None if real is None else _in_bands(real, pd.unique(rel)) if _numbers_or_dates(real) else real.dropna().astype(str)
    seen = pd.concat([ref, rel]) if ref is not None else rel
    order = sorted(pd.unique(seen), key=int) if numbers else band_order(pd.unique(seen))
    if order is None:  # by frequency in the real data (released values it lacks come last)
        order = list((ref if ref is not None and not ref.empty else rel).value_counts().index)
        order += [v for v in rel.value_counts().index if v not in set(order)]
    shown, rest = order[:MAX_CATEGORIES], order[MAX_CATEGORIES:]
    translations = i18n.translations(locale)
    other = translations.npgettext("release report", "other (%(num)s value)", "other (%(num)s values)", len(rest)) % {
        "num": i18n.format_decimal(len(rest), locale)}
    labels = list(shown) + ([other] if rest else [])
    if cjk_font() is None:
        for i, lbl in enumerate(shown):
            if not lbl.isascii():
                codes.append((column, f"#{i + 1}", lbl))
                labels[i] = f"#{i + 1}"
    y = np.arange(len(labels))
    real_name, released_name = _side_names(locale)
    series = [(s, c, n) for s, c, n in ((ref, REAL, real_name), (rel, RELEASED, released_name)) if s is not None]
    height = 0.8 / len(series)
    for j, (s, colour, name) in enumerate(series):
        share = s.value_counts(normalize=True)
        values = [float(share.get(v, 0.0)) for v in shown]
        if rest:
            values.append(float(share[share.index.isin(rest)].sum()))
        ax.barh(y + (j - (len(series) - 1) / 2) * height, values, height=height, color=colour, label=name)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()  # first band (or most frequent value) on top
    ax.set_xlabel(translations.pgettext("release report", "share of rows"))


def _plotted(real: pd.DataFrame, released: pd.DataFrame, hidden: set[str]) -> list[str]:
    return [c for c in released.columns if c not in hidden and not _identifier_like(released[c], real.get(c))]


def distribution_figure(real: pd.DataFrame, released: pd.DataFrame, hidden: set[str] = frozenset(),
                        locale: str = i18n.SOURCE_LOCALE) -> tuple[Figure, list[tuple[str, str, str]]]:
    """One panel per released column (real and released overlaid), and the codes of labels that
    could not be drawn (no CJK font). Columns in ``hidden`` (identifiers, free text) are left out.
    Titles, legends and axis labels are in ``locale`` (see :func:`figure_locale`)."""
    locale = figure_locale(locale)
    pgettext = i18n.translations(locale).pgettext
    cols = _plotted(real, released, hidden)[:MAX_COLUMNS]
    codes: list[tuple[str, str, str]] = []
    with plt.rc_context(_rc()):
        heights = []
        for c in cols:
            if _numbers_or_dates(released[c]) and not _few_whole_numbers(real.get(c), released[c]):
                heights.append(2.4)
            else:
                text_real = c in real.columns and not _numbers_or_dates(real[c])
                n = min(released[c].nunique() + (real[c].nunique() if text_real else 0), MAX_CATEGORIES + 1)
                heights.append(max(1.6, 0.32 * n + 0.8))
        fig = plt.figure(figsize=(9, max(sum(heights), 1.5)))
        grid = fig.add_gridspec(max(len(cols), 1), 1, height_ratios=heights or [1])
        for i, c in enumerate(cols):
            ax = fig.add_subplot(grid[i])
            r = real[c] if c in real.columns else None
            title = str(c) if r is not None else \
                pgettext("release report", "%(column)s (derived: released only)") % {"column": c}
            ax.set_title(title, fontsize=LABEL_SIZE + 1, loc="left")
            if released[c].dropna().empty and (r is None or r.dropna().empty):
                ax.text(0.5, 0.5, pgettext("release report", "no values"), ha="center", transform=ax.transAxes)
                continue
            if _numbers_or_dates(released[c]) and (r is None or _numbers_or_dates(r)) \
                    and not _few_whole_numbers(r, released[c]):
                _numeric(ax, r, released[c], locale)
            else:  # categories, or bands (whose real side may be the numbers they were made from)
                _categories(ax, c, r, released[c], codes, locale)
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=LABEL_SIZE)
        fig.tight_layout()
    return fig, codes


def _identifier_like(*sides: pd.Series | None) -> bool:
    # Keys, pseudonyms, raw identifiers and free text (on either side): one bar per person says
    # nothing and would print them.
    def one(s: pd.Series) -> bool:
        is_text = not pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_datetime64_any_dtype(s.dtype)
        return is_text and s.nunique() > max(MAX_CATEGORIES, len(s) // 2)

    return any(one(s) for s in sides if s is not None)


def distributions(real: pd.DataFrame, released: pd.DataFrame, hidden: set[str] = frozenset(),
                  locale: str = i18n.SOURCE_LOCALE) -> Plot:
    fig, codes = distribution_figure(real, released, hidden, locale)
    return Plot(_png(fig), codes=codes, columns=_plotted(real, released, hidden)[:MAX_COLUMNS])


# -- correlations -----------------------------------------------------------------------------------


def rank_codes(real: pd.DataFrame, released: pd.DataFrame, cols: list[str]) -> tuple[dict, dict, list[str]]:
    """Both tables' columns as numbers compared by Spearman correlation, coded alike on both sides:
    numbers and dates as they are, bands by their order, two-valued categories as 0/1. Category
    columns with more than two values have no order and are left out (their names returned)."""
    coded: tuple[dict, dict] = ({}, {})
    left_out = []
    for c in cols:
        sides = (real.get(c), released[c])
        texts = [s.dropna().astype(str) for s in sides if s is not None and not _is_number(s)
                 and not pd.api.types.is_datetime64_any_dtype(s.dtype)]
        values = pd.unique(pd.concat(texts)) if texts else []
        order = band_order(values) if texts else None
        if texts and order is None:
            if len(values) > 2:
                left_out.append(c)
                continue
            order = sorted(values)
        rank = {v: float(i) for i, v in enumerate(order or [])}
        for out, s in zip(coded, sides):
            if s is None:
                continue
            if pd.api.types.is_datetime64_any_dtype(s.dtype):
                out[c] = _as_numbers(s).reindex(s.index)
            elif _is_number(s):
                out[c] = s.astype("float64")
            else:
                out[c] = s.map(lambda v: rank.get(str(v), math.nan) if pd.notna(v) else math.nan).astype("float64")
    return coded[0], coded[1], left_out


def correlation_figure(real: pd.DataFrame, released: pd.DataFrame, hidden: set[str] = frozenset(),
                       locale: str = i18n.SOURCE_LOCALE) -> tuple[Figure | None, list[str]]:
    """The Spearman correlations of the columns that have an order, real beside released (titles and
    colour bar in ``locale``), and the category columns left out; no figure for fewer than two."""
    locale = figure_locale(locale)
    candidates = [c for c in _plotted(real, released, hidden) if c in real.columns]
    real_codes, released_codes, left_out = rank_codes(real, released, candidates)
    cols = [c for c in candidates if c in released_codes][:MAX_COLUMNS]
    if len(cols) < 2:
        return None, left_out
    with plt.rc_context(_rc()):
        size = max(4.0, 0.45 * len(cols) + 2.5)
        fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
        real_name, released_name = _side_names(locale)
        for ax, codes, title in ((axes[0], real_codes, real_name), (axes[1], released_codes, released_name)):
            corr = pd.DataFrame(codes).reindex(columns=cols).corr(method="spearman").fillna(0).to_numpy()
            im = ax.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
            # Numbers across the top, names down the side (on the left one): every label horizontal
            # and full size.
            ax.set_xticks(range(len(cols)), [str(i + 1) for i in range(len(cols))])
            names = [f"{c}  {i + 1}" for i, c in enumerate(cols)] if ax is axes[0] else \
                [str(i + 1) for i in range(len(cols))]
            ax.set_yticks(range(len(cols)), names)
            ax.set_title(title)
        bar = fig.colorbar(im, ax=axes, shrink=0.7)
        bar.set_label(i18n.translations(locale).pgettext("release report", "Spearman rank correlation"))
    return fig, left_out


def correlations(real: pd.DataFrame, released: pd.DataFrame, hidden: set[str] = frozenset(),
                 locale: str = i18n.SOURCE_LOCALE) -> Plot | None:
    fig, left_out = correlation_figure(real, released, hidden, locale)
    if fig is None:
        return None
    shown = [c for c in _plotted(real, released, hidden) if c in real.columns and c not in left_out]
    return Plot(_png(fig), left_out=left_out, columns=shown[:MAX_COLUMNS])


# -- the page ---------------------------------------------------------------------------------------

# The report's texts are translated in the context "release report" (pgettext), as some of its words
# mean something else elsewhere ("released": elsewhere an export released by review, here the rows a
# release holds). The context is written out at each call: Babel extracts only literal contexts.


def word_lists(locale: str) -> dict[str, dict[str, str]]:
    """The codes the report shows in words, in ``locale``: gates by their stable codes
    (``synthetic.gates``; ``attack_risk:<attack>`` and ``analysis:<name>`` are named by
    :func:`gate_name`), release methods, column treatments (``synthetic.contract.Treatment``) and the
    kinds of identifier redacted from free text (``synthetic.identifiers.KINDS``). A code without
    words here is shown as it is."""
    pgettext = i18n.translations(locale).pgettext
    return {
        "gates": {
            "k_anonymity": pgettext("release report", "k-anonymity"),
            "l_diversity": pgettext("release report", "l-diversity"),
            "suppressed_share": pgettext("release report", "Share of rows suppressed"),
            "composition_k": pgettext("release report", "k-anonymity combined with earlier releases"),
            "unique_entities": pgettext("release report", "Share of unique entities"),
            "no_direct_identifiers": pgettext("release report", "No direct identifiers"),
            "no_identifier_patterns": pgettext("release report", "No identifier patterns"),
            "no_key_material": pgettext("release report", "No key material"),
            "diagnostic": pgettext("release report", "Synthesis diagnostic"),
            "quality": pgettext("release report", "Quality"),
            "exact_copies": pgettext("release report", "Exact copies of real rows"),
            "new_row_synthesis": pgettext("release report", "New rows synthesised"),
            "dcr_overfitting_protection": pgettext("release report",
                                                   "Overfitting protection (distance to closest record)"),
            "attack_risk:singling_out": pgettext("release report", "Attack risk: singling out"),
            "attack_risk:linkability": pgettext("release report", "Attack risk: linkability"),
        },
        "methods": {
            "masked": pgettext("release report", "masked"),
            "synthetic": pgettext("release report", "synthetic"),
        },
        "treatments": {
            "keep": pgettext("release report", "kept"),
            "drop": pgettext("release report", "dropped"),
            "pseudonymise": pgettext("release report", "pseudonymised"),
            "derive": pgettext("release report", "derived fields"),
            "bands": pgettext("release report", "banded"),
            "truncate": pgettext("release report", "truncated"),
            "top_bottom": pgettext("release report", "top and bottom coded"),
            "year": pgettext("release report", "year only"),
            "shift": pgettext("release report", "dates shifted"),
            "redact": pgettext("release report", "identifiers redacted"),
        },
        "identifier_kinds": {
            "resident_id": pgettext("release report", "resident ID numbers"),
            "uscc": pgettext("release report", "unified social credit codes"),
            "bank_card": pgettext("release report", "bank card numbers"),
            "mobile": pgettext("release report", "mobile numbers"),
            "email": pgettext("release report", "e-mail addresses"),
            "own_direct_identifiers": pgettext("release report", "the table's own direct identifiers"),
        },
    }


_THRESHOLD = re.compile(rf"^\s*(>=|<=|==|>|<)\s*({_NUMBER})\s*$", re.IGNORECASE)
_RELATIONS = {">=": "≥", "<=": "≤", "==": "=", ">": ">", "<": "<"}


def page_words(locale: str) -> dict[str, str]:
    """The page's fixed texts in ``locale``."""
    pgettext = i18n.translations(locale).pgettext
    return {
        "refused": Markup(pgettext("release report", "<b>REFUSED</b>: nothing was published.")),
        "refused_failed": Markup(pgettext("release report",
                                          "<b>REFUSED</b>: nothing was published. Failed gate(s):")),
        "holder_only": pgettext("release report", "For the data holder only: this report shows distributions of"
                                " the real data. It is not part of what sandboxes see."),
        "holder_only_generated": Markup(pgettext(
            "release report", "For the data holder only: this report shows distributions of the real data. It is"
            " not part of what sandboxes see. The source data is <b>generated</b> (no real persons or enterprises).")),
        "method": pgettext("release report", "Method"),
        "created": pgettext("release report", "Created"),
        "content_hash": pgettext("release report", "Content hash"),
        "contract": pgettext("release report", "Contract"),
        "gates": pgettext("release report", "Gates"),
        "gate": pgettext("release report", "Gate"),
        "table": pgettext("release report", "Table"),
        "verdict": pgettext("release report", "Verdict"),
        "value": pgettext("release report", "Value"),
        "needs": pgettext("release report", "Needs"),
        "detail": pgettext("release report", "Detail"),
        "masking": pgettext("release report", "Masking"),
        "distributions": pgettext("release report", "Distributions (real, released)"),
        "correlations": pgettext("release report", "Correlations (real, released)"),
        "column": pgettext("release report", "Column"),
        "code": pgettext("release report", "Code"),
    }


def gate_name(code: str, locale: str) -> str:
    """A gate's name in words, from its stable code (``k_anonymity``, ``attack_risk:linkability``,
    ``attack_risk:inference:月收入``, ``analysis:wage_model``); an unknown code as it is."""
    pgettext = i18n.translations(locale).pgettext
    kind, _, rest = code.partition(":")
    if kind == "attack_risk" and rest.startswith("inference:"):
        column = rest.partition(":")[2]
        return pgettext("release report", "Attack risk: inference of %(column)s") % {"column": column}
    if kind == "analysis" and rest:
        return pgettext("release report", "Declared analysis %(name)s") % {"name": rest}
    return word_lists(locale)["gates"].get(code, code)


def measured(value, locale: str) -> str:
    """A gate's measured value as the locale writes numbers (to the gates' four decimals); ``—``
    when there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return i18n.format_decimal(value, locale)
    return numbers.format_decimal(value, format="#,##0.####", locale=locale)


def threshold_text(threshold: str, locale: str) -> str:
    """What a gate needs: a comparison with a number (``>= 5``) with the number as the locale writes
    it (``≥ 5``); anything else (``a regression that runs``) as the gate wrote it."""
    if m := _THRESHOLD.match(threshold):
        number = float(m.group(2))
        return f"{_RELATIONS[m.group(1)]} {measured(int(number) if number.is_integer() else number, locale)}"
    return threshold


def gate_rows(gates: list[dict], locale: str) -> list[dict]:
    """The manifest's gate results as the page shows them: name, verdict and numbers in ``locale``,
    the stable code beside them."""
    pgettext = i18n.translations(locale).pgettext
    rows = []
    for g in gates:
        # The gate's name in words with its stable code beside it (once, for a gate without words).
        name, code = gate_name(g["gate"], locale), Markup("<code>{}</code>").format(g["gate"])
        named = escape(name) if name == g["gate"] else Markup("{}<br>{}").format(name, code)
        inline = escape(name) if name == g["gate"] else Markup("{} {}").format(name, code)
        value = measured(g.get("value"), locale)
        needs = threshold_text(g.get("threshold") or "", locale)
        detail = gate_detail(g, locale)
        where = inline + (Markup(" [{}]").format(g["table"]) if g.get("table") else "")
        failure = Markup(pgettext("release report", "%(gate)s: %(value)s (needs %(threshold)s): %(detail)s")
                         if detail else pgettext("release report", "%(gate)s: %(value)s (needs %(threshold)s)"))
        rows.append({
            "code": g["gate"], "named": named, "table": g.get("table"), "passed": bool(g.get("passed")),
            "verdict": pgettext("release report", "passed") if g.get("passed")
            else pgettext("release report", "failed"),
            "value": value, "threshold": needs, "detail": detail,
            "failure": failure % {"gate": where, "value": value, "threshold": needs, "detail": detail},
        })
    return rows


def gate_reason(stored):
    """A gate's reason as the manifest keeps it (:func:`synthetic.gates.base.reason_as_json`) made a
    message again: a :class:`~synthetic.contract.Problem` or :class:`~synthetic.gates.base.Joined`
    whose params are read back the same way, to be rendered in a locale. A value that is not a
    message is itself (a number, a text, a list of them)."""
    if isinstance(stored, list):
        return [gate_reason(v) for v in stored]
    if not isinstance(stored, dict):
        return stored
    if isinstance(stored.get("parts"), list) and stored.get("separator") in ("; ", ", "):
        return Joined([gate_reason(p) for p in stored["parts"]], stored["separator"])
    if isinstance(stored.get("code"), str) and isinstance(stored.get("text"), str) \
            and isinstance(stored.get("params", {}), dict):
        return Problem(stored["code"], stored["text"],
                       {k: gate_reason(v) for k, v in stored.get("params", {}).items()})
    raise ValueError(f"a gate's reason is neither a message ({{code, text, params}}) nor parts joined"
                     f" ({{parts, separator: '; ' or ', '}}): {stored!r}")


def gate_detail(gate: dict, locale: str) -> str:
    """A gate's detail in ``locale``: its ``reason`` rendered (the figures it measured, in the words
    of the locale), or the English ``detail`` of a manifest written before gates kept reasons."""
    if gate.get("reason") is None:
        return gate.get("detail") or ""
    try:
        reason = gate_reason(gate["reason"])
        return reason.render(locale) if hasattr(reason, "render") else str(reason)
    except (ValueError, KeyError, TypeError) as exc:  # also what "%" raises for params that do not fit
        raise ValueError(f"the manifest's reason of the gate {gate.get('gate')!r} cannot be shown: {exc}") from None


def masking_rows(masking: dict, locale: str) -> list[tuple[str, str]]:
    """What masking did to a table (``synthetic.masking.TableReport`` as the manifest keeps it), as
    labelled rows in ``locale``; a field without a label here is shown under its own name. Lists are
    HTML (:func:`enclave.i18n.format_list` escapes their items)."""
    pgettext = i18n.translations(locale).pgettext
    words = word_lists(locale)
    labels = {
        "rows_in": pgettext("release report", "Rows read"),
        "rows_out": pgettext("release report", "Rows released"),
        "entity_column": pgettext("release report", "Entity column"),
        "entities_in": pgettext("release report", "Entities read"),
        "entities_out": pgettext("release report", "Entities released"),
        "suppressed_rows": pgettext("release report", "Rows suppressed"),
        "suppressed_entities": pgettext("release report", "Entities suppressed"),
        "orphan_rows_removed": pgettext("release report", "Orphan rows removed"),
        "k": pgettext("release report", "Smallest class (k reached)"),
        "l": pgettext("release report", "Fewest sensitive values in a class (l reached)"),
        "quasi_identifiers": pgettext("release report", "Quasi-identifiers"),
        "sensitive": pgettext("release report", "Sensitive columns"),
        "treatments": pgettext("release report", "Treatments"),
        "bounds": pgettext("release report", "Top and bottom coding"),
        "redacted": pgettext("release report", "Redacted from free text"),
    }
    treatment = Markup(pgettext("release report", "%(column)s: %(treatment)s"))
    bounds = Markup(pgettext("release report", "%(column)s: from %(bottom)s to %(top)s"))
    found_in = Markup(pgettext("release report", "%(column)s: %(found)s"))
    kind_count = Markup(pgettext("release report", "%(kind)s (%(count)s)"))

    def shown(key: str, value) -> str:
        if key == "treatments":
            return i18n.format_list([treatment % {"column": c, "treatment": words["treatments"].get(t, t)}
                                     for c, t in value.items()], locale)
        if key == "bounds":
            return i18n.format_list([bounds % {"column": c, "bottom": measured(b.get("bottom"), locale),
                                               "top": measured(b.get("top"), locale)}
                                     for c, b in value.items()], locale)
        if key == "redacted":
            return i18n.format_list([found_in % {"column": c, "found": i18n.format_list(
                [kind_count % {"kind": words["identifier_kinds"].get(kind, kind), "count": measured(n, locale)}
                 for kind, n in found.items()], locale)} for c, found in value.items()], locale)
        if isinstance(value, list):
            return i18n.format_list(value, locale)
        return measured(value, locale)

    return [(labels.get(key, key), shown(key, value)) for key, value in masking.items() if value not in (None, [], {})]


def hidden_columns(manifest: dict, table: str) -> set[str]:
    """The table's columns whose contract role keeps them out of the plots."""
    columns = manifest.get("contract", {}).get("tables", {}).get(table, {}).get("columns", {})
    return {c for c, spec in columns.items() if spec.get("role") in HIDDEN_ROLES}


def _text_list(items, locale: str) -> str:
    """Items as the locale enumerates them, as plain text (for an attribute; :func:`i18n.format_list`
    gives HTML)."""
    return lists.format_list([str(item) for item in items], locale=locale) if items else ""


def render(manifest: dict, real: dict[str, pd.DataFrame], released: dict[str, pd.DataFrame],
           locale: str | None = None) -> str:
    """The report of a release attempt, published or refused (a refused one has no ``release``,
    ``content_hash`` or ``files``, and failed gates, shown first under a REFUSED banner), in
    ``locale``: by default the language of the command running the release
    (:func:`enclave.i18n.locale_from_environment`)."""
    locale = locale or i18n.locale_from_environment()
    pgettext = i18n.translations(locale).pgettext
    gates = gate_rows(manifest.get("gates", []), locale)
    failed = [g for g in gates if not g["passed"]]
    refused = bool(failed) or manifest.get("refused", False)
    name = manifest.get("release") or manifest.get("contract", {}).get("name", "")
    if refused:
        title = pgettext("release report", "REFUSED release %(name)s") % {"name": name}
    else:
        title = pgettext("release report", "Release %(name)s") % {"name": name}
    method = word_lists(locale)["methods"].get(manifest.get("method", ""), manifest.get("method", ""))
    if model := (manifest.get("parameters") or {}).get("model"):
        method = pgettext("release report", "%(method)s (%(model)s)") % {"method": method, "model": model}
    contract = manifest.get("contract", {})
    tables = []
    for tname, rel in released.items():
        r = real.get(tname, pd.DataFrame(index=rel.index[:0]))
        hidden = hidden_columns(manifest, tname)
        plots = distributions(r, rel, hidden, locale)
        heatmaps = correlations(r, rel, hidden, locale)
        tables.append({
            "heading": pgettext("release report", "Table %(table)s") % {"table": tname},
            "rows": pgettext("release report", "%(real)s real rows, %(released)s released rows.") % {
                "real": i18n.format_decimal(len(r), locale), "released": i18n.format_decimal(len(rel), locale)},
            "masking": masking_rows(manifest.get("masking", {}).get(tname) or {}, locale),
            "distributions": plots,
            "distributions_alt": pgettext(
                "release report", "Distributions of %(columns)s in %(table)s, real and released") % {
                "columns": _text_list(plots.columns, locale), "table": tname},
            "correlations": heatmaps,
            "left_out": heatmaps and Markup(pgettext(
                "release report", "Not in the heatmaps (categories with no order): %(columns)s.")) % {
                "columns": i18n.format_list(heatmaps.left_out, locale)},
            "correlations_alt": heatmaps and pgettext(
                "release report", "Correlations of %(columns)s in %(table)s, real and released") % {
                "columns": _text_list(heatmaps.columns, locale), "table": tname},
        })
    env = i18n.environment(locale, autoescape=True)
    return env.from_string(_TEMPLATE).render(
        m=manifest, title=title, refused=refused, failed=failed, gates=failed + [g for g in gates if g["passed"]],
        w=page_words(locale), tables=tables, method=method,
        created=pgettext("release report", "%(time)s by %(person)s") % {
            "time": i18n.format_datetime(manifest.get("created_at"), locale), "person": manifest.get("created_by", "")},
        contract=pgettext("release report", "%(name)s: %(description)s") % {
            "name": contract.get("name", ""), "description": contract.get("description", "")},
    )
