"""The launcher (enclave.sandbox.launcher): in the container deployment, the one process that runs
workspaces' supervisors, on the hub's request over a root-only socket. It runs nothing but the
supervisor of a spec under the deployment's ``run/sandboxes/``, and stopping it stops every sandbox."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat

import pytest
from conftest import PASSWORD, seed
from enclave_testing import backend_settings, processes_of_uid, supervisor_pids, wait_for


def ask(hub, request) -> dict:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(hub.home / "run" / "launcher.sock"))
        conn.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(conn.makefile().readline())


@pytest.fixture(scope="module")
def hub(hub_factory):
    hub = hub_factory("launcher", ENCLAVE_SANDBOX__IDLE_TIMEOUT="0", **backend_settings("docker"))
    seed(hub)
    hub.start()
    return hub


def test_the_socket_is_roots_alone(hub):
    mode = os.stat(hub.home / "run" / "launcher.sock")
    assert mode.st_uid == 0 and stat.S_IMODE(mode.st_mode) & 0o077 == 0


@pytest.mark.parametrize("spec", [
    "/etc/passwd",                              # not a spec
    "/tmp/spec.json",                           # outside the deployment's sandboxes
    "run/sandboxes/alice/alpha/spec.json",      # relative
    "{home}/run/sandboxes/../../enclave.toml",  # climbing out
    "{home}/run/sandboxes/alice/nothing/spec.json",  # no such spec
])
def test_it_starts_only_supervisors_of_the_deployments_specs(hub, spec):
    reply = ask(hub, {"op": "start", "spec": spec.format(home=hub.home)})
    assert reply["ok"] is False and reply["error"]
    assert not supervisor_pids(hub.home)


def test_a_link_planted_as_a_spec_is_refused(hub, tmp_path):
    elsewhere = tmp_path / "spec.json"
    elsewhere.write_text("{}")
    planted = hub.home / "run" / "sandboxes" / "mallory" / "x" / "spec.json"
    planted.parent.mkdir(parents=True)
    planted.symlink_to(elsewhere)
    reply = ask(hub, {"op": "start", "spec": str(planted)})
    assert reply == {"ok": False, "error": f"{planted} is not a file"}


@pytest.mark.parametrize("request_line", [b"not json\n", b"[1, 2]\n", b'{"op": "format"}\n',
                                          b'{"op": "alive", "spec": 7, "pid": 1}\n'])
def test_garbage_gets_a_refusal(hub, request_line):
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(hub.home / "run" / "launcher.sock"))
        conn.sendall(request_line)
        reply = json.loads(conn.makefile().readline())
    assert reply["ok"] is False and reply["error"]


def test_enclave_doctor_asks_the_launcher_about_docker(hub):
    lines = hub.enclave("doctor").stdout.splitlines()
    assert f"OK launcher: answers at {hub.home / 'run' / 'launcher.sock'}" in lines
    assert any(line.startswith("OK docker: Docker ") and line.endswith(", image enclave/sandbox") for line in lines)
    assert not any("bubblewrap" in line for line in lines)  # not this deployment's backend


def test_stopping_the_launcher_stops_its_sandboxes(hub):
    alice = hub.login("alice", PASSWORD)
    assert alice.start("alpha").status_code == 200
    spec = hub.home / "run" / "sandboxes" / "alice" / "alpha" / "spec.json"
    uid = json.loads(spec.read_text())["server"]["identity"]["uid"]
    [supervisor] = supervisor_pids(hub.home)
    assert ask(hub, {"op": "alive", "spec": str(spec), "pid": supervisor}) == {"ok": True, "alive": True}
    # A pid that is not this spec's supervisor is not taken for it.
    assert ask(hub, {"op": "alive", "spec": str(spec), "pid": os.getpid()}) == {"ok": True, "alive": False}
    hub.stop_launcher()
    assert not supervisor_pids(hub.home)
    wait_for(lambda: not processes_of_uid(uid), 20, "alice's containers to end")
    # Until the launcher is back, the hub cannot know; then it sees the server gone, and starts it anew.
    hub.start_launcher()
    wait_for(lambda: "alpha" not in alice.hub_api("GET", "/users/alice").json()["servers"], 90,
             "the hub to see alice's server stopped")
    assert alice.start("alpha").status_code == 200
    alice.stop("alpha")


def test_containers_a_killed_supervisor_left_are_removed(hub):
    """A supervisor killed outright (as when the launcher's container dies) leaves its containers
    running; a launcher removes them when it starts, and keeps those of supervisors still running."""
    import docker

    from enclave.sandbox.docker import LABEL_RUN

    client = docker.from_env()

    def containers_of(user) -> list[str]:
        run = hub.home / "run" / "sandboxes" / user / "alpha"
        return [c.name for c in client.containers.list(filters={"label": f"{LABEL_RUN}={run}"})]

    def supervisor_of(user) -> int:
        spec = str(hub.home / "run" / "sandboxes" / user / "alpha" / "spec.json").encode()
        [pid] = [pid for pid in supervisor_pids(hub.home) if spec in open(f"/proc/{pid}/cmdline", "rb").read()]
        return pid

    alice, bob = hub.login("alice", PASSWORD), hub.login("bob", PASSWORD)
    assert alice.start("alpha").status_code == 200 and bob.start("alpha").status_code == 200
    alice.kernel("alpha").close()
    alices = supervisor_of("alice")
    os.kill(alices, signal.SIGKILL)
    wait_for(lambda: alices not in supervisor_pids(hub.home), 10, "alice's supervisor to die")
    assert len(containers_of("alice")) == 2  # her server's and her kernel's, left running

    # Killed too, the launcher leaves bob's supervisor running on this host (its own session).
    hub.launcher.kill()
    hub.launcher.wait()
    hub.start_launcher()
    assert containers_of("alice") == []
    assert len(containers_of("bob")) == 1 and bob.server_api("alpha", "GET", "/status").status_code == 200
    wait_for(lambda: "alpha" not in alice.hub_api("GET", "/users/alice").json()["servers"], 90,
             "the hub to see alice's server gone")
    bob.stop("alpha")  # asked of the new launcher: it finds bob's supervisor by its pid and spec
    assert containers_of("bob") == []
    # alice's home is still mounted (her supervisor could not unmount it): her next start takes it over.
    assert alice.start("alpha").status_code == 200
    alice.stop("alpha")
    assert not (hub.home / "homes" / "alice" / "alpha").is_mount()
