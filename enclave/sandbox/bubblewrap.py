"""Render a :class:`SandboxPolicy` as a bubblewrap command line.

bwrap runs as root (no user namespace): it builds the mount, pid, network, ipc and uts
namespaces, then ``setpriv`` drops to the sandbox's own unprivileged uid with no capabilities and
``no_new_privs`` before the sandboxed program starts. Processes therefore run under a real host uid
that owns nothing but the sandbox's home.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

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
