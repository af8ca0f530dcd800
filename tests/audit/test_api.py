"""The query API behind a real JupyterHub, which runs the audit service as a managed service.

The hub's roles here are the additions ``enclave.rbac`` needs: the custom scope
``custom:audit:read``, held (with ``access:services!service=audit``) by administrators only.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from enclave.audit.checkpoints import key_id
from enclave.audit.hub import AUDIT_SERVICE

from enclave_testing import free_port

from .conftest import AuditHome, execution

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
from enclave import rbac
from enclave.audit.hub import audit_service
from enclave.settings import load_settings

settings = load_settings()
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {hub_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_api_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.JupyterHub.db_url = "sqlite:///{home}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret = bytes.fromhex({cookie_secret!r})
c.JupyterHub.pid_file = "{home}/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {{"ada", "olaf"}}
c.JupyterHub.custom_scopes = {{**rbac.CUSTOM_SCOPES,
                              "custom:audit:read": {{"description": "Read the audit log."}}}}
c.JupyterHub.load_roles = [
    {{"name": "audit-reader", "users": ["ada"],
     "scopes": ["custom:audit:read", "access:services!service=audit"]}},
    {{"name": "harness", "scopes": ["tokens", "read:users"], "services": ["harness"]}},
]
c.JupyterHub.services = [audit_service(settings), {{"name": "harness", "api_token": {harness_token!r}}}]
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    home = AuditHome(tmp_path_factory.mktemp("audit-api") / "home")
    hub_port, harness_token = free_port(), secrets.token_hex(32)
    config = home.home / "jupyterhub_config.py"
    config.write_text(CONFIG.format(
        hub_port=hub_port, hub_api_port=free_port(), proxy_api_port=free_port(),
        proxy=str(REPO / "node_modules" / ".bin" / "configurable-http-proxy"), proxy_token=secrets.token_hex(32),
        cookie_secret=secrets.token_hex(32), home=home.home, harness_token=harness_token))
    log = home.home / "jupyterhub.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "jupyterhub"), "-f", str(config)], cwd=home.home,
                                env=home.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{hub_port}"
    harness = requests.Session()
    harness.headers["Authorization"] = f"token {harness_token}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"jupyterhub exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the audit service did not come up:\n{log.read_text()[-3000:]}"
            try:
                if requests.get(f"{base}/services/audit/api/openapi.json", timeout=2).status_code == 403 \
                        and home.socket.exists():
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.3)

        def token(user: str, scopes: list[str]) -> str:
            r = harness.post(f"{base}/hub/api/users/{user}/tokens", json={"scopes": scopes}, timeout=30)
            assert r.status_code == 201, r.text
            return r.json()["token"]

        yield home, base, token, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _kill_left_over_services(home.home)
        home.cleanup()


def _kill_left_over_services(home: Path) -> None:
    """A hub that had to be killed leaves its managed services running: end this home's audit service."""
    mark = f"ENCLAVE_HOME={home}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark in environ.read_bytes().split(b"\0") and b"enclave.audit.service" in (
                    environ.parent / "cmdline").read_bytes():
                os.kill(int(environ.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def get(base: str, path: str, token: str, **params) -> requests.Response:
    return requests.get(f"{base}/services/audit/api/{path}", params=params, timeout=30,
                        headers={"Authorization": f"token {token}"})


def test_administrators_query_the_log_through_the_proxy(hub):
    home, base, token, _ = hub
    client = home.client()
    for i in range(5):
        client.append(**execution(i, user=("ada", "olaf")[i % 2]))
    client.append("cli", "ada", "workspace.create", workspace="人口普查")
    reader_token = token("ada", ["custom:audit:read", f"access:services!service={AUDIT_SERVICE}"])

    r = get(base, "records", reader_token, user="olaf")
    assert r.status_code == 200, r.text
    assert [rec["seq"] for rec in r.json()["records"]] == [2, 4] and r.json()["next"] is None
    r = get(base, "records", reader_token, workspace="人口普查")
    assert [rec["actor"] for rec in r.json()["records"]] == ["ada"]
    r = get(base, "records", reader_token, limit=2, order="desc")
    assert [rec["seq"] for rec in r.json()["records"]] == [6, 5] and r.json()["next"] == 5
    r = get(base, "records", reader_token, after=5, order="desc", action="kernel.*")
    assert [rec["seq"] for rec in r.json()["records"]] == [4, 3, 2, 1]

    bad = get(base, "records", reader_token, action="export.sign")
    assert bad.status_code == 400 and bad.json()["error"] == "no action matches 'export.sign' (see docs/audit.md)"
    assert get(base, "records", reader_token, since="soon").status_code == 400

    latest = get(base, "checkpoints/latest", reader_token).json()
    assert latest["key_id"] == key_id(home.public_key())
    spec = get(base, "openapi.json", reader_token).json()
    assert spec["servers"] == [{"url": "/services/audit/api"}] and "/records" in spec["paths"]


def test_the_query_api_refuses_anyone_without_the_scope(hub):
    home, base, token, _ = hub
    assert get(base, "records", token("olaf", [])).status_code == 403
    no_scope = token("ada", [f"access:services!service={AUDIT_SERVICE}"])
    r = get(base, "records", no_scope)
    assert r.status_code == 403 and "custom:audit:read" in r.json()["error"]
    assert requests.get(f"{base}/services/audit/api/records", timeout=30).status_code == 403


def test_the_hub_stopping_stops_the_service_which_seals_the_log(hub):
    home, _, _, proc = hub
    seq = home.client().append("hub", "ada", "auth.logout")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while home.socket.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not home.socket.exists(), "the audit service stopped with the hub"
    assert home.reader().checkpoints()[-1].tree_size == seq
    assert home.verify().ok
