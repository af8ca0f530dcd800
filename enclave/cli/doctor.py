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

from ..i18n import N_
from . import main, pass_ctx
from .language import pgettext, translated

ROOT = 0
# Below either, the state directory's filesystem is about to fill up (databases, homes, logs).
MIN_FREE_BYTES = 2 * 2**30
MIN_FREE_FRACTION = 0.05
# Paths named in one line, at most; the line says how many there are.
SHOWN = 5


class Check:
    """The verdict of one check: its name, whether it passed, and what it found or what to do (an
    English text marked with ``N_``, ``%(name)s`` filled from ``params``), shown in the admin's
    language; a failed check's line ends with its stable code (``[doctor.state_modes]``)."""

    def __init__(self, name: str, ok: bool, message: str, **params):
        self.name, self.ok, self.message, self.params = name, ok, message, params

    @property
    def code(self) -> str:
        return "doctor." + self.name.replace(" ", "_").replace("-", "_")

    def line(self) -> str:
        said = translated(self.message) % self.params if self.params else translated(self.message)
        verdict = pgettext("doctor", "OK") if self.ok else pgettext("doctor", "FAIL")
        return f"{verdict} {translated(self.name)}: {said}" + ("" if self.ok else f" [{self.code}]")


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    more = len(items) - SHOWN
    return shown + (translated(N_(" and %(n)s more")) % {"n": more} if more > 0 else "")


# -- the state directory --

def check_state(settings) -> Iterator[Check]:
    from ..host_state import not_owned_by, open_to_others

    home = settings.home
    if not home.is_dir():
        yield Check(N_("state modes"), False, N_("%(home)s does not exist: set ENCLAVE_HOME, or start the hub"
                                                 " (enclave hub)"), home=home)
        return
    loose = [f"{path} ({mode:o})" for path, mode in open_to_others(home)]
    if loose:
        yield Check(N_("state modes"), False, N_("%(n)s paths open to other local users: %(paths)s; run 'chmod go="
                                                 " PATH' on each, or restart the hub, which tightens them"),
                    n=len(loose), paths=_listing(loose))
    else:
        yield Check(N_("state modes"), True, N_("%(home)s is private (0700, files 0600), but for what sandboxes"
                                                " reach"), home=home)
    strangers = [f"{path} (uid {uid})" for path, uid in not_owned_by(home, ROOT)]
    if strangers:
        yield Check(N_("state owners"), False, N_("%(n)s paths not owned by root: %(paths)s; run 'chown root:root"
                                                  " PATH' on each"), n=len(strangers), paths=_listing(strangers))
    else:
        yield Check(N_("state owners"), True, N_("everything private in the state directory is root's"))


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
        return Check(name, False, N_("no socket at %(path)s: is the hub running? start it with 'enclave hub'"),
                     path=path)
    if not _listening(path):
        return Check(name, False, N_("nothing listens on %(path)s (left by a hub that was killed): restart the hub"),
                     path=path)
    if _others_may_reach(path):
        return Check(name, False, N_("any local user may connect to %(path)s: chmod 700 the state directory"),
                     path=path)
    mode, folder_mode = stat.S_IMODE(path.stat().st_mode), stat.S_IMODE(path.parent.stat().st_mode)
    if for_sandboxes:
        if not (mode & 0o002 and folder_mode & 0o001):
            return Check(name, False, N_("sandboxes cannot connect to %(path)s (mode %(mode)s, folder %(folder)s):"
                                         " restart the hub"), path=path, mode=f"{mode:o}", folder=f"{folder_mode:o}")
        return Check(name, True, N_("%(path)s listening; root on the host, sandboxes through their mount"), path=path)
    if mode & 0o077 or folder_mode & 0o077 or path.stat().st_uid != ROOT:
        return Check(name, False, N_("%(path)s is open beyond root (mode %(mode)s, folder %(folder)s): restart the"
                                     " hub"), path=path, mode=f"{mode:o}", folder=f"{folder_mode:o}")
    return Check(name, True, N_("%(path)s listening; root only"), path=path)


def check_sockets(settings) -> Iterator[Check]:
    from ..audit import socket_path as audit_socket
    from ..exports.sockets import intake_socket

    yield check_socket(N_("hub socket"), settings.hub_socket, for_sandboxes=True)
    yield check_socket(N_("audit socket"), audit_socket(settings), for_sandboxes=False)
    yield check_socket(N_("exports intake socket"), intake_socket(settings), for_sandboxes=True)


# -- cgroups --

def check_cgroups(settings) -> Iterator[Check]:
    from ..sandbox import limits

    hierarchy = limits.cgroup_hierarchy()
    if hierarchy.version == 2 and hierarchy.missing:
        yield Check("cgroups", False, N_("cgroup v2 without %(missing)s delegated to sandboxes (memory, processes and"
                                         " CPU are then limited by rlimits only): %(command)s"),
                    missing=", ".join(hierarchy.missing),
                    command=f"echo '+{' +'.join(hierarchy.missing)}' > {limits.CGROUP_ROOT}/cgroup.subtree_control")
    elif hierarchy.version == 2:
        yield Check("cgroups", True, N_("cgroup v2, %(controllers)s delegated"),
                    controllers=", ".join(limits.CONTROLLERS))
    elif hierarchy.missing:
        yield Check("cgroups", False, N_("no cgroup v2, and cgroup v1 lacks %(missing)s (limits fall back to"
                                         " rlimits): boot with cgroup v2 (systemd's default)"),
                    missing=", ".join(hierarchy.missing))
    else:
        yield Check("cgroups", True, N_("cgroup v1 controllers %(controllers)s (v2 is not mounted with them at"
                                        " /sys/fs/cgroup)"), controllers=", ".join(limits.CONTROLLERS))
    leftovers = [str(d) for d in limits.leftover_cgroups()]
    if leftovers:
        yield Check(N_("leftover cgroups"), False, N_("%(n)s sandbox cgroups hold no process: %(paths)s; remove them"
                                                      " with rmdir"), n=len(leftovers), paths=_listing(leftovers))
    else:
        yield Check(N_("leftover cgroups"), True, N_("none: every sandbox cgroup holds a running sandbox"))


# -- disk --

def check_disk(settings) -> Iterator[Check]:
    home = next(p for p in (settings.home, *settings.home.parents) if p.exists())  # where it will be made
    usage = shutil.disk_usage(home)
    figures = {"free": f"{usage.free / 2**30:.1f}", "total": f"{usage.total / 2**30:.1f}", "home": home}
    if usage.free < MIN_FREE_BYTES or usage.free < MIN_FREE_FRACTION * usage.total:
        yield Check(N_("disk"), False, N_("%(free)s GiB free of %(total)s GiB on the filesystem of %(home)s: free some"
                                          " space, or move ENCLAVE_HOME"), **figures)
    else:
        yield Check(N_("disk"), True, N_("%(free)s GiB free of %(total)s GiB on the filesystem of %(home)s"), **figures)


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
    figures = {"taken": f"{taken / 2**30:.1f}", "to_take": f"{to_take / 2**30:.1f}", "free": f"{free / 2**30:.1f}",
               "home": settings.home}
    if to_take > free - MIN_FREE_BYTES:
        yield Check(N_("home images"), False, N_("home images take %(taken)s GiB and may take %(to_take)s GiB more"
                                                " (every operator's home at its quota); %(free)s GiB free on the"
                                                " filesystem of %(home)s: lower quotas (enclave workspace set-limits"
                                                " WS disk_mb=...) or free some space"), **figures)
    else:
        yield Check(N_("home images"), True, N_("home images take %(taken)s GiB and may take %(to_take)s GiB more"
                                               " (every operator's home at its quota); %(free)s GiB free on the"
                                               " filesystem of %(home)s"), **figures)
    running, unmounted = 0, []
    for spec_path in _running_specs(settings):
        layout = json.loads(spec_path.read_text())["layout"]
        running += 1
        home, image = Path(layout["home"]), Path(layout["home_image"])
        if not image.is_file():
            unmounted.append(translated(N_("%(home)s (its image %(image)s is missing)")) % {"home": home, "image": image})
        elif not is_mounted(home):
            unmounted.append(translated(N_("%(home)s (not mounted: the sandbox writes outside its quota)"))
                             % {"home": home})
    if unmounted:
        yield Check(N_("mounted homes"), False, N_("%(n)s running sandboxes without their home's image: %(homes)s;"
                                                   " stop and start them"), n=len(unmounted), homes=_listing(unmounted))
    elif running == 1:
        yield Check(N_("mounted homes"), True, N_("1 running sandbox, each with its home's image mounted"))
    else:
        yield Check(N_("mounted homes"), True, N_("%(n)s running sandboxes, each with its home's image mounted"),
                    n=running)


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

    python = {"version": sys.version.split()[0], "path": sys.executable}
    if sys.version_info >= (3, 11):
        yield Check("python", True, N_("%(version)s at %(path)s"), **python)
    else:
        yield Check("python", False, N_("%(version)s at %(path)s: Enclave needs 3.11 or later"), **python)
    # The shims (enclave/proxy.py, the single-user app) are written for the pinned JupyterHub.
    pinned = _pinned(REPO_ROOT / "requirements" / "hub.txt", "jupyterhub")
    try:
        installed = version("jupyterhub")
    except PackageNotFoundError:
        installed = None
    if installed is not None and installed == pinned:
        yield Check("jupyterhub", True, N_("%(installed)s (pinned %(pinned)s)"), installed=installed, pinned=pinned)
    elif installed is None:
        yield Check("jupyterhub", False, N_("not installed, pinned %(pinned)s: pip install -r requirements/hub.txt"),
                    pinned=pinned)
    else:
        yield Check("jupyterhub", False, N_("%(installed)s, pinned %(pinned)s: pip install -r requirements/hub.txt"),
                    installed=installed, pinned=pinned)
    yield from check_backend(settings)
    node = _command_version([shutil.which("node") or "node", "--version"])
    package = REPO_ROOT / "node_modules" / "configurable-http-proxy" / "package.json"
    proxy = json.loads(package.read_text()).get("version") if package.exists() else None
    if node and proxy:
        yield Check("configurable-http-proxy", True, N_("%(proxy)s on node %(node)s"), proxy=proxy, node=node)
    else:
        missing = ([] if node else [translated(N_("node does not run: apt-get install nodejs npm"))]) + \
                  ([] if proxy else [translated(N_("not installed: npm ci (in the repository)"))])
        yield Check("configurable-http-proxy", False, "%(missing)s", missing="; ".join(missing))

def check_backend(settings) -> Iterator[Check]:
    """What makes the sandboxes: bubblewrap on this host; or Docker, asked here or, in the container
    deployment, of the launcher (the hub's container has no Docker socket)."""
    sandbox = settings.sandbox
    if sandbox.backend == "bubblewrap":
        bwrap = _command_version([sandbox.bwrap, "--version"])
        if bwrap is not None:
            yield Check("bubblewrap", True, "%(version)s", version=bwrap)  # its own words
        else:
            yield Check("bubblewrap", False, N_("'%(command)s' does not run: apt-get install bubblewrap"),
                        command=sandbox.bwrap)
        return
    if sandbox.launcher:
        import asyncio

        from ..sandbox.launcher import LauncherClient, LauncherError, socket_path

        try:
            status = asyncio.run(LauncherClient(socket_path(settings)).status(sandbox.image))
        except LauncherError as exc:
            yield Check("launcher", False, N_("%(error)s: is the launcher's container running?"), error=str(exc))
            return
        yield Check("launcher", True, N_("answers at %(path)s"), path=str(socket_path(settings)))
    else:
        from ..sandbox.launcher import docker_status

        status = docker_status(sandbox.image)
    if status["error"]:
        yield Check("docker", False, N_("the Docker daemon does not answer: %(error)s"), error=status["error"])
    elif not status["image"]:
        yield Check("docker", False, N_("Docker %(version)s has no image %(image)s: run images/build.sh"),
                    version=status["version"], image=sandbox.image)
    else:
        yield Check("docker", True, N_("Docker %(version)s, image %(image)s"), version=status["version"],
                    image=sandbox.image)


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
