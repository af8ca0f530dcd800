"""The export review service: a JupyterHub-managed tornado app.

Two listeners share one :class:`~enclave.exports.service.ExportService`:

* HTTP on loopback, behind the proxy at ``/services/exports/``: pages for reviewers and requesters
  (HubOAuth login) and the JSON API under ``api/`` (HubOAuth cookie or ``Authorization: token``).
* The intake socket ``$ENCLAVE_HOME/run/exports/intake.sock``, mounted into each sandbox's server
  side: only the requester's API, and only with a token (the single-user server's own).

Who the caller is always comes from JupyterHub (``/hub/api/user`` for the token); every
authorisation decision is the service's. Cookie-authenticated POSTs must carry the ``_xsrf`` token
(JupyterHub's HubOAuth checks it before accepting the cookie).

Every handler identifies its caller in ``prepare()``, before any body is parsed, and takes its
parameters and JSON body as the OpenAPI document (:mod:`~enclave.exports.openapi`) describes its
operation: anything else is a 400 naming the field, before the service is asked.

Submissions, checks, votes, decisions, releases, downloads and revocations are recorded in the
audit log before they are committed; when the audit service cannot take a record, the operation
is not done and the caller gets 503 (see :class:`~enclave.exports.service.NotRecorded`).

Request bodies: every route but the uploads takes at most :data:`FORM_BODY_LIMIT`, which tornado
reads before any handler code runs. The upload routes (:class:`UploadHandler`) decide from the
headers who is asking and whether they may submit, and only then let the connection read up to
:func:`max_body_bytes`.

Refusals carry a stable code (issue #17): the service's (:class:`~enclave.exports.service.ExportError`)
and the web edge's (:class:`~enclave.http_refusals.HTTPRefusal`: authentication, upload limits, bad
form bodies). The API's JSON error has the English ``error`` with the ``code``, the English ``text``
with its ``params``, and ``message``, the text in the caller's language; a page shows the message in
the reader's language with the code in ``data-code``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
from functools import partial
from pathlib import Path
from urllib.parse import quote, unquote, urlencode, urlparse

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from sqlalchemy import select
from tornado import httputil, web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.log import app_log
from tornado.netutil import bind_unix_socket

from .. import db, i18n, languages
from ..http_refusals import HTTPRefusal
from ..hub_oauth import RevocableHubOAuth
from ..i18n import N_, Message
from ..services import error_message, stop_with_parent
from ..settings import Settings, load_settings_or_exit
from . import checks, openapi, render, workflow
from ..sealed.service import SealedRuns, run_queue
from .service import Actor, ExportError, ExportService, Upload
from .store import sha256
from .sockets import intake_socket

TEMPLATES = Path(__file__).parent / "templates"
PAGE_CSP = (
    "default-src 'self'; script-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:;"
    " frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'"
)
_MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "svg": "image/svg+xml"}
# The body every route but the uploads accepts: forms and JSON.
FORM_BODY_LIMIT = 64 * 2**10
# The message a page shows once after a form is sent (a vote, a decision, a comment): a signed
# cookie the next page takes, good for a few minutes.
FLASH_COOKIE = "enclave-exports-flash"
FLASH_MAX_AGE_DAYS = 10 / (24 * 60)
# The requests awaiting a reviewer's vote listed first in the queue, at most.
MAX_AWAITING = 50
NOT_AUTHENTICATED = Message("export.not_authenticated", N_(
    "not authenticated: send 'Authorization: token ...', or log in and send the _xsrf token (form field or"
    " X-XSRFToken header; uploads: the header)"))


def refusal_of(exc: BaseException | None) -> Message | None:
    """The message with a stable code a refusal carries (the service's, an :class:`HTTPRefusal` of the
    web edge's), or None (tornado's own errors: their reason phrase alone)."""
    message = getattr(exc, "message", None)
    return message if isinstance(message, Message) else None


def max_body_bytes(settings: Settings) -> int:
    """The body the upload routes accept."""
    # Room for a few files at the cap; a file over the cap still gets a clear 413 from the service.
    return 4 * settings.exports.max_file_mb * 2**20 + 2**20


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    """What every route does before its method: refuse compressed bodies, identify the caller (before
    any body is parsed), and take its path and query parameters as the OpenAPI document types them.

    ``operation_path`` is the route's path in the document, whose operation for the request's method
    (or ``operation_method``, for a page that takes an operation's parameters) states the parameters
    and the JSON body; :attr:`params` holds the parameters given, typed and validated.
    """

    hub_auth_class = RevocableHubOAuth  # a revoked token is refused within seconds

    api = True
    operation_path: str | None = None
    operation_method: str | None = None

    @property
    def service(self) -> ExportService:
        return self.settings["service"]

    @property
    def prefix(self) -> str:
        return self.settings["prefix"]

    async def prepare(self):
        encoding = self.request.headers.get("Content-Encoding", "identity").lower()
        if encoding not in ("", "identity"):
            raise HTTPRefusal(415, Message("export.compressed_body", N_(
                "compressed uploads are not accepted (Content-Encoding: %(encoding)s)"), {"encoding": encoding}))
        await self._authenticate()
        op = self.operation()
        if op is not None and self.api:
            self.actor()  # an API caller who is nobody is refused before anything they sent is looked at
        query = {name: self.get_query_argument(name) for name in self.request.query_arguments}
        if not self.api:
            query = {name: value for name, value in query.items() if value}  # a page's blank filter: none
        self.params = openapi.parameters(op, self.path_args, query, strict=self.api) if op is not None else {}

    async def _authenticate(self) -> None:
        """Identify the caller with the hub, asking HubAuth's awaitable form on the event loop.

        HubAuthenticated's own ``get_current_user`` asks the blocking form, which runs in HubAuth's
        single worker thread; when a cookie's _xsrf does not match, HubAuth sets a new _xsrf cookie
        and asks for the current user again from that thread, which then waits on itself, and the
        whole service with it. Here nothing on the path waits on a thread.
        """
        model = await self.hub_auth.get_user(self, sync=False)
        try:
            allowed = self.check_hub_user(model) if model else None
        except UserNotAllowed:
            raise HTTPRefusal(403, Message("export.not_allowed", N_(
                "%(kind)s %(name)s may not use the export review service"),
                {"kind": model["kind"], "name": model["name"]})) from None
        self._hub_auth_user_cache = self.current_user = allowed
        if allowed:
            self.hub_auth._persist_url_token_if_set(self)

    def get_current_user(self):
        """Who :meth:`prepare` identified; nobody until then (as while HubAuth sets an _xsrf cookie)."""
        return getattr(self, "_hub_auth_user_cache", None)

    def check_xsrf_cookie(self):
        """JupyterHub's check of a cookie-authenticated POST, which also needs the _xsrf cookie: without
        it, HubAuth compares the token sent with one it makes afresh for the session, and those are
        equal when both were made in the same second."""
        if not self.get_cookie("_xsrf"):
            raise HTTPRefusal(403, Message("export.xsrf_cookie_missing", N_("the _xsrf cookie is missing")))
        super().check_xsrf_cookie()

    def operation(self) -> dict | None:
        """The OpenAPI operation this request is an instance of (None: a route or method it has none for)."""
        if self.operation_path is None:
            return None
        try:
            return openapi.operation(self.operation_path, self.operation_method or self.request.method.lower())
        except KeyError:
            return None  # a method the route does not take: tornado answers 405

    def set_default_headers(self):
        self.set_header("Content-Security-Policy", PAGE_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Cache-Control", "no-store")

    def actor(self) -> Actor:
        model = self.current_user
        if not model:
            raise HTTPRefusal(403, NOT_AUTHENTICATED)
        if self.settings.get("intake") and not getattr(self, "_token_authenticated", False):
            raise HTTPRefusal(403, Message("export.intake_token_only", N_(
                "the intake socket accepts only token authentication")))
        return Actor.from_hub(model)

    async def call(self, fn, *args, **kwargs):
        """Run a service operation off the event loop (checks and database work block)."""
        return await IOLoop.current().run_in_executor(None, partial(fn, *args, **kwargs))

    def json_body(self) -> dict:
        """The JSON body, of bounded depth, as the operation's schema describes it."""
        return openapi.json_body(self.operation(), self.request.body)

    def write_json(self, value, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs) -> None:
        """The refusal as the API's JSON (``status``, the English ``error``; for a refusal with a code,
        its ``code``, English ``text`` and ``params``, and ``message``, the text in the caller's
        language) or as a page in the reader's language with the code in ``data-code``."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        refusal = refusal_of(exc)
        message = error_message(exc) or (str(exc) if isinstance(exc, ExportError) else None)
        message = message or self._reason
        if status_code == 405:
            self.set_header("Allow", ", ".join(m for m in self.SUPPORTED_METHODS if getattr(
                type(self), m.lower()) is not getattr(web.RequestHandler, m.lower())))
        if self.api:
            body = {"status": status_code, "error": message}
            if refusal is not None:
                locale = self.page_locale()
                self.set_header("Content-Language", i18n.HTML_LANG[locale])
                self.add_header("Vary", "Accept-Language")
                body.update(code=refusal.code, text=refusal.text, params=dict(refusal.params),
                            message=refusal.render(locale))
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(body))
        else:
            self.finish(self.render_page("error.html", status=status_code, reason=self._reason,
                                         refusal=refusal, message=message))

    def _handle_request_exception(self, e):
        if isinstance(e, ExportError):
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)

    def with_finding_messages(self, doc: dict) -> dict:
        """``doc`` (a request, a check's result, or a document holding them under ``request`` or
        ``files``) with each finding's ``message``: its reason in the caller's language (as
        :meth:`page_locale` chooses it), next to the English ``reason`` and the stable ``code``; and
        a file the checks refused outright, its refusal's (next to the English ``rejected``)."""
        locale = None

        def localised(value):
            nonlocal locale
            if isinstance(value, list):
                return [localised(item) for item in value]
            if not isinstance(value, dict):
                return value
            if "rejected" in value and "code" in value:  # a file the checks refused outright
                if locale is None:
                    locale = self.page_locale()
                return {**value, "message": Message(value["code"], value["text"], value["params"]).render(locale)}
            if "checks" in value and isinstance(value["checks"], list):
                if locale is None:
                    locale = self.page_locale()
                return {**value, "checks": [{**c, "message": checks.reason_in(c, locale)} if isinstance(c, dict)
                                            and "reason" in c else c for c in value["checks"]]}
            return {key: localised(value[key]) if key in ("files", "request", "requests") else value[key]
                    for key in value}

        out = localised(doc)
        if locale is not None:
            self.set_header("Content-Language", i18n.HTML_LANG[locale])
            self.add_header("Vary", "Accept-Language")
        return out

    def page_locale(self) -> str:
        """The language of this request's pages: the one the caller chose on the hub's home page
        (stored in Enclave's database, :mod:`enclave.languages`), else their browser's
        (``Accept-Language``), else English."""
        name = (self.current_user or {}).get("name")
        preference = languages.language_of(self.service.settings, name) if name else None
        return i18n.negotiate(self.request.headers.get("Accept-Language"), preference)

    def render_page(self, template: str, **ns) -> str:
        model = self.current_user or {}
        actor = Actor.from_hub(model) if model else None
        locale = self.page_locale()
        env: Environment = self.settings["jinja"][locale]
        self.set_header("Content-Language", i18n.HTML_LANG[locale])
        self.add_header("Vary", "Accept-Language")
        return env.get_template(template).render(
            prefix=self.prefix, user=model.get("name", ""), xsrf=self.xsrf_token.decode(),
            can_review=bool(actor and (actor.can_review or actor.is_admin)),
            can_request=bool(actor and actor.can_request),
            holds_a_workspace=bool(actor) and _holds_a_workspace(self.service.settings, actor.name), **ns,
        )


# -- JSON API --


@web.stream_request_body
class UploadHandler(BaseHandler):
    """A route that takes files in its POST requests, up to :func:`max_body_bytes`.

    Tornado reads a handler's whole body before ``prepare()`` unless the body is streamed, so here
    it is: ``prepare()`` identifies the caller from the headers alone (a token in ``Authorization``,
    or the HubOAuth cookie with an ``X-XSRFToken`` header: an ``_xsrf`` form field is in the body,
    not read yet), asks the service whether they may submit, and only then raises the connection's
    limit from :data:`FORM_BODY_LIMIT`. A refused body over that limit is not read at all.
    """

    def initialize(self):
        self._chunks: list[bytes] = []
        self._refusal: Exception | None = None

    async def prepare(self):
        try:
            if self.request.method == "POST":
                await self._admit()
            else:
                await super().prepare()  # not an upload: the connection's limit stays at FORM_BODY_LIMIT
        except (web.HTTPError, ExportError) as refusal:
            size = self._body_size()
            if size is None or size > FORM_BODY_LIMIT:
                raise
            # A body this small (or none, as a GET's) is read, as any route's is, and refused then:
            # closing the connection with the body unread would often make the proxy answer 503 in
            # place of the refusal, to this caller or to the next one on the proxy's connection.
            self._refusal = refusal

    def refuse_if_refused(self) -> None:
        """Give the answer :meth:`prepare` decided on, once the body is read."""
        if self._refusal is not None:
            raise self._refusal

    async def _admit(self) -> None:
        await super().prepare()
        # The service's own rule: the request scope, a sandbox server's token, an operator of its workspace.
        await self.call(self.service.sandbox_workspace, self.actor())
        size = self._content_length()
        if size is None:
            raise HTTPRefusal(411, Message("export.length_required", N_(
                "send uploads with a Content-Length header: a body of unknown length is not accepted")))
        limit = max_body_bytes(self.service.settings)
        if size > limit:
            raise HTTPRefusal(413, Message("export.body_too_large", N_(
                "the request body is %(size)s bytes, over the limit of %(limit)s MiB for uploads; send fewer or"
                " smaller files"), {"size": size, "limit": limit // 2**20}))
        self.request.connection.set_max_body_size(limit)

    def _content_length(self) -> int | None:
        try:
            return int(self.request.headers["Content-Length"])
        except (KeyError, ValueError):
            return None

    def _body_size(self) -> int | None:
        """The body's length: 0 for a request without one (no Content-Length, no Transfer-Encoding),
        None when unknown (chunked)."""
        if "Content-Length" not in self.request.headers and "Transfer-Encoding" not in self.request.headers:
            return 0
        return self._content_length()

    def data_received(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def upload(self) -> tuple[Actor, list[Upload]]:
        """Who is uploading, and the files of the body received (parsed as tornado parses any body)."""
        actor = self.parse_upload()
        return actor, _uploads(self)

    def parse_upload(self) -> Actor:
        """Parse the body received (as tornado parses any body), check its text fields against the
        operation, and return who is uploading."""
        self.refuse_if_refused()
        self.request.body = b"".join(self._chunks)
        self._chunks.clear()
        try:
            httputil.parse_body_arguments(self.request.headers.get("Content-Type", ""), self.request.body,
                                          self.request.body_arguments, self.request.files, self.request.headers)
        except httputil.HTTPInputError as exc:
            raise HTTPRefusal(400, Message("export.bad_form_body", N_(
                "the upload is not a valid form body: %(detail)s"), {"detail": str(exc)})) from None
        openapi.form_fields(self.operation(), {name: self.get_body_argument(name)
                                               for name in self.request.body_arguments}, "multipart/form-data")
        return self.actor()


def file_name(sent: str) -> str:
    """A file part's name as sent: percent-encoded UTF-8 (RFC 7578, section 4.2), the one encoding
    the guard uses and the API documents. It carries any name, '"', ';', '=', '%' and CJK included;
    a name with control characters decodes to one the service then refuses, saying why. Browsers'
    and urllib3's own escapes of '"', CR and LF (%22, %0D, %0A) decode to those characters too."""
    try:
        return unquote(sent, errors="strict")
    except UnicodeDecodeError:
        raise HTTPRefusal(400, Message("export.bad_file_name_encoding", N_(
            "the file name %(file)s does not decode: percent-encode names as UTF-8 (RFC 7578, section 4.2)"),
            {"file": repr(sent)})) from None


def _uploads(handler: UploadHandler) -> list[Upload]:
    """Multipart: form fields ``title``, ``context``, ``manifest`` (JSON) and ``file`` parts."""
    if not handler.request.headers.get("Content-Type", "").startswith("multipart/form-data"):
        raise HTTPRefusal(400, Message("export.not_multipart", N_(
            "send the files as multipart/form-data with 'file' parts")))
    declared = openapi.manifest(handler.get_body_argument("manifest", "{}")).get("files", {})
    uploads = []
    for part in handler.request.files.get("file", []):
        name = file_name(part.filename)
        meta = declared.get(name) or {}
        uploads.append(Upload(name, part.body, meta.get("sha256"), meta.get("provenance") or {}))
    for name, meta in declared.items():
        if name not in {u.name for u in uploads}:
            raise HTTPRefusal(400, Message("export.manifest_file_missing", N_(
                "the manifest names %(file)s but no file part carries it (truncated upload?)"), {"file": repr(name)}))
    return uploads


class RequestsAPI(UploadHandler):
    operation_path = "/requests"

    async def get(self):
        self.refuse_if_refused()
        p = self.params
        result = await self.call(
            self.service.queue, self.actor(), workspace=p.get("workspace"), state=p.get("state"),
            max_age_days=p.get("max_age_days"), mine=p.get("mine", False), page=p.get("page", 1),
            awaiting_my_vote=p.get("awaiting_my_vote", False),
        )
        self.write_json(self.with_finding_messages(result))

    async def post(self):
        actor, uploads = self.upload()
        request_id = await self.call(
            self.service.submit, actor, self.get_body_argument("title", ""),
            self.get_body_argument("context", ""), uploads,
        )
        self.write_json(self.with_finding_messages(await self.call(self.service.get, actor, request_id)), status=201)


class SealedRunsAPI(UploadHandler):
    """An operator's sealed runs: submitted from their sandbox (the notebook and inputs as files, what
    to keep as the ``request`` field), listed as the operator may see them."""

    operation_path = "/sealed-runs"

    @property
    def sealed(self) -> SealedRuns:
        return self.settings["sealed"]

    async def get(self):
        self.refuse_if_refused()
        self.write_json({"runs": self.with_refusal_messages(await self.call(self.sealed.runs_of, self.actor()))})

    async def post(self):
        actor = self.parse_upload()
        spec = openapi.sealed_run_request(self.get_body_argument("request", "{}"))
        sent = {}
        for part in self.request.files.get("file", []):
            sent[file_name(part.filename)] = part.body
        wanted = [spec["notebook"], *spec.get("inputs", [])]
        for path in wanted:
            if path not in sent:
                raise HTTPRefusal(400, Message("export.sealed_run_file_missing", N_(
                    "%(path)s is named in the request but no file part carries it"), {"path": path}))
            declared = spec.get("manifest", {}).get(path)
            if declared is not None and sha256(sent[path]) != declared.lower():
                raise HTTPRefusal(400, Message("export.upload_corrupted", N_(
                    "upload of %(file)s is truncated or corrupted: %(size)s bytes received do not match the declared"
                    " SHA-256"), {"file": repr(path), "size": len(sent[path])}))
        run = await self.call(self.sealed.submit, actor, spec["release"], spec["notebook"], sent[spec["notebook"]],
                              [(p, sent[p]) for p in spec.get("inputs", [])], spec.get("outputs", []))
        self.write_json(self.with_refusal_messages([run])[0], status=201)

    def with_refusal_messages(self, runs: list[dict]) -> list[dict]:
        """Each refused run's refusal with its ``message`` in the caller's language."""
        locale = None
        out = []
        for run in runs:
            if run.get("refusal"):
                locale = locale or self.page_locale()
                r = run["refusal"]
                run = {**run, "refusal": {**r, "message": Message(r["code"], r["text"], r["params"]).render(locale)}}
            out.append(run)
        return out


class SealedRunReleasesAPI(SealedRunsAPI):
    operation_path = "/sealed-runs/releases"

    async def get(self):
        self.refuse_if_refused()
        self.write_json({"releases": await self.call(self.sealed.releases_of, self.actor())})


class SealedRunWithdrawAPI(BaseHandler):
    operation_path = "/sealed-runs/{run_id}/withdraw"

    async def post(self, run_id):
        runs: SealedRuns = self.settings["sealed"]
        self.write_json(await self.call(runs.withdraw, self.actor(), run_id))


class SealedRunsAwaitingAPI(BaseHandler):
    operation_path = "/sealed-runs/awaiting"

    async def get(self):
        runs: SealedRuns = self.settings["sealed"]
        self.write_json({"runs": await self.call(runs.awaiting_holder, self.actor())})


class SealedRunDecisionAPI(BaseHandler):
    operation_path = "/sealed-runs/{run_id}/decision"

    async def post(self, run_id):
        body = self.json_body()
        runs: SealedRuns = self.settings["sealed"]
        self.write_json(await self.call(runs.decide, self.actor(), run_id, body["approve"], body.get("reason", "")))


class SealedRunPolicyAPI(BaseHandler):
    operation_path = "/workspaces/{workspace}/sealed-run-policy"

    async def get(self, workspace):
        runs: SealedRuns = self.settings["sealed"]
        await self.call(runs.exports.workspace, workspace)  # 404 for a workspace that is not
        self.write_json(await self.call(runs.policy, workspace))

    async def put(self, workspace):
        body = self.json_body()
        runs: SealedRuns = self.settings["sealed"]
        self.write_json(await self.call(runs.set_policy, self.actor(), workspace, body))


class ChecksAPI(UploadHandler):
    operation_path = "/checks"

    async def post(self):
        actor, uploads = self.upload()
        self.write_json(self.with_finding_messages({"files": await self.call(self.service.preflight, actor, uploads)}))


class RequestAPI(BaseHandler):
    operation_path = "/requests/{request_id}"

    async def get(self, request_id):
        self.write_json(self.with_finding_messages(await self.call(self.service.get, self.actor(), request_id)))


class FilesAPI(UploadHandler):
    operation_path = "/requests/{request_id}/files"

    async def post(self, request_id):
        actor, uploads = self.upload()
        changed = await self.call(self.service.update_files, actor, request_id, uploads)
        self.write_json(self.with_finding_messages(
            {"changed": changed, "request": await self.call(self.service.get, actor, request_id)}))


class VotesAPI(BaseHandler):
    operation_path = "/requests/{request_id}/votes"

    async def post(self, request_id):
        body = self.json_body()
        self.write_json(await self.call(self.service.vote, self.actor(), request_id, body["file_id"],
                                        body["decision"], body["reason"]), status=201)


class TransitionsAPI(BaseHandler):
    operation_path = "/requests/{request_id}/transitions"

    async def post(self, request_id):
        body = self.json_body()
        self.write_json(await self.call(self.service.transition, self.actor(), request_id, body["to"],
                                        body.get("reason", "")))


class CommentsAPI(BaseHandler):
    operation_path = "/requests/{request_id}/comments"

    async def post(self, request_id):
        body = self.json_body()
        self.write_json(await self.call(self.service.comment, self.actor(), request_id, body["text"],
                                        body.get("visibility", "private"), body.get("file_id")), status=201)


class LinksAPI(BaseHandler):
    operation_path = "/requests/{request_id}/files/{file_id}/links"

    async def post(self, request_id, file_id):
        link = await self.call(self.service.create_link, self.actor(), request_id, self.params["file_id"])
        self.write_json({"url": f"{self.prefix}download/{link['token']}", "expires_at": link["expires_at"]}, 201)


class ManifestAPI(BaseHandler):
    operation_path = "/requests/{request_id}/files/{file_id}/manifest"

    async def get(self, request_id, file_id):
        self.write_json(await self.call(self.service.manifest, self.actor(), request_id, self.params["file_id"]))


class OpenAPIHandler(BaseHandler):
    """The document itself, for anyone (it is no operation of its own)."""

    def get(self):
        self.write_json(openapi.openapi_document(self.prefix, intake=bool(self.settings.get("intake"))))


class NoRouteHandler(BaseHandler):
    """A path no route takes: 404 before anything else, as JSON under ``api/`` (the document
    promises JSON errors) and as a page elsewhere."""

    async def prepare(self):
        self.api = self.request.path.startswith(self.prefix + "api/")
        raise HTTPRefusal(404, Message("export.no_route", N_("no such page or API operation")))


# -- pages --


class Page(BaseHandler):
    api = False


class HomePage(Page):
    @web.authenticated
    def get(self):
        actor = self.actor()
        if not (actor.can_review or actor.is_admin or actor.can_request) and _holds_a_workspace(
                self.service.settings, actor.name):
            return self.redirect(self.prefix + "sealed-runs")  # a data holder's one page here
        self.redirect(self.prefix + ("queue" if actor.can_review or actor.is_admin else "mine"))


class QueuePage(Page):
    """The review queue: the filters are the list operation's query parameters. The requests awaiting
    the viewer's vote come first, in a list of their own."""

    mine = False
    operation_path, operation_method = "/requests", "get"

    @web.authenticated
    async def get(self):
        actor = self.actor()
        filters = {name: self.params.get(name) for name in ("workspace", "state", "max_age_days")}
        page = self.params.get("page", 1)
        result = await self.call(self.service.queue, actor, mine=self.mine, page=page, **filters)
        awaiting = None
        if not self.mine and not actor.is_admin:  # admins see requests as admins, who do not vote
            awaiting = await self.call(self.service.queue, actor, awaiting_my_vote=True, per_page=MAX_AWAITING)
        reviewed = await self.call(self.service.reviewed_workspaces, actor) if not self.mine else []
        if reviewed is None:
            reviewed = [w.name for w in await self.call(_all_workspaces, self.service)]

        def query(**change):
            args = {k: v for k, v in {**filters, "page": page, **change}.items() if v}
            return urlencode(args)

        self.finish(self.render_page(
            "queue.html", mine=self.mine,
            result=result, awaiting=awaiting, filters=filters, states=list(workflow.STATES), workspaces=reviewed,
            query=query,
        ))


def _all_workspaces(service: ExportService):
    from .. import workspaces

    return workspaces.all_workspaces(service.settings)


class MinePage(QueuePage):
    mine = True


class RequestPage(Page):
    operation_path, operation_method = "/requests/{request_id}", "get"

    @web.authenticated
    async def get(self, request_id, refusal: Message | None = None, status: int = 400):
        actor = self.actor()
        r = await self.call(self.service.get, actor, request_id)
        previews = {}
        if r["role"] != workflow.REQUESTER:
            for f in r["files"]:
                previews[f["id"]] = await self._preview(actor, r, f)
        if refusal:
            self.set_status(status)
        provenance = {f["id"]: render.provenance(f["provenance"]) for f in r["files"]}
        self.finish(self.render_page("request.html", r=r, previews=previews, provenance=provenance, refusal=refusal,
                                     flash=None if refusal else self.take_flash(),
                                     new_version_url=self.new_version_url(r)))

    def new_version_url(self, r: dict) -> str | None:
        """Where the requester sends new versions of a returned request's files: the Exports panel of
        the workspace's JupyterLab, opened on this request."""
        if r["role"] != workflow.REQUESTER or r["state"] != workflow.RETURNED:
            return None
        base = self.settings["hub_base"]
        return (f"{base}user/{quote(r['requester'], safe='')}/{quote(r['workspace'], safe='')}/lab"
                f"?{urlencode({'enclave-exports': r['id']})}")

    def flash(self, message: str) -> None:
        """Show ``message`` once, on the page the browser is sent to next (signed: it is ours)."""
        self.set_signed_cookie(FLASH_COOKIE, json.dumps(message), expires_days=None, path=self.prefix,
                               httponly=True, samesite="Strict", secure=self.request.protocol == "https")

    def take_flash(self) -> str | None:
        raw = self.get_signed_cookie(FLASH_COOKIE, max_age_days=FLASH_MAX_AGE_DAYS)
        if self.get_cookie(FLASH_COOKIE) is not None:
            self.clear_cookie(FLASH_COOKIE, path=self.prefix)
        return json.loads(raw) if raw else None

    async def _preview(self, actor, r, f) -> render.Preview:
        url = f"{self.prefix}requests/{r['id']}/files/{f['id']}"
        if f["kind"] in _MEDIA:
            return render.Preview("image", src=f"{url}/raw")
        if f["kind"] in ("notebook", "html"):
            return render.Preview("frame", src=f"{url}/render")
        if f["kind"] in ("pdf", "binary"):
            return render.Preview("none")
        _, data = await self.call(self.service.file_content, actor, r["id"], f["id"])
        if f["name"].lower().endswith((".csv", ".tsv")):
            return render.Preview("table", table=render.table(data, f["name"], f["checks"]))
        return render.Preview("text", text=render.text(data, f["kind"]))

    async def post_action(self, request_id, operation_path: str, act, done):
        """Do ``act(fields)`` with the form's fields, typed and validated as the JSON body of the API
        operation at ``operation_path`` is; a refusal is shown on the request page. Done, the browser
        is sent back to the request page (post/redirect/get) at the anchor ``done(fields, result)``
        gives with its message: ``(anchor, message)``."""
        op = openapi.operation(operation_path, "post")
        try:
            fields = openapi.form_fields(op, {name: self.get_body_argument(name)
                                              for name in self.request.body_arguments}, "application/json")
            result = await self.call(act, fields)
        except ExportError as exc:
            return await self.get(request_id, refusal=exc.message, status=exc.status)
        anchor, message = done(fields, result)
        self.flash(message)
        self.redirect(f"{self.prefix}requests/{request_id}#{anchor}", status=303)


def _state_words(_, state: str) -> str:
    """A request's state in words, translated by ``_`` (as ``labels.html`` words it)."""
    return {"submitted": _("submitted"), "in_review": _("in review"), "returned": _("returned"),
            "approved": _("approved"), "rejected": _("rejected"), "released": _("released"),
            "withdrawn": _("withdrawn"), "revoked": _("revoked")}.get(state) or state.replace("_", " ")


def _vote_words(_, decision: str) -> str:
    """A reviewer's vote in words, translated by ``_`` (as ``labels.html`` words it)."""
    return {"approve": _("approve"), "request_changes": _("request changes"),
            "reject": _("reject")}.get(decision) or decision.replace("_", " ")


class VotePage(RequestPage):
    async def post(self, request_id):
        actor = self.actor()
        await self.post_action(request_id, VotesAPI.operation_path, lambda f: self.service.vote(
            actor, request_id, f["file_id"], f["decision"], f["reason"]), self.voted)

    def voted(self, fields: dict, result: dict) -> tuple[str, str]:
        _ = i18n.translations(self.page_locale()).gettext
        message = _("Your vote on %(file)s is recorded: %(decision)s.") % {
            "file": result["file"], "decision": _vote_words(_, result["decision"])}
        if result["state"] not in (workflow.SUBMITTED, workflow.IN_REVIEW):
            # The vote decided the request: the top of the page says what happened and what is next.
            return "top", _("%(vote)s The votes decided the request: it is %(state)s.") % {
                "vote": message, "state": _state_words(_, result["state"])}
        return f"file-{fields['file_id']}", message


class TransitionPage(RequestPage):
    async def post(self, request_id):
        actor = self.actor()
        await self.post_action(request_id, TransitionsAPI.operation_path, lambda f: self.service.transition(
            actor, request_id, f["to"], f.get("reason", "")), self.transitioned)

    def transitioned(self, fields: dict, result: dict) -> tuple[str, str]:
        _ = i18n.translations(self.page_locale()).gettext
        return "top", _("Done: the request is %(state)s.") % {"state": _state_words(_, result["state"])}


class CommentPage(RequestPage):
    async def post(self, request_id):
        actor = self.actor()
        await self.post_action(request_id, CommentsAPI.operation_path, lambda f: self.service.comment(
            actor, request_id, f["text"], f.get("visibility", "private")), self.added)

    def added(self, fields: dict, result: dict) -> tuple[str, str]:
        return f"comment-{result['id']}", i18n.translations(self.page_locale()).gettext("Your comment is added.")


class FilePage(Page):
    """A page of one file: its path parameters are those of the file's API operations."""

    operation_path, operation_method = ManifestAPI.operation_path, "get"


class ManifestPage(FilePage):
    """A released file's signed manifest as a page: what was released, who signed it and whether the
    signature holds, the file's provenance; the raw JSON is the API's."""

    @web.authenticated
    async def get(self, request_id, file_id):
        actor = self.actor()
        signed = await self.call(self.service.manifest, actor, request_id, self.params["file_id"])
        r = await self.call(self.service.get, actor, request_id)
        f = next((f for f in r["files"] if f["id"] == self.params["file_id"]), None)
        self.finish(self.render_page(
            "manifest.html", r=r, m=signed["manifest"], signed=signed,
            provenance=render.provenance(f["provenance"]) if f else None,
            json_url=f"{self.prefix}api/requests/{r['id']}/files/{self.params['file_id']}/manifest"))


class DownloadPage(FilePage):
    async def post(self, request_id, file_id):
        link = await self.call(self.service.create_link, self.actor(), request_id, self.params["file_id"])
        self.redirect(f"{self.prefix}download/{link['token']}", status=303)


class DownloadHandler(Page):
    @web.authenticated
    async def get(self, token):
        name, data, _ = await self.call(self.service.download, self.actor(), token)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name, safe='')}")
        self.finish(data)


class RawFile(FilePage):
    @web.authenticated
    async def get(self, request_id, file_id):
        f, data = await self.call(self.service.file_content, self.actor(), request_id, self.params["file_id"])
        self.set_header("Content-Type", _MEDIA.get(f.kind, "text/plain; charset=utf-8"))
        self.set_header("Content-Security-Policy", render.FRAME_CSP)
        self.finish(data)


class RenderedFile(FilePage):
    @web.authenticated
    async def get(self, request_id, file_id):
        f, data = await self.call(self.service.file_content, self.actor(), request_id, self.params["file_id"])
        if f.kind not in ("notebook", "html"):
            raise HTTPRefusal(404, Message("export.not_rendered", N_(
                "%(file)s is shown on the request page, not rendered as HTML"), {"file": repr(f.name)}))
        html = await self.call(render.notebook_html, data) if f.kind == "notebook" else data
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", render.FRAME_CSP)
        self.finish(html)


def _holds_a_workspace(settings: Settings, name: str) -> bool:
    """Whether ``name`` is the data holder of some workspace: one look-up, made for every page, whose
    header links such a reader to their sealed runs."""
    with db.snapshot(settings.enclave_db_url) as s:
        return s.scalar(select(db.Workspace.name).where(db.Workspace.holder == name).limit(1)) is not None


# What separates the user names of a policy's appointed reviewers, as people type lists: commas
# (the Chinese ， and 、 too), semicolons, spaces and new lines.
_NAME_SEPARATORS = re.compile(r"[\s,，、;；]+")
# The limits a holder sets on the page (cpus keeps its default or an API-set value).
_PAGE_LIMITS = ("seconds", "memory_mb", "disk_mb")


def _whole_number(text: str) -> int | str:
    """A form's number as an int (full-width digits too, as Chinese input methods type them); text
    that is not one stays text, for the policy's schema to name the field and the problem."""
    text = text.strip()
    return int(text) if text.isdecimal() and len(text) <= 18 else text


def _boolean(text: str) -> bool | str:
    """A form's yes/no choice (``true``, ``false``); anything else stays text, for the schema to refuse."""
    return {"true": True, "false": False}.get(text, text)


class SealedRunsPage(Page):
    """The data holder's sealed runs: the policy of each workspace whose data holder the reader is, as
    a form, and the runs awaiting their approval, each with Approve and Refuse. Who may do what is
    :class:`~enclave.sealed.service.SealedRuns`'s to decide; its refusals are shown here with their
    codes. A reader who holds no workspace reads that sealed runs are set by data holders."""

    # The one-time message after a form is sent, as on a request's page.
    flash, take_flash = RequestPage.flash, RequestPage.take_flash

    @property
    def sealed(self) -> SealedRuns:
        return self.settings["sealed"]

    @web.authenticated
    async def get(self, refusal: Message | None = None, status: int = 400, sent: dict | None = None):
        actor = self.actor()
        held = [ws for ws in await self.call(_all_workspaces, self.service) if ws.holder == actor.name]
        policies = {ws.name: await self.call(self.sealed.policy, ws.name) for ws in held}
        awaiting = await self.call(self.sealed.awaiting_holder, actor)
        if refusal:
            self.set_status(status)
        self.finish(self.render_page("sealed_runs.html", held=held, policies=policies, awaiting=awaiting,
                                     refusal=refusal, sent=sent, flash=None if refusal else self.take_flash()))

    def done(self, anchor: str, message: str) -> None:
        """Post/redirect/get: back to the page at ``anchor``, saying ``message`` once."""
        self.flash(message)
        self.redirect(f"{self.prefix}sealed-runs#{anchor}", status=303)


class SealedRunPolicyPage(SealedRunsPage):
    """The policy form of one workspace (its ``workspace`` field): the keys whose values differ from
    the workspace's policy go to ``set_policy``, checked first as the API's body is."""

    async def post(self):
        actor = self.actor()
        sent = {name: self.get_body_argument(name, "") for name in (
            "workspace", "approval_required", "runs_per_day", "reviewers", *_PAGE_LIMITS)}
        workspace = sent["workspace"]
        try:
            changes = await self.call(self.policy_changes, workspace, sent)
            # An unchanged form makes no new version of the policy (and no audit record of one).
            policy = await self.call(self.sealed.set_policy, actor, workspace, changes) if changes else None
        except ExportError as exc:
            return await self.get(refusal=exc.message, status=exc.status, sent=sent)
        _ = i18n.translations(self.page_locale()).gettext
        if policy is None:
            message = _("Nothing changed in the sealed-run policy of %(workspace)s.") % {"workspace": workspace}
        else:
            message = _("The sealed-run policy of %(workspace)s is saved (version %(version)s).") % {
                "workspace": workspace, "version": policy["version"]}
        self.done(f"policy-{workspace}", message)

    def policy_changes(self, workspace: str, sent: dict) -> dict:
        """What the form changes in the workspace's policy, typed and checked as the policy API's body."""
        self.service.workspace(workspace)  # an unknown workspace is refused, not given the defaults
        wanted = {
            "approval_required": _boolean(sent["approval_required"]),
            "runs_per_day": _whole_number(sent["runs_per_day"]),
            "reviewers": [name for name in _NAME_SEPARATORS.split(sent["reviewers"]) if name],
            "limits": {key: _whole_number(sent[key]) for key in _PAGE_LIMITS},
        }
        openapi.validate({"$ref": "#/components/schemas/SealedRunPolicy"}, wanted, "")
        current = self.sealed.policy(workspace)
        changes = {key: wanted[key] for key in ("approval_required", "runs_per_day") if wanted[key] != current[key]}
        if sorted(set(wanted["reviewers"])) != current["reviewers"]:
            changes["reviewers"] = wanted["reviewers"]
        limits = {key: value for key, value in wanted["limits"].items() if value != current["limits"][key]}
        if limits:
            changes["limits"] = limits
        return changes


class SealedRunDecisionPage(SealedRunsPage):
    """Approve a run awaiting the reader's approval, or refuse it with a reason its operator reads:
    the form's fields typed and checked as the decision API's body."""

    operation_path, operation_method = SealedRunDecisionAPI.operation_path, "post"

    async def post(self, run_id):
        actor = self.actor()
        try:
            fields = openapi.form_fields(self.operation(), {name: self.get_body_argument(name)
                                                            for name in self.request.body_arguments},
                                         "application/json")
            run = await self.call(self.sealed.decide, actor, run_id, fields["approve"], fields.get("reason", ""))
        except ExportError as exc:
            return await self.get(refusal=exc.message, status=exc.status)
        _ = i18n.translations(self.page_locale()).gettext
        if fields["approve"]:
            message = _("The sealed run of %(notebook)s is approved: it is queued.") % {"notebook": run["notebook"]}
        else:
            message = _("The sealed run of %(notebook)s is refused; its requester reads your reason.") % {
                "notebook": run["notebook"]}
        self.done("awaiting", message)


# -- applications --


def make_app(service: ExportService, prefix: str, hub_base: str = "/") -> web.Application:
    """The pages and the API under ``prefix``; ``hub_base`` is the hub's base URL (JupyterLab's
    servers are under it)."""
    p = prefix.rstrip("/") + "/"
    rid, fid = r"([0-9a-f]{32})", r"(\d+)"
    # One environment per language: each has its translations and formatters installed.
    jinja = {locale: i18n.environment(locale, loader=FileSystemLoader(TEMPLATES), extensions=["jinja2.ext.do"],
                                      autoescape=select_autoescape(["html"]))
             for locale in i18n.LOCALES}
    for locale, env in jinja.items():
        # A finding's reason in the page's language (an older finding: the English it was stored with).
        env.globals["finding_reason"] = partial(checks.reason_in, locale=locale)
    routes = [
        (p, HomePage),
        (p + "oauth_callback", HubOAuthCallbackHandler),
        (p + "queue", QueuePage),
        (p + "mine", MinePage),
        (p + f"requests/{rid}", RequestPage),
        (p + f"requests/{rid}/vote", VotePage),
        (p + f"requests/{rid}/transition", TransitionPage),
        (p + f"requests/{rid}/comment", CommentPage),
        (p + f"requests/{rid}/files/{fid}/raw", RawFile),
        (p + f"requests/{rid}/files/{fid}/render", RenderedFile),
        (p + f"requests/{rid}/files/{fid}/download", DownloadPage),
        (p + f"requests/{rid}/files/{fid}/manifest", ManifestPage),
        (p + r"download/([A-Za-z0-9_-]{20,100})", DownloadHandler),
        (p + "sealed-runs", SealedRunsPage),
        (p + "sealed-runs/policy", SealedRunPolicyPage),
        (p + r"sealed-runs/([0-9a-f]{32})/decision", SealedRunDecisionPage),
    ] + _api_routes(p, intake=False)
    return web.Application(routes, service=service, sealed=SealedRuns(service), prefix=p, jinja=jinja,
                           cookie_secret=os.urandom(32), hub_base=hub_base, default_handler_class=NoRouteHandler)


def _api_routes(p: str, intake: bool) -> list:
    rid, fid = r"([0-9a-f]{32})", r"(\d+)"
    a = p + "api/"
    run = r"([0-9a-f]{32})"
    requester = [
        (a + "openapi.json", OpenAPIHandler),
        (a + "sealed-runs", SealedRunsAPI),
        (a + "sealed-runs/releases", SealedRunReleasesAPI),
        (a + f"sealed-runs/{run}/withdraw", SealedRunWithdrawAPI),
        (a + "requests", RequestsAPI),
        (a + "checks", ChecksAPI),
        (a + f"requests/{rid}", RequestAPI),
        (a + f"requests/{rid}/files", FilesAPI),
        (a + f"requests/{rid}/transitions", TransitionsAPI),
        (a + f"requests/{rid}/comments", CommentsAPI),
    ]
    if intake:
        return requester
    return requester + [
        (a + "sealed-runs/awaiting", SealedRunsAwaitingAPI),
        (a + f"sealed-runs/{run}/decision", SealedRunDecisionAPI),
        (a + r"workspaces/([a-z0-9-]{1,40})/sealed-run-policy", SealedRunPolicyAPI),
        (a + f"requests/{rid}/votes", VotesAPI),
        (a + f"requests/{rid}/files/{fid}/links", LinksAPI),
        (a + f"requests/{rid}/files/{fid}/manifest", ManifestAPI),
    ]


def make_intake_app(service: ExportService) -> web.Application:
    """The sandbox-facing app: the requester's API only, token authentication only."""
    # A cookie is never accepted here (see BaseHandler.actor), but HubOAuth looks for one when a
    # token is unknown, and tornado needs a secret to even look.
    return web.Application(_api_routes("/", intake=True), service=service, sealed=SealedRuns(service), prefix="/",
                           intake=True, cookie_secret=os.urandom(32), default_handler_class=NoRouteHandler)


async def serve(settings: Settings) -> None:
    """Serve until asked to stop (SIGINT, SIGTERM: JupyterHub stopping its services) or until the
    hub that started the service is gone (``kill -9``): an orphan would keep the port, and the
    restarted hub's review service could not start."""
    service = ExportService(settings)
    removed = service.recover()
    if removed:
        app_log.warning("removed %d leftover file(s) of interrupted uploads from the export store", removed)
    try:
        settled = service.settle()
    except ExportError as exc:  # the audit log not up yet, a lock: the next start tries again
        app_log.warning("open requests whose votes are in were not settled: %s", exc)
    else:
        if settled:
            app_log.info("%d open request(s) whose votes were in moved on as the votes decide", settled)
    sealed = SealedRuns(service)
    try:
        moved = sealed.recover()
    except ExportError as exc:  # the audit log not up yet: the runs stay as they are until the next start
        app_log.warning("sealed runs a stopped service left were not recovered: %s", exc)
    else:
        if moved:
            app_log.warning("%d sealed run(s) a stopped service left were queued again or ended", moved)
    queue = asyncio.create_task(run_queue(sealed, settings.sealed_runs.slots))
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/exports/")
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", f"http://127.0.0.1:{settings.exports.port}"))
    hub_base = os.environ.get("JUPYTERHUB_BASE_URL") or "/"
    http = HTTPServer(make_app(service, prefix, hub_base.rstrip("/") + "/"), max_body_size=FORM_BODY_LIMIT,
                      xheaders=True)
    http.listen(url.port, url.hostname)
    sock_path = intake_socket(settings)
    sock_path.parent.mkdir(parents=True, exist_ok=True)
    sock_path.parent.chmod(0o755)
    # Sandboxes run as unprivileged uids of their own: anyone may connect, the token decides.
    intake = HTTPServer(make_intake_app(service), max_body_size=FORM_BODY_LIMIT)
    intake.add_socket(bind_unix_socket(str(sock_path), mode=0o666))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stop_with_parent()  # a hub killed with -9 stops it too
    app_log.info("export review service on %s (intake %s)", url.geturl(), sock_path)
    await stop.wait()

    app_log.info("export review service stopping")
    # Runs in progress are stopped (their sandboxes killed, their files removed); the next start ends
    # them as interrupted, or queues again those still in their pre-run.
    queue.cancel()
    await asyncio.gather(queue, return_exceptions=True)
    # The intake socket first: a new service binds it only once it has the port, which this one
    # still holds, so the socket removed here is never the new service's.
    intake.stop()
    sock_path.unlink(missing_ok=True)
    http.stop()
    await asyncio.gather(intake.close_all_connections(), http.close_all_connections())
    # Operations already running in worker threads finish (commit, or roll back) before the
    # service lets go of the audit log and its database; their callers, gone, were not told
    # they succeeded.
    await loop.shutdown_default_executor()
    service.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[exports %(levelname)s %(asctime)s] %(message)s")
    settings = load_settings_or_exit()
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
