"""How a submitted file is shown to reviewers: tables with flagged cells, text, notebooks as HTML.

Notebooks are converted with nbconvert and sanitised (scripts, widget views and event handlers
removed); the result is further served with a Content-Security-Policy that allows no script at
all, inside a sandboxed frame.
"""

from __future__ import annotations

import csv
import io
import json

import nbformat
from markupsafe import Markup, escape
from nbconvert import HTMLExporter
from nbconvert.preprocessors.sanitize import SanitizeHTML

MAX_TABLE_ROWS = 500
MAX_TEXT_CHARS = 200_000

# For rendered notebooks and HTML outputs: no script, no network; inline styles and data: images only.
FRAME_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"


def flagged_cells(findings: list[dict]) -> dict[tuple[int, int], str]:
    """Table cells named by failing or review findings -> the worst status among them."""
    marks: dict[tuple[int, int], str] = {}
    for f in findings:
        if f["status"] == "pass":
            continue
        for r, c in f.get("cells") or []:
            if marks.get((r, c)) != "fail":
                marks[(r, c)] = f["status"]
    return marks


def table_html(data: bytes, name: str, findings: list[dict]) -> Markup:
    delimiter = "\t" if name.lower().endswith(".tsv") else ","
    rows = csv.reader(io.StringIO(data.decode("utf-8", "replace"), newline=""), delimiter=delimiter)
    marks = flagged_cells(findings)
    out = ['<div class="table-wrap"><table class="data"><thead><tr><th>#</th>']
    total = 0
    for i, row in enumerate(rows):
        if i == 0:
            out.extend(f"<th>{escape(h)}</th>" for h in row)
            out.append("</tr></thead><tbody>")
            continue
        total = i
        if i > MAX_TABLE_ROWS:
            continue
        out.append(f"<tr><th>{i}</th>")
        for c, v in enumerate(row):
            status = marks.get((i, c))
            cls = f' class="flag-{status}" title="flagged: {status}"' if status else ""
            out.append(f"<td{cls}>{escape(v)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    if total > MAX_TABLE_ROWS:
        out.append(f'<p class="note">Showing {MAX_TABLE_ROWS} of {total} rows.</p>')
    return Markup("".join(out))


def text_html(data: bytes, kind: str) -> Markup:
    text = data.decode("utf-8", "replace")
    if kind in ("json", "notebook") and len(text) <= MAX_TEXT_CHARS:
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    more = len(text) > MAX_TEXT_CHARS
    body = escape(text[:MAX_TEXT_CHARS])
    note = f'<p class="note">Showing the first {MAX_TEXT_CHARS} characters.</p>' if more else ""
    return Markup(f'<pre class="text">{body}</pre>{note}')


def notebook_html(data: bytes) -> str:
    """A complete, script-free HTML page of the notebook with its outputs."""
    nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    nb.metadata.pop("widgets", None)  # widget state renders only with scripts
    exporter = HTMLExporter(template_name="basic", sanitize_html=True)
    exporter.register_preprocessor(SanitizeHTML(), enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><style>"
        "body{font-family:system-ui,sans-serif;margin:1rem;}pre{white-space:pre-wrap;}"
        "img{max-width:100%;}table{border-collapse:collapse;}td,th{border:1px solid #ccc;padding:2px 6px;}"
        "</style></head><body>" + body + "</body></html>"
    )
