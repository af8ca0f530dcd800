"""The sandbox policy as data, the two upstream shims, and the provisioning CLI."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import unquote, urlparse

import pytest
from enclave_testing import ENCLAVE, REPO, beside_a_hub

from enclave.proxy import add_unix_port, strip_unix_port
from enclave.sandbox.bubblewrap import bwrap_argv
from enclave.sandbox.policy import (
    EXPORTS_SOCKET_DIR,
    HUB_SOCKET_DIR,
    LAB_STATE,
    SERVER_RUN,
    Identity,
    Limits,
    SandboxLayout,
    kernel_policy,
    server_policy,
    terminal_policy,
)
from enclave.spawner import unix_socket_url

KERNEL_ID = "6451b036-d28f-4af7-8cbe-de2a1c2b5da1"


@pytest.fixture
def layout(tmp_path):
    return SandboxLayout(
        env=REPO / ".venv-sandbox", home=tmp_path / "home", home_image=tmp_path / "home.ext4", run=tmp_path / "run",
        hub_socket_dir=tmp_path / "hub", exports_socket_dir=tmp_path / "exports",
        data=((tmp_path / "releases" / "r@1" / "data", "r@1"),), lab_state=tmp_path / "lab-state",
    )


@pytest.fixture
def server(layout):
    return server_policy(layout, Identity(200_001, 200_001, "alice", "/home/alice"),
                         Limits(1024, 128, 1.0, 64, disk_mb=128, tmp_mb=32), "alice-ws",
                         {"JUPYTERHUB_API_TOKEN": "secret-token", "JUPYTERHUB_USER": "alice"})


def test_kernel_policy_has_none_of_the_servers_sockets_runtime_or_token(server, layout):
    kernel = kernel_policy(server, layout, KERNEL_ID, {})
    targets = {m.target for m in kernel.mounts}
    for private in (SERVER_RUN, LAB_STATE, HUB_SOCKET_DIR, EXPORTS_SOCKET_DIR, "/run/enclave/workspace.json"):
        assert private in {m.target for m in server.mounts}
        assert private not in targets
    assert f"/run/enclave/kernels/{KERNEL_ID}" in targets and "/run/enclave/kernels" not in targets
    assert not any(k.startswith("JUPYTERHUB") or k.startswith("JPY") for k in kernel.env)
    assert "secret-token" not in repr(kernel)
    assert kernel.identity == server.identity and kernel.limits == server.limits


def test_terminal_policy_is_a_kernel_s_view_without_any_runtime_dir(server, layout):
    terminal = terminal_policy(server, layout, KERNEL_ID, {"ENCLAVE_ACRO_THRESHOLDS": "{}"})
    kernel = kernel_policy(server, layout, KERNEL_ID, {})
    assert not any(m.target.startswith("/run/") for m in terminal.mounts)
    assert {m for m in kernel.mounts if not m.target.startswith("/run/")} == set(terminal.mounts)
    assert not any(k.startswith("JUPYTERHUB") or k.startswith("JPY") for k in terminal.env)
    assert "secret-token" not in repr(terminal) and terminal.env["ENCLAVE_ACRO_THRESHOLDS"] == "{}"
    assert terminal.identity == server.identity and terminal.limits == server.limits


def test_only_the_kernel_sees_data_and_only_read_only(server, layout):
    kernel = kernel_policy(server, layout, KERNEL_ID, {})
    assert not any(m.target.startswith("/data") for m in server.mounts)
    data = [m for m in kernel.mounts if m.target.startswith("/data/")]
    assert [(m.target, m.kind) for m in data] == [("/data/r@1", "ro")]


def test_writable_mounts_are_only_home_tmp_and_own_runtime(server, layout):
    kernel = kernel_policy(server, layout, KERNEL_ID, {})
    assert {m.target for m in kernel.mounts if m.kind in ("rw", "tmpfs")} == {
        "/home/alice", "/tmp", f"/run/enclave/kernels/{KERNEL_ID}"}
    assert {m.target for m in server.mounts if m.kind in ("rw", "tmpfs")} == {
        "/home/alice", "/tmp", SERVER_RUN, LAB_STATE, "/run/enclave/kernels"}


def test_bwrap_command_has_no_network_and_drops_to_the_sandbox_uid(server, tmp_path):
    argv = bwrap_argv(server, "bwrap", tmp_path / "files", info_fd=9)
    assert "--unshare-net" in argv and "--unshare-pid" in argv and "--share-net" not in argv
    tail = argv[argv.index("--") + 1:]
    assert tail[:4] == ["/usr/bin/setpriv", "--reuid=200001", "--regid=200001", "--clear-groups"]
    assert "--no-new-privs" in tail and "--bounding-set=-all" in tail
    # The hub token travels in the environment, never on the (world-readable) command line.
    assert not any("secret-token" in a for a in argv)


def test_unix_socket_urls_round_trip_through_jupyterhubs_parsing():
    path = "/srv/Enclave State/run/jupyter.sock"
    url = unix_socket_url(path)
    # JupyterHub keeps a server's host as urlparse(url).hostname.
    assert unquote(urlparse(url + "/user/alice/ws/").hostname) == path


@pytest.mark.parametrize("target, stored", [
    ("http+unix://%2Fa%2Fb.sock:80/user/alice/ws/", "http+unix://%2Fa%2Fb.sock/user/alice/ws/"),
    ("http+unix://%2Fa%2Fb.sock:80", "http+unix://%2Fa%2Fb.sock"),
    ("http://127.0.0.1:8080/user/alice/ws/", "http://127.0.0.1:8080/user/alice/ws/"),
])
def test_proxy_shim_strips_and_restores_the_port_jupyterhub_adds(target, stored):
    assert strip_unix_port(target) == stored
    if target.startswith("http+unix"):
        assert add_unix_port(stored) == target


@pytest.fixture
def hub_version_endpoint():
    """Just enough of a hub for a single-user server to start: its version check answers."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-JupyterHub-Version", "6.1.1")
            self.end_headers()
            self.wfile.write(b'{"version": "6.1.1"}')

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hub/api"
    server.shutdown()


def test_singleuser_shim_serves_on_a_socket_despite_a_port_in_the_service_url(tmp_path, hub_version_endpoint):
    """jupyterhub-singleuser 6.1.1 alone aborts ('--port and --sock are mutually exclusive')."""
    sock = tmp_path / "s.sock"
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
        "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:45678/user/alice/ws/",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/ws/", "JUPYTERHUB_API_TOKEN": "t",
        "JUPYTERHUB_API_URL": hub_version_endpoint, "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_CLIENT_ID": "c", "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
    }
    python = str(REPO / ".venv-sandbox" / "bin" / "python")
    # The guard needs the sandbox's workspace file; this test is about the socket alone.
    proc = subprocess.Popen([python, "-m", "enclave_singleuser", f"--sock={sock}",
                             f"--ServerApp.root_dir={tmp_path}",
                             "--ServerApp.jpserver_extensions={'enclave_guard': False}", "--allow-root"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sock.exists(), proc.stdout.read().decode() if proc.poll() is not None else "no socket"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert "mutually exclusive" not in out


@pytest.fixture
def provisioned_home(tmp_path):
    """A home with its audit and provisioning services running, as beside a hub."""
    from audit.conftest import AuditHome

    with beside_a_hub(AuditHome(tmp_path / "home")) as home:
        yield home


def test_cli_provisions_accounts_and_workspaces_with_clear_errors(provisioned_home):
    env = {**os.environ, **provisioned_home.env()}

    def run(*args, input=None):
        return subprocess.run([str(ENCLAVE), *args], env=env, input=input, capture_output=True,
                              text=True, timeout=120)

    r = run("user", "add", "olga", "--role", "operator")
    assert r.returncode == 0 and "password: " in r.stdout
    assert len(r.stdout.split("password: ")[1].strip()) >= 12
    assert "already exists" in run("user", "add", "olga", "--role", "operator").stderr
    assert "not allowed" in run("user", "add", "Bad/Name", "--role", "operator").stderr
    # Enclave's own names: an account named so would pass for the votes' decisions or a nameless login.
    reserved = ("system", "anonymous")
    for name in reserved:
        r = run("user", "add", name, "--role", "reviewer")
        assert r.returncode != 0 and f"user name '{name}' is reserved" in r.stderr
    assert not any(name in run("user", "list").stdout for name in reserved)
    assert "too short" in run("user", "add", "pia", "--role", "reviewer", "--password-stdin", input="short\n").stderr
    assert run("user", "add", "hana", "--role", "holder").returncode == 0
    assert run("workspace", "create", "census", "--purpose", "人口普查分析", "--holder", "hana").returncode == 0
    assert "not allowed" in run("workspace", "create", "../etc").stderr
    assert run("workspace", "add-member", "census", "olga", "--role", "operator").returncode == 0
    r = run("workspace", "add-member", "census", "olga", "--role", "reviewer")
    assert r.returncode != 0 and "does not hold the reviewer role" in r.stderr
    assert "no workspace named 'nowhere'" in run("workspace", "add-member", "nowhere", "olga", "--role", "operator").stderr
    r = run("workspace", "attach", "census", "missing@1")
    assert r.returncode != 0 and "not in the release store" in r.stderr
    assert "not a release name" in run("workspace", "attach", "census", "../../etc").stderr
    (provisioned_home.home / "releases" / "pop@1" / "data").mkdir(parents=True)
    r = run("workspace", "attach", "census", "pop@1")
    assert r.returncode != 0 and "release 'pop@1' has no data holder" in r.stderr
    assert run("data", "set-holder", "pop", "hana").returncode == 0
    assert run("workspace", "attach", "census", "pop@1").returncode == 0
    listing = run("workspace", "list").stdout
    assert "census" in listing and "olga" in listing and "pop@1" in listing


def test_release_names_cannot_leave_the_store(tmp_path):
    from enclave.releases import ReleaseError, release_dir
    from enclave.settings import Settings

    s = Settings(home=tmp_path)
    for bad in ("../x", "a/b", "..", "x@../../y", ""):
        with pytest.raises(ReleaseError):
            release_dir(s, bad)
    assert release_dir(s, "households@1") == tmp_path / "releases" / "households@1"
