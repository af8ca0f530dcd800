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
"""

from __future__ import annotations

import base64
import functools
import io
import math
import re
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from jinja2 import Environment  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

MAX_COLUMNS = 16  # plots per table; wide tables show the first ones
MAX_CATEGORIES = 15  # bars per column; the rest are summed into one "other" bar
LABEL_SIZE = 9  # points, for every tick label
CLIP = (0.01, 0.99)  # numeric axes span these quantiles of the real values
HIDDEN_ROLES = ("direct_identifier", "free_text")  # never plotted: bars would print identifiers
CJK_FONTS = ("Noto Sans CJK SC", "WenQuanYi Micro Hei")
REAL, RELEASED = "#4a7bb7", "#d9822b"

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
.fail{background:#fdd}.pass{background:#dfd}.banner{background:#ffe9a8;padding:.6em;border:1px solid #d9b300}
.refused{background:#b00020;color:#fff;padding:.8em;font-size:1.2em}.refused li{font-size:.9em}
img{max-width:100%}.legend{font-size:.9em}
</style></head><body>
<h1>{{ title }}</h1>
{% if refused %}<div class="refused" role="alert"><b>REFUSED</b>: nothing was published.{% if failed %} Failed gate(s):{% endif %}
<ul>{% for g in failed %}<li>{{ g.gate }}{% if g.table %} [{{ g.table }}]{% endif %}: {{ g.value }}
(needs {{ g.threshold }}){% if g.detail %}: {{ g.detail }}{% endif %}</li>{% endfor %}</ul></div>{% endif %}
<p class="banner">For the data holder only: this report shows distributions of the real data.
It is not part of what sandboxes see.{% if m.generated %} The source data is <b>generated</b>
(no real persons or enterprises).{% endif %}</p>
<table>
<tr><th>Method</th><td>{{ m.method }}{% if m.parameters and m.parameters.model %} ({{ m.parameters.model }}){% endif %}</td></tr>
{% if m.created_at %}<tr><th>Created</th><td>{{ m.created_at }} by {{ m.created_by }}</td></tr>{% endif %}
{% if m.content_hash %}<tr><th>Content hash</th><td><code>{{ m.content_hash }}</code></td></tr>{% endif %}
<tr><th>Contract</th><td>{{ m.contract.name }}: {{ m.contract.description }}</td></tr>
</table>
<h2>Gates</h2>
<table><tr><th>Gate</th><th>Table</th><th>Value</th><th>Needs</th><th>Detail</th></tr>
{% for g in gates %}<tr class="{{ 'pass' if g.passed else 'fail' }}"><td>{{ g.gate }}</td><td>{{ g.table or '' }}</td>
<td>{{ g.value }}</td><td>{{ g.threshold }}</td><td>{{ g.detail }}</td></tr>{% endfor %}
</table>
{% if m.anonymeter %}<p>{{ m.anonymeter }}</p>{% endif %}
{% for t in tables %}
<h2>Table {{ t.name }}</h2>
<p>{{ t.rows_real }} real rows, {{ t.rows_released }} released rows.</p>
{% if t.masking %}<table><tr><th>Masking</th><td><pre>{{ t.masking }}</pre></td></tr></table>{% endif %}
<h3>Distributions (real, released)</h3><img alt="distributions of {{ t.name }}" src="data:image/png;base64,{{ t.distributions.png }}">
{% if t.distributions.codes %}<table class="legend"><tr><th>Column</th><th>Code</th><th>Value</th></tr>
{% for c in t.distributions.codes %}<tr><td>{{ c[0] }}</td><td>{{ c[1] }}</td><td>{{ c[2] }}</td></tr>{% endfor %}</table>{% endif %}
{% if t.correlations %}<h3>Correlations (real, released)</h3>
<img alt="correlations of {{ t.name }}" src="data:image/png;base64,{{ t.correlations.png }}">
{% if t.correlations.left_out %}<p>Not in the heatmaps (categories with no order): {{ t.correlations.left_out | join(', ') }}.</p>{% endif %}
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
    """The installed CJK font charts use for Chinese labels, or None."""
    for name in CJK_FONTS:
        try:
            font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False)
            return name
        except ValueError:
            continue
    return None


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


def _numeric(ax, real: pd.Series | None, released: pd.Series) -> None:
    rel = _as_numbers(released)
    ref = _as_numbers(real) if real is not None and not real.dropna().empty else rel
    lo, hi = (float(x) for x in ref.quantile(list(CLIP)))
    if lo == hi:
        lo, hi = float(min(ref.min(), rel.min())), float(max(ref.max(), rel.max()))
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 31)
    outside = []
    for s, colour, label in ((None if real is None else ref, REAL, "real"), (rel, RELEASED, "released")):
        if s is None or s.empty:
            continue
        inside = s[(s >= lo) & (s <= hi)]
        ax.hist(inside, bins=bins, weights=np.full(len(inside), 1 / len(s)), histtype="step", linewidth=1.6,
                color=colour, label=label)
        n_out = len(s) - len(inside)
        if n_out:
            outside.append(f"{n_out} {label}")
    ax.set_xlim(lo, hi)
    ax.set_ylabel("share of rows")
    if outside:
        ax.set_xlabel(f"not shown: {', '.join(outside)} value(s) outside [{lo:,.6g}, {hi:,.6g}]")


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
                codes: list[tuple[str, str, str]]) -> None:
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
    labels = list(shown) + ([f"other ({len(rest)} values)"] if rest else [])
    if cjk_font() is None:
        for i, lbl in enumerate(shown):
            if not lbl.isascii():
                codes.append((column, f"#{i + 1}", lbl))
                labels[i] = f"#{i + 1}"
    y = np.arange(len(labels))
    series = [(s, c, n) for s, c, n in ((ref, REAL, "real"), (rel, RELEASED, "released")) if s is not None]
    height = 0.8 / len(series)
    for j, (s, colour, name) in enumerate(series):
        share = s.value_counts(normalize=True)
        values = [float(share.get(v, 0.0)) for v in shown]
        if rest:
            values.append(float(share[share.index.isin(rest)].sum()))
        ax.barh(y + (j - (len(series) - 1) / 2) * height, values, height=height, color=colour, label=name)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()  # first band (or most frequent value) on top
    ax.set_xlabel("share of rows")


def _plotted(real: pd.DataFrame, released: pd.DataFrame, hidden: set[str]) -> list[str]:
    return [c for c in released.columns if c not in hidden and not _identifier_like(released[c], real.get(c))]


def distribution_figure(real: pd.DataFrame, released: pd.DataFrame,
                        hidden: set[str] = frozenset()) -> tuple[Figure, list[tuple[str, str, str]]]:
    """One panel per released column (real and released overlaid), and the codes of labels that
    could not be drawn (no CJK font). Columns in ``hidden`` (identifiers, free text) are left out."""
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
            title = c if r is not None else f"{c} (derived: released only)"
            ax.set_title(title, fontsize=LABEL_SIZE + 1, loc="left")
            if released[c].dropna().empty and (r is None or r.dropna().empty):
                ax.text(0.5, 0.5, "no values", ha="center", transform=ax.transAxes)
                continue
            if _numbers_or_dates(released[c]) and (r is None or _numbers_or_dates(r)) \
                    and not _few_whole_numbers(r, released[c]):
                _numeric(ax, r, released[c])
            else:  # categories, or bands (whose real side may be the numbers they were made from)
                _categories(ax, c, r, released[c], codes)
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


def distributions(real: pd.DataFrame, released: pd.DataFrame, hidden: set[str] = frozenset()) -> Plot:
    fig, codes = distribution_figure(real, released, hidden)
    return Plot(_png(fig), codes=codes)


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


def correlation_figure(real: pd.DataFrame, released: pd.DataFrame,
                       hidden: set[str] = frozenset()) -> tuple[Figure | None, list[str]]:
    candidates = [c for c in _plotted(real, released, hidden) if c in real.columns]
    real_codes, released_codes, left_out = rank_codes(real, released, candidates)
    cols = [c for c in candidates if c in released_codes][:MAX_COLUMNS]
    if len(cols) < 2:
        return None, left_out
    with plt.rc_context(_rc()):
        size = max(4.0, 0.45 * len(cols) + 2.5)
        fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
        for ax, codes, title in ((axes[0], real_codes, "real"), (axes[1], released_codes, "released")):
            corr = pd.DataFrame(codes).reindex(columns=cols).corr(method="spearman").fillna(0).to_numpy()
            im = ax.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
            # Numbers across the top, names down the side: every label horizontal and full size.
            ax.set_xticks(range(len(cols)), [str(i + 1) for i in range(len(cols))])
            names = [f"{c}  {i + 1}" for i, c in enumerate(cols)] if title == "real" else \
                [str(i + 1) for i in range(len(cols))]
            ax.set_yticks(range(len(cols)), names)
            ax.set_title(title)
        fig.colorbar(im, ax=axes, shrink=0.7)
    return fig, left_out


def correlations(real: pd.DataFrame, released: pd.DataFrame, hidden: set[str] = frozenset()) -> Plot | None:
    fig, left_out = correlation_figure(real, released, hidden)
    return None if fig is None else Plot(_png(fig), left_out=left_out)


# -- the page ---------------------------------------------------------------------------------------


def hidden_columns(manifest: dict, table: str) -> set[str]:
    """The table's columns whose contract role keeps them out of the plots."""
    columns = manifest.get("contract", {}).get("tables", {}).get(table, {}).get("columns", {})
    return {c for c, spec in columns.items() if spec.get("role") in HIDDEN_ROLES}


def render(manifest: dict, real: dict[str, pd.DataFrame], released: dict[str, pd.DataFrame]) -> str:
    """The report of a release attempt, published or refused (a refused one has no ``release``,
    ``content_hash`` or ``files``, and failed gates, shown first under a REFUSED banner)."""
    gates = manifest.get("gates", [])
    failed = [g for g in gates if not g.get("passed")]
    refused = bool(failed) or manifest.get("refused", False)
    name = manifest.get("release") or manifest.get("contract", {}).get("name", "")
    title = f"REFUSED release {name}" if refused else f"Release {name}"
    tables = []
    for tname, rel in released.items():
        r = real.get(tname, pd.DataFrame(index=rel.index[:0]))
        hidden = hidden_columns(manifest, tname)
        masking = manifest.get("masking", {}).get(tname)
        tables.append({
            "name": tname,
            "rows_real": len(r),
            "rows_released": len(rel),
            "masking": "\n".join(f"{k}: {v}" for k, v in masking.items()) if masking else "",
            "distributions": distributions(r, rel, hidden),
            "correlations": correlations(r, rel, hidden),
        })
    env = Environment(autoescape=True)
    return env.from_string(_TEMPLATE).render(
        m=manifest, title=title, refused=refused, failed=failed,
        gates=failed + [g for g in gates if g.get("passed")], tables=tables,
    )
