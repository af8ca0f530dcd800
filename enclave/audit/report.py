"""The assessment report of one workspace over one period (考核评估), from the audit log alone.

Every number is a count of audit records of the workspace with ``since <= time < until`` (UTC),
and the report says which records each one counts (:data:`DEFINITIONS`, shown with the numbers in
both forms): the same dictionary is the JSON form and the data the HTML form is rendered from, so
the two cannot disagree. Figures are bar charts drawn as inline SVG by the template: the numbers of
their geometry are computed here, the markup is the template's, and the text in them (operator
names, release names) is rendered by the reader's browser with its own fonts, Chinese included.

The report is in one language, chosen when it is built (``locale``: the page's reader's, or the
command's user's): what each number counts in it, and the HTML's headings, figures, dates, numbers
and sizes. Its keys and codes are the same in every language, so that its numbers can be compared.

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
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path

from .. import i18n
from ..i18n import N_
from .reader import AuditReader, BadQuery
from .records import BadRecord, parse_time, timestamp
from .trace import attachments_at, cite, columns_of, data_mounts, each_record

TEMPLATES = Path(__file__).parent / "templates"

# What each number counts: shown beside the numbers, in the HTML and the JSON, in the report's language.
DEFINITIONS = {
    "requests": N_("export requests submitted (export.request records)"),
    "approved": N_("requests approved (export.decision records with decision 'approved')"),
    "rejected": N_("requests rejected (export.decision 'rejected'), with the reviewer's reason"),
    "returned": N_("requests returned to the requester for changes (export.decision 'returned')"),
    "withdrawn": N_("requests withdrawn by the requester (export.decision 'withdrawn')"),
    "check_failures": N_("files whose automated checks failed (export.check records with status 'fail')"),
    "files_released": N_("files released with a signed manifest (export.release records)"),
    "downloads": N_("released files downloaded (export.download records)"),
    "revocations": N_("releases revoked (export.revoke records)"),
    "egress_notices": N_("egress budget notices: output held back or cut (egress.notice records)"),
    "active_operators": N_("users with a sandbox session, an execution, a terminal line or an export request"),
    "sessions": N_("sandbox sessions started (sandbox.start records)"),
    "executions": N_("code cells sent to a kernel (kernel.execute records)"),
    "terminal_lines": N_("lines typed in a terminal (terminal.input records)"),
    "supplied": N_("releases attached at any time in the period, replayed from workspace.attach and"
                   " workspace.detach records up to the period's end"),
    "mounted": N_("releases under /data in the policy of a session started in the period"),
    "read_in_code": N_("releases whose path /data/<release> appears in an execution's code or a terminal line"
                       " (a lower bound on reads: code that builds the path is not counted)"),
    "columns_named": N_("executions whose code names the column as a whole word (columns of releases attached"
                        " with only some columns)"),
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


class BadPeriod(BadQuery):
    """A period no report can cover; ``message`` says why (a code, and the text in any language)."""

    def __init__(self, message: i18n.Message) -> None:
        super().__init__(str(message))
        self.message = message


def _moment(text: str) -> datetime:
    try:
        return parse_time(text)
    except BadRecord:
        raise BadPeriod(i18n.Message("audit.report.bad_time", N_(
            "%(value)s is not an ISO 8601 date or time (e.g. 2026-03-01 or 2026-03-01T08:00:00Z)"),
            {"value": repr(text)})) from None


def build(reader: AuditReader, workspace: str, since: str, until: str, locale: str = i18n.SOURCE_LOCALE) -> dict:
    """The report's numbers, with the records they come from cited by seq, and what each counts
    (:data:`DEFINITIONS`) in ``locale``."""
    start, end = _moment(since), _moment(until)
    if start >= end:
        raise BadPeriod(i18n.Message("audit.report.empty_period",
                                     N_("the period is empty: --since must be before --until")))
    gettext = i18n.translations(locale).gettext
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
        "locale": locale,
        "records": {"count": len(period), "first_seq": period[0]["seq"] if period else None,
                    "last_seq": period[-1]["seq"] if period else None},
        "counts": counts,
        "definitions": {key: gettext(text) for key, text in DEFINITIONS.items()},
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


def bar_chart(title: str, series: list[str], rows: list[tuple[str, str, list[int]]]) -> dict:
    """A horizontal bar chart's geometry (numbers only; ``templates/charts.html`` draws it). ``rows``:
    each row's key (the same in every language), its label and its values, one per series."""
    c = CHART
    top = max((v for _, _, values in rows for v in values), default=0) or 1
    y, drawn = c["legend"], []
    for key, label, values in rows:
        bars = [{"value": v, "color": PALETTE[i], "y": y + i * c["bar_height"],
                 "width": round(c["bar_width"] * v / top, 1)} for i, v in enumerate(values)]
        drawn.append({"key": key, "label": label, "y": y, "height": len(values) * c["bar_height"], "bars": bars})
        y += len(values) * c["bar_height"] + c["row_gap"]
    return {"title": title, "series": [{"name": s, "color": PALETTE[i]} for i, s in enumerate(series)],
            "rows": drawn, "layout": c, "width": c["label_width"] + c["bar_width"] + c["value_width"], "height": y}


# The first figure's rows: the report's numbers of requests and what became of them, in words.
OUTCOME_ROWS = {"requests": N_("requests"), "approved": N_("approved"), "rejected": N_("rejected"),
                "returned": N_("returned"), "withdrawn": N_("withdrawn"), "check_failures": N_("check failures"),
                "files_released": N_("files released"), "downloads": N_("downloads"),
                "egress_notices": N_("egress notices")}


def charts(report: dict) -> list[dict]:
    """The report's figures, from its numbers, with their words in the report's language."""
    _ = i18n.translations(report["locale"]).gettext
    n = report["counts"]
    figures = [bar_chart(_("Export requests and their outcomes"), [_("records")],
                         [(key, _(words), [n[key]]) for key, words in OUTCOME_ROWS.items()])]
    if report["operators"]:
        figures.append(bar_chart(_("Sessions and executions per operator"), [_("sessions"), _("executions")],
                                 [(o["user"], o["user"], [o["sessions"], o["executions"]])
                                  for o in report["operators"]]))
    if report["data"]:
        figures.append(bar_chart(_("Data supplied versus used, per release"),
                                 [_("sessions mounting it"), _("executions reading it")],
                                 [(d["release"], d["release"] if d["supplied"]
                                   else _("%(release)s (not supplied)") % {"release": d["release"]},
                                   [d["sessions_mounting"], d["executions_reading"]]) for d in report["data"]]))
    if report["executions_per_day"]:
        locale = report["locale"]
        figures.append(bar_chart(_("Executions per day (UTC)"), [_("executions")],
                                 [(day, _day(day, locale), [v]) for day, v in report["executions_per_day"].items()]))
    return figures


def _day(day: str, locale: str) -> str:
    """A day (``2026-03-01``) as the locale writes a date: ``Mar 1, 2026``, ``2026年3月1日``."""
    from babel.dates import format_date

    return format_date(date.fromisoformat(day), "medium", locale=locale)


@lru_cache(maxsize=len(i18n.LOCALES))
def page_environment(locale: str = i18n.SOURCE_LOCALE):
    """Jinja2 for the audit service's pages and the report in ``locale``: autoescaped, templates
    beside this module, the translations and the locale's formatters installed (:func:`enclave.i18n.install`)."""
    from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape

    return i18n.environment(locale, loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                            undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_html(report: dict, nonce: str | None = None, links: dict | None = None, user: str = "") -> str:
    """The report as one self-contained HTML page (UTF-8; styles inline, with ``nonce`` when served),
    in the report's language (:func:`build`'s ``locale``).

    ``links``: where the audit service's page links to (``records``, ``these_records``: the period's
    records of the workspace, ``json``: this report as JSON); none in a file. ``user``: who is
    looking, when served.
    """
    locale = report["locale"]
    return page_environment(locale).get_template("report.html").render(
        report=report, charts=charts(report), nonce=nonce, links=links or {}, user=user)
