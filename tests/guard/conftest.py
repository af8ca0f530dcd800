"""Fixtures: a real Jupyter server from the operator's environment, and a kernel websocket client.

The server is ``.venv-sandbox/bin/jupyter-server`` with the guard's installed system config, on a
loopback port with a token; only the kernel is a plain local ipykernel (the sandboxed kernel
provisioner is exercised by the hub tests). The client speaks both kernel websocket protocols
byte for byte, as a browser or a script would; nothing of jupyter_server is imported here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from playwright.async_api import async_playwright
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from enclave_testing import CHROMIUM, CHROMIUM_ARGS, audit_hub_side, backend_settings, close_audit_hub_side, cookie_value, free_port

REPO = Path(__file__).resolve().parents[2]
SANDBOX_ENV = REPO / ".venv-sandbox"
V1 = "v1.kernel.websocket.jupyter.org"


@dataclass
class Server:
    url: str
    token: str
    home: Path
    run: Path
    outside: Path
    process: subprocess.Popen
    log: Path

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}/{path.lstrip('/')}", headers=headers, timeout=60, **kwargs)

    def audit_records(self, **filters) -> list[dict]:
        """This server's records in the hub-side audit log (its sandbox, ``SANDBOX``)."""
        return [r for r in audit_hub_side().records(**filters) if r["sandbox"] == self.sandbox]

    sandbox: str = ""

    def start_kernel(self, notebook: str = "work.ipynb") -> str:
        r = self.request("POST", "api/sessions", json={"path": notebook, "type": "notebook", "name": notebook,
                                                       "kernel": {"name": "python3"}})
        r.raise_for_status()
        return r.json()["kernel"]["id"]


@pytest.fixture(scope="session", autouse=True)
def hub_side():
    """The audit log's hub side for every server these tests start, closed at the end."""
    yield audit_hub_side()
    close_audit_hub_side()


def start_server(root: Path, guard: dict, extra_args: list[str] = ()) -> Server:
    home, run, outside = root / "home", root / "run", root / "outside"
    for d in (home, run, outside):
        d.mkdir(parents=True, exist_ok=True)
    sandbox = f"alice/demo/{uuid.uuid4().hex[:12]}"
    audit_hub_side().receiver(run / "receiver.sock", sandbox)
    (run / "workspace.json").write_text(json.dumps({
        "user": "alice", "workspace": "demo", "releases": ["census-2021"], "limits": {}, "guard": guard,
    }))
    token = uuid.uuid4().hex
    port = free_port()
    log = root / "server.log"
    env = {
        "PATH": f"{SANDBOX_ENV}/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "JUPYTER_RUNTIME_DIR": str(run / "runtime"),
        "IPYTHONDIR": str(run / "ipython"),
        "MPLCONFIGDIR": str(run / "mpl"),
        # What the sandbox hands a kernel from the workspace's guard.acro settings.
        "ENCLAVE_ACRO_THRESHOLDS": json.dumps({"safe_threshold": 7}),
        # Where the hub says the review service's pages are.
        "ENCLAVE_EXPORTS_URL": "http://exports--service.localhost:8000/services/exports/",
    }
    argv = [
        str(SANDBOX_ENV / "bin" / "jupyter-server"), "--allow-root", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={home}", f"--IdentityProvider.token={token}",
        f"--EnclaveGuard.workspace_file={run / 'workspace.json'}",
        f"--EnclaveGuard.audit_socket={run / 'receiver.sock'}",
        f"--EnclaveGuard.exports_socket={run / 'intake.sock'}",
        f"--LabApp.user_settings_dir={run / 'lab' / 'user-settings'}",
        f"--LabApp.workspaces_dir={run / 'lab' / 'workspaces'}",
        # A plain server: without the hub's launcher extension, and with a local kernel (these
        # tests attack the server; the sandboxed kernel is the hub tests' business).
        "--ServerApp.jpserver_extensions", "enclave_singleuser=False",
        "--KernelSpecManager.allowed_kernelspecs=python3",
        "--KernelSpecManager.ensure_native_kernel=True",
        "--KernelProvisionerFactory.default_provisioner_name=local-provisioner",
        "--MappingKernelManager.default_kernel_name=python3",
        *extra_args,
    ]
    proc = subprocess.Popen(argv, env=env, cwd=home, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", token, home, run, outside, proc, log)
    server.sandbox = sandbox
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter-server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if server.request("GET", "api/status").status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"jupyter-server did not answer within 60 s:\n{log.read_text()[-3000:]}")


def stop_server(server: Server):
    server.process.terminate()
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


# -- kernel websocket ---------------------------------------------------------------------------


def _v1_pack(channel: str, parts: list[bytes]) -> bytes:
    chan = channel.encode()
    offsets = [8 * (1 + 1 + len(parts) + 1)]
    offsets.append(offsets[-1] + len(chan))
    for p in parts:
        offsets.append(offsets[-1] + len(p))
    return b"".join([len(offsets).to_bytes(8, "little"), *(o.to_bytes(8, "little") for o in offsets), chan, *parts])


def _v1_unpack(data: bytes) -> tuple[str, list[bytes]]:
    n = int.from_bytes(data[:8], "little")
    offsets = [int.from_bytes(data[8 * (i + 1): 8 * (i + 2)], "little") for i in range(n)]
    offsets.append(len(data))
    channel = data[offsets[0]: offsets[1]].decode()
    return channel, [data[offsets[i]: offsets[i + 1]] for i in range(1, n)]


class KernelSocket:
    """One websocket to a kernel; every frame received is kept, raw, for byte assertions."""

    def __init__(self, conn, protocol: str):
        self.conn = conn
        self.protocol = protocol
        self.session = uuid.uuid4().hex
        self.raw_frames: list[bytes] = []

    @classmethod
    async def open(cls, server: Server, kernel_id: str, protocol: str = "json") -> "KernelSocket":
        url = server.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"
        req = HTTPRequest(url, headers={"Authorization": f"token {server.token}"})
        conn = await websocket_connect(
            req, subprotocols=[V1] if protocol == "v1" else None, max_message_size=256 * 1024 * 1024
        )
        return cls(conn, protocol)

    def close(self):
        self.conn.close()

    async def send(self, msg_type: str, content: dict, channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": msg_type, "session": self.session, "username": "alice",
                  "date": "2026-01-01T00:00:00Z", "version": "5.4"}
        if self.protocol == "v1":
            parts = [json.dumps(x).encode() for x in (header, {}, {}, content)]
            await self.conn.write_message(_v1_pack(channel, parts), binary=True)
        else:
            await self.conn.write_message(json.dumps({
                "header": header, "parent_header": {}, "metadata": {}, "content": content,
                "channel": channel, "buffers": [],
            }))
        return msg_id

    async def receive(self, timeout: float = 60) -> dict | None:
        frame = await asyncio.wait_for(self.conn.read_message(), timeout)
        if frame is None:
            return None
        raw = frame if isinstance(frame, bytes) else frame.encode()
        self.raw_frames.append(raw)
        if self.protocol == "v1":
            channel, parts = _v1_unpack(raw)
            header, parent, metadata, content = (json.loads(p) for p in parts[:4])
            return {"channel": channel, "header": header, "parent_header": parent,
                    "metadata": metadata, "content": content, "msg_type": header["msg_type"]}
        return json.loads(frame)

    async def execute(self, code: str, timeout: float = 120, **extra) -> list[dict]:
        """Run code; return every message that answers it, up to the reply and idle status."""
        msg_id = await self.send("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True, **extra,
        })
        got, replied, idle = [], False, False
        deadline = asyncio.get_running_loop().time() + timeout
        while not (replied and idle):
            left = deadline - asyncio.get_running_loop().time()
            msg = await self.receive(max(left, 0.1))
            if msg is None:
                raise ConnectionError("kernel websocket closed")
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            got.append(msg)
            if msg["msg_type"] == "execute_reply":
                replied = True
            if msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
                idle = True
        return got

    def bytes_received(self) -> int:
        return sum(len(f) for f in self.raw_frames)


async def open_kernel(server: Server, protocol: str = "json") -> KernelSocket:
    ks = await KernelSocket.open(server, server.start_kernel(f"nb-{uuid.uuid4().hex[:8]}.ipynb"), protocol)
    # Wait until the kernel answers.
    await ks.execute("1")
    return ks


# Budgets small enough to cross quickly, large enough for ordinary work.
GUARD = {
    "output_message_max_kb": 64,
    "output_cell_max_kb": 256,
    "upload_max_mb": 0.5,
    "read_max_mb": 1.0,
    "export_max_mb": 1.0,
}


@pytest.fixture(scope="session")
def guard_server(tmp_path_factory):
    if not (SANDBOX_ENV / "bin" / "jupyter-server").exists():
        pytest.fail(f"{SANDBOX_ENV} is not set up: run `make sandbox-env`")
    server = start_server(tmp_path_factory.mktemp("guard"), GUARD)
    yield server
    stop_server(server)


@pytest.fixture
async def kernel(guard_server):
    """A fresh kernel with a JSON-protocol websocket (the protocol JupyterLab falls back to)."""
    ks = await open_kernel(guard_server, "json")
    yield ks
    ks.close()


@pytest.fixture
async def kernel_v1(guard_server):
    """A fresh kernel over the v1 binary websocket protocol (JupyterLab's default)."""
    ks = await open_kernel(guard_server, "v1")
    yield ks
    ks.close()


@pytest.fixture(params=["json", "v1"])
async def any_kernel(guard_server, request):
    """A fresh kernel over each websocket protocol in turn."""
    ks = await open_kernel(guard_server, request.param)
    yield ks
    ks.close()


# -- a hub for the export review path ------------------------------------------------------------

PASSWORD = "correct-horse-battery-staple"  # tests/conftest.py's accounts


def _service_registered(hub) -> bool:
    # Unregistered, the path falls through to the hub, which answers 404.
    return requests.get(f"{hub.service_url('exports')}/", timeout=10, allow_redirects=False).status_code != 404


@pytest.fixture(scope="session")
def review_hub(hub_factory, sandbox_backend):
    """A hub whose workspace policy needs one approval (alpha has one reviewer, carol; bob is an
    operator who never requests an export), per sandbox backend (docker: through a launcher)."""
    hub = hub_factory(f"review-{sandbox_backend}", ENCLAVE_SANDBOX__IDLE_TIMEOUT="0",
                      ENCLAVE_EXPORTS__APPROVALS_REQUIRED="1", **backend_settings(sandbox_backend))
    for name, role in (("alice", "operator"), ("bob", "operator"), ("carol", "reviewer")):
        r = hub.enclave("user", "add", name, "--role", role, "--password-stdin", input=PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
    for args in (("workspace", "create", "alpha"),
                 ("workspace", "add-member", "alpha", "alice", "--role", "operator"),
                 ("workspace", "add-member", "alpha", "bob", "--role", "operator"),
                 ("workspace", "add-member", "alpha", "carol", "--role", "reviewer")):
        r = hub.enclave(*args)
        assert r.returncode == 0, (args, r.stderr)
    hub.start()
    assert _service_registered(hub), "the export review service is not registered in the hub"
    return hub


# -- steps of export review taken through the review service's API, as its pages take them -------


def _service_call(session, method: str, path: str, **kw):
    """The review service's API with the session's cookie, as its pages call it."""
    service = session.hub.service_url("exports")
    url = f"{service}/api/{path}"
    return session.http.request(method, url, headers={"X-XSRFToken": cookie_value(session.http, url, "_xsrf") or ""}, **kw)


def _decide(carol, request_id: str, decision: str, reason: str) -> dict:
    """carol votes on every current file; then, if the votes leave the request in review, she takes
    the request-level step they call for."""
    req = _service_call(carol, "GET", f"requests/{request_id}").json()
    for f in req["files"]:
        r = _service_call(carol, "POST", f"requests/{request_id}/votes",
                         json={"file_id": f["id"], "decision": decision, "reason": reason})
        assert r.status_code == 201, r.text
    req = _service_call(carol, "GET", f"requests/{request_id}").json()
    step = {"approve": "approved", "request_changes": "returned"}[decision]
    if req["state"] == "in_review":
        r = _service_call(carol, "POST", f"requests/{request_id}/transitions", json={"to": step, "reason": reason})
        assert r.status_code == 200, r.text
    return _service_call(carol, "GET", f"requests/{request_id}").json()


@pytest.fixture
def service_call():
    """``service_call(session, method, path, **kw)``: the review service's API with a session's cookie."""
    return _service_call


@pytest.fixture
def decide():
    """``decide(reviewer, request_id, decision, reason)``: a reviewer's vote on every file, and the step it calls for."""
    return _decide


@pytest.fixture
async def browser():
    """Debian's chromium, for the tests that drive JupyterLab in a browser."""
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()
