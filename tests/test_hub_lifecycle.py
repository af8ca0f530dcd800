"""The hub's life as processes: it stops cleanly on SIGTERM, with its proxy, services and idle
culler, leaving the sandboxes running; after a ``kill -9`` the next hub replaces what the killed
one left and keeps every sandbox. A real hub, proxy and sandbox."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

import pytest
from conftest import PASSWORD, seed
from enclave_testing import supervisor_pids, wait_for

from enclave.hub import hub_services_of


def running(pid: int, cmdline: bytes) -> bool:
    """Whether ``pid`` is still the process that ran ``cmdline`` (a zombie, left to an init that
    does not reap, has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z" and Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline
    except OSError:
        return False


def processes() -> dict[int, tuple[int, bytes]]:
    """Every process: pid -> (parent pid, command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                found[int(entry.name)] = (ppid, (entry / "cmdline").read_bytes())
            except OSError:
                continue
    return found


def hub_tree(hub_pid: int, sandboxes: list[int]) -> dict[int, bytes]:
    """The hub's process and its descendants, but for the sandboxes' (they outlive the hub)."""
    table, tree, todo = processes(), {}, [hub_pid]
    while todo:
        pid = todo.pop()
        if pid in sandboxes or pid not in table:
            continue
        tree[pid] = table[pid][1]
        todo += [child for child, (ppid, _) in table.items() if ppid == pid]
    return tree


def proxies(hub) -> list[int]:
    flag = f"--port {hub.port} ".encode()
    return [pid for pid, (_, cmd) in processes().items()
            if b"configurable-http-proxy" in cmd and flag in cmd.replace(b"\0", b" ") and running(pid, cmd)]


def log_size(hub) -> int:
    return (hub.home / "hub.log").stat().st_size


def log_since(hub, offset: int) -> str:
    """What the hub and its services logged after ``offset``."""
    with open(hub.home / "hub.log", "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def lifecycle(hub_factory):
    """A hub with the idle culler on, and erin's sandbox running in it."""
    hub = hub_factory("lifecycle", ENCLAVE_SANDBOX__IDLE_TIMEOUT="3600")
    seed(hub)
    hub.start()
    erin = hub.login("erin", PASSWORD)
    assert erin.start("beta").status_code == 200
    kernel = erin.kernel("beta")
    kernel.run("kept = '留在沙箱里'")
    yield hub, erin, kernel
    kernel.close()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_hub_its_proxy_services_and_culler_but_not_the_sandbox(lifecycle, stop):
    hub, erin, kernel = lifecycle
    sandboxes = supervisor_pids(hub.home)
    assert sandboxes
    tree = hub_tree(hub.proc.pid, sandboxes)
    names = sorted(hub_services_of(str(hub.home)).values())
    assert names == ["audit", "exports", "idle-culler", "provisioning"]
    assert len(proxies(hub)) == 1

    offset = log_size(hub)
    hub.proc.send_signal(stop)
    assert hub.proc.wait(120) == 0, hub.log_tail()
    wait_for(lambda: not [pid for pid, cmd in tree.items() if running(pid, cmd)], 30, "the hub's processes to end")
    for port in (hub.port, hub.proxy_api_port, hub.exports_port, hub.audit_port, hub.provisioning_port):
        wait_for(lambda: port_is_free(port), 30, f"port {port} to be free")
    log = log_since(hub, offset)
    assert "AttributeError" not in log and "Traceback" not in log, log
    assert supervisor_pids(hub.home) == sandboxes

    # The next hub finds the sandbox again: the same kernel, its state kept.
    hub.start()
    assert erin.server_api("beta", "GET", "/status").status_code == 200
    assert kernel.run("print(kept)") == ("留在沙箱里\n", None)


def test_after_kill_9_the_next_hub_replaces_what_the_killed_one_left(lifecycle):
    hub, erin, kernel = lifecycle
    sandboxes = supervisor_pids(hub.home)
    services = hub_services_of(str(hub.home))
    review = next(pid for pid, name in services.items() if name == "exports")
    # The review service is busy when its hub dies, and still there when the next hub starts.
    os.kill(review, signal.SIGSTOP)
    hub.proc.kill()
    hub.proc.wait()
    wait_for(lambda: set(hub_services_of(str(hub.home))) == {review}, 30,
             "the audit and provisioning services and the idle culler to stop with their hub")

    hub.proc = None
    offset = log_size(hub)
    waiting = "left running by a previous hub"
    started = threading.Thread(target=hub.start)
    started.start()
    wait_for(lambda: waiting in log_since(hub, offset), 120,
             "the new hub to find the old review service")
    os.kill(review, signal.SIGCONT)  # it finishes and stops, as told; the new hub waits for that
    started.join()
    assert hub.proc.poll() is None, hub.log_tail()

    services = hub_services_of(str(hub.home))
    assert sorted(services.values()) == ["audit", "exports", "idle-culler", "provisioning"]
    assert review not in services
    assert len(proxies(hub)) == 1
    assert "Address already in use" not in log_since(hub, offset)
    assert supervisor_pids(hub.home) == sandboxes
    # The sandbox is usable through the new hub: its kernel, and a new one.
    assert kernel.run("print(kept)") == ("留在沙箱里\n", None)
    fresh = erin.kernel("beta")
    try:
        assert fresh.run("print(6 * 7)") == ("42\n", None)
    finally:
        fresh.close()
