"""JupyterHub as Enclave runs it: configuration from settings, and the hub application.

``jupyterhub_config.py`` calls :func:`configure`; ``enclave hub`` runs :class:`EnclaveHub`, which
is JupyterHub with a spawn page that knows workspaces.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import sys
from functools import cached_property
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment
from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.apihandlers.users import UserServerAPIHandler
from jupyterhub.app import JupyterHub
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.handlers.login import LogoutHandler
from jupyterhub.handlers.pages import HomeHandler, SpawnHandler
from jupyterhub.scopes import needs_scope
from tornado import web
from tornado.httputil import responses
from tornado.ioloop import PeriodicCallback

from . import accounts, i18n, languages, rbac, workspaces
from .audit.client import AuditClient, AuditError, Recorder
from .audit.hub import audit_service, hub_records
from .exports.hub import exports_service
from .host_state import tighten
from .http_refusals import HTTPRefusal
from .i18n import N_
from .logins import client_address
from .provisioning import lifecycle
from .provisioning.hub import provisioning_service
from .rbac import AUDIT_SERVICE, EXPORTS_SERVICE
from .sandbox.home_image import usage as home_usage
from .services import hub_child_environment
from .settings import REPO_ROOT, Settings
from .spawner import unix_socket_url, workspace_refusal

TEMPLATES = Path(__file__).parent / "templates"
SECURE_COOKIES = {"secure": True}


# -- the hub's pages in their reader's language --


# JupyterHub's own texts that reach people on the hub's pages (its login refusals, the statuses of
# its error pages, its progress messages while a sandbox starts), in words Enclave translates: the
# pages show them with ``known_text``, which leaves any other text as it is.
JUPYTERHUB_TEXTS = frozenset({
    N_("Invalid username or password"),
    N_("Login form invalid or expired. Try again."),
    N_("Bad Request"), N_("Unauthorized"), N_("Forbidden"), N_("Not Found"), N_("Method Not Allowed"),
    N_("Conflict"), N_("Too Many Requests"), N_("Internal Server Error"), N_("Bad Gateway"),
    N_("Service Unavailable"), N_("Gateway Timeout"),
    N_("Server requested"), N_("Spawning server..."), N_("Spawn failed"), N_("Spawn cancelled"),
})


def _known_text(locale: str):
    translations = i18n.translations(locale)

    def known_text(text) -> str:
        """``text`` in ``locale`` if it is one of :data:`JUPYTERHUB_TEXTS`, else as it is."""
        return translations.gettext(text) if text in JUPYTERHUB_TEXTS else text

    return known_text


def status_phrase(status_code: int) -> str:
    """An HTTP status's reason phrase (``Not Found``), as JupyterHub's error pages name it."""
    return responses.get(status_code, "Unknown HTTP Error")


def page_environments(loader) -> dict[tuple[str, bool], Environment]:
    """The Jinja2 environments of the hub's pages, one per locale, async (``False``) and sync
    (``True``, for error pages) as JupyterHub has them, with JupyterHub's template loader and its
    options (autoescaping on), each with its locale's translations and formatters installed
    (:func:`enclave.i18n.install`).

    Why one environment per locale rather than JupyterHub's one shared environment with gettext
    callables that look up the request's locale: :func:`enclave.i18n.install` binds the
    translations, the ``datetime``/``decimal``/``size``/``format_list`` filters and the
    ``locale``/``html_lang`` globals to an environment, as the review and provisioning services
    use them; a page of the hub is then rendered exactly as theirs are, and nothing is kept per
    request in a shared object that two requests rendering at once could mix up. The cost is a
    template cache per locale."""
    environments = {}
    for locale in i18n.LOCALES:
        for sync in (False, True):
            env = i18n.environment(locale, loader=loader, autoescape=True, enable_async=not sync,
                                   extensions=["jinja2.ext.do"])
            env.globals.update(known_text=_known_text(locale), status_phrase=status_phrase)
            environments[locale, sync] = env
    return environments


class PageLanguage:
    """A hub page in its reader's language: the one the logged-in person chose (stored,
    :mod:`enclave.languages`), else their browser's ``Accept-Language``; on the login page, before
    anyone is known, the browser's. Mixed into every page handler of the hub, Enclave's and
    JupyterHub's own (:func:`with_page_language`): the handler renders its templates, error pages
    included, from the environment of that locale (:func:`page_environments`), says the page's
    language (``Content-Language``) and its charset."""

    @cached_property
    def page_locale(self) -> str:
        user = getattr(self, "_jupyterhub_user", None)  # None on an error before the user is known
        stored = None
        if user is not None and getattr(user, "kind", "user") == "user":
            stored = languages.language_of(self.settings["enclave_settings"], user.name)
        return i18n.negotiate(self.request.headers.get("Accept-Language"), stored)

    def get_template(self, name, sync=False):
        return self.settings["enclave_page_environments"][self.page_locale, sync].get_template(name)

    def render_template(self, name, sync=False, **ns):
        self.set_header("Content-Language", i18n.HTML_LANG[self.page_locale])
        self.add_header("Vary", "Accept-Language")
        return super().render_template(name, sync=sync, **ns)

    def get_content_type(self):
        # JupyterHub says text/html without a charset: the page's Chinese would then be read as Latin-1
        # by any client that does not look for the page's own <meta charset>.
        return "text/html; charset=UTF-8"

    def finish(self, chunk=None):
        # JupyterHub's error pages and the proxy's error pages set a bare text/html themselves.
        if self._headers.get("Content-Type") == "text/html":
            self.set_header("Content-Type", self.get_content_type())
        return super().finish(chunk)


def with_page_language(route: tuple) -> tuple:
    """A route of the hub whose handler, if it renders pages (a JupyterHub handler, not an API
    handler), is given :class:`PageLanguage`."""
    pattern, handler, *rest = route
    if issubclass(handler, BaseHandler) and not issubclass(handler, (APIHandler, PageLanguage)):
        handler = type(handler.__name__, (PageLanguage, handler), {"__doc__": handler.__doc__})
    return (pattern, handler, *rest)


class WorkspaceSpawnHandler(PageLanguage, SpawnHandler):
    """The spawn page: a server name must be one of the user's workspaces, or a clear 404/403
    whose reason the error page shows in the reader's language."""

    def initialize(self, enclave_settings: Settings):
        self.enclave_settings = enclave_settings

    async def _check_named_server_request(self, user, server_name, display_name, check_limit=True):
        _, refusal = workspace_refusal(self.enclave_settings, user.name, server_name)
        if refusal:
            raise refusal
        await super()._check_named_server_request(user, server_name, display_name, check_limit)


class RecordedLogoutHandler(PageLanguage, LogoutHandler):
    """Logouts into the audit log (``auth.logout``); a logout happens whether recorded or not."""

    def initialize(self, enclave_settings: Settings):
        self.enclave_settings = enclave_settings

    async def get(self):
        user = self.current_user
        if user:  # recorded before the answer goes out, so that whoever sees it can find the record
            try:
                await hub_records(self.enclave_settings).append(
                    user.name, "auth.logout", detail={"remote_ip": client_address(self.request)})
            except AuditError as exc:
                self.log.error("logout of %s not recorded: %s", user.name, exc)
        await super().get()


class RecordedServerAPIHandler(UserServerAPIHandler):
    """Stopping a server through the API: the spawner learns who asked, so that its
    ``sandbox.stop`` record names them, or is a ``sandbox.cull`` when the idle culler asked."""

    async def delete(self, user_name, server_name=""):
        user = self.find_user(user_name)
        spawner = user.spawners.get(server_name) if user is not None else None
        if spawner is not None:
            who = self.current_user
            spawner.stop_requested_by = (getattr(who, "kind", "user"), getattr(who, "name", ""))
        return await super().delete(user_name, server_name)


class LanguageHomeHandler(PageLanguage, HomeHandler):
    """The home page, with the language setting showing the user's choice: the one stored
    (enclave.languages), else what their browser's ``Accept-Language`` asks for."""

    def initialize(self, enclave_settings: Settings):
        self.enclave_settings = enclave_settings

    @property
    def template_namespace(self):
        namespace = super().template_namespace
        user = self.current_user
        stored = languages.language_of(self.enclave_settings, user.name) if user is not None else None
        namespace.update(enclave_language=self.page_locale, enclave_language_stored=stored is not None)
        return namespace


class LanguageHandler(PageLanguage, BaseHandler):
    """``POST /hub/language`` (the home page's language setting): store the logged-in user's
    language, then go back to the home page. The form names no user: one sets only one's own
    language (admins set another's with ``enclave user set-language``). JupyterHub's login and XSRF
    checks apply, as to its own forms; the change is recorded (``account.language_set``) before it
    is stored, and is not made when the audit log cannot take the record."""

    FIELDS = {"language", "_xsrf"}

    def initialize(self, enclave_settings: Settings, audit: AuditClient):
        self.enclave_settings = enclave_settings
        self.audit = audit

    @web.authenticated
    async def post(self):
        user = self.current_user
        if getattr(user, "kind", "user") != "user":
            raise HTTPRefusal(403, i18n.Message("language.person_only", N_(
                "only a person chooses a language: a service's token is refused")))
        unknown = sorted(set(self.request.body_arguments) - self.FIELDS)
        if unknown:
            raise HTTPRefusal(400, i18n.Message("language.unknown_field", N_(
                "unknown field(s) %(fields)s: this form sets only your own language"), {"fields": ", ".join(unknown)}))
        language = self.get_body_argument("language", "")
        try:
            await asyncio.to_thread(languages.set_language, self.enclave_settings, user.name, language,
                                    Recorder(self.audit, "hub", user.name))
        except languages.LanguageError as exc:
            raise HTTPRefusal(400, exc.message) from None
        except AuditError as exc:
            self.log.error("language of %s not changed: the audit log did not take its record (%s)", user.name, exc)
            raise HTTPRefusal(503, i18n.Message("language.not_recorded", N_(
                "your language was not changed: the audit log cannot record it"))) from None
        self.redirect(f"{self.hub.base_url}home")


class AdminPageHandler(PageLanguage, BaseHandler):
    """The admin page: accounts, workspaces and running sandboxes, with the one action an Enclave
    admin takes here, stopping a sandbox. JupyterHub's own page offers to add users, start servers
    and open them, none of which an Enclave admin may do: accounts and workspaces are provisioned
    with the ``enclave`` command, and admins do not enter operators' sandboxes (``enclave.rbac``)."""

    def initialize(self, enclave_settings: Settings):
        self.enclave_settings = enclave_settings

    @web.authenticated
    @needs_scope("admin-ui")
    async def get(self):
        hub_users = {u.name: u for u in self.db.query(orm.User)}
        # Enclave's accounts (none with an identity provider, whose users the hub knows once they logged in).
        roles = {a.name: list(a.roles) for a in accounts.all_accounts(self.enclave_settings)}
        account_rows = [{
            "name": name,
            "roles": roles[name] if name in roles else sorted(g.name for g in hub_users[name].groups),
            "last_activity": hub_users[name].last_activity if name in hub_users else None,
        } for name in sorted(roles.keys() | hub_users.keys())]
        sandboxes = []
        for name in sorted(hub_users):
            user = self.users[hub_users[name]]
            for workspace, spawner in sorted(user.spawners.items()):
                if spawner.active:
                    sandboxes.append({
                        "user": user.name, "workspace": workspace, "ready": spawner.ready,
                        "pending": spawner.pending or "", "started": spawner.orm_spawner.started,
                        "last_activity": spawner.orm_spawner.last_activity,
                        "sandbox": getattr(spawner, "sandbox_id", ""),
                    })
        html = await self.render_template(
            "admin.html", accounts=account_rows, sandboxes=sandboxes,
            enclave_workspace_list=workspaces.all_workspaces(self.enclave_settings))
        self.finish(html)


class EnclaveHub(JupyterHub):
    name = "enclave-hub"
    description = "JupyterHub for Enclave"

    # How long the services a killed hub left get to finish what they were doing, once told to stop.
    LEFTOVER_STOP_SECONDS = 30
    _stopping = False

    def init_handlers(self):
        super().init_handlers()
        settings = self.config.SandboxSpawner.enclave_settings
        # Before JupyterHub's own routes, so that /home is Enclave's. (Not JupyterHub.extra_handlers:
        # deprecated since JupyterHub 3.1, and added after JupyterHub's routes.)
        self.handlers[:0] = self.add_url_prefix(self.hub_prefix, [
            (r"/home", LanguageHomeHandler, {"enclave_settings": settings}),
            (r"/language", LanguageHandler, {"enclave_settings": settings, "audit": AuditClient(settings)}),
            (r"/spawn/([^/]+)/([^/]+)", WorkspaceSpawnHandler, {"enclave_settings": settings}),
            (r"/logout", RecordedLogoutHandler, {"enclave_settings": settings}),
            (r"/api/users/([^/]+)/servers/([^/]*)", RecordedServerAPIHandler),
            (r"/admin", AdminPageHandler, {"enclave_settings": settings}),
        ])
        self.handlers = [with_page_language(route) for route in self.handlers]

    def init_tornado_settings(self):
        super().init_tornado_settings()
        # The hub's pages in their reader's language (PageLanguage).
        self.tornado_settings["enclave_settings"] = self.config.SandboxSpawner.enclave_settings
        self.tornado_settings["enclave_page_environments"] = page_environments(
            self.tornado_settings["jinja2_env"].loader)

    async def start(self):
        # JupyterHub replaces the proxy a killed hub left (its pid file); the services are ours to replace.
        await self.stop_leftover_services()
        await super().start()
        await self.start_lifecycle()

    async def start_lifecycle(self) -> None:
        """Enforce workspaces' and accounts' states on running sandboxes now, then every
        ``[workspaces] lifecycle_interval_seconds`` (enclave.provisioning.lifecycle)."""
        settings = self.config.SandboxSpawner.enclave_settings
        enforcement = lifecycle.Lifecycle(self, settings)
        await enforcement.run()
        callback = PeriodicCallback(enforcement.run, settings.workspaces.lifecycle_interval_seconds * 1000)
        self._periodic_callbacks["enclave_lifecycle"] = callback
        callback.start()

    async def stop_leftover_services(self) -> None:
        """Stop the managed services (review, audit, idle culler) a hub of this Enclave left when it
        was killed, and wait until they are gone: they hold the ports, sockets and writer lock the
        new services need. Told by the kernel that their hub died, they are stopping already
        (``enclave.services.stop_with_parent``); whatever is still there is sent SIGTERM, and SIGKILL
        after ``LEFTOVER_STOP_SECONDS``. Sandboxes are not services: they keep running."""
        home = str(self.config.SandboxSpawner.enclave_settings.home)
        leftovers = hub_services_of(home)
        if not leftovers:
            return
        for pid, name in leftovers.items():
            self.log.warning("Stopping the %s service (pid %d) left running by a previous hub", name, pid)
            _signal(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.LEFTOVER_STOP_SECONDS
        while (left := hub_services_of(home)) and loop.time() < deadline:
            await asyncio.sleep(0.2)
        for pid, name in left.items():
            self.log.error("The %s service (pid %d) left by a previous hub did not stop: killed", name, pid)
            _signal(pid, signal.SIGKILL)

    async def shutdown_cancel_tasks(self, sig=None):
        """Stop on SIGTERM or SIGINT. JupyterHub's signal handler leaves its periodic checks running
        while it stops the services one by one: the service health check then reads a stopped
        service's server (gone: AttributeError), and a second signal starts a second shutdown over
        the first. They are stopped first, as ``JupyterHub.stop`` does, and a second signal only waits."""
        if self._stopping:
            self.log.warning("Received %s: already stopping", getattr(sig, "name", "a signal"))
            return
        self._stopping = True
        if self.http_server:
            self.http_server.stop()
        for callback in self._periodic_callbacks.values():
            callback.stop()
        await super().shutdown_cancel_tasks(sig)

    async def cleanup(self):
        """Stop the services, then what JupyterHub stops (the proxy; not the sandboxes, which
        outlive the hub). JupyterHub stops its services one after the other in the order
        configured, the audit service first; the others hand it records until they stop, so they
        stop first, together, and the audit service last."""
        services = [s for s in self._service_map.values() if s.managed]
        await asyncio.gather(*(s.stop() for s in services if s.name != AUDIT_SERVICE))
        await asyncio.gather(*(s.stop() for s in services if s.name == AUDIT_SERVICE))
        await super().cleanup()


def hub_services_of(home: str) -> dict[int, str]:
    """The managed services of a hub of the Enclave at ``home`` running on this host, by pid with
    their names: root's processes to which JupyterHub gave a service name, with that home."""
    found = {}
    wanted_home = f"ENCLAVE_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != 0:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        service = next((v[len(b"JUPYTERHUB_SERVICE_NAME="):] for v in environ
                        if v.startswith(b"JUPYTERHUB_SERVICE_NAME=")), None)
        if service is not None and wanted_home in environ:
            found[int(entry.name)] = service.decode()
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _secret_file(path: Path, nbytes: int) -> str:
    """A secret kept in the state directory (mode 0600), created once."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(nbytes))
    return path.read_text().strip()


def _workspaces_of(settings: Settings):
    # Reviewers review on the review service's own origin, one queue per workspace.
    review_queue = settings.service_url(EXPORTS_SERVICE) + "queue"

    def workspaces_of(user) -> list[dict]:
        if user is None:
            return []
        rows = []
        for ws, roles in workspaces.for_user(settings, user.name):
            spawner = user.spawners.get(ws.name) if "operator" in roles else None
            home, image = settings.operator_home(user.name, ws.name)
            rows.append({
                "name": ws.name,
                # Frozen or archived: the page says so, and why, and offers no start.
                "state": ws.state,
                "state_reason": ws.state_reason,
                "expires_at": ws.expires_at,
                "roles": sorted(roles),
                "releases": ws.releases,
                "can_start": "operator" in roles,
                "active": bool(spawner and spawner.active),
                "ready": bool(spawner and spawner.ready),
                # The operator's home: its use of the quota (None until its first start) and the quota.
                "disk": home_usage(image, home) if "operator" in roles else None,
                "quota_mb": ws.effective_limits(settings.sandbox.limits).disk_mb,
                "review_url": f"{review_queue}?workspace={quote(ws.name)}" if "reviewer" in roles else None,
            })
        return rows

    return workspaces_of


def _authenticator(c, settings: Settings) -> None:
    if settings.hub.authenticator == "native":
        c.JupyterHub.authenticator_class = "enclave.accounts.EnclaveAuthenticator"
        c.EnclaveAuthenticator.enclave_settings = settings
        c.EnclaveAuthenticator.enclave_db_url = settings.enclave_db_url
        c.EnclaveAuthenticator.allowed_failed_logins = settings.accounts.allowed_failed_logins
        c.EnclaveAuthenticator.throttle_max_seconds = settings.accounts.lockout_seconds
        # Only admins create accounts, so whoever has one may log in.
        c.EnclaveAuthenticator.allow_all = True
        c.EnclaveAuthenticator.manage_groups = True
    else:
        oidc = settings.hub.oidc
        c.JupyterHub.authenticator_class = "enclave.oidc.EnclaveOAuthenticator"
        c.EnclaveOAuthenticator.enclave_settings = settings
        g = c.GenericOAuthenticator
        g.client_id = oidc.client_id
        g.client_secret = oidc.client_secret
        g.authorize_url = oidc.authorize_url
        g.token_url = oidc.token_url
        g.userdata_url = oidc.userdata_url
        g.oauth_callback_url = oidc.oauth_callback_url or f"{settings.public_url}/hub/oauth_callback"
        g.username_claim = oidc.username_claim
        g.scope = oidc.scope
        g.enable_pkce = True
        # The IdP's groups, mapped onto Enclave's roles, become the user's groups at each login;
        # someone holding none of the mapped groups cannot log in.
        g.manage_groups = True
        g.auth_state_groups_key = oidc_roles(oidc)
        g.allowed_groups = {"admin", "operator", "reviewer"}
        g.admin_groups = set()  # Enclave admins are not JupyterHub admins (see enclave.rbac)


def oidc_roles(oidc):
    """IdP groups (claim ``groups_claim`` of the user info) -> Enclave role groups."""
    mapping = {"admin": oidc.admin_groups, "holder": oidc.holder_groups, "operator": oidc.operator_groups,
               "reviewer": oidc.reviewer_groups}

    def roles(auth_state: dict) -> list[str]:
        idp_groups = set((auth_state.get("oauth_user") or {}).get(oidc.groups_claim) or [])
        return sorted(role for role, names in mapping.items() if idp_groups & set(names))

    return roles


def configure(c, settings: Settings) -> None:
    """Fill JupyterHub's config object ``c`` from Enclave settings."""
    for d in (settings.home, settings.hub_dir, settings.run_dir, settings.hub_socket.parent,
              settings.run_dir / "exports", settings.homes_dir, settings.release_store):
        d.mkdir(parents=True, exist_ok=True)
    # The state is root's (a state directory from before, or loosened by hand, is made so again);
    # sandboxes reach the hub's and the review service's sockets through these folders, bound into
    # them: bwrap binds as root, so only the bound folders' own modes matter to the sandboxes' uids.
    tighten(settings.home)
    for d in (settings.hub_socket.parent, settings.run_dir / "exports"):
        d.chmod(0o755)

    c.JupyterHub.ip = settings.hub.ip
    c.JupyterHub.port = settings.hub.port
    # Origins of their own: the hub at the public URL, each user's servers at <user>.<host>, each
    # service at <service>--service.<host> (JupyterHub's 'idna' subdomain hook). Cookies are
    # host-only with the __Host- prefix: a page served on one origin can neither read another's
    # cookies nor toss its own onto another host. (One user's workspaces share that user's origin.)
    c.JupyterHub.subdomain_host = settings.public_url
    c.JupyterHub.cookie_host_prefix_enabled = True
    # __Host- cookies must be Secure, and browsers accept Secure cookies only over https or from
    # localhost names; JupyterHub 6.1.1 leaves Secure off the OAuth state cookie of servers and
    # services on plain http, so the browser would drop it. Every cookie is Secure (the hub passes
    # these options on to the servers; the review service gets them in its environment).
    # Production is https: see README.
    c.JupyterHub.tornado_settings = {"cookie_options": SECURE_COOKIES}
    if settings.hub.ssl_cert:
        c.JupyterHub.ssl_cert = settings.hub.ssl_cert
        c.JupyterHub.ssl_key = settings.hub.ssl_key
    c.JupyterHub.db_url = settings.hub_db_url
    # JupyterHub's own database migrates at start after an upgrade, as Enclave's, the review
    # service's and the audit log's do (their Alembic migrations run when each opens its database);
    # JupyterHub backs a SQLite file up first.
    c.JupyterHub.upgrade_db = True
    c.JupyterHub.cookie_secret_file = str(settings.secrets_dir / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(settings.hub_dir / "jupyterhub.pid")
    c.JupyterHub.log_level = settings.hub.log_level
    c.JupyterHub.template_paths = [str(TEMPLATES)]
    c.JupyterHub.template_vars = {"enclave_workspaces": _workspaces_of(settings)}
    c.JupyterHub.default_url = "/hub/home"

    # The hub listens on a unix socket that sandboxes can reach without a network. The hub API
    # authenticates every request, so the socket is open to the sandboxes' uids.
    hub_url = unix_socket_url(settings.hub_socket)
    c.JupyterHub.hub_bind_url = hub_url
    c.JupyterHub.hub_connect_url = hub_url
    c.JupyterHub.hub_socket_mode = 0o666

    c.JupyterHub.proxy_class = "enclave.proxy.UnixSocketProxy"
    c.ConfigurableHTTPProxy.command = [
        shutil.which("node") or "node", "--import", str(Path(__file__).with_name("proxy_unix_keepalive.mjs")),
        str(REPO_ROOT / "node_modules" / ".bin" / "configurable-http-proxy"),
    ]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings.hub.proxy_api_port}"
    c.ConfigurableHTTPProxy.auth_token = _secret_file(settings.secrets_dir / "proxy_auth_token", 32)
    c.ConfigurableHTTPProxy.pid_file = str(settings.hub_dir / "proxy.pid")
    # Sandboxes outlive a hub restart; the proxy is restarted with the hub and its routes restored.
    c.JupyterHub.cleanup_servers = False

    _authenticator(c, settings)

    # Roles, custom scopes and the token a sandbox's server gets.
    c.JupyterHub.custom_scopes = rbac.CUSTOM_SCOPES
    c.JupyterHub.load_roles = list(rbac.ROLES)
    c.Spawner.server_token_scopes = rbac.SERVER_TOKEN_SCOPES

    # One named server per workspace; the default (unnamed) server is not offered.
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = 0
    c.JupyterHub.spawner_class = "enclave.spawner.SandboxSpawner"
    c.SandboxSpawner.enclave_settings = settings
    c.Spawner.disable_user_config = True
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = settings.sandbox.start_timeout
    c.Spawner.http_timeout = settings.sandbox.start_timeout

    # The audit service first: every other component hands it records (enclave.audit).
    c.JupyterHub.services = [audit_service(settings), exports_service(settings)]
    # Provisioning: the REST API of admins and data holders (enclave.provisioning).
    c.JupyterHub.services.append(provisioning_service(settings))
    if settings.sandbox.idle_timeout:
        c.JupyterHub.load_roles.append(rbac.idle_culler_role())
        c.JupyterHub.services.append({
            "name": rbac.IDLE_CULLER_SERVICE,
            # The culler's HTTP client cannot use the hub's unix socket; it goes through the proxy.
            # It runs as a process of the hub: it stops with it (enclave.services).
            "command": [sys.executable, "-I", "-m", "enclave.services", "jupyterhub_idle_culler",
                        f"--url={settings.public_url}/hub/api",
                        f"--timeout={settings.sandbox.idle_timeout}",
                        f"--cull-every={settings.sandbox.cull_every}"],
            "environment": {"ENCLAVE_HOME": str(settings.home), **hub_child_environment()},
            "cwd": "/",
        })


def check_host(settings: Settings) -> None:
    """Refuse to start on a host that cannot run the sandboxes, saying what is missing."""
    sandbox = settings.sandbox
    if os.geteuid() != 0:
        raise SystemExit(
            "enclave: each workspace server runs in a sandbox under its own unprivileged uid, with its"
            " home's quota image mounted, which needs the hub to start as root."
        )
    if sandbox.backend == "docker":
        if sandbox.launcher:  # the launcher's container checks for itself what it needs
            return
        if not Path("/var/run/docker.sock").exists() and "DOCKER_HOST" not in os.environ:
            raise SystemExit("enclave: sandbox.backend is 'docker' but no Docker daemon is reachable"
                             " (/var/run/docker.sock, DOCKER_HOST)")
        return
    if shutil.which(sandbox.bwrap) is None:
        raise SystemExit(f"enclave: '{sandbox.bwrap}' not found: apt-get install bubblewrap")
    if not (sandbox.python_env / "bin" / "jupyterhub-singleuser").exists():
        raise SystemExit(
            f"enclave: the sandbox environment {sandbox.python_env} is missing"
            " or incomplete: run 'make setup'"
        )
