"""The server's audit trail and execution record.

Every ``execute_request`` that reaches a kernel is appended as one JSON line to the audit file
(``/run/enclave/server/audit.jsonl``: the server's runtime directory, which kernels cannot see) and
written to the server's log as ``enclave-audit {json}`` (the server's stdout and stderr are kept by
the sandbox supervisor, out of the sandbox). The most recent executions are also kept in memory, so
an export request can say which executions wrote the file it carries.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

REMEMBERED_EXECUTIONS = 5000


class AuditTrail:
    def __init__(self, path: str | Path, user: str, workspace: str, log: logging.Logger):
        self.path = Path(path)
        self.log = log
        self.user = user
        self.workspace = workspace
        self._lock = threading.Lock()
        self.executions: deque[dict] = deque(maxlen=REMEMBERED_EXECUTIONS)
        # Opened once at start-up: a trail that cannot be written stops the server.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, kind: str, **fields) -> dict:
        record = {
            "time": datetime.now(UTC).isoformat(),
            "kind": kind,
            "workspace": self.workspace,
            "owner": self.user,
            **fields,
        }
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)
        self.log.info("enclave-audit %s", line.decode().rstrip())
        return record

    def record_execution(self, user: str, kernel_id: str, msg_id: str, notebook: str | None, code: str):
        record = self.write(
            "execution", user=user, kernel_id=kernel_id, msg_id=msg_id, notebook=notebook, code=code
        )
        self.executions.append(record)

    def executions_mentioning(self, name: str) -> list[dict]:
        """Executions whose code names the file: the best record of what wrote it."""
        return [e for e in self.executions if name in e["code"]]

    def close(self):
        os.close(self._fd)
