"""The assessment report of one workspace over one period (考核评估), from the audit log alone.

Every number is a count of audit records of the workspace with ``since <= time < until`` (UTC),
and the report says which records each one counts (:data:`DEFINITIONS`, shown with the numbers in
both forms): the same dictionary is the JSON form and the data the HTML form is rendered from, so
the two cannot disagree. Figures are bar charts drawn as inline SVG by the template: the numbers of
their geometry are computed here, the markup is the template's, and the text in them (operator
names, release names) is rendered by the reader's browser with its own fonts, Chinese included.

**Data supplied versus used.** *Supplied*: the releases (and columns) attached to the workspace at
any time in the period, replayed from its ``workspace.attach`` and ``workspace.detach`` records up to
``until``. *Used* is counted two ways, neither of which proves more than it says:

- *mounted*: the release is under ``/data`` in the policy of a ``sandbox.start`` record of the
  period, i.e. a session could read it;
- *read in code*: its path, ``/data/<release>``, appears in the code of a ``kernel.execute`` record
  or the text of a ``terminal.input`` record of the period. Code that builds the path (``"/data/" +
  name``) or lists ``/data`` is not counted, and a path in a comment is; it is a trace of intent to
  read, the strongest the log holds, as kernels' file reads are not recorded.

For releases attached with only some columns, each column also gets the number of executions whose
code names it as a whole word (``df["age"]``, ``df.age``): a column supplied and never named is a
candidate to withdraw under the minimum-necessary rule.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from .reader import AuditReader, BadQuery
from .records import parse_time, timestamp
from .trace import attachments_at, cite, columns_of, data_mounts, each_record

TEMPLATES = Path(__file__).parent / "templates"

# What each number counts: shown beside the numbers, in the HTML and the JSON.
DEFINITIONS = {
    "requests": "export requests submitted (export.request records)",
    "approved": "requests approved (export.decision records with decision 'approved')",
    "rejected": "requests rejected (export.decision 'rejected'), with the reviewer's reason",
    "returned": "requests returned to the requester for changes (export.decision 'returned')",
    "withdrawn": "requests withdrawn by the requester (export.decision 'withdrawn')",
    "check_failures": "files whose automated checks failed (export.check records with status 'fail')",
    "files_released": "files released with a signed manifest (export.release records)",
    "downloads": "released files downloaded (export.download records)",
    "revocations": "releases revoked (export.revoke records)",
    "egress_notices": "egress budget notices: output held back or cut (egress.notice records)",
    "active_operators": "users with a sandbox session, an execution, a terminal line or an export request",
    "sessions": "sandbox sessions started (sandbox.start records)",
    "executions": "code cells sent to a kernel (kernel.execute records)",
    "terminal_lines": "lines typed in a terminal (terminal.input records)",
    "supplied": "releases attached at any time in the period, replayed from workspace.attach and"
                " workspace.detach records up to the period's end",
    "mounted": "releases under /data in the policy of a session started in the period",
    "read_in_code": "releases whose path /data/<release> appears in an execution's code or a terminal line"
                    " (a lower bound on reads: code that builds the path is not counted)",
    "columns_named": "executions whose code names the column as a whole word (columns of releases attached"
                     " with only some columns)",
}
# The decisions a request can get (export.decision), and those listed with their reasons.
DECISIONS = ("approved", "rejected", "returned", "withdrawn")
EXPLAINED_DECISIONS = ("rejected", "returned", "withdrawn")
# Actions whose actor is an operator at work in the workspace.
OPERATOR_ACTIONS = {"sandbox.start": "sessions", "kernel.execute": "executions", "terminal.input": "terminal_lines",
                    "export.request": "requests"}
# A release path in code: /data/<name>[@version], as enclave.releases names them.
DATA_PATH = re.compile(r"/data/([a-z0-9][a-z0-9_.-]*(?:@[A-Za-z0-9][A-Za-z0-9_.-]*)?)")
# The figures' colours, one per series, and their layout in pixels.
PALETTE = ("#2456a6", "#d98c1f", "#2e7d32")
CHART = {"label_width": 190, "bar_width": 380, "bar_height": 16, "row_gap": 8, "value_width": 60, "legend": 28}


def build(reader: AuditReader, workspace: str, since: str, until: str) -> dict:
    """The report's numbers, with the records they come from cited by seq."""
    try:
        start, end = parse_time(since), parse_time(until)
    except ValueError as exc:
        raise BadQuery(str(exc)) from None
    if start >= end:
        raise BadQuery("the period is empty: --since must be before --until")
    period = list(each_record(reader, workspace=workspace, since=since, until=until))
    grants = list(each_record(reader, workspace=workspace, action="workspace.*", until=until))
    of = defaultdict(list)
    for r in period:
        of[r["action"]].append(r)

    decisions = Counter(r["detail"]["decision"] for r in of["export.decision"])
    counts = {
        "requests": len(of["export.request"]),
        **{d: decisions[d] for d in DECISIONS},
        "check_failures": sum(r["detail"]["status"] == "fail" for r in of["export.check"]),
        "files_released": len(of["export.release"]),
        "downloads": len(of["export.download"]),
        "revocations": len(of["export.revoke"]),
        "egress_notices": len(of["egress.notice"]),
        "sessions": len(of["sandbox.start"]),
        "executions": len(of["kernel.execute"]),
        "terminal_lines": len(of["terminal.input"]),
    }
    operators = _operators(of)
    counts["active_operators"] = len(operators)
    data = _data(of, grants, start)
    counts.update(supplied=sum(d["supplied"] for d in data),
                  mounted=sum(d["supplied"] and d["sessions_mounting"] > 0 for d in data),
                  read_in_code=sum(d["supplied"] and d["executions_reading"] > 0 for d in data))
    return {
        "workspace": workspace,
        "period": {"since": timestamp(start), "until": timestamp(end)},
        "generated_at": timestamp(datetime.now(UTC)),
        "records": {"count": len(period), "first_seq": period[0]["seq"] if period else None,
                    "last_seq": period[-1]["seq"] if period else None},
        "counts": counts,
        "definitions": DEFINITIONS,
        "requests": [{**cite(r), "request_id": r["detail"]["request_id"], "title": r["detail"].get("title"),
                      "files": len(r["detail"]["files"])} for r in of["export.request"]],
        "decisions": [{**cite(r), "request_id": r["detail"]["request_id"], "decision": r["detail"]["decision"],
                       "reason": r["detail"].get("reason")}
                      for r in of["export.decision"] if r["detail"]["decision"] in EXPLAINED_DECISIONS],
        "check_failures": [{**cite(r), "request_id": r["detail"]["request_id"], "file": r["detail"]["file"],
                            "checks": _failed_checks(r["detail"].get("checks"))}
                           for r in of["export.check"] if r["detail"]["status"] == "fail"],
        "egress_notices": [{**cite(r), "channel": r["detail"]["channel"], "used": r["detail"]["used"],
                            "budget": r["detail"]["budget"], "reason": r["detail"].get("reason")}
                           for r in of["egress.notice"]],
        "downloads": [{**cite(r), "request_id": r["detail"]["request_id"], "release_id": r["detail"]["release_id"],
                       "file": r["detail"].get("file")} for r in of["export.download"]],
        "revocations": [{**cite(r), "request_id": r["detail"]["request_id"], "release_id": r["detail"]["release_id"],
                         "reason": r["detail"]["reason"]} for r in of["export.revoke"]],
        "operators": operators,
        "executions_per_day": dict(sorted(Counter(r["time"][:10] for r in of["kernel.execute"]).items())),
        "data": data,
    }


def _failed_checks(checks) -> list[str]:
    return [c.get("check", "?") for c in checks or [] if isinstance(c, dict) and c.get("status") == "fail"]


def _operators(of: dict) -> list[dict]:
    """Per active operator: sessions, executions, terminal lines, requests and egress notices."""
    rows: dict[str, Counter] = defaultdict(Counter)
    for action, column in OPERATOR_ACTIONS.items():
        for r in of[action]:
            rows[r["actor"]][column] += 1
    for r in of["egress.notice"]:
        if r["actor"] in rows:
            rows[r["actor"]]["egress_notices"] += 1
    columns = (*OPERATOR_ACTIONS.values(), "egress_notices")
    return [{"user": user, **{c: rows[user][c] for c in columns}} for user in sorted(rows)]


def _data(of: dict, grants: list[dict], start: datetime) -> list[dict]:
    """Per release: supplied in the period (and how), mounted in its sessions, read in its code."""
    supplied = _supplied(grants, start)
    mounting, reading, readers = Counter(), Counter(), defaultdict(set)
    for r in of["sandbox.start"]:
        for release in {m["release"] for m in data_mounts(r["detail"]["policy"])}:
            mounting[release] += 1
    texts = [(r, r["detail"]["code"]) for r in of["kernel.execute"]]
    texts += [(r, r["detail"]["text"]) for r in of["terminal.input"]]
    for r, text in texts:
        for release in {m.rstrip(".") for m in DATA_PATH.findall(text)}:
            reading[release] += 1
            readers[release].add(r["actor"])
    codes = [r["detail"]["code"] for r in of["kernel.execute"]]
    rows = []
    for release in sorted(set(supplied) | set(mounting) | set(reading)):
        grant = supplied.get(release)
        columns = grant["columns"] if grant else None
        rows.append({
            "release": release,
            "supplied": grant is not None,
            "columns": columns,
            "attach_records": grant["attach_records"] if grant else [],
            "detach_record": grant["detach_record"] if grant else None,
            "sessions_mounting": mounting[release],
            "executions_reading": reading[release],
            "operators_reading": sorted(readers[release]),
            "columns_named": {c: _naming(codes, c) for c in columns} if columns else None,
        })
    return rows


def _supplied(grants: list[dict], start: datetime) -> dict[str, dict]:
    """Releases attached at some time in the period: in force at its start, or attached during it."""
    at_start = attachments_at([g for g in grants if parse_time(g["time"]) < start])
    supplied = {release: {"columns": a["columns"], "attach_records": [a["record"]], "detach_record": None}
                for release, a in at_start.items()}
    for g in grants:
        if parse_time(g["time"]) < start or g["outcome"] != "ok":
            continue
        release = g["detail"].get("release")
        if g["action"] == "workspace.attach":
            entry = supplied.setdefault(release, {"columns": None, "attach_records": [], "detach_record": None})
            entry["attach_records"].append(cite(g))
            entry["columns"] = columns_of(g["detail"].get("columns"))
            entry["detach_record"] = None
        elif g["action"] == "workspace.detach" and release in supplied:
            supplied[release]["detach_record"] = cite(g)
    return supplied


def _naming(codes: list[str], column: str) -> int:
    """Executions whose code names ``column`` (``table.col`` or ``col``) as a whole word."""
    word = re.compile(rf"(?<!\w){re.escape(column.rsplit('.', 1)[-1])}(?!\w)")
    return sum(bool(word.search(code)) for code in codes)


# -- the HTML form --


def bar_chart(title: str, series: list[str], rows: list[tuple[str, list[int]]]) -> dict:
    """A horizontal bar chart's geometry (numbers only; ``templates/charts.html`` draws it)."""
    c = CHART
    top = max((v for _, values in rows for v in values), default=0) or 1
    y, drawn = c["legend"], []
    for label, values in rows:
        bars = [{"value": v, "color": PALETTE[i], "y": y + i * c["bar_height"],
                 "width": round(c["bar_width"] * v / top, 1)} for i, v in enumerate(values)]
        drawn.append({"label": label, "y": y, "height": len(values) * c["bar_height"], "bars": bars})
        y += len(values) * c["bar_height"] + c["row_gap"]
    return {"title": title, "series": [{"name": s, "color": PALETTE[i]} for i, s in enumerate(series)],
            "rows": drawn, "layout": c, "width": c["label_width"] + c["bar_width"] + c["value_width"], "height": y}


def charts(report: dict) -> list[dict]:
    """The report's figures, from its numbers."""
    n = report["counts"]
    outcomes = [("requests", n["requests"]), ("approved", n["approved"]), ("rejected", n["rejected"]),
                ("returned", n["returned"]), ("withdrawn", n["withdrawn"]), ("check failures", n["check_failures"]),
                ("files released", n["files_released"]), ("downloads", n["downloads"]),
                ("egress notices", n["egress_notices"])]
    figures = [bar_chart("Export requests and their outcomes", ["records"], [(k, [v]) for k, v in outcomes])]
    if report["operators"]:
        figures.append(bar_chart("Sessions and executions per operator", ["sessions", "executions"],
                                 [(o["user"], [o["sessions"], o["executions"]]) for o in report["operators"]]))
    if report["data"]:
        figures.append(bar_chart("Data supplied versus used, per release", ["sessions mounting it",
                                                                          "executions reading it"],
                                 [(d["release"] + ("" if d["supplied"] else " (not supplied)"),
                                   [d["sessions_mounting"], d["executions_reading"]]) for d in report["data"]]))
    if report["executions_per_day"]:
        figures.append(bar_chart("Executions per day (UTC)", ["executions"],
                                 [(day, [v]) for day, v in report["executions_per_day"].items()]))
    return figures


@lru_cache(maxsize=1)
def page_environment():
    """Jinja2 for the audit service's pages and the report: autoescaped, templates beside this module."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_html(report: dict, nonce: str | None = None, links: dict | None = None, user: str = "") -> str:
    """The report as one self-contained HTML page (UTF-8; styles inline, with ``nonce`` when served).

    ``links``: where the audit service's page links to (``records``, ``these_records``: the period's
    records of the workspace, ``json``: this report as JSON); none in a file. ``user``: who is
    looking, when served.
    """
    return page_environment().get_template("report.html").render(
        report=report, charts=charts(report), nonce=nonce, links=links or {}, user=user)
