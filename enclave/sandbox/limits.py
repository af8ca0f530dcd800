"""Memory, process and CPU limits for one sandbox: a cgroup where the host allows it, rlimits always.

The cgroup (v2, or the v1 memory/pids/cpu controllers) holds the server and every kernel of one
workspace server, so the limits apply to the sandbox as a whole. The rlimits are set on each
process as a floor that needs no cgroup: RLIMIT_NPROC counts per uid, and every sandbox has its
own uid; RLIMIT_AS stands in for the memory limit when no cgroup can be made.
"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass
from pathlib import Path

from .policy import Limits

log = logging.getLogger(__name__)
CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "enclave"


@dataclass
class SandboxCgroup:
    """The cgroup directories of one sandbox (one per v1 controller, or one v2 directory)."""

    dirs: list[Path]

    @classmethod
    def create(cls, name: str, limits: Limits) -> "SandboxCgroup | None":
        try:
            if (CGROUP_ROOT / "cgroup.controllers").exists():
                return cls._create_v2(name, limits)
            return cls._create_v1(name, limits)
        except OSError as exc:
            log.warning("no cgroup for sandbox %s (%s); rlimits only", name, exc)
            return None

    @classmethod
    def _create_v2(cls, name: str, limits: Limits) -> "SandboxCgroup":
        parent = CGROUP_ROOT / PARENT
        parent.mkdir(exist_ok=True)
        (parent / "cgroup.subtree_control").write_text("+memory +pids +cpu")
        d = parent / name
        d.mkdir(exist_ok=True)
        (d / "memory.max").write_text(str(limits.memory_mb * 2**20))
        (d / "memory.swap.max").write_text("0")
        (d / "pids.max").write_text(str(limits.pids))
        (d / "cpu.max").write_text(f"{int(limits.cpus * 100_000)} 100000")
        return cls([d])

    @classmethod
    def _create_v1(cls, name: str, limits: Limits) -> "SandboxCgroup":
        settings = {
            "memory": {"memory.limit_in_bytes": limits.memory_mb * 2**20},
            "pids": {"pids.max": limits.pids},
            "cpu": {"cpu.cfs_period_us": 100_000, "cpu.cfs_quota_us": int(limits.cpus * 100_000)},
        }
        dirs = []
        for controller, files in settings.items():
            d = CGROUP_ROOT / controller / PARENT / name
            d.mkdir(parents=True, exist_ok=True)
            dirs.append(d)
            for fname, value in files.items():
                (d / fname).write_text(str(value))
        return cls(dirs)

    def add_self(self) -> None:
        """Move the calling process into the cgroup (run in the child before exec)."""
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        for d in self.dirs:
            try:
                d.rmdir()
            except OSError as exc:
                log.warning("could not remove cgroup %s: %s", d, exc)


def apply_rlimits(limits: Limits, with_memory: bool) -> None:
    """Set rlimits on the calling process (inherited by the sandbox across exec)."""
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.pids, limits.pids))
    size = limits.max_file_mb * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if with_memory:
        mem = limits.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
