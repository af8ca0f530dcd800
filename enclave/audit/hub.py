"""How JupyterHub runs the audit service (wired in by ``enclave.hub``).

Admins read the log through it: the ``enclave-admin`` role holds ``custom:audit:read`` and
``access:services!service=audit`` (``enclave.rbac``).
"""

from __future__ import annotations

import asyncio

from ..rbac import AUDIT_SERVICE
from ..services import hub_service
from ..settings import Settings
from .api import SCOPE_READ


def audit_service(settings: Settings) -> dict:
    """The ``c.JupyterHub.services`` entry of the audit service: its admin pages (records, assessment
    reports) are in the hub's Services menu. Appends do not go through JupyterHub: hub-side
    components use the root-only unix socket (:func:`enclave.audit.socket_path`)."""
    return hub_service(AUDIT_SERVICE, "enclave.audit.service", settings.audit.port, settings,
                       description="The audit log: every operation and transfer, hash-chained and signed",
                       scopes=[SCOPE_READ])


class HubRecords:
    """The hub's own records (logins, logouts, login throttles, sandboxes), handed to the audit service.

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
