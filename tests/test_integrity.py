"""The policeman cannot be corrupted: nothing an operator writes runs in the processes that police
them, or in a kernel outside a recorded execution.

A hub of its own (it is traced with strace): mallory operates ``den`` (the attacks as found, one
at a time) and ``lair`` (terminals allowed; the hostile home, ``hostile_home.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
from enclave_testing import Session, grant
from hostile_home import MARKER, drive, markers, module_source, opened_planted, plant

from enclave import accounts, workspaces
from enclave.sandbox import home_image
from enclave.settings import Settings

PASSWORD = "integrity-password-1"
RELEASE = "households@1"


@pytest.fixture(scope="module")
def hub(hub_factory):
    hub = hub_factory("integrity")  # with the idle culler, which the process table names too
    settings = Settings(home=hub.home)
    data = hub.home / "releases" / RELEASE / "data"
    data.mkdir(parents=True)
    (data / "table.csv").write_text("district,size\nHeping,3\n")
    accounts.add_user(settings, "mallory", ["operator"], PASSWORD)
    for ws in ("den", "lair"):
        workspaces.create(settings, ws)
        workspaces.add_member(settings, ws, "mallory", "operator")
        grant(settings, ws, RELEASE)
    r = hub.enclave("workspace", "set-guard", "lair", "terminals=true")
    assert r.returncode == 0, r.stderr
    hub.start()
    yield hub
    hub.stop_all_sandboxes()


@pytest.fixture(scope="module")
def mallory(hub) -> Session:
    return hub.login("mallory", PASSWORD)


@contextlib.contextmanager
def host_home(hub, ws: str):
    """mallory's home in ``ws`` as the host sees it: its disk image, mounted at the home's path while
    its sandbox runs, and mounted here for the while when it is stopped (to plant, or to look)."""
    home = hub.home / "homes" / "mallory" / ws
    if home_image.is_mounted(home):
        yield home
        return
    image = hub.home / "home-images" / "mallory" / f"{ws}.ext4"
    spec = json.loads((hub.home / "run" / "sandboxes" / "mallory" / ws / "spec.json").read_text())
    identity = spec["server"]["identity"]
    home_image.mount_home(image, home, image.stat().st_size // 2**20, identity["uid"], identity["gid"])
    try:
        yield home
    finally:
        home_image.unmount_home(home)


def assert_guard_in_force(hub, session: Session, ws: str) -> None:
    """The guard's closures hold and its record keeps every execution."""
    assert session.http.get(f"{session.server_url(ws)}/files/anything.py").status_code == 403
    assert session.server_api(ws, "GET", "/contents/table.csv?format=base64").status_code in (403, 404)
    kernel = session.kernel(ws)
    out, err = kernel.run("print('Z' * 5_000_000)")
    assert err is None and out.count("Z") <= 2048 * 1024 and "output withheld" in out
    kernel.run("marker = 'recorded-execution'")
    kernel.close()
    codes = [r["detail"]["code"] for r in hub.audit_records(action="kernel.execute", workspace=ws)]
    assert "marker = 'recorded-execution'" in codes


def restart(session: Session, ws: str) -> None:
    session.stop(ws)
    assert session.start(ws).status_code == 200


# -- the attacks as they were found -------------------------------------------------------------


def test_a_module_saved_through_the_contents_api_does_not_run_in_the_server(hub, mallory):
    """A .py (an allowed type) saved into the home under the name of a module the server imports
    at start (the guard imports nh3) ran inside the server when the home was its working directory."""
    assert mallory.start("den").status_code == 200
    r = mallory.server_api("den", "PUT", "/contents/nh3.py",
                           json={"type": "file", "format": "text", "content": module_source("nh3")})
    assert r.status_code in (200, 201), r.text
    restart(mallory, "den")
    with host_home(hub, "den") as home:
        assert markers(home) == []
    assert_guard_in_force(hub, mallory, "den")


def test_a_launcher_saved_in_the_home_does_not_start_the_kernel(hub, mallory):
    """An ``ipykernel_launcher.py`` in the folder a kernel starts in replaced the kernel with one that
    ran code sent as ``complete_request``, outside any recorded execution."""
    if not mallory.server_api("den", "GET", "/status").ok:
        assert mallory.start("den").status_code == 200
    r = mallory.server_api("den", "PUT", "/contents/ipykernel_launcher.py",
                           json={"type": "file", "format": "text", "content": module_source("ipykernel_launcher")})
    assert r.status_code in (200, 201), r.text
    kernel = mallory.kernel("den")
    answers = kernel.request("complete_request", {"code": "import o", "cursor_pos": 8})
    assert [m for m in answers if m["msg_type"] == "complete_reply"][0]["content"]["status"] == "ok"
    kernel.close()
    with host_home(hub, "den") as home:
        assert [m for m in markers(home) if "ipykernel_launcher" in m] == []


# -- the hostile home ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(hub, mallory, tmp_path_factory):
    """Two rounds on ``lair``: discover what the sandbox's processes load, plant it all, drive again."""
    traces = tmp_path_factory.mktemp("traces")
    seen = drive(hub, mallory, "lair", traces / "discovery.txt")
    sandbox_home = "/home/mallory"
    with host_home(hub, "lair") as home:
        planted = plant(home, sandbox_home, seen)
    again = drive(hub, mallory, "lair", traces / "attack.txt")
    return seen, planted, again, sandbox_home


def test_the_hostile_home_covers_the_server_kernel_and_terminal(hostile):
    seen, planted, _, _ = hostile
    # The discovery saw each process start (their own modules were loaded)...
    names = {f.name for f in planted.files}
    for module in ("jupyter_server.py", "ipykernel.py", "tornado.py", "zmq.py", "nh3.py", "enclave_guard.py",
                   "terminado.py", "IPython.py"):
        assert module in names, module
    # ...and the kernel answered every request type while being watched.
    assert {"ipykernel", "IPython", "collections"} <= seen.kernel_modules
    assert len(planted.files) > 500


def test_nothing_planted_in_the_home_runs(hub, hostile):
    _, planted, again, sandbox_home = hostile
    with host_home(hub, "lair") as home:
        assert markers(home) == []
        assert opened_planted(again.trace, planted, home, sandbox_home) == []


def test_the_guard_is_in_force_with_the_hostile_home(hub, mallory, hostile):
    assert mallory.start("lair").status_code == 200
    assert_guard_in_force(hub, mallory, "lair")
    with host_home(hub, "lair") as home:
        assert markers(home) == []
    mallory.stop("lair")


def test_a_planted_file_run_on_purpose_leaves_its_marker(hub, mallory, hostile):
    """The check can fail: a planted file that does run (here, on purpose) leaves its marker."""
    assert mallory.start("lair").status_code == 200
    kernel = mallory.kernel("lair")
    out, err = kernel.run("exec(open('/home/mallory/sitecustomize.py').read())")
    assert err is None, err
    kernel.close()
    with host_home(hub, "lair") as home:
        assert markers(home) == [MARKER + "sitecustomize"]
        (home / (MARKER + "sitecustomize")).unlink()
    mallory.stop("lair")


# -- every process in the trust-boundary table ---------------------------------------------------

SECURITY_MODEL = Path(__file__).resolve().parents[1] / "docs" / "security-model.md"
# Processes that police the operator: isolated Python, in a directory only root can write.
TRUSTED = ("hub", "review service", "audit service", "provisioning service", "idle culler", "sandbox supervisor",
           "single-user server and guard", "terminal relay")


# Rows of the table that a hub on bubblewrap does not start: the container deployment's launcher
# (tests/test_launcher.py), the Docker backend's containers (tests/test_docker_sandbox.py) and the
# sealed-run driver, which the runner starts (tests/test_sealed_runner.py).
NOT_STARTED_BY_THIS_HUB = ("launcher (container deployment)", "sandbox container (Docker backend)", "sealed-run driver")


def trust_boundary_table() -> dict[str, str]:
    """process -> its command fragment, from docs/security-model.md's table."""
    text = SECURITY_MODEL.read_text()
    section = text.split("## What each process loads, and who can write it", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[1].startswith("`") and cells[0] != "process":
            rows[cells[0]] = cells[1].strip("`")
    return rows


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(p.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def test_every_process_the_hub_starts_is_in_this_table(hub, mallory):
    table = trust_boundary_table()
    assert set(TRUSTED) <= set(table), sorted(table)
    assert mallory.start("lair").status_code == 200
    kernel = mallory.notebook_kernel("lair", "work.ipynb")
    kernel.run("1 + 1")
    terminal = mallory.terminal("lair")
    seen: dict[str, list[int]] = {}
    try:
        for pid in descendants(hub.proc.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue  # it has just exited
            # What the process itself runs (a launcher's command line also holds what it will start).
            own = cmdline.split(" -- ")[0]
            kinds = [name for name, command in table.items() if command in own]
            assert len(kinds) == 1, (cmdline, kinds)
            seen.setdefault(kinds[0], []).append(pid)
        # With a kernel and a terminal open, every kind of process is running.
        assert set(NOT_STARTED_BY_THIS_HUB) <= set(table), sorted(table)
        assert set(seen) == set(table) - set(NOT_STARTED_BY_THIS_HUB), sorted(seen)
        for kind in TRUSTED:
            for pid in seen.get(kind, []):
                cwd = Path(f"/proc/{pid}/cwd")
                info = cwd.stat()
                assert info.st_uid == 0 and not info.st_mode & 0o022, (kind, os.readlink(cwd), oct(info.st_mode))
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
                if "-m" in argv:  # a module: isolated, so nothing of the working directory is on sys.path
                    assert "-I" in argv[:argv.index("-m")], (kind, argv)
                elif "python" in Path(argv[0]).name:  # a script: its folder is first on sys.path
                    folder = Path(f"/proc/{pid}/root{argv[1]}").parent.stat()
                    assert folder.st_uid == 0 and not folder.st_mode & 0o022, (kind, argv)
    finally:
        terminal.close()
        kernel.close()
        mallory.stop("lair")
