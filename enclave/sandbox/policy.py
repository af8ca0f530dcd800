"""The sandbox policy: what an operator's server and kernels can see and do, as data.

One :class:`SandboxPolicy` describes one sandbox: its mounts, identity, limits, network and the
command it runs. :func:`server_policy`, :func:`kernel_policy` and :func:`terminal_policy` build the
sandboxes of a workspace server from the same rules; the bubblewrap backend renders them to ``bwrap`` arguments
(``enclave.sandbox.bubblewrap``) and a container backend can read the same objects.

Layout inside a sandbox::

    /usr, /etc (selected files)    read-only system
    /opt/enclave/env               read-only Python environment (the operator's tools)
    /home/<user>                   the (user, workspace) home: the only writable persistent place,
                                   a disk image of its own, its size the quota (limits.disk_mb)
    /data/<release>                read-only, only the workspace's attached releases (kernels and
                                   terminals, never the server)
    /tmp                           private tmpfs of limits.tmp_mb (kernels and terminals: matplotlib's
                                   config dir in it holds the environment's prebuilt font list, read-only)
    /run/enclave/...               server only: its socket, the hub's and the export service's
                                   sockets, its audit receiver's socket, its runtime files, its
                                   JupyterLab settings and layouts (kept on the hub side between
                                   starts), JupyterLab's application settings (read-only: the
                                   display language); kernels see only their own ipc dir
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

ENV_MOUNT = "/opt/enclave/env"
RUN = "/run/enclave"
SERVER_RUN = f"{RUN}/server"
SERVER_SOCKET = f"{SERVER_RUN}/jupyter.sock"
# JupyterLab's user settings and workspaces (LabApp.user_settings_dir / workspaces_dir in the guard's
# system config): out of the home, where kernel code could write settings that Lab serves back.
LAB_STATE = f"{SERVER_RUN}/lab"
# JupyterLab's application settings (LabApp.app_settings_dir, on the server's command line): one
# generated, read-only overrides.json holding the display language the person chose on the hub.
LAB_APP_SETTINGS = f"{RUN}/lab-app-settings"
# The display languages JupyterLab is given (a language pack is installed for each but English).
LAB_LOCALES = ("en", "zh_CN")
LAUNCHER_SOCKET = f"{SERVER_RUN}/launcher.sock"
KERNELS_DIR = f"{RUN}/kernels"
HUB_SOCKET_DIR = f"{RUN}/hub"
EXPORTS_SOCKET_DIR = f"{RUN}/exports"
# The sandbox's receiver of audit records (hub side, enclave.sandbox.receiver): server only.
AUDIT_RECEIVER_DIR = f"{RUN}/audit"
WORKSPACE_FILE = f"{RUN}/workspace.json"

# Host /etc entries a Python analysis environment needs; everything else of /etc stays out
# (no resolv.conf, no host names, no credentials).
ETC_READONLY = (
    "/etc/alternatives",
    "/etc/bash.bashrc",
    "/etc/ca-certificates",
    "/etc/fonts",
    "/etc/inputrc",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/ssl",
)
# Debian 12 has a merged /usr: these are symlinks into it.
USR_SYMLINKS = (("usr/bin", "/bin"), ("usr/sbin", "/sbin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64"))


@dataclass(frozen=True)
class Mount:
    """``kind``: ro/rw bind of ``source``; tmpfs of ``size_mb``; or a file of generated ``content``
    (read-only). Every tmpfs has a size: unsized, it could take half the host's memory.

    ``system``: part of the operating system or of the operators' environment (``/usr``, the
    ``/etc`` files a Python environment needs, the environment at /opt/enclave/env, its font list).
    The bubblewrap backend binds them from the host; a container backend's image holds them."""

    target: str
    kind: Literal["ro", "rw", "tmpfs", "file", "symlink"]
    source: str = ""
    content: str = ""
    size_mb: int = 0
    system: bool = False


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    username: str
    home: str


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    pids: int
    cpus: float
    max_file_mb: int
    # The home's hard quota (the size of its disk image, enclave.sandbox.home_image).
    disk_mb: int
    # The size of the sandbox's /tmp.
    tmp_mb: int


@dataclass(frozen=True)
class SandboxPolicy:
    name: str
    argv: tuple[str, ...]
    identity: Identity
    limits: Limits
    mounts: tuple[Mount, ...]
    env: dict[str, str] = field(default_factory=dict)
    # "none": a network namespace of its own with only loopback. There is no other setting: a
    # sandbox never gets a route out; its server is reached over a unix socket.
    network: Literal["none"] = "none"
    workdir: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "SandboxPolicy":
        return cls(
            name=d["name"],
            argv=tuple(d["argv"]),
            identity=Identity(**d["identity"]),
            limits=Limits(**d["limits"]),
            mounts=tuple(Mount(**m) for m in d["mounts"]),
            env=dict(d["env"]),
            network=d["network"],
            workdir=d["workdir"],
        )


@dataclass(frozen=True)
class SandboxLayout:
    """Host-side paths of one workspace server's sandboxes."""

    env: Path  # the operator's Python environment (a venv)
    home: Path  # the (user, workspace) home: where its image is mounted
    home_image: Path  # the home's disk image (root's, out of every sandbox's reach)
    run: Path  # this sandbox's runtime directory (root-owned)
    hub_socket_dir: Path
    exports_socket_dir: Path
    data: tuple[tuple[Path, str], ...]  # (host folder, name under /data)
    lab_state: Path  # JupyterLab settings and layouts of this (user, workspace), kept between starts

    @property
    def server_run(self) -> Path:
        return self.run / "server"

    @property
    def kernels(self) -> Path:
        return self.run / "kernels"

    @property
    def workspace_file(self) -> Path:
        return self.run / "workspace.json"

    @property
    def audit_receiver(self) -> Path:
        """The folder of the sandbox's audit receiver socket (root's; the socket is the sandbox uid's)."""
        return self.run / "audit"


def base_python_prefix(env: Path) -> Path:
    """The interpreter installation a venv was made from (its ``home`` in pyvenv.cfg)."""
    cfg = (env / "pyvenv.cfg").read_text()
    for line in cfg.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return Path(value.strip()).parent
    raise ValueError(f"{env / 'pyvenv.cfg'} names no base interpreter ('home')")


def _system_mounts(env: Path, identity: Identity, limits: Limits) -> list[Mount]:
    mounts = [Mount("/usr", "ro", "/usr", system=True)]
    mounts += [Mount(target, "symlink", source, system=True) for source, target in USR_SYMLINKS]
    mounts += [Mount(p, "ro", p, system=True) for p in ETC_READONLY if Path(p).exists()]
    prefix = base_python_prefix(env)
    if not str(prefix).startswith("/usr/"):
        mounts.append(Mount(str(prefix), "ro", str(prefix), system=True))
    mounts += [
        Mount(ENV_MOUNT, "ro", str(env), system=True),
        Mount("/etc/passwd", "file", content=(
            f"root:x:0:0::/nonexistent:/usr/sbin/nologin\n"
            f"{identity.username}:x:{identity.uid}:{identity.gid}::{identity.home}:/bin/bash\n")),
        Mount("/etc/group", "file", content=f"root:x:0:\n{identity.username}:x:{identity.gid}:\n"),
        Mount("/etc/hosts", "file", content="127.0.0.1 localhost\n::1 localhost\n"),
        Mount("/tmp", "tmpfs", size_mb=limits.tmp_mb),
    ]
    return mounts


# Per-start places (the sandbox's own /tmp, a fresh tmpfs each start) for everything a program
# would otherwise read from, or cache in, the home: configuration, start-up files and caches there
# are files the operator writes, so none of them may be loaded (a poisoned cache is code: jedi's
# completion cache is unpickled). See docs/security-model.md, "What each process loads".
PER_START_DIRS = {
    "IPYTHONDIR": "/tmp/ipython",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    "JUPYTER_CONFIG_DIR": "/tmp/jupyter/config",
    "JUPYTER_DATA_DIR": "/tmp/jupyter/data",
    "XDG_CONFIG_HOME": "/tmp/config",
    "XDG_CACHE_HOME": "/tmp/cache",
    "XDG_DATA_HOME": "/tmp/data",
    "XDG_STATE_HOME": "/tmp/state",
}


# The operators' matplotlib settings, in the read-only environment (written by the Makefile): Chinese
# text falls back to Noto Sans CJK SC, with nothing for the operator to configure.
MATPLOTLIBRC = f"{ENV_MOUNT}/etc/matplotlibrc"
# matplotlib's font list, built once with the environment (``share/enclave/matplotlib`` in it) and
# mounted read-only where matplotlib looks for it (MPLCONFIGDIR), so that a kernel's first chart does
# not scan every system font. MPLCONFIGDIR itself stays writable: the bubblewrap backend makes a
# folder inside /tmp as /tmp is (1777).
FONT_CACHE = "share/enclave/matplotlib"


def _base_env(identity: Identity) -> dict[str, str]:
    return {
        "HOME": identity.home,
        "USER": identity.username,
        "LOGNAME": identity.username,
        "PATH": f"{ENV_MOUNT}/bin:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "SHELL": "/bin/bash",
        # Programs started from a terminal: no user site-packages (and no .pth files) from the home.
        # The sandboxes' own Python processes run in isolated mode (-I), which implies this.
        "PYTHONNOUSERSITE": "1",
        "MATPLOTLIBRC": MATPLOTLIBRC,
        # joblib (scikit-learn's n_jobs) runs in serial, quietly: its process pools need POSIX
        # semaphores in /dev/shm, which a sandbox does not have (a sandbox has one CPU by default).
        "JOBLIB_MULTIPROCESSING": "0",
        **PER_START_DIRS,
    }


# The single-user server's home: its own /tmp (a fresh tmpfs that no other sandbox sees), not the
# operator's home, so that nothing the server or the libraries it loads look for under "~" (Jupyter's
# user config and data paths, caches) is in a place the operator can write.
SERVER_HOME = "/tmp/server-home"


def lab_overrides(locale: str) -> str:
    """JupyterLab's ``overrides.json`` for the display language ``locale`` (one of LAB_LOCALES): the
    language, and no Settings > Language menu (the guard disables its plugin; its empty submenu
    would stay): the language is chosen on the hub's home page."""
    if locale not in LAB_LOCALES:
        raise ValueError(f"JupyterLab's display language must be one of {', '.join(LAB_LOCALES)} (got {locale!r})")
    language_menu = {"type": "submenu", "submenu": {"id": "jp-mainmenu-settings-language"}, "disabled": True}
    return json.dumps({
        "@jupyterlab/translation-extension:plugin": {"locale": locale},
        "@jupyterlab/mainmenu-extension:plugin": {"menus": [{"id": "jp-mainmenu-settings", "items": [language_menu]}]},
    }, indent=2) + "\n"


def server_policy(
    layout: SandboxLayout,
    identity: Identity,
    limits: Limits,
    name: str,
    hub_env: dict[str, str],
    terminals: bool = False,
    lab_locale: str = "en",
) -> SandboxPolicy:
    """The single-user server's sandbox: no /data, no network; sockets under /run/enclave.
    ``terminals``: the workspace allows terminals (each then runs in a sandbox of its own).
    ``lab_locale``: JupyterLab's display language, the person's choice (one of LAB_LOCALES): a
    generated read-only file, so nothing of the operator's is read for it."""
    overrides = lab_overrides(lab_locale)
    mounts = _system_mounts(layout.env, identity, limits) + [
        Mount(identity.home, "rw", str(layout.home)),
        Mount(SERVER_RUN, "rw", str(layout.server_run)),
        Mount(LAB_STATE, "rw", str(layout.lab_state)),
        Mount(KERNELS_DIR, "rw", str(layout.kernels)),
        Mount(HUB_SOCKET_DIR, "ro", str(layout.hub_socket_dir)),
        Mount(EXPORTS_SOCKET_DIR, "ro", str(layout.exports_socket_dir)),
        Mount(AUDIT_RECEIVER_DIR, "ro", str(layout.audit_receiver)),
        Mount(WORKSPACE_FILE, "ro", str(layout.workspace_file)),
        Mount(f"{LAB_APP_SETTINGS}/overrides.json", "file", content=overrides),
    ]
    env = _base_env(identity) | hub_env | {
        "HOME": SERVER_HOME,
        "JUPYTER_RUNTIME_DIR": f"{SERVER_RUN}/runtime",
        "ENCLAVE_LAUNCHER_SOCKET": LAUNCHER_SOCKET,
        "ENCLAVE_KERNELS_DIR": KERNELS_DIR,
    }
    # Isolated mode (-I): no working directory or script directory on sys.path, no PYTHON*
    # variables, no user site; and a working directory the operator cannot write ("/").
    argv = (
        f"{ENV_MOUNT}/bin/python", "-I", "-m", "enclave_singleuser",
        f"--sock={SERVER_SOCKET}",
        f"--ServerApp.root_dir={identity.home}",
        f"--LabApp.app_settings_dir={LAB_APP_SETTINGS}",
    )
    if terminals:
        argv += ("--ServerApp.terminals_enabled=True",
                 "--ServerApp.jpserver_extensions=jupyter_server_terminals=True")
    return SandboxPolicy(name=name, argv=argv, identity=identity, limits=limits,
                         mounts=tuple(mounts), env=env, workdir="/")


def _font_cache_mounts(env: Path) -> list[Mount]:
    """matplotlib's prebuilt font list, read-only, in MPLCONFIGDIR (none when the environment has no
    prebuilt list: matplotlib then builds one at its first import)."""
    mpl_dir = PER_START_DIRS["MPLCONFIGDIR"]
    return [Mount(f"{mpl_dir}/{cache.name}", "ro", str(cache), system=True)
            for cache in sorted((env / FONT_CACHE).glob("fontlist-v*.json"))]


def _workspace_mounts(server: SandboxPolicy, layout: SandboxLayout) -> list[Mount]:
    """What code of the workspace sees: the system, the home and the releases under /data."""
    identity = server.identity
    return (_system_mounts(layout.env, identity, server.limits) + _font_cache_mounts(layout.env)
            + [Mount(identity.home, "rw", str(layout.home))]
            + [Mount(f"/data/{name}", "ro", str(src)) for src, name in layout.data])


def kernel_policy(server: SandboxPolicy, layout: SandboxLayout, kernel_id: str,
                  workspace_env: dict[str, str]) -> SandboxPolicy:
    """A kernel's sandbox, derived from its server's: same identity and home, plus /data, minus
    every socket, runtime file and token of the server. Only the kernel's own ipc dir is shared.
    ``workspace_env``: the workspace's settings for code in the kernel (ACRO's thresholds)."""
    identity = server.identity
    ipc = f"{KERNELS_DIR}/{kernel_id}"
    mounts = _workspace_mounts(server, layout) + [Mount(ipc, "rw", str(layout.kernels / kernel_id))]
    # The kernel works in the notebook's folder (relative paths in notebooks keep working) but, in
    # isolated mode, does not import from it: ipykernel_launcher and everything it imports at start
    # or while answering requests come from the read-only environment. Code runs only as a
    # recorded execution (an operator who wants their own module adds its folder to sys.path in a cell).
    # Completion without jedi: jedi searches the working directory and its parents for the modules
    # named in the code being completed, and imports the compiled ones it finds there; IPython's
    # own completer lists and imports only from sys.path.
    argv = (
        f"{ENV_MOUNT}/bin/python", "-I", "-m", "ipykernel_launcher",
        "-f", f"{ipc}/connection.json", "--transport=ipc", "--IPCompleter.use_jedi=False",
    )
    # The kernel's environment is built here, not passed through from the server: no JUPYTERHUB_*
    # token or URL can leak into it.
    env = _base_env(identity) | workspace_env | {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    return SandboxPolicy(name=f"{server.name}-kernel-{kernel_id[:8]}", argv=argv, identity=identity,
                         limits=server.limits, mounts=tuple(mounts), env=env, workdir=identity.home)


# Makes the pty a terminal sandbox is started with its shell's controlling terminal (bubblewrap
# starts the shell on the pty but in no session of its own); a container backend whose first process
# already has its terminal as controlling terminal leaves it out (enclave.sandbox.docker).
CONTROLLING_TERMINAL = ("/usr/bin/setsid", "--ctty", "--wait")


def terminal_policy(server: SandboxPolicy, layout: SandboxLayout, terminal_id: str,
                    workspace_env: dict[str, str]) -> SandboxPolicy:
    """A terminal's sandbox: a kernel's view (home, /data, nothing of the server) running an
    interactive shell on the pty it is started with. ``setsid --ctty`` makes that pty the shell's
    controlling terminal, so Ctrl-C and job control work; ``--wait`` keeps the sandbox's first
    process alive until the shell exits.

    Commands run only as typed (and recorded by the relay): bash reads no start-up file from the
    home (``--norc --noprofile``), readline takes the system's inputrc (a key binding in
    ``~/.inputrc`` could type a command the operator never did), and history stays per terminal."""
    identity = server.identity
    argv = (*CONTROLLING_TERMINAL, "/bin/bash", "--norc", "--noprofile", "-i")
    env = _base_env(identity) | workspace_env | {
        "TERM": "xterm-256color",
        "PS1": r"\u@enclave:\w\$ ",
        "INPUTRC": "/etc/inputrc",
        "HISTFILE": "/tmp/bash_history",
    }
    return SandboxPolicy(name=f"{server.name}-terminal-{terminal_id[:8]}", argv=argv, identity=identity,
                         limits=server.limits, mounts=tuple(_workspace_mounts(server, layout)), env=env,
                         workdir=identity.home)


# -- sealed runs (issue #18): one notebook executed headless in a sandbox of its own ---------------

# The run's own folder in its home: the executed notebook and the driver's result are written there,
# and no input or output of a run may be put in it (enclave.sealed.runner).
SEALED_RUN_FOLDER = ".sealed-run"
SEALED_EXECUTED = "executed.ipynb"
SEALED_RESULT = "result.json"
# The driver: the sandbox's first process, run in isolated mode (-I) from the read-only environment,
# so nothing of the home is imported. It executes the notebook with nbclient on a kernel started in
# the same sandbox (there is no server to ask for a sibling): the environment's own ``python3``
# kernel, but as every kernel of a workspace is started, in isolated mode, without jedi, over ipc
# (TCP would need loopback), from a kernelspec in the sandbox's own /tmp that comes before every
# other (so a notebook naming another kernel, such as the workspaces' ``enclave-python``, runs on
# this one). It writes the executed notebook (as far as it ran) and its result into
# ~/.sealed-run/, and exits 0 when every cell ran, 1 when one failed.
SEALED_RUN_DRIVER = r"""
import json, os, sys
from pathlib import Path
notebook, out_dir, cell_seconds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
spec = Path("/tmp/jupyter-sealed/kernels/python3")
spec.mkdir(parents=True)
(spec / "kernel.json").write_text(json.dumps({
    "argv": [sys.executable, "-I", "-m", "ipykernel_launcher", "-f", "{connection_file}",
             "--IPCompleter.use_jedi=False"],
    "display_name": "Python 3 (ipykernel)", "language": "python"}))
os.environ["JUPYTER_PATH"] = "/tmp/jupyter-sealed"
import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
nb = nbformat.read(notebook, as_version=4)
client = NotebookClient(nb, km=AsyncKernelManager(
    kernel_name="python3", transport="ipc", ip="/tmp/jupyter-sealed/kernel-ipc",
    connection_file="/tmp/jupyter-sealed/kernel.json"),
                        kernel_name="python3", timeout=cell_seconds,
                        resources={"metadata": {"path": str(notebook.parent)}})
result = {"state": "succeeded", "error": None}
try:
    client.execute()
except CellExecutionError as exc:
    result = {"state": "failed", "error": {"type": exc.ename, "message": exc.evalue}}
except Exception as exc:
    result = {"state": "failed", "error": {"type": type(exc).__name__, "message": str(exc)}}
out_dir.mkdir(exist_ok=True)
try:
    nbformat.write(nb, out_dir / "executed.ipynb")
finally:
    (out_dir / "result.json").write_text(json.dumps(result, ensure_ascii=False))
sys.exit(0 if result["state"] == "succeeded" else 1)
"""


def sealed_run_policy(env: Path, identity: Identity, limits: Limits, name: str, home: Path,
                      data: tuple[Path, str], notebook: str, cell_seconds: int,
                      workspace_env: dict[str, str] | None = None) -> SandboxPolicy:
    """One sealed run's sandbox: the operators' environment read-only (the one workspace sandboxes
    run), its own fresh ``home`` (on the host: the run's disk image, holding only the notebook and
    the chosen inputs), ``data`` = (host folder, release) read-only at ``/data/<release>`` (the
    sealed view for a sealed run, the workspace's view of the synthetic release for its pre-run:
    the same path, so the same code reads either), a sized ``/tmp``, and nothing else: no network
    (only ``lo``), no socket of the hub, a server, the launcher or the audit receiver, no terminal.
    ``identity`` is the run's own uid, never a workspace sandbox's. ``notebook`` is the notebook's
    path relative to the home; ``cell_seconds`` the per-cell timeout (the whole run's is kept by
    the runner, which kills the sandbox). ``workspace_env``: the workspace's settings for code
    (ACRO's thresholds), as its kernels have them."""
    folder, release = data
    if not release or "/" in release or release in (".", ".."):
        raise ValueError(f"{release!r} is not a release name to mount under /data")
    if not notebook or Path(notebook).is_absolute() or ".." in Path(notebook).parts:
        raise ValueError(f"the notebook's path {notebook!r} is not a path inside the home")
    if cell_seconds <= 0:
        raise ValueError(f"the per-cell timeout must be positive (got {cell_seconds})")
    mounts = (_system_mounts(env, identity, limits) + _font_cache_mounts(env)
              + [Mount(identity.home, "rw", str(home)), Mount(f"/data/{release}", "ro", str(folder))])
    argv = (f"{ENV_MOUNT}/bin/python", "-I", "-c", SEALED_RUN_DRIVER, f"{identity.home}/{notebook}",
            f"{identity.home}/{SEALED_RUN_FOLDER}", str(cell_seconds))
    env_vars = _base_env(identity) | (workspace_env or {}) | {
        "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    return SandboxPolicy(name=name, argv=argv, identity=identity, limits=limits, mounts=tuple(mounts),
                         env=env_vars, workdir=identity.home)


def acro_thresholds(exports) -> dict:
    """The disclosure-control thresholds of ``exports`` (an ``ExportSettings``: [exports], or a
    workspace's export policy) under the names ACRO uses."""
    return {"safe_threshold": exports.min_cell_count, "safe_nk_n": exports.nk_n, "safe_nk_k": exports.nk_k,
            "safe_pratio_p": exports.p_ratio}


def acro_environment(exports) -> dict[str, str]:
    """A kernel's environment naming :func:`acro_thresholds`; ACRO in the kernel reads it
    (``enclave_guard.disclosure``)."""
    return {"ENCLAVE_ACRO_THRESHOLDS": json.dumps(acro_thresholds(exports))}
