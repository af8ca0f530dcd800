"""Handing records to the audit service: what every hub-side source calls.

    from enclave.audit.client import AuditClient, AuditUnavailable

    audit = AuditClient(settings)            # one per process; safe to share between threads
    seq = audit.append("cli", "admin", "workspace.create", workspace="demo")

    audit = AsyncAuditClient(settings)       # for asyncio / tornado code; safe across event loops
    seq = await audit.append("hub", "alice", "auth.login", detail={"method": "native"})

``append`` returns the record's sequence number once the record is committed. It raises
:class:`AuditUnavailable` when the service cannot be reached or does not acknowledge in time: the
record may not be logged, and the caller must not go on as if it were (fail closed). It raises
:class:`AuditRecordRefused` when the record is malformed (unknown action, wrong types, oversized
detail): a bug in the caller, with the service's reason.

Connections are persistent: the blocking client keeps one per thread, the asyncio client one per
event loop, with many appends in flight on it (replies are matched by request id).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from . import socket_path

if TYPE_CHECKING:  # only the type: the sandbox supervisor imports this module, and must start fast
    from ..settings import Settings

# Mirrors the service's limit on a request line (enclave.audit.service.MAX_LINE).
MAX_LINE = 1024 * 1024
DEFAULT_TIMEOUT = 10.0


class AuditError(Exception):
    """A record was not logged."""


class AuditUnavailable(AuditError):
    """The audit service could not be reached, or did not acknowledge the record: fail closed."""


class AuditRecordRefused(AuditError):
    """The audit service refused the record as malformed; the message names the problem."""


def _path(where: Settings | str | Path) -> str:
    """The socket: given, or the one of these settings."""
    return str(where if isinstance(where, (str, Path)) else socket_path(where))


def _request_line(request_id: int, source: str, actor: str, action: str, outcome: str,
                  workspace: str | None, sandbox: str | None, detail: dict | None) -> bytes:
    record = {"source": source, "actor": actor, "action": action, "outcome": outcome,
              "workspace": workspace, "sandbox": sandbox, "detail": detail if detail is not None else {}}
    try:
        line = json.dumps({"id": request_id, "append": record}, ensure_ascii=False, allow_nan=False).encode() + b"\n"
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise AuditRecordRefused(f"the record cannot be sent as JSON: {exc}") from None
    if len(line) > MAX_LINE:
        raise AuditRecordRefused(f"the record is {len(line)} bytes; the audit service takes at most {MAX_LINE}")
    return line


def _many_line(request_id: int, records: list[dict]) -> bytes:
    full = [{"source": r["source"], "actor": r["actor"], "action": r["action"], "outcome": r.get("outcome", "ok"),
             "workspace": r.get("workspace"), "sandbox": r.get("sandbox"), "detail": r.get("detail") or {}}
            for r in records]
    try:
        line = json.dumps({"id": request_id, "append_many": full}, ensure_ascii=False, allow_nan=False).encode() + b"\n"
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise AuditRecordRefused(f"the records cannot be sent as JSON: {exc}") from None
    if len(line) > MAX_LINE:
        raise AuditRecordRefused(f"the {len(records)} records are {len(line)} bytes together; the audit service takes"
                                 f" at most {MAX_LINE} in one request")
    return line


def _result(reply: dict) -> int:
    if "seq" in reply:
        return reply["seq"]
    if reply.get("refused"):
        raise AuditRecordRefused(reply.get("error", "refused"))
    raise AuditUnavailable(f"the audit service did not write the record: {reply.get('error')}")


class _Connection:
    def __init__(self, path: str, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise AuditUnavailable(f"the audit service is not reachable at {path}: {exc.strerror or exc}") from None
        self.replies = self.sock.makefile("rb")
        self.ids = itertools.count(1)

    def stale(self) -> bool:
        """The service closed this connection (it restarted, say) since its last use."""
        poller = select.poll()  # not select.select: a hub process may hold more than 1024 descriptors
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        self.replies.close()
        self.sock.close()


class AuditClient:
    """Blocking appends; one persistent connection per thread."""

    def __init__(self, where: Settings | str | Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = _path(where)
        self.timeout = timeout
        self._local = threading.local()
        self._all: set[_Connection] = set()
        self._lock = threading.Lock()

    def append(self, source: str, actor: str, action: str, outcome: str = "ok", *, workspace: str | None = None,
               sandbox: str | None = None, detail: dict | None = None) -> int:
        """Log one record; return its ``seq`` once it is committed."""
        return _result(self._exchange(lambda request_id: _request_line(
            request_id, source, actor, action, outcome, workspace, sandbox, detail), "record"))

    def append_many(self, records: list[dict]) -> list[int]:
        """Log records that stand or fall together (the changes of one ``enclave apply``): all are
        committed in one batch, or none is (one the log refuses refuses them all). Each record is a
        dict of :meth:`append`'s arguments (``source``, ``actor``, ``action``, and optionally
        ``outcome``, ``workspace``, ``sandbox``, ``detail``). Returns their ``seq``s, in order."""
        reply = self._exchange(lambda request_id: _many_line(request_id, records), "records")
        if "seqs" in reply:
            return reply["seqs"]
        return [_result(reply)]  # raises: a refusal, or not written

    def _exchange(self, line_of, what: str) -> dict:
        """Send the request ``line_of(request_id)`` and read its reply; a connection that fails or
        answers out of turn is dropped (the ``what`` may not be logged)."""
        connection = self._connection()
        request_id = next(connection.ids)
        line = line_of(request_id)
        try:
            connection.sock.sendall(line)
            raw = connection.replies.readline()
            if not raw:
                raise ConnectionError("the service closed the connection")
            reply = json.loads(raw)
        except (OSError, ValueError) as exc:
            self._drop(connection)
            raise AuditUnavailable(f"the audit service did not acknowledge the {what} ({exc}); the {what} may not be"
                                   " logged") from None
        if reply.get("id") != request_id:
            self._drop(connection)
            raise AuditUnavailable(f"the audit service answered another request ({reply}); the {what} may not be logged")
        return reply

    def _connection(self) -> _Connection:
        connection = getattr(self._local, "connection", None)
        if connection is not None and connection.stale():
            self._drop(connection)
            connection = None
        if connection is None:
            connection = _Connection(self.path, self.timeout)
            self._local.connection = connection
            with self._lock:
                self._all.add(connection)
        return connection

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            self._all.discard(connection)

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, set()
        for connection in connections:
            connection.close()


class Recorder:
    """A change's record-keeper, as the service layer calls it inside the change's transaction:
    ``record(action, workspace=, detail=)`` hands one record to the audit log as ``actor``'s (from
    ``source``), and ``record.together([(action, workspace, detail), …])`` the records of one change
    made of many (a declarative file), which the log takes all, or none. A record the log does not
    take raises, and the change is rolled back."""

    def __init__(self, audit: AuditClient, source: str, actor: str) -> None:
        self.audit, self.source, self.actor = audit, source, actor

    def __call__(self, action: str, workspace: str | None = None, detail: dict | None = None) -> None:
        self.audit.append(self.source, self.actor, action, workspace=workspace, detail=detail)

    def together(self, records: list[tuple[str, str | None, dict | None]]) -> None:
        self.audit.append_many([{"source": self.source, "actor": self.actor, "action": action,
                                 "workspace": workspace, "detail": detail} for action, workspace, detail in records])


class _AsyncConnection:
    """One connection in one event loop, with many appends in flight, matched by request id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.waiting: dict[int, asyncio.Future] = {}
        self.ids = itertools.count(1)
        self.closed = False
        self._unsent: list[bytes] = []
        self._drain_lock = asyncio.Lock()
        self._reading = asyncio.create_task(self._read_replies(reader))

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                reply = json.loads(line)
                future = self.waiting.pop(reply.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (OSError, ValueError):
            pass
        finally:
            self.close()

    async def send(self, line: bytes, request_id: int, timeout: float) -> dict:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting[request_id] = future
        timer = loop.call_later(timeout, self._time_out, future)
        try:
            # Appends made in the same turn of the event loop leave in one write.
            if not self._unsent:
                loop.call_soon(self._send)
            self._unsent.append(line)
            if self.writer.transport.get_write_buffer_size() > MAX_LINE:
                async with self._drain_lock:
                    await self.writer.drain()
            return await future
        except (OSError, TimeoutError) as exc:
            self.close()
            raise AuditUnavailable(f"the audit service did not acknowledge the record ({exc});"
                                   " it may not be logged") from None
        finally:
            timer.cancel()
            self.waiting.pop(request_id, None)

    def _send(self) -> None:
        if not self.closed:
            self.writer.write(b"".join(self._unsent))
        self._unsent.clear()

    @staticmethod
    def _time_out(future: asyncio.Future) -> None:
        if not future.done():
            future.set_exception(TimeoutError("no acknowledgement in time"))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.writer.close()
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(AuditUnavailable("the audit service closed the connection before"
                                                      " acknowledging; the record may not be logged"))
        self.waiting.clear()


class AsyncAuditClient:
    """Appends from asyncio (and tornado) code; one pipelined connection per event loop."""

    def __init__(self, where: Settings | str | Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = _path(where)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._connections: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._connecting: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def append(self, source: str, actor: str, action: str, outcome: str = "ok", *,
                     workspace: str | None = None, sandbox: str | None = None, detail: dict | None = None) -> int:
        """Log one record; return its ``seq`` once it is committed."""
        connection = await self._connection()
        request_id = next(connection.ids)
        line = _request_line(request_id, source, actor, action, outcome, workspace, sandbox, detail)
        return _result(await connection.send(line, request_id, self.timeout))

    async def _connection(self) -> _AsyncConnection:
        loop = asyncio.get_running_loop()
        with self._lock:
            connection = self._connections.get(loop)
            connecting = self._connecting.setdefault(loop, asyncio.Lock())
        if connection is not None and not connection.closed:
            return connection
        async with connecting:  # one connection attempt at a time in this loop
            connection = self._connections.get(loop)
            if connection is None or connection.closed:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_unix_connection(self.path, limit=MAX_LINE), self.timeout)
                except (OSError, TimeoutError) as exc:
                    raise AuditUnavailable(f"the audit service is not reachable at {self.path}:"
                                           f" {getattr(exc, 'strerror', None) or exc or 'timed out'}") from None
                connection = _AsyncConnection(reader, writer)
                with self._lock:
                    self._connections[loop] = connection
        return connection

    async def close(self) -> None:
        """Close this event loop's connection."""
        with self._lock:
            connection = self._connections.pop(asyncio.get_running_loop(), None)
        if connection is not None:
            connection.close()


@contextlib.contextmanager
def audit_service(settings: Settings, timeout: float = 60.0):
    """A blocking client of the audit service, for a process that records while the hub may not be
    running (the ``enclave`` command, ``enclave demo`` before it starts the hub).

    The hub's audit service when it runs; otherwise one started for the while (the same program,
    taking appends only), stopped on leaving, which seals a checkpoint. Either way the service is
    the log's one writer. A starting hub's own service waits for the writer lock meanwhile.
    """
    client = AuditClient(settings)
    started = None
    if not _reachable(client.path):
        from ..services import settings_environment

        env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "LANG")}, **settings_environment(settings)}
        started = subprocess.Popen([sys.executable, "-I", "-m", "enclave.audit.service"], env=env, cwd="/",
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not _reachable(client.path):
            if started.poll() is not None or time.monotonic() > deadline:
                started.kill()
                reason = started.communicate()[1].decode(errors="replace").strip().splitlines()
                raise AuditUnavailable("the audit service did not start: " + (reason[-1] if reason else "no output"))
            time.sleep(0.05)
    try:
        yield client
    finally:
        client.close()
        if started is not None:
            started.terminate()
            try:
                started.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                started.kill()
                started.communicate()


def _reachable(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True
