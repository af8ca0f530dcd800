"""The server's records, handed at once to this sandbox's receiver on the hub side.

Every record the guard makes (executions, terminal input, contents reads, saves, renames and
deletes, egress notices) goes over ``/run/enclave/audit/receiver.sock`` to the sandbox's supervisor
on the host (``enclave.sandbox.receiver``), which stamps user, workspace, sandbox and time itself
and hands the record to the hub's audit log; the reply comes once the record is committed there.
Nothing is kept in the sandbox to be changed later.

A record that is not taken raises :class:`RecordNotTaken`, and the caller holds back what it was
about to do (fail closed): an execution does not reach the kernel, a line typed in a terminal is not
run, a file is not served or saved. The most recent executions are also kept in memory, so that an
export request can say which executions wrote the file it carries.

Protocol: one JSON object per line each way, on one connection kept open::

    -> {"id": 3, "action": "kernel.execute", "detail": {"kernel": "...", "code": "...", ...}}
    <- {"id": 3, "seq": 812}          or   {"id": 3, "error": "..."}

The same connection carries the server's egress reports (``enclave_guard.egress``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import socket
import threading
from collections import deque
from datetime import UTC, datetime

REMEMBERED_EXECUTIONS = 5000
# The audit log keeps this much of an execution's code, and the hash of all of it.
MAX_TEXT = 60_000
TIMEOUT_SECONDS = 10.0


class RecordNotTaken(RuntimeError):
    """The hub-side receiver did not acknowledge the record: it may not be in the audit log."""


class AuditTrail:
    def __init__(self, socket_path: str, user: str, workspace: str, log: logging.Logger):
        self.socket_path = socket_path
        self.user = user
        self.workspace = workspace
        self.log = log
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._replies = None
        self._ids = itertools.count(1)
        self.executions: deque[dict] = deque(maxlen=REMEMBERED_EXECUTIONS)

    def write(self, action: str, outcome: str = "ok", **detail) -> int:
        """Hand one record to the receiver; return its place in the audit log once it is there."""
        reply = self.call({"action": action, "outcome": outcome, "detail": detail})
        if "seq" not in reply:
            raise RecordNotTaken(f"the audit log did not take the record: {reply.get('error', reply)}")
        return reply["seq"]

    def call(self, request: dict) -> dict:
        """One request to the receiver (a record, or an egress report), and its reply."""
        with self._lock:
            request_id = next(self._ids)
            line = json.dumps({"id": request_id, **request}, ensure_ascii=False).encode() + b"\n"
            for attempt in (1, 2):  # a connection the receiver closed (it restarted) is opened again once
                try:
                    sock, replies = self._connection()
                    sock.sendall(line)
                    raw = replies.readline()
                    if not raw:
                        raise ConnectionError("the receiver closed the connection")
                    reply = json.loads(raw)
                    break
                except (OSError, ValueError) as exc:
                    self._close()
                    if attempt == 2:
                        raise RecordNotTaken(f"the audit log's receiver is not reachable ({exc})") from None
        if reply.get("id") != request_id:
            raise RecordNotTaken(f"the receiver answered another request: {reply}")
        return reply

    def record_execution(self, kernel_id: str, msg_id: str, notebook: str | None, code: str) -> dict:
        """Record code sent to a kernel (raises :class:`RecordNotTaken`); remember it for provenance."""
        detail = {"kernel": kernel_id, "msg_id": msg_id, **({"notebook": notebook} if notebook else {}),
                  **code_fields(code)}
        self.write("kernel.execute", **detail)
        execution = {"time": datetime.now(UTC).isoformat(), "user": self.user, "kernel_id": kernel_id,
                     "msg_id": msg_id, "notebook": notebook, "code": code}
        self.executions.append(execution)
        return execution

    def executions_mentioning(self, name: str) -> list[dict]:
        """Executions whose code names the file: the best record of what wrote it."""
        return [e for e in self.executions if name in e["code"]]

    def _connection(self):
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(TIMEOUT_SECONDS)
            try:
                sock.connect(self.socket_path)
            except OSError:
                sock.close()
                raise
            self._sock, self._replies = sock, sock.makefile("rb")
        return self._sock, self._replies

    def _close(self) -> None:
        if self._sock is not None:
            self._replies.close()
            self._sock.close()
        self._sock = self._replies = None

    def close(self) -> None:
        with self._lock:
            self._close()


def code_fields(code: str) -> dict:
    """Code for the audit log: at most MAX_TEXT characters of it, with the SHA-256 of all of it."""
    fields = {"code": code[:MAX_TEXT], "code_sha256": hashlib.sha256(code.encode("utf-8", "replace")).hexdigest()}
    if len(code) > MAX_TEXT:
        fields["code_truncated"] = True
    return fields
