"""How JupyterHub runs the audit service (wired in by ``enclave.hub``).

Admins read the log through it: the ``enclave-admin`` role holds ``custom:audit:read`` and
``access:services!service=audit`` (``enclave.rbac``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from ..rbac import AUDIT_SERVICE
from ..settings import Settings
from .api import SCOPE_READ


def audit_service(settings: Settings) -> dict:
    """The ``c.JupyterHub.services`` entry: hub-managed, queries on a loopback port, run from the hub's venv.

    Appends do not go through JupyterHub: hub-side components use the root-only unix socket
    (:func:`enclave.audit.socket_path`). The service needs no role of its own: it asks
    ``/hub/api/user`` with each caller's token, and browser logins get a token limited to
    ``custom:audit:read`` when the user holds it.
    """
    # Managed services do not inherit the hub's environment: pass on the settings file and overrides.
    environment = {k: v for k, v in os.environ.items() if k.startswith("ENCLAVE_")}
    environment["ENCLAVE_HOME"] = str(settings.home)
    # Its OAuth cookies host-only with the __Host- prefix, and Secure, as the hub's are (see
    # enclave.hub.configure and enclave.exports.hub).
    environment["JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED"] = "1"
    environment["JUPYTERHUB_COOKIE_OPTIONS"] = json.dumps({"secure": True})
    if "ENCLAVE_CONFIG" in environment:  # it runs from "/": a relative path would point elsewhere
        environment["ENCLAVE_CONFIG"] = os.path.abspath(environment["ENCLAVE_CONFIG"])
    return {
        "name": AUDIT_SERVICE,
        "url": f"http://127.0.0.1:{settings.audit.port}",
        # Isolated mode from "/": nothing a user can write is on the service's sys.path.
        "command": [sys.executable, "-I", "-m", "enclave.audit.service"],
        "cwd": "/",
        "environment": environment,
        # In the hub's Services menu: the admin audit page (records, assessment reports) is its root.
        "display": True,
        "info": {"description": "The audit log: every operation and transfer, hash-chained and signed"},
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": [SCOPE_READ],
    }


class HubRecords:
    """The hub's own records (logins, logouts, lock-outs, sandboxes), handed to the audit service.

    The audit service starts with the hub: until it has taken a first record, a record waits for it
    (up to ``STARTUP_WAIT`` seconds). After that, a record the service cannot take raises
    ``AuditUnavailable`` at once, and the caller refuses what it was about to allow (fail closed).
    """

    STARTUP_WAIT = 15.0

    def __init__(self, settings: Settings) -> None:
        from .client import AsyncAuditClient

        self.client = AsyncAuditClient(settings)
        self._reached = False

    async def append(self, actor: str, action: str, outcome: str = "ok", *, workspace: str | None = None,
                     sandbox: str | None = None, detail: dict | None = None) -> int:
        from .client import AuditUnavailable

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.STARTUP_WAIT
        while True:
            try:
                seq = await self.client.append("hub", actor, action, outcome, workspace=workspace,
                                               sandbox=sandbox, detail=detail)
            except AuditUnavailable:
                if self._reached or loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
                continue
            self._reached = True
            return seq


_hub_records: dict[str, HubRecords] = {}


def hub_records(settings: Settings) -> HubRecords:
    """The hub process's one :class:`HubRecords` for this Enclave."""
    key = str(settings.home)
    if key not in _hub_records:
        _hub_records[key] = HubRecords(settings)
    return _hub_records[key]
