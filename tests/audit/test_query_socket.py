"""``enclave audit query`` and ``enclave audit export`` through the running audit service's query
socket (``run/audit/query.sock``): the same answers as the database, none of the service layer
imported, root alone let in, and appends never held up by a read.

(``test_cli`` runs the same commands with no service running: they start one for the while.)
"""

from __future__ import annotations

import http.client
import io
import json
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from enclave.audit import query_client
from enclave.audit.reader import MAX_PAGE
from enclave.cli import main
from enclave_testing import UNPRIVILEGED

from .conftest import AuditHome, execution

RECORDS = 6000  # a few megabytes of export: more than the socket's buffers hold
# What a query or an export must not import: the service layer, and the service's web framework.
SERVICE_SIDE = ("sqlalchemy", "pydantic", "pydantic_settings", "tornado", "alembic", "jupyterhub", "enclave.settings",
                "enclave.db", "enclave.audit.client", "enclave.audit.reader", "enclave.audit.models")


@pytest.fixture(scope="module")
def running():
    """A home whose audit service keeps running, with a log of RECORDS records. The home is in a
    folder everyone may pass through, so that only run/audit's own mode keeps others out."""
    base = Path(tempfile.mkdtemp(prefix="enclave-query-"))
    base.chmod(0o711)
    home = AuditHome(base / "home", checkpoint_every_records=1000)
    try:
        home.start()
        client = home.client()
        for first in range(0, RECORDS, 500):
            client.append_many([execution(i, user=("alice", "王芳")[i % 2],
                                          workspace=("demo", "人口普查")[i % 3 == 0]) for i in range(first, first + 500)])
        yield home
    finally:
        home.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def run_enclave(home: AuditHome, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``enclave ARGS`` in a fresh interpreter; what it printed, and the modules it imported."""
    modules = tmp_path / "modules.json"
    code = ("import json, sys\nfrom enclave.cli import main\n"
            f"try:\n    main({list(args)!r})\nexcept SystemExit as exc:\n    status = exc.code\n"
            f"with open({str(modules)!r}, 'w') as f:\n    json.dump(sorted(sys.modules), f)\nsys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code], env=home.env(), capture_output=True, timeout=120)
    return done, set(json.loads(modules.read_text()))


def service_side(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m in SERVICE_SIDE or m.split(".")[0] in SERVICE_SIDE)


def test_query_and_export_answer_as_the_database_does_importing_no_service_layer(running, tmp_path):
    assert query_client.PAGE == MAX_PAGE
    reader = running.reader()
    try:
        expected, after = [], None
        while True:
            page = reader.query(user="王芳", workspace="人口普查", after=after, limit=MAX_PAGE)
            expected += page["records"]
            if (after := page["next"]) is None:
                break
        exported = io.StringIO()
        count = reader.export(exported)
    finally:
        reader.close()
    assert len(expected) == RECORDS // 6 and count == RECORDS

    done, modules = run_enclave(running, tmp_path, "audit", "query", "--user", "王芳", "--workspace", "人口普查",
                                "--format", "jsonl")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode("utf-8").splitlines() == [json.dumps(r, ensure_ascii=False) for r in expected]
    assert service_side(modules) == [] and "enclave.audit.query_client" in modules

    done, modules = run_enclave(running, tmp_path, "audit", "export", "-o", str(tmp_path / "audit.jsonl"))
    assert done.returncode == 0 and f"exported {RECORDS} record(s)" in done.stderr.decode()
    assert (tmp_path / "audit.jsonl").read_text(encoding="utf-8") == exported.getvalue()
    assert service_side(modules) == []

    done, _ = run_enclave(running, tmp_path, "audit", "query", "--workspace", "人口普查", "--limit", "1500",
                          "--format", "csv")
    assert done.returncode == 0 and len(done.stdout.decode("utf-8").splitlines()) == 1 + 1500  # over two pages


def test_a_refused_query_names_the_problem(running):
    runner = CliRunner()
    for args, problem in (((("--action", "export.sign"), "no action matches 'export.sign'")),
                          (("--since", "上周一"), "'上周一' is not an ISO 8601 date or time")):
        result = runner.invoke(main, ["audit", "query", *args], env=running.env())
        assert result.exit_code == 1 and problem in result.stderr and result.stdout == "", args
    result = runner.invoke(main, ["audit", "export", "--until", "明天"], env=running.env())
    assert result.exit_code == 1 and "'明天' is not an ISO 8601 date or time" in result.stderr
    with query_client.AuditQueries(running.home) as queries:
        with pytest.raises(query_client.QueryError, match=f"limit must be between 1 and {MAX_PAGE}"):
            queries.records(limit=MAX_PAGE + 1)
        assert queries.records(user="王芳", limit=2)["next"] == 4, "the connection serves on after a refusal"


NOBODY_QUERIES = """
from enclave.audit.query_client import AuditQueries, QueryError
try:
    AuditQueries({home!r}).records(limit=1)
    print("answered")
except QueryError as exc:
    print(exc)
"""


def test_only_root_may_query(running):
    folder = query_client.socket_path(running.home).parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == 0
    assert stat.S_IMODE(query_client.socket_path(running.home).stat().st_mode) == 0o600
    as_nobody = ["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups",
                 sys.executable, "-c", NOBODY_QUERIES.format(home=str(running.home))]

    def attempt() -> str:
        done = subprocess.run(as_nobody, capture_output=True, text=True, timeout=60, cwd="/")
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert attempt().startswith("only root may query the audit log"), "the folder keeps others out"
    # Should the folder and the socket ever be loosened, the service still refuses by the caller's uid.
    loosened = [(path, stat.S_IMODE(path.stat().st_mode))
                for path in (running.home, folder.parent, folder, query_client.socket_path(running.home))]
    try:
        for path, _ in loosened:
            path.chmod(0o777 if path.is_socket() else 0o711)
        assert attempt() == f"only root may query the audit log (uid {UNPRIVILEGED} is not)"
    finally:
        for path, mode in loosened:
            path.chmod(mode)


def test_an_export_held_open_holds_no_append_up(running):
    """A client that starts an export and does not read it leaves its reader thread waiting, and
    that alone: appends commit, other queries answer, and the export is the log as it began."""
    held = http.client.HTTPConnection("localhost")
    held.sock = _connected(running)
    held.request("GET", "/export")
    response = held.getresponse()
    header = json.loads(response.readline())["audit_export"]
    assert header["last_seq"] == RECORDS

    client = running.client()
    seqs = client.append_many([execution(i, user="李雷") for i in range(100)])  # acknowledged: committed
    assert seqs == list(range(RECORDS + 1, RECORDS + 101))
    with query_client.AuditQueries(running.home) as queries:
        assert [r["seq"] for r in queries.records(user="李雷", limit=1000)["records"]] == seqs

    rest = response.read().decode("utf-8").splitlines()
    records = [line for line in rest if not line.startswith('{"checkpoint"')]
    assert len(records) == RECORDS and json.loads(records[-1])["seq"] == RECORDS
    held.close()

    # Stopping the service while an export is held open: it stops, and the export says it is incomplete.
    out = _StopsTheService(running)
    with query_client.AuditQueries(running.home) as queries:
        with pytest.raises(query_client.QueryError, match="the export stopped before its end"):
            queries.export(out)
    assert out.stopped_with == 0 and 0 < len(out.getvalue().splitlines()) < RECORDS
    running.start()  # for the tests after this one


class _StopsTheService(io.BytesIO):
    """An export's destination that stops the audit service (SIGTERM) at the first piece it gets."""

    def __init__(self, home: AuditHome) -> None:
        super().__init__()
        self.home, self.stopped_with = home, None

    def write(self, data: bytes) -> int:
        if self.stopped_with is None:
            self.stopped_with = self.home.stop()
        return super().write(data)


def _connected(home: AuditHome) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(query_client.socket_path(home.home)))
    return sock
