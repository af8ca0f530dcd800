"""Automated disclosure checks: each a small function, all listed in :data:`CHECKS`.

A check receives the inspected file and the context (thresholds, the workspace's released datasets,
ACRO results attached to the request) and returns findings, each ``pass``, ``review`` or ``fail``
with a reason and a location. Reviewers see every finding; requesters can run the same checks
before submitting. A file's status is its worst finding.

A finding's reason is an :class:`enclave.i18n.Message`: a stable ``code``
(``check.small_cells.below_threshold``) that logs, APIs and tests rely on, and ``params`` that fill
its text. The English ``reason`` is stored with the finding (audit records and manifests keep it);
:func:`reason_in` shows it in a reader's language. Texts quoted from elsewhere stay as they came
(ACRO's summaries, the names of metadata fields, a notebook's locations).

The table checks also run on every table a notebook shows (HTML, text and Markdown tables, JSON
data, widget state: see :mod:`.notebook_tables`), so a notebook fails wherever the same table in a
CSV file would; their findings name the cell and output ("cell 4, output 1, HTML table 1: ...").
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import i18n
from ..i18n import N_
from . import identifiers
from .files import Inspected, content_matches, gc_paused

PASS, REVIEW, FAIL = "pass", "review", "fail"
# Cells kept per finding for highlighting; the reason still gives the full number.
MAX_CELLS = 1000
_RANK = {PASS: 0, REVIEW: 1, FAIL: 2}


# Every reason a check gives, by its stable code: English text with %(name)s placeholders.
REASONS: dict[str, str] = {
    "check.type.mismatch": N_("the name says .%(extension)s but the content is %(content)s"),
    "check.type.ok": N_(".%(extension)s file holding %(content)s content"),
    "check.rows.over_cap": N_("%(rows)s data rows, over the cap of %(cap)s"),
    "check.rows.ok": N_("%(rows)s data rows (cap %(cap)s)"),
    "check.small_cells.no_counts": N_("no count columns found"),
    "check.small_cells.below_threshold": N_("%(cells)s count cell(s) under the minimum of %(minimum)s"),
    "check.small_cells.zeros": N_("%(cells)s zero cell(s): an empty category can disclose (class disclosure)"),
    "check.small_cells.ok": N_("every count in %(columns)s count column(s) is at least %(minimum)s"),
    "check.rounding.unrounded": N_("%(cells)s count(s) not rounded to a multiple of %(base)s"),
    "check.rounding.ok": N_("counts are multiples of %(base)s"),
    "check.rounding.no_counts": N_("no count columns"),
    "check.acro.none": N_("no ACRO results attached for this output"),
    "check.acro.dominance_failed": N_("ACRO dominance (N,K) check failed on %(cells)s cell(s)"),
    "check.acro.p_percent_failed": N_("ACRO p%% rule check failed on %(cells)s cell(s)"),
    "check.acro.minimum_count_failed": N_("ACRO minimum count check failed on %(cells)s cell(s)"),
    "check.acro.zero_cells_failed": N_("ACRO zero cells check failed on %(cells)s cell(s)"),
    "check.acro.degrees_of_freedom_failed": N_("ACRO degrees of freedom check failed on %(cells)s cell(s)"),
    "check.acro.other_failed": N_("ACRO %(acro_check)s check failed on %(cells)s cell(s)"),
    "check.acro.review": N_("ACRO asks for a review: %(summary)s"),
    "check.acro.fail": N_("ACRO reports a failure: %(summary)s"),
    "check.acro.ok": N_("ACRO checks passed for this output"),
    "check.microdata.record_level": N_(
        "looks like record-level data: column '%(column)s' has a distinct value in %(distinct)s of %(rows)s rows"),
    "check.microdata.record_level_shown": N_(
        "looks like record-level data: column '%(column)s' has a distinct value in %(distinct)s of %(rows)s"
        " rows shown of %(records)s"),
    "check.microdata.copied_rows": N_("%(rows)s row(s) copy rows of released dataset %(dataset)s"),
    "check.microdata.near_rows": N_(
        "%(rows)s row(s) nearly duplicate rows of released dataset %(dataset)s (after rounding and normalising text)"),
    "check.microdata.ok": N_("no record-level data or released rows found"),
    "check.identifiers.resident_id": N_("resident identity number %(value)s"),
    "check.identifiers.mobile": N_("mobile phone number %(value)s"),
    "check.identifiers.bank_card": N_("bank card number %(value)s"),
    "check.identifiers.uscc": N_("unified social credit code %(value)s"),
    "check.identifiers.email": N_("e-mail address %(value)s"),
    "check.identifiers.more": N_("more identifiers than listed here"),
    "check.identifiers.ok": N_("no resident IDs, phone or card numbers, USCCs or e-mail addresses"),
    "check.metadata.found": N_("embedded metadata (removed on release): %(fields)s"),
    "check.metadata.ok": N_("no embedded metadata"),
    "check.active_content.found": N_("not rendered for review: %(what)s"),
    "check.active_content.ok": N_("no scripts or widget state"),
    "check.notebook.checked": N_(
        "%(outputs)s output(s) extracted and checked; %(tables)s table(s) found and checked like CSV files"
        " (%(checks)s)"),
    "check.notebook.checked_tables": N_(
        "%(outputs)s output(s) extracted and checked; %(tables)s table(s) found and checked like CSV files"
        " (%(checks)s): %(where)s"),
}
# ACRO's checks (as its results.json names them) and the code of each one's failure.
_ACRO_FAILED = {"NKCheck": "check.acro.dominance_failed", "PPercentCheck": "check.acro.p_percent_failed",
                "MinimumThresholdCheck": "check.acro.minimum_count_failed",
                "PresenceOfZeroCheck": "check.acro.zero_cells_failed",
                "MinimumDoFCheck": "check.acro.degrees_of_freedom_failed"}


@dataclass
class Finding:
    check: str
    status: str
    # Why: a stable code and its params (the text is REASONS[code]).
    message: i18n.Message
    location: str = ""
    # Table cells as [data row (1-based), column index], for highlighting.
    cells: list[list[int]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """The reason in English, as it is stored."""
        return str(self.message)


def finding(check: str, status: str, code: str, location: str = "", marked: list[list[int]] | None = None,
            **params) -> Finding:
    """A finding whose reason is ``REASONS[code]`` filled with ``params``; ``marked``: its cells."""
    return Finding(check, status, i18n.Message(code, REASONS[code], params), location, marked or [])


def reason_in(found: dict, locale: str) -> str:
    """A stored finding's reason in ``locale``, from its code and params. A finding stored before
    findings had codes (an older request), or with a code this version does not know, shows the
    English reason it was stored with."""
    text, params = REASONS.get(found.get("code") or ""), found.get("params")
    if text is None or not isinstance(params, dict):
        return found["reason"]
    try:
        return i18n.Message(found["code"], text, params).render(locale)
    except (KeyError, TypeError, ValueError):  # params that do not fill the text: stored by another version
        return found["reason"]


@dataclass
class Thresholds:
    max_csv_rows: int = 5000
    min_cell_count: int = 10
    round_base: int = 5
    nk_n: int = 2
    nk_k: float = 0.90
    p_ratio: float = 0.10


@dataclass
class Context:
    thresholds: Thresholds
    released: "ReleasedIndex"
    # ACRO ``results.json`` outputs keyed by the file name they describe.
    acro: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    applies: Callable[[Inspected], bool]
    run: Callable[[Inspected, Context], list[Finding]]
    # Also run on each table shown in a notebook (its findings other than pass are kept).
    notebook_tables: bool = False


def worst(findings: list[dict] | list[Finding]) -> str:
    statuses = [f["status"] if isinstance(f, dict) else f.status for f in findings]
    return max(statuses, key=_RANK.__getitem__, default=PASS)


# -- helpers --

_INT = re.compile(r"^\s*-?\d+\s*$")
_WHOLE = re.compile(r"^\s*-?\d+\.0*\s*$")
_COUNT_HEADER = re.compile(
    r"count|^n$|^num|number|freq|total|cases|records|^obs"
    r"|人数|数量|计数|频数|频次|合计|总计|户数|例数|人次|次数|个数|件数|家数|样本量|样本数", re.I
)
_ID_HEADER = re.compile(
    r"(^|[_\s-]|[^\x00-\x7f])(id|name|phone|mobile|email|address|card)($|[_\s-]|[^\x00-\x7f])"
    r"|^(identifier|person_id|user_id)$|编号|姓名|身份证|证件号|手机|电话|邮箱|地址|卡号",
    re.I,
)
_ID_VALUE = re.compile(r"^(?=.*\d)[A-Za-z0-9-]{6,}$")


def _int_column(body: list[list[str]], c: int, whole_floats: bool = False) -> list[int | None] | None:
    """The column's values as integers (None where empty), or None if any value is not one.

    With ``whole_floats`` (a column named like counts), whole numbers written as floats are
    integers too: "3.0", as pandas writes counts in a column that also holds a missing value, or
    the count column of ``groupby(...).describe()``.
    """
    try:
        return [int(v) if (v := r[c]) else None for r in body]
    except ValueError:
        pass
    if not whole_floats or not all(not (v := r[c]) or _INT.match(v) or _WHOLE.match(v) for r in body):
        return None
    return [int(float(v)) if (v := r[c]) else None for r in body]


def _counts(f: Inspected) -> tuple[list[int], list[tuple[int, int, int]]]:
    """The table's count columns and every count cell as (data row, column, value).

    Count columns are those named like counts, or, for a cross-tabulation, every column after the
    label columns (one in a CSV file; a notebook's HTML tells how many index levels) when all of
    them hold non-negative integers.
    """
    if "counts" not in f.cache:
        header, body = f.rows[0], f.rows[1:]
        cols: dict[int, list] = {}
        for c, h in enumerate(header):
            if _COUNT_HEADER.search(h.strip()) and (values := _int_column(body, c, whole_floats=True)) is not None:
                cols[c] = values
        if not cols and body and len(header) > 1:
            for c in range(max(f.label_columns, 1), len(header)):
                values = _int_column(body, c)
                if values is None or any(v is None or v < 0 for v in values):
                    cols = {}
                    break
                cols[c] = values
        cells = [(r, c, n) for c, values in cols.items() for r, n in enumerate(values, start=1) if n is not None]
        f.cache["counts"] = (sorted(cols), cells)
    return f.cache["counts"]


def _cells_summary(cells: list[list[int]], header: list[str], limit: int = 5) -> str:
    shown = ", ".join(f"row {r} column {header[c]!r}" for r, c in cells[:limit])
    more = f" and {len(cells) - limit} more" if len(cells) > limit else ""
    return shown + more


# -- the checks --


def check_type(f: Inspected, ctx: Context) -> list[Finding]:
    if not content_matches(f):
        return [finding("type", FAIL, "check.type.mismatch", f.name, extension=f.ext, content=f.sniffed)]
    return [finding("type", PASS, "check.type.ok", extension=f.ext, content=f.sniffed)]


def check_rows(f: Inspected, ctx: Context) -> list[Finding]:
    n = len(f.rows) - 1
    cap = ctx.thresholds.max_csv_rows
    if n > cap:
        return [finding("rows", FAIL, "check.rows.over_cap", f"line {cap + 2}", rows=n, cap=cap)]
    return [finding("rows", PASS, "check.rows.ok", rows=n, cap=cap)]


def _collect(cells: list[list[int]], r: int, c: int) -> None:
    if len(cells) < MAX_CELLS:
        cells.append([r, c])


_SUMMARY_ROWS = {"count", "mean", "std", "min", "max", "25%", "50%", "75%"}


def _summary_counts(f: Inspected) -> list[tuple[int, int, int]]:
    """The count row of a summary table shaped like pandas' ``describe()``, as (data row, column, value).

    Its statistics describe as many records as that row says: fewer than the minimum is disclosive
    like a small count. (The count row is not held to rounding: it says how many values are present.)
    """
    body = f.rows[1:]
    labels = {r[0].strip() for r in body[:20] if r}
    if "count" not in labels or len(labels & _SUMMARY_ROWS) < 4 or len(body) > 20:
        return []
    cells = []
    for r, row in enumerate(body, start=1):
        if row[0].strip() == "count":
            for c, v in enumerate(row[1:], start=1):
                if _INT.match(v) or _WHOLE.match(v):
                    cells.append((r, c, int(float(v))))
    return cells


def check_small_cells(f: Inspected, ctx: Context) -> list[Finding]:
    rows, t = f.rows, ctx.thresholds
    cols, cells = _counts(f)
    if summary := _summary_counts(f):
        cols, cells = sorted({*cols, *(c for _, c, _ in summary)}), cells + summary
    if not cols:
        return [finding("small_cells", PASS, "check.small_cells.no_counts")]
    small, zeros, n_small, n_zeros, k = [], [], 0, 0, t.min_cell_count
    for r, c, n in cells:  # one plain loop: this runs over every cell of tables up to 16 MB
        if n < k:
            if n > 0:
                n_small += 1
                _collect(small, r, c)
            elif n == 0:
                n_zeros += 1
                _collect(zeros, r, c)
    out = []
    if small:
        out.append(finding("small_cells", FAIL, "check.small_cells.below_threshold",
                           _cells_summary(small, rows[0]), small, cells=n_small, minimum=t.min_cell_count))
    if zeros:
        out.append(finding("small_cells", REVIEW, "check.small_cells.zeros",
                           _cells_summary(zeros, rows[0]), zeros, cells=n_zeros))
    return out or [finding("small_cells", PASS, "check.small_cells.ok", columns=len(cols), minimum=t.min_cell_count)]


def check_rounding(f: Inspected, ctx: Context) -> list[Finding]:
    rows, base = f.rows, ctx.thresholds.round_base
    cols, cells = _counts(f)
    unrounded, n_unrounded = [], 0
    for r, c, n in cells:
        if n % base:
            n_unrounded += 1
            _collect(unrounded, r, c)
    if unrounded:
        return [finding("rounding", REVIEW, "check.rounding.unrounded",
                        _cells_summary(unrounded, rows[0]), unrounded, cells=n_unrounded, base=base)]
    if not cols:
        return [finding("rounding", PASS, "check.rounding.no_counts")]
    return [finding("rounding", PASS, "check.rounding.ok", base=base)]


def check_acro(f: Inspected, ctx: Context) -> list[Finding]:
    """Dominance (NK), p% and threshold failures that ACRO recorded for this output."""
    entry = ctx.acro.get(f.name)
    if entry is None:
        return [finding("acro", PASS, "check.acro.none")]
    out = []
    header = f.rows[0] if f.rows else []
    for check, cells in (entry.get("sdc", {}).get("cells") or {}).items():
        if not cells:
            continue
        # ACRO cell coordinates index the table body; header row and label column are not counted.
        marked = [[int(r) + 1, int(c) + 1] for r, c in cells if int(c) + 1 < max(len(header), 1)]
        where = _cells_summary(marked, header) if header else f"{len(cells)} cells"
        if check in _ACRO_FAILED:
            out.append(finding("acro", FAIL, _ACRO_FAILED[check], where, marked, cells=len(cells)))
        else:
            out.append(finding("acro", FAIL, "check.acro.other_failed", where, marked, cells=len(cells),
                               acro_check=str(check)))
    status = entry.get("status", "")
    # ACRO's summary is quoted as ACRO wrote it (in English).
    summary = (entry.get("summary") or "").strip()[:300]
    if not out and status == "review":
        out.append(finding("acro", REVIEW, "check.acro.review", summary=summary))
    if not out and status == "fail":
        out.append(finding("acro", FAIL, "check.acro.fail", summary=summary))
    return out or [finding("acro", PASS, "check.acro.ok")]


def check_microdata(f: Inspected, ctx: Context) -> list[Finding]:
    rows = f.rows
    header, body = rows[0], rows[1:]
    out = []
    # A notebook output may show only some rows of a larger frame ("..." and "60 rows × 7 columns"):
    # the rows shown are judged as a sample of the whole.
    records = max(len(body), f.total_rows or 0)
    if records >= 20 and len(body) >= 5:
        for c, h in enumerate(header):
            # A column repeating values in its first rows is no record key; only others get a full count.
            head = body[:1000]
            if len({r[c] for r in head}) < 0.9 * len(head):
                continue
            distinct = len({r[c] for r in body})
            if distinct < 0.9 * len(body):
                continue
            sample = [r[c].strip() for r in body[:200]]
            if _ID_HEADER.search(h) or all(_ID_VALUE.match(v) and not _INT.match(v) for v in sample):
                if records > len(body):
                    out.append(finding("microdata", FAIL, "check.microdata.record_level_shown", f"column {h!r}",
                                       column=h, distinct=distinct, rows=len(body), records=records))
                else:
                    out.append(finding("microdata", FAIL, "check.microdata.record_level", f"column {h!r}",
                                       column=h, distinct=distinct, rows=len(body)))
                break
    matches = ctx.released.match(header, body, ctx.thresholds.min_cell_count)
    for dataset, exact, near in matches:
        if exact:
            out.append(finding("microdata", FAIL, "check.microdata.copied_rows",
                               "rows " + ", ".join(map(str, exact[:10])), [[r, 0] for r in exact[:MAX_CELLS]],
                               rows=len(exact), dataset=dataset))
        if near:
            out.append(finding("microdata", FAIL, "check.microdata.near_rows",
                               "rows " + ", ".join(map(str, near[:10])), [[r, 0] for r in near[:MAX_CELLS]],
                               rows=len(near), dataset=dataset))
    return out or [finding("microdata", PASS, "check.microdata.ok")]


def _line_col(starts: list[int], pos: int) -> str:
    line = bisect.bisect_right(starts, pos)
    return f"line {line}, column {pos - starts[line - 1] + 1}"


def check_identifiers(f: Inspected, ctx: Context) -> list[Finding]:
    out = []
    if f.text:
        # Past the first 50 of a kind, more findings add nothing for the reviewer but time.
        found = identifiers.find(f.text, limit=51)
        if found:
            starts = [0] + [m.end() for m in re.finditer("\n", f.text)]
            for m in found[:50]:
                out.append(finding("identifiers", FAIL, f"check.identifiers.{m.kind}", _line_col(starts, m.start),
                                   value=m.masked))
            if len(found) > 50:
                out.append(finding("identifiers", FAIL, "check.identifiers.more", "whole file"))
    for frag in f.fragments:
        for m in identifiers.find(frag.text, limit=20)[:20]:
            out.append(finding("identifiers", FAIL, f"check.identifiers.{m.kind}", frag.location, value=m.masked))
    return out or [finding("identifiers", PASS, "check.identifiers.ok")]


def check_image_metadata(f: Inspected, ctx: Context) -> list[Finding]:
    out = [
        finding("metadata", REVIEW, "check.metadata.found", where, fields=", ".join(sorted(meta))[:300])
        for where, meta in f.image_metadata
    ]
    return out or [finding("metadata", PASS, "check.metadata.ok")]


def check_active_content(f: Inspected, ctx: Context) -> list[Finding]:
    out = [finding("active_content", REVIEW, "check.active_content.found", what=what) for what in f.active_content]
    if f.sniffed == "notebook":
        checked = ", ".join(c.name for c in CHECKS if c.notebook_tables)
        where = "; ".join(t.location for t in f.tables[:10]) + (" and more" if len(f.tables) > 10 else "")
        counts = {"outputs": f.notebook_outputs, "tables": len(f.tables), "checks": checked}
        if where:
            out.append(finding("notebook", PASS, "check.notebook.checked_tables", where=where, **counts))
        else:
            out.append(finding("notebook", PASS, "check.notebook.checked", **counts))
    return out or [finding("active_content", PASS, "check.active_content.ok")]


def _is_table(f: Inspected) -> bool:
    return f.rows is not None


CHECKS: list[Check] = [
    Check("type", "Allowed type, content matches the extension", lambda f: True, check_type),
    Check("rows", "Table row cap; in notebooks, every table shown", _is_table, check_rows, True),
    Check("small_cells", "Counts under the minimum, zero cells; in notebooks, every table shown", _is_table,
          check_small_cells, True),
    Check("rounding", "Unrounded counts; in notebooks, every table shown", _is_table, check_rounding, True),
    Check("acro", "ACRO results: dominance (N,K), p%, thresholds", _is_table, check_acro),
    Check("microdata", "Record-level data, rows of released datasets; in notebooks, every table shown",
          _is_table, check_microdata, True),
    Check("identifiers", "Direct identifiers anywhere in the file", lambda f: True, check_identifiers),
    Check("metadata", "Embedded image and document metadata", lambda f: True, check_image_metadata),
    Check("active_content", "Scripts, widget state; how many notebook outputs and tables were checked",
          lambda f: True, check_active_content),
]


def _findings(f: Inspected, ctx: Context):
    for check in CHECKS:
        if check.applies(f):
            yield from check.run(f, ctx)
        if check.notebook_tables:
            for table in f.tables:
                for x in check.run(table, ctx):
                    if x.status != PASS:
                        # Cells index a table file's rows; a notebook is shown rendered, so the location says it.
                        yield Finding(x.check, x.status, x.message,
                                      f"{table.location}: {x.location}" if x.location else table.location)


def run_checks(f: Inspected, ctx: Context) -> list[dict]:
    with gc_paused():
        return [
            {"check": x.check, "status": x.status, "code": x.message.code, "params": dict(x.message.params),
             "reason": x.reason, "location": x.location, "cells": x.cells}
            for x in _findings(f, ctx)
        ]


# -- ACRO results attached to a request --


def acro_outputs(files: list[Inspected]) -> dict[str, dict]:
    """ACRO ``results.json`` entries, keyed by the output file each one describes."""
    found: dict[str, dict] = {}
    for f in files:
        if f.sniffed != "json" or b'"results"' not in f.data:
            continue
        doc = json.loads(f.data)
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
            continue
        tool = doc.get("tool", {})
        if isinstance(tool, dict) and tool.get("name") not in (None, "ACRO"):
            continue
        for entry in doc["results"].values():
            if not isinstance(entry, dict):
                continue
            for fe in entry.get("files") or []:
                if isinstance(fe, dict) and "name" in fe:
                    found[fe["name"]] = {"status": entry.get("status"), "summary": entry.get("summary"),
                                         "sdc": fe.get("sdc") or {}}
    return found


# -- released datasets, for spotting copied rows --


def _norm_exact(v: str) -> str:
    return v.strip()


def _norm_near(v: str) -> str:
    s = " ".join(v.split()).casefold()
    try:
        x = float(s)
    except ValueError:
        return s
    if math.isnan(x) or math.isinf(x):
        return s
    return f"{x:.3g}"


class _ReleasedTable:
    def __init__(self, label: str, header: list[str], rows: list[list[str]]) -> None:
        self.label = label
        self.columns = {h.strip().casefold(): i for i, h in enumerate(header)}
        self.width = len(header)
        self.rows = rows
        self._cache: dict[tuple, tuple[Counter, Counter]] = {}

    def projections(self, cols: tuple[int, ...] | None) -> tuple[Counter, Counter]:
        """How many released records share each (projected) row, exactly and after normalising."""
        if cols not in self._cache:
            exact, near = Counter(), Counter()
            for row in self.rows:
                if cols is None:  # columns unnamed in the export: compare the row's values as a multiset
                    exact[tuple(sorted(_norm_exact(v) for v in row))] += 1
                    near[tuple(sorted(_norm_near(v) for v in row))] += 1
                else:
                    exact[tuple(_norm_exact(row[i]) for i in cols)] += 1
                    near[tuple(_norm_near(row[i]) for i in cols)] += 1
            self._cache[cols] = (exact, near)
        return self._cache[cols]


class ReleasedIndex:
    """The CSV tables of a workspace's released datasets (files under ``<release>/data``)."""

    def __init__(self, tables: list[_ReleasedTable]) -> None:
        self.tables = tables

    @classmethod
    def load(cls, folders: list[tuple[str, Path]]) -> "ReleasedIndex":
        tables = []
        for release, folder in folders:
            for path in sorted(folder.rglob("*.csv")) if folder.is_dir() else []:
                with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
                    rows = [r for r in csv.reader(fh)]
                if len(rows) > 1:
                    width = len(rows[0])
                    body = [r for r in rows[1:] if len(r) == width]
                    tables.append(_ReleasedTable(f"{release}/{path.relative_to(folder)}", rows[0], body))
        return cls(tables)

    def match(self, header: list[str], body: list[list[str]], k: int) -> list[tuple[str, list[int], list[int]]]:
        """Rows of ``body`` that pin down fewer than ``k`` released records: (dataset, exact rows, near rows).

        The export's columns must all be columns of the released table (by name), or, when the names
        differ, as many as the released table's. A row shared by ``k`` or more released records
        describes a group, not a record, and is not reported.
        """
        results = []
        named = [i for i, h in enumerate(header) if h.strip()]
        if 0 < len(named) < len(header):
            # Unnamed columns are row labels (pandas writes its index so): the named ones are the data.
            header = [header[i] for i in named]
            body = [[r[i] for i in named] for r in body]
        names = [h.strip().casefold() for h in header]
        for table in self.tables:
            if len(names) >= 2 and all(n in table.columns for n in names):
                cols = tuple(table.columns[n] for n in names)
                key_exact = lambda r: tuple(_norm_exact(v) for v in r)  # noqa: E731
                key_near = lambda r: tuple(_norm_near(v) for v in r)  # noqa: E731
            elif len(names) == table.width and len(names) >= 2:
                cols = None
                key_exact = lambda r: tuple(sorted(_norm_exact(v) for v in r))  # noqa: E731
                key_near = lambda r: tuple(sorted(_norm_near(v) for v in r))  # noqa: E731
            else:
                continue
            exact_counts, near_counts = table.projections(cols)
            exact, near = [], []
            for i, row in enumerate(body, start=1):
                n = exact_counts.get(key_exact(row), 0)
                if 0 < n < k:
                    exact.append(i)
                    continue
                n = near_counts.get(key_near(row), 0)
                if 0 < n < k:
                    near.append(i)
            if exact or near:
                results.append((table.label, exact, near))
        return results
