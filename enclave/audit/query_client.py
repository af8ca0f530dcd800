"""``enclave audit query`` and ``enclave audit export``'s way into the audit log: the audit service's
read API, on its root-only unix socket ``$ENCLAVE_HOME/run/audit/query.sock``.

The commands ask the running service (:mod:`.query_socket`) instead of opening the database
themselves, so that they start within issue #13's budget (``benchmarks/cli.py``): this module uses
the standard library only. Importing it imports no SQLAlchemy, pydantic or tornado, and it reads no
settings: the socket's home is found as :func:`enclave.provisioning.client.enclave_home` finds it.

    from enclave.audit.query_client import AuditQueries, QueryError

    with AuditQueries() as log:                          # ServiceNotRunning if nothing serves it
        page = log.records(workspace="人口普查", action="export.*", limit=1000)
        while page["next"] is not None:                  # {"records": [...], "next": seq or None}
            page = log.records(workspace="人口普查", action="export.*", after=page["next"])
        with open("audit.jsonl", "wb") as out:
            count = log.export(out, since="2026-01-01")  # the records written

The protocol is HTTP/1.1 on the socket (one kept-alive connection for a command's pages):

    GET /records?user=&workspace=&action=&since=&until=&after=&limit=&order=asc|desc
        → 200 {"records": [...], "next": 1234 | null}    the page of GET /services/audit/api/records
    GET /export?since=&until=
        → 200 application/jsonl, streamed               the export of :meth:`AuditReader.export`
    → 4xx {"error": "..."}                               a bad query, or a caller that is not root

Only root can connect: the socket's folder is mode 0700, owned by root, and the service checks
the caller's uid (``SO_PEERCRED``) as well.
"""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlencode

from ..provisioning.client import UnixHTTPConnection, enclave_home

# Records in one page at most: enclave.audit.reader.MAX_PAGE.
PAGE = 1000
DEFAULT_TIMEOUT = 120.0
_COPY = 256 * 1024


class QueryError(Exception):
    """The service refused the query (the message is its error), or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServiceNotRunning(QueryError):
    """Nothing serves the socket: the query was not sent."""


def socket_path(home: str | os.PathLike | None = None) -> Path:
    """The audit service's query socket under ``home`` (default: the ``enclave`` command's home)."""
    home = Path(home).expanduser().resolve() if home is not None else enclave_home()
    return home / "run" / "audit" / "query.sock"


class AuditQueries:
    """Queries to the audit service over one connection; a context manager that closes it."""

    def __init__(self, home: str | os.PathLike | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = socket_path(home)
        self._connection = UnixHTTPConnection(self.path, timeout)
        try:
            self._connection.connect()
        except (FileNotFoundError, ConnectionRefusedError):  # no socket, or one nobody serves
            raise ServiceNotRunning(f"the audit service is not running (no socket {self.path})") from None
        except PermissionError:
            raise QueryError(f"only root may query the audit log ({self.path}): run with sudo") from None
        except OSError as exc:
            raise QueryError(f"the audit service did not answer at {self.path}: {exc.strerror or exc}") from None

    def __enter__(self) -> AuditQueries:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._connection.close()

    def records(self, user: str | None = None, workspace: str | None = None, action: str | None = None,
                since: str | None = None, until: str | None = None, after: int | None = None,
                limit: int = PAGE, newest_first: bool = False) -> dict:
        """One page of the records matching every filter given, as :meth:`AuditReader.query` answers."""
        query = {"user": user, "workspace": workspace, "action": action, "since": since, "until": until,
                 "after": after, "limit": limit, "order": "desc" if newest_first else "asc"}
        response = self._get("/records", query)
        return json.loads(response.read())

    def export(self, out: BinaryIO, since: str | None = None, until: str | None = None) -> int:
        """Write the export of the log (or of [since, until)) to ``out`` as it arrives; return the
        records in it. Raises :class:`QueryError` if the export stops before its end."""
        response = self._get("/export", {"since": since, "until": until})
        records = 0
        partial = b""
        try:
            while chunk := response.read1(_COPY):
                out.write(chunk)
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                records += sum(1 for line in lines if not line.startswith((b'{"audit_export"', b'{"checkpoint"')))
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise QueryError(f"the export stopped before its end ({exc or type(exc).__name__}):"
                             " what was written is incomplete") from None
        return records

    def _get(self, api_path: str, query: dict) -> http.client.HTTPResponse:
        target = api_path + "?" + urlencode({k: v for k, v in query.items() if v is not None})
        try:
            self._connection.request("GET", target, headers={"Accept": "application/json"})
            response = self._connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise QueryError(f"the audit service did not answer at {self.path}: {exc or type(exc).__name__}") from None
        if response.status >= 400:
            raw = response.read()
            try:
                error = json.loads(raw).get("error")
            except (ValueError, AttributeError):
                error = None
            raise QueryError(error or f"the audit service answered {response.status} {response.reason}",
                             response.status)
        return response
