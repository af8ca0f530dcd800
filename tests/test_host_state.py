"""The hub side's state on the host: private to root, at any path, and nothing left behind by a
sandbox's stop; and ``enclave doctor``, which checks all of it on an installation.

Real hubs and sandboxes: each hub here has its own ``ENCLAVE_HOME``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PASSWORD, seed
from enclave_testing import UNPRIVILEGED, Hub, processes_of_uid, wait_for

# What sandboxes reach (by bind mounts): these keep the modes their owners gave them.
SANDBOX_REACHABLE = ("homes/*/*", "lab-state/*/*", "releases/*", "views/*/*", "run/hub", "run/exports",
                     "run/sandboxes/*/*/server", "run/sandboxes/*/*/kernels", "run/sandboxes/*/*/audit",
                     "run/sandboxes/*/*/files", "run/sandboxes/*/*/workspace.json")


@pytest.fixture(scope="module")
def hub(hub_factory) -> Hub:
    hub = hub_factory("host-state", ENCLAVE_SANDBOX__IDLE_TIMEOUT="0")
    seed(hub)
    hub.start()
    return hub


def _open_to_others(home: Path) -> list[str]:
    """Paths under ``home``, other than what sandboxes reach, that grant anything to group or others."""
    reachable = {p for pattern in SANDBOX_REACHABLE for p in home.glob(pattern)}
    found = []
    for root, dirs, files in os.walk(home):
        dirs[:] = [d for d in dirs if Path(root, d) not in reachable]
        for name in [*dirs, *files]:
            path = Path(root, name)
            mode = path.lstat().st_mode
            if path not in reachable and not stat.S_ISLNK(mode) and mode & 0o077:
                found.append(f"{path.relative_to(home)} {stat.S_IMODE(mode):o}")
    return found


def _readable_by_a_local_user(paths: list[Path]) -> list[str]:
    """Which of ``paths`` an unprivileged local user (nobody) can open."""
    probe = ("import json, sys\nok = []\nfor p in json.loads(sys.argv[1]):\n    try:\n        open(p, 'rb').close()\n"
             "        ok.append(p)\n    except OSError:\n        pass\nprint(json.dumps(ok))")
    out = subprocess.run(["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups",
                          sys.executable, "-I", "-c", probe, json.dumps([str(p) for p in paths])],
                         capture_output=True, text=True, check=True, cwd="/").stdout
    return json.loads(out)


def test_state_is_private_to_root_and_sandboxes_still_reach_their_part(hub):
    alice = hub.login("alice", PASSWORD)
    assert alice.start("alpha").status_code == 200
    kernel = alice.kernel("alpha")
    # Releases, the home and the sockets are bound from inside the 0700 state directory.
    assert kernel.run("print(open('/data/households@1/table.csv').read().splitlines()[0])") == ("district,size\n", None)
    assert kernel.run("open('notes.txt', 'w').write('kept'); print(open('notes.txt').read())") == ("kept\n", None)
    kernel.close()
    assert alice.server_api("alpha", "GET", "/status").status_code == 200

    home = hub.home
    sensitive = [home / "enclave.sqlite", home / "hub" / "jupyterhub.sqlite", home / "exports" / "exports.sqlite",
                 home / "audit" / "audit.sqlite", *(home / "secrets").iterdir(),
                 *(home / "run" / "sandboxes" / "alice" / "alpha").glob("*.log")]
    assert all(p.exists() for p in sensitive)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert {str(p): f"{stat.S_IMODE(p.stat().st_mode):o}" for p in sensitive if p.stat().st_mode & 0o077} == {}
    assert _open_to_others(home) == []
    assert _readable_by_a_local_user(sensitive) == []


def test_loosened_state_is_tightened_at_start_and_logged(hub):
    hub.stop()
    loosened = [hub.home, hub.home / "enclave.sqlite", hub.home / "secrets"]
    for path in loosened:
        path.chmod(0o755 if path.is_dir() else 0o644)
    log_size = (hub.home / "hub.log").stat().st_size
    hub.start()
    assert [f"{stat.S_IMODE(p.stat().st_mode):o}" for p in loosened] == ["700", "600", "700"]
    log = (hub.home / "hub.log").read_text(errors="replace")[log_size:]
    assert all(str(p) in log for p in loosened), log


def _cgroup_dirs(name: str) -> list[Path]:
    """A sandbox's cgroup directories, v2 or v1 (enclave.sandbox.limits)."""
    root = Path("/sys/fs/cgroup")
    return [d for d in [root / "enclave" / name, *(root / c / "enclave" / name for c in ("memory", "pids", "cpu"))]
            if d.is_dir()]


def test_stopping_a_sandbox_removes_its_cgroup(hub):
    bob = hub.login("bob", PASSWORD)
    assert bob.start("alpha").status_code == 200
    run = hub.home / "run" / "sandboxes" / "bob" / "alpha"
    server = json.loads((run / "spec.json").read_text())["server"]
    uid = server["identity"]["uid"]
    cgroups = _cgroup_dirs(f"{server['name']}-{uid}")
    assert cgroups, "the sandbox runs in a cgroup"
    kernel = bob.kernel("alpha")
    kernel.run("print('busy')")
    kernel.close()
    bob.stop("alpha")
    wait_for(lambda: not processes_of_uid(uid), 20, "bob's sandbox processes to exit")
    assert [d for d in cgroups if d.exists()] == []
    assert "could not remove cgroup" not in (run / "supervisor.log").read_text()


def _doctor(hub: Hub) -> tuple[int, dict[str, str]]:
    """``enclave doctor``'s exit code and its lines, by check name."""
    done = hub.enclave("doctor")
    lines = {}
    for line in done.stdout.splitlines():
        verdict, rest = line.split(None, 1)
        lines[rest.split(":", 1)[0]] = line
    return done.returncode, lines


def test_doctor_checks_the_installation_and_fails_naming_what_to_do(hub):
    code, lines = _doctor(hub)
    expected = {"state modes", "state owners", "hub socket", "audit socket", "exports intake socket", "cgroups",
                "leftover cgroups", "disk", "python", "jupyterhub", "bubblewrap", "configurable-http-proxy"}
    assert expected <= set(lines), lines
    for check in ("state modes", "state owners", "hub socket", "audit socket", "exports intake socket", "python",
                  "jupyterhub", "bubblewrap", "configurable-http-proxy"):
        assert lines[check].startswith("OK "), lines[check]
    assert code == (1 if any(line.startswith("FAIL") for line in lines.values()) else 0)

    database = hub.home / "enclave.sqlite"
    database.chmod(0o644)
    try:
        code, lines = _doctor(hub)
    finally:
        database.chmod(0o600)
    assert code == 1
    assert lines["state modes"].startswith("FAIL ") and str(database) in lines["state modes"]
    assert "chmod" in lines["state modes"]


def test_state_directory_may_be_any_path(tmp_path_factory):
    """Capitals, spaces and non-ASCII in ENCLAVE_HOME: the server's socket path survives JupyterHub's
    URL handling and the proxy reaches the server."""
    home = tmp_path_factory.mktemp("any-path") / "Enclave Home 数据"
    home.mkdir()
    odd = Hub(home=home, env_overrides={"ENCLAVE_SANDBOX__IDLE_TIMEOUT": "0"})
    seed(odd)
    odd.start()
    try:
        erin = odd.login("erin", PASSWORD)
        assert erin.start("beta").status_code == 200
        assert erin.server_api("beta", "GET", "/status").status_code == 200
        kernel = erin.kernel("beta")
        assert kernel.run("print(open('/data/secret@1/table.csv').read().splitlines()[0])") == ("id,value\n", None)
        kernel.close()
    finally:
        odd.stop()
        odd.stop_all_sandboxes()
