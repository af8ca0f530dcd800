"""HTTP handlers: closed routes, and the export request API used by the JupyterLab extension."""

from __future__ import annotations

import json

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import web

from . import exports
from .intake import IntakeError

AUTH_RESOURCE = "enclave_exports"


class ClosedHandler(JupyterHandler):
    """Every method of a closed route: 403 before anything else runs, for anyone."""

    def initialize(self, what: str):
        self.what = what

    def prepare(self):
        raise web.HTTPError(403, f"{self.what} are closed in Enclave; request an export instead",
                            reason="Closed by Enclave")

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": getattr(exc, "log_message", None) or self._reason}))


class _GuardAPIHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

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


class ChecksHandler(_GuardAPIHandler):
    """The automated checks for files the operator is about to request, before submitting."""

    @web.authenticated
    @authorized
    async def post(self):
        guard = self.guard
        snaps = exports.snapshot(self.contents_manager, self.body().get("paths"), guard.workspace.guard.export_max_bytes)
        result = await self.relay(guard.intake.checks({
            "workspace": guard.workspace.workspace,
            "files": [s.as_json() for s in snaps],
        }))
        self.finish(json.dumps({"files": [s.as_json(with_bytes=False) for s in snaps], "checks": result}))


class ExportsHandler(_GuardAPIHandler):
    @web.authenticated
    @authorized
    async def get(self):
        guard = self.guard
        self.finish(json.dumps(await self.relay(guard.intake.requests(guard.workspace.workspace))))

    @web.authenticated
    @authorized
    async def post(self):
        guard = self.guard
        body = self.body()
        justification = exports.justification_of(body)
        snaps = exports.snapshot(self.contents_manager, body.get("paths"), guard.workspace.guard.export_max_bytes)
        request = {
            "workspace": guard.workspace.workspace,
            "justification": justification,
            "files": [s.as_json() for s in snaps],
            "provenance": exports.provenance(guard, snaps),
        }
        created = await self.relay(guard.intake.submit(request))
        guard.audit.write(
            "export-submitted",
            user=self.current_user.username,
            request=created.get("id"),
            files=[s.as_json(with_bytes=False) for s in snaps],
        )
        self.set_status(201)
        self.finish(json.dumps(created))
