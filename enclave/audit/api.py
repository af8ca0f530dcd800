"""The audit service's HTTP side, for administrators: the JSON query API and the admin pages.

Behind the proxy at ``/services/audit/``: the records page (``/``, the filters of ``enclave audit
query``, newest first, paged), the assessment report (``report?workspace=&since=&until=&format=``)
and the JSON API (``api/``). Who the caller is comes from JupyterHub (HubOAuth cookie or
``Authorization: token``; a page sends a browser without either to log in), and every request
needs the custom scope ``custom:audit:read``. Reads go to the database read-only, off the event
loop, so they never hold up appends.

The pages are Jinja2 templates with autoescape (``templates/``); nothing here builds markup. They
need no script: their Content-Security-Policy allows none, and only their own inline styles, by a
nonce drawn for each response. They are in the reader's language: the one they chose on the hub's
home page (:mod:`enclave.languages`), else their browser's ``Accept-Language``, else English. A
refusal is a :class:`~enclave.http_refusals.HTTPRefusal`: a stable code, shown in the page's language, or in English with its
code in the API's JSON.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime, timedelta
from functools import partial
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from tornado import web
from tornado.ioloop import IOLoop

from .. import i18n, languages
from ..http_refusals import HTTPRefusal
from ..hub_oauth import RevocableHubOAuth
from ..i18n import N_, Message
from ..services import error_message
from .actions import ACTIONS, actions_matching
from .checkpoints import key_id, public_pem
from .openapi import openapi_document
from .query_socket import FILTERS, page_arguments
from .reader import AuditReader, BadQuery
from .records import BadRecord, parse_time

SCOPE_READ = "custom:audit:read"
API_CSP = "default-src 'none'; frame-ancestors 'none'"
PAGE_CSP = "default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
# Records on one page of the records page, and the period a report link covers when none is chosen.
PAGE_SIZE = 50
DEFAULT_REPORT_DAYS = 30
# The actions offered in the records page's action field: each name, and each prefix as ``prefix.*``.
ACTION_CHOICES = sorted({f"{name.split('.')[0]}.*" for name in ACTIONS}) + sorted(ACTIONS)


NOT_AUTHENTICATED = Message("audit.not_authenticated",
                            N_("not authenticated: log in, or send 'Authorization: token ...'"))


def _bad_query(exc: BadQuery) -> Message:
    """The reader's refusal of a query, as a message to a person (its reason as the reader gives it)."""
    return Message("audit.bad_query", N_("The records cannot be read so: %(reason)s"), {"reason": str(exc)})


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    hub_auth_class = RevocableHubOAuth  # a revoked token is refused within seconds
    # A page (HTML, for a browser) or the API (JSON).
    page = False

    @property
    def reader(self) -> AuditReader:
        return self.settings["reader"]

    @property
    def prefix(self) -> str:
        return self.settings["prefix"]

    def set_default_headers(self):
        self.nonce = secrets.token_urlsafe(18)
        self.set_header("Content-Security-Policy", PAGE_CSP.format(nonce=self.nonce) if self.page else API_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Cache-Control", "no-store")

    def prepare(self):
        user = self.current_user
        if not user and self.page and self.request.method in ("GET", "HEAD"):
            self.redirect(self.get_login_url())  # log in through the hub, then come back
            return
        if not user:
            raise HTTPRefusal(403, NOT_AUTHENTICATED)
        if SCOPE_READ not in (user.get("scopes") or []):
            raise HTTPRefusal(403, Message("audit.scope_missing", N_(
                "reading the audit log needs the %(scope)s scope (administrators)"), {"scope": SCOPE_READ}))

    async def call(self, fn, *args, **kwargs):
        return await IOLoop.current().run_in_executor(None, partial(fn, *args, **kwargs))

    def write_json(self, value) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(value, ensure_ascii=False))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        refusal = exc.message if isinstance(exc, HTTPRefusal) else None
        if self.page:
            message = refusal.render(self.page_locale()) if refusal else error_message(exc) or self._reason
            self.finish(self.render_page("error.html", status=status_code, reason=self._reason, message=message,
                                         code=refusal.code if refusal else None))
            return
        self.set_header("Content-Type", "application/json")
        body = {"status": status_code, "error": error_message(exc) or self._reason}
        if refusal:
            body["code"] = refusal.code
        self.finish(json.dumps(body))

    def page_locale(self) -> str:
        """The language of this request's page: the one the caller chose on the hub's home page
        (stored in Enclave's database, :mod:`enclave.languages`), else their browser's
        (``Accept-Language``), else English. Read once per request."""
        if getattr(self, "_locale", None) is None:
            name = (self.current_user or {}).get("name")
            preference = languages.language_of(self.reader.settings, name) if name else None
            self._locale = i18n.negotiate(self.request.headers.get("Accept-Language"), preference)
        return self._locale

    def render_page(self, template: str, **values) -> str:
        from .report import page_environment

        locale = self.page_locale()
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Language", i18n.HTML_LANG[locale])
        self.add_header("Vary", "Accept-Language")
        return page_environment(locale).get_template(template).render(
            nonce=self.nonce, user=(self.current_user or {}).get("name", ""),
            links={"records": self.prefix, "report": self.prefix + "report", "egress": self.prefix + "egress"}, **values)


class RecordsAPI(BaseHandler):
    async def get(self):
        args = page_arguments(self)  # as the enclave command's query socket reads them
        try:
            page = await self.call(self.reader.query, **args)
        except BadQuery as exc:
            raise web.HTTPError(400, str(exc)) from None
        self.write_json(page)


class RecordsPage(BaseHandler):
    """The records, newest first, with the filters of ``enclave audit query`` and links to reports."""

    page = True

    async def get(self):
        filters = {name: self.get_argument(name, "").strip() or None for name in FILTERS}
        after = self.get_argument("after", "")
        if after and not after.isdigit():
            raise HTTPRefusal(400, Message("audit.bad_after", N_("after must be a record's seq")))
        error, page = _filter_error(filters), {"records": [], "next": None}
        if error is None:
            try:
                page = await self.call(self.reader.query, **filters, after=int(after) if after else None,
                                       limit=PAGE_SIZE, newest_first=True)
            except BadQuery as exc:
                error = _bad_query(exc)
        if error is not None:
            self.set_status(400)
        period = report_period(filters["since"], filters["until"])

        def query(**change) -> str:
            return urlencode({k: v for k, v in {**filters, "after": after, **change}.items() if v})

        def report_url(workspace: str) -> str:
            return f"{self.prefix}report?" + urlencode({"workspace": workspace, **period})

        self.finish(self.render_page(
            "records.html", records=[_shown(r) for r in page["records"]], next=page["next"], after=after,
            filters=filters, error=error and {"code": error.code, "text": error.render(self.page_locale())},
            actions=ACTION_CHOICES, period=period, query=query, report_url=report_url))


def _filter_error(filters: dict) -> Message | None:
    """What is wrong with the records page's filters, in words the page translates; None: nothing
    the page can tell (the reader refuses what else is wrong)."""
    action = filters["action"]
    if action and not actions_matching(action):
        return Message("audit.unknown_action", N_("no action matches %(action)s (see docs/audit.md)"),
                       {"action": repr(action)})
    for name in ("since", "until"):
        if filters[name]:
            try:
                parse_time(filters[name])
            except BadRecord:
                return Message("audit.bad_time", N_(
                    "%(field)s: %(value)s is not an ISO 8601 date or time (e.g. 2026-03-01 or 2026-03-01T08:00:00Z)"),
                    {"field": name, "value": repr(filters[name])})
    return None


def report_period(since: str | None, until: str | None) -> dict:
    """The period a report link covers: the records page's, else the last 30 days up to tomorrow (UTC)."""
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    return {"since": since or (tomorrow - timedelta(days=DEFAULT_REPORT_DAYS + 1)).isoformat(),
            "until": until or tomorrow.isoformat()}


def _shown(record: dict) -> dict:
    """A record with its detail as text: one line to summarise it, indented JSON to read it."""
    line = json.dumps(record["detail"], ensure_ascii=False, sort_keys=True)
    return {**record, "summary": line if len(line) <= 100 else line[:99] + "…",
            "detail_text": json.dumps(record["detail"], ensure_ascii=False, sort_keys=True, indent=2)}


class ReportPage(BaseHandler):
    """The assessment report of a workspace and period, as HTML (with figures) or JSON."""

    page = True

    async def get(self):
        from . import report

        workspace = self.get_argument("workspace", "").strip()
        since, until = self.get_argument("since", "").strip(), self.get_argument("until", "").strip()
        fmt = self.get_argument("format", "html")
        if fmt not in ("html", "json"):
            raise HTTPRefusal(400, Message("audit.report.bad_format", N_("format must be html or json")))
        if not (workspace and since and until):
            raise HTTPRefusal(400, Message("audit.report.incomplete", N_("a report needs a workspace, since and until")))
        try:
            numbers = await self.call(report.build, self.reader, workspace, since, until, self.page_locale())
        except report.BadPeriod as exc:
            raise HTTPRefusal(400, exc.message) from None
        except BadQuery as exc:
            raise HTTPRefusal(400, _bad_query(exc)) from None
        self.add_header("Vary", "Accept-Language")  # the definitions are in the reader's language
        if fmt == "json":
            self.write_json(numbers)
            return
        args = {"workspace": workspace, "since": since, "until": until}
        links = {"records": self.prefix, "these_records": f"{self.prefix}?" + urlencode(args),
                 "json": f"{self.prefix}report?" + urlencode({**args, "format": "json"})}
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Language", i18n.HTML_LANG[numbers["locale"]])
        self.finish(report.render_html(numbers, nonce=self.nonce, links=links, user=self.current_user["name"]))


class HeldBudgetsPage(BaseHandler):
    """Egress budgets held in the past day (``egress.held``): which operator, in which workspace and
    window, at what use. Administrators see every workspace's; a workspace's reviewers see its own
    (membership as the hub keeps it), so that they know before they review what was pulled to the
    screen. The records themselves are on the records page (``egress.*``), for administrators."""

    page = True

    def prepare(self):
        user = self.current_user
        if not user and self.request.method in ("GET", "HEAD"):
            self.redirect(self.get_login_url())
            return
        if not user:
            raise HTTPRefusal(403, NOT_AUTHENTICATED)

    async def get(self):
        from .. import workspaces

        user = self.current_user
        since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        page = await self.call(self.reader.query, action="egress.held", since=since, limit=1000, newest_first=True)
        held = page["records"]
        if SCOPE_READ not in (user.get("scopes") or []):
            memberships = await self.call(workspaces.for_user, self.reader.settings, user["name"])
            reviewed = {ws.name for ws, roles in memberships if "reviewer" in roles}
            if not reviewed:
                raise HTTPRefusal(403, Message("audit.egress_not_reviewer", N_(
                    "held egress budgets are shown to administrators and to each workspace's reviewers")))
            held = [r for r in held if r["workspace"] in reviewed]
        self.finish(self.render_page("egress.html", held=held, since=since))


class CheckpointAPI(BaseHandler):
    async def get(self):
        cps = await self.call(self.reader.checkpoints)
        public: Ed25519PublicKey = self.settings["public_key"]
        self.write_json({"checkpoint": cps[-1].to_json() if cps else None, "key_id": key_id(public),
                         "public_key": public_pem(public).decode()})


class OpenAPIHandler(BaseHandler):
    def get(self):
        self.write_json(openapi_document(self.settings["prefix"]))


def make_app(reader: AuditReader, public_key: Ed25519PublicKey, prefix: str) -> web.Application:
    p = prefix.rstrip("/") + "/"
    routes = [
        (p + "oauth_callback", HubOAuthCallbackHandler),
        (p, RecordsPage),
        (p + "report", ReportPage),
        (p + "egress", HeldBudgetsPage),
        (p + "api/records", RecordsAPI),
        (p + "api/checkpoints/latest", CheckpointAPI),
        (p + "api/openapi.json", OpenAPIHandler),
    ]
    return web.Application(routes, reader=reader, public_key=public_key, prefix=p, cookie_secret=os.urandom(32))
