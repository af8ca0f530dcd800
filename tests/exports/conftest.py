"""A real JupyterHub (with proxy) running the export review service and the audit service as
hub-managed services, as Enclave's hub does: every export test runs with a real audit log.

Each run takes free ports and a state directory of its own. No sandboxes are started: a sandbox's
server token is stood in for by a token, created through the hub API, with the same scopes a server
token carries for ``<user>/<workspace>``. The path from inside a real sandbox (the spawner's bind
mount of the intake socket) is covered by the guard's tests.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
import requests_unixsocket

from enclave_testing import free_port, grant

from enclave import accounts, rbac, workspaces
from enclave.audit import socket_path
from enclave.audit.reader import AuditReader
from enclave.exports.sockets import intake_socket
from enclave.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "exports-test-password"

USERS = {
    "olga": ["operator"],
    "omar": ["operator"],
    "dual": ["operator", "reviewer"],
    "rita": ["reviewer"],
    "rob": ["reviewer"],
    "rhea": ["reviewer"],
    "adam": ["admin"],
}
# ws1: olga and dual analyse, rita, rob and dual review; ws2: omar analyses, rhea reviews.
MEMBERS = {
    "ws1": {"operator": ["olga", "dual"], "reviewer": ["rita", "rob", "dual"]},
    "ws2": {"operator": ["omar"], "reviewer": ["rhea"]},
}

CONFIG = """
from enclave import rbac
from enclave.audit.hub import audit_service
from enclave.exports.hub import exports_service
from enclave.settings import load_settings

settings = load_settings()
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {hub_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_api_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.JupyterHub.db_url = settings.hub_db_url
c.JupyterHub.cookie_secret = bytes.fromhex({cookie_secret!r})
c.JupyterHub.pid_file = {pid_file!r}
c.JupyterHub.authenticator_class = "enclave.accounts.EnclaveAuthenticator"
c.EnclaveAuthenticator.enclave_settings = settings
c.EnclaveAuthenticator.enclave_db_url = settings.enclave_db_url
c.EnclaveAuthenticator.allow_all = True
c.EnclaveAuthenticator.manage_groups = True
c.JupyterHub.allow_named_servers = True
c.JupyterHub.custom_scopes = rbac.CUSTOM_SCOPES
c.JupyterHub.load_roles = rbac.ROLES + [
    {{"name": "harness", "scopes": ["tokens", "read:users"], "services": ["harness"]}},
]
c.JupyterHub.services = [
    audit_service(settings),
    exports_service(settings),
    {{"name": "harness", "api_token": {harness_token!r}}},
]
"""


def people_rows(n: int = 60) -> list[list[str]]:
    """A released (synthetic) dataset: one row per person."""
    regions = ["north", "south", "east", "west"]
    rows = [["region", "age", "income", "sector"]]
    for i in range(n):
        rows.append([regions[i % 4], str(20 + (i * 7) % 50), f"{30000 + i * 1237 % 40000}", f"s{i % 6}"])
    return rows


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Client:
    """JSON API client through the proxy, authenticated by a hub token."""

    def __init__(self, token: str, base: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"

    def get(self, path: str, **kw) -> requests.Response:
        return self.session.get(self.base + path, timeout=30, **kw)

    def post(self, path: str, body: dict | None = None, **kw) -> requests.Response:
        return self.session.post(self.base + path, json=body, timeout=60, **kw)

    def put(self, path: str, body: dict) -> requests.Response:
        return self.session.put(self.base + path, json=body, timeout=30)

    def submit(self, files: dict[str, bytes], title: str = "Outputs", context: str = "Tables for the report.",
               manifest: dict | None = None, path: str = "/requests", **extra) -> requests.Response:
        if manifest is None:
            manifest = {"files": {n: {"sha256": sha(d), "provenance": {"notebook": "analysis.ipynb"}}
                                  for n, d in files.items()}}
        # File names percent-encoded, as the guard sends them (RFC 7578, section 4.2).
        parts = [("file", (quote(n, safe=""), d, "application/octet-stream")) for n, d in files.items()]
        data = {"title": title, "context": context, "manifest": json.dumps(manifest), **extra}
        return self.session.post(self.base + path, data=data, files=parts, timeout=120)


class Intake(Client):
    """The same API over the intake socket, as a sandbox's server reaches it."""

    def __init__(self, token: str, socket_path: Path) -> None:
        super().__init__(token, base="http+unix://" + quote(str(socket_path), safe=""))
        self.session = requests_unixsocket.Session()
        self.session.headers["Authorization"] = f"token {token}"

    def get(self, path: str, **kw):
        return super().get("/api" + path, **kw)

    def post(self, path: str, body=None, **kw):
        return super().post("/api" + path, body, **kw)

    def submit(self, files, path: str = "/requests", **kw):
        return super().submit(files, path="/api" + path, **kw)


class Hub:
    """A JupyterHub on a home of its own; started, killed and started again by the tests."""

    def __init__(self, settings: Settings, env: dict, config: Path, port: int, harness_token: str) -> None:
        self.settings = settings
        self.env = env
        self.config = config
        self.proc: subprocess.Popen | None = None
        # "localhost", as a browser is pointed at: a secure context where the services' __Host- (Secure)
        # cookies travel over plain HTTP (enclave_testing teaches the test process's cookie jars that).
        self.url = f"http://localhost:{port}"
        self.service = f"{self.url}/services/exports"
        self.harness = requests.Session()
        self.harness.headers["Authorization"] = f"token {harness_token}"
        self.log = settings.home / "jupyterhub.log"
        self.password = PASSWORD
        self.intake_socket = intake_socket(settings)
        self.audit_socket = socket_path(settings)

    def start(self) -> None:
        """Start JupyterHub (again, after a crash: same ports, same state); it starts its services."""
        with self.log.open("a") as out:
            self.proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "jupyterhub"), "-f", str(self.config)],
                                         cwd=self.settings.home, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        """Stop JupyterHub as an administrator would (SIGTERM), and make sure its services are gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # The services stop with the hub, or on their own once it is gone (a killed hub).
        deadline = time.monotonic() + 30
        while (left := self.services_running()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"services outlived their hub by 30 s: {left}"

    def services_running(self) -> list[int]:
        """Process ids of this home's review and audit services, whoever started them."""
        mark = f"ENCLAVE_HOME={self.settings.home}".encode()
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                cmdline = (environ.parent / "cmdline").read_bytes()
                if mark in environ.read_bytes().split(b"\0") and (
                        b"enclave.exports.app" in cmdline or b"enclave.audit.service" in cmdline):
                    found.append(int(environ.parent.name))
            except (OSError, ValueError):
                continue
        return found

    def login(self, username: str) -> requests.Session:
        """A browser-like session logged in to the hub (this also sets the user's role groups)."""
        s = requests.Session()
        s.get(f"{self.url}/hub/login", timeout=30)
        r = s.post(f"{self.url}/hub/login", data={"username": username, "password": PASSWORD,
                                                   "_xsrf": s.cookies.get("_xsrf")}, allow_redirects=False, timeout=30)
        assert r.status_code == 302, f"login of {username} failed: {r.status_code}"
        return s

    def token(self, username: str, scopes: list[str]) -> str:
        r = self.harness.post(f"{self.url}/hub/api/users/{username}/tokens",
                              json={"scopes": scopes, "note": "export review tests"}, timeout=30)
        assert r.status_code == 201, r.text
        return r.json()["token"]

    def server_token(self, username: str, workspace: str) -> str:
        """What a sandbox server's $JUPYTERHUB_API_TOKEN holds for ``username``/``workspace``."""
        return self.token(username, [f"access:servers!server={username}/{workspace}",
                                     f"access:services!service={rbac.EXPORTS_SERVICE}",
                                     "custom:exports:request!user"])

    def user_token(self, username: str) -> str:
        """A token with the user's own export scopes (as a browser session has)."""
        return self.token(username, [f"access:services!service={rbac.EXPORTS_SERVICE}", *{
            "operator": ["custom:exports:request!user"], "reviewer": ["custom:exports:review"],
            "admin": ["custom:exports:admin"]}[USERS[username][0]]] + (
            ["custom:exports:review"] if "reviewer" in USERS[username] else []))

    def service_pid(self, module: str = "enclave.exports.app") -> int:
        """The process id of the hub's service running ``module`` (the review service by default)."""
        out = subprocess.run(["pgrep", "-f", "-P", str(self.proc.pid), module],
                             capture_output=True, text=True).stdout.split()
        assert out, f"the hub runs no {module} service"
        return int(out[0])

    def wait_for_restart(self, old_pid: int, module: str = "enclave.exports.app", timeout: float = 90) -> None:
        """Wait until the hub has started its ``module`` service again (it polls its services every 30 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.service_pid(module) != old_pid:
                    break
            except AssertionError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(f"the hub did not start {module} again in {timeout} s")
        self.wait_for_service()

    def wait_for_service(self, timeout: float = 60) -> None:
        """Wait until the review service answers and the audit service takes records."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited; see {self.log}:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.service}/api/openapi.json", timeout=2).status_code == 200 \
                        and self.intake_socket.exists() and accepts_connections(self.audit_socket):
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the services did not come up; see {self.log}:\n{self.log.read_text()[-3000:]}")

    # -- the audit log --

    def records(self, action: str, request_id: str | None = None, **filters) -> list[dict]:
        """The audit log's records of ``action`` (a name or ``export.*``), oldest first, read as
        ``enclave audit query`` reads them; only those of ``request_id`` if given."""
        reader = AuditReader(self.settings)
        try:
            found, after = [], None
            while True:
                page = reader.query(action=action, after=after, limit=1000, **filters)
                found += page["records"]
                after = page["next"]
                if after is None:
                    break
        finally:
            reader.close()
        return [r for r in found if request_id is None or r["detail"].get("request_id") == request_id]

    def verify_audit_log(self) -> str:
        """``enclave audit verify``, run as an administrator runs it; its output once it passes."""
        r = subprocess.run([str(REPO / ".venv" / "bin" / "enclave"), "audit", "verify"], env=self.env,
                           cwd=self.settings.home, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"enclave audit verify failed:\n{r.stdout}{r.stderr}"
        return r.stdout


def accepts_connections(path: Path) -> bool:
    """Whether a service listens on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def prepare_home(home: Path, db_url: str = "") -> tuple[Settings, dict]:
    """A home with the tests' accounts, workspaces and released dataset: its settings, and the
    environment its hub runs in (free ports; no other Enclave's settings file or overrides).
    ``db_url``: the review service's database, SQLite in the home when empty."""
    service_port, audit_port = free_port(), free_port()
    settings = Settings(home=home, exports={"port": service_port, "db_url": db_url}, audit={"port": audit_port})
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}
    env.update(ENCLAVE_HOME=str(home), ENCLAVE_CONFIG=str(home / "enclave.toml"),
               ENCLAVE_EXPORTS__PORT=str(service_port), ENCLAVE_AUDIT__PORT=str(audit_port))
    if db_url:
        env["ENCLAVE_EXPORTS__DB_URL"] = db_url
    settings.hub_dir.mkdir(parents=True, exist_ok=True)
    for name, roles in USERS.items():
        accounts.add_user(settings, name, roles, PASSWORD)
    release = settings.release_store / "people" / "data"
    release.mkdir(parents=True)
    with (release / "people.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(people_rows())
    for ws, members in MEMBERS.items():
        workspaces.create(settings, ws)
        # 'dual' is an operator and a reviewer of ws1: the review service must still refuse
        # their votes on their own requests.
        workspaces.set_operators_may_review(settings, ws, True)
        for role, names in members.items():
            for name in names:
                workspaces.add_member(settings, ws, name, role)
    grant(settings, "ws1", "people")
    return settings, env


@contextlib.contextmanager
def running_hub(home: Path, db_url: str = ""):
    """A hub on ``home`` with its review and audit services, every user logged in once; stopped after.
    ``db_url``: the review service's database (SQLite in the home by default)."""
    settings, env = prepare_home(home, db_url)
    harness_token = secrets.token_hex(32)
    hub_port = free_port()
    config = home / "jupyterhub_config.py"
    config.write_text(CONFIG.format(
        hub_port=hub_port, hub_api_port=free_port(), proxy_api_port=free_port(),
        proxy=str(REPO / "node_modules" / ".bin" / "configurable-http-proxy"),
        proxy_token=secrets.token_hex(32), cookie_secret=secrets.token_hex(32),
        pid_file=str(home / "jupyterhub.pid"), harness_token=harness_token,
    ))
    hub = Hub(settings, env, config, hub_port, harness_token)
    hub.start()
    try:
        hub.wait_for_service()
        for name in USERS:
            hub.login(name)
        yield hub
    finally:
        hub.stop()


def make_tokens(hub: Hub) -> dict[str, str]:
    """API tokens: each user's own, and server-token stand-ins for the operators' workspaces."""
    t = {name: hub.user_token(name) for name in USERS}
    t["olga@ws1"] = hub.server_token("olga", "ws1")
    t["dual@ws1"] = hub.server_token("dual", "ws1")
    t["omar@ws2"] = hub.server_token("omar", "ws2")
    return t


@pytest.fixture(scope="package")
def hub(tmp_path_factory):
    """The package's hub, its review service on SQLite in the home."""
    home = tmp_path_factory.mktemp("exports-home")
    # Neither the hub nor this process (the CLI run in tests) may pick up another Enclave's settings.
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("ENCLAVE_")]:
            mp.delenv(k)
        mp.setenv("ENCLAVE_HOME", str(home))
        mp.setenv("ENCLAVE_CONFIG", str(home / "enclave.toml"))
        with running_hub(home) as running:
            yield running


@pytest.fixture(scope="package")
def pg_hub(tmp_path_factory, postgres):
    """A second hub whose review service keeps its database in PostgreSQL (the session's cluster).
    This process's environment stays the package hub's: run the CLI on it with ``env=pg_hub.env``."""
    with running_hub(tmp_path_factory.mktemp("exports-pg-home"), postgres.new_database("exports")) as running:
        yield running


@pytest.fixture(scope="package")
def tokens(hub):
    return make_tokens(hub)


@pytest.fixture(scope="package")
def client(hub):
    """``client(token)``: the JSON API through the proxy."""
    return lambda token: Client(token, hub.service + "/api")


@pytest.fixture(scope="package")
def intake(hub):
    """``intake(token)``: the JSON API over the intake socket."""
    return lambda token: Intake(token, hub.intake_socket)
