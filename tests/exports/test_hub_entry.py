"""The service entry handed to JupyterHub."""

from __future__ import annotations

import sys

from enclave import rbac
from enclave.exports.hub import exports_service
from enclave.settings import Settings


def test_service_entry_runs_isolated_from_the_hub_venv_on_loopback(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCLAVE_EXPORTS__MAX_FILE_MB", "8")
    monkeypatch.setenv("UNRELATED", "x")
    entry = exports_service(Settings(home=tmp_path, exports={"port": 8123}))
    assert entry["name"] == rbac.EXPORTS_SERVICE
    assert entry["url"] == "http://127.0.0.1:8123"
    # Isolated mode, from a folder only root can write: nothing a user writes is on its sys.path.
    assert entry["command"] == [sys.executable, "-I", "-m", "enclave.exports.app"]
    assert entry["cwd"] == "/"
    assert entry["environment"]["ENCLAVE_HOME"] == str(tmp_path)
    assert entry["environment"]["ENCLAVE_EXPORTS__MAX_FILE_MB"] == "8"
    assert "UNRELATED" not in entry["environment"]
    # Browser logins get the custom scopes the user holds, and nothing else of theirs.
    assert set(entry["oauth_client_allowed_scopes"]) == {
        s for s in rbac.CUSTOM_SCOPES if s.startswith("custom:exports:")}
