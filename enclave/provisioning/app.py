"""The provisioning service: a JupyterHub-managed tornado app serving Enclave's provisioning REST API.

Two listeners share one :class:`Provisioning`:

* HTTP on loopback, behind the proxy at ``/services/provisioning/``: the JSON API under ``api/``
  (``Authorization: token ...``, or the service's HubOAuth cookie). Who the caller is comes from
  JupyterHub; what they may do, from their scopes: ``custom:workspaces:admin`` (admins: everything
  but consenting) and ``custom:sources:consent`` (data holders: the attachment requests of their own
  sources, and the workspaces that ask). Operators and reviewers hold neither, nor access to the
  service: their tokens are refused on every route.
* The CLI's socket ``$ENCLAVE_HOME/run/provisioning/cli.sock``, in a directory only root may enter
  (mode 0700, owner root), socket mode 0600: the same API, where the request names its actor in the
  ``X-Enclave-Actor`` header (the OS user who ran ``enclave``). Only root can connect, and root is
  the hub host's admin, so the actor acts as an admin. The socket serves one route more, setting an
  account's password (``PUT api/accounts/{username}/password``, :class:`PasswordAPI`): not on the
  HTTP API, where an admin's token could take over another account with it and act under its name. :mod:`enclave.provisioning.client` is its client:
  the ``enclave`` command's listing and provisioning commands are requests on it. With no hub
  running, the command starts ``python -I -m enclave.provisioning.app --cli-only`` for the while:
  this socket alone, no HTTP port and no JupyterHub.

Every change goes through the one service layer (:mod:`enclave.accounts`, :mod:`enclave.workspaces`,
:mod:`enclave.sources`) with a ``record`` that hands the audit record to the audit log as the acting
account (source ``hub``; ``cli`` for the CLI's socket) before the change commits: when the log does
not take it, nothing changes and the caller gets 503. The service layer's refusals are 409 with its
message; an unknown account or workspace is 404. A refusal answers ``{"status", "error"}``, its
English message, and, when it has one (the service layer's refusals all do), its stable ``code`` with
the ``text`` and ``params`` that make its message (:func:`_coded`): clients decide on the code and
show the message in their reader's language, the ``enclave`` command among them.

``POST api/apply`` applies a declarative file (:mod:`.apply`, ``enclave apply``) in one transaction,
its records handed to the audit log together (all taken, or none and nothing changed); a refused
file is 422 with every problem.

Parameters and JSON bodies are validated against the OpenAPI document (:mod:`.openapi`) before the
service layer is asked; bodies are at most :data:`BODY_LIMIT` (``POST api/apply``:
:data:`~.client.APPLY_BODY_LIMIT`, raised for that route once its caller is known to be an admin),
which tornado enforces before any handler runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.log import app_log
from tornado.netutil import bind_unix_socket

from .. import accounts, i18n, languages, logins, sources, workspaces
from ..audit.client import AuditClient, AuditError, AuditRecordRefused, AuditUnavailable, Recorder
from ..exports import openapi as validation
from ..exports.service import BadInput, ExportError
from ..releases import RELEASE_NAME, ReleaseError
from ..hub_oauth import RevocableHubOAuth
from ..i18n import N_
from ..services import error_message, stop_with_parent
from ..settings import Settings, load_settings_or_exit
from ..supply import SupplyError
from . import openapi
from .apply import ApplyError, apply
from .client import APPLY_BODY_LIMIT

SCOPE_ADMIN = "custom:workspaces:admin"
SCOPE_CONSENT = "custom:sources:consent"
# Every request body, at most.
BODY_LIMIT = 64 * 2**10
# The CLI's socket names its actor here: the OS user who ran ``enclave``.
ACTOR_HEADER = "X-Enclave-Actor"
_OS_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$")
# The service layer's refusals of what does not exist, each with the parameter naming it: a 404 when
# the request's path names it, else a refusal like any other (a member to add who has no account).
_UNKNOWN = {"account.unknown": "account", "workspace.unknown": "workspace"}
# RFC 3339's date and time with its offset, as JSON Schema's "date-time" format.
_MOMENT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE)
_SERVICE_LAYER_ERRORS = (accounts.AccountError, workspaces.WorkspaceError, sources.SourceError, SupplyError,
                         languages.LanguageError)


def cli_socket(settings: Settings) -> Path:
    """The CLI's way in (see :func:`enclave.provisioning.client.socket_path`, which computes the same)."""
    return settings.run_dir / "provisioning" / "cli.sock"


@dataclass(frozen=True)
class Actor:
    """Who is asking, and what their scopes let them do."""

    name: str
    is_admin: bool
    is_holder: bool
    # The audit log's source of their changes.
    source: str = "hub"

    @classmethod
    def from_hub(cls, model: dict) -> "Actor":
        if model.get("kind", "user") != "user":
            raise web.HTTPError(403, "only accounts provision: a service's token is refused")
        name = model["name"]
        scopes = set(model.get("scopes") or [])
        return cls(name=name, is_admin=SCOPE_ADMIN in scopes,
                   is_holder=SCOPE_CONSENT in scopes or f"{SCOPE_CONSENT}!user={name}" in scopes)


class Provisioning:
    """The service layer, called off the event loop, with the audit recorder of each actor."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.audit = AuditClient(settings)

    def close(self) -> None:
        self.audit.close()

    def recorder(self, actor: Actor) -> Recorder:
        """``record(action, workspace=, detail=)`` as the service layer calls it, inside the change's
        transaction: the record goes to the audit log as ``actor``'s, or the change is rolled back."""
        return Recorder(self.audit, actor.source, actor.name)


class BadRequest(BadInput):
    """A request refused before the service layer is asked (a name, a moment, a body it cannot
    take): ``message`` is a stable code with its text; ``str()`` is the English text."""


class ChangeNotRecorded(AuditUnavailable):
    """A change refused, and rolled back, because the audit log cannot record it (503)."""

    def __init__(self, reason: str) -> None:
        self.message = i18n.Message("audit.unavailable", N_(
            "the audit log cannot record this change, so nothing was changed (%(reason)s)"), {"reason": reason})
        super().__init__(str(self.message))


def refusal_of(exc: BaseException | None) -> i18n.Message | None:
    """The message with a stable code a refusal carries (the service layer's, a declarative file's, a
    request refused before the service layer is asked), or None (an HTTP error, a body the schema
    refuses: their English text alone)."""
    message = getattr(exc, "message", None)
    return message if isinstance(message, i18n.Message) else None


def _check_name(schema: dict, given) -> None:
    """A name (of an account, workspace, release or source) that its schema's pattern refuses, in
    the service layer's words and code rather than the pattern's (:data:`.openapi.NAME_RULES`)."""
    rule = openapi.NAME_RULES.get(schema.get("pattern"))
    if rule and isinstance(given, str) and not re.match(schema["pattern"], given):
        code, text, param = rule
        raise BadRequest(code, text, **{param: given[:100]})


def _moment(value: str | None, field: str) -> datetime | None:
    """An RFC 3339 date and time with its offset, in UTC; None stays None."""
    if value is None:
        return None
    if _MOMENT.match(value) is None:
        if _naive_moment(value):
            raise BadRequest("request.moment_without_offset", N_(
                "%(field)s %(value)s needs its offset from UTC (Z, or +08:00)"), field=field, value=repr(value))
        raise BadRequest("request.bad_moment", N_(
            "%(field)s %(value)s is not a date and time with its offset (2027-06-30T00:00:00Z)"), field=field,
            value=repr(value))
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except ValueError as exc:  # a 30 February, an hour 25
        raise BadRequest("request.impossible_moment", N_("%(field)s %(value)s is not a date and time: %(reason)s"),
                         field=field, value=repr(value), reason=str(exc)) from None


def _naive_moment(value: str) -> bool:
    try:
        return datetime.fromisoformat(value).tzinfo is None
    except ValueError:
        return False


def _account(view: accounts.AccountView) -> dict:
    return {**view.describe(), "created_at": view.created_at.isoformat(timespec="seconds"), "usable": view.usable}


def _consent_request(ws: workspaces.WorkspaceView, release: str) -> dict:
    asked = ws.awaiting[release]
    return {"workspace": ws.name, "purpose": ws.purpose, "release": release, "columns": asked["columns"],
            "reason": asked["reason"], "requested_by": asked["requested_by"]}


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    """What every route does before its method: refuse compressed bodies, identify the caller (before
    any body is parsed), and take its path parameters as the OpenAPI document types them.

    ``operation_path`` is the route's path in the document; :attr:`params` holds the path parameters,
    typed and validated.
    """

    hub_auth_class = RevocableHubOAuth  # a revoked token is refused within seconds

    operation_path: str | None = None

    @property
    def provisioning(self) -> Provisioning:
        return self.settings["provisioning"]

    @property
    def enclave_settings(self) -> Settings:
        return self.provisioning.settings

    async def prepare(self):
        encoding = self.request.headers.get("Content-Encoding", "identity").lower()
        if encoding not in ("", "identity"):
            raise web.HTTPError(415, f"compressed bodies are not accepted (Content-Encoding: {encoding})")
        self._actor = self._cli_actor() if self.settings.get("cli") else await self._hub_actor()
        op = self.operation()
        query = {name: self.get_query_argument(name) for name in self.request.query_arguments}
        if op is not None:
            in_path = [p["schema"] for p in op.get("parameters", []) if p["in"] == "path"]
            for schema, given in zip(in_path, self.path_args):
                _check_name(schema, given)
        self.params = validation.parameters(op, self.path_args, query, strict=True) if op is not None else {}

    def _cli_actor(self) -> Actor:
        # The socket's folder already keeps everyone but root out; should it ever be loosened, the
        # peer's uid, from the kernel, still does.
        peer = self.request.connection.stream.socket.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", peer)
        if uid != 0:
            raise web.HTTPError(403, f"only root may use the CLI's socket (uid {uid} is not)")
        name = self.request.headers.get(ACTOR_HEADER, "")
        if not _OS_USER.match(name):
            raise web.HTTPError(400, f"the CLI's socket needs the {ACTOR_HEADER} header: the OS user who runs the"
                                     f" command (got {name[:40]!r})")
        return Actor(name=name, is_admin=True, is_holder=False, source="cli")

    async def _hub_actor(self) -> Actor | None:
        """The caller as JupyterHub identifies them (HubAuth's awaitable form, on the event loop: see
        :meth:`enclave.exports.app.BaseHandler._authenticate`); None for nobody."""
        model = await self.hub_auth.get_user(self, sync=False)
        try:
            allowed = self.check_hub_user(model) if model else None
        except UserNotAllowed:
            raise web.HTTPError(403, f"{model['kind']} {model['name']} may not use the provisioning service") from None
        self._hub_auth_user_cache = self.current_user = allowed
        if not allowed:
            return None
        self.hub_auth._persist_url_token_if_set(self)
        return Actor.from_hub(allowed)

    def get_current_user(self):
        return getattr(self, "_hub_auth_user_cache", None)

    def check_xsrf_cookie(self):
        """JupyterHub's check of a cookie-authenticated POST, which also needs the _xsrf cookie (as
        :meth:`enclave.exports.app.BaseHandler.check_xsrf_cookie`)."""
        if not self.get_cookie("_xsrf"):
            raise web.HTTPError(403, "the _xsrf cookie is missing")
        super().check_xsrf_cookie()

    def operation(self) -> dict | None:
        if self.operation_path is None:
            return None
        try:
            return openapi.operation(self.operation_path, self.request.method.lower())
        except KeyError:
            return None  # a method the route does not take: tornado answers 405

    # -- who may --

    def _caller(self) -> Actor:
        if self._actor is None:
            raise web.HTTPError(403, "not authenticated: send 'Authorization: token ...'")
        return self._actor

    def admin(self) -> Actor:
        actor = self._caller()
        if not actor.is_admin:
            raise web.HTTPError(403, f"{actor.name} may not provision: that takes the scope {SCOPE_ADMIN} (admins)")
        return actor

    def holder(self) -> Actor:
        actor = self._caller()
        if not actor.is_holder:
            raise web.HTTPError(403, f"{actor.name} answers no attachment requests: that takes the scope"
                                     f" {SCOPE_CONSENT} (data holders)")
        return actor

    # -- doing --

    async def call(self, fn, *args, **kwargs):
        """Run a service-layer function off the event loop (database work blocks)."""
        return await IOLoop.current().run_in_executor(None, partial(fn, *args, **kwargs))

    async def change(self, actor: Actor, fn, *args, **kwargs):
        """A change by ``actor``, recorded as theirs."""
        return await self.call(fn, self.enclave_settings, *args, record=self.provisioning.recorder(actor), **kwargs)

    def json_body(self) -> dict:
        """The JSON body, of bounded depth, as the operation's schema describes it; a field the
        operation does not take is named (a misspelt field would otherwise change nothing)."""
        try:
            text = self.request.body.decode("utf-8") if self.request.body else "{}"
        except UnicodeDecodeError:
            raise BadRequest("request.not_utf8", N_("the request body is not UTF-8 text")) from None
        value = validation.parse_json(text, "the request body")
        if not isinstance(value, dict):
            raise BadRequest("request.not_an_object", N_("the request body must be a JSON object"))
        schema = self.operation()["requestBody"]["content"]["application/json"]["schema"]
        if schema.get("additionalProperties") is False:
            unknown = sorted(set(value) - set(schema["properties"]))
            if unknown:
                raise BadRequest("request.unknown_field", N_("unknown field %(field)s; this operation takes %(fields)s"),
                                 field=repr(unknown[0]), fields=", ".join(schema["properties"]))
        for field, given in value.items():
            _check_name(schema.get("properties", {}).get(field, {}), given)
        validation.validate(schema, value, "")
        return value

    def write_json(self, value, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def set_default_headers(self):
        self.set_header("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = error_message(exc) or (str(exc) if isinstance(exc, (ExportError, *_SERVICE_LAYER_ERRORS,
                                                                      ReleaseError, AuditError)) else None)
        if status_code == 405:
            self.set_header("Allow", ", ".join(m for m in self.SUPPORTED_METHODS if getattr(
                type(self), m.lower()) is not getattr(web.RequestHandler, m.lower())))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "error": message or self._reason,
                                **_coded(refusal_of(exc))}))

    def _handle_request_exception(self, e):
        if isinstance(e, AuditRecordRefused):  # a bug: the service layer's record is not one the log knows
            app_log.error("the audit log refused the record of %s %s: %s", self.request.method, self.request.path, e)
            e = AuditRecordRefused(f"the audit log refused the record of this change ({e}); nothing was changed")
            self.send_error(500, exc_info=(type(e), e, e.__traceback__))
            return
        if isinstance(e, AuditUnavailable):  # the change was rolled back
            app_log.error("%s %s refused: %s", self.request.method, self.request.path, e)
            e = ChangeNotRecorded(str(e))
        status = _status(e, set(self.path_args))
        if status is None:
            super()._handle_request_exception(e)
            return
        self.send_error(status, exc_info=(type(e), e, e.__traceback__))


def _status(e: BaseException, path_values: set[str]) -> int | None:
    """The answer to an error of the service layer, the validation or the audit log; None: a bug (500).
    ``path_values``: what the request's path names."""
    if isinstance(e, ExportError):  # the document's validation
        return e.status
    if isinstance(e, ReleaseError):
        return 400
    if isinstance(e, _SERVICE_LAYER_ERRORS):
        named = _UNKNOWN.get(e.code)
        return 404 if named and e.params.get(named) in path_values else 409
    if isinstance(e, AuditUnavailable):
        return 503
    return None


def _coded(refusal: i18n.Message | None) -> dict:
    """A JSON refusal's ``code``, ``text`` (English, with its ``%(name)s`` placeholders: what a client
    translates) and ``params`` (what fills them); nothing for a refusal without a code."""
    if refusal is None:
        return {}
    return {"code": refusal.code, "text": refusal.text, "params": dict(refusal.params)}


class NoRouteHandler(BaseHandler):
    def prepare(self):
        raise web.HTTPError(404, f"no such route: {self.request.path}")


class OpenAPIHandler(BaseHandler):
    operation_path = "/openapi.json"

    async def get(self):
        self.write_json(openapi.openapi_document(self.settings["prefix"]))


# -- accounts --


class AccountsAPI(BaseHandler):
    operation_path = "/accounts"

    async def get(self):
        self.admin()
        views = await self.call(accounts.all_accounts, self.enclave_settings)
        self.write_json([_account(v) for v in views])

    async def post(self):
        actor = self.admin()
        body = self.json_body()
        generated = "password" not in body
        password = accounts.generate_password() if generated else body["password"]
        await self.change(actor, accounts.add_user, body["name"], body["roles"], password,
                          expires_at=_moment(body.get("expires_at"), "expires_at"))
        view = await self.call(accounts.get_account, self.enclave_settings, body["name"])
        self.write_json({**_account(view), **({"password": password} if generated else {})}, status=201)


class AccountAPI(BaseHandler):
    operation_path = "/accounts/{username}"

    async def get(self, _):
        self.admin()
        self.write_json(_account(await self.call(accounts.get_account, self.enclave_settings, self.params["username"])))

    async def delete(self, _):
        actor = self.admin()
        await self.change(actor, accounts.remove_user, self.params["username"])
        self.write_json({"name": self.params["username"], "removed": True})


class AccountRolesAPI(BaseHandler):
    operation_path = "/accounts/{username}/roles"

    async def put(self, _):
        actor = self.admin()
        view = await self.change(actor, accounts.set_roles, self.params["username"], self.json_body()["roles"])
        self.write_json(_account(view))


class AccountDisableAPI(BaseHandler):
    operation_path = "/accounts/{username}/disable"

    async def post(self, _):
        actor = self.admin()
        view = await self.change(actor, accounts.disable, self.params["username"], self.json_body()["reason"])
        self.write_json(_account(view))


class AccountEnableAPI(BaseHandler):
    operation_path = "/accounts/{username}/enable"

    async def post(self, _):
        actor = self.admin()
        self.write_json(_account(await self.change(actor, accounts.enable, self.params["username"])))


class AccountExpiryAPI(BaseHandler):
    operation_path = "/accounts/{username}/expiry"

    async def put(self, _):
        actor = self.admin()
        expires_at = _moment(self.json_body()["expires_at"], "expires_at")
        self.write_json(_account(await self.change(actor, accounts.set_expiry, self.params["username"], expires_at)))


class LanguageAPI(BaseHandler):
    operation_path = "/languages/{username}"

    async def put(self, _):
        actor = self.admin()
        await self.change(actor, languages.set_language, self.params["username"], self.json_body()["language"])
        self.set_status(204)


class AccountThrottlesAPI(BaseHandler):
    operation_path = "/accounts/{username}/throttles"

    async def delete(self, _):
        actor = self.admin()
        name = self.params["username"]
        forgotten = await self.change(actor, accounts.clear_throttle, name, self.params.get("client"))
        self.write_json({"name": name, "forgotten": forgotten})


class ThrottlesAPI(BaseHandler):
    operation_path = "/throttles"

    async def get(self):
        self.admin()
        found = await self.call(logins.throttles, self.enclave_settings)
        self.write_json([{"username": t.username, "client": t.client, "failures": t.failures,
                          "until": t.until.isoformat(timespec="seconds") if t.until else None} for t in found])


# -- workspaces --


class WorkspacesAPI(BaseHandler):
    operation_path = "/workspaces"

    async def get(self):
        self.admin()
        self.write_json([ws.describe() for ws in await self.call(workspaces.all_workspaces, self.enclave_settings)])

    async def post(self):
        actor = self.admin()
        body = self.json_body()
        view = await self.change(actor, workspaces.create, body["name"], purpose=body.get("purpose", ""),
                                 holder=body.get("holder"), expires_at=_moment(body.get("expires_at"), "expires_at"))
        self.write_json(view.describe(), status=201)


class WorkspaceAPI(BaseHandler):
    operation_path = "/workspaces/{workspace}"

    async def get(self, _):
        actor = self._caller()
        name = self.params["workspace"]
        if not actor.is_admin:
            # A data holder reads the workspaces that ask them for a release; nobody else is told
            # whether a workspace exists.
            asking = await self.call(workspaces.awaiting_consent, self.enclave_settings, actor.name) \
                if actor.is_holder else []
            if name not in {ws.name for ws, _ in asking}:
                self.admin()
        self.write_json((await self.call(workspaces.get, self.enclave_settings, name)).describe())


class WorkspaceChange(BaseHandler):
    """A route that changes a workspace through one service-layer function and answers with the
    workspace after the change."""

    change_status = 200

    async def _change(self, fn, *args):
        actor = self.admin()
        view = await self.change(actor, fn, self.params["workspace"], *args)
        self.write_json(view.describe(), status=self.change_status)


class PurposeAPI(WorkspaceChange):
    operation_path = "/workspaces/{workspace}/purpose"

    async def put(self, _):
        await self._change(workspaces.set_purpose, self.json_body()["purpose"])


class HolderAPI(WorkspaceChange):
    operation_path = "/workspaces/{workspace}/holder"

    async def put(self, _):
        await self._change(workspaces.set_holder, self.json_body()["holder"])


class ExpiryAPI(WorkspaceChange):
    operation_path = "/workspaces/{workspace}/expiry"

    async def put(self, _):
        await self._change(workspaces.set_expiry, _moment(self.json_body()["expires_at"], "expires_at"))


class SeparationAPI(WorkspaceChange):
    operation_path = "/workspaces/{workspace}/operators-may-review"

    async def put(self, _):
        await self._change(workspaces.set_operators_may_review, self.json_body()["allowed"])


class LimitsAPI(WorkspaceChange):
    operation_path = "/workspaces/{workspace}/limits"

    async def put(self, _):
        await self._change(workspaces.set_limits, self.json_body())


class GuardAPI(WorkspaceChange):
    operation_path = "/workspaces/{workspace}/guard"

    async def put(self, _):
        await self._change(workspaces.set_guard, self.json_body())


class ExportPolicyAPI(WorkspaceChange):
    operation_path = "/workspaces/{workspace}/export-policy"

    async def put(self, _):
        await self._change(workspaces.set_export_policy, self.json_body())


class WorkspaceStatusAPI(BaseHandler):
    operation_path = "/workspaces/{workspace}/status"

    async def get(self, _):
        self.admin()
        self.write_json(await self.call(workspace_status, self.enclave_settings, self.params["workspace"]))


def workspace_status(settings: Settings, name: str) -> dict:
    """What ``describe()`` leaves out, for an admin's listing: the homes' disk use and quota, who
    asked for each release awaiting consent, the export policy's version."""
    view = workspaces.get(settings, name)
    homes = workspaces.home_usages(settings, name)
    return {"name": name, "disk_mb": view.effective_limits(settings.sandbox.limits).disk_mb,
            "homes": {user: {"used_mb": u.used_mb, "quota_mb": u.quota_mb} for user, u in homes.items()},
            "requested_by": {release: asked["requested_by"] for release, asked in view.awaiting.items()},
            "export_policy_version": view.export_policy_version, "export_policy_label": view.export_policy_label()}


class MembersAPI(WorkspaceChange):
    operation_path = "/workspaces/{workspace}/members"
    change_status = 201

    async def post(self, _):
        body = self.json_body()
        await self._change(workspaces.add_member, body["user"], body["role"])


class MemberAPI(WorkspaceChange):
    operation_path = "/workspaces/{workspace}/members/{username}/{role}"

    async def delete(self, *_):
        await self._change(workspaces.remove_member, self.params["username"], self.params["role"])


class ReleasesAPI(BaseHandler):
    operation_path = "/workspaces/{workspace}/releases"

    async def post(self, _):
        actor = self.admin()
        body = self.json_body()
        view = await self.change(actor, workspaces.attach, self.params["workspace"], body["release"], actor.name,
                                 columns=body.get("columns"), reason=body.get("reason", "").strip())
        self.write_json(view.describe(), status=201)


class ReleaseAPI(BaseHandler):
    operation_path = "/workspaces/{workspace}/releases/{release}"

    async def delete(self, *_):
        actor = self.admin()
        view = await self.change(actor, workspaces.detach, self.params["workspace"], self.params["release"],
                                 by=actor.name)
        self.write_json(view.describe())


class FreezeAPI(WorkspaceChange):
    operation_path = "/workspaces/{workspace}/freeze"

    async def post(self, _):
        await self._change(workspaces.freeze, self.json_body()["reason"])


class UnfreezeAPI(WorkspaceChange):
    operation_path = "/workspaces/{workspace}/unfreeze"

    async def post(self, _):
        await self._change(workspaces.unfreeze)


class ArchiveAPI(WorkspaceChange):
    operation_path = "/workspaces/{workspace}/archive"

    async def post(self, _):
        await self._change(workspaces.archive, self.json_body()["reason"])


# -- sources and consents --


class SourcesAPI(BaseHandler):
    operation_path = "/sources"

    async def get(self):
        self.admin()
        self.write_json([s.describe() for s in await self.call(sources.all_sources, self.enclave_settings)])


class StoreAPI(BaseHandler):
    operation_path = "/releases"

    async def get(self):
        self.admin()
        self.write_json(await self.call(releases_in_store, self.enclave_settings))


def releases_in_store(settings: Settings) -> list[dict]:
    """Every release in the store, by name, with its source and the source's data holder."""
    store = settings.release_store
    names = sorted(p.name for p in store.iterdir() if p.is_dir() and RELEASE_NAME.match(p.name)) \
        if store.is_dir() else []
    holders = {s.name: s.holder for s in sources.all_sources(settings)}
    return [{"name": name, "source": sources.source_of(name), "holder": holders.get(sources.source_of(name))}
            for name in names]


class SourceHolderAPI(BaseHandler):
    operation_path = "/sources/{source}/holder"

    async def put(self, _):
        actor = self.admin()
        view = await self.change(actor, sources.set_holder, self.params["source"], self.json_body()["holder"])
        self.write_json(view.describe())


class ConsentsAPI(BaseHandler):
    operation_path = "/consents"

    async def get(self):
        actor = self.holder()
        asking = await self.call(workspaces.awaiting_consent, self.enclave_settings, actor.name)
        self.write_json([_consent_request(ws, release) for ws, release in asking])


class Answer(BaseHandler):
    """The data holder's answer to one attachment request of theirs."""

    async def _answer(self, fn, *args):
        actor = self.holder()
        ws, release = self.params["workspace"], self.params["release"]
        asking = await self.call(workspaces.awaiting_consent, self.enclave_settings, actor.name)
        if (ws, release) not in {(w.name, r) for w, r in asking}:
            raise web.HTTPError(404, f"no request for '{release}' in '{ws}' awaits the consent of {actor.name}")
        view = await self.change(actor, fn, ws, release, actor.name, *args)
        self.write_json(view.describe())


class ConsentAPI(Answer):
    operation_path = "/consents/{workspace}/{release}/consent"

    async def post(self, *_):
        await self._answer(workspaces.consent)


class RefuseAPI(Answer):
    operation_path = "/consents/{workspace}/{release}/refuse"

    async def post(self, *_):
        await self._answer(workspaces.refuse, self.json_body()["reason"])


# -- declarative files --


@web.stream_request_body
class ApplyAPI(BaseHandler):
    """``enclave apply`` as a request: a whole file, so its body may be larger than the others' (the
    limit is raised only once the caller is known to be an admin, before the body is read)."""

    operation_path = "/apply"

    async def prepare(self):
        self._chunks: list[bytes] = []
        self._refusal: Exception | None = None
        try:
            await super().prepare()
            self.admin()
        except Exception as exc:
            if self.request.method != "POST":
                raise
            # Answered once the body is read, within the usual limit: an answer before it would close
            # the connection, which the proxy in front may already be sending the next request on.
            self._refusal = exc
            return
        self.request.connection.set_max_body_size(APPLY_BODY_LIMIT)

    def data_received(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    async def post(self):
        if self._refusal is not None:
            raise self._refusal
        actor = self.admin()
        self.request.body = b"".join(self._chunks)
        body = self.json_body()
        file, dry_run = body["file"], body.get("dry_run", False)
        recorder = self.provisioning.recorder(actor)
        try:
            result = await self.call(apply, self.enclave_settings, body["text"], file, actor.name,
                                     lambda: contextlib.nullcontext(recorder), dry_run=dry_run)
        except ApplyError as exc:
            self._refuse(file, exc.message, [{"line": p.line, "key": p.key, "problem": p.problem} for p in exc.problems])
            return
        except AuditRecordRefused as exc:  # the file's records, together, are more than the log takes
            self._refuse(file, i18n.Message("apply.records_refused", N_(
                "%(file)s is refused; nothing was applied: the audit log does not take its records (%(reason)s)"),
                {"file": file, "reason": str(exc)}), [])
            return
        self.write_json({"file": file, "dry_run": dry_run, "applied": result.applied,
                         "changes": [{"sign": c.sign, "subject": c.subject, "what": c.what, "line": c.line,
                                      "key": c.key} for c in result.changes],
                         "passwords": result.passwords})

    def _refuse(self, file: str, refusal: i18n.Message, problems: list[dict]) -> None:
        self.write_json({"status": 422, "error": str(refusal), **_coded(refusal), "file": file, "problems": problems},
                        status=422)


# -- the CLI's socket alone --


class PasswordAPI(BaseHandler):
    """Set an account's password: routed on the CLI's socket alone (:func:`make_cli_app`), never on
    the HTTP API. An admin's token there must not be able to take over another account (set its
    password, log in as it, act under its name); root on the hub host, the socket's only caller,
    can do anything anyway. Its operation is :data:`.openapi.CLI_ONLY_PATHS`', outside the HTTP
    API's document."""

    operation_path = "/accounts/{username}/password"

    def operation(self) -> dict | None:
        return openapi.CLI_ONLY_PATHS[self.operation_path].get(self.request.method.lower())

    async def put(self, _):
        actor = self.admin()
        name = self.params["username"]
        given = self.json_body().get("password")
        password = accounts.generate_password() if given is None else given
        await self.change(actor, accounts.set_password, name, password)
        self.write_json({"name": name, **({"password": password} if given is None else {})})


# -- applications --


def api_routes(prefix: str) -> list[tuple[str, type]]:
    """The API's routes under ``prefix``: one per path of the OpenAPI document, and the document."""
    a = prefix.rstrip("/") + "/api"
    handlers = [OpenAPIHandler, AccountsAPI, AccountAPI, AccountRolesAPI, AccountDisableAPI, AccountEnableAPI,
                AccountExpiryAPI, AccountThrottlesAPI, LanguageAPI, ThrottlesAPI, WorkspacesAPI, WorkspaceAPI, PurposeAPI, HolderAPI, ExpiryAPI, SeparationAPI,
                LimitsAPI, GuardAPI, ExportPolicyAPI, WorkspaceStatusAPI, MembersAPI, MemberAPI, ReleasesAPI,
                ReleaseAPI, FreezeAPI, UnfreezeAPI, ArchiveAPI, StoreAPI, SourcesAPI, SourceHolderAPI, ConsentsAPI,
                ConsentAPI, RefuseAPI, ApplyAPI]
    return _routes(a, handlers)


def _routes(api: str, handlers: list[type]) -> list[tuple[str, type]]:
    return [(api + re.sub(r"\{[a-z_]+\}", "([^/]+)", handler.operation_path), handler) for handler in handlers]


def make_app(provisioning: Provisioning, prefix: str) -> web.Application:
    """The API under ``prefix``, for JupyterHub's callers."""
    p = prefix.rstrip("/") + "/"
    routes = [(p + "oauth_callback", HubOAuthCallbackHandler), *api_routes(p)]
    from .pages import page_routes  # the admins' and data holders' pages (they build on this module)
    routes += page_routes(p)
    return web.Application(routes, provisioning=provisioning, prefix=p, cookie_secret=os.urandom(32),
                           default_handler_class=NoRouteHandler)


def make_cli_app(provisioning: Provisioning) -> web.Application:
    """The same API on the CLI's socket, the actor named in the request, an admin; and the socket's
    own route, which the HTTP API must not serve: setting a password (:class:`PasswordAPI`)."""
    return web.Application([*api_routes("/"), *_routes("/api", [PasswordAPI])], provisioning=provisioning,
                           prefix="/", cli=True, default_handler_class=NoRouteHandler)


def bind_cli_socket(settings: Settings):
    """The CLI's socket, in a directory only root may enter (made so again if it was loosened).

    A socket already there is replaced: one left by a service that was killed, or the socket of a
    service the CLI started for the while (``--cli-only``) when the hub starts meanwhile. That
    service keeps serving the connections it has, and on stopping leaves the new socket alone
    (:func:`_unlink_if_ours`)."""
    path = cli_socket(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chown(path.parent, 0, 0)
    path.parent.chmod(0o700)
    return path, bind_unix_socket(str(path), mode=0o600)


def _unlink_if_ours(path: Path, bound: os.stat_result) -> None:
    """Remove the socket file this service bound, unless another service has bound that path since."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return
    if (now.st_dev, now.st_ino) == (bound.st_dev, bound.st_ino):
        path.unlink(missing_ok=True)


async def serve(settings: Settings, cli_only: bool = False) -> None:
    """Serve until asked to stop (SIGINT, SIGTERM: JupyterHub stopping its services, or the CLI that
    started it for the while ending) or until the process that started it is gone.

    ``cli_only``: the CLI's socket alone, no HTTP port and no JupyterHub: the service the ``enclave``
    command starts for the while when the hub is not running (:mod:`enclave.provisioning.client`).
    Its changes are recorded by the audit service that runs beside it (the hub's, or one the command
    started for the while)."""
    provisioning = Provisioning(settings)
    http = None
    if not cli_only:
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/provisioning/")
        url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", f"http://127.0.0.1:{settings.provisioning.port}"))
        http = HTTPServer(make_app(provisioning, prefix), max_body_size=BODY_LIMIT, xheaders=True)
        http.listen(url.port, url.hostname)
    sock_path, sock = bind_cli_socket(settings)
    bound = sock_path.stat()
    cli = HTTPServer(make_cli_app(provisioning), max_body_size=BODY_LIMIT)
    cli.add_socket(sock)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stop_with_parent()
    app_log.info("provisioning service on %s (CLI socket %s)", "the CLI socket alone" if cli_only else url.geturl(),
                 sock_path)
    await stop.wait()

    app_log.info("provisioning service stopping")
    # The socket first: a new service binds it only once it has the port, which this one still holds.
    cli.stop()
    _unlink_if_ours(sock_path, bound)
    if http is not None:
        http.stop()
    # Changes already running in worker threads finish (commit, or roll back) and are answered
    # before the connections are closed and the audit client with them.
    await loop.shutdown_default_executor()
    await asyncio.gather(*(server.close_all_connections() for server in (cli, http) if server is not None))
    provisioning.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m enclave.provisioning.app",
                                     description="The provisioning service (JupyterHub runs it).")
    parser.add_argument("--cli-only", action="store_true",
                        help="Serve the CLI's socket alone, without the hub (the enclave command starts it so).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[provisioning %(levelname)s %(asctime)s] %(message)s")
    asyncio.run(serve(load_settings_or_exit(), cli_only=args.cli_only))


if __name__ == "__main__":
    main()
