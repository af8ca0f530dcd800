"""Render a :class:`SandboxPolicy` as a Docker container, and run it: the Docker backend, beside
``bubblewrap.py``. The same policy objects (:func:`~enclave.sandbox.policy.server_policy`,
:func:`~enclave.sandbox.policy.kernel_policy`, :func:`~enclave.sandbox.policy.terminal_policy`)
become a container each, rule for rule:

==========================  ==========================================================================
the policy says             the container gets
==========================  ==========================================================================
``network = "none"``        ``network_mode="none"``: a network namespace with only ``lo``, no route
identity (uid, gid)         ``user="uid:gid"``, no supplementary groups; ``/etc/passwd`` and
                            ``/etc/group`` are the policy's generated files
``system`` mounts           nothing: the image (``enclave/sandbox``) holds ``/usr``, ``/etc`` and the
                            operators' environment at the same paths
``ro`` / ``rw`` binds       bind mounts of the same host paths (``ro``: read-only)
``tmpfs``                   a tmpfs of the same size, mode 1777
``file``                    the generated file, written beside the sandbox's runtime files and bound
                            read-only
limits                      ``mem_limit`` = ``memswap_limit`` (no swap), ``pids_limit``, ``nano_cpus``,
                            ulimits ``nproc``, ``fsize`` and ``core`` as the bubblewrap backend's
                            rlimits; inside the sandbox's cgroup (``cgroup_parent``) when there is
                            one, so that the server and its kernels share one limit
always                      a read-only root file system, every capability dropped,
                            ``no-new-privileges``, no ``/dev/shm`` (``ipc_mode="none"``), host name
                            ``enclave``, and never the Docker socket; Docker's own
                            ``/etc/resolv.conf`` (the host's resolver) and ``/etc/hostname`` are
                            replaced by generated files (no resolver, and ``enclave``), and its
                            ``/sys`` (the host's, read-only) by an empty tmpfs
==========================  ==========================================================================

The paths in a policy are the host's: whoever creates the containers (the supervisor, in the
launcher container of a Compose deployment) sees the state directory at the same path as the host's
Docker daemon does.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal as signals
import socket
import threading
from pathlib import Path

import docker
from docker.errors import APIError, NotFound
from docker.models.containers import Container
from docker.types import Mount as DockerMount
from docker.types import Ulimit

from .policy import CONTROLLING_TERMINAL, ENV_MOUNT, Mount, SandboxPolicy

IMAGE = "enclave/sandbox"
# Every sandbox container carries these labels: what it is, which sandbox (the policy's name), and
# the runtime directory of the server it belongs to (which names the deployment: see
# remove_orphans()).
LABEL_ROLE = "org.enclave.role"
LABEL_SANDBOX = "org.enclave.sandbox"
LABEL_RUN = "org.enclave.run"


def container_name(policy: SandboxPolicy) -> str:
    """The policy's name with its uid: unique on the host across deployments and test hubs
    (each hands out its own uids), as the sandbox's cgroup is."""
    return f"enclave-{policy.name}-{policy.identity.uid}"


def _file_name(target: str) -> str:
    return target.strip("/").replace("/", "_")


def container_options(policy: SandboxPolicy, image: str, files_dir: Path, cgroup_parent: str | None = None,
                      run_dir: Path | None = None) -> dict:
    """The keyword arguments of ``docker.containers.create`` for ``policy``. Generated files
    (``kind="file"``) are written into ``files_dir``; ``run_dir`` is the server's runtime directory."""
    if policy.network != "none":  # pragma: no cover - the policy type admits no other value
        raise ValueError(f"sandbox {policy.name}: network {policy.network!r} is not 'none'")
    files_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    files_dir.chmod(0o755)  # bound files are read by the sandbox's uid
    mounts, tmpfs = [], {}
    # Docker mounts these three files into every container, network or not, unless mounted over.
    docker_files = {"/etc/resolv.conf": "", "/etc/hostname": "enclave\n", "/etc/hosts": "127.0.0.1 localhost\n"}
    policy_files = {m.target: m.content for m in policy.mounts if m.kind == "file"}
    generated = [*policy.mounts, *(Mount(target, "file", content=content)
                                   for target, content in docker_files.items() if target not in policy_files)]
    for m in generated:
        if m.system:
            continue
        if m.kind in ("ro", "rw"):
            mounts.append(DockerMount(m.target, m.source, type="bind", read_only=m.kind == "ro"))
        elif m.kind == "tmpfs":
            if m.size_mb <= 0:
                raise ValueError(f"tmpfs {m.target} has no size")
            tmpfs[m.target] = f"size={m.size_mb}m,mode=1777,nosuid,nodev"
        elif m.kind == "file":
            path = files_dir / _file_name(m.target)
            path.write_text(m.content)
            path.chmod(0o644)
            mounts.append(DockerMount(m.target, str(path), type="bind", read_only=True))
        else:  # a symlink is the system's: the image has it
            raise ValueError(f"sandbox {policy.name}: a {m.kind} mount at {m.target} is not the system's")
    # No /sys, as in a bubblewrap sandbox: Docker mounts the host's (read-only), network devices and all.
    tmpfs["/sys"] = "size=4k,mode=0555,nosuid,nodev,noexec"
    limits = policy.limits
    memory = limits.memory_mb * 2**20
    file_size = limits.max_file_mb * 2**20
    return {
        "image": image,
        "command": list(policy.argv),
        "entrypoint": [],
        "user": f"{policy.identity.uid}:{policy.identity.gid}",
        "environment": dict(policy.env),
        "working_dir": policy.workdir or "/",
        "hostname": "enclave",
        "network_mode": "none",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "ipc_mode": "none",
        "mounts": mounts,
        "tmpfs": tmpfs,
        "mem_limit": memory,
        "memswap_limit": memory,
        "pids_limit": limits.pids,
        "nano_cpus": int(limits.cpus * 1e9),
        "ulimits": [Ulimit(name="nproc", soft=limits.pids, hard=limits.pids),
                    Ulimit(name="fsize", soft=file_size, hard=file_size),
                    Ulimit(name="core", soft=0, hard=0)],
        "cgroup_parent": cgroup_parent,
        "labels": {LABEL_ROLE: "sandbox", LABEL_SANDBOX: policy.name,
                   **({LABEL_RUN: str(run_dir)} if run_dir is not None else {})},
        "name": container_name(policy),
        "detach": True,
    }


class DockerSandbox:
    """One running sandbox container, as the supervisor handles a sandbox of either backend:
    ``returncode`` (None while it runs, set as soon as it exits, as an asyncio process's is),
    ``wait()``, ``signal()``, ``kill()``, ``remove()``. Made in a running event loop."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.returncode: int | None = None
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        # A thread of its own for the whole of the container's life: waiting in asyncio's default
        # executor would take one of its few threads per sandbox, and a workspace's kernels and
        # terminals would leave none for anything else.
        threading.Thread(target=self._watch, args=(loop,), daemon=True, name=f"wait-{container.name}").start()

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            code = self.container.wait()["StatusCode"]
        except (NotFound, APIError, OSError):  # removed from under it: it has ended all the same
            code = -signals.SIGKILL
        loop.call_soon_threadsafe(self._ended, code)

    def _ended(self, code: int) -> None:
        self.returncode = code
        if not self._exited.done():
            self._exited.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def signal(self, signum: int) -> None:
        if self.returncode is not None:
            return
        try:
            self.container.kill(signal=signals.Signals(signum).name)
        except (NotFound, APIError):  # it has just exited
            pass

    def kill(self) -> None:
        self.signal(signals.SIGKILL)

    def remove(self) -> None:
        try:
            self.container.remove(force=True)
        except NotFound:
            pass


async def start(client: docker.DockerClient, policy: SandboxPolicy, image: str, files_dir: Path,
                log_path: Path, cgroup_parent: str | None = None, run_dir: Path | None = None) -> DockerSandbox:
    """Create and start ``policy``'s container; its output is appended to ``log_path``. A container
    left by an earlier run under the same name (a killed supervisor's) is removed first."""
    container = await _run(client, container_options(policy, image, files_dir, cgroup_parent, run_dir))
    threading.Thread(target=_copy_logs, args=(container, log_path), daemon=True,
                     name=f"logs-{policy.name}").start()
    return DockerSandbox(container)


# The first process of a terminal container (Python's, in isolated mode: nothing of the home is
# imported): it makes a pty in the container, hands its master side over the socket named by its
# first argument, and only then starts the shell (the rest of its arguments) on the slave side,
# as that session's controlling terminal, and waits for it. No code of the operator's runs before
# the master side is handed over.
PTY_HANDOFF = """
import fcntl, os, socket, sys, termios
master, slave = os.openpty()
with socket.socket(socket.AF_UNIX) as handoff:
    handoff.connect(sys.argv[1])
    socket.send_fds(handoff, [b"pty"], [master])
os.close(master)
shell = os.fork()
if shell == 0:
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.closerange(3, 1024)
    os.execv(sys.argv[2], sys.argv[2:])
os.close(slave)
sys.exit(os.waitstatus_to_exitcode(os.waitpid(shell, 0)[1]))
"""
HANDOFF_DIR = "/run/pty-handoff"
# _IOR('T', 0x30, unsigned int) of linux/asm-generic/ioctls.h (not in Python's termios): the number
# of a pty's slave side, asked of its master side.
TIOCGPTN = 0x80045430
HANDOFF_SECONDS = 30


async def start_terminal(client: docker.DockerClient, policy: SandboxPolicy, image: str, files_dir: Path,
                         cgroup_parent: str | None = None, run_dir: Path | None = None) -> tuple[DockerSandbox, int]:
    """Start a terminal sandbox; return it and the master side of the pty its shell runs on.

    The bubblewrap backend starts the shell on a pty the supervisor made. A container cannot be
    handed a file descriptor, and the terminal Docker gives a container is reached only through
    Docker's own streams, whose buffers would keep output that the pty would have dropped on
    Ctrl-C, or held back at once when the server pauses it at the budget. So the container makes
    the pty itself (:data:`PTY_HANDOFF`) and hands its master side out over a unix socket in a
    folder only it is given; the server then reads and writes the shell's own pty, as with
    bubblewrap. ``setsid --ctty`` (the policy's) is the handoff's own work here."""
    argv = list(policy.argv)
    if tuple(argv[:len(CONTROLLING_TERMINAL)]) == CONTROLLING_TERMINAL:
        argv = argv[len(CONTROLLING_TERMINAL):]
    handoff_dir = files_dir / "handoff"
    handoff_dir.mkdir(parents=True, exist_ok=True)
    os.chown(handoff_dir, policy.identity.uid, policy.identity.gid)
    handoff_dir.chmod(0o700)
    path = handoff_dir / "pty.sock"
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX)
    folder = os.open(handoff_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # Through the folder's descriptor: a socket's path may be at most 107 bytes long.
        listener.bind(f"/proc/self/fd/{folder}/{path.name}")
        os.chown(path, policy.identity.uid, policy.identity.gid)
        listener.listen(1)
        listener.setblocking(False)
        options = container_options(policy, image, files_dir, cgroup_parent, run_dir)
        options["command"] = [f"{ENV_MOUNT}/bin/python", "-I", "-c", PTY_HANDOFF, f"{HANDOFF_DIR}/pty.sock", *argv]
        options["mounts"].append(DockerMount(HANDOFF_DIR, str(handoff_dir), type="bind"))
        container = await _run(client, options)
        sandbox = DockerSandbox(container)
        receiving = asyncio.ensure_future(_receive_pty(listener))
        try:
            await asyncio.wait([receiving, asyncio.ensure_future(sandbox.wait())], timeout=HANDOFF_SECONDS,
                               return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done():
                receiving.cancel()
                said = (await asyncio.to_thread(container.logs, tail=5)).decode(errors="replace").strip()
                raise RuntimeError(f"the terminal sandbox handed no pty over ({said or 'no output'})")
            master = receiving.result()
        except BaseException:
            sandbox.kill()
            await asyncio.to_thread(sandbox.remove)
            raise
    finally:
        listener.close()
        os.close(folder)
        path.unlink(missing_ok=True)
    return sandbox, master


async def _receive_pty(listener: socket.socket) -> int:
    """The one file descriptor the terminal container hands over: the master side of a pty."""
    loop = asyncio.get_running_loop()
    conn, _ = await loop.sock_accept(listener)
    with conn:
        conn.setblocking(True)
        _, fds, _, _ = await asyncio.to_thread(socket.recv_fds, conn, 16, 1)
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise RuntimeError("the terminal container handed over no pty")
    master = fds[0]
    try:
        fcntl.ioctl(master, TIOCGPTN, b"\0" * 4)  # only a pty's master side answers this
    except OSError:
        os.close(master)
        raise RuntimeError("the terminal container handed over something that is not a pty's master side") from None
    return master


def remove_orphans(client: docker.DockerClient, run_dirs: Path, supervised=lambda run: False) -> list[str]:
    """Remove the sandbox containers of servers whose runtime directory is ``run_dirs`` or under
    it, but not of those ``supervised(run_dir)`` says a supervisor runs; return their names. A
    supervisor killed outright (SIGKILL, its container or host gone) cannot stop its containers: its
    server's next supervisor removes them before it starts any, and a launcher removes those of
    servers no supervisor runs when it starts."""
    removed = []
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_ROLE}=sandbox"}):
        run = container.labels.get(LABEL_RUN)
        if run and Path(run).is_relative_to(run_dirs) and not supervised(Path(run)):
            try:
                container.remove(force=True)
            except NotFound:
                continue
            removed.append(container.name)
    return removed


async def _run(client: docker.DockerClient, options: dict) -> Container:
    """Create and start a container, after removing one left by an earlier run under its name."""
    try:
        await asyncio.to_thread(lambda: client.containers.get(options["name"]).remove(force=True))
    except NotFound:
        pass
    container = await asyncio.to_thread(client.containers.create, **options)
    try:
        await asyncio.to_thread(container.start)
    except APIError:
        await asyncio.to_thread(container.remove, force=True)
        raise
    return container


def _copy_logs(container: Container, log_path: Path) -> None:
    """Append the container's output to ``log_path`` until it exits."""
    try:
        with open(log_path, "ab") as out:
            for chunk in container.logs(stream=True, follow=True):
                out.write(chunk)
                out.flush()
    except (NotFound, APIError, OSError):
        pass
