"""HTTP handlers: closed routes, and the export request and sealed-run APIs used by the JupyterLab
extension.

What the export API answers is shown in the browser like anything else the guard serves (the request
list carries titles and reviewers' comments, the checks' results their findings), so it is charged
to the operator's egress budget on the path a contents read takes, and refused like a read once the
budget is spent. Some answers are charged but never held: the upload policy the file browser needs,
and the receipts of the operator's own steps on an export request (submitting it, sending new
versions of its files, resubmitting or withdrawing it), as results leave through export review,
held budget or not (none carries anything of the workspace's data). The sealed-run API is charged
the same way: the releases a run may use and the list of runs as reads, submitting and withdrawing
a run as receipts.

Errors are JSON, ``{"message", "code", "params", "reason"}``: the message in the operator's
language, the code stable (:mod:`.refusals`). The checks' findings carry the review service's code
and params, and its ``message``: the reason in the operator's language (the intake is asked in it).
"""

from __future__ import annotations

import json
import re

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

from . import exports, policy, sealed_runs
from .intake import IntakeError
from .messages import N_, Message
from .refusals import Refusal, error_body

AUTH_RESOURCE = "enclave_exports"


class ClosedHandler(JupyterHandler):
    """Every method of a closed route: 403, whoever asks."""

    def initialize(self, what: str):
        self.what = what

    def _refuse(self, *args, **kwargs):
        raise Refusal(403, "guard.route_closed", N_("%(what)s are closed in Enclave; request an export instead"),
                      reason="Closed by Enclave", what=Message("guard.route", self.what))

    get = post = put = patch = delete = head = options = _refuse

    def check_xsrf_cookie(self):
        # The answer is 403 whatever the token; an XSRF failure must not change it.
        return

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json")
        body = error_body(exc, self._reason)
        del body["reason"]
        self.finish(json.dumps(body))


class _GuardAPIHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error_body(exc, self._reason)))

    @property
    def guard(self):
        return self.settings["enclave_guard"]

    def body(self) -> dict:
        try:
            doc = json.loads(self.request.body or b"{}")
        except ValueError:
            raise Refusal(400, "guard.body_not_json", N_("the request body is not JSON")) from None
        if not isinstance(doc, dict):
            raise Refusal(400, "guard.body_not_object", N_("the request body must be a JSON object"))
        return doc

    # The reason (HTTP reason phrase) of a refusal the review service gave, relayed.
    refused_reason = "Export refused"

    async def relay(self, call):
        try:
            return await call
        except IntakeError as exc:
            status = 502 if exc.status >= 500 else exc.status
            raise Refusal.of(status, exc.message, reason=self.refused_reason) from None

    def finish_shown(self, doc: dict, what: Message) -> None:
        """Answer with ``doc``, charged to the operator's egress budget as a contents read is; past the
        budget, refused (403) with the reason instead."""
        body = json.dumps(doc)
        decision = self.guard.egress.admit("contents_read", len(body.encode()))
        if not decision.allowed:
            raise Refusal(403, "guard.answer_held", N_("%(what)s: not shown: %(held)s"), what=what,
                          held=decision.held)
        self.finish(body)

    def finish_receipt(self, doc: dict) -> None:
        """Answer with ``doc``, charged to the operator's egress budget but never held (see the module's
        docstring for which answers these are)."""
        body = json.dumps(doc)
        self.guard.egress.spend("contents_read", len(body.encode()))
        self.finish(body)


class UploadPolicyHandler(_GuardAPIHandler):
    """What the browser may upload, so the file browser can say so before sending anything."""

    @web.authenticated
    @authorized
    def get(self):
        settings = self.guard.workspace.guard
        self.finish_receipt({
            "suffixes": sorted(policy.TEXT_SUFFIXES | {policy.NOTEBOOK_SUFFIX}),
            "max_bytes": settings.upload_max_bytes,
        })


class ChecksHandler(_GuardAPIHandler):
    """The automated checks for files the operator is about to send, before sending them: either the
    files of a new request (``{"paths": [...]}``) or new versions of files of a returned request
    (``{"request": <id>, "files": [{"name": ..., "path": ...}]}``)."""

    @web.authenticated
    @authorized
    async def post(self):
        guard = self.guard
        body = self.body()
        limit = guard.workspace.guard.export_max_bytes
        if "request" in body:
            if not isinstance(body["request"], str) or not REQUEST_ID.fullmatch(body["request"]):
                raise Refusal(400, "guard.export.bad_request_id",
                              N_("'request' must be the id of one of your export requests"))
            request = await self.relay(guard.intake.request(body["request"]))
            snaps = exports.snapshot_versions(self.contents_manager, body.get("files"), request, limit)
        else:
            snaps = exports.snapshot(self.contents_manager, body.get("paths"), limit)
        result = await self.relay(guard.intake.checks(exports.manifest(guard, snaps), [(s.name, s.data) for s in snaps]))
        self.finish_shown({"files": [s.as_json() for s in snaps], "checks": result.get("files", [])},
                          Message("guard.answer.checks", N_("the checks' results")))


REQUEST_ID = re.compile(r"[0-9a-f]{32}")
# The steps an operator takes on their own request, by the state they lead to.
REQUESTER_STEPS = {"submitted": "resubmit", "withdrawn": "withdraw"}


def summary(guard, req: dict) -> dict:
    """What the Exports panel shows of an export request: its state and the steps its requester may
    take; each file's checks and, once decided, the reviewers' decision, with the public comments
    about it; and why it was returned, if it was."""
    # The review service's page for it, on the service's own origin (given by the hub).
    page = url_path_join(guard.exports_url, "requests", req["id"])
    comments = [c for c in req.get("comments", []) if c.get("visibility") == "public"]

    def shown(c: dict) -> dict:
        return {"author": c.get("author"), "text": c["text"], "at": c.get("at")}

    return {
        "id": req["id"], "title": req.get("title"), "state": req["state"], "submitted_at": req.get("submitted_at"),
        "context": req.get("context"),
        "page_url": page,
        "allowed": [a["to"] for a in req.get("allowed", []) if a.get("to") in REQUESTER_STEPS],
        "files": [
            {"id": f.get("id"), "name": f["name"], "version": f.get("version", 1), "sha256": f["sha256"],
             "path": (f.get("provenance") or {}).get("path") or f["name"],
             "check_status": f.get("check_status"),
             "checks": [{k: c.get(k) for k in ("check", "status", "code", "params", "reason", "message", "location")}
                        for c in f.get("checks") or [] if isinstance(c, dict)],
             "decision": f.get("decision"),
             "comments": [shown(c) for c in comments if c.get("file_id") is not None and c.get("file_id") == f.get("id")],
             "released": bool(f.get("release")) and not f["release"].get("revoked")}
            for f in req.get("files", [])
        ],
        # Comments on the request as a whole (those on a file are shown with it).
        "comments": [shown(c) for c in comments if c.get("file_id") is None],
        # The reasons reviewers gave for returning it, newest last.
        "returns": [{"author": e.get("actor"), "reason": (e.get("detail") or {}).get("reason", ""), "at": e.get("at")}
                    for e in req.get("history", []) if e.get("to") == "returned"],
    }


class ExportsHandler(_GuardAPIHandler):
    # The Exports panel shows this many of the most recent requests.
    SHOWN = 10

    @web.authenticated
    @authorized
    async def get(self):
        guard = self.guard
        listing = await self.relay(guard.intake.requests(guard.workspace.workspace))
        shown = []
        for item in listing.get("requests", [])[: self.SHOWN]:
            shown.append(summary(guard, await self.relay(guard.intake.request(item["id"]))))
        self.finish_shown({"requests": shown, "total": listing.get("total", len(shown))},
                          Message("guard.answer.requests", N_("your export requests")))

    @web.authenticated
    @authorized
    async def post(self):
        guard = self.guard
        body = self.body()
        justification = exports.justification_of(body)
        snaps = exports.snapshot(self.contents_manager, body.get("paths"), guard.workspace.guard.export_max_bytes)
        created = await self.relay(guard.intake.submit(
            exports.title_for(snaps), justification, exports.manifest(guard, snaps), [(s.name, s.data) for s in snaps]
        ))
        self.set_status(201)
        self.finish_receipt(summary(guard, created))


class ExportRequestHandler(_GuardAPIHandler):
    """One export request of the operator's (the panel opens it from a link of the review service)."""

    @web.authenticated
    @authorized
    async def get(self, request_id: str):
        guard = self.guard
        self.finish_shown(summary(guard, await self.relay(guard.intake.request(request_id))),
                          Message("guard.answer.request", N_("your export request")))


class ExportVersionsHandler(_GuardAPIHandler):
    """New versions of files of a returned export request, read by the server from the home as a
    first submission's files are: ``{"files": [{"name": <file of the request>, "path": <file in the
    home>}]}``. The review service keeps the votes of files that did not change."""

    @web.authenticated
    @authorized
    async def post(self, request_id: str):
        guard = self.guard
        body = self.body()
        request = await self.relay(guard.intake.request(request_id))
        if request["state"] != "returned":
            raise Refusal(409, "guard.export.not_returned",
                          N_("new versions can be sent only while the request is returned (it is %(state)s)"),
                          reason="Export refused", state=request["state"])
        snaps = exports.snapshot_versions(self.contents_manager, body.get("files"), request,
                                          guard.workspace.guard.export_max_bytes)
        result = await self.relay(guard.intake.update_files(
            request_id, exports.manifest(guard, snaps), [(s.name, s.data) for s in snaps]))
        self.finish_receipt({"changed": result.get("changed", []), "request": summary(guard, result["request"])})


class ExportTransitionHandler(_GuardAPIHandler):
    """The operator's steps on their own request: ``{"to": "submitted"}`` resubmits a returned
    request, ``{"to": "withdrawn"}`` withdraws an open one (an optional ``reason`` goes with it)."""

    @web.authenticated
    @authorized
    async def post(self, request_id: str):
        guard = self.guard
        body = self.body()
        to, reason = body.get("to"), body.get("reason", "")
        if to not in REQUESTER_STEPS:
            raise Refusal(400, "guard.export.bad_step",
                          N_("'to' must be one of %(steps)s (resubmit or withdraw); reviewers decide the rest"),
                          reason="Export refused", steps=", ".join(sorted(REQUESTER_STEPS)))
        if not isinstance(reason, str):
            raise Refusal(400, "guard.export.reason_not_text", N_("'reason' must be text"), reason="Export refused")
        await self.relay(guard.intake.transition(request_id, to, reason))
        self.finish_receipt(summary(guard, await self.relay(guard.intake.request(request_id))))


class _SealedRunsHandler(_GuardAPIHandler):
    """The sealed-run routes: the review service's refusals are relayed as a sealed run's."""

    refused_reason = "Sealed run refused"


class SealedRunReleasesHandler(_SealedRunsHandler):
    """The releases of the workspace a sealed run may use (synthetic releases with a sealed view):
    the choices of "Run on real data…"; none means sealed runs are not offered here."""

    @web.authenticated
    @authorized
    async def get(self):
        listing = await self.relay(self.guard.intake.sealed_run_releases())
        releases = [r for r in listing.get("releases", []) if isinstance(r, str)]
        self.finish_shown({"releases": releases},
                          Message("guard.answer.sealed_run_releases", N_("the releases sealed runs may use")))


class SealedRunsHandler(_SealedRunsHandler):
    """The operator's sealed runs in the workspace (GET), and "Run on real data…" (POST
    ``{"release", "notebook", "inputs", "outputs"}``: the server reads the notebook and the inputs from
    the home, :mod:`.sealed_runs`)."""

    @web.authenticated
    @authorized
    async def get(self):
        listing = await self.relay(self.guard.intake.sealed_runs())
        runs = [sealed_runs.shown(r) for r in listing.get("runs", []) if isinstance(r, dict)]
        self.finish_shown({"runs": runs}, Message("guard.answer.sealed_runs", N_("your sealed runs")))

    @web.authenticated
    @authorized
    async def post(self):
        guard = self.guard
        run, files = sealed_runs.submission(self.contents_manager, self.body(), guard.workspace.guard.export_max_bytes)
        created = await self.relay(guard.intake.submit_sealed_run(run, files))
        self.set_status(201)
        self.finish_receipt(sealed_runs.shown(created))


class SealedRunWithdrawHandler(_SealedRunsHandler):
    """Take a run back while it waits (queued, or awaiting the data holder's approval); the service
    refuses it (409) once the run has started."""

    @web.authenticated
    @authorized
    async def post(self, run_id: str):
        self.finish_receipt(sealed_runs.shown(await self.relay(self.guard.intake.withdraw_sealed_run(run_id))))
