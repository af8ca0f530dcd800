"""HTTP handlers: closed routes, and the export request API used by the JupyterLab extension.

What the export API answers is shown in the browser like anything else the guard serves (the request
list carries titles and reviewers' comments, the checks' results their findings), so it is charged
to the operator's egress budget on the path a contents read takes, and refused like a read once the
budget is spent. Two answers are charged but never held: the upload policy the file browser needs,
and the receipt of a submitted export request, as results leave through export review, held budget
or not (neither carries anything of the workspace's data).
"""

from __future__ import annotations

import json

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

from . import exports, policy
from .intake import IntakeError

AUTH_RESOURCE = "enclave_exports"


class ClosedHandler(JupyterHandler):
    """Every method of a closed route: 403, whoever asks."""

    def initialize(self, what: str):
        self.what = what

    def _refuse(self, *args, **kwargs):
        raise web.HTTPError(403, f"{self.what} are closed in Enclave; request an export instead",
                            reason="Closed by Enclave")

    get = post = put = patch = delete = head = options = _refuse

    def check_xsrf_cookie(self):
        # The answer is 403 whatever the token; an XSRF failure must not change it.
        return

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": error_message(exc) or self._reason}))


def error_message(exc) -> str | None:
    """The message a tornado ``HTTPError`` was raised with, as written (tornado keeps a format string:
    read as it is, a message without arguments would show every '%' doubled)."""
    message = getattr(exc, "log_message", None)
    return message % getattr(exc, "args", ()) if message else None


class _GuardAPIHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": error_message(exc) or self._reason, "reason": getattr(exc, "reason", None)}))

    @property
    def guard(self):
        return self.settings["enclave_guard"]

    def body(self) -> dict:
        try:
            doc = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the request body is not JSON") from None
        if not isinstance(doc, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        return doc

    async def relay(self, call):
        try:
            return await call
        except IntakeError as exc:
            raise web.HTTPError(502 if exc.status >= 500 else exc.status, str(exc)) from None

    def finish_shown(self, doc: dict, what: str) -> None:
        """Answer with ``doc``, charged to the operator's egress budget as a contents read is; past the
        budget, refused (403) with the reason instead."""
        body = json.dumps(doc)
        decision = self.guard.egress.admit("contents_read", len(body.encode()))
        if not decision.allowed:
            # As arguments: the reason may carry a '%' (the receiver's error) that is not a format.
            raise web.HTTPError(403, "%s: not shown: %s", what, decision.held, reason="Refused by Enclave")
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
    """The automated checks for files the operator is about to request, before submitting."""

    @web.authenticated
    @authorized
    async def post(self):
        guard = self.guard
        snaps = exports.snapshot(self.contents_manager, self.body().get("paths"), guard.workspace.guard.export_max_bytes)
        result = await self.relay(guard.intake.checks(exports.manifest(guard, snaps), [(s.name, s.data) for s in snaps]))
        self.finish_shown({"files": [s.as_json() for s in snaps], "checks": result.get("files", [])},
                          "the checks' results")


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
            shown.append(self._summary(await self.relay(guard.intake.request(item["id"]))))
        self.finish_shown({"requests": shown, "total": listing.get("total", len(shown))}, "your export requests")

    def _summary(self, req: dict) -> dict:
        """What the panel shows: state, files, public comments and where to download releases."""
        # The review service's page for it, on the service's own origin (given by the hub).
        page = url_path_join(self.guard.exports_url, "requests", req["id"])
        return {
            "id": req["id"], "title": req.get("title"), "state": req["state"], "submitted_at": req.get("submitted_at"),
            "page_url": page,
            "files": [
                {"name": f["name"], "sha256": f["sha256"], "check_status": f.get("check_status"),
                 "decision": f.get("decision"),
                 "released": bool(f.get("release")) and not f["release"].get("revoked")}
                for f in req.get("files", [])
            ],
            "comments": [{"author": c.get("author"), "text": c["text"], "at": c.get("at")}
                         for c in req.get("comments", []) if c.get("visibility") == "public"],
        }

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
        self.finish_receipt(self._summary(created))
