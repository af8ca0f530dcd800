"""A real Enclave hub for the trace, report and admin page tests.

Enclave's own JupyterHub configuration (``enclave.hub.configure``: the audit and export review
services, the login page, roles, origins of their own), plus a harness service that mints API tokens
so that a test can act as a sandbox's server does on the review service (as ``tests/exports``
does), without starting sandboxes. Records come from their real sources wherever those run here: the
hub (logins), the ``enclave`` CLI (workspaces, memberships, attachments) and the review service
(``export.*``). What only a sandbox would report (``sandbox.start``, ``kernel.execute``,
``terminal.input``, ``egress.notice``) is handed to the audit service by :class:`SandboxRecords`,
in the shapes of ``docs/audit.md``, as the spawner and the per-sandbox receiver hand them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import requests
from playwright.async_api import async_playwright
from enclave_testing import CHROMIUM, CHROMIUM_ARGS, HOLDER, PURPOSE, Hub, free_port, log_in, register_holder, wait_for

from enclave import accounts, rbac
from enclave.audit import socket_path
from enclave.audit.client import AuditClient
from enclave.settings import Settings

PASSWORD = "audit-pages-test-password"
ACCOUNTS = {"olga": "operator", "rita": "reviewer", "rob": "reviewer", "adam": "admin"}
# Releases in the store, each with its tables.
RELEASES = {
    "people@1": {"persons": pd.DataFrame({"district": ["Heping", "Nankai"] * 30, "age": list(range(20, 80)),
                                          "income": [3000 + 10 * i for i in range(60)]})},
    "census@2": {"households": pd.DataFrame({"district": ["Heping", "Nankai", "Hexi"] * 20,
                                             "size": [1, 2, 3, 4] * 15, "rent": list(range(60))})},
    "tax@3": {"returns": pd.DataFrame({"district": ["Heping", "Hexi"] * 10, "paid": list(range(20))})},
}
SAFE_TABLE = b"region,count\nnorth,120\nsouth,35\neast,45\n"
SMALL_CELLS = b"region,count\nnorth,120\nsouth,3\n"

CONFIG = """
from enclave.hub import configure
from enclave.settings import load_settings

configure(c, load_settings())
c.JupyterHub.services.append({{"name": "harness", "api_token": {token!r}}})
c.JupyterHub.load_roles.append({{"name": "harness", "scopes": ["tokens", "read:users"], "services": ["harness"]}})
"""
LAUNCH = "import sys; from enclave.hub import EnclaveHub; EnclaveHub.launch_instance(['-f', sys.argv[1]])"


def publish(settings: Settings, release: str, tables: dict[str, pd.DataFrame]) -> None:
    """A release in the store, as the data holder's side leaves it: Parquet and CSV per table."""
    data = settings.release_store / release / "data"
    data.mkdir(parents=True)
    for name, frame in tables.items():
        frame.to_parquet(data / f"{name}.parquet", index=False)
        frame.to_csv(data / f"{name}.csv", index=False)
    content = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(data.iterdir()))).hexdigest()
    (data.parent / "manifest.json").write_text(json.dumps({"content_hash": content}))


class ServicesHub(Hub):
    """Enclave's hub with a token-minting harness; see the module's docstring."""

    harness_token: str = ""

    @property
    def settings(self) -> Settings:
        return Settings(home=self.home)

    def start(self) -> None:
        self.harness_token = secrets.token_hex(32)
        config = self.home / "jupyterhub_config.py"
        config.write_text(CONFIG.format(token=self.harness_token))
        log = open(self.home / "hub.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(config)], cwd=self.home, env=self.env,
                                     stdout=log, stderr=log, start_new_session=True)
        log.close()

        def services_up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited {self.proc.returncode}: {self.log_tail()}")
            try:
                audit = requests.get(self.service_url("audit") + "/api/openapi.json", timeout=2)
                exports = requests.get(self.service_url("exports") + "/api/openapi.json", timeout=2)
            except requests.ConnectionError:
                return False
            return audit.status_code == 403 and exports.status_code == 200 and socket_path(self.settings).exists()

        wait_for(services_up, 90, "the hub with its audit and review services")

    def token(self, user: str, scopes: list[str]) -> str:
        r = requests.post(f"{self.url}/hub/api/users/{user}/tokens", json={"scopes": scopes}, timeout=30,
                          headers={"Authorization": f"token {self.harness_token}"})
        assert r.status_code == 201, r.text
        return r.json()["token"]

    def exports_api(self, token: str) -> "ExportsAPI":
        return ExportsAPI(self.service_url("exports") + "/api", token)

    def as_server(self, user: str, workspace: str) -> "ExportsAPI":
        """The review service as ``user``'s sandbox server for ``workspace`` reaches it (its token's scopes)."""
        return self.exports_api(self.token(user, [f"access:servers!server={user}/{workspace}",
                                                  f"access:services!service={rbac.EXPORTS_SERVICE}",
                                                  "custom:exports:request!user"]))

    def as_user(self, user: str) -> "ExportsAPI":
        """The review service as ``user`` acts on it from the browser (the scopes of their roles)."""
        scopes = {"operator": ["custom:exports:request!user"], "reviewer": ["custom:exports:review"],
                  "admin": ["custom:exports:admin"]}[ACCOUNTS[user]]
        return self.exports_api(self.token(user, [f"access:services!service={rbac.EXPORTS_SERVICE}", *scopes]))

    def cli(self, *args: str) -> str:
        r = self.enclave(*args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout


class ExportsAPI:
    """The review service's JSON API through the proxy, with one token."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {token}"

    def post(self, path: str, body: dict | None = None, expect: int = 200) -> dict:
        r = self.http.post(self.base + path, json=body, timeout=60)
        assert r.status_code == expect, (path, r.status_code, r.text)
        return r.json()

    def submit(self, files: dict[str, bytes], provenance: dict[str, dict], title: str) -> dict:
        manifest = {"files": {n: {"sha256": hashlib.sha256(d).hexdigest(), "provenance": provenance.get(n, {})}
                              for n, d in files.items()}}
        r = self.http.post(self.base + "/requests", timeout=120, files=[("file", (n, d)) for n, d in files.items()],
                           data={"title": title, "context": "Aggregates for the pilot's assessment.",
                                 "manifest": json.dumps(manifest)})
        assert r.status_code == 201, r.text
        return r.json()

    def vote(self, request: dict, decision: str, reason: str) -> None:
        for f in request["files"]:
            self.post(f"/requests/{request['id']}/votes", {"file_id": f["id"], "decision": decision, "reason": reason},
                      expect=201)

    def download(self, request: dict, name: str) -> bytes:
        f = next(f for f in request["files"] if f["name"] == name)
        link = self.post(f"/requests/{request['id']}/files/{f['id']}/links", expect=201)
        r = self.http.get(self.base.rsplit("/services/", 1)[0] + link["url"], timeout=30)
        assert r.status_code == 200, r.text
        return r.content


class SandboxRecords:
    """What a sandbox's spawner and receiver hand to the audit service, for sandboxes these tests do
    not start: the same actions, sources and detail keys (docs/audit.md)."""

    def __init__(self, hub: ServicesHub) -> None:
        self.hub = hub
        self.client = AuditClient(hub.settings)

    def start(self, user: str, workspace: str, releases: list[str]) -> tuple[str, int]:
        """A ``sandbox.start`` whose policy has ``releases`` under /data as the spawner records them
        (a column view where the workspace has one); returns the sandbox's name and the record's seq."""
        s = self.hub.settings
        sandbox = f"{user}/{workspace}/{secrets.token_hex(6)}"
        data = []
        for release in releases:
            view = s.home / "views" / workspace / release
            source = view if view.is_dir() else s.release_store / release / "data"
            data.append({"target": f"/data/{release}", "kind": "ro", "source": str(source)})
        policy = {"name": f"{user}-{workspace}", "identity": {"uid": 301001, "gid": 301001, "username": user,
                                                            "home": f"/home/{user}"},
                  "limits": {"memory_mb": 2048, "pids": 256, "cpus": "1.0", "max_file_mb": 512},
                  "network": "none", "workdir": "/",
                  "mounts": [{"target": f"/home/{user}", "kind": "rw",
                              "source": str(s.home / "homes" / user / workspace)}],
                  "data": data}
        seq = self.client.append("hub", user, "sandbox.start", workspace=workspace, sandbox=sandbox,
                                 detail={"policy": policy, "server": workspace})
        return sandbox, seq

    def stop(self, user: str, workspace: str, sandbox: str) -> int:
        return self.client.append("hub", user, "sandbox.stop", workspace=workspace, sandbox=sandbox,
                                  detail={"server": workspace, "reason": f"asked by user {user}"})

    def execute(self, sandbox: str, code: str, notebook: str = "analysis.ipynb",
                msg_id: str | None = None) -> tuple[int, str]:
        """A ``kernel.execute``; returns its seq and message id."""
        user, workspace, _ = sandbox.split("/")
        msg_id = msg_id or uuid.uuid4().hex
        seq = self.client.append("sandbox", user, "kernel.execute", workspace=workspace, sandbox=sandbox, detail={
            "kernel": "5f0c1a2e-kernel", "code": code, "code_sha256": hashlib.sha256(code.encode()).hexdigest(),
            "notebook": notebook, "msg_id": msg_id})
        return seq, msg_id

    def terminal(self, sandbox: str, text: str) -> int:
        user, workspace, _ = sandbox.split("/")
        return self.client.append("sandbox", user, "terminal.input", workspace=workspace, sandbox=sandbox,
                                  detail={"terminal": "1", "text": text})

    def egress(self, sandbox: str, channel: str, reason: str) -> int:
        user, workspace, _ = sandbox.split("/")
        return self.client.append("sandbox", user, "egress.notice", workspace=workspace, sandbox=sandbox,
                                  detail={"channel": channel, "used": 70_000, "budget": 65_536, "reason": reason})

    def close(self) -> None:
        self.client.close()


@contextlib.contextmanager
def running_hub(home: Path):
    """A :class:`ServicesHub` on ``home`` with the accounts and releases above, stopped at the end."""
    hub = ServicesHub(home=home, env_overrides={"ENCLAVE_AUDIT__PORT": str(free_port()),
                                                "ENCLAVE_SANDBOX__IDLE_TIMEOUT": "0"})
    settings = hub.settings
    settings.hub_dir.mkdir(parents=True, exist_ok=True)
    for name, role in ACCOUNTS.items():
        accounts.add_user(settings, name, [role], PASSWORD)
    for release, tables in RELEASES.items():
        publish(settings, release, tables)
    register_holder(settings, *RELEASES)  # workspaces get releases with its consent (hub.consent)
    try:
        hub.start()
        for name in ACCOUNTS:
            hub.login(name, PASSWORD)  # JupyterHub gives each account its role groups at login
        yield hub
    finally:
        hub.stop()


# -- in chromium --

BROWSER_TIMEOUT = 60_000
# Families of the font stack in templates/base.html that hold Chinese glyphs.
CJK_FONTS = ("PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK SC", "Source Han Sans SC",
             "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback")


@pytest.fixture
async def browser():
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def logged_in(browser, hub: ServicesHub, user: str):
    """A browser context and page of ``user``, logged in through the hub's login page."""
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(BROWSER_TIMEOUT)
    await log_in(page, hub, user, PASSWORD)
    return context, page


async def fonts_drawing(page, selector: str) -> dict[str, int]:
    """The fonts chromium drew the text of ``selector``'s first element with: family -> glyphs."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("DOM.enable")
    await cdp.send("CSS.enable")
    root = await cdp.send("DOM.getDocument", {"depth": -1})
    node = await cdp.send("DOM.querySelector", {"nodeId": root["root"]["nodeId"], "selector": selector})
    assert node["nodeId"], f"no element matches {selector}"
    fonts = await cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})
    await cdp.detach()
    return {f["familyName"]: f["glyphCount"] for f in fonts["fonts"]}


def cjk_characters(text: str) -> int:
    return sum("\u3000" <= c <= "\u9fff" or "\uff00" <= c <= "\uffef" for c in text)
