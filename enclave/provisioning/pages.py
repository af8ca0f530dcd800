"""The provisioning service's pages: admins provision workspaces, accounts and sources; data holders
answer the attachment requests of their sources. Served by the same app as the REST API, on the
service's own origin, behind JupyterHub's OAuth (see :mod:`enclave.provisioning.app`).

Every change is a POST form carrying the ``_xsrf`` token (HubOAuth refuses a cookie-authenticated
POST without it, and this service's cookies are host-only on its own origin: a page of a user's
server cannot send one with them). A form's fields become the JSON body of the matching API
operation and are validated against the OpenAPI document, then the one service layer
(:mod:`enclave.workspaces`, :mod:`enclave.accounts`, :mod:`enclave.sources`) is called with the
audit recorder the API uses. A refusal is shown on the page the form was on, with the service
layer's message; a change done sends the browser back to its page (post/redirect/get) with a
one-time confirmation in a signed cookie.

A form's own refusals (a field that is no number or no date, a required choice left out) are
:class:`FormError`: a stable code and a message shown in the page's language. The service layer's
refusals carry theirs from where they are raised (:class:`enclave.refusals.Refusal`), and are shown
so too (:func:`refusal_message`); the few refusals without one (the API's schema, JupyterHub's),
as they are written.

The running sandboxes of a workspace are read from, and stopped through, JupyterHub's API with the
admin's own OAuth token of this service (``read:servers``, ``delete:servers``, which admins hold):
JupyterHub decides, and the stop is recorded as the admin's.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import aiohttp
from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.httpclient import fetch
from tornado import web
from tornado.log import app_log

from .. import accounts, i18n, languages, sources, supply, workspaces
from ..i18n import N_
from ..audit.client import AuditUnavailable
from ..exports import openapi as validation
from ..exports.service import ExportError
from ..releases import RELEASE_NAME, ReleaseError
from ..rbac import ACCOUNT_ROLES, WORKSPACE_ROLES
from ..services import error_message
from ..settings import ExportSettings, LimitSettings
from . import app, openapi

TEMPLATES = Path(__file__).parent / "templates"
PAGE_CSP = ("default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:;"
            " frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
# The confirmation a page shows once after a form is sent: a signed cookie the next page takes.
FLASH_COOKIE = "enclave-provisioning-flash"
FLASH_MAX_AGE_DAYS = 10 / (24 * 60)


# The guard settings a workspace's page offers (enclave_guard.policy.GuardSettings; the guard checks
# them): key -> (type, words).
GUARD_FIELDS = {
    "upload_max_mb": (float, N_("largest notebook or text file uploaded or saved (MiB)")),
    "read_max_mb": (float, N_("largest notebook or text file read through the contents API (MiB)")),
    "output_message_max_kb": (int, N_("largest output message (KiB)")),
    "output_cell_max_kb": (int, N_("output of one execution (KiB)")),
    "output_connection_max_kb": (int, N_("unanswered output of one kernel connection (KiB)")),
    "export_max_mb": (float, N_("largest file submitted for export review (MiB)")),
    "egress_hour_mb": (float, N_("egress budget per rolling hour (MiB)")),
    "egress_day_mb": (float, N_("egress budget per rolling day (MiB)")),
    "terminals": (bool, N_("terminals (in a sandbox of their own, input recorded)")),
}
# A workspace's export policy: what it may set over [exports] (enclave.workspaces.EXPORT_POLICY_KEYS).
EXPORT_POLICY_FIELDS = {
    "approvals_required": N_("approvals each file needs"), "min_cell_count": N_("smallest cell count"),
    "round_base": N_("counts rounded to a multiple of"), "nk_n": N_("dominance: the largest n contributors"),
    "nk_k": N_("dominance: may not hold more than (share)"), "p_ratio": N_("p%% rule ratio"),
    "max_file_mb": N_("largest file (MiB)"), "max_files_per_request": N_("files per request"),
    "max_csv_rows": N_("rows of a CSV file"),
}
LIMIT_FIELDS = {
    "memory_mb": N_("memory (MiB)"), "cpus": N_("CPUs"), "pids": N_("processes"),
    "max_file_mb": N_("largest file (MiB)"),
    "disk_mb": N_("home disk quota (MiB)"), "tmp_mb": N_("/tmp (MiB)"),
}
# The roles of accounts and of workspace members, in words (the pages translate them).
ROLE_WORDS = {"admin": N_("admin"), "holder": N_("holder"), "operator": N_("operator"),
              "reviewer": N_("reviewer"), "owner": N_("owner")}
_REFUSALS = (ExportError, ReleaseError, AuditUnavailable, *app._SERVICE_LAYER_ERRORS)


class FormError(app.BadRequest):
    """A form refused before the service layer is called: ``message`` is a stable code with its text
    (shown in the page's language); ``str()`` is the English text, as the API and logs read it."""


def refusal_message(exc: Exception, text: str) -> i18n.Message:
    """A refusal shown on a page, ``text`` being its English words: the message with a code it
    carries (a form's, the service layer's), or else the text as written under the code
    ``provisioning.refused``."""
    return app.refusal_of(exc) or i18n.Message("provisioning.refused", "%(refusal)s", {"refusal": text})


def _moment_field(raw: str, field: str) -> str | None:
    """A ``datetime-local`` (or ``date``) form field, in UTC, as the API's RFC 3339 text; blank: none."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise FormError("form.bad_moment", N_("%(field)s %(value)s is not a date and time (2027-06-30T00:00, UTC)"),
                        field=field, value=repr(raw)) from None
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).isoformat()


def _input_moment(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if moment else ""


def _number(raw: str, kind: type, field: str):
    """A number typed in a form, as the same number in a JSON body would be read (``8`` a whole number,
    ``8.5`` a fraction): the workspace's declared settings are then the same as the API's or a file's."""
    try:
        number = int(raw) if kind is int or raw.lstrip("+-").isdigit() else float(raw)
        if not math.isfinite(number):
            raise ValueError(raw)
        return number
    except ValueError:
        if kind is int:
            raise FormError("form.not_whole_number", N_("%(field)s %(value)s is not a whole number"),
                            field=field, value=repr(raw)) from None
        raise FormError("form.not_number", N_("%(field)s %(value)s is not a number"), field=field,
                        value=repr(raw)) from None


class Page(app.BaseHandler):
    """A page of the service: HTML answers, errors shown as a page, changes as POST forms."""

    @property
    def prefix(self) -> str:
        return self.settings["prefix"]

    def set_default_headers(self):
        self.set_header("Content-Security-Policy", PAGE_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Cache-Control", "no-store")

    def _caller(self) -> app.Actor:
        if self._actor is None:
            raise web.HTTPError(403, "not authenticated: log in to the hub, and send changes from these pages' own"
                                     " forms (they carry the _xsrf token)")
        return self._actor

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = error_message(exc) or (str(exc) if isinstance(exc, _REFUSALS) else None)
        refusal = refusal_message(exc, message) if message else None
        self.finish(self.render_page("error.html", status=status_code, reason=self._reason,
                                     message=refusal.render(self.page_locale()) if refusal else self._reason,
                                     error_code=refusal.code if refusal else None))

    def initialize(self, templates: dict[str, Environment]) -> None:
        self.templates = templates
        self._locale: str | None = None
        # The code of the refusal the page shows (its data-code), if it shows one.
        self.error_code: str | None = None

    def page_locale(self) -> str:
        """The language of this request's pages and messages: the one the caller chose on the hub's
        home page (:mod:`enclave.languages`), else their browser's (``Accept-Language``), else English.
        Read once per request."""
        if self._locale is None:
            actor = getattr(self, "_actor", None)
            preference = languages.language_of(self.enclave_settings, actor.name) if actor else None
            self._locale = i18n.negotiate(self.request.headers.get("Accept-Language"), preference)
        return self._locale

    def _(self, text: str, **values) -> str:
        """``text`` in the page's language, its ``%(name)s`` placeholders filled with ``values``."""
        translated = i18n.translations(self.page_locale()).gettext(text)
        return translated % values if values else translated

    def _expires_message(self, name: str, expires: str | None) -> str:
        """The confirmation of an expiry set: the moment as it was typed (UTC), or never."""
        if not expires:
            return self._("%(name)s never expires.", name=name)
        return self._("%(name)s expires %(moment)s.", name=name, moment=expires[:16].replace("T", " ") + " UTC")

    def render_page(self, template: str, **ns) -> str:
        actor = getattr(self, "_actor", None)
        locale = self.page_locale()
        self.set_header("Content-Language", i18n.HTML_LANG[locale])
        self.add_header("Vary", "Accept-Language")
        ns.setdefault("error_code", self.error_code)
        return self.templates[locale].get_template(template).render(
            prefix=self.prefix, user=actor.name if actor else "", xsrf=self.xsrf_token.decode(),
            is_admin=bool(actor and actor.is_admin), is_holder=bool(actor and actor.is_holder),
            hub_home=self.enclave_settings.public_url.rstrip("/") + "/hub/home", role_words=ROLE_WORDS, **ns)

    def flash(self, message: str) -> None:
        """Show ``message`` once, on the page the browser is sent to next (signed: it is ours)."""
        self.set_signed_cookie(FLASH_COOKIE, json.dumps(message), expires_days=None, path=self.prefix,
                               httponly=True, samesite="Strict", secure=self.request.protocol == "https")

    def take_flash(self) -> str | None:
        raw = self.get_signed_cookie(FLASH_COOKIE, max_age_days=FLASH_MAX_AGE_DAYS)
        if self.get_cookie(FLASH_COOKIE) is not None:
            self.clear_cookie(FLASH_COOKIE, path=self.prefix)
        return json.loads(raw) if raw else None

    def sent(self) -> dict[str, str]:
        """The fields of the form sent (none for a GET): a refused form is shown again as it was filled."""
        if self.request.method != "POST":
            return {}
        return {k: self.get_body_argument(k) for k in self.request.body_arguments if k != "_xsrf"}

    def field(self, name: str, default: str = "") -> str:
        return self.get_body_argument(name, default)

    def body(self, operation_path: str, method: str, body: dict) -> dict:
        """``body``, made from a form, validated as the API operation's JSON body is."""
        op = openapi.operation(operation_path, method)
        validation.validate(op["requestBody"]["content"]["application/json"]["schema"], body, "")
        return body

    def done(self, where: str, message: str) -> None:
        self.flash(message)
        self.redirect(where, status=303)

    async def post(self, *args):
        """The form's ``action``, by the method ``do_<action>``; a refusal shows the page again with the
        service's message, and the status the API would answer."""
        self._caller()  # nobody (no session, or no _xsrf token matching it) is refused before the form is read
        action = self.get_body_argument("action", "").replace("-", "_")
        handler = getattr(self, f"do_{action}", None)
        if handler is None:
            raise web.HTTPError(400, f"unknown action {action[:40]!r}")
        try:
            await handler(*args)
        except _REFUSALS as exc:
            self.set_status(app._status(exc, set(args)) or 500)
            refusal = refusal_message(exc, error_message(exc) or str(exc))
            self.error_code = refusal.code
            await self.show(*args, error=refusal.render(self.page_locale()))

    async def show(self, *args, error: str | None = None):
        """Render the page (with ``error``, a refusal's message, shown on it). Every page with forms
        defines it; the home page only redirects, and its POSTs name no action it has (400)."""
        raise NotImplementedError(f"{type(self).__name__} shows no page of its own")

    @web.authenticated
    async def get(self, *args):
        await self.show(*args)


class HomePage(Page):
    @web.authenticated
    async def get(self):
        actor = self._caller()
        if actor.is_admin:
            self.redirect(self.prefix + "workspaces")
        elif actor.is_holder:
            self.redirect(self.prefix + "consents")
        else:
            self.admin()


# -- workspaces --


def _store_releases(settings) -> list[str]:
    store = settings.release_store
    if not store.is_dir():
        return []
    return sorted(p.name for p in store.iterdir() if RELEASE_NAME.match(p.name) and (p / "data").is_dir())


def _holders(settings) -> list[str]:
    return [a.name for a in accounts.all_accounts(settings) if "holder" in a.roles and a.state == "active"]


class WorkspacesPage(Page):
    async def show(self, error: str | None = None):
        self.admin()
        settings = self.enclave_settings
        listed = await self.call(workspaces.all_workspaces, settings)
        holders = await self.call(_holders, settings)
        self.finish(self.render_page("workspaces.html", workspaces=listed, holders=holders, error=error,
                                     flash=None if error else self.take_flash(), form=self.sent()))

    async def do_create(self):
        actor = self.admin()
        body = {"name": self.field("name").strip(), "purpose": self.field("purpose").strip()}
        if self.field("holder"):
            body["holder"] = self.field("holder")
        if (expires := _moment_field(self.field("expires_at"), "expiry")) is not None:
            body["expires_at"] = expires
        self.body("/workspaces", "post", body)
        await self.change(actor, workspaces.create, body["name"], purpose=body["purpose"], holder=body.get("holder"),
                          expires_at=app._moment(body.get("expires_at"), "expiry"))
        self.done(f"{self.prefix}workspaces/{quote(body['name'])}",
                  self._("Workspace %(name)s created.", name=body["name"]))


class WorkspacePage(Page):
    async def show(self, name: str, error: str | None = None):
        self.admin()
        settings = self.enclave_settings
        ws = await self.call(workspaces.get, settings, name)
        all_accounts = await self.call(accounts.all_accounts, settings)
        holders = [a.name for a in all_accounts if "holder" in a.roles and a.state == "active"]
        held = {s.name for s in await self.call(sources.all_sources, settings) if s.holder == ws.holder}
        taken = set(ws.releases) | set(ws.awaiting)
        offered = [r for r in await self.call(_store_releases, settings)
                   if sources.source_of(r) in held and r not in taken]
        asked = self.get_query_argument("ask", "")
        picker = None
        if asked:
            if asked not in offered:
                error = error or (
                    self._("release '%(release)s' cannot be asked for here: it is not in the store, not of a source"
                           " of %(holder)s, or already asked for", release=asked, holder=ws.holder) if ws.holder
                    else self._("release '%(release)s' cannot be asked for here: it is not in the store, not of a"
                                " source of the workspace’s data holder, or already asked for", release=asked))
            else:
                picker = {"release": asked, "tables": await self.call(supply.release_tables, settings, asked)}
        sandboxes, sandboxes_error = await self.running_sandboxes(ws)
        self.finish(self.render_page(
            "workspace.html", ws=ws, accounts=[a for a in all_accounts if a.state == "active"], holders=holders,
            offered=offered, picker=picker, roles=WORKSPACE_ROLES, guard_fields=GUARD_FIELDS,
            guard_switches={k for k, (kind, _) in GUARD_FIELDS.items() if kind is bool},
            limit_fields=LIMIT_FIELDS, limit_defaults=settings.sandbox.limits, sandboxes=sandboxes,
            policy_fields=EXPORT_POLICY_FIELDS, policy_defaults=settings.exports,
            sandboxes_error=sandboxes_error, error=error, flash=None if error else self.take_flash(),
            input_moment=_input_moment))

    def here(self, name: str, anchor: str = "") -> str:
        return f"{self.prefix}workspaces/{quote(name)}" + (f"#{anchor}" if anchor else "")

    async def _change(self, name: str, fn, *args, anchor: str, message: str, **kwargs):
        await self.change(self.admin(), fn, name, *args, **kwargs)
        self.done(self.here(name, anchor), message)

    # -- members --

    async def do_add_member(self, name):
        body = self.body("/workspaces/{workspace}/members", "post",
                         {"user": self.field("user"), "role": self.field("role")})
        user, role = body["user"], body["role"]
        await self._change(name, workspaces.add_member, user, role, anchor="members",
                           message=self._("%(user)s is now a %(role)s of %(workspace)s.", user=user,
                                          role=self._(ROLE_WORDS[role]), workspace=name))

    async def do_remove_member(self, name):
        user, role = self.field("user"), self.field("role")
        await self._change(name, workspaces.remove_member, user, role, anchor="members",
                           message=self._("%(user)s is no longer a %(role)s of %(workspace)s.", user=user,
                                          role=self._(ROLE_WORDS.get(role, role)), workspace=name))

    # -- releases --

    async def do_ask(self, name):
        actor = self.admin()
        columns = self.get_body_arguments("column")
        body = {"release": self.field("release"), "reason": self.field("reason").strip()}
        if self.field("scope") != "all":
            if not columns:
                raise FormError("form.no_columns", N_("choose the columns to ask for (or ask for the whole release)"))
            body["columns"] = columns
        self.body("/workspaces/{workspace}/releases", "post", body)
        await self.change(actor, workspaces.attach, name, body["release"], actor.name, columns=body.get("columns"),
                          reason=body["reason"])
        self.done(self.here(name, "releases"), self._("%(release)s is asked for: it is attached once its data holder"
                                                      " consents.", release=body["release"]))

    async def do_detach(self, name):
        actor = self.admin()
        release = self.field("release")
        await self.change(actor, workspaces.detach, name, release, by=actor.name)
        self.done(self.here(name, "releases"), self._("%(release)s is detached from %(workspace)s.",
                                                                  release=release, workspace=name))

    # -- settings --

    async def do_purpose(self, name):
        body = self.body("/workspaces/{workspace}/purpose", "put", {"purpose": self.field("purpose").strip()})
        await self._change(name, workspaces.set_purpose, body["purpose"], anchor="purpose",
                           message=self._("The purpose is changed."))

    async def do_holder(self, name):
        body = self.body("/workspaces/{workspace}/holder", "put", {"holder": self.field("holder")})
        await self._change(name, workspaces.set_holder, body["holder"], anchor="settings",
                           message=self._("%(holder)s is the data holder of %(workspace)s.",
                                          holder=body["holder"], workspace=name))

    async def do_expiry(self, name):
        expires = _moment_field(self.field("expires_at"), "expiry")
        await self._change(name, workspaces.set_expiry, app._moment(expires, "expiry"), anchor="settings",
                           message=self._expires_message(name, expires))

    async def do_separation(self, name):
        allowed = self.field("operators_may_review") == "true"
        await self._change(name, workspaces.set_operators_may_review, allowed, anchor="settings",
                           message=self._("Operators may now also be reviewers of it (never of their own requests).")
                           if allowed else self._("Operators and reviewers are now kept apart."))

    async def do_limits(self, name):
        kinds = {n: f.annotation for n, f in LimitSettings.model_fields.items()}
        limits = {k: _number(self.field(k).strip(), kinds[k], k) for k in LIMIT_FIELDS if self.field(k).strip()}
        if not limits:
            raise FormError("form.no_limit", N_("give at least one limit"))
        self.body("/workspaces/{workspace}/limits", "put", limits)
        await self._change(name, workspaces.set_limits, limits, anchor="limits",
                           message=self._("The limits are changed: they apply at each sandbox's next start."))

    async def do_export_policy(self, name):
        kinds = {n: f.annotation for n, f in ExportSettings.model_fields.items()}
        policy = {k: _number(self.field(k).strip(), kinds[k], k) for k in EXPORT_POLICY_FIELDS if self.field(k).strip()}
        if not policy:
            raise FormError("form.no_export_policy", N_("give at least one value of the export policy"))
        self.body("/workspaces/{workspace}/export-policy", "put", policy)
        await self._change(name, workspaces.set_export_policy, policy, anchor="export-policy",
                           message=self._("The export policy is changed: export requests made from now on follow it."))

    async def do_guard(self, name):
        current = (await self.call(workspaces.get, self.enclave_settings, name)).guard
        guard = {}
        for key, (kind, _) in GUARD_FIELDS.items():
            if kind is bool:
                # A switch is sent only when it changes: an untouched one leaves the workspace's
                # declared settings as they were (the same as the CLI or a file would leave them).
                if (self.field(key) == "true") != bool(current.get(key, False)):
                    guard[key] = self.field(key) == "true"
            elif self.field(key).strip():
                guard[key] = _number(self.field(key).strip(), kind, key)
        if not guard:
            raise FormError("form.no_guard_setting", N_("change at least one guard setting"))
        await self._change(name, workspaces.set_guard, guard, anchor="guard",
                           message=self._("The guard settings are changed: they apply at each sandbox's next start."))

    # -- state --

    async def do_freeze(self, name):
        body = self.body("/workspaces/{workspace}/freeze", "post", {"reason": self.field("reason").strip()})
        await self._change(name, workspaces.freeze, body["reason"], anchor="state",
                           message=self._("%(workspace)s is frozen: its sandboxes are stopped and none start.",
                                          workspace=name))

    async def do_unfreeze(self, name):
        await self._change(name, workspaces.unfreeze, anchor="state",
                           message=self._("%(workspace)s is active again.", workspace=name))

    async def do_archive(self, name):
        if self.field("confirm") != name:
            raise FormError("form.archive_unconfirmed", N_(
                "type the workspace's name, %(workspace)s, to confirm archiving it: it is final"), workspace=name)
        body = self.body("/workspaces/{workspace}/archive", "post", {"reason": self.field("reason").strip()})
        await self._change(name, workspaces.archive, body["reason"], anchor="state",
                           message=self._("%(workspace)s is archived.", workspace=name))

    # -- running sandboxes, through JupyterHub's API as the admin --

    async def hub_api(self, method: str, path: str):
        token = self.hub_auth.get_token(self)
        r = await fetch(self.hub_auth.api_url.rstrip("/") + path, method=method, raise_for_status=False,
                        headers={"Authorization": f"token {token}"})
        text = await r.text()
        return r.status, text

    async def running_sandboxes(self, ws) -> tuple[list[dict], str | None]:
        """The workspace's servers JupyterHub runs, read with the admin's token."""
        scopes = set((self.current_user or {}).get("scopes") or [])
        if not {"read:servers", "delete:servers"} <= scopes:
            return [], self._("JupyterHub does not let this page read or stop servers for you: the provisioning"
                              " service's OAuth token lacks read:servers and delete:servers (see the service's"
                              " oauth_client_allowed_scopes); use the hub's admin page")
        found = []
        for user in sorted(ws.operators):
            try:
                status, text = await self.hub_api("GET", f"/users/{quote(user, safe='')}")
            except (OSError, aiohttp.ClientError) as exc:
                return [], self._("JupyterHub could not be asked for the running sandboxes: %(error)s", error=exc)
            if status == 404:
                continue  # never logged in: JupyterHub does not know them
            if status != 200:
                app_log.warning("reading %s's servers from the hub: %s %s", user, status, text[:200])
                return [], self._("JupyterHub did not show the running sandboxes (%(status)s)", status=status)
            model = json.loads(text)
            if "servers" not in model:
                return [], self._("JupyterHub did not show the running sandboxes: this page's token cannot read"
                                  " servers")
            server = model["servers"].get(ws.name)
            if server:
                found.append({"user": user, "ready": server.get("ready"), "pending": server.get("pending") or "",
                              "started": server.get("started") or ""})
        return found, None

    async def do_stop_sandbox(self, name):
        self.admin()
        user = self.field("user")
        ws = await self.call(workspaces.get, self.enclave_settings, name)
        if user not in ws.operators:
            raise FormError("form.not_an_operator", N_("%(user)s is not an operator of %(workspace)s"),
                            user=repr(user), workspace=name)
        status, text = await self.hub_api("DELETE", f"/users/{quote(user, safe='')}/servers/{quote(name, safe='')}")
        if status not in (202, 204):
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            raise FormError("form.sandbox_not_stopped", N_(
                "JupyterHub did not stop %(user)s's sandbox of %(workspace)s (%(status)s): %(reason)s"),
                user=user, workspace=name, status=status, reason=message)
        if status == 202:
            message = self._("%(user)s's sandbox of %(workspace)s is stopping.", user=user, workspace=name)
        else:
            message = self._("%(user)s's sandbox of %(workspace)s is stopped.", user=user, workspace=name)
        self.done(self.here(name, "sandboxes"), message)


# -- accounts --


class AccountsPage(Page):
    async def show(self, error: str | None = None, created: dict | None = None):
        self.admin()
        listed = await self.call(accounts.all_accounts, self.enclave_settings)
        self.finish(self.render_page("accounts.html", accounts=listed, roles=ACCOUNT_ROLES, error=error,
                                     created=created, flash=None if error else self.take_flash()))

    async def do_create(self):
        actor = self.admin()
        body = {"name": self.field("name").strip(), "roles": self.get_body_arguments("role")}
        if (expires := _moment_field(self.field("expires_at"), "expiry")) is not None:
            body["expires_at"] = expires
        self.body("/accounts", "post", body)
        password = accounts.generate_password()
        await self.change(actor, accounts.add_user, body["name"], body["roles"], password,
                          expires_at=app._moment(body.get("expires_at"), "expiry"))
        # The password is shown on this answer only: never in a cookie, a URL or a log.
        self.set_status(201)
        await self.show(created={"name": body["name"], "password": password})


class AccountPage(Page):
    async def show(self, name: str, error: str | None = None):
        self.admin()
        settings = self.enclave_settings
        account = await self.call(accounts.get_account, settings, name)
        memberships = [(ws.name, sorted(roles)) for ws, roles in await self.call(workspaces.for_user, settings, name)]
        held = [s.name for s in await self.call(sources.all_sources, settings) if s.holder == name]
        self.finish(self.render_page("account.html", account=account, roles=ACCOUNT_ROLES, memberships=memberships,
                                     held=held, error=error, flash=None if error else self.take_flash(),
                                     input_moment=_input_moment))

    def here(self, name: str) -> str:
        return f"{self.prefix}accounts/{quote(name)}"

    async def do_roles(self, name):
        body = self.body("/accounts/{username}/roles", "put", {"roles": self.get_body_arguments("role")})
        await self.change(self.admin(), accounts.set_roles, name, body["roles"])
        roles = i18n.format_list([self._(ROLE_WORDS[r]) for r in sorted(body["roles"])], self.page_locale())
        self.done(self.here(name), self._("%(account)s's roles are %(roles)s (from their next login).",
                                          account=name, roles=roles))

    async def do_disable(self, name):
        body = self.body("/accounts/{username}/disable", "post", {"reason": self.field("reason").strip()})
        await self.change(self.admin(), accounts.disable, name, body["reason"])
        self.done(self.here(name), self._("%(account)s is disabled.", account=name))

    async def do_enable(self, name):
        await self.change(self.admin(), accounts.enable, name)
        self.done(self.here(name), self._("%(account)s is enabled.", account=name))

    async def do_expiry(self, name):
        expires = _moment_field(self.field("expires_at"), "expiry")
        await self.change(self.admin(), accounts.set_expiry, name, app._moment(expires, "expiry"))
        self.done(self.here(name), self._expires_message(name, expires))

    async def do_remove(self, name):
        if self.field("confirm") != name:
            raise FormError("form.remove_unconfirmed", N_("type the account's name, %(account)s, to confirm removing it"),
                            account=name)
        await self.change(self.admin(), accounts.remove_user, name)
        self.done(f"{self.prefix}accounts", self._("%(account)s is removed.", account=name))


# -- sources --


class SourcesPage(Page):
    async def show(self, error: str | None = None):
        self.admin()
        settings = self.enclave_settings
        registered = await self.call(sources.all_sources, settings)
        known = {s.name for s in registered}
        unregistered = sorted({sources.source_of(r) for r in await self.call(_store_releases, settings)} - known)
        self.finish(self.render_page("sources.html", sources=registered, unregistered=unregistered,
                                     holders=await self.call(_holders, settings), error=error,
                                     flash=None if error else self.take_flash()))

    async def do_holder(self):
        source = self.field("source").strip()
        body = self.body("/sources/{source}/holder", "put", {"holder": self.field("holder")})
        await self.change(self.admin(), sources.set_holder, source, body["holder"])
        self.done(f"{self.prefix}sources", self._("%(source)s is held by %(holder)s.", source=source,
                                                                holder=body["holder"]))


# -- the data holder's consents --


class ConsentsPage(Page):
    async def show(self, error: str | None = None):
        actor = self.holder()
        asking = await self.call(workspaces.awaiting_consent, self.enclave_settings, actor.name)
        requests = [app._consent_request(ws, release) for ws, release in asking]
        self.finish(self.render_page("consents.html", requests=requests, error=error,
                                     flash=None if error else self.take_flash()))

    async def _answer(self, fn, *args):
        actor = self.holder()
        ws, release = self.field("workspace"), self.field("release")
        asking = await self.call(workspaces.awaiting_consent, self.enclave_settings, actor.name)
        if (ws, release) not in {(w.name, r) for w, r in asking}:
            raise web.HTTPError(404, f"no request for '{release}' in '{ws}' awaits the consent of {actor.name}")
        await self.change(actor, fn, ws, release, actor.name, *args)
        return ws, release

    async def do_consent(self):
        ws, release = await self._answer(workspaces.consent)
        self.done(f"{self.prefix}consents", self._("You consented: %(release)s is attached to %(workspace)s from its"
                                                   " sandboxes' next start.", release=release, workspace=ws))

    async def do_refuse(self):
        body = self.body("/consents/{workspace}/{release}/refuse", "post", {"reason": self.field("reason").strip()})
        ws, release = await self._answer(workspaces.refuse, body["reason"])
        self.done(f"{self.prefix}consents", self._("You refused %(release)s for %(workspace)s; the admins see your"
                                                   " reason.", release=release, workspace=ws))


def page_routes(prefix: str) -> list[tuple[str, type, dict]]:
    """The pages under ``prefix`` (the API's routes are :func:`enclave.provisioning.app.api_routes`)."""
    p = prefix.rstrip("/") + "/"
    segment = "([^/]+)"
    # One environment per language: each has its translations and formatters installed.
    shared = {"templates": {locale: i18n.environment(locale, loader=FileSystemLoader(TEMPLATES),
                                                     extensions=["jinja2.ext.do"],
                                                     autoescape=select_autoescape(["html"]))
                            for locale in i18n.LOCALES}}
    return [(path, page, shared) for path, page in [
        (p, HomePage),
        (p + "workspaces", WorkspacesPage),
        (p + f"workspaces/{segment}", WorkspacePage),
        (p + "accounts", AccountsPage),
        (p + f"accounts/{segment}", AccountPage),
        (p + "sources", SourcesPage),
        (p + "consents", ConsentsPage),
    ]]
