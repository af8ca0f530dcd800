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
import signal as signals
import threading
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, NotFound
from docker.models.containers import Container
from docker.types import Mount as DockerMount
from docker.types import Ulimit

from .policy import Mount, SandboxPolicy

IMAGE = "enclave/sandbox"
# Every sandbox container carries these labels: what it is, and which sandbox (the policy's name).
LABEL_ROLE = "org.enclave.role"
LABEL_SANDBOX = "org.enclave.sandbox"


def _file_name(target: str) -> str:
    return target.strip("/").replace("/", "_")


def container_options(policy: SandboxPolicy, image: str, files_dir: Path, cgroup_parent: str | None = None) -> dict:
    """The keyword arguments of ``docker.containers.create`` for ``policy``. Generated files
    (``kind="file"``) are written into ``files_dir``."""
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
        "labels": {LABEL_ROLE: "sandbox", LABEL_SANDBOX: policy.name},
        "name": policy.name,
        "detach": True,
    }


@dataclass
class DockerSandbox:
    """One running sandbox container, as the supervisor handles a sandbox of either backend:
    ``returncode`` (None while it runs), ``wait()``, ``signal()``, ``kill()``."""

    container: Container
    returncode: int | None = None

    async def wait(self) -> int:
        if self.returncode is None:
            result = await asyncio.to_thread(self.container.wait)
            self.returncode = result["StatusCode"]
        return self.returncode

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
                log_path: Path, cgroup_parent: str | None = None) -> DockerSandbox:
    """Create and start ``policy``'s container; its output is appended to ``log_path``. A container
    left by an earlier run under the same name (a killed supervisor's) is removed first."""
    options = container_options(policy, image, files_dir, cgroup_parent)
    try:
        await asyncio.to_thread(lambda: client.containers.get(policy.name).remove(force=True))
    except NotFound:
        pass
    container = await asyncio.to_thread(client.containers.create, **options)
    try:
        await asyncio.to_thread(container.start)
    except APIError:
        await asyncio.to_thread(container.remove, force=True)
        raise
    threading.Thread(target=_copy_logs, args=(container, log_path), daemon=True,
                     name=f"logs-{policy.name}").start()
    return DockerSandbox(container)


def _copy_logs(container: Container, log_path: Path) -> None:
    """Append the container's output to ``log_path`` until it exits."""
    try:
        with open(log_path, "ab") as out:
            for chunk in container.logs(stream=True, follow=True):
                out.write(chunk)
                out.flush()
    except (NotFound, APIError, OSError):
        pass
