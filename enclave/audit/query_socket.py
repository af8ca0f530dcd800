"""The audit service's read API for the ``enclave`` command, on the root-only unix socket
``$ENCLAVE_HOME/run/audit/query.sock`` (the protocol: :mod:`.query_client`, its client).

HTTP, as the administrators' API (:mod:`.api`) and the provisioning service's CLI socket speak it:
a query is a GET with the filters of ``enclave audit query`` and its answer the page of
``/services/audit/api/records``; an export streams as it is read, with its size unknown up front
(chunked), and a refusal is a status with a message. The append socket's protocol stays what it
is, and its connections are never held up behind a read.

Who may ask: root alone. The socket's folder is mode 0700, owned by root; should it ever be
loosened, the caller's uid, from the kernel (``SO_PEERCRED``), still keeps others out.

Reads never hold the writer up. Each runs in a thread of its own pool (``audit-reader``), on the
reader's own read-only database connections (SQLite ``mode=ro`` in WAL mode; PostgreSQL read-only
transactions): the writer thread commits while a read runs, a read sees the log as it was when it
began, and the event loop that takes appends never waits for a read. An export read faster than
its client takes it waits, in its reader thread, for the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_unix_socket

from ..services import error_message
from .reader import MAX_PAGE, AuditReader, BadQuery

log = logging.getLogger("enclave.audit")

FILTERS = ("user", "workspace", "action", "since", "until")
# Reads at once; more wait for a free thread.
READ_THREADS = 4
# An export leaves in pieces of about this size.
EXPORT_CHUNK = 256 * 1024


def page_arguments(handler: web.RequestHandler, default_limit: int = 100) -> dict:
    """The keyword arguments of :meth:`AuditReader.query` from a request's query string (this API
    and the administrators' ``api/records``): the filters, ``after``, ``limit`` and ``order``."""
    args = {name: handler.get_argument(name, "") or None for name in FILTERS}
    try:
        after = int(handler.get_argument("after", "")) if handler.get_argument("after", "") else None
        limit = int(handler.get_argument("limit", str(default_limit)))
    except ValueError:
        raise web.HTTPError(400, "after and limit must be whole numbers") from None
    order = handler.get_argument("order", "asc")
    if order not in ("asc", "desc"):
        raise web.HTTPError(400, "order must be asc or desc")
    return {**args, "after": after, "limit": limit, "newest_first": order == "desc"}


class _RootOnly(web.RequestHandler):
    @property
    def reader(self) -> AuditReader:
        return self.settings["reader"]

    @property
    def reads(self) -> ThreadPoolExecutor:
        return self.settings["reads"]

    def prepare(self):
        peer = self.request.connection.stream.socket.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", peer)
        if uid != 0:
            raise web.HTTPError(403, f"only root may query the audit log (uid {uid} is not)")

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": error_message(exc) or self._reason}, ensure_ascii=False))


class RecordsHandler(_RootOnly):
    async def get(self):
        args = page_arguments(self, default_limit=MAX_PAGE)
        loop = asyncio.get_running_loop()
        try:
            page = await loop.run_in_executor(self.reads, lambda: self.reader.query(**args))
        except BadQuery as exc:
            raise web.HTTPError(400, str(exc)) from None
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(page, ensure_ascii=False))


class ExportHandler(_RootOnly):
    async def get(self):
        since = self.get_argument("since", "") or None
        until = self.get_argument("until", "") or None
        self.set_header("Content-Type", "application/jsonl; charset=utf-8")
        stream = _ExportStream(self, asyncio.get_running_loop())
        try:
            await asyncio.get_running_loop().run_in_executor(
                self.reads, lambda: self.reader.export(stream, since=since, until=until))
        except BadQuery as exc:
            if not stream.started:  # (a bad since or until is found before anything is written)
                raise web.HTTPError(400, str(exc)) from None
            self._abort(f"the export stopped: {exc}")
            return
        except StreamClosedError:
            return  # the client went away
        except Exception:
            if not stream.started:
                raise
            self._abort("the export stopped")
            return
        self.write(stream.rest())
        self.finish()

    def _abort(self, why: str) -> None:
        """Close the connection mid-answer: the client sees an incomplete export, never a short one."""
        log.exception("%s; closing the connection of the export", why)
        self.request.connection.stream.close()


class _ExportStream:
    """What :meth:`AuditReader.export` writes to, in its reader thread: pieces of text handed to the
    event loop to send, the thread waiting until each is sent (a slow client slows the export, not
    the service)."""

    def __init__(self, handler: ExportHandler, loop: asyncio.AbstractEventLoop) -> None:
        self.handler, self.loop = handler, loop
        self.pending: list[str] = []
        self.size = 0
        self.started = False

    def write(self, text: str) -> int:
        self.pending.append(text)
        self.size += len(text)
        if self.size >= EXPORT_CHUNK:
            asyncio.run_coroutine_threadsafe(self._send(self.rest()), self.loop).result()
        return len(text)

    def rest(self) -> bytes:
        data = "".join(self.pending).encode()
        self.pending, self.size = [], 0
        return data

    async def _send(self, data: bytes) -> None:
        self.started = True
        self.handler.write(data)
        await self.handler.flush()


def _log_request(handler: web.RequestHandler) -> None:
    """Refusals and failures in the service's log; a query answered, only when debugging."""
    status = handler.get_status()
    level = logging.DEBUG if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    log.log(level, "query socket: %d %s %.1f ms", status, handler.request.path, 1000 * handler.request.request_time())


def make_app(reader: AuditReader, reads: ThreadPoolExecutor) -> web.Application:
    return web.Application([("/records", RecordsHandler), ("/export", ExportHandler)], reader=reader, reads=reads,
                           log_function=_log_request)


class QuerySocket:
    """The read API on its socket, with its pool of reader threads."""

    def __init__(self, reader: AuditReader, path: Path) -> None:
        self.path = path
        self.reads = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="audit-reader")
        self.server = HTTPServer(make_app(reader, self.reads))
        # The folder is root's alone (mode 0700), and so is the socket.
        self.server.add_socket(bind_unix_socket(str(path), mode=0o600))

    async def close(self) -> None:
        """Stop taking queries, close the connections (an export in flight stops), and wait for
        the reads to end."""
        self.server.stop()
        await self.server.close_all_connections()
        await asyncio.get_running_loop().run_in_executor(None, self.reads.shutdown)
        self.path.unlink(missing_ok=True)
