"""JupyterHub as Enclave runs it: configuration from settings, and the hub application.

``jupyterhub_config.py`` calls :func:`configure`; ``enclave hub`` runs :class:`EnclaveHub`, which
is JupyterHub with a spawn page that knows workspaces.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

from jupyterhub.apihandlers.users import UserServerAPIHandler
from jupyterhub.app import JupyterHub
from jupyterhub.handlers.login import LogoutHandler
from jupyterhub.handlers.pages import SpawnHandler
from tornado import web

from . import rbac, workspaces
from .audit.client import AuditError
from .audit.hub import audit_service, hub_records
from .exports.hub import exports_service
from .host_state import tighten
from .logins import client_address
from .sandbox.home_image import usage as home_usage
from .settings import REPO_ROOT, Settings
from .spawner import unix_socket_url

TEMPLATES = Path(__file__).parent / "templates"
SECURE_COOKIES = {"secure": True}


class WorkspaceSpawnHandler(SpawnHandler):
    """The spawn page: a server name must be one of the user's workspaces, or a clear 404/403."""

    def initialize(self, enclave_settings: Settings):
        self.enclave_settings = enclave_settings

    async def _check_named_server_request(self, user, server_name, display_name, check_limit=True):
        try:
            ws = workspaces.get(self.enclave_settings, server_name)
        except workspaces.UnknownWorkspace:
            raise web.HTTPError(404, f"There is no workspace named '{server_name}'.") from None
        if user.name not in ws.operators:
            raise web.HTTPError(403, f"{user.name} is not an operator of workspace '{server_name}'.")
        await super()._check_named_server_request(user, server_name, display_name, check_limit)


class RecordedLogoutHandler(LogoutHandler):
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


class EnclaveHub(JupyterHub):
    name = "enclave-hub"
    description = "JupyterHub for Enclave"

    def init_handlers(self):
        super().init_handlers()
        settings = self.config.SandboxSpawner.enclave_settings
        self.handlers[:0] = self.add_url_prefix(self.hub_prefix, [
            (r"/spawn/([^/]+)/([^/]+)", WorkspaceSpawnHandler, {"enclave_settings": settings}),
            (r"/logout", RecordedLogoutHandler, {"enclave_settings": settings}),
            (r"/api/users/([^/]+)/servers/([^/]*)", RecordedServerAPIHandler),
        ])


def _secret_file(path: Path, nbytes: int) -> str:
    """A secret kept in the state directory (mode 0600), created once."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(nbytes))
    return path.read_text().strip()


def _workspaces_of(settings: Settings):
    def workspaces_of(user) -> list[dict]:
        if user is None:
            return []
        rows = []
        for ws, roles in workspaces.for_user(settings, user.name):
            spawner = user.spawners.get(ws.name) if "operator" in roles else None
            home, image = settings.operator_home(user.name, ws.name)
            rows.append({
                "name": ws.name,
                "roles": sorted(roles),
                "releases": ws.releases,
                "can_start": "operator" in roles,
                "active": bool(spawner and spawner.active),
                "ready": bool(spawner and spawner.ready),
                # The operator's home: its use of the quota (None until its first start) and the quota.
                "disk": home_usage(image, home) if "operator" in roles else None,
                "quota_mb": ws.effective_limits(settings.sandbox.limits).disk_mb,
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
    mapping = {"admin": oidc.admin_groups, "operator": oidc.operator_groups, "reviewer": oidc.reviewer_groups}

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
    if settings.sandbox.idle_timeout:
        c.JupyterHub.load_roles.append(rbac.idle_culler_role())
        c.JupyterHub.services.append({
            "name": rbac.IDLE_CULLER_SERVICE,
            # The culler's HTTP client cannot use the hub's unix socket; it goes through the proxy.
            "command": [sys.executable, "-I", "-m", "jupyterhub_idle_culler",
                        f"--url={settings.public_url}/hub/api",
                        f"--timeout={settings.sandbox.idle_timeout}",
                        f"--cull-every={settings.sandbox.cull_every}"],
            "cwd": "/",
        })


def check_host(settings: Settings) -> None:
    """Refuse to start on a host that cannot run the sandboxes, saying what is missing."""
    if os.geteuid() != 0:
        raise SystemExit(
            "enclave: the bubblewrap sandbox runs each workspace server under its own unprivileged"
            " uid, which needs the hub to start as root."
        )
    if shutil.which(settings.sandbox.bwrap) is None:
        raise SystemExit(f"enclave: '{settings.sandbox.bwrap}' not found: apt-get install bubblewrap")
    if not (settings.sandbox.python_env / "bin" / "jupyterhub-singleuser").exists():
        raise SystemExit(
            f"enclave: the sandbox environment {settings.sandbox.python_env} is missing"
            " or incomplete: run 'make setup'"
        )
