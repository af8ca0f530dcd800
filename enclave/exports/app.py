"""The export review service: a JupyterHub-managed tornado app.

Two listeners share one :class:`~enclave.exports.service.ExportService`:

* HTTP on loopback, behind the proxy at ``/services/exports/``: pages for reviewers and requesters
  (HubOAuth login) and the JSON API under ``api/`` (HubOAuth cookie or ``Authorization: token``).
* The intake socket ``$ENCLAVE_HOME/run/exports/intake.sock``, mounted into each sandbox's server
  side: only the requester's API, and only with a token (the single-user server's own).

Who the caller is always comes from JupyterHub (``/hub/api/user`` for the token); every
authorisation decision is the service's. Cookie-authenticated POSTs must carry the ``_xsrf`` token
(JupyterHub's HubOAuth checks it before accepting the cookie).

Submissions, checks, votes, decisions, releases, downloads and revocations are recorded in the
audit log before they are committed; when the audit service cannot take a record, the operation
is not done and the caller gets 503 (see :class:`~enclave.exports.service.NotRecorded`).

Request bodies: every route but the uploads takes at most :data:`FORM_BODY_LIMIT`, which tornado
reads before any handler code runs. The upload routes (:class:`UploadHandler`) decide from the
headers who is asking and whether they may submit, and only then let the connection read up to
:func:`max_body_bytes`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from functools import partial
from pathlib import Path
from urllib.parse import quote, urlencode, urlparse

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from tornado import httputil, web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.log import app_log
from tornado.netutil import bind_unix_socket

from ..services import stop_when_orphaned
from ..settings import Settings, load_settings_or_exit
from . import render, workflow
from .openapi import openapi_document
from .service import Actor, BadInput, ExportError, ExportService, Upload

TEMPLATES = Path(__file__).parent / "templates"
PAGE_CSP = (
    "default-src 'self'; script-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:;"
    " frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'"
)
_MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "svg": "image/svg+xml"}
# The body every route but the uploads accepts: forms and JSON.
FORM_BODY_LIMIT = 64 * 2**10
# Browsers and urllib3 (the guard's client) send '"', CR and LF in a part's file name as %22, %0D
# and %0A (the HTML form rule); the manifest, being JSON, carries the names as they are.
_FORM_NAME_ESCAPES = {'"': "%22", "\r": "%0D", "\n": "%0A"}


def intake_socket(settings: Settings) -> Path:
    return settings.run_dir / "exports" / "intake.sock"


def max_body_bytes(settings: Settings) -> int:
    """The body the upload routes accept."""
    # Room for a few files at the cap; a file over the cap still gets a clear 413 from the service.
    return 4 * settings.exports.max_file_mb * 2**20 + 2**20


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    api = True

    @property
    def service(self) -> ExportService:
        return self.settings["service"]

    @property
    def prefix(self) -> str:
        return self.settings["prefix"]

    def prepare(self):
        encoding = self.request.headers.get("Content-Encoding", "identity").lower()
        if encoding not in ("", "identity"):
            raise web.HTTPError(415, f"compressed uploads are not accepted (Content-Encoding: {encoding})")

    def set_default_headers(self):
        self.set_header("Content-Security-Policy", PAGE_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Cache-Control", "no-store")

    def actor(self) -> Actor:
        model = self.current_user
        if not model:
            raise web.HTTPError(403, "not authenticated: send 'Authorization: token ...', or log in and send"
                                     " the _xsrf token (form field or X-XSRFToken header; uploads: the header)")
        if self.settings.get("intake") and not getattr(self, "_token_authenticated", False):
            raise web.HTTPError(403, "the intake socket accepts only token authentication")
        return Actor.from_hub(model)

    async def call(self, fn, *args, **kwargs):
        """Run a service operation off the event loop (checks and database work block)."""
        return await IOLoop.current().run_in_executor(None, partial(fn, *args, **kwargs))

    def json_body(self) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        return body

    def int_arg(self, name: str) -> int | None:
        value = self.get_argument(name, "")
        if value == "":
            return None
        try:
            return int(value)
        except ValueError:
            raise web.HTTPError(400, f"{name} must be a whole number, not {value!r}") from None

    def write_json(self, value, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or (str(exc) if isinstance(exc, ExportError) else None)
        message = message or self._reason
        if self.api:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"status": status_code, "error": message}))
        else:
            self.finish(self.render_page("error.html", status=status_code, reason=self._reason, message=message))

    def _handle_request_exception(self, e):
        if isinstance(e, ExportError):
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)

    def render_page(self, template: str, **ns) -> str:
        model = self.current_user or {}
        actor = Actor.from_hub(model) if model else None
        env: Environment = self.settings["jinja"]
        return env.get_template(template).render(
            prefix=self.prefix, user=model.get("name", ""), xsrf=self.xsrf_token.decode(),
            can_review=bool(actor and (actor.can_review or actor.is_admin)),
            can_request=bool(actor and actor.can_request), **ns,
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
        if self.request.method != "POST":
            super().prepare()
            return  # not an upload: the connection's limit stays at FORM_BODY_LIMIT
        try:
            await self._admit()
        except (web.HTTPError, ExportError) as refusal:
            size = self._content_length()
            if size is None or size > FORM_BODY_LIMIT:
                raise
            # A body this small is read, as any route's is, and refused then: closing the connection
            # with the body unread would often make the proxy answer 503 in place of the refusal.
            self._refusal = refusal

    async def _admit(self) -> None:
        super().prepare()
        # HubAuth keeps its answer on the handler. Asked here without blocking the event loop (the
        # blocking form runs in HubAuth's one thread, which deadlocks if the cookie's _xsrf does not
        # match), so that current_user, in actor(), only reads that answer.
        await self.hub_auth.get_user(self, sync=False)
        # The service's own rule: the request scope, a sandbox server's token, an operator of its workspace.
        await self.call(self.service.sandbox_workspace, self.actor())
        size = self._content_length()
        if size is None:
            raise web.HTTPError(411, "send uploads with a Content-Length header: a body of unknown length"
                                     " is not accepted")
        limit = max_body_bytes(self.service.settings)
        if size > limit:
            raise web.HTTPError(413, f"the request body is {size} bytes, over the limit of {limit // 2**20} MiB"
                                     " for uploads; send fewer or smaller files")
        self.request.connection.set_max_body_size(limit)

    def _content_length(self) -> int | None:
        try:
            return int(self.request.headers["Content-Length"])
        except (KeyError, ValueError):
            return None

    def data_received(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def upload(self) -> tuple[Actor, list[Upload]]:
        """Who is uploading, and the files of the body received (parsed as tornado parses any body)."""
        if self._refusal is not None:
            raise self._refusal
        self.request.body = b"".join(self._chunks)
        self._chunks.clear()
        try:
            httputil.parse_body_arguments(self.request.headers.get("Content-Type", ""), self.request.body,
                                          self.request.body_arguments, self.request.files, self.request.headers)
        except httputil.HTTPInputError as exc:
            raise web.HTTPError(400, f"the upload is not a valid form body: {exc}") from None
        return self.actor(), _uploads(self)


def _uploads(handler: UploadHandler) -> list[Upload]:
    """Multipart: form fields ``title``, ``context``, ``manifest`` (JSON) and ``file`` parts."""
    if not handler.request.headers.get("Content-Type", "").startswith("multipart/form-data"):
        raise web.HTTPError(400, "send the files as multipart/form-data with 'file' parts")
    raw = handler.get_body_argument("manifest", "{}")
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise web.HTTPError(400, "the 'manifest' field is not valid JSON") from None
    declared = manifest.get("files", {}) if isinstance(manifest, dict) else None
    if not isinstance(declared, dict):
        raise web.HTTPError(400, "the 'manifest' field must be {\"files\": {name: {sha256, provenance}}}")
    sent_as = {"".join(_FORM_NAME_ESCAPES.get(c, c) for c in name): name for name in declared}
    uploads = []
    for part in handler.request.files.get("file", []):
        # A part named as the form rule escapes a declared name carries that file.
        name = part.filename if part.filename in declared else sent_as.get(part.filename, part.filename)
        meta = declared.get(name) or {}
        if not isinstance(meta, dict):
            raise web.HTTPError(400, f"manifest entry of {name!r} must be an object")
        uploads.append(Upload(name, part.body, meta.get("sha256"), meta.get("provenance") or {}))
    for name, meta in declared.items():
        if name not in {u.name for u in uploads}:
            raise web.HTTPError(400, f"the manifest names {name!r} but no file part carries it (truncated upload?)")
    return uploads


class RequestsAPI(UploadHandler):
    async def get(self):
        result = await self.call(
            self.service.queue, self.actor(), workspace=self.get_argument("workspace", None),
            state=self.get_argument("state", None) or None, max_age_days=self.int_arg("max_age_days"),
            mine=self.get_argument("mine", "") in ("1", "true"), page=self.int_arg("page") or 1,
        )
        self.write_json(result)

    async def post(self):
        actor, uploads = self.upload()
        request_id = await self.call(
            self.service.submit, actor, self.get_body_argument("title", ""),
            self.get_body_argument("context", ""), uploads,
        )
        self.write_json(await self.call(self.service.get, actor, request_id), status=201)


class ChecksAPI(UploadHandler):
    async def post(self):
        actor, uploads = self.upload()
        self.write_json({"files": await self.call(self.service.preflight, actor, uploads)})


class RequestAPI(BaseHandler):
    async def get(self, request_id):
        self.write_json(await self.call(self.service.get, self.actor(), request_id))


class FilesAPI(UploadHandler):
    async def post(self, request_id):
        actor, uploads = self.upload()
        changed = await self.call(self.service.update_files, actor, request_id, uploads)
        self.write_json({"changed": changed, "request": await self.call(self.service.get, actor, request_id)})


class VotesAPI(BaseHandler):
    async def post(self, request_id):
        body = self.json_body()
        file_id = body.get("file_id")
        if not isinstance(file_id, int):
            raise BadInput("file_id must be the id of a file of the request")
        self.write_json(await self.call(self.service.vote, self.actor(), request_id, file_id,
                                        body.get("decision"), body.get("reason")), status=201)


class TransitionsAPI(BaseHandler):
    async def post(self, request_id):
        body = self.json_body()
        self.write_json(await self.call(self.service.transition, self.actor(), request_id,
                                        str(body.get("to", "")), body.get("reason") or ""))


class CommentsAPI(BaseHandler):
    async def post(self, request_id):
        body = self.json_body()
        file_id = body.get("file_id")
        if file_id is not None and not isinstance(file_id, int):
            raise BadInput("file_id must be a number or absent")
        self.write_json(await self.call(self.service.comment, self.actor(), request_id, body.get("text"),
                                        body.get("visibility", "private"), file_id), status=201)


class LinksAPI(BaseHandler):
    async def post(self, request_id, file_id):
        link = await self.call(self.service.create_link, self.actor(), request_id, int(file_id))
        self.write_json({"url": f"{self.prefix}download/{link['token']}", "expires_at": link["expires_at"]}, 201)


class ManifestAPI(BaseHandler):
    async def get(self, request_id, file_id):
        self.write_json(await self.call(self.service.manifest, self.actor(), request_id, int(file_id)))


class PolicyAPI(BaseHandler):
    async def put(self, workspace):
        body = self.json_body()
        self.write_json(await self.call(self.service.set_policy, self.actor(), workspace,
                                        body.get("approvals_required")))


class OpenAPIHandler(BaseHandler):
    def get(self):
        self.write_json(openapi_document(self.prefix, intake=bool(self.settings.get("intake"))))


# -- pages --


class Page(BaseHandler):
    api = False


class HomePage(Page):
    @web.authenticated
    def get(self):
        actor = self.actor()
        self.redirect(self.prefix + ("queue" if actor.can_review or actor.is_admin else "mine"))


class QueuePage(Page):
    mine = False

    @web.authenticated
    async def get(self):
        actor = self.actor()
        filters = {"workspace": self.get_argument("workspace", "") or None,
                   "state": self.get_argument("state", "") or None,
                   "max_age_days": self.int_arg("max_age_days")}
        page = self.int_arg("page") or 1
        result = await self.call(self.service.queue, actor, mine=self.mine, page=page, **filters)
        reviewed = await self.call(self.service.reviewed_workspaces, actor) if not self.mine else []
        if reviewed is None:
            reviewed = [w.name for w in await self.call(_all_workspaces, self.service)]

        def query(**change):
            args = {k: v for k, v in {**filters, "page": page, **change}.items() if v}
            return urlencode(args)

        self.finish(self.render_page(
            "queue.html", heading="My export requests" if self.mine else "Review queue", mine=self.mine,
            result=result, filters=filters, states=list(workflow.STATES), workspaces=reviewed, query=query,
        ))


def _all_workspaces(service: ExportService):
    from .. import workspaces

    return workspaces.all_workspaces(service.settings)


class MinePage(QueuePage):
    mine = True


class RequestPage(Page):
    @web.authenticated
    async def get(self, request_id, error: str | None = None, status: int = 400):
        actor = self.actor()
        r = await self.call(self.service.get, actor, request_id)
        previews = {}
        if r["role"] != workflow.REQUESTER:
            for f in r["files"]:
                previews[f["id"]] = await self._preview(actor, r, f)
        if error:
            self.set_status(status)
        self.finish(self.render_page("request.html", r=r, previews=previews, error=error))

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

    async def post_action(self, request_id, fn):
        try:
            await self.call(fn)
        except ExportError as exc:
            return await self.get(request_id, error=str(exc), status=exc.status)
        self.redirect(f"{self.prefix}requests/{request_id}", status=303)


class VotePage(RequestPage):
    async def post(self, request_id):
        actor = self.actor()
        try:
            file_id = int(self.get_body_argument("file_id", ""))
        except ValueError:
            raise BadInput("file_id must be a number") from None
        await self.post_action(request_id, partial(
            self.service.vote, actor, request_id, file_id, self.get_body_argument("decision", ""),
            self.get_body_argument("reason", "")))


class TransitionPage(RequestPage):
    async def post(self, request_id):
        actor = self.actor()
        await self.post_action(request_id, partial(
            self.service.transition, actor, request_id, self.get_body_argument("to", ""),
            self.get_body_argument("reason", "")))


class CommentPage(RequestPage):
    async def post(self, request_id):
        actor = self.actor()
        await self.post_action(request_id, partial(
            self.service.comment, actor, request_id, self.get_body_argument("text", ""),
            self.get_body_argument("visibility", "private")))


class DownloadPage(Page):
    async def post(self, request_id, file_id):
        link = await self.call(self.service.create_link, self.actor(), request_id, int(file_id))
        self.redirect(f"{self.prefix}download/{link['token']}", status=303)


class DownloadHandler(Page):
    @web.authenticated
    async def get(self, token):
        name, data, _ = await self.call(self.service.download, self.actor(), token)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name, safe='')}")
        self.finish(data)


class RawFile(Page):
    @web.authenticated
    async def get(self, request_id, file_id):
        f, data = await self.call(self.service.file_content, self.actor(), request_id, int(file_id))
        self.set_header("Content-Type", _MEDIA.get(f.kind, "text/plain; charset=utf-8"))
        self.set_header("Content-Security-Policy", render.FRAME_CSP)
        self.finish(data)


class RenderedFile(Page):
    @web.authenticated
    async def get(self, request_id, file_id):
        f, data = await self.call(self.service.file_content, self.actor(), request_id, int(file_id))
        if f.kind not in ("notebook", "html"):
            raise web.HTTPError(404, f"{f.name!r} is shown on the request page, not rendered as HTML")
        html = await self.call(render.notebook_html, data) if f.kind == "notebook" else data
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", render.FRAME_CSP)
        self.finish(html)


# -- applications --


def make_app(service: ExportService, prefix: str) -> web.Application:
    p = prefix.rstrip("/") + "/"
    rid, fid = r"([0-9a-f]{32})", r"(\d+)"
    jinja = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
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
        (p + f"requests/{rid}/files/{fid}/manifest", ManifestAPI),
        (p + r"download/([A-Za-z0-9_-]{20,100})", DownloadHandler),
    ] + _api_routes(p, intake=False)
    return web.Application(routes, service=service, prefix=p, jinja=jinja, cookie_secret=os.urandom(32))


def _api_routes(p: str, intake: bool) -> list:
    rid, fid = r"([0-9a-f]{32})", r"(\d+)"
    a = p + "api/"
    requester = [
        (a + "openapi.json", OpenAPIHandler),
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
        (a + f"requests/{rid}/votes", VotesAPI),
        (a + f"requests/{rid}/files/{fid}/links", LinksAPI),
        (a + f"requests/{rid}/files/{fid}/manifest", ManifestAPI),
        (a + r"policies/([a-z0-9-]{1,40})", PolicyAPI),
    ]


def make_intake_app(service: ExportService) -> web.Application:
    """The sandbox-facing app: the requester's API only, token authentication only."""
    # A cookie is never accepted here (see BaseHandler.actor), but HubOAuth looks for one when a
    # token is unknown, and tornado needs a secret to even look.
    return web.Application(_api_routes("/", intake=True), service=service, prefix="/", intake=True,
                           cookie_secret=os.urandom(32))


async def serve(settings: Settings) -> None:
    """Serve until asked to stop (SIGINT, SIGTERM: JupyterHub stopping its services) or until the
    hub that started the service is gone (``kill -9``): an orphan would keep the port, and the
    restarted hub's review service could not start."""
    service = ExportService(settings)
    removed = service.recover()
    if removed:
        app_log.warning("removed %d leftover file(s) of interrupted uploads from the export store", removed)
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/exports/")
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", f"http://127.0.0.1:{settings.exports.port}"))
    http = HTTPServer(make_app(service, prefix), max_body_size=FORM_BODY_LIMIT, xheaders=True)
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
    orphaned = asyncio.ensure_future(stop_when_orphaned(stop))
    app_log.info("export review service on %s (intake %s)", url.geturl(), sock_path)
    await stop.wait()
    orphaned.cancel()

    app_log.info("export review service stopping")
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
