"""How a submitted file is shown to reviewers: tables with flagged cells, text, notebooks as HTML,
and its provenance as a summary.

Tables and text are handed to the page template as values (autoescaped there), never as markup.

Notebooks are converted with nbconvert and sanitised (scripts, widget views and event handlers
removed); the result is further served with a Content-Security-Policy that allows no script at
all, inside a sandboxed frame.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import nbformat
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


@dataclass
class Table:
    header: list[str]
    # The first MAX_TABLE_ROWS rows: (row number, [(value, flag status or None) per cell]).
    rows: list[tuple[int, list[tuple[str, str | None]]]]
    total: int  # rows in the file, besides the header


@dataclass
class Text:
    text: str  # at most MAX_TEXT_CHARS
    truncated: bool


@dataclass
class Preview:
    """What the request page shows of a file's content; ``templates/preview.html`` draws it."""

    kind: str  # "image" or "frame" (from ``src``), "table", "text", or "none"
    src: str = ""
    table: Table | None = None
    text: Text | None = None


@dataclass
class Execution:
    """One execution a file's provenance names: when, in which notebook, and its code."""

    time: str
    notebook: str
    code: str


@dataclass
class Provenance:
    """A file's provenance as the request page summarises it (``templates/provenance.html``)."""

    # What the file is: its path in the home, its role, whose workspace.
    facts: list[tuple[str, str]]
    releases: list[str]
    # Found by the file's name in the code the workspace ran (see the guard's
    # ``executions_mentioning``), not by tracing what wrote the file.
    executions: list[Execution]
    # (name, version), sorted by name.
    packages: list[tuple[str, str]]
    # Any other entry the sender added, as JSON text.
    other: list[tuple[str, str]]


_FACTS = {"path": "Path in the workspace", "role": "Role", "user": "Written by", "workspace": "Workspace"}


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def provenance(value) -> Provenance:
    """Summarise a provenance as sent with the file: any JSON object (the intake takes what a caller
    declares), each known entry shown in its own words, the rest as JSON text."""
    p = value if isinstance(value, dict) else {}
    facts = [(label, _text(p[key])) for key, label in _FACTS.items() if p.get(key) not in (None, "")]
    releases = [_text(r) for r in p.get("releases") or []] if isinstance(p.get("releases"), list) else []
    executions = [
        Execution(_text(e.get("time", "")), _text(e.get("notebook") or "a console or terminal"), _text(e.get("code", "")))
        for e in p.get("executions") or [] if isinstance(e, dict)
    ] if isinstance(p.get("executions"), list) else []
    packages = sorted(((str(k), _text(v)) for k, v in p["packages"].items()), key=lambda kv: kv[0].lower()) \
        if isinstance(p.get("packages"), dict) else []
    known = {*_FACTS, "releases", "executions", "packages"}
    other = [(str(k), _text(v)) for k, v in p.items()
             if k not in known or (k in ("releases", "executions") and not isinstance(v, list))
             or (k == "packages" and not isinstance(v, dict))]
    return Provenance(facts, releases, executions, packages, other)


def table(data: bytes, name: str, findings: list[dict]) -> Table:
    delimiter = "\t" if name.lower().endswith(".tsv") else ","
    # "utf-8-sig": a byte order mark is no part of the first column's name (see files.inspect).
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig", "replace"), newline=""), delimiter=delimiter)
    marks = flagged_cells(findings)
    header = next(reader, [])
    rows, total = [], 0
    for i, row in enumerate(reader, 1):
        total = i
        if i <= MAX_TABLE_ROWS:
            rows.append((i, [(v, marks.get((i, c))) for c, v in enumerate(row)]))
    return Table(header, rows, total)


def text(data: bytes, kind: str) -> Text:
    content = data.decode("utf-8", "replace")
    if kind in ("json", "notebook") and len(content) <= MAX_TEXT_CHARS:
        try:
            content = json.dumps(json.loads(content), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    return Text(content[:MAX_TEXT_CHARS], len(content) > MAX_TEXT_CHARS)


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
