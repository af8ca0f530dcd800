"""Attacks from inside a workspace kernel, through the proxy, against the sandbox's promises."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import PASSWORD
from enclave_testing import REPO

pytestmark = pytest.mark.backends("bubblewrap", "docker")


def test_kernel_runs_as_an_unprivileged_uid_with_no_new_privileges(alice_kernel):
    info = alice_kernel.value(
        "import os, json\n"
        "status = open('/proc/self/status').read()\n"
        "caps = [l.split()[1] for l in status.splitlines() if l.startswith('CapEff')]\n"
        "nnp = [l.split()[1] for l in status.splitlines() if l.startswith('NoNewPrivs')]\n"
        "print(json.dumps([os.getuid(), os.geteuid(), caps[0], nnp[0]]))"
    )
    uid, euid, cap_eff, no_new_privs = info
    assert uid != 0 and euid != 0
    assert uid != os.getuid()
    assert int(cap_eff, 16) == 0
    assert no_new_privs == "1"


def test_setuid_binaries_do_not_raise_privileges(alice_kernel):
    out, err = alice_kernel.run(
        "import subprocess\n"
        "r = subprocess.run(['/usr/bin/su', '-c', 'id -u', 'root'], capture_output=True, text=True, input='x\\n')\n"
        "print(r.returncode, repr(r.stdout))"
    )
    assert err is None
    code, stdout = out.split(" ", 1)
    assert code != "0" and "'0\\n'" not in stdout


def test_only_loopback_exists_and_there_is_no_route_out(alice_kernel):
    names = alice_kernel.value("import socket, json; print(json.dumps([n for _, n in socket.if_nameindex()]))")
    assert names == ["lo"]
    # A UDP connect only looks the route up; nothing is sent even if a route existed.
    out, err = alice_kernel.run(
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.connect(('192.0.2.1', 53))"
    )
    assert err is not None and "Network is unreachable" in err
    routes = alice_kernel.value(
        "import json; print(json.dumps(open('/proc/net/route').read().splitlines()[1:]))")
    assert routes == []


def test_names_do_not_resolve(alice_kernel):
    out, err = alice_kernel.run("import socket; socket.getaddrinfo('pypi.org', 443)")
    assert err is not None and err.startswith("gaierror")


def test_the_hub_and_proxy_on_host_loopback_are_unreachable(alice_kernel, enclave):
    out, err = alice_kernel.run(f"import socket; socket.create_connection(('127.0.0.1', {enclave.port}), timeout=3)")
    assert err is not None and "Connection refused" in err


def test_host_state_is_not_visible(alice_kernel, enclave):
    paths = [str(enclave.home), str(REPO), str(enclave.home / "enclave.sqlite"),
             str(enclave.home / "secrets"), "/sys/class/net", "/run/enclave/hub", "/run/enclave/server",
             "/run/enclave/exports", "/etc/shadow", "/root/.ssh"]
    visible = alice_kernel.value(f"import os, json; print(json.dumps([p for p in {paths!r} if os.path.exists(p)]))")
    assert visible == []
    # No resolver: none at all (bubblewrap), or an empty file over the one Docker gives every container.
    resolver = alice_kernel.value("import os, json; p = '/etc/resolv.conf'; "
                                  "print(json.dumps(open(p).read() if os.path.exists(p) else ''))")
    assert resolver == ""


def test_data_holds_only_the_workspaces_releases_read_only(alice_kernel):
    assert alice_kernel.value("import os, json; print(json.dumps(os.listdir('/data')))") == ["households@1"]
    assert "Heping" in alice_kernel.run("print(open('/data/households@1/table.csv').read())")[0]
    _, err = alice_kernel.run("open('/data/households@1/table.csv', 'a').write('x')")
    assert err is not None
    _, err = alice_kernel.run("open('/data/new.csv', 'w')")
    assert err is not None
    # Read-only by the mount itself, not only by file modes.
    options = alice_kernel.value(
        "import json; print(json.dumps([l.split()[5] for l in open('/proc/self/mountinfo') "
        "if l.split()[4] == '/data/households@1']))")
    assert options and all(o.split(",")[0] == "ro" for o in options)


def test_python_environment_and_jupyter_config_are_not_writable(alice_kernel):
    for target in ("import sys, os; open(os.path.join(sys.prefix, 'lib', 'python3.11', 'site-packages', 'evil.pth'), 'w')",
                   "open('/opt/enclave/env/etc/jupyter/jupyter_server_config.d/evil.json', 'w')",
                   "open('/opt/enclave/env/share/jupyter/kernels/enclave-python/kernel.json', 'w')",
                   "open('/usr/lib/evil', 'w')"):
        _, err = alice_kernel.run(target)
        assert err is not None and ("Read-only file system" in err or "Permission denied" in err), target


def test_server_process_is_not_visible_and_cannot_be_signalled(alice_kernel, enclave):
    server_pid = _server_host_pid(enclave, "alice", "alpha")
    cmdlines = alice_kernel.value(
        "import os, json\n"
        "print(json.dumps([open(f'/proc/{p}/cmdline','rb').read().decode(errors='replace') "
        "for p in os.listdir('/proc') if p.isdigit()]))"
    )
    assert cmdlines and not any("singleuser" in c or "jupyter" in c.replace("ipykernel", "") for c in cmdlines)
    _, err = alice_kernel.run(f"import os, signal; os.kill({server_pid}, signal.SIGKILL)")
    assert err is not None and err.startswith("ProcessLookupError")
    assert os.path.exists(f"/proc/{server_pid}")


def test_hub_token_is_absent_from_the_kernel(alice_kernel, enclave):
    token = _server_env(enclave, "alice", "alpha")["JUPYTERHUB_API_TOKEN"]
    assert len(token) > 16
    found = alice_kernel.value(
        "import os, json\n"
        f"token = {token!r}\n"
        "import stat\n"
        "hits = [k for k, v in os.environ.items() if token in v or k.startswith('JUPYTERHUB')]\n"
        "if token.encode() in open('/proc/self/environ', 'rb').read(): hits.append('/proc/self/environ')\n"
        "for top in ('/home', '/tmp', '/run', '/etc', '/data'):\n"
        "    for root, dirs, files in os.walk(top):\n"
        "        for f in files:\n"
        "            p = os.path.join(root, f)\n"
        "            try:\n"
        "                if stat.S_ISREG(os.lstat(p).st_mode) and token.encode() in open(p, 'rb').read(1 << 22):\n"
        "                    hits.append(p)\n"
        "            except OSError: pass\n"
        "print(json.dumps(hits))"
    )
    assert found == []


def test_server_socket_is_unreachable_from_the_kernel(alice_kernel, enclave):
    host_socket = enclave.home / "run" / "sandboxes" / "alice" / "alpha" / "server" / "jupyter.sock"
    assert host_socket.exists()
    _, err = alice_kernel.run(
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({str(host_socket)!r})")
    assert err is not None and "FileNotFoundError" in err
    assert alice_kernel.value("import os, json; print(json.dumps(os.path.exists('/run/enclave/server')))") is False


def test_two_operators_of_a_workspace_cannot_read_each_others_homes(alice, alice_kernel, enclave):
    alice_kernel.run("open('/home/alice/notes.txt', 'w').write('alice only')")
    bob = enclave.login("bob", PASSWORD)
    assert bob.start("alpha").status_code == 200
    k = bob.kernel("alpha")
    try:
        assert k.value("import os, json; print(json.dumps(os.listdir('/home')))") == ["bob"]
        _, err = k.run("open('/home/alice/notes.txt').read()")
        assert err is not None and "FileNotFoundError" in err
        host_home = enclave.home / "homes" / "alice" / "alpha" / "notes.txt"
        _, err = k.run(f"open({str(host_home)!r}).read()")
        assert err is not None and "FileNotFoundError" in err
        # Different host uids as well, so the homes are closed even outside the mounts.
        alice_uid = alice_kernel.value("import os; print(os.getuid())")
        assert k.value("import os; print(os.getuid())") != alice_uid
        st = host_home.stat()
        assert st.st_uid == alice_uid and (host_home.parent.stat().st_mode & 0o077) == 0
    finally:
        k.close()
        bob.stop("alpha")


def test_user_config_written_by_a_kernel_is_ignored_after_restart(enclave):
    """Code plants config and user site-packages for the next start; none of it is loaded."""
    erin = enclave.login("erin", PASSWORD)
    assert erin.start("beta").status_code == 200
    k = erin.kernel("beta")
    k.run(
        "import os, json\n"
        "os.makedirs('/home/erin/.jupyter', exist_ok=True)\n"
        "open('/home/erin/.jupyter/jupyter_server_config.py','w').write("
        "\"open('/home/erin/SERVER_CONFIG_RAN','w')\\n\")\n"
        "site = '/home/erin/.local/lib/python3.11/site-packages'\n"
        "os.makedirs(site, exist_ok=True)\n"
        "open(site + '/evil.pth','w').write(\"import os; open('/home/erin/PTH_RAN','w')\\n\")\n"
        "os.makedirs('/home/erin/.local/share/jupyter/kernels/evil', exist_ok=True)\n"
        "open('/home/erin/.local/share/jupyter/kernels/evil/kernel.json','w').write("
        "json.dumps({'argv': ['python3', '-c', 'import os'], 'display_name': 'evil', 'language': 'python'}))\n"
    )
    k.close()
    erin.stop("beta")
    assert erin.start("beta").status_code == 200
    specs = erin.server_api("beta", "GET", "/kernelspecs").json()
    assert set(specs["kernelspecs"]) == {"enclave-python"}
    k = erin.kernel("beta")
    try:
        ran = k.value("import os, json; print(json.dumps([f for f in ('SERVER_CONFIG_RAN', 'PTH_RAN') "
                      "if os.path.exists('/home/erin/' + f)]))")
        assert ran == []
    finally:
        k.close()
        erin.stop("beta")


def _sandbox_pids(enclave, user, workspace) -> list[int]:
    spec = enclave.home / "run" / "sandboxes" / user / workspace / "spec.json"
    uid = json.loads(spec.read_text())["server"]["identity"]["uid"]
    from enclave_testing import processes_of_uid

    return processes_of_uid(uid)


def _server_host_pid(enclave, user, workspace) -> int:
    for pid in _sandbox_pids(enclave, user, workspace):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"enclave_singleuser" in cmd:
            return pid
    pytest.fail("no server process found")


def _server_env(enclave, user, workspace) -> dict:
    pid = _server_host_pid(enclave, user, workspace)
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_kernel_gets_the_workspaces_disclosure_thresholds(alice_kernel):
    thresholds = alice_kernel.value("import os; print(os.environ['ENCLAVE_ACRO_THRESHOLDS'])")
    assert thresholds["safe_threshold"] == 10 and thresholds["safe_nk_n"] == 2
