"""The receiver of one sandbox's audit records, on the hub side.

Run by the sandbox's supervisor (root, on the host). Its socket is bind-mounted into the server's
sandbox only (``/run/enclave/audit/receiver.sock``; owned by the sandbox's uid, mode 0600; kernels
and terminals have no path to it): whatever connects to it *is* that sandbox, identified by how the
socket was created, not by anything it says. Each record the server sends is stamped here with the
user, workspace and sandbox of this supervisor's spec (the sender's own claims are not read) and
handed to the audit service, which stamps the time; the server gets its reply once the record is
committed. Only the actions that happen inside a sandbox may come this way (``where = "sandbox"``
in :data:`enclave.audit.actions.ACTIONS`, less the sandbox's own start and stop, which the hub
records): a taken-over server cannot log in, vote or release anything in the log's name.

The receiver also keeps the operator's egress budget for this workspace (:mod:`.egress`): the
server reports the bytes it lets through to the browser and asks before more; the ledger answers,
and the receiver itself records each notice and hold in the audit log (the server cannot leave
them out). Without a ledger, every request for more is held (fail closed).

Protocol: see ``enclave_guard.audit`` (one JSON object per line each way); an egress report is
``{"id": 4, "egress": {"channel": "kernel_output", "spent": 81920, "ask": 2048, "budgets": {"hour": N, "day": N}}}``
answered by :meth:`.egress.Verdict.as_reply` with the id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..audit.actions import ACTIONS
from ..audit.client import AsyncAuditClient, AuditError
from .egress import WINDOWS, EgressLedger

log = logging.getLogger("enclave.receiver")

# What a server may report: what happens inside its sandbox.
SANDBOX_ACTIONS = frozenset(name for name, action in ACTIONS.items()
                            if action.where == "sandbox" and not name.startswith("sandbox."))
MAX_LINE = 1024 * 1024
EGRESS_CHANNELS = frozenset({"kernel_output", "terminal_output", "contents_read"})


@dataclass
class AuditReceiver:
    client: AsyncAuditClient
    user: str
    workspace: str
    sandbox: str
    ledger: EgressLedger | None = None

    async def serve(self, path: Path, uid: int, gid: int) -> asyncio.AbstractServer:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chown(path.parent, 0, 0)
        path.parent.chmod(0o755)
        path.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self.handle, path=str(path), limit=MAX_LINE)
        os.chown(path, uid, gid)
        path.chmod(0o600)
        return server

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                reply = await self.take(line)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.warning("audit receiver of %s: connection dropped: %s", self.sandbox, exc)
        finally:
            writer.close()

    async def take(self, line: bytes) -> dict:
        """One record from the server: stamped with this sandbox, handed to the audit service."""
        try:
            sent = json.loads(line)
            request_id = sent["id"]
            if "egress" in sent:
                return {"id": request_id, **await self.charge(sent["egress"])}
            action, outcome, detail = sent["action"], sent.get("outcome", "ok"), sent.get("detail", {})
        except (ValueError, KeyError, TypeError):
            return {"id": None, "error": "a record is a JSON object with an id, an action and a detail"}
        if action not in SANDBOX_ACTIONS:
            return {"id": request_id, "error": f"a sandbox may not report {action!r}"}
        try:
            seq = await self.client.append("sandbox", self.user, action, outcome, workspace=self.workspace,
                                           sandbox=self.sandbox, detail=detail)
        except AuditError as exc:
            return {"id": request_id, "error": str(exc)}
        return {"id": request_id, "seq": seq}

    async def charge(self, report: dict) -> dict:
        """One egress report: charge what was let through, answer whether more may go; a notice or
        hold that is the first of its window is recorded here, by the hub side."""
        try:
            channel, spent, ask, budgets = report["channel"], report["spent"], report["ask"], report["budgets"]
            if (channel not in EGRESS_CHANNELS or set(budgets) != set(WINDOWS)
                    or not all(isinstance(n, int) and n >= 0 for n in (spent, ask, *budgets.values()))):
                raise ValueError
        except (KeyError, TypeError, ValueError, AttributeError):
            return {"error": "an egress report has a channel, spent, ask and budgets (hour, day) in bytes"}
        if self.ledger is None:
            return {"state": "held", "allowance": 0, "error": "this receiver keeps no egress budget"}
        verdict = self.ledger.charge(spent, ask, budgets)
        if verdict.record:
            detail = {"channel": channel, "used": verdict.used, "budget": verdict.budget, "window": verdict.window}
            action = "egress.held" if verdict.state == "held" else "egress.notice"
            try:
                await self.client.append("sandbox", self.user, action, "denied" if verdict.state == "held" else "ok",
                                         workspace=self.workspace, sandbox=self.sandbox, detail=detail)
            except AuditError as exc:  # the bytes are held or let through either way
                log.error("audit receiver of %s: %s not recorded: %s", self.sandbox, action, exc)
        return verdict.as_reply()
