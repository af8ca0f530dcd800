"""``enclave doctor``: check an installation, one line per check, each saying what to do.

It looks at what the hub needs and what it keeps: the state directory's modes and owners, the
sockets and who may connect to them, cgroups, free disk space (and what the homes' disk images may
still take of it) and the versions Enclave runs on.
It changes nothing, and exits 1 when any check fails. It imports only what its checks need, so
that it answers fast on a host in trouble.
"""

from __future__ import annotations

import json
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from . import main, pass_ctx

ROOT = 0
# Below either, the state directory's filesystem is about to fill up (databases, homes, logs).
MIN_FREE_BYTES = 2 * 2**30
MIN_FREE_FRACTION = 0.05
# Paths named in one line, at most; the line says how many there are.
SHOWN = 5


class Check:
    """The verdict of one check: its name, whether it passed, and what it found or what to do."""

    def __init__(self, name: str, ok: bool, message: str):
        self.name, self.ok, self.message = name, ok, message

    def line(self) -> str:
        return f"{'OK' if self.ok else 'FAIL'} {self.name}: {self.message}"


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


# -- the state directory --

def check_state(settings) -> Iterator[Check]:
    from ..host_state import not_owned_by, open_to_others

    home = settings.home
    if not home.is_dir():
        yield Check("state modes", False, f"{home} does not exist: set ENCLAVE_HOME, or start the hub (enclave hub)")
        return
    loose = [f"{path} ({mode:o})" for path, mode in open_to_others(home)]
    if loose:
        yield Check("state modes", False, f"{len(loose)} paths open to other local users: {_listing(loose)}; "
                                          "run 'chmod go= PATH' on each, or restart the hub, which tightens them")
    else:
        yield Check("state modes", True, f"{home} is private (0700, files 0600), but for what sandboxes reach")
    strangers = [f"{path} (uid {uid})" for path, uid in not_owned_by(home, ROOT)]
    if strangers:
        yield Check("state owners", False, f"{len(strangers)} paths not owned by root: {_listing(strangers)}; "
                                           "run 'chown root:root PATH' on each")
    else:
        yield Check("state owners", True, "everything private in the state directory is root's")


# -- sockets --

def _others_may_reach(path: Path) -> bool:
    """Whether a user other than the owner (and not in its group) can connect to the socket: write
    permission on it and search permission on every folder above it."""
    if not stat.S_IMODE(path.stat().st_mode) & 0o002:
        return False
    return all(stat.S_IMODE(folder.stat().st_mode) & 0o001 for folder in path.parents)


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def check_socket(name: str, path: Path, for_sandboxes: bool) -> Check:
    """``for_sandboxes``: the socket's folder is bound into sandboxes, whose uids must connect; on
    the host, only root may (the state directory is 0700)."""
    if not path.is_socket():
        return Check(name, False, f"no socket at {path}: is the hub running? start it with 'enclave hub'")
    if not _listening(path):
        return Check(name, False, f"nothing listens on {path} (left by a hub that was killed): restart the hub")
    if _others_may_reach(path):
        return Check(name, False, f"any local user may connect to {path}: chmod 700 the state directory")
    mode, folder_mode = stat.S_IMODE(path.stat().st_mode), stat.S_IMODE(path.parent.stat().st_mode)
    if for_sandboxes:
        if not (mode & 0o002 and folder_mode & 0o001):
            return Check(name, False, f"sandboxes cannot connect to {path} (mode {mode:o}, folder {folder_mode:o}): "
                                      "restart the hub")
        return Check(name, True, f"{path} listening; root on the host, sandboxes through their mount")
    if mode & 0o077 or folder_mode & 0o077 or path.stat().st_uid != ROOT:
        return Check(name, False, f"{path} is open beyond root (mode {mode:o}, folder {folder_mode:o}): restart the hub")
    return Check(name, True, f"{path} listening; root only")


def check_sockets(settings) -> Iterator[Check]:
    from ..audit import socket_path as audit_socket
    from ..exports.sockets import intake_socket

    yield check_socket("hub socket", settings.hub_socket, for_sandboxes=True)
    yield check_socket("audit socket", audit_socket(settings), for_sandboxes=False)
    yield check_socket("exports intake socket", intake_socket(settings), for_sandboxes=True)


# -- cgroups --

def check_cgroups(settings) -> Iterator[Check]:
    from ..sandbox import limits

    hierarchy = limits.cgroup_hierarchy()
    if hierarchy.version == 2 and hierarchy.missing:
        yield Check("cgroups", False, f"cgroup v2 without {', '.join(hierarchy.missing)} delegated to sandboxes "
                                      "(memory, processes and CPU are then limited by rlimits only): "
                                      f"echo '+{' +'.join(hierarchy.missing)}' > {limits.CGROUP_ROOT}/cgroup.subtree_control")
    elif hierarchy.version == 2:
        yield Check("cgroups", True, f"cgroup v2, {', '.join(limits.CONTROLLERS)} delegated")
    elif hierarchy.missing:
        yield Check("cgroups", False, f"no cgroup v2, and cgroup v1 lacks {', '.join(hierarchy.missing)} "
                                      "(limits fall back to rlimits): boot with cgroup v2 (systemd's default)")
    else:
        yield Check("cgroups", True, f"cgroup v1 controllers {', '.join(limits.CONTROLLERS)} "
                                     "(v2 is not mounted with them at /sys/fs/cgroup)")
    leftovers = [str(d) for d in limits.leftover_cgroups()]
    if leftovers:
        yield Check("leftover cgroups", False, f"{len(leftovers)} sandbox cgroups hold no process: {_listing(leftovers)}; "
                                               "remove them with rmdir")
    else:
        yield Check("leftover cgroups", True, "none: every sandbox cgroup holds a running sandbox")


# -- disk --

def check_disk(settings) -> Iterator[Check]:
    home = next(p for p in (settings.home, *settings.home.parents) if p.exists())  # where it will be made
    usage = shutil.disk_usage(home)
    free = f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB on the filesystem of {home}"
    low = usage.free < MIN_FREE_BYTES or usage.free < MIN_FREE_FRACTION * usage.total
    yield Check("disk", not low, free + (": free some space, or move ENCLAVE_HOME" if low else ""))


# -- the homes' disk images --

def check_home_images(settings) -> Iterator[Check]:
    """Each operator's home takes its quota from the state's filesystem (enclave.sandbox.home_image):
    what images have not taken yet (homes not made yet, quotas raised since, blocks a trim gave
    back) must fit in its free space, beside the hub's own state. And each running sandbox's home
    is its image, mounted."""
    from .. import workspaces
    from ..sandbox.home_image import is_mounted

    if not settings.home.is_dir() or _no_database_yet(settings):
        return
    taken = to_take = 0
    for ws in workspaces.all_workspaces(settings):
        quota = ws.effective_limits(settings.sandbox.limits).disk_mb * 2**20
        for user in ws.operators:
            _, image = settings.operator_home(user, ws.name)
            try:
                st = image.stat()
            except FileNotFoundError:
                to_take += quota
                continue
            allocated = st.st_blocks * 512
            taken += allocated
            to_take += max(max(quota, st.st_size) - allocated, 0)
    free = shutil.disk_usage(settings.home).free
    found = (f"home images take {taken / 2**30:.1f} GiB and may take {to_take / 2**30:.1f} GiB more "
             f"(every operator's home at its quota); {free / 2**30:.1f} GiB free on the filesystem of {settings.home}")
    if to_take > free - MIN_FREE_BYTES:
        yield Check("home images", False, found + ": lower quotas (enclave workspace set-limits WS disk_mb=...) "
                                                  "or free some space")
    else:
        yield Check("home images", True, found)
    running, unmounted = 0, []
    for spec_path in _running_specs(settings):
        layout = json.loads(spec_path.read_text())["layout"]
        running += 1
        home, image = Path(layout["home"]), Path(layout["home_image"])
        if not image.is_file():
            unmounted.append(f"{home} (its image {image} is missing)")
        elif not is_mounted(home):
            unmounted.append(f"{home} (not mounted: the sandbox writes outside its quota)")
    if unmounted:
        yield Check("mounted homes", False, f"{len(unmounted)} running sandboxes without their home's image: "
                                            f"{_listing(unmounted)}; stop and start them")
    else:
        yield Check("mounted homes", True, f"{running} running sandbox{'es' if running != 1 else ''}, "
                                           "each with its home's image mounted")


def _no_database_yet(settings) -> bool:
    """The state database is SQLite and not made yet (no hub or command has run here): there are no
    workspaces, and the doctor, which changes nothing, does not make it."""
    url = settings.enclave_db_url
    return url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists()


def _running_specs(settings) -> list[Path]:
    """The specs of the running sandboxes of this state directory: those their supervisors were
    started with (``python -m enclave.sandbox.supervisor SPEC``)."""
    sandboxes = str(settings.run_dir / "sandboxes") + "/"
    specs = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "enclave.sandbox.supervisor" in argv[:-2]:
            spec = argv[argv.index("enclave.sandbox.supervisor") + 1]
            if spec.startswith(sandboxes):
                specs.append(Path(spec))
    return sorted(specs)


# -- versions --

def _command_version(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else None


def _pinned(requirements: Path, package: str) -> str | None:
    for line in requirements.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip().lower() == package:
            return version.strip()
    return None


def check_versions(settings) -> Iterator[Check]:
    from importlib.metadata import PackageNotFoundError, version

    from ..settings import REPO_ROOT

    yield Check("python", sys.version_info >= (3, 11), f"{sys.version.split()[0]} at {sys.executable}"
                + ("" if sys.version_info >= (3, 11) else ": Enclave needs 3.11 or later"))
    # The shims (enclave/proxy.py, the single-user app) are written for the pinned JupyterHub.
    pinned = _pinned(REPO_ROOT / "requirements" / "hub.txt", "jupyterhub")
    try:
        installed = version("jupyterhub")
    except PackageNotFoundError:
        installed = None
    yield Check("jupyterhub", installed is not None and installed == pinned,
                f"{installed} (pinned {pinned})" if installed == pinned
                else f"{installed or 'not installed'}, pinned {pinned}: pip install -r requirements/hub.txt")
    bwrap = _command_version([settings.sandbox.bwrap, "--version"])
    yield Check("bubblewrap", bwrap is not None, bwrap or f"'{settings.sandbox.bwrap}' does not run: apt-get install bubblewrap")
    node = _command_version([shutil.which("node") or "node", "--version"])
    package = REPO_ROOT / "node_modules" / "configurable-http-proxy" / "package.json"
    proxy = json.loads(package.read_text()).get("version") if package.exists() else None
    if node and proxy:
        yield Check("configurable-http-proxy", True, f"{proxy} on node {node}")
    else:
        missing = ([] if node else ["node does not run: apt-get install nodejs npm"]) + \
                  ([] if proxy else ["not installed: npm ci (in the repository)"])
        yield Check("configurable-http-proxy", False, "; ".join(missing))

CHECKS: tuple[Callable, ...] = (check_state, check_sockets, check_cgroups, check_disk, check_home_images,
                                check_versions)


@main.command("doctor")
@pass_ctx
def doctor(ctx) -> None:
    """Check this installation: state modes and owners, sockets, cgroups, disk, the homes' disk
    images and versions."""
    failed = False
    for check in CHECKS:
        for verdict in check(ctx.settings):
            click.echo(verdict.line())
            failed = failed or not verdict.ok
    if failed:
        raise SystemExit(1)
