"""Client of the export review service's intake, over its unix socket.

The server (never the kernel) talks to the intake, authenticated with the server's own token
(``$JUPYTERHUB_API_TOKEN``: it names the owner and, through its ``access:servers!server=`` scope,
the workspace). The intake's API (``enclave/exports/app.py``, OpenAPI at ``/api/openapi.json``):

* ``POST /api/checks``   the automated checks for files, before submitting (nothing is stored);
* ``POST /api/requests`` submit: ``title``, ``context``, ``manifest`` and ``file`` parts;
* ``GET  /api/requests?mine=1&workspace=<name>`` and ``GET /api/requests/<id>``: the owner's requests;
* ``POST /api/requests/<id>/files``: new versions of files of a returned request (same form as submit);
* ``POST /api/requests/<id>/transitions``: the requester's steps, ``resubmit`` (to ``submitted``) and
  ``withdraw`` (to ``withdrawn``), as JSON ``{"to": ..., "reason": ...}``;
* sealed runs (a notebook run on the real data in the data holder's domain, :mod:`.sealed_runs`):
  ``GET /api/sealed-runs/releases`` (the releases a run may use), ``POST /api/sealed-runs`` (submit:
  a ``request`` part holding the run as JSON, and ``file`` parts), ``GET /api/sealed-runs`` (the
  caller's runs, newest first) and ``POST /api/sealed-runs/<id>/withdraw``.

Files travel as multipart parts, their names percent-encoded; the manifest declares each one's
SHA-256 (the service refuses bytes that do not match) and its provenance.

Every call asks in the operator's language (``Accept-Language``, :mod:`.messages`), in which the
service gives the checks' findings their ``message``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from urllib3.filepost import encode_multipart_formdata

from . import messages
from .messages import N_, Message

CHECKS = "/api/checks"
REQUESTS = "/api/requests"
SEALED_RUNS = "/api/sealed-runs"
TIMEOUT = 60


@dataclass(frozen=True)
class ServiceRefusals:
    """How a failed call is worded for what the operator was doing: ``(code, English text)`` for a
    service that cannot be reached (the text takes ``error``) and for its refusal (``error``: the
    service's own message, in the operator's language; its code travels as ``service_code``)."""

    unreachable: tuple[str, str]
    refused: tuple[str, str]


EXPORT_REFUSALS = ServiceRefusals(
    unreachable=("guard.export.review_unreachable", N_("the export review service cannot be reached: %(error)s")),
    refused=("guard.export.review_refused", N_("export review: %(error)s")),
)
SEALED_RUN_REFUSALS = ServiceRefusals(
    unreachable=("guard.sealed_run.service_unreachable",
                 N_("sealed runs: the export review service cannot be reached: %(error)s")),
    refused=("guard.sealed_run.service_refused", N_("sealed run: %(error)s")),
)


class IntakeError(Exception):
    """The review service refused a call or could not be reached; ``message`` says which."""

    def __init__(self, status: int, message: Message):
        super().__init__(str(message))
        self.status = status
        self.message = message


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

    def _call(self, method: str, path: str, fields: list | None = None, json_body: dict | None = None,
              refusals: ServiceRefusals = EXPORT_REFUSALS) -> dict:
        conn = _UnixConnection(self.socket_path)
        headers = {"Authorization": f"token {self.token}", "Accept": "application/json",
                   "Accept-Language": messages.current_locale().replace("_", "-")}
        payload = None
        if fields is not None:
            payload, headers["Content-Type"] = encode_multipart_formdata(fields)
        elif json_body is not None:
            payload, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:
            raise IntakeError(503, Message(*refusals.unreachable, {"error": str(exc)})) from None
        finally:
            conn.close()
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = {"message": data.decode(errors="replace")[:500]}
        if resp.status >= 400:
            # The service words its refusal in the language asked for (Accept-Language) as
            # ``message``, next to its own stable code, which travels in the params.
            raise IntakeError(resp.status, Message(*refusals.refused,
                                                   {"error": doc.get("message") or doc.get("error") or resp.reason,
                                                    "service_code": doc.get("code")}))
        return doc

    async def call(self, method: str, path: str, fields: list | None = None, json_body: dict | None = None,
                   refusals: ServiceRefusals = EXPORT_REFUSALS) -> dict:
        return await asyncio.to_thread(self._call, method, path, fields, json_body, refusals)

    @staticmethod
    def _fields(manifest: dict, files: list[tuple[str, bytes]], **form: str) -> list:
        """The form: each file part's name percent-encoded as UTF-8 (RFC 7578, section 4.2), the one
        encoding the service decodes, so that any name travels intact; the manifest, being JSON,
        names the files as they are."""
        return [*form.items(), ("manifest", json.dumps(manifest)),
                *(("file", (quote(name, safe=""), data, "application/octet-stream")) for name, data in files)]

    async def checks(self, manifest: dict, files: list[tuple[str, bytes]]) -> dict:
        return await self.call("POST", CHECKS, self._fields(manifest, files))

    async def submit(self, title: str, context: str, manifest: dict, files: list[tuple[str, bytes]]) -> dict:
        return await self.call("POST", REQUESTS, self._fields(manifest, files, title=title, context=context))

    async def requests(self, workspace: str) -> dict:
        return await self.call("GET", f"{REQUESTS}?{urlencode({'mine': '1', 'workspace': workspace})}")

    async def request(self, request_id: str) -> dict:
        return await self.call("GET", f"{REQUESTS}/{quote(request_id)}")

    async def update_files(self, request_id: str, manifest: dict, files: list[tuple[str, bytes]]) -> dict:
        """New versions of files of a returned request: ``{"changed": [...], "request": {...}}``."""
        return await self.call("POST", f"{REQUESTS}/{quote(request_id)}/files", self._fields(manifest, files))

    async def transition(self, request_id: str, to: str, reason: str = "") -> dict:
        return await self.call("POST", f"{REQUESTS}/{quote(request_id)}/transitions",
                               json_body={"to": to, "reason": reason})

    # -- sealed runs --

    async def sealed_run_releases(self) -> dict:
        """``{"releases": [...]}``: the workspace's releases a sealed run may use."""
        return await self.call("GET", f"{SEALED_RUNS}/releases", refusals=SEALED_RUN_REFUSALS)

    async def submit_sealed_run(self, run: dict, files: list[tuple[str, bytes]]) -> dict:
        """Submit a sealed run: ``run`` (release, notebook, inputs, outputs, manifest) as the JSON of the
        ``request`` part, and each file (the notebook and the inputs) as a ``file`` part named by its
        path in the home, percent-encoded as export files' names are."""
        fields = [("request", json.dumps(run)),
                  *(("file", (quote(path, safe=""), data, "application/octet-stream")) for path, data in files)]
        return await self.call("POST", SEALED_RUNS, fields, refusals=SEALED_RUN_REFUSALS)

    async def sealed_runs(self) -> dict:
        """``{"runs": [...]}``: the caller's sealed runs in the workspace, newest first."""
        return await self.call("GET", SEALED_RUNS, refusals=SEALED_RUN_REFUSALS)

    async def withdraw_sealed_run(self, run_id: str) -> dict:
        return await self.call("POST", f"{SEALED_RUNS}/{quote(run_id, safe='')}/withdraw", refusals=SEALED_RUN_REFUSALS)
