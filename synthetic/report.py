"""The data holder's HTML report for a release: real vs released distributions, correlations, gates.

It shows real-data distributions, so it lives beside the release's ``data/`` folder, never in it.
Plots are embedded PNGs (matplotlib, Agg) so the report is one self-contained file.
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from jinja2 import Environment  # noqa: E402

MAX_COLUMNS = 16  # plots per table; wide tables show the first ones
MAX_CATEGORIES = 12

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Release {{ m.release }}</title>
<style>
body{font-family:sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
.fail{background:#fdd}.pass{background:#dfd}.banner{background:#ffe9a8;padding:.6em;border:1px solid #d9b300}
img{max-width:100%}
</style></head><body>
<h1>Release {{ m.release }}</h1>
<p class="banner">For the data holder only: this report shows distributions of the real data.
It is not part of what sandboxes see.{% if m.generated %} The source data is <b>generated</b>
(no real persons or enterprises).{% endif %}</p>
<table>
<tr><th>Method</th><td>{{ m.method }}{% if m.parameters.model %} ({{ m.parameters.model }}){% endif %}</td></tr>
<tr><th>Created</th><td>{{ m.created_at }} by {{ m.created_by }}</td></tr>
<tr><th>Content hash</th><td><code>{{ m.content_hash }}</code></td></tr>
<tr><th>Contract</th><td>{{ m.contract.name }}: {{ m.contract.description }}</td></tr>
</table>
<h2>Gates</h2>
<table><tr><th>Gate</th><th>Table</th><th>Value</th><th>Needs</th><th>Detail</th></tr>
{% for g in m.gates %}<tr class="{{ 'pass' if g.passed else 'fail' }}"><td>{{ g.gate }}</td><td>{{ g.table or '' }}</td>
<td>{{ g.value }}</td><td>{{ g.threshold }}</td><td>{{ g.detail }}</td></tr>{% endfor %}
</table>
{% if m.anonymeter %}<p>{{ m.anonymeter }}</p>{% endif %}
{% for t in tables %}
<h2>Table {{ t.name }}</h2>
<p>{{ t.rows_real }} real rows, {{ t.rows_released }} released rows.</p>
{% if t.masking %}<table><tr><th>Masking</th><td><pre>{{ t.masking }}</pre></td></tr></table>{% endif %}
<h3>Distributions (real, released)</h3><img alt="distributions of {{ t.name }}" src="data:image/png;base64,{{ t.distributions }}">
{% if t.correlations %}<h3>Correlations (real, released)</h3>
<img alt="correlations of {{ t.name }}" src="data:image/png;base64,{{ t.correlations }}">{% endif %}
{% endfor %}
</body></html>
"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plot_column(ax, s: pd.Series, title: str) -> None:
    s = s.dropna()
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    if s.empty:
        ax.text(0.5, 0.5, "no values", ha="center", transform=ax.transAxes)
        return
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        s = s.dt.year + (s.dt.dayofyear - 1) / 366  # fractional years
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        ax.hist(s.astype("float64"), bins=30, color="#4a7bb7")
    else:
        counts = s.astype(str).value_counts().head(MAX_CATEGORIES)
        # Category labels may be Chinese; the default font may lack the glyphs, so show codes.
        ax.bar(range(len(counts)), counts.values, color="#b77b4a")
        ax.set_xticks(range(len(counts)))
        ax.set_xticklabels([lbl if lbl.isascii() else f"#{i}" for i, lbl in enumerate(counts.index)],
                           rotation=60, fontsize=5)


def _identifier_like(s: pd.Series) -> bool:
    # Keys, pseudonyms and raw identifiers: one bar per person says nothing and would print them.
    is_text = not pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_datetime64_any_dtype(s.dtype)
    return is_text and s.nunique() > max(MAX_CATEGORIES, len(s) // 2)


def distributions(real: pd.DataFrame, released: pd.DataFrame) -> str:
    cols = [c for c in released.columns if not _identifier_like(released[c])][:MAX_COLUMNS]
    fig, axes = plt.subplots(len(cols), 2, figsize=(8, 1.8 * len(cols)), squeeze=False)
    for i, c in enumerate(cols):
        if c in real.columns:
            _plot_column(axes[i][0], real[c], f"{c} (real)")
        else:
            axes[i][0].set_axis_off()
            axes[i][0].set_title(f"{c}: derived, not in the real data", fontsize=8)
        _plot_column(axes[i][1], released[c], f"{c} (released)")
    fig.tight_layout()
    return _png(fig)


def _codes(df: pd.DataFrame) -> pd.DataFrame:
    out = {}
    for c in df.columns:
        s = df[c]
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            out[c] = s.dt.year.astype("float64")
        elif pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
            out[c] = s.astype("float64")
        elif s.nunique() <= 50:
            out[c] = pd.Series(pd.factorize(s.astype(str))[0], index=s.index).astype("float64")
    return pd.DataFrame(out)


def correlations(real: pd.DataFrame, released: pd.DataFrame) -> str | None:
    cols = [c for c in _codes(released).columns if c in real.columns][:MAX_COLUMNS]
    if len(cols) < 2:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, df, title in ((axes[0], real, "real"), (axes[1], released, "released")):
        corr = _codes(df[cols]).reindex(columns=cols).corr(method="spearman").fillna(0).to_numpy()
        im = ax.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=6)
        ax.set_yticks(range(len(cols)), cols, fontsize=6)
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.7)
    return _png(fig)


def render(manifest: dict, real: dict[str, pd.DataFrame], released: dict[str, pd.DataFrame]) -> str:
    tables = []
    for tname, rel in released.items():
        r = real[tname]
        masking = manifest.get("masking", {}).get(tname)
        tables.append({
            "name": tname,
            "rows_real": len(r),
            "rows_released": len(rel),
            "masking": "\n".join(f"{k}: {v}" for k, v in masking.items()) if masking else "",
            "distributions": distributions(r, rel),
            "correlations": correlations(r, rel),
        })
    env = Environment(autoescape=True)
    return env.from_string(_TEMPLATE).render(m=manifest, tables=tables)
