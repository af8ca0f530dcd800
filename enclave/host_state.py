"""Enclave's state on the host is root's alone, but for what sandboxes reach.

``ENCLAVE_HOME`` holds password hashes, secrets, signing keys, every database and the logs of all
code executed: its directories are 0700 and its files 0600. Every hub-side process Enclave starts
(the CLI, the hub, its services, the supervisors) calls :func:`keep_private` first, so what it
creates is private from the first write; the hub's services and the proxy inherit the hub's umask.

Sandboxes keep working inside a 0700 state directory: bubblewrap binds their mounts as root, before
it drops to the sandbox's uid, so what a sandbox needs is only that the bound folder or file itself
grants its uid access, never the folders above it on the host. These keep the modes their owners
give them (see :func:`reachable_by_sandboxes`):

* the (user, workspace) homes and JupyterLab state (``homes/*/*``, ``lab-state/*/*``): the sandbox uid's
* releases and column views (``releases/*``, ``views/*/*``): read-only for everyone
* the hub's and the review service's socket folders (``run/hub``, ``run/exports``)
* in each sandbox's runtime directory (``run/sandboxes/<user>/<workspace>``, itself private): its
  server's part, the kernels' ipc folders, its audit receiver, generated files and ``workspace.json``;
  its logs and spec are private.

The homes' disk images (``home-images/*/*.ext4``) are private like the rest: the supervisor mounts
each at its home's path, and what sandboxes reach is the mounted filesystem, not the image.

The operators' environment (``sandbox.python_env``) lives outside the state directory.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
# Permission bits that give anything to the group or to others.
OPEN_BITS = 0o077


def keep_private() -> None:
    """Files and folders this process creates are its user's alone (a umask of 077)."""
    os.umask(PRIVATE_UMASK)


def reachable_by_sandboxes(relative: tuple[str, ...]) -> bool:
    """Whether the path ``relative`` (its parts, under ``ENCLAVE_HOME``) is bound into sandboxes,
    or lies inside something that is; such paths keep their modes."""
    match relative:
        case ("homes" | "lab-state" | "views", _, _, *_) | ("releases", _, *_) | ("run", "hub" | "exports", *_):
            return True
        case ("run", "sandboxes", _, _, name, *_):
            return not (name.endswith(".log") or name == "spec.json")
    return False


def private_paths(home: Path) -> Iterator[Path]:
    """Every path under ``home`` (itself included) that must be private: all but what sandboxes
    reach. Symbolic links are neither followed nor listed."""
    yield home
    for root, dirs, files in os.walk(home):
        parts = Path(root).relative_to(home).parts
        dirs[:] = [d for d in dirs if not reachable_by_sandboxes((*parts, d))]
        for name in [*dirs, *files]:
            path = Path(root, name)
            if not reachable_by_sandboxes((*parts, name)) and not path.is_symlink():
                yield path


def open_to_others(home: Path) -> Iterator[tuple[Path, int]]:
    """(path, mode) of each private path that grants anything to group or others."""
    for path in private_paths(home):
        try:
            mode = stat.S_IMODE(path.lstat().st_mode)
        except FileNotFoundError:  # gone while walking (a journal, a temporary file)
            continue
        if mode & OPEN_BITS:
            yield path, mode


def not_owned_by(home: Path, uid: int) -> Iterator[tuple[Path, int]]:
    """(path, owner) of each private path not owned by ``uid``."""
    for path in private_paths(home):
        try:
            owner = path.lstat().st_uid
        except FileNotFoundError:
            continue
        if owner != uid:
            yield path, owner


def tighten(home: Path) -> list[str]:
    """Take group and other permissions off every private path (a state directory made before
    Enclave kept it private, or loosened by hand); log and return each change."""
    changes = []
    for path, mode in list(open_to_others(home)):
        path.chmod(mode & ~OPEN_BITS)
        change = f"{path}: {mode:o} -> {mode & ~OPEN_BITS:o}"
        log.warning("made private (was open to other local users): %s", change)
        changes.append(change)
    return changes
