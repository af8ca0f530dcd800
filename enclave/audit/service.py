"""The audit service: the audit log's one writer, and its query API. Hub-managed.

Run as ``python -m enclave.audit.service`` (JupyterHub starts it, see :mod:`.hub`). It holds the
writer lock for as long as it runs (:mod:`.writer`): a second audit service on the same log stops
at start with :class:`~enclave.audit.writer.WriterBusy`.

Appends: the unix socket ``$ENCLAVE_HOME/run/audit/audit.sock``, in a directory of mode 0700 owned
by root, so only hub-side components (root) reach it; nothing under ``run/audit`` is ever mounted
into a sandbox. The protocol is newline-delimited JSON over persistent connections, with
pipelined acknowledgements (a client may send many requests before reading the replies):

    → {"id": 7, "append": {"source": "hub", "actor": "alice", "action": "auth.login",
                            "outcome": "ok", "detail": {"method": "native"}}}
    ← {"id": 7, "seq": 1234}                                 committed: on disk, in the chain
    ← {"id": 7, "error": "unknown action 'x'", "refused": true}    a bad record: sending it again will not help
    ← {"id": 7, "error": "...", "refused": false}            not written (database error, stopping)

    → {"id": 8, "append_many": [{record}, {record}, …]}      records of one change (enclave apply):
    ← {"id": 8, "seqs": [1235, 1236, …]}                     committed together, in one batch, or none

Replies carry the request's ``id`` and may come in another order than the requests. Records from
every connection are committed together (group commit): one transaction per batch, and a record is
acknowledged only once its batch committed.

Queries: for the ``enclave`` command (``enclave audit query|export``), HTTP on a second unix socket
beside the first, ``run/audit/query.sock``, root only (:mod:`.query_socket`; its client
:mod:`.query_client`); for administrators' browsers, HTTP on loopback (``audit.port``), behind the
proxy at ``/services/audit/`` (:mod:`.api`), when JupyterHub runs the service. Reads run in threads
of their own on read-only database connections, never in the writer's thread nor on the event loop
that takes appends: a query never holds an append up.

The service stops when asked (SIGTERM, SIGINT) and when the process that started it is gone (the
hub killed, or the CLI that started it for a while, see :func:`enclave.audit.client.audit_service`).
A new service waits for the writer lock while an old one finishes.

Checkpoints: after ``audit.checkpoint_every_records`` records or ``checkpoint_every_seconds``
seconds, whichever comes first, and when the service stops (SIGTERM or SIGINT).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlparse

from ..host_state import keep_private
from ..services import stop_with_parent
from ..settings import AuditSettings, Settings, load_settings_or_exit
from . import socket_path
from .records import BadRecord, Submitted, check
from .writer import AuditLogDamaged, Writer, WriterBusy

log = logging.getLogger("enclave.audit")

# A request line may not be longer than this (a record's detail is capped well below it).
MAX_LINE = 1024 * 1024
# Records committed in one transaction, at most.
MAX_BATCH = 5000
# How long a starting service waits for the writer lock held by one that is stopping, in seconds.
WRITER_LOCK_WAIT = 30
# Stop reading from a client that does not read its acknowledgements once this much is queued.
MAX_UNREAD_REPLIES = 1024 * 1024


class NotWritten(Exception):
    """The service could not write a record it had accepted."""


@dataclass
class _Unit:
    """What is committed together: one record, or the records of one ``append_many``."""

    records: list[Submitted]
    many: bool
    future: asyncio.Future


class GroupCommit:
    """Gathers records from every connection and commits them together, in one writer thread."""

    def __init__(self, writer: Writer, settings: AuditSettings) -> None:
        self.writer = writer
        self.every_records = settings.checkpoint_every_records
        self.every_seconds = settings.checkpoint_every_seconds
        # Units to commit: one record, or the records of one ``append_many`` (all or none), each
        # with the future its connection waits on.
        self.pending: list[_Unit] = []
        self.stopping = False
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        # Every database write happens in this one thread, in order.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        self._last_checkpoint = self._loop.time()
        self._task = asyncio.create_task(self._run())

    def submit(self, record: Submitted) -> asyncio.Future:
        """Queue one record; the future's result is its ``seq``."""
        future = self._loop.create_future()
        self.pending.append(_Unit([record], False, future))
        self._wake.set()
        return future

    def submit_many(self, records: list[Submitted]) -> asyncio.Future:
        """Queue records that are committed together or not at all (never split between batches);
        the future's result is their ``seq``s, in order."""
        future = self._loop.create_future()
        self.pending.append(_Unit(records, True, future))
        self._wake.set()
        return future

    def _next_batch(self) -> list["_Unit"]:
        """Whole units from the front of the queue, at most MAX_BATCH records (or one larger unit)."""
        batch, size = [], 0
        while self.pending and (not batch or size + len(self.pending[0].records) <= MAX_BATCH):
            unit = self.pending.pop(0)
            batch.append(unit)
            size += len(unit.records)
        return batch

    async def close(self) -> None:
        """Commit what is pending, sign a last checkpoint, stop."""
        self.stopping = True
        self._wake.set()
        await self._task
        self._thread.shutdown()

    async def _run(self) -> None:
        while True:
            due = self._last_checkpoint + self.every_seconds - self._loop.time()
            timer = self._loop.call_later(max(due, 0), self._wake.set)
            await self._wake.wait()
            timer.cancel()
            self._wake.clear()
            while self.pending:
                await self._commit(self._next_batch())
                if self.writer.size - self.writer.sealed_size >= self.every_records:
                    await self._checkpoint()
            if self.stopping:
                break
            if self._loop.time() - self._last_checkpoint >= self.every_seconds:
                await self._checkpoint()
        await self._checkpoint()

    async def _commit(self, batch: list["_Unit"]) -> None:
        records = [r for unit in batch for r in unit.records]
        try:
            seqs = await self._loop.run_in_executor(self._thread, self.writer.append, records)
        except Exception as exc:
            log.exception("could not write %d audit record(s)", len(records))
            for unit in batch:
                if not unit.future.done():
                    unit.future.set_exception(NotWritten(f"the audit log could not be written: {exc}"))
            return
        at = 0
        for unit in batch:
            unit_seqs, at = seqs[at:at + len(unit.records)], at + len(unit.records)
            if not unit.future.done():
                unit.future.set_result(unit_seqs if unit.many else unit_seqs[0])

    async def _checkpoint(self) -> None:
        self._last_checkpoint = self._loop.time()
        try:
            cp = await self._loop.run_in_executor(self._thread, self.writer.checkpoint)
        except Exception:
            log.exception("could not write an audit checkpoint; trying again at the next one")
            return
        if cp is not None:
            log.info("checkpoint: %d records, root %s", cp.tree_size, cp.root_hash)


class AppendListener:
    """The append socket's connections: parse, check, queue, and reply when committed."""

    def __init__(self, commit: GroupCommit) -> None:
        self.commit = commit
        self.connections: set[asyncio.StreamWriter] = set()
        self.handlers: set[asyncio.Task] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        self.handlers.add(asyncio.current_task())
        loop = asyncio.get_running_loop()
        unsent: list[bytes] = []

        def send() -> None:
            if not writer.is_closing():
                writer.write(b"".join(unsent))
            unsent.clear()

        def reply(message: dict) -> None:
            # The replies of one committed batch leave in one write, not one system call each.
            if not unsent:
                loop.call_soon(send)
            unsent.append(json.dumps(message).encode() + b"\n")

        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # over the stream's limit
                    reply({"id": None, "error": f"a request is longer than {MAX_LINE} bytes", "refused": True})
                    break
                if not line:
                    break
                self._take(line, reply)
                if writer.transport.get_write_buffer_size() > MAX_UNREAD_REPLIES:
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.connections.discard(writer)
            self.handlers.discard(asyncio.current_task())
            if unsent:
                send()
            writer.close()

    def _take(self, line: bytes, reply) -> None:
        try:
            request = json.loads(line.decode())
        except ValueError:  # UnicodeDecodeError included
            reply({"id": None, "error": "a request must be one JSON object on one line", "refused": True})
            return
        kind = next((k for k in ("append", "append_many") if isinstance(request, dict) and k in request), None)
        if kind is None or set(request) - {"id", kind}:
            reply({"id": request.get("id") if isinstance(request, dict) else None,
                   "error": 'a request is {"id": ..., "append": {record}} or {"id": ..., "append_many": [records]}',
                   "refused": True})
            return
        request_id = request.get("id")
        try:
            if kind == "append":
                records = [check(request["append"])]
            else:
                many = request["append_many"]
                if not isinstance(many, list) or not 1 <= len(many) <= MAX_BATCH:
                    raise BadRecord(f"append_many takes a list of 1 to {MAX_BATCH} records")
                records = []
                for i, record in enumerate(many):
                    try:
                        records.append(check(record))
                    except BadRecord as exc:  # one bad record refuses them all: none is written
                        raise BadRecord(f"record {i + 1} of {len(many)}: {exc}") from None
        except BadRecord as exc:
            reply({"id": request_id, "error": str(exc), "refused": True})
            return
        if self.commit.stopping:
            reply({"id": request_id, "error": "the audit service is stopping", "refused": False})
            return

        def committed(future: asyncio.Future) -> None:
            if future.exception() is not None:
                reply({"id": request_id, "error": str(future.exception()), "refused": False})
            elif kind == "append":
                reply({"id": request_id, "seq": future.result()})
            else:
                reply({"id": request_id, "seqs": future.result()})

        future = self.commit.submit(records[0]) if kind == "append" else self.commit.submit_many(records)
        future.add_done_callback(committed)

    async def close_all(self) -> None:
        """Close every connection, and wait for their handlers to see it and end (left running, they
        would be cancelled with the event loop, which asyncio then logs as an error)."""
        for writer in list(self.connections):
            writer.close()
        if self.handlers:
            await asyncio.wait(list(self.handlers), timeout=10)


async def serve(settings: Settings) -> None:
    from .query_client import socket_path as query_socket_path
    from .query_socket import QuerySocket
    from .reader import AuditReader

    writer = Writer.open(settings, wait=WRITER_LOCK_WAIT)
    commit = GroupCommit(writer, settings.audit)
    listener = AppendListener(commit)
    path = socket_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.parent.chmod(0o700)  # root only: sandboxes and other local users never reach the sockets
    # Queries from the enclave command, on their own socket, taken before appends are: whoever
    # sees the append socket answer (enclave.audit.client.audit_service) finds this one ready.
    reader = AuditReader(settings)
    queries = QuerySocket(reader, query_socket_path(settings.home))
    server = await asyncio.start_unix_server(listener.handle, path=str(path), limit=MAX_LINE)
    path.chmod(0o600)

    # The query API, for administrators, only when JupyterHub runs the service (it authenticates
    # through the hub); a service started for a while by the CLI, with the hub down, serves the
    # command's socket alone.
    http = None
    if "JUPYTERHUB_SERVICE_URL" in os.environ:
        from tornado.httpserver import HTTPServer

        from . import api  # JupyterHub's authentication: only for the hub's service

        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/audit/")
        url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
        http = HTTPServer(api.make_app(reader, writer.key.public_key(), prefix), xheaders=True)
        http.listen(url.port, url.hostname)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stop_with_parent()  # a hub killed with -9 stops it too
    log.info("audit service: %d records; appends on %s, queries on %s%s", writer.size, path, queries.path,
             f" and {os.environ['JUPYTERHUB_SERVICE_URL']}" if http else "")
    await stop.wait()

    log.info("audit service stopping: committing what is pending and signing a last checkpoint")
    server.close()
    if http is not None:
        http.stop()
    await queries.close()
    reader.close()
    await commit.close()
    await listener.close_all()
    writer.close()
    path.unlink(missing_ok=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[audit %(levelname)s %(asctime)s] %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    keep_private()  # the database, its journal and the checkpoints' copy: root only
    settings = load_settings_or_exit()
    try:
        asyncio.run(serve(settings))
    except (WriterBusy, AuditLogDamaged) as exc:
        print(f"enclave audit service: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
