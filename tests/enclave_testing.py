"""Drive a real Enclave hub from tests and benchmarks: start it, log in, start sandboxes, run code.

Everything goes through the proxy on loopback, as a browser or script would, at the host names a
browser uses: the hub at ``localhost``, each user's servers at ``<user>.localhost`` and each service
at ``<service>--service.localhost``. Browsers resolve every ``*.localhost`` name to loopback; this
module teaches Python's resolver the same, and lets the ``Secure`` (``__Host-``) cookies the hub sets
travel over plain HTTP to those loopback names, as browsers do (both only in the test process).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock
from urllib.parse import urlparse

import requests
import websocket
from jupyterhub.utils import subdomain_hook_idna

REPO = Path(__file__).resolve().parent.parent
ENCLAVE = REPO / ".venv" / "bin" / "enclave"
_hub_numbers = itertools.count(os.getpid() % 100 * 10)

_getaddrinfo = socket.getaddrinfo


def _resolve_localhost_names(host, *args, **kwargs):
    """``*.localhost`` is loopback (RFC 6761), as browsers resolve it; glibc does not."""
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _resolve_localhost_names


def _localhost_name(request) -> str | None:
    host = urlparse(request.get_full_url()).hostname or ""
    return host if host == "localhost" or host.endswith(".localhost") else None


# Python's cookie jars (also those requests makes per redirect), taught what browsers do for
# ``localhost`` names: they are a secure context (Secure cookies travel over http), a host-only cookie
# goes to its host alone, and ``Domain=localhost`` reaches ``localhost`` and its subdomains (Python's
# jar files ``localhost`` under ``localhost.local`` and would match neither).
_stock_return_ok_secure = http.cookiejar.DefaultCookiePolicy.return_ok_secure
_stock_return_ok_domain = http.cookiejar.DefaultCookiePolicy.return_ok_domain


def _return_ok_secure(policy, cookie, request) -> bool:
    return _localhost_name(request) is not None or _stock_return_ok_secure(policy, cookie, request)


def _return_ok_domain(policy, cookie, request) -> bool:
    host = _localhost_name(request)
    if host is None:
        return _stock_return_ok_domain(policy, cookie, request)
    if cookie.domain_specified:
        domain = cookie.domain.lstrip(".")
        return host == domain or host.endswith("." + domain)
    return cookie.domain in (host, host + ".local")


http.cookiejar.DefaultCookiePolicy.return_ok_secure = _return_ok_secure
http.cookiejar.DefaultCookiePolicy.return_ok_domain = _return_ok_domain


def websocket_url(url: str) -> str:
    return "ws" + url.removeprefix("http")


def connect_websocket(session: "Session", url: str, timeout: float):
    """A websocket with the session's cookies, as a browser on the page would open it."""
    ca = session.hub.tls[0] if session.hub.tls else None
    return websocket.create_connection(url, header=[f"Cookie: {cookie_header(session.http, url)}"], timeout=timeout,
                                       sslopt={"ca_certs": str(ca)} if ca else None)


def cookie_header(session: requests.Session, url: str) -> str:
    """The Cookie header a browser would send with a request to ``url`` (http(s) or ws(s))."""
    request = requests.Request("GET", "http" + url.removeprefix("ws") if url.startswith("ws") else url).prepare()
    return requests.cookies.get_cookie_header(session.cookies, request) or ""


def cookie_value(session: requests.Session, url: str, name: str) -> str | None:
    """The value of cookie ``name`` that a request to ``url`` carries (of several, the one with the
    most specific path: a cookie header lists longer paths first)."""
    for pair in cookie_header(session, url).split("; "):
        key, _, value = pair.partition("=")
        if key == name:
            return value
    return None


# Ports for test servers come from below the kernel's ephemeral range (32768-60999 here), where no
# outgoing connection takes a local port: a port the kernel hands out for bind(0) is free when asked
# but may be a client connection's, or another test server's, by the time a server binds it.
_TEST_PORTS = range(20000, 32000)
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port no server of this test run has been given and nothing holds now."""
    for port in random.sample(_TEST_PORTS, len(_TEST_PORTS)):
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port left in {_TEST_PORTS}")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
UNPRIVILEGED = 65534  # nobody


def alembic_revisions(url: str) -> set[str]:
    """The revisions Alembic stamped on the database at ``url``."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
    finally:
        engine.dispose()


class PostgresCluster:
    """A throwaway PostgreSQL 15 cluster from Debian's binaries, run as an unprivileged user (initdb
    and postgres refuse to run as root), listening only on a unix socket in its own temporary
    directory; each test asks it for a database of its own."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="enclave-pg-"))
        os.chown(self.dir, UNPRIVILEGED, UNPRIVILEGED)
        self.log = self.dir / "postgres.log"
        self._names = itertools.count(1)
        as_nobody = ["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups"]
        subprocess.run([*as_nobody, str(POSTGRES_BIN / "initdb"), "-D", str(self.dir / "data"), "-U", "enclave",
                        "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
        self.proc = subprocess.Popen(
            [*as_nobody, str(POSTGRES_BIN / "postgres"), "-D", str(self.dir / "data"), "-k", str(self.dir),
             "-c", "listen_addresses=", "-c", "fsync=on"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), start_new_session=True)
        deadline = time.monotonic() + 60
        while not (self.dir / ".s.PGSQL.5432").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start:\n{self.log.read_text()}")
            time.sleep(0.1)
        self._psql("SELECT 1")

    def _psql(self, sql: str) -> None:
        import psycopg

        for _ in range(50):
            try:
                with psycopg.connect(host=str(self.dir), user="enclave", dbname="postgres", autocommit=True) as c:
                    c.execute(sql)
                return
            except psycopg.OperationalError:  # still starting up
                time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL does not answer:\n{self.log.read_text()}")

    def new_database(self, prefix: str = "test") -> str:
        name = f"{prefix}_{next(self._names)}"
        self._psql(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://enclave@/{name}?host={self.dir}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # fast shutdown
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Hub:
    """An ``enclave hub`` process with its own ENCLAVE_HOME and ports."""

    home: Path
    env_overrides: dict = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proxy_api_port: int = field(default_factory=free_port)
    exports_port: int = field(default_factory=free_port)
    audit_port: int = field(default_factory=free_port)
    provisioning_port: int = field(default_factory=free_port)
    # Hubs on one machine must not hand out the same sandbox uids.
    uid_base: int = field(default_factory=lambda: 300_000 + 1000 * next(_hub_numbers))
    proc: subprocess.Popen | None = None
    # The launcher (enclave.sandbox.launcher) when the hub asks one for its supervisors
    # (ENCLAVE_SANDBOX__LAUNCHER=true), as in the container deployment: it outlives the hub's restarts.
    launcher: subprocess.Popen | None = None
    # The public host name (its subdomains are the users' and services' origins), and TLS at the
    # proxy: (certificate, key) PEM files, the certificate also trusted by this hub's clients.
    domain: str = "localhost"
    tls: tuple[Path, Path] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def verify(self) -> str | bool:
        """What clients of this hub verify its certificate with (requests' ``verify``)."""
        return str(self.tls[0]) if self.tls else True

    @property
    def url(self) -> str:
        """The hub's public URL."""
        return f"{self.scheme}://{self.domain}:{self.port}"

    def user_origin(self, user: str) -> str:
        """Where the user's servers are: a host name of their own (JupyterHub's subdomain hook)."""
        return f"{self.scheme}://{subdomain_hook_idna(user, self.domain, 'user')}:{self.port}"

    def service_url(self, name: str) -> str:
        host = subdomain_hook_idna(name, self.domain, "service")
        return f"{self.scheme}://{host}:{self.port}/services/{name}"

    @property
    def env(self) -> dict:
        # Nothing of another Enclave's settings (file or overrides) reaches this hub.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}
        return {
            **inherited,
            "ENCLAVE_HOME": str(self.home),
            "ENCLAVE_HUB__PORT": str(self.port),
            "ENCLAVE_HUB__PROXY_API_PORT": str(self.proxy_api_port),
            "ENCLAVE_EXPORTS__PORT": str(self.exports_port),
            "ENCLAVE_AUDIT__PORT": str(self.audit_port),
            "ENCLAVE_PROVISIONING__PORT": str(self.provisioning_port),
            "ENCLAVE_SANDBOX__UID_BASE": str(self.uid_base),
            "ENCLAVE_HUB__PUBLIC_URL": self.url,
            # Each home's image is preallocated: small in tests, where many homes are made.
            "ENCLAVE_SANDBOX__LIMITS__DISK_MB": "256",
            **({"ENCLAVE_HUB__SSL_CERT": str(self.tls[0]), "ENCLAVE_HUB__SSL_KEY": str(self.tls[1])} if self.tls else {}),
            **self.env_overrides,
        }

    def enclave(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """Run the ``enclave`` CLI against this hub's state."""
        return subprocess.run([str(ENCLAVE), *args], env=self.env, input=input, capture_output=True,
                              text=True, timeout=120)

    def start(self) -> None:
        if self.env.get("ENCLAVE_SANDBOX__LAUNCHER") == "true" and (self.launcher is None or self.launcher.poll() is not None):
            self.start_launcher()
        log = open(self.home / "hub.log", "ab")
        self.proc = subprocess.Popen([str(ENCLAVE), "hub"], env=self.env, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited {self.proc.returncode}: {self.log_tail()}")
            try:
                return requests.get(self.url + "/hub/api/", timeout=2, verify=self.verify).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(up, 60, "the hub to answer through the proxy")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def start_launcher(self) -> None:
        socket_path = self.home / "run" / "launcher.sock"
        socket_path.unlink(missing_ok=True)
        with open(self.home / "launcher.log", "ab") as log:
            self.launcher = subprocess.Popen([str(ENCLAVE.parent / "python"), "-I", "-m", "enclave.sandbox.launcher"],
                                             env=self.env, stdout=log, stderr=log, start_new_session=True, cwd="/")

        def listening():
            if self.launcher.poll() is not None:
                raise RuntimeError(f"the launcher exited {self.launcher.returncode}: "
                                   + (self.home / "launcher.log").read_text(errors="replace")[-2000:])
            return socket_path.exists()

        wait_for(listening, 30, "the launcher to listen")

    def stop_launcher(self) -> None:
        """SIGTERM: the launcher stops every supervisor it runs, then ends."""
        if self.launcher and self.launcher.poll() is None:
            self.launcher.send_signal(signal.SIGTERM)
            self.launcher.wait(60)

    def own_settings(self):
        """This hub's settings as its own processes read them: its home's file and its environment
        (a test may put its databases elsewhere, ENCLAVE_AUDIT__DB_URL for one)."""
        from enclave.settings import load_settings

        with mock.patch.dict(os.environ, self.env, clear=True):
            return load_settings()

    def consent(self, workspace: str, release: str, holder: str = "holder") -> None:
        """The data holder's consent to a release an admin asked for (``enclave workspace attach``),
        given as the provisioning service gives it: through the service layer, recorded in the audit
        log as the holder's. (Consenting through the service's API and pages has tests of its own.)"""
        from enclave import workspaces
        from enclave.audit.client import AuditClient

        settings = self.own_settings()
        client = AuditClient(settings)
        try:
            workspaces.consent(settings, workspace, release, holder, lambda action, workspace=None, detail=None:
                               client.append("hub", holder, action, workspace=workspace, detail=detail))
        finally:
            client.close()

    def audit_records(self, **filters) -> list[dict]:
        """Every record of this hub's audit log matching ``filters`` (user, workspace, action…), read
        from its database as ``enclave audit query`` does."""
        from enclave.audit.reader import AuditReader

        reader = AuditReader(self.own_settings())
        records, after = [], None
        try:
            while True:
                page = reader.query(**filters, after=after, limit=1000)
                records += page["records"]
                if page["next"] is None:
                    return records
                after = page["next"]
        finally:
            reader.close()

    def log_tail(self, n: int = 40) -> str:
        path = self.home / "hub.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def stop_all_sandboxes(self) -> None:
        """Tests end with no sandbox left: SIGTERM every supervisor of this home."""
        for pid in supervisor_pids(self.home):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        wait_for(lambda: not supervisor_pids(self.home), 30, "sandboxes to stop")

    def login(self, username: str, password: str) -> "Session":
        s = Session(self)
        s.http.get(self.url + "/hub/login")
        r = s.http.post(self.url + "/hub/login", data={
            "username": username, "password": password,
            "_xsrf": cookie_value(s.http, self.url + "/hub/login", "_xsrf")})
        if not r.url.endswith("/hub/home"):
            refusals = [rec.get("detail") for rec in self.audit_records(user=username, action="auth.login")[-2:]]
            raise AssertionError(f"login as {username} failed: {r.status_code} {r.url}; audit: {refusals}; "
                                 f"hub log:\n{self.log_tail()}")
        s.username = username
        return s


def backend_settings(backend: str) -> dict[str, str]:
    """A test hub's settings for a sandbox backend: bubblewrap, or docker as the container deployment
    runs it (containers of images/build.sh's enclave/sandbox, the supervisors in a launcher)."""
    if backend == "docker":
        return {"ENCLAVE_SANDBOX__BACKEND": "docker", "ENCLAVE_SANDBOX__LAUNCHER": "true"}
    return {"ENCLAVE_SANDBOX__BACKEND": backend}


def supervisor_pids(home: Path) -> list[int]:
    marker = str(home).encode()
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        if b"enclave.sandbox.supervisor" in cmd and marker in cmd:
            pids.append(int(p.name))
    return pids


def processes_of_uid(uid: int) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                status = (p / "status").read_text()
            except OSError:
                continue
            real_uid = int(next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1])
            if real_uid == uid:
                pids.append(int(p.name))
    return pids


class Session:
    """A logged-in browser-like session."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.http = requests.Session()
        # Loopback only, verified against the hub's own certificate (a CA bundle or proxy named in
        # the environment would override a session's settings otherwise).
        self.http.trust_env = False
        self.http.verify = hub.verify
        self.username = ""

    def server_url(self, workspace: str) -> str:
        return f"{self.hub.user_origin(self.username)}/user/{self.username}/{workspace}"

    def hub_api(self, method: str, path: str, **kw) -> requests.Response:
        headers = {"X-XSRFToken": cookie_value(self.http, f"{self.hub.url}/hub/api{path}", "_xsrf") or ""}
        return self.http.request(method, f"{self.hub.url}/hub/api{path}", headers=headers, **kw)

    def start(self, workspace: str, timeout: float = 90) -> requests.Response:
        """Ask for the workspace's server as the home page's start button does; wait until up."""
        r = self.http.get(f"{self.hub.url}/hub/spawn/{self.username}/{workspace}")
        if r.status_code != 200:
            return r

        def up():
            model = self.hub_api("GET", f"/users/{self.username}").json()
            server = model.get("servers", {}).get(workspace)
            if server is None:
                raise AssertionError(f"spawn failed: {self.hub.log_tail()}")
            return server.get("ready")

        wait_for(up, timeout, f"{self.username}/{workspace} to start")
        # The oauth hand-shake with the single-user server, as a browser follows it.
        return self.http.get(self.server_url(workspace) + "/lab")

    def stop(self, workspace: str) -> None:
        r = self.hub_api("DELETE", f"/users/{self.username}/servers/{workspace}")
        assert r.status_code in (202, 204), r.text

        def stopped():
            model = self.hub_api("GET", f"/users/{self.username}").json()
            return workspace not in model.get("servers", {})

        wait_for(stopped, 60, f"{self.username}/{workspace} to stop")

    def server_request(self, workspace: str, method: str, path: str, **kw) -> requests.Response:
        """A request to ``path`` (relative) on the workspace's server, with its XSRF token."""
        url = f"{self.server_url(workspace)}/{path.lstrip('/')}"
        return self.http.request(method, url, headers={"X-XSRFToken": cookie_value(self.http, url, "_xsrf") or ""}, **kw)

    def server_api(self, workspace: str, method: str, path: str, **kw) -> requests.Response:
        return self.server_request(workspace, method, f"api{path}", **kw)

    def terminal(self, workspace: str) -> "Terminal":
        r = self.server_api(workspace, "POST", "/terminals", json={})
        assert r.status_code == 200, r.text
        return Terminal(self, workspace, r.json()["name"])

    def notebook_kernel(self, workspace: str, path: str) -> "Kernel":
        """A kernel for the notebook at ``path`` (a session, as JupyterLab opens one): it runs in
        the notebook's folder."""
        r = self.server_api(workspace, "POST", "/sessions", json={
            "path": path, "name": path.rsplit("/", 1)[-1], "type": "notebook", "kernel": {"name": "enclave-python"}})
        assert r.status_code == 201, r.text
        return Kernel(self, workspace, r.json()["kernel"]["id"])

    def kernel(self, workspace: str) -> "Kernel":
        r = self.server_api(workspace, "POST", "/kernels", json={"name": "enclave-python"})
        assert r.status_code == 201, r.text
        return Kernel(self, workspace, r.json()["id"])


class Kernel:
    """A kernel reached over its websocket through the proxy."""

    def __init__(self, session: Session, workspace: str, kernel_id: str):
        self.session = session
        self.workspace = workspace
        self.id = kernel_id
        self.session_id = uuid.uuid4().hex
        self.ws = None

    def _connect(self):
        """A fresh websocket per execution: the server drops one that idled past its pings."""
        if self.ws is not None:
            self.ws.close()
        url = websocket_url(self.session.server_url(self.workspace)) + f"/api/kernels/{self.id}/channels"
        self.ws = connect_websocket(self.session, url, timeout=120)
        return self.ws

    def request(self, msg_type: str, content: dict, channel: str = "shell", timeout: float = 120) -> list[dict]:
        """Send one request as JupyterLab does; return every message answering it, in order, until
        its reply has come and the kernel is idle again."""
        msg_id = uuid.uuid4().hex
        ws = self._connect()
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": msg_type, "username": self.session.username,
                       "session": self.session_id, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": channel, "buffers": [], "content": content,
        }))
        answers, replied, idle = [], False, False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (replied and idle):
            ws.settimeout(max(deadline - time.monotonic(), 0.1))
            try:
                msg = json.loads(ws.recv())
            except websocket.WebSocketTimeoutException:
                break
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            answers.append(msg)
            replied = replied or msg["msg_type"].endswith("_reply")
            idle = idle or (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle")
        if not (replied and idle):
            raise TimeoutError(f"no complete answer to {msg_type}: {answers!r}")
        return answers

    def run(self, code: str, timeout: float = 120) -> tuple[str, str | None]:
        """Execute ``code``; return (stdout, "EName: value" of an error or None)."""
        answers = self.request("execute_request", {
            "code": code, "silent": False, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True}, timeout=timeout)
        out = [m["content"]["text"] for m in answers if m["msg_type"] == "stream"]
        errors = [m["content"] for m in answers if m["msg_type"] == "error"]
        err = f"{errors[-1]['ename']}: {errors[-1]['evalue']}" if errors else None
        return "".join(out), err

    def value(self, expr_code: str):
        """Run code whose last line prints a JSON value; return it decoded."""
        out, err = self.run(expr_code)
        assert err is None, err
        return json.loads(out.strip().splitlines()[-1])

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


class Terminal:
    """A terminal reached over its websocket through the proxy (terminado's JSON protocol)."""

    def __init__(self, session: Session, workspace: str, name: str):
        self.session = session
        self.workspace = workspace
        self.name = name
        url = websocket_url(session.server_url(workspace)) + f"/terminals/websocket/{name}"
        self.ws = connect_websocket(session, url, timeout=60)
        self.ws.send(json.dumps(["set_size", 40, 200, 800, 1600]))
        self.output = ""
        self.closed = False
        # Like a person, wait for the prompt: input typed ahead of it may be discarded when the
        # shell's line editor sets the terminal up.
        self.read_until("$ ")

    def send(self, text: str) -> None:
        self.ws.send(json.dumps(["stdin", text]))

    def read_until(self, marker: str, timeout: float = 60) -> str:
        """Everything received until ``marker`` appears (after what earlier calls returned)."""
        deadline = time.monotonic() + timeout
        while marker not in self.output:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {marker!r} in terminal output: {self.output[-2000:]!r}")
            self.ws.settimeout(max(deadline - time.monotonic(), 0.1))
            try:
                kind, *rest = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if kind == "stdout":
                self.output += rest[0]
            elif kind == "disconnect":
                self.closed = True
                raise EOFError(f"terminal closed before {marker!r}: {self.output[-2000:]!r}")
        upto = self.output.index(marker) + len(marker)
        seen, self.output = self.output[:upto], self.output[upto:]
        return seen

    def run(self, command: str, timeout: float = 60) -> str:
        """Type ``command`` and return what it printed (between two unique markers)."""
        mark = uuid.uuid4().hex[:10]
        # The shell echoes the command line first; "B-…-B" followed by a line end is only in the
        # output, and every "E-…-E" echoed before it has been read past by then.
        self.send(f"echo B-{mark}-B; {command}; echo E-{mark}-E\r")
        self.read_until(f"B-{mark}-B\r\n", timeout)
        return self.read_until(f"E-{mark}-E", timeout)[: -len(f"E-{mark}-E")]

    def wait_closed(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.ws.settimeout(max(deadline - time.monotonic(), 0.1))
            try:
                kind, *_ = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            except websocket.WebSocketConnectionClosedException:
                self.closed = True
                break
            self.closed = kind == "disconnect"
        if not self.closed:
            raise TimeoutError("the terminal did not close")

    def close(self) -> None:
        self.ws.close()


class AuditHubSide:
    """What the hub side gives a sandbox's server for its records, real, for servers a test starts
    on its own (without a hub): an audit receiver (``enclave.sandbox.receiver``, as the supervisor
    runs it, with an egress ledger of its own) per server, in front of one audit service (started for
    the while, as the CLI starts one)."""

    def __init__(self):
        from enclave.audit.client import AsyncAuditClient, audit_service
        from enclave.settings import Settings

        self._root = Path(tempfile.mkdtemp(prefix="enclave-audit-"))
        self.settings = Settings(home=self._root)
        self._service = contextlib.ExitStack()
        self._service.enter_context(audit_service(self.settings))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client = AsyncAuditClient(self.settings)
        self._receivers: list[asyncio.AbstractServer] = []

    def receiver(self, path: Path, sandbox: str, user: str = "alice", workspace: str = "demo") -> None:
        """A receiver at ``path`` stamping records as ``user``'s in ``workspace``, sandbox ``sandbox``."""
        from enclave.sandbox.egress import EgressLedger
        from enclave.sandbox.receiver import AuditReceiver

        ledger = EgressLedger.open(self._root / "egress", user, f"{workspace}-{sandbox}")
        receiver = AuditReceiver(self._client, user, workspace, sandbox, ledger)
        server = asyncio.run_coroutine_threadsafe(receiver.serve(path, os.getuid(), os.getgid()), self._loop)
        self._receivers.append(server.result(30))

    def records(self, **filters) -> list[dict]:
        from enclave.audit.reader import AuditReader

        reader = AuditReader(self.settings)
        try:
            return reader.query(**filters, limit=1000)["records"]
        finally:
            reader.close()

    def close(self) -> None:
        async def stop():
            for server in self._receivers:
                server.close()
            await self._client.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
        self._service.close()
        shutil.rmtree(self._root, ignore_errors=True)


_audit_hub_side: AuditHubSide | None = None


def audit_hub_side() -> AuditHubSide:
    """One :class:`AuditHubSide` for the test process (until :func:`close_audit_hub_side`)."""
    global _audit_hub_side
    if _audit_hub_side is None:
        _audit_hub_side = AuditHubSide()
    return _audit_hub_side


def close_audit_hub_side() -> None:
    global _audit_hub_side
    if _audit_hub_side is not None:
        _audit_hub_side.close()
        _audit_hub_side = None


# -- a browser (Playwright driving Debian's chromium) -----------------------------------------------

CHROMIUM = "/usr/bin/chromium"
# No sandbox (tests run as root), and none of the background traffic this closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


async def log_in(page, hub: Hub, username: str, password: str) -> None:
    """Log in on the hub's login page, as a person does, in a Playwright page."""
    await page.goto(f"{hub.url}/hub/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("#login_submit")
    await page.wait_for_url("**/hub/home**")


async def download_from_exports_panel(context, entry, name: str, timeout: float) -> bytes:
    """Follow a released request's link in the Exports panel (``entry``, its list item) to the
    review service's page, as the operator does, and download the released file ``name``."""
    from playwright.async_api import expect

    link = entry.locator("a.enclave-export-download")
    await expect(link).to_be_visible(timeout=timeout)
    async with context.expect_page() as opened:
        await link.click()
    page = await opened.value
    page.set_default_timeout(timeout)
    async with page.expect_download() as download:
        await page.locator("button", has_text=f"Download {name}").click()
    with open(await (await download.value).path(), "rb") as f:
        return f.read()


class Browser:
    """One chromium (Playwright's); a context per person; every console error and page error collected."""

    def __init__(self, browser, timeout: float = 120_000):
        self.browser = browser
        self.timeout = timeout
        self.errors: list[str] = []

    async def person(self, hub, name: str, password: str):
        context = await self.browser.new_context(accept_downloads=True)
        context.on("page", self._watch)
        page = await context.new_page()
        page.set_default_timeout(self.timeout)
        await log_in(page, hub, name, password)
        return context, page

    def _watch(self, page) -> None:
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"{page.url}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))


async def request_export(page, names: list[str], justification: str):
    """Select ``names`` in JupyterLab's file browser, right-click, "Request export…", fill in the
    justification; return the dialog (to submit)."""
    from playwright.async_api import expect

    await page.locator(".jp-DirListing-item", has_text=names[0]).first.click()
    for name in names[1:]:
        await page.locator(".jp-DirListing-item", has_text=name).first.click(modifiers=["Control"])
    await page.locator(".jp-DirListing-item", has_text=names[-1]).first.click(button="right")
    await page.locator(".lm-Menu-itemLabel", has_text="Request export…").click()
    dialog = page.locator(".jp-Dialog")
    await expect(dialog.locator(".enclave-check").first).to_be_visible()
    await dialog.locator("textarea.enclave-justification").fill(justification)
    return dialog


async def vote(page, hub, request_id: str, votes: dict[str, tuple[str, str]]) -> None:
    """A reviewer votes on each file named in ``votes``: (decision, reason); each vote confirmed."""
    from playwright.async_api import expect

    await page.goto(f"{hub.service_url('exports')}/requests/{request_id}")
    for name, (decision, reason) in votes.items():
        card = page.locator("section.file", has=page.locator("h3", has_text=name))
        form = card.locator("form.vote")
        await form.locator("select[name=decision]").select_option(decision)
        await form.locator("textarea[name=reason]").fill(reason)
        await form.locator("button[type=submit]").click()
        await expect(page.locator("#flash")).to_be_visible()



HOLDER = "holder"
PURPOSE = "tests: analysis of the released data"


def register_holder(settings, *releases: str, holder: str = HOLDER) -> str:
    """A data holder account (made when missing, unrecorded) holding the sources of ``releases``."""
    from enclave import accounts, sources

    if holder not in {a.name for a in accounts.all_accounts(settings)}:
        accounts.add_user(settings, holder, ["holder"], "", password_hash=accounts.hash_password(uuid.uuid4().hex))
    for release in releases:
        if sources.holder_of(settings, release) is None:
            sources.set_holder(settings, sources.source_of(release), holder)
    return holder


def grant(settings, workspace: str, release: str, by: str = "tests", columns=None, reason: str = "tests") -> None:
    """Give ``workspace`` the release as a workspace gets one: an admin asks for it, and the data
    holder of its source consents (in-process, unrecorded). A holder account, the source's
    registration, the workspace's holder and purpose are made when missing."""
    from enclave import sources, workspaces

    register_holder(settings, release)
    view = workspaces.get(settings, workspace)
    if view.holder is None:
        workspaces.set_holder(settings, workspace, HOLDER)
    if not view.purpose:
        workspaces.set_purpose(settings, workspace, PURPOSE)
    workspaces.attach(settings, workspace, release, by, columns=columns, reason=reason)
    workspaces.consent(settings, workspace, release, sources.holder_of(settings, release))


class EvilServer:
    """What a taken-over server would serve: an attack page, and a sink for what it learns (the page
    POSTs ``{"what", "value"}`` reports; ``done`` is set by the report ``done``)."""

    def __init__(self, page: str):
        self.reports: list[dict] = []
        self.done = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                item = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.reports.append(item)
                if item["what"] == "done":
                    outer.done.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_port}"

    def report(self, what: str) -> str:
        return next(r["value"] for r in self.reports if r["what"] == what)

    def close(self):
        self.http.shutdown()


class ProvisioningService:
    """The provisioning service on the CLI's socket of ``home`` (``--cli-only``: the hub's service
    serves the same socket, beside its HTTP port)."""

    def __init__(self, home: Path, env: dict) -> None:
        from enclave.provisioning.client import socket_path

        self.socket = socket_path(home)
        self.env = env
        self.log = home / "provisioning-service.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ProvisioningService":
        """Start the service and wait until it serves the socket (its own: one bound before it is replaced)."""
        before = self._bound()
        with self.log.open("a") as out:
            self.proc = subprocess.Popen([sys.executable, "-I", "-m", "enclave.provisioning.app", "--cli-only"],
                                         env=self.env, cwd="/", stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        from enclave.provisioning.client import reachable

        while self._bound() in (None, before) or not reachable(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the provisioning service did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        return self

    def _bound(self) -> int | None:
        """The socket file's inode: a service binding the path makes a new one."""
        try:
            return self.socket.stat().st_ino
        except FileNotFoundError:
            return None

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=60)


@contextlib.contextmanager
def beside_a_hub(home):
    """``home`` (an ``audit.conftest.AuditHome``) with its audit and provisioning services running, as
    they run beside a hub; both stopped, and the home cleaned up, after."""
    home.start()
    service = ProvisioningService(home.home, home.env())
    try:
        service.start()
        yield home
    finally:
        if service.proc is not None:
            assert service.stop() == 0
        home.cleanup()
