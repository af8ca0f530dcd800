"""The hostile home: plant everything a trusted process might load wherever an operator can write,
and prove that none of it runs.

The operator controls every byte of their home (through the contents API, a kernel or a terminal).
The processes that police them (the single-user server with the guard, the terminal relay, and
the kernel launcher, which must run code only as a recorded execution) must load nothing from it.

Discovery: ``strace -f`` follows the hub while it starts a workspace's sandbox; the test then opens a
kernel from a notebook in a subfolder (so the kernel works in that folder), sends it every message
type the guard lets through (some imports are lazy), opens a terminal and runs a command. The trace
names every file those processes opened or looked for, and every Python module file they loaded.

Attack: with the sandbox stopped, plant in the home (its root, the notebook's folder, and every path
the trace saw probed there) a module of the same name as every module loaded, a package of the same
name as each of our own, ``.pth`` and ``sitecustomize`` files in the user site, Jupyter, IPython and
shell configuration and start-up files, and a poisoned pickle wherever a cache was read. Each planted
file, if it ever runs, leaves a ``PWNED-*`` marker next to itself. Then start again under strace,
drive the same, and check.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from enclave_testing import REPO, Hub, Session, wait_for

from enclave.sandbox.policy import ENV_MOUNT, base_python_prefix

MARKER = "PWNED-"

# Every kernel request type the guard lets through (policy.INCOMING_MESSAGES), with a body that
# makes the kernel do real work (completion and inspection import jedi and parse modules).
KERNEL_REQUESTS = (
    ("execute_request", {"code": "import json, os", "silent": False, "store_history": True,
                         "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}),
    ("complete_request", {"code": "import json\njson.du", "cursor_pos": len("import json\njson.du")}),
    ("complete_request", {"code": "os.path.jo", "cursor_pos": len("os.path.jo")}),
    ("complete_request", {"code": "import co", "cursor_pos": len("import co")}),
    ("complete_request", {"code": "from collections import Ord", "cursor_pos": len("from collections import Ord")}),
    ("complete_request", {"code": "open('wo", "cursor_pos": len("open('wo")}),
    ("inspect_request", {"code": "json.dumps", "cursor_pos": len("json.du"), "detail_level": 1}),
    ("history_request", {"output": False, "raw": True, "hist_access_type": "tail", "n": 10}),
    ("is_complete_request", {"code": "for i in range(3):"}),
    ("comm_info_request", {}),
    ("kernel_info_request", {}),
)

# Python that, wherever it runs, leaves a marker beside its own file and then lets the real module
# load (or run, for ``python -m``), so a shadowed import does not stop the victim, as a real
# attacker's would not.
_MODULE = '''\
import os as _os, sys as _sys
_here = _os.path.dirname(_os.path.abspath(__file__))
open(_os.path.join(_here, "{marker}" + {name!r} + "-" + str(_os.getpid())), "w").write(" ".join(_sys.argv))
_sys.path[:] = [p for p in _sys.path if _os.path.abspath(p or ".") != _here]
if __name__ == "__main__":
    import runpy
    runpy.run_module({name!r}, run_name="__main__", alter_sys=True)
else:
    del _sys.modules[__name__]
    _sys.modules[__name__] = __import__("importlib").import_module(__name__)
'''


def module_source(name: str) -> str:
    return _MODULE.format(marker=MARKER, name=name)


def marker_code(home: str, tag: str) -> str:
    """One line of Python that leaves the marker ``tag`` in the sandbox home ``home``."""
    return f"open({home + '/' + MARKER + tag!r}, 'w').write('ran')"


class _Poison:
    """Unpickling this runs code (as a poisoned cache file would)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def poisoned_pickle(home: str, tag: str) -> bytes:
    return pickle.dumps(_Poison(marker_code(home, tag)))


# -- the trace ----------------------------------------------------------------------------------

_CALL = re.compile(r'^(\d+) +(?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$')
_PATH = re.compile(r'"((?:[^"\\]|\\.)*)"')
_RESULT = re.compile(r"\) += (-?\d+)")


@dataclass
class Trace:
    """File system calls seen by ``strace -f``: (pid, call, path, succeeded)."""

    calls: list[tuple[int, str, str, bool]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> "Trace":
        trace, pending = cls(), {}
        for line in text.splitlines():
            m = _CALL.match(line)
            if not m:
                continue
            pid, resumed, call, rest = int(m[1]), m[2], m[3], m[4]
            if resumed:
                call, head = pending.pop(pid, (resumed, ""))
                rest = head + rest
            elif rest.endswith("<unfinished ...>"):
                pending[pid] = (call, rest)
                continue
            path = _PATH.search(rest)
            result = _RESULT.search(rest)
            if path:
                ok = result is not None and int(result[1]) >= 0
                trace.calls.append((pid, call, path[1].encode().decode("unicode_escape"), ok))
        return trace

    def paths_under(self, root: str) -> set[str]:
        return {p for _, _, p, _ in self.calls if p == root or p.startswith(root.rstrip("/") + "/")}

    def opened(self) -> set[str]:
        return {p for _, call, p, ok in self.calls if ok and call in ("open", "openat", "openat2", "execve")}

    def module_names(self, roots: list[str]) -> set[str]:
        """Top-level names of the Python modules and packages loaded from ``roots`` (a package
        shows as a folder, a module as a .py, .pyc or extension file, also under __pycache__)."""
        names = set()
        for path in self.opened():
            root = next((r for r in roots if path.startswith(r + "/")), None)
            if root is None:
                continue
            parts = path[len(root) + 1:].split("/")
            if parts[0] == "__pycache__":
                parts = parts[1:]
            if not parts:
                continue
            first = parts[0]
            if len(parts) == 1 and not first.endswith((".py", ".pyc", ".so")):
                continue  # a data file beside the modules, not a module
            name = first.split(".")[0]
            if name.isidentifier():
                names.add(name)
        return names


class Strace:
    """``strace -f`` attached to a running process (and all it starts from then on)."""

    def __init__(self, pid: int, out: Path):
        self.out = out
        self.proc = subprocess.Popen(
            ["strace", "-f", "-qq", "-s", "4096", "-e", "trace=%file", "-e", "signal=none",
             "-o", str(out), "-p", str(pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # strace writes nothing until the process makes a call; give it time to attach.
        wait_for(lambda: self._attached(pid), 30, f"strace to attach to {pid}")

    def _attached(self, pid: int) -> bool:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(re.search(r"TracerPid:\s+(\d+)", status)[1]) == self.proc.pid

    def stop(self) -> Trace:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        return Trace.parse(self.out.read_text(errors="replace"))


# -- what one round drives ----------------------------------------------------------------------


@dataclass
class Round:
    trace: Trace
    kernel_modules: set[str]


NOTEBOOK_DIR = "analysis"


def drive(hub: Hub, session: Session, workspace: str, trace_to: Path) -> Round:
    """Start the workspace's sandbox under strace, use it as an operator does, stop tracing."""
    strace = Strace(hub.proc.pid, trace_to)
    try:
        r = session.start(workspace)
        assert r.status_code == 200, r.text
        nb = f"{NOTEBOOK_DIR}/work.ipynb"
        r = session.server_api(workspace, "PUT", f"/contents/{NOTEBOOK_DIR}", json={"type": "directory"})
        assert r.status_code in (200, 201), r.text
        r = session.server_api(workspace, "PUT", f"/contents/{nb}", json={
            "type": "notebook", "format": "json",
            "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}})
        assert r.status_code in (200, 201), r.text
        kernel = session.notebook_kernel(workspace, nb)
        for msg_type, content in KERNEL_REQUESTS:
            kinds = [m["msg_type"] for m in kernel.request(msg_type, content)]
            assert msg_type.replace("_request", "_reply") in kinds, (msg_type, kinds)
        # What the kernel imported at start and while answering, by top-level name.
        modules = {name.split(".")[0] for name in kernel.value("import sys, json; print(json.dumps(sorted(sys.modules)))")}
        assert kernel.run("import os; print(os.getcwd())")[0].strip().endswith("/" + NOTEBOOK_DIR)
        kernel.close()
        terminal = session.terminal(workspace)
        assert terminal.run("echo terminal-works").strip() == "terminal-works"
        terminal.close()
        assert session.server_api(workspace, "GET", "/contents/").status_code == 200
        session.stop(workspace)
    finally:
        trace = strace.stop()
    return Round(trace, modules)


# -- planting -----------------------------------------------------------------------------------

# Configuration and start-up files that Python, Jupyter, IPython, bash and readline read from a home,
# relative to it. Python files leave a marker; JSON configuration would switch the guard off.
_GUARD_OFF = json.dumps({"ServerApp": {"jpserver_extensions": {"enclave_guard": False},
                                       "disable_check_xsrf": True},
                         "ContentsManager": {"allow_hidden": True}})


def startup_files(home: str) -> dict[str, str | bytes]:
    py = lambda tag: marker_code(home, tag) + "\n"  # noqa: E731
    shell = lambda tag: f"touch {home}/{MARKER}{tag}\n"  # noqa: E731
    user_site = ".local/lib/python3.11/site-packages"
    return {
        f"{user_site}/pwned.pth": "import os; " + marker_code(home, "pth") + "\n",
        f"{user_site}/sitecustomize.py": py("user-site-sitecustomize"),
        f"{user_site}/usercustomize.py": py("usercustomize"),
        "sitecustomize.py": py("sitecustomize"),
        "usercustomize.py": py("home-usercustomize"),
        ".jupyter/jupyter_server_config.py": py("jupyter-server-config-py"),
        ".jupyter/jupyter_config.py": py("jupyter-config-py"),
        ".jupyter/jupyter_server_config.json": _GUARD_OFF,
        ".jupyter/jupyter_config.json": _GUARD_OFF,
        ".jupyter/jupyter_server_config.d/pwned.json": _GUARD_OFF,
        "jupyter_server_config.py": py("cwd-jupyter-server-config-py"),
        "jupyter_server_config.json": _GUARD_OFF,
        ".ipython/profile_default/startup/00-pwned.py": py("ipython-startup"),
        ".ipython/profile_default/ipython_config.py": py("ipython-config"),
        ".ipython/profile_default/ipython_kernel_config.py": py("ipython-kernel-config"),
        f"{NOTEBOOK_DIR}/ipython_config.py": py("cwd-ipython-config"),
        f"{NOTEBOOK_DIR}/ipython_kernel_config.py": py("cwd-ipython-kernel-config"),
        ".bashrc": shell("bashrc"),
        ".bash_profile": shell("bash-profile"),
        ".bash_login": shell("bash-login"),
        ".profile": shell("profile"),
        ".bash_history": f"touch {home}/{MARKER}history\n",
        # Readline runs a macro on Enter: it would append a command the operator never typed.
        ".inputrc": f'"\\r": "; touch {home}/{MARKER}inputrc\\n"\n',
    }


def content_for(path: str, home: str) -> str | bytes | None:
    """What to plant at a path the trace saw probed, by its kind; None if nothing fits."""
    name = path.rsplit("/", 1)[-1]
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", path.removeprefix(home + "/"))
    if name.endswith(".py"):
        return marker_code(home, tag) + "\n"
    if name.endswith(".pth"):
        return "import os; " + marker_code(home, tag) + "\n"
    if name.endswith((".pkl", ".pickle")):
        return poisoned_pickle(home, tag)
    if name.endswith(".json"):
        return _GUARD_OFF
    return None


@dataclass
class Planted:
    files: set[Path]
    """Host paths of everything planted."""


def plant(host_home: Path, sandbox_home: str, seen: Round) -> Planted:
    """Fill the (stopped) sandbox's home with everything that would run if anything loaded it."""
    files: set[Path] = set()

    def put(rel: str, content: str | bytes) -> None:
        target = host_home / rel
        if target.exists() and target.is_dir():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
        files.add(target)

    stdlib = str(base_python_prefix(REPO / ".venv-sandbox") / "lib" / "python3.11")
    roots = [f"{ENV_MOUNT}/lib/python3.11/site-packages", f"{stdlib}/lib-dynload", stdlib]
    names = seen.trace.module_names(roots) | seen.kernel_modules
    names.discard("__main__")
    for name in sorted(names):
        for folder in ("", NOTEBOOK_DIR + "/"):
            put(f"{folder}{name}.py", module_source(name))
    # Our own packages, as packages: `python -m enclave_guard.terminal_relay` needs a package.
    for package in ("enclave_guard", "enclave_singleuser", "ipykernel", "jupyterhub"):
        put(f"{package}/__init__.py", module_source(package))
        put(f"{package}/__main__.py", module_source(package + ".__main__"))
    for rel, content in startup_files(sandbox_home).items():
        put(rel, content)
    for path in seen.trace.paths_under(sandbox_home):
        content = content_for(path, sandbox_home)
        if content is not None and path != sandbox_home:
            put(path.removeprefix(sandbox_home + "/"), content)
    # Everything planted belongs to the sandbox's own uid, as the operator's own files do.
    uid = host_home.stat().st_uid
    for f in files:
        for p in [f, *f.relative_to(host_home).parents]:
            os.chown(host_home / p, uid, uid)
    return Planted(files)


def markers(host_home: Path) -> list[str]:
    return sorted(str(p.relative_to(host_home)) for p in host_home.rglob(MARKER + "*"))


def opened_planted(trace: Trace, planted: Planted, host_home: Path, sandbox_home: str) -> list[str]:
    """Planted files that any process of the sandbox opened (by their path inside the sandbox)."""
    inside = {sandbox_home + "/" + str(f.relative_to(host_home)) for f in planted.files}
    return sorted(trace.opened() & inside)
