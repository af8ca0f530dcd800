"""Render a :class:`SandboxPolicy` as a bubblewrap command line.

bwrap runs as root (no user namespace): it builds the mount, pid, network, ipc and uts
namespaces, then ``setpriv`` drops to the sandbox's own unprivileged uid with no capabilities and
``no_new_privs`` before the sandboxed program starts. Processes therefore run under a real host uid
that owns nothing but the sandbox's home.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .limits import SandboxCgroup, apply_rlimits
from .policy import SandboxPolicy

NAMESPACES = (
    "--unshare-pid",
    "--unshare-net",  # a network namespace with only 'lo', and it is down: no route anywhere
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
)


def bwrap_argv(policy: SandboxPolicy, bwrap: str, files_dir: Path, info_fd: int) -> list[str]:
    """The full command. Generated files (``kind="file"``) are written into ``files_dir``.

    The sandbox's environment is not on this command line (host users can read command lines,
    and the server's environment holds its hub token): run the command with ``env=policy.env``.
    """
    files_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    args = [bwrap, *NAMESPACES, "--hostname", "enclave", "--die-with-parent", "--new-session",
            "--as-pid-1", "--info-fd", str(info_fd),
            "--proc", "/proc", "--dev", "/dev"]
    made: set[str] = {"/", "/proc", "/dev"}
    tmpfs: set[PurePosixPath] = set()
    for m in policy.mounts:
        # bwrap creates missing parents of a mount point as 0700 root directories, which the
        # sandbox's uid could not traverse: create them first, world-readable; inside a tmpfs,
        # writable as the tmpfs itself is (1777, like /tmp: e.g. matplotlib's config folder that
        # holds the environment's read-only font list).
        for parent in reversed(PurePosixPath(m.target).parents):
            if str(parent) not in made:
                in_tmpfs = any(t in parent.parents for t in tmpfs)
                args += ["--perms", "1777" if in_tmpfs else "0755", "--dir", str(parent)]
                made.add(str(parent))
        made.add(m.target)
        if m.kind == "tmpfs":
            tmpfs.add(PurePosixPath(m.target))
        if m.kind == "ro":
            args += ["--ro-bind", m.source, m.target]
        elif m.kind == "rw":
            args += ["--bind", m.source, m.target]
        elif m.kind == "tmpfs":
            if m.size_mb <= 0:
                raise ValueError(f"tmpfs {m.target} has no size")
            # --perms and --size apply to the next operation, the tmpfs.
            args += ["--perms", "1777", "--size", str(m.size_mb * 2**20), "--tmpfs", m.target]
        elif m.kind == "symlink":
            args += ["--symlink", m.source, m.target]
        elif m.kind == "file":
            path = files_dir / m.target.strip("/").replace("/", "_")
            path.write_text(m.content)
            path.chmod(0o644)
            args += ["--ro-bind", str(path), m.target]
        else:  # pragma: no cover - the policy type admits no other kind
            raise ValueError(f"unknown mount kind {m.kind!r}")
    if policy.workdir:
        args += ["--chdir", policy.workdir]
    uid, gid = policy.identity.uid, policy.identity.gid
    args += [
        "--", "/usr/bin/setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", *policy.argv,
    ]
    return args


@dataclass
class Sandboxed:
    """A running bwrap process and the host pid of the program inside it. The supervisor handles it
    as it handles a container of the Docker backend (:class:`enclave.sandbox.docker.DockerSandbox`):
    ``returncode``, ``wait()``, ``signal()``, ``kill()``, ``remove()``."""

    process: asyncio.subprocess.Process
    child_pid: int

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def wait(self) -> int:
        return await self.process.wait()

    def signal(self, signum: int) -> None:
        try:
            os.kill(self.child_pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.kill()

    def remove(self) -> None:
        """Nothing is left of an exited bwrap process."""


async def start(policy: SandboxPolicy, bwrap: str, files_dir: Path, log_path: Path,
                cgroup: SandboxCgroup | None = None, tty: int | None = None) -> Sandboxed:
    """Start ``policy``'s sandbox, as :func:`enclave.sandbox.docker.start` does a container: in
    ``cgroup`` (else under the policy's rlimits alone), its output appended to ``log_path``, or
    running on the pty slave ``tty``. Returns once bwrap reports the sandboxed program started;
    raises RuntimeError with bwrap's exit status if it did not."""
    read_fd, write_fd = os.pipe()
    argv = bwrap_argv(policy, bwrap, files_dir, info_fd=write_fd)

    def in_child() -> None:
        if cgroup is not None:
            cgroup.add_self()
        apply_rlimits(policy.limits, with_memory=cgroup is None)

    with open(log_path, "ab") as out:
        stdin, stdout = (tty, tty) if tty is not None else (asyncio.subprocess.DEVNULL, out)
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=stdin, stdout=stdout, stderr=stdout, env=policy.env,
            pass_fds=(write_fd,), preexec_fn=in_child)
    os.close(write_fd)
    info = await asyncio.to_thread(_read_info, read_fd)
    if "child-pid" not in info:
        await process.wait()
        raise RuntimeError(f"sandbox {policy.name} did not start (bwrap exit {process.returncode})")
    return Sandboxed(process, info["child-pid"])


def _read_info(fd: int) -> dict:
    """bwrap writes one JSON object to --info-fd once the sandboxed program is started."""
    data = b""
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(4096):
            data += chunk
            try:
                return json.loads(data)
            except json.JSONDecodeError:
                continue
    return {}
