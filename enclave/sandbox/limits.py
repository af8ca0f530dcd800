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
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from .policy import Limits

log = logging.getLogger(__name__)
CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "enclave"
CONTROLLERS = ("memory", "pids", "cpu")
# How long a stop waits for the processes left in a sandbox's cgroup to be gone.
EMPTY_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class CgroupHierarchy:
    """What the host offers sandboxes: cgroup ``version`` 2 or 1, and the controllers it lacks
    (v2: not enabled for the root's children; v1: not mounted)."""

    version: int
    missing: tuple[str, ...]

    @property
    def parents(self) -> list[Path]:
        """The folders that hold the sandboxes' cgroups."""
        if self.version == 2:
            return [CGROUP_ROOT / PARENT]
        return [CGROUP_ROOT / c / PARENT for c in CONTROLLERS if c not in self.missing]


def cgroup_hierarchy() -> CgroupHierarchy:
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        delegated = (CGROUP_ROOT / "cgroup.subtree_control").read_text().split()
        return CgroupHierarchy(2, tuple(c for c in CONTROLLERS if c not in delegated))
    return CgroupHierarchy(1, tuple(c for c in CONTROLLERS if not (CGROUP_ROOT / c / "cgroup.procs").exists()))


def _members(d: Path) -> list[int]:
    return [int(pid) for pid in (d / "cgroup.procs").read_text().split()]


def leftover_cgroups() -> list[Path]:
    """Sandbox cgroups that hold no process: a running sandbox's always holds its server."""
    return sorted(d for parent in cgroup_hierarchy().parents if parent.is_dir()
                  for d in parent.iterdir() if d.is_dir() and not _members(d))


@dataclass
class SandboxCgroup:
    """The cgroup directories of one sandbox (one per v1 controller, or one v2 directory)."""

    dirs: list[Path]

    @property
    def docker_parent(self) -> str:
        """The cgroup as Docker names a container's parent (v1 and v2 alike: a folder under each
        hierarchy's root): it holds the Docker backend's containers, as it holds bwrap's processes."""
        return f"/{PARENT}/{self.dirs[0].name}"

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
        """Remove the cgroup, first killing whatever is still in it: a cgroup holding a process
        cannot be removed (EBUSY), and one the sandbox's stop left behind would be kept for good."""
        deadline = time.monotonic() + EMPTY_TIMEOUT_SECONDS
        for d in self.dirs:
            try:
                _empty(d, deadline)
                d.rmdir()
            except OSError as exc:
                log.warning("could not remove cgroup %s: %s", d, exc)


def _populated(d: Path) -> bool:
    """Whether cgroup ``d`` holds a process: ``populated`` in v2's ``cgroup.events`` (which counts a
    process until it is reaped), any pid in v1's ``cgroup.procs``."""
    events = d / "cgroup.events"
    if events.exists():
        return "populated 1" in events.read_text().splitlines()
    return bool(_members(d))


def _empty(d: Path, deadline: float) -> None:
    """Kill every process in cgroup ``d`` (v2's ``cgroup.kill`` where the kernel has it) and wait
    until it holds none."""
    while _populated(d):
        if time.monotonic() > deadline:
            raise OSError(f"processes {_members(d)} still in it after {EMPTY_TIMEOUT_SECONDS} s")
        if (d / "cgroup.kill").exists():
            (d / "cgroup.kill").write_text("1")
        else:
            for pid in _members(d):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)

def apply_rlimits(limits: Limits, with_memory: bool) -> None:
    """Set rlimits on the calling process (inherited by the sandbox across exec)."""
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.pids, limits.pids))
    size = limits.max_file_mb * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if with_memory:
        mem = limits.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
