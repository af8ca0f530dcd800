"""The hub around the sandboxes: accounts, membership, life cycle, and bad input."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import requests
from conftest import PASSWORD, seed
from enclave_testing import ENCLAVE, processes_of_uid, supervisor_pids, wait_for


def test_login_start_and_run_code(alice, alice_kernel):
    assert alice_kernel.run("print(6 * 7)") == ("42\n", None)
    lab = alice.http.get(alice.server_url("alpha") + "/lab")
    assert lab.status_code == 200 and "JupyterLab" in lab.text


def test_wrong_password_is_refused_and_repeated_failures_throttle_the_client(enclave):
    for _ in range(5):
        with pytest.raises(AssertionError):
            enclave.login("carol", "not-the-password")
    # Throttled now: even the right password from this client is refused until its wait ends (or
    # an admin sets a new password). Other clients: tests/test_logins.py.
    with pytest.raises(AssertionError):
        enclave.login("carol", PASSWORD)
    r = enclave.enclave("user", "set-password", "carol", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    enclave.login("carol", PASSWORD)


def test_there_is_no_sign_up(enclave):
    assert requests.get(enclave.url + "/hub/signup").status_code == 404


def test_roles_are_jupyterhub_groups_and_users_cannot_share(alice):
    me = alice.hub_api("GET", "/user").json()
    assert me["groups"] == ["operator"]
    assert not {"shares!user", "users:shares!user", "tokens!user"} & set(me["scopes"])
    r = alice.hub_api("POST", "/users/alice/tokens", json={"note": "try"})
    assert r.status_code == 403


def test_non_member_reviewer_and_other_user_are_refused(enclave, alice):
    erin = enclave.login("erin", PASSWORD)
    r = erin.http.get(f"{enclave.url}/hub/spawn/erin/alpha")
    assert r.status_code == 403 and "not an operator of workspace" in r.text
    carol = enclave.login("carol", PASSWORD)
    r = carol.http.get(f"{enclave.url}/hub/spawn/carol/alpha")
    assert r.status_code == 403
    # Through the REST API too (the spawner refuses what the page does not see).
    r = erin.hub_api("POST", "/users/erin/servers/alpha")
    assert r.status_code >= 400
    assert "alpha" not in erin.hub_api("GET", "/users/erin").json().get("servers", {})
    # Someone else's server: JupyterHub's own RBAC.
    r = erin.http.get(f"{enclave.url}/hub/spawn/alice/alpha")
    assert r.status_code in (403, 404)


def test_unknown_workspace_is_a_clear_404(alice, enclave):
    r = alice.http.get(f"{enclave.url}/hub/spawn/alice/no-such-ws")
    assert r.status_code == 404
    assert "There is no workspace named" in r.text and "no-such-ws" in r.text


def test_default_server_is_not_offered(alice, enclave):
    r = alice.http.get(f"{enclave.url}/hub/spawn/alice")
    assert r.status_code >= 400
    home = alice.http.get(f"{enclave.url}/hub/home").text
    assert 'id="workspaces"' in home and "alpha" in home and "beta" not in home


def test_navigation_offers_no_token_page_to_operators(alice, enclave):
    """Operators may not create API tokens (enclave/rbac.py), so the page is not offered."""
    home = alice.http.get(f"{enclave.url}/hub/home").text
    assert 'href="/hub/home"' in home and 'href="/hub/token"' not in home
    # The services menu is kept, with each service on its own origin.
    assert f'href="{enclave.service_url("exports")}/"' in home


def test_only_admins_reach_the_admin_page(alice, enclave):
    assert alice.http.get(f"{enclave.url}/hub/admin").status_code == 403
    admin = enclave.login("root-admin", PASSWORD)
    page = admin.http.get(f"{enclave.url}/hub/admin")
    assert page.status_code == 200 and 'id="enclave-admin"' in page.text


def test_spawn_failure_shows_its_reason(enclave):
    hub = enclave
    # A release is attached, then disappears from the store: the spawn must say which.
    release = hub.home / "releases" / "secret@1"
    moved = release.with_name("secret-moved")
    release.rename(moved)
    try:
        erin = hub.login("erin", PASSWORD)
        r = erin.http.get(f"{hub.url}/hub/spawn/erin/beta")
        page = r.text
        events = erin.http.get(f"{hub.url}/hub/api/users/erin/servers/beta/progress", timeout=30).text
        messages = [json.loads(line[5:]) for line in events.splitlines() if line.startswith("data:")]
        reason = " ".join(m.get("message", "") for m in messages) + page
        assert "not in the release store" in reason and "secret@1" in reason
    finally:
        moved.rename(release)


@pytest.mark.backends("bubblewrap", "docker")  # on docker, the supervisors run in the launcher
def test_restarting_the_hub_keeps_running_servers_reachable(enclave, alice, alice_kernel):
    alice_kernel.run("x = 'still here'")
    before = supervisor_pids(enclave.home)
    enclave.restart()
    assert supervisor_pids(enclave.home) == before
    r = alice.server_api("alpha", "GET", "/status")
    assert r.status_code == 200
    assert alice_kernel.run("print(x)") == ("still here\n", None)


def test_stopping_removes_the_sandbox(enclave):
    bob = enclave.login("bob", PASSWORD)
    assert bob.start("alpha").status_code == 200
    spec = enclave.home / "run" / "sandboxes" / "bob" / "alpha" / "spec.json"
    uid = json.loads(spec.read_text())["server"]["identity"]["uid"]
    assert processes_of_uid(uid)
    k = bob.kernel("alpha")
    k.run("print('audited cell')")
    k.close()
    bob.stop("alpha")
    wait_for(lambda: not processes_of_uid(uid), 20, "bob's sandbox processes to exit")
    run = spec.parent
    assert not (run / "server").exists() and not (run / "kernels").exists()
    assert bob.http.get(bob.server_url("alpha") + "/api/status").status_code != 200
    # What the sandbox did is in the hub's audit log, with its start and stop.
    executed = [r["detail"]["code"] for r in enclave.audit_records(user="bob", action="kernel.execute")]
    assert "print('audited cell')" in executed
    assert [r["action"] for r in enclave.audit_records(user="bob", action="sandbox.*")][-2:] == ["sandbox.start",
                                                                                             "sandbox.stop"]


def test_jupyterlab_settings_outlive_the_sandbox(enclave):
    """Lab settings (theme, editor…) are kept hub-side per (user, workspace), out of the kernel's reach."""
    bob = enclave.login("bob", PASSWORD)
    setting = "/lab/api/settings/@jupyterlab/apputils-extension:themes"

    def lab_api(method, **kw):
        xsrf = bob.http.cookies.get("_xsrf", path="/user/bob/alpha/") or ""
        return bob.http.request(method, bob.server_url("alpha") + setting, headers={"X-XSRFToken": xsrf}, **kw)

    assert bob.start("alpha").status_code == 200
    assert lab_api("PUT", json={"raw": '{"theme": "JupyterLab Dark"}'}).status_code == 204
    k = bob.kernel("alpha")
    assert k.value("import os, json\nprint(json.dumps(os.path.exists('/run/enclave/server/lab')))") is False
    k.close()
    bob.stop("alpha")
    assert bob.start("alpha").status_code == 200
    try:
        assert '"JupyterLab Dark"' in lab_api("GET").json()["raw"]
    finally:
        bob.stop("alpha")


def test_idle_sandboxes_are_culled(hub_factory):
    hub = hub_factory("culling", ENCLAVE_SANDBOX__IDLE_TIMEOUT="6", ENCLAVE_SANDBOX__CULL_EVERY="2")
    seed(hub)
    hub.start()
    erin = hub.login("erin", PASSWORD)
    assert erin.start("beta").status_code == 200
    spec = hub.home / "run" / "sandboxes" / "erin" / "beta" / "spec.json"
    uid = json.loads(spec.read_text())["server"]["identity"]["uid"]
    wait_for(lambda: not supervisor_pids(hub.home), 60, "the idle culler to stop the sandbox")
    wait_for(lambda: not processes_of_uid(uid), 20, "culled sandbox processes to exit")
    wait_for(lambda: "beta" not in erin.hub_api("GET", "/users/erin").json().get("servers", {}), 30,
             "the hub to record the culled server as stopped")
    # In the audit log as a cull, by the culler, of the sandbox that was started.
    started = hub.audit_records(action="sandbox.start", workspace="beta")[-1]
    culled = hub.audit_records(action="sandbox.cull", workspace="beta")[-1]
    assert culled["actor"] == "idle-culler" and culled["sandbox"] == started["sandbox"]
    assert culled["detail"]["idle_seconds"] >= 6


@pytest.mark.parametrize("toml, key", [
    ("[sandbox.limits]\nmemory_mb = 'lots'\n", "sandbox.limits.memory_mb"),
    ("[hub]\nprot = 8000\n", "hub.prot"),
    ("[hub]\nauthenticator = 'pam'\n", "hub.authenticator"),
])
def test_invalid_settings_fail_at_start_naming_the_key(tmp_path, toml, key):
    (tmp_path / "enclave.toml").write_text(toml)
    r = subprocess.run([str(ENCLAVE), "hub"], env={"ENCLAVE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert key in r.stderr, r.stderr
    assert not (tmp_path / "hub").exists()


def test_settings_come_from_the_environment_over_the_file(tmp_path, monkeypatch):
    from enclave.settings import load_settings

    (tmp_path / "enclave.toml").write_text("[hub]\nport = 9000\n[sandbox.limits]\nmemory_mb = 1024\n")
    monkeypatch.delenv("ENCLAVE_CONFIG", raising=False)
    monkeypatch.setenv("ENCLAVE_HOME", str(tmp_path))
    monkeypatch.setenv("ENCLAVE_HUB__PORT", "9100")
    s = load_settings()
    assert s.hub.port == 9100 and s.sandbox.limits.memory_mb == 1024
    assert s.home == tmp_path and s.enclave_db_url.endswith(str(tmp_path / "enclave.sqlite"))


def test_sandbox_limits_are_applied(alice_kernel, enclave):
    limits = alice_kernel.value(
        "import resource, json\n"
        "print(json.dumps([resource.getrlimit(resource.RLIMIT_NPROC)[0], resource.getrlimit(resource.RLIMIT_FSIZE)[0]]))")
    assert limits == [256, 1024 * 2**20]
    # A fork bomb stops at the process limit and the sandbox survives it.
    out, err = alice_kernel.run(
        "import subprocess\n"
        "procs = []\n"
        "try:\n"
        "    for _ in range(400): procs.append(subprocess.Popen(['sleep', '30']))\n"
        "except (BlockingIOError, OSError) as e: print('stopped at', len(procs))\n"
        "for p in procs: p.kill(); p.wait()")
    assert err is None and out.startswith("stopped at"), out
    assert int(out.split()[-1]) < 256
    time.sleep(0.5)
    assert alice_kernel.run("print('alive')") == ("alive\n", None)


def test_workspace_limits_apply_to_its_sandboxes(enclave):
    assert enclave.enclave("workspace", "set-limits", "beta", "pids=300", "memory_mb=400").returncode == 0
    r = enclave.enclave("workspace", "set-limits", "beta", "pids=lots")
    assert r.returncode != 0 and "pids" in r.stderr
    r = enclave.enclave("workspace", "set-limits", "beta", "colour=red")
    assert r.returncode != 0 and "colour" in r.stderr
    erin = enclave.login("erin", PASSWORD)
    assert erin.start("beta").status_code == 200
    k = erin.kernel("beta")
    try:
        assert k.value("import resource; print(resource.getrlimit(resource.RLIMIT_NPROC)[0])") == 300
        # Memory beyond the sandbox's limit: the allocating process is killed, the sandbox lives.
        out, err = k.run(
            "import subprocess, sys\n"
            "r = subprocess.run([sys.executable, '-c', 'b = bytearray(700 * 2**20)\\n"
            "for i in range(0, len(b), 4096): b[i] = 1'])\n"
            "print(r.returncode)")
        # -9: the cgroup's OOM killer; 1: MemoryError under RLIMIT_AS where no cgroup could be made.
        assert err is None and out.strip() in ("-9", "1"), out
        assert k.run("print('alive')") == ("alive\n", None)
    finally:
        k.close()
        erin.stop("beta")
        enclave.enclave("workspace", "set-limits", "beta", "pids=256", "memory_mb=2048")
