"""The Docker backend renders the sandbox policy faithfully: attacks from inside a real container
made from a kernel's policy (the image enclave/sandbox, a real Docker daemon) against the
sandbox's promises. The same attacks against the bubblewrap backend are in tests/test_sandbox.py."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace

import docker
import pytest
from enclave_testing import REPO

from enclave.sandbox import docker as docker_backend
from enclave.sandbox.policy import Identity, Limits, SandboxLayout, kernel_policy, server_policy

KERNEL_ID = "6451b036-d28f-4af7-8cbe-de2a1c2b5da1"
UID = 200_311

# Run inside the container, as the kernel's process would be: everything it can see and do.
PROBE = r"""
import errno, json, os, socket, subprocess
found = {}
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
found["uid"], found["gid"], found["groups"] = os.getuid(), os.getgid(), os.getgroups()
found["cap_eff"], found["no_new_privs"] = int(status["CapEff"].strip(), 16), status["NoNewPrivs"].strip()
found["interfaces"] = [n for _, n in socket.if_nameindex()]
found["routes"] = open("/proc/net/route").read().splitlines()[1:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.connect(("192.0.2.1", 53)); found["udp"] = "connected"
except OSError as e:
    found["udp"] = errno.errorcode[e.errno]
try:
    socket.getaddrinfo("pypi.org", 443); found["dns"] = "resolved"
except socket.gaierror:
    found["dns"] = "failed"
found["writable"] = {}
for path in ("/usr/evil", "/etc/evil", "/opt/enclave/env/evil.pth", "/evil", "/data/evil",
             "/data/r@1/table.csv", "/home/alice/notes.txt", "/tmp/scratch"):
    try:
        with open(path, "a") as f: f.write("x")
        found["writable"][path] = True
    except OSError as e:
        found["writable"][path] = errno.errorcode[e.errno]
found["data"] = sorted(os.listdir("/data"))
found["data_read"] = open("/data/r@1/table.csv").read()
found["present"] = [p for p in ("/var/run/docker.sock", "/run/docker.sock", "/dev/shm", "/run/enclave/server",
                                "/run/enclave/hub", "/etc/shadow", "/root")
                    if os.path.exists(p)]
# Docker gives every container a resolv.conf (the host's resolver) unless one is mounted over it.
found["resolv.conf"] = open("/etc/resolv.conf").read()
found["hostname"] = open("/etc/hostname").read()
r = subprocess.run(["/usr/bin/su", "-c", "id -u", "root"], capture_output=True, text=True, input="x\n")
found["su"] = [r.returncode, r.stdout]
found["passwd"] = open("/etc/passwd").read()
found["tmp_size_mb"] = os.statvfs("/tmp").f_blocks * os.statvfs("/tmp").f_frsize // 2**20
print(json.dumps(found))
"""


@pytest.fixture(scope="session")
def docker_client():
    """The host's Docker daemon, and the sandbox image built (images/build.sh: cached layers make a
    rebuild quick)."""
    client = docker.from_env()
    client.ping()
    client.images.get(docker_backend.IMAGE)
    yield client
    client.close()


@pytest.fixture
def layout(tmp_path):
    home, release = tmp_path / "home", tmp_path / "releases" / "r@1" / "data"
    home.mkdir()
    os.chown(home, UID, UID)
    release.mkdir(parents=True)
    (release / "table.csv").write_text("区县,人数\n和平区,12\n")
    # Writable by anyone on the host: only the read-only mount can stop the sandbox. The folder is
    # the sandbox's to read whatever umask an earlier test left this process.
    (release / "table.csv").chmod(0o666)
    release.chmod(0o755)
    (tmp_path / "run" / "kernels" / KERNEL_ID).mkdir(parents=True)
    return SandboxLayout(
        env=REPO / ".venv-sandbox", home=home, home_image=tmp_path / "home.ext4", run=tmp_path / "run",
        hub_socket_dir=tmp_path / "hub", exports_socket_dir=tmp_path / "exports",
        data=((release, "r@1"),), lab_state=tmp_path / "lab-state")


def test_a_kernel_container_has_no_network_no_privilege_and_only_its_releases(docker_client, layout, tmp_path):
    server = server_policy(layout, Identity(UID, UID, "alice", "/home/alice"),
                           Limits(512, 64, 1.0, 64, disk_mb=128, tmp_mb=32), f"enclave-test-{os.getpid()}",
                           {"JUPYTERHUB_API_TOKEN": "secret-token"})
    kernel = kernel_policy(server, layout, KERNEL_ID, {})
    probe = replace(kernel, argv=("/opt/enclave/env/bin/python", "-I", "-c", PROBE))

    async def run() -> tuple[int, str]:
        sandbox = await docker_backend.start(docker_client, probe, docker_backend.IMAGE, tmp_path / "files",
                                             tmp_path / "kernel.log")
        try:
            code = await sandbox.wait()
            return code, sandbox.container.logs(stdout=True, stderr=False).decode()
        finally:
            sandbox.remove()

    code, out = asyncio.run(run())
    assert code == 0, (tmp_path / "kernel.log").read_text()
    found = json.loads(out)
    # No group but its own (Docker lists the primary group among the supplementary ones).
    assert (found["uid"], found["gid"]) == (UID, UID) and set(found["groups"]) <= {UID}
    assert found["cap_eff"] == 0 and found["no_new_privs"] == "1"
    assert found["interfaces"] == ["lo"] and found["routes"] == []
    assert found["udp"] == "ENETUNREACH" and found["dns"] == "failed"
    assert found["writable"] == {
        "/usr/evil": "EROFS", "/etc/evil": "EROFS", "/opt/enclave/env/evil.pth": "EROFS", "/evil": "EROFS",
        "/data/evil": "EROFS", "/data/r@1/table.csv": "EROFS", "/home/alice/notes.txt": True, "/tmp/scratch": True}
    assert found["data"] == ["r@1"] and "和平区" in found["data_read"]
    assert found["present"] == [] and found["resolv.conf"] == "" and found["hostname"] == "enclave\n"
    assert found["su"][0] != 0 and found["su"][1] != "0\n"
    assert f"alice:x:{UID}:{UID}::/home/alice:/bin/bash" in found["passwd"]
    assert found["tmp_size_mb"] == 32


def test_only_the_system_comes_from_the_image(layout):
    server = server_policy(layout, Identity(UID, UID, "alice", "/home/alice"),
                           Limits(512, 64, 1.0, 64, disk_mb=128, tmp_mb=32), "alice-ws", {})
    options = docker_backend.container_options(kernel_policy(server, layout, KERNEL_ID, {}), "img", layout.run / "files")
    bound = {m["Target"]: (m["Source"], m["ReadOnly"]) for m in options["mounts"]}
    assert bound["/home/alice"] == (str(layout.home), False)
    assert bound["/data/r@1"] == (str(layout.data[0][0]), True)
    assert bound["/etc/passwd"][1] is True
    assert not any(t.startswith(("/usr", "/opt/enclave/env")) for t in bound)
    assert options["network_mode"] == "none" and options["read_only"] is True
    assert options["cap_drop"] == ["ALL"] and options["security_opt"] == ["no-new-privileges"]
    assert options["mem_limit"] == options["memswap_limit"] == 512 * 2**20 and options["pids_limit"] == 64
