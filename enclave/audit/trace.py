"""``enclave audit trace``: from a released file, or a leaked copy of one, back to the data and code
behind it (数据传输溯源).

The walk, each step citing the audit records it rests on by ``seq``:

1. **The file.** Found in the review service's database as ``enclave exports verify`` finds it: by
   the SHA-256 of the bytes released, or, for a copy changed since, by the release id its watermark
   carries. A hash that matches only a *submitted* file (one never released) is traced all the same,
   and said to be unreleased.
2. **Its request, checks, votes and decision**: the ``export.*`` records carrying the request's id.
3. **The executions that produced it**: ``kernel.execute`` records of the requester in the
   workspace, made before the request, whose ``msg_id`` is one the file's provenance names or,
   for a provenance execution whose message id is not in the log, whose ``code_sha256`` is the
   SHA-256 of the code the provenance holds.
4. **The sandbox session** those executions ran in: its ``sandbox.start`` record (who, when, the
   policy applied) and the record that ended it.
5. **The releases and columns it had**: the ``/data/<release>`` mounts of that policy, each with the
   columns of the ``workspace.attach`` record in force when the session started, checked against
   the workspace's supply manifest (which also gives the view's and the release's hashes).

A sealed run's result (its provenance names the run) takes another path after step 2: the run's
``sealed_run.submit`` record (the frozen notebook's hash, inputs and outputs) and each of its steps to
the ``end`` that made the request, then the data it read (the hash of the sealed view it was given)
and the source behind it: the ``data.sealed_view_built``, ``data.release_published`` and
``data.source_registered`` records of its release and source.

What does not line up (a signed approver with no vote record, an execution in the provenance not in
the log, a release mounted without an attachment) is listed under ``problems``: the trace reports
what the records say and where they disagree; it never fills a gap with a guess.

:func:`attachments_at`, :func:`data_mounts` and :func:`each_record` are shared with the
assessment report (:mod:`.report`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from ..settings import Settings
from .reader import MAX_PAGE, AuditReader
from .records import parse_time

# How a file was found, in the order tried.
FOUND_BY = {
    "hash": "the SHA-256 of the released bytes",
    "watermark": "the release id in its watermark (the file was changed after release)",
    "submitted hash": "the SHA-256 of a file submitted for export, never released",
}
# The records that end a sandbox session.
SESSION_ENDS = ("sandbox.stop", "sandbox.cull")
# Where a sandbox sees the workspace's releases.
DATA_ROOT = "/data/"
SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# Lines of an execution's code shown in the text tree.
CODE_LINES = 6


def each_record(reader: AuditReader, **filters) -> Iterator[dict]:
    """Every record matching ``filters`` (those of :meth:`AuditReader.query`), oldest first."""
    after = None
    while True:
        page = reader.query(**filters, after=after, limit=MAX_PAGE)
        yield from page["records"]
        after = page["next"]
        if after is None:
            return


def cite(record: dict | None) -> dict | None:
    """A record as a step cites it: its seq, time and actor."""
    return None if record is None else {"seq": record["seq"], "time": record["time"], "actor": record["actor"]}


def columns_of(value) -> list[str] | None:
    """Columns as ``table.col`` (or ``col``) names; None means all of the release.

    The supply manifest keeps ``{table: [columns]}`` or ``"all"``; a ``workspace.attach`` record a list.
    """
    if value in (None, "all"):
        return None
    if isinstance(value, dict):
        return [f"{table}.{column}" for table, columns in value.items() for column in columns]
    return [str(c) for c in value]


def data_mounts(policy: dict) -> list[dict]:
    """The releases a recorded sandbox policy has under /data: release name and host source.

    The spawner records the server's own mounts under ``mounts`` and what its kernels and terminals
    see under ``data`` (the server itself has no /data); a /data target is taken from either.
    """
    return [{"release": m["target"][len(DATA_ROOT):], "source": m.get("source")}
            for m in (policy.get("mounts") or []) + (policy.get("data") or [])
            if str(m.get("target", "")).startswith(DATA_ROOT)]


def attachments_at(records: list[dict], before_seq: int | None = None) -> dict[str, dict]:
    """The releases attached to a workspace after replaying its ``workspace.attach``/``detach``
    records (those before ``before_seq``, when given): release -> the attach record, cited."""
    attached: dict[str, dict] = {}
    for r in records:
        if before_seq is not None and r["seq"] >= before_seq:
            break
        release = r["detail"].get("release")
        if r["action"] == "workspace.attach" and r["outcome"] == "ok":
            attached[release] = {"release": release, "columns": columns_of(r["detail"].get("columns")),
                                 "reason": r["detail"].get("reason"), "record": cite(r)}
        elif r["action"] == "workspace.detach" and r["outcome"] == "ok":
            attached.pop(release, None)
    return attached


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- step 1: the file, in the review service's database --


class NoReviewDatabase(Exception):
    """The export review service has never run here: nothing was ever released."""


def _exports_database(settings: Settings):
    from ..exports.models import Database, db_url

    url = db_url(settings)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise NoReviewDatabase(f"no export review database at {url.removeprefix('sqlite:///')}:"
                               " the review service has never run with these settings")
    return Database(url, migrate=False)


def find_file(settings: Settings, data: bytes | None = None, digest: str | None = None) -> dict:
    """The file in the review service's database: ``{"sha256", "found_by"}``, and when it is there
    its ``request``, ``file``, ``provenance`` and ``release`` (None for a file never released).

    Given the bytes, it is found as ``enclave exports verify`` finds it (hash, then watermark, with
    the signature checked); given only a hash, by the hash of the released bytes. Failing both, by
    the hash of the bytes submitted for export. Bytes released by several requests are traced
    through their valid release, else the newest.
    """
    from sqlalchemy import select

    from ..exports import signing
    from ..exports.models import Release, RequestFile
    from ..exports.verify import verify_file

    database = _exports_database(settings)
    verified = verify_file(settings, data) if data is not None else None
    digest = verified["sha256"] if verified else digest
    try:
        with database.snapshot() as s:
            rel, found_by = None, "hash"
            if verified and verified["released"]:
                releases = verified["releases"]
                traced = next((r for r in releases if r["valid"]), releases[-1])
                rel, found_by = s.get(Release, traced["release_id"]), verified["found_by"]
            elif verified is None:
                rel = s.scalars(select(Release).where(Release.sha256 == digest)
                                .order_by(Release.revoked_at.is_not(None), Release.released_at.desc())).first()
            if rel is not None:
                f = s.get(RequestFile, rel.file_id)
            else:
                found_by = "submitted hash"
                f = s.scalars(select(RequestFile).where(RequestFile.sha256 == digest)
                              .order_by(RequestFile.id.desc())).first()
                if f is None:
                    return {"sha256": digest, "found_by": None}
            req = f.request
            released = None
            if rel is not None:
                valid = signing.verify(signing.load_public_key(settings), rel.manifest, rel.signature)
                released = {"id": rel.id, "sha256": rel.sha256, "released_at": _iso(rel.released_at),
                            "revoked_at": _iso(rel.revoked_at), "key_id": rel.key_id, "signature_valid": valid,
                            "hash_matches": rel.sha256 == digest, "approvers": rel.manifest.get("approvers", [])}
            return {
                "sha256": digest, "found_by": found_by,
                "request": {"id": req.id, "workspace": req.workspace, "requester": req.requester,
                            "title": req.title, "state": req.state, "submitted_at": _iso(req.submitted_at),
                            "datasets": list(req.datasets or []), "policy_version": req.policy_version},
                "file": {"name": f.name, "version": f.version, "sha256": f.sha256, "size": f.size,
                         "kind": f.kind, "check_status": f.check_status},
                "provenance": f.provenance or {},
                "release": released,
            }
    finally:
        database.engine.dispose()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


# -- steps 2 to 5: the audit records --


def trace(settings: Settings, reader: AuditReader, data: bytes | None = None, digest: str | None = None) -> dict:
    """The whole chain for a file's bytes or a SHA-256, as JSON-ready values (see the module doc)."""
    found = find_file(settings, data=data, digest=digest.lower() if digest else None)
    result = {"sha256": found["sha256"], "found_by": found["found_by"], "released": bool(found.get("release")),
              "watermark_read": data is not None, "problems": []}
    if found["found_by"] is None:
        return result
    request, file, release = found["request"], found["file"], found["release"]
    result.update(request=request, file=file, release=release)
    problems = result["problems"]
    if release is not None and not release["signature_valid"]:
        problems.append("the release's signed manifest does not verify with the review service's key")
    if release is not None and release["revoked_at"]:
        problems.append(f"the release was revoked at {release['revoked_at']}")

    _review_steps(reader, result, request, file, release, problems)
    if found["provenance"].get("sealed_run"):
        result["sealed_run"] = _sealed_run(reader, request, found["provenance"], problems)
        result["executions"], result["sessions"] = [], []
        return result
    executions = _executions(reader, request, found["provenance"], result["request_record"], problems)
    result["executions"] = executions
    result["sessions"] = _sessions(settings, reader, request["workspace"], executions, problems)
    return result


def _sealed_run(reader, request: dict, provenance: dict, problems: list) -> dict:
    """Steps 3 to 5 for a sealed run's result: the run (its submission with the frozen notebook's
    hash, inputs and outputs, and each step to its end), the data it read (the release's sealed view,
    by hash) and the source behind it (the records of the sealed view's building and the release's
    publication)."""
    run_id = provenance["sealed_run"]
    records = [r for r in each_record(reader, workspace=request["workspace"], action="sealed_run.*")
               if r["detail"].get("run_id") == run_id]
    submitted = next((r for r in records if r["action"] == "sealed_run.submit"), None)
    steps = [{**cite(r), "step": r["detail"]["step"], "state": r["detail"]["state"],
              "outcome": r["detail"].get("outcome"), "request_id": r["detail"].get("request_id")}
             for r in records if r["action"] == "sealed_run.step"]
    run = {"id": run_id, "submit_record": cite(submitted), "steps": steps,
           "notebook_sha256": provenance.get("notebook_sha256"), "release": provenance.get("release"),
           "data_hash": provenance.get("data_hash"), "environment": provenance.get("environment"),
           "limits": provenance.get("limits"), "duration_seconds": provenance.get("duration_seconds")}
    if submitted is None:
        problems.append(f"no sealed_run.submit record for sealed run {run_id}")
    else:
        d = submitted["detail"]
        run.update(requester=submitted["actor"], inputs=d["inputs"], outputs=d["outputs"])
        if d["notebook_sha256"] != provenance.get("notebook_sha256"):
            problems.append(f"the file's provenance names notebook {provenance.get('notebook_sha256')}, the run's"
                            f" submission {d['notebook_sha256']}")
        if submitted["actor"] != request["requester"]:
            problems.append(f"sealed run {run_id} was submitted by {submitted['actor']}, the request is"
                            f" {request['requester']}'s")
    end = next((s for s in steps if s["step"] == "end"), None)
    if end is None:
        problems.append(f"no record of sealed run {run_id}'s end")
    elif end["request_id"] != request["id"]:
        problems.append(f"sealed run {run_id} ended into request {end['request_id']}, not {request['id']}")
    release = provenance.get("release") or ""
    source = release.partition("@")[0]
    built = [r for r in each_record(reader, action="data.sealed_view_built") if r["detail"]["release"] == release]
    published = [r for r in each_record(reader, action="data.release_published") if r["detail"]["release"] == release]
    registered = [r for r in each_record(reader, action="data.source_registered") if r["detail"]["source"] == source]
    run["source"] = {
        "name": (built[-1]["detail"]["source"] if built else source),
        "sealed_view": [{**cite(r), "content_hash": r["detail"]["content_hash"]} for r in built],
        "release_published": [{**cite(r), "content_hash": r["detail"]["content_hash"]} for r in published],
        "registered": [{**cite(r), "change": r["detail"]["change"], "sha256": r["detail"].get("sha256")}
                       for r in registered],
    }
    if not built:
        problems.append(f"no data.sealed_view_built record for release {release}: the data the run read is not"
                        " traced to its source")
    if not published:
        problems.append(f"no data.release_published record for release {release}")
    return run


def _review_steps(reader, result: dict, request: dict, file: dict, release: dict | None, problems: list) -> None:
    """Step 2: the request's ``export.*`` records, this file's and the request's."""
    mine = [r for r in each_record(reader, workspace=request["workspace"], action="export.*")
            if r["detail"].get("request_id") == request["id"]]
    # This version of the file: a record that names the file's hash must name this one.
    of_file = [r for r in mine if r["detail"].get("file") == file["name"]
               and r["detail"].get("sha256", file["sha256"]) == file["sha256"]]
    of_release = [r for r in mine if release is not None and r["detail"].get("release_id") == release["id"]]
    submitted = next((r for r in mine if r["action"] == "export.request"), None)
    result["request_record"] = cite(submitted)
    result["checks"] = [{**cite(r), "status": r["detail"]["status"], "checks": r["detail"].get("checks", [])}
                        for r in of_file if r["action"] == "export.check"]
    result["votes"] = [{**cite(r), "decision": r["detail"]["decision"], "reason": r["detail"]["reason"]}
                       for r in of_file if r["action"] == "export.vote"]
    result["decisions"] = [{**cite(r), "decision": r["detail"]["decision"], "reason": r["detail"].get("reason")}
                           for r in mine if r["action"] == "export.decision"]
    if release is not None:
        release["record"] = cite(next((r for r in of_release if r["action"] == "export.release"), None))
        release["downloads"] = [cite(r) for r in of_release if r["action"] == "export.download"]
        release["revocations"] = [{**cite(r), "reason": r["detail"]["reason"]}
                                  for r in of_release if r["action"] == "export.revoke"]
        if release["record"] is None:
            problems.append(f"no export.release record for release {release['id']}")
        voters = {v["actor"] for v in result["votes"] if v["decision"] == "approve"}
        for approver in release["approvers"]:
            if approver["reviewer"] not in voters:
                problems.append(f"{approver['reviewer']} approved the file in the signed manifest,"
                                " but no export.vote record of that approval is in the log")
    if submitted is None:
        problems.append(f"no export.request record for request {request['id']}")


def _executions(reader, request: dict, provenance: dict, request_record: dict | None, problems: list) -> list[dict]:
    """Step 3: each execution the provenance names, with the ``kernel.execute`` record it matches."""
    named = [e for e in provenance.get("executions") or [] if isinstance(e, dict)]
    if not named:
        problems.append("the file's provenance names no execution: the code that wrote it is not known")
        return []
    if provenance.get("user") not in (None, request["requester"]):
        problems.append(f"the provenance names user {provenance.get('user')!r}, the request {request['requester']!r}")
    records = list(each_record(reader, user=request["requester"], workspace=request["workspace"],
                               action="kernel.execute", until=request_record["time"] if request_record else None))
    by_msg_id = {r["detail"]["msg_id"]: r for r in records if r["detail"].get("msg_id")}
    found = []
    for e in named:
        record, how = by_msg_id.get(e.get("msg_id")), "msg_id"
        if record is None and isinstance(e.get("code"), str):
            code_hash = sha256_text(e["code"])
            same_code = [r for r in records if r["detail"]["code_sha256"] == code_hash]
            record, how = (same_code[-1] if same_code else None), "code_sha256"
        entry = {"provenance": {k: e.get(k) for k in ("time", "msg_id", "kernel_id", "notebook")}}
        if record is None:
            problems.append(f"the execution of {e.get('time')} (msg_id {e.get('msg_id')}) named in the provenance"
                            " has no kernel.execute record, by message id or by code hash")
            found.append({**entry, "seq": None, "matched_by": None})
            continue
        d = record["detail"]
        found.append({**entry, **cite(record), "matched_by": how, "sandbox": record["sandbox"],
                      "kernel": d["kernel"], "notebook": d.get("notebook"), "cell": d.get("cell"),
                      "msg_id": d.get("msg_id"), "code_sha256": d["code_sha256"], "code": d["code"],
                      "code_truncated": bool(d.get("code_truncated"))})
    return found


def _sessions(settings: Settings, reader, workspace: str, executions: list[dict], problems: list) -> list[dict]:
    """Steps 4 and 5: the sandbox sessions of the executions, their policy and their /data."""
    from .. import supply

    sandboxes = list(dict.fromkeys(e["sandbox"] for e in executions if e["seq"] is not None))
    if not sandboxes:
        return []
    of_sandbox: dict[str, list[dict]] = {}
    for r in each_record(reader, workspace=workspace, action="sandbox.*"):
        if r["sandbox"] in sandboxes:
            of_sandbox.setdefault(r["sandbox"], []).append(r)
    grants = list(each_record(reader, workspace=workspace, action="workspace.*"))
    supplied = supply.read_manifest(settings, workspace)
    sessions = []
    for sandbox in sandboxes:
        records = of_sandbox.get(sandbox, [])
        start = next((r for r in records if r["action"] == "sandbox.start"), None)
        end = next((r for r in records if r["action"] in SESSION_ENDS), None)
        session = {"sandbox": sandbox, "start": cite(start), "end": None, "mounts": [], "attached": []}
        if end is not None:
            session["end"] = {**cite(end), "action": end["action"], "reason": end["detail"].get("reason")}
        sessions.append(session)
        if start is None:
            problems.append(f"no sandbox.start record for sandbox {sandbox}: its policy is not known")
            continue
        policy = start["detail"]["policy"]
        session.update(server=start["detail"].get("server"), identity=policy.get("identity"),
                       limits=policy.get("limits"), network=policy.get("network"))
        attached = attachments_at(grants, before_seq=start["seq"])
        session["attached"] = list(attached.values())
        mounts = data_mounts(policy)
        if not mounts:
            problems.append(f"the policy recorded for sandbox {sandbox} (seq {start['seq']}) mounts nothing under"
                            f" {DATA_ROOT}: the releases it had are known only from its workspace's attachments")
        for mount in mounts:
            session["mounts"].append(_mounted(sandbox, mount, attached.get(mount["release"]),
                                              _supply_entry(supplied, mount["release"], parse_time(start["time"])),
                                              problems))
    return sessions


def _mounted(sandbox: str, mount: dict, grant: dict | None, entry: dict | None, problems: list) -> dict:
    """A release under /data with its columns: those of the attach record in force (the log), checked
    against the supply manifest's entry (which also gives the view's and the release's hashes)."""
    release = mount["release"]
    if grant is None:
        problems.append(f"sandbox {sandbox} had {release} with no workspace.attach record in force when it started")
    if entry is None:
        problems.append(f"the supply manifest has no attachment of {release} in force when sandbox {sandbox} started")
    if grant and entry and grant["columns"] != columns_of(entry["columns"]):
        problems.append(f"the columns of {release} differ between its workspace.attach record"
                        f" (seq {grant['record']['seq']}) and the supply manifest")
    columns = grant["columns"] if grant else columns_of(entry["columns"]) if entry else None
    return {**mount, "columns": columns, "columns_known": bool(grant or entry),
            "view_hash": entry.get("view_hash") if entry else None,
            "content_hash": entry.get("release_content_hash") if entry else None,
            "reason": entry.get("reason") if entry else None,
            "attach_record": grant["record"] if grant else None}


def _supply_entry(entries: list[dict], release: str, moment: datetime) -> dict | None:
    """The supply manifest's attach entry of ``release`` in force at ``moment``."""
    current = None
    for e in entries:
        if e.get("release") != release or parse_time(e["at"]) > moment:
            continue
        current = e if e.get("action") == "attach" else None
    return current


# -- the readable tree --


def render_text(t: dict) -> str:
    """The trace as an indented tree, each step with the seq of the records it rests on."""
    if t["found_by"] is None:
        return (f"NOT released by Enclave: no file released or submitted for export has SHA-256 {t['sha256']}"
                + (", and the file carries no Enclave watermark" if t["watermark_read"] else "") + "\n")
    req, f, rel = t["request"], t["file"], t["release"]
    head = (f"{f['name']} (version {f['version']}), sha256 {t['sha256']}: "
            + ("RELEASED" if t["released"] else "NOT released: it matches a file submitted for export")
            + f", found by {FOUND_BY[t['found_by']]}")
    root: list = []
    if rel is not None:
        root.append((f"release {rel['id']} at {rel['released_at']}{_at(rel.get('record'))}; signed manifest "
                     + ("valid" if rel["signature_valid"] else "INVALID") + f" (key {rel['key_id']})"
                     + ("" if rel["hash_matches"] else "; the bytes were CHANGED after release"),
                     [f"downloaded by {d['actor']} at {d['time']} [seq {d['seq']}]" for d in rel["downloads"]]
                     + [f"REVOKED by {r['actor']} at {r['time']}: {r['reason']} [seq {r['seq']}]"
                        for r in rel["revocations"]]))
    review = [f"check: {c['status']}{_findings(c['checks'])} [seq {c['seq']}]" for c in t["checks"]]
    review += [f"vote: {v['actor']} {v['decision']}: {v['reason']} [seq {v['seq']}]" for v in t["votes"]]
    review += [f"decision: {d['decision']} by {d['actor']} at {d['time']}" + (f": {d['reason']}" if d["reason"] else "")
               + f" [seq {d['seq']}]" for d in t["decisions"]]
    root.append((f"request {req['id']} “{req['title']}” in workspace {req['workspace']} by {req['requester']},"
                 f" submitted {req['submitted_at']}{_at(t.get('request_record'))}; now {req['state']}", review))
    if t.get("sealed_run"):
        root.extend(_sealed_run_nodes(t["sealed_run"]))
    else:
        root.append((f"executions that wrote it ({sum(e['seq'] is not None for e in t['executions'])} of"
                     f" {len(t['executions'])} in the provenance found in the log)",
                     [_execution_node(e) for e in t["executions"]]))
        root.extend(_session_node(s) for s in t["sessions"])
    if t["problems"]:
        root.append(("PROBLEMS", list(t["problems"])))
    return head + "\n" + "".join(_tree(root, ""))


def _at(record: dict | None) -> str:
    return f" [seq {record['seq']}]" if record else " [no record]"


def _findings(checks: list) -> str:
    flagged = [c.get("check", "?") for c in checks if isinstance(c, dict) and c.get("status") != "pass"]
    return f" ({', '.join(flagged)})" if flagged else ""


def _sealed_run_nodes(run: dict) -> list:
    steps = [f"{s['step']} → {s['state']} by {s['actor']} at {s['time']}"
             + (f", outcome {s['outcome']['state']}" if s.get("outcome") else "") + f" [seq {s['seq']}]"
             for s in run["steps"]]
    given = [f"input {i['path']} sha256 {i['sha256']}" for i in run.get("inputs", [])]
    given += [f"output asked for: {o}" for o in run.get("outputs", [])]
    source = run["source"]
    data = [f"release {run['release']} published, content hash {p['content_hash']} [seq {p['seq']}]"
            for p in source["release_published"]]
    data += [f"sealed view built by {b['actor']} at {b['time']}, content hash {b['content_hash']} [seq {b['seq']}]"
             for b in source["sealed_view"]]
    data += [f"source {source['name']} {r['change']}" + (f", sha256 {r['sha256']}" if r.get("sha256") else "")
             + f" [seq {r['seq']}]" for r in source["registered"]]
    return [
        (f"sealed run {run['id']} of notebook sha256 {run['notebook_sha256']} by {run.get('requester', '?')}"
         f"{_at(run['submit_record'])}; it read {run['data_hash']} in {run['duration_seconds']} s",
         given + steps),
        (f"the data: the sealed view of {run['release']}, behind it the source {source['name']}",
         data or ["no record of the release or its source"]),
    ]


def _execution_node(e: dict):
    p = e["provenance"]
    if e["seq"] is None:
        return f"NOT IN THE LOG: execution of {p.get('time')} (msg_id {p.get('msg_id')}, {p.get('notebook')})"
    lines = e["code"].splitlines() or [""]
    code = Verbatim(lines[:CODE_LINES])
    if len(lines) > CODE_LINES or e["code_truncated"]:
        code.append(f"… ({len(lines)} lines{', truncated in the record' if e['code_truncated'] else ''};"
                    " --format json has it all)")
    return (f"{e['time']} kernel {e['kernel'][:8]} in {e.get('notebook') or 'no notebook'}, sandbox {e['sandbox']},"
            f" matched by {e['matched_by']} [seq {e['seq']}]", code)


def _session_node(s: dict):
    end = (f"ended by {s['end']['action']} at {s['end']['time']} [seq {s['end']['seq']}]" if s["end"]
           else "no end recorded (still running, or its end was not recorded)")
    if s["start"] is None:
        return (f"sandbox session {s['sandbox']}: NO sandbox.start record", [end])
    children = [end, f"identity: {_pairs(s.get('identity'))}",
                f"limits: {_pairs(s.get('limits'))}; network: {s.get('network') or 'none recorded'}"]
    mounts = [_mount_line(m) for m in s["mounts"]]
    children.append((f"/data mounted ({len(mounts)})", mounts or ["nothing under /data in the recorded policy"]))
    children.append(("attached to the workspace when it started",
                     [f"{a['release']}: " + (", ".join(a["columns"]) if a["columns"] else "all columns")
                      + f" [seq {a['record']['seq']}]" for a in s["attached"]] or ["nothing"]))
    return (f"sandbox session {s['sandbox']} started by {s['start']['actor']} at {s['start']['time']}"
            f" [seq {s['start']['seq']}]", children)


def _mount_line(m: dict) -> str:
    if m["columns"]:
        columns = ", ".join(m["columns"])
    else:
        columns = "all columns" if m["columns_known"] else "columns unknown"
    granted = f"granted{_at(m['attach_record'])}" if m["attach_record"] else "NO attach record"
    return f"{m['release']} ← {m['source']}: {columns}; {granted}" + (f" ({m['reason']})" if m["reason"] else "")


class Verbatim(list):
    """Lines shown as they are under their node (code), not as branches of the tree."""


def _pairs(values: dict | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (values or {}).items()) or "none recorded"


def _tree(nodes: list, indent: str) -> Iterator[str]:
    """Nodes are a label, or (label, children); children are nodes, or :class:`Verbatim` lines."""
    if isinstance(nodes, Verbatim):
        yield from (f"{indent}┆ {line}\n" for line in nodes)
        return
    for i, node in enumerate(nodes):
        label, children = node if isinstance(node, tuple) else (node, [])
        last = i == len(nodes) - 1
        yield f"{indent}{'└─' if last else '├─'} {label}\n"
        yield from _tree(children, indent + ("   " if last else "│  "))
