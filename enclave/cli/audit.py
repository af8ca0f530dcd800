"""``enclave audit``: verify, export, query the audit log, prove a record's inclusion, trace a
released file back to its data and code, and report on a workspace over a period.

``query`` and ``export`` ask the audit service, on its root-only query socket
(:mod:`enclave.audit.query_client`, standard library only), so that they answer within issue #13's
budget; when it does not run (no hub), they start it for the while, as a change's records do
(:func:`enclave.audit.client.audit_service`). ``verify``, ``prove``, ``trace`` and ``report`` read
the database directly and read-only. Records are only ever written by the audit service. Imports
are deferred into the commands, so that ``enclave`` starts fast.

Errors are messages with stable codes (``audit.no_log``), in the user's locale
(:mod:`enclave.cli.language`); the assessment report is written in it too, or in ``--language``.
"""

from __future__ import annotations

import io
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from ..i18n import N_
from . import main, pass_ctx
from .language import CommandError, command_locale, refusal

TABLE_COLUMNS = ("seq", "time", "actor", "action", "outcome", "workspace", "sandbox", "detail")


def _reader(settings):
    from ..audit import models
    from ..audit.reader import AuditReader, NoAuditLog

    try:
        return AuditReader(settings)
    except NoAuditLog:  # its only cause: the SQLite database the settings name does not exist yet
        raise refusal("audit.no_log", N_("no audit log at %(path)s: the audit service has not run with these settings"),
                      path=str(models.sqlite_path(settings.audit_db_url))) from None


def _public_key(settings, path: Path | None):
    from ..audit.checkpoints import key_paths, load_public_key

    path = path or key_paths(settings)[1]
    try:
        return load_public_key(path)
    except FileNotFoundError:
        raise refusal("audit.no_public_key", N_("no audit public key at %(path)s: give --public-key"),
                      path=str(path)) from None
    except ValueError as exc:
        raise refusal("audit.bad_public_key", N_("the audit public key cannot be used: %(reason)s"),
                      reason=str(exc)) from None


def _bad_query(fn, *args, **kwargs):
    from ..audit.reader import BadQuery

    try:
        return fn(*args, **kwargs)
    except BadQuery as exc:
        message = getattr(exc, "message", None)  # the report's refusals carry theirs (report.BadPeriod)
        if message is not None:
            raise CommandError(message) from None
        raise refusal("audit.bad_query", N_("the audit log cannot be read so: %(reason)s"), reason=str(exc)) from None


@contextmanager
def _utf8_stdout():
    """Records keep Chinese text as it is: standard output as UTF-8, whatever the locale says."""
    sys.stdout.flush()
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n")
    try:
        yield out
    finally:
        out.flush()
        out.detach()  # leave sys.stdout open


@main.group()
def audit() -> None:
    """The audit log: verify, export, query, prove a record is in it; trace a file; report on a workspace."""


@audit.command("verify")
@click.option("--jsonl", "jsonl", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Verify this JSON Lines export instead of the database.")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The audit public key (PEM); default: the one next to the signing key.")
@click.option("--checkpoints", "checkpoint_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --jsonl: checkpoints (JSON Lines) to check the export against as well,"
                   " e.g. a copy of $ENCLAVE_HOME/audit/checkpoints.jsonl.")
@pass_ctx
def verify(ctx, jsonl: Path | None, public_key: Path | None, checkpoint_file: Path | None) -> None:
    """Recompute the hash chain and Merkle roots and check every checkpoint's signature.

    Exits 0 only when everything verifies; otherwise names the first bad record and exits 1.
    """
    from ..audit import checkpoints
    from ..audit.verify import verify_database, verify_export

    if jsonl is not None:
        public = _public_key(ctx.settings, public_key)
        extra, unreadable = checkpoints.read_copy(checkpoint_file) if checkpoint_file else ([], [])
        if unreadable:
            raise refusal("audit.bad_checkpoints", N_("the checkpoints cannot be read: %(problems)s"),
                          problems="; ".join(unreadable))
        report = verify_export(jsonl, public, extra)
        what = str(jsonl)
    else:
        reader = _reader(ctx.settings)
        try:
            public = _public_key(ctx.settings, public_key)
            report = verify_database(reader, public)
        finally:
            reader.close()
        what = "the audit log"
    key = checkpoints.key_id(public)
    if report.ok:
        last = report.first_seq + report.records - 1
        span = f"records {report.first_seq}..{last}" if report.records else "no records"
        click.echo(f"OK: {what}: {span}, {report.checkpoints} checkpoint(s) signed by key {key}")
        for note in report.notes:
            click.echo(f"  note: {note}")
        return
    first = report.first_bad_record
    click.echo(f"FAILED: {what}" + (f": the first bad record is {first}" if first is not None else ""), err=True)
    for problem in report.problems:
        click.echo(f"  {problem}", err=True)
    raise SystemExit(1)


@contextmanager
def _audit_queries(ctx):
    """The audit service's read API (:class:`~enclave.audit.query_client.AuditQueries`): the
    running service's, else one started for the while (the slow path: it loads the settings)."""
    from ..audit import query_client

    try:
        queries = query_client.AuditQueries()
    except query_client.ServiceNotRunning:
        queries = None
    except query_client.QueryError as exc:
        raise refusal("audit.service_unreachable", N_("the audit service cannot be asked: %(reason)s"),
                      reason=str(exc)) from None
    if queries is not None:
        with queries:
            yield queries
        return

    from ..audit.client import AuditError, audit_service

    _reader(ctx.settings).close()  # no log yet: say so, rather than start a service that makes one
    try:
        with audit_service(ctx.settings), query_client.AuditQueries(ctx.settings.home) as queries:
            yield queries
    except (AuditError, query_client.ServiceNotRunning) as exc:
        raise refusal("audit.service_unavailable", N_("the audit service cannot be started to read the log: %(reason)s"),
                      reason=str(exc)) from None


def _refused(fn, *args, **kwargs):
    """``fn``'s answer; the audit service's refusal as the command's error."""
    from ..audit.query_client import QueryError

    try:
        return fn(*args, **kwargs)
    except QueryError as exc:
        raise refusal("audit.query_refused", N_("the audit service refused the query: %(reason)s"),
                      reason=str(exc)) from None


@audit.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option("--since", help="From this time (ISO 8601; UTC unless it says).")
@click.option("--until", help="Before this time.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Default: standard output.")
@pass_ctx
def export(ctx, fmt: str, since: str | None, until: str | None, output: Path | None) -> None:
    """Write the log as JSON Lines (for a SIEM): records, their chain hashes and the checkpoints.

    The export verifies on its own: enclave audit verify --jsonl FILE.
    """
    with _audit_queries(ctx) as queries:
        if output is None:
            sys.stdout.flush()
            _refused(queries.export, sys.stdout.buffer, since=since, until=until)
            sys.stdout.buffer.flush()
            return
        try:
            with output.open("wb") as out:
                count = _refused(queries.export, out, since=since, until=until)
        except BaseException:
            output.unlink(missing_ok=True)  # never leave part of an export looking like all of it
            raise
    click.echo(f"exported {count} record(s) to {output}", err=True)


@audit.command("query")
@click.option("--user", help="The actor.")
@click.option("--workspace")
@click.option("--action", help="An action, or a prefix ending in .* (export.*).")
@click.option("--since", help="From this time (ISO 8601; UTC unless it says).")
@click.option("--until", help="Before this time.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many records (default: all).")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "csv"]), default="table", show_default=True)
@pass_ctx
def query(ctx, user, workspace, action, since, until, limit, fmt) -> None:
    """Records matching every filter given, oldest first."""
    with _audit_queries(ctx) as queries, _utf8_stdout() as out:
        _query_pages(queries, out, fmt, limit, user=user, workspace=workspace, action=action, since=since,
                     until=until)


def _query_pages(queries, out, fmt: str, limit: int | None, **filters) -> None:
    from ..audit.query_client import PAGE

    write = None  # the header waits for the first page: a refused query prints its error alone
    after, left = None, limit
    while left is None or left > 0:
        page = _refused(queries.records, **filters, after=after, limit=min(PAGE, left or PAGE))
        write = write or {"table": _table_writer, "jsonl": _jsonl_writer, "csv": _csv_writer}[fmt](out)
        for record in page["records"]:
            write(record)
        if left is not None:
            left -= len(page["records"])
        after = page["next"]
        if after is None:
            return


def _jsonl_writer(out):
    return lambda record: out.write(json.dumps(record, ensure_ascii=False) + "\n")


def _csv_writer(out):
    import csv

    writer = csv.writer(out)
    writer.writerow(("seq", "time", "source", "actor", "action", "outcome", "workspace", "sandbox", "detail"))
    return lambda r: writer.writerow((r["seq"], r["time"], r["source"], r["actor"], r["action"], r["outcome"],
                                      r["workspace"] or "", r["sandbox"] or "",
                                      json.dumps(r["detail"], ensure_ascii=False, sort_keys=True)))


def _table_writer(out):
    widths = {"seq": 7, "time": 27, "actor": 14, "action": 24, "outcome": 7, "workspace": 12, "sandbox": 16}
    out.write("  ".join(_pad(c, widths.get(c, 0)) for c in TABLE_COLUMNS).rstrip() + "\n")

    def row(r):
        cells = {**r, "detail": json.dumps(r["detail"], ensure_ascii=False, sort_keys=True)}
        cells = {c: "" if cells[c] is None else str(cells[c]) for c in TABLE_COLUMNS}
        cells["detail"] = _clip(cells["detail"].replace("\n", "\\n"), 80)
        out.write("  ".join(_pad(cells[c], widths.get(c, 0)) for c in TABLE_COLUMNS).rstrip() + "\n")

    return row


def _width(text: str) -> int:
    """Terminal columns: Chinese characters take two."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _clip(text: str, width: int) -> str:
    if _width(text) <= width:
        return text
    text = text[:width - 1]
    while _width(text) > width - 1:
        text = text[:-1]
    return text + "…"


def _pad(text: str, width: int) -> str:
    text = _clip(text, width) if width else text
    return text + " " * max(0, width - _width(text))


@audit.command("prove")
@click.argument("seq", type=click.IntRange(min=1))
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The audit public key (PEM) to check the proof with; default: the one next to the signing key.")
@pass_ctx
def prove(ctx, seq: int, public_key: Path | None) -> None:
    """Print an inclusion proof of record SEQ against the newest checkpoint (JSON).

    The proof shows the record is in the signed log without showing any other record: hand it to
    whoever needs that (a data holder, an assessor) together with the audit public key.
    """
    from ..audit.verify import check_inclusion

    public = _public_key(ctx.settings, public_key)
    reader = _reader(ctx.settings)
    try:
        proof = _bad_query(reader.prove, seq)
    finally:
        reader.close()
    problem = check_inclusion(proof, public)
    if problem:
        raise refusal("audit.proof_invalid", N_("the proof does not verify: %(problem)s; run 'enclave audit verify'"),
                      problem=problem)
    with _utf8_stdout() as out:
        out.write(json.dumps(proof, ensure_ascii=False, indent=2) + "\n")
    click.echo(f"record {seq} is in the log signed at {proof['checkpoint']['time']}"
               f" (tree size {proof['tree_size']}); proof verified", err=True)


@audit.command("trace")
@click.argument("target", metavar="FILE|SHA256")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
def trace(ctx, target: str, fmt: str) -> None:
    """Walk from a released file back to the data and code behind it, citing audit records by seq.

    FILE is a released file or a copy of one (found by its SHA-256, or by the watermark it carries
    if it was changed); SHA256 is the hash of one. The walk: the release and its downloads, the
    export request with its checks, votes and decision, the executions that wrote the file, the
    sandbox session they ran in with its policy, and the releases and columns it had under /data.
    Exits 0 for a released file, 1 for one never released.
    """
    from ..audit import trace as tracing

    path = Path(target)
    if path.is_file():
        data, digest = path.read_bytes(), None
    elif tracing.SHA256.match(target):
        data, digest = None, target
    else:
        raise refusal("audit.trace_target", N_("%(target)s: no such file, and not a SHA-256 (64 hexadecimal digits)"),
                      target=target)
    reader = _reader(ctx.settings)
    try:
        result = _bad_query(tracing.trace, ctx.settings, reader, data=data, digest=digest)
    except (tracing.NoReviewDatabase, FileNotFoundError) as exc:
        raise refusal("audit.nothing_released", N_("%(reason)s: nothing was released here"), reason=str(exc)) from None
    finally:
        reader.close()
    with _utf8_stdout() as out:
        out.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n" if fmt == "json"
                  else tracing.render_text(result))
    raise SystemExit(0 if result["released"] else 1)


@audit.command("report")
@click.argument("workspace")
@click.option("--since", required=True, help="From this time (ISO 8601 date or time; UTC unless it says).")
@click.option("--until", required=True, help="Before this time.")
@click.option("--format", "fmt", type=click.Choice(["html", "json"]), default="html", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Default: standard output.")
@click.option("--language", type=click.Choice(["zh_CN", "en"]),
              help="The report's language; default: the locale's (LANG, LC_ALL, LANGUAGE), else English.")
@pass_ctx
def report(ctx, workspace: str, since: str, until: str, fmt: str, output: Path | None, language: str | None) -> None:
    """The assessment report of WORKSPACE over [since, until): requests and their outcomes, checks,
    egress, downloads, operators' sessions and executions, data supplied versus used.

    HTML (one self-contained page with figures) or JSON, with the same numbers; every number is a
    count of audit records, and the report says which. Its words, dates and numbers are in the
    user's language (the JSON's keys and codes are the same in every language).
    """
    from ..audit import report as reporting

    locale = language or command_locale()
    reader = _reader(ctx.settings)
    try:
        numbers = _bad_query(reporting.build, reader, workspace, since, until, locale)
    finally:
        reader.close()
    text = (json.dumps(numbers, ensure_ascii=False, indent=2) + "\n" if fmt == "json"
            else reporting.render_html(numbers))
    if output:
        output.write_text(text, encoding="utf-8")
        click.echo(_translated(locale, N_("wrote the %(format)s report of %(workspace)s to %(path)s"),
                               format=fmt.upper(), workspace=workspace, path=str(output)), err=True)
        return
    with _utf8_stdout() as out:
        out.write(text)


def _translated(locale: str, text: str, **params) -> str:
    """``text``, marked with :func:`N_`, in ``locale`` with its placeholders filled."""
    from ..i18n import translations

    return translations(locale).gettext(text) % params


@audit.command("actions-doc")
@click.option("--check", is_flag=True, help="Exit 1 if docs/audit.md differs from the generated page.")
def actions_doc(check: bool) -> None:
    """Write docs/audit.md from the table of actions (enclave/audit/actions.py)."""
    from ..audit import docs

    if check:
        if not docs.DOC_PATH.exists() or docs.DOC_PATH.read_text(encoding="utf-8") != docs.render():
            raise refusal("audit.doc_outdated", N_("%(path)s is out of date: run 'enclave audit actions-doc'"),
                          path=str(docs.DOC_PATH))
        click.echo(f"{docs.DOC_PATH} is up to date")
        return
    docs.DOC_PATH.write_text(docs.render(), encoding="utf-8")
    click.echo(f"wrote {docs.DOC_PATH}")
