"""The real audit service, on real sockets, over real SQLite and a real PostgreSQL 15.

`audit` gives each test a fresh Enclave home and a way to start, stop and kill the audit service
(``python -m enclave.audit.service``) on it. Tests that take the `backend` fixture run twice: on
SQLite (the default) and on PostgreSQL, a database of their own in the session's throwaway cluster
(``postgres``, tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enclave.audit import checkpoint_copy_path, socket_path
from enclave.audit.checkpoints import key_paths, load_public_key
from enclave.audit.client import AuditClient
from enclave.audit.reader import AuditReader
from enclave.audit.verify import verify_database
from enclave.settings import Settings
from enclave_testing import free_port


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    """The database URL for the test's audit log: "" (SQLite in the home) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("postgres").new_database("audit")


class AuditHome:
    """An Enclave home with an audit log, and the audit service that writes it."""

    def __init__(self, home: Path, db_url: str = "", **audit_settings) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.audit_settings = {"port": free_port(), **audit_settings}
        if db_url:
            self.audit_settings["db_url"] = db_url
        self.settings = Settings(home=home, audit=self.audit_settings)
        self.socket = socket_path(self.settings)
        self.copy_path = checkpoint_copy_path(self.settings)
        self.log = home / "audit-service.log"
        self.proc: subprocess.Popen | None = None
        self._clients: list[AuditClient] = []

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}
        env.update(ENCLAVE_HOME=str(self.home), ENCLAVE_CONFIG=str(self.home / "enclave.toml"))
        env.update({f"ENCLAVE_AUDIT__{k.upper()}": str(v) for k, v in self.audit_settings.items()})
        return env

    def start(self, wait: bool = True) -> subprocess.Popen:
        assert self.proc is None or self.proc.poll() is not None, "the service is already running"
        with self.log.open("a") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "enclave.audit.service"], env=self.env(),
                                         stdout=out, stderr=subprocess.STDOUT)
        if wait:
            self.wait_until_ready()
        return self.proc

    def wait_until_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the audit service exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.socket))
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the audit service did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        """SIGTERM, as JupyterHub stops its services; the service seals a last checkpoint."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL
        self.proc.wait(timeout=30)

    def client(self, **kwargs) -> AuditClient:
        client = AuditClient(self.settings, **kwargs)
        self._clients.append(client)
        return client

    def reader(self) -> AuditReader:
        return AuditReader(self.settings)

    def public_key(self):
        return load_public_key(key_paths(self.settings)[1])

    def verify(self):
        reader = self.reader()
        try:
            return verify_database(reader, self.public_key())
        finally:
            reader.close()

    def all_records(self) -> list[dict]:
        reader = self.reader()
        try:
            records, after = [], None
            while True:
                page = reader.query(after=after, limit=1000)
                records += page["records"]
                after = page["next"]
                if after is None:
                    return records
        finally:
            reader.close()

    def cleanup(self) -> None:
        for client in self._clients:
            client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def audit_home(tmp_path, backend):
    """A home whose audit log lives in the test's backend (SQLite or PostgreSQL)."""
    home = AuditHome(tmp_path / "home", backend)
    yield home
    home.cleanup()


@pytest.fixture
def sqlite_home(tmp_path):
    """A home with the default SQLite audit log, for tests that are not about the database."""
    home = AuditHome(tmp_path / "home")
    yield home
    home.cleanup()


def execution(i: int, user: str = "alice", workspace: str = "demo") -> dict:
    """The keyword arguments of an append of one execution record."""
    return {"source": "sandbox", "actor": user, "action": "kernel.execute", "workspace": workspace,
            "sandbox": f"{user}/{workspace}",
            "detail": {"kernel": "k1", "code": f"x = {i}", "code_sha256": f"{i:064x}"}}
