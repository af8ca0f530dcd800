"""Client of the export review service's intake, over its unix socket.

The server (never the kernel) talks to the intake, authenticated with the server's own token
(``$JUPYTERHUB_API_TOKEN``, scoped to ``custom:exports:request!user``). The routes used are:

* ``POST /intake/checks``   the automated checks for files, before submitting;
* ``POST /intake/requests`` submit an export request (files with their bytes and provenance);
* ``GET  /intake/requests?workspace=<name>`` the owner's requests in this workspace.

Bodies are JSON; file bytes travel base64-encoded with their SHA-256, which the service verifies.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
from urllib.parse import urlencode

CHECKS = "/intake/checks"
REQUESTS = "/intake/requests"
TIMEOUT = 60


class IntakeError(Exception):
    """The review service refused a call or could not be reached; the message says which."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=TIMEOUT)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(self._path)
        self.sock = sock


class Intake:
    def __init__(self, socket_path: str, token: str | None = None):
        self.socket_path = socket_path
        self.token = token if token is not None else os.environ.get("JUPYTERHUB_API_TOKEN", "")

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        conn = _UnixConnection(self.socket_path)
        headers = {"Authorization": f"token {self.token}", "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:
            raise IntakeError(503, f"the export review service cannot be reached: {exc}") from None
        finally:
            conn.close()
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = {"message": data.decode(errors="replace")[:500]}
        if resp.status >= 400:
            raise IntakeError(resp.status, doc.get("message") or doc.get("detail") or f"HTTP {resp.status}")
        return doc

    async def call(self, method: str, path: str, body: dict | None = None) -> dict:
        return await asyncio.to_thread(self._call, method, path, body)

    async def checks(self, body: dict) -> dict:
        return await self.call("POST", CHECKS, body)

    async def submit(self, body: dict) -> dict:
        return await self.call("POST", REQUESTS, body)

    async def requests(self, workspace: str) -> dict:
        return await self.call("GET", f"{REQUESTS}?{urlencode({'workspace': workspace})}")
