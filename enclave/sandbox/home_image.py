"""Each (operator, workspace) home on a disk image of its own: a hard quota the host's kernel keeps.

A home is an ext4 filesystem in a file of exactly its quota (``disk_mb``), in the state directory
(``home-images/<user>/<workspace>.ext4``, root's, 0600, out of every sandbox's reach). The
supervisor (root) loop-mounts it at the home's path before the sandbox starts, so the policy binds
the home as before, and unmounts it when the sandbox stops (``mount -o loop`` sets the loop device
to detach itself at unmount). A write past the quota fails in the sandbox with ENOSPC ("No space
left on device"), and nothing a sandbox writes in its home lands on the filesystem that holds the
hub's databases.

The image is preallocated (``posix_fallocate``; ``mkfs`` without discard and with every table
written, as neither it nor the kernel then punches holes into it): its blocks are taken from the host's filesystem when it is made or grown, so filling the
home takes nothing more from the host. ``enclave doctor`` compares what images still have to take
(homes not yet made, quotas raised, blocks a trim gave back) with the free space.

Mounted ``nosuid,nodev,noexec``: nothing in a home is meant to run as a program. Kernels run the
read-only environment's Python, which reads notebooks and modules from the home as files; an
executable or a shared library written there (by kernel code, the only thing that can write
bytes of any type) cannot be ``exec``'d or ``mmap``'d executable.

Quotas change at the next start: a larger one grows the image (``resize2fs``); a smaller one
shrinks it when its files fit (``enclave workspace set-limits`` refuses a quota below a home's
use). A home made before quotas (a plain folder) moves into its image at its first start, copied
whole before the folder is emptied.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MIB = 2**20
# noinit_itable: the kernel would zero inode tables it finds uninitialised by asking the loop
# device to write zeroes, which punches holes into the image (mkfs initialises them all instead).
MOUNT_OPTIONS = "loop,nosuid,nodev,noexec,noinit_itable"
# ext4's superblock: at 1024 bytes into the image; the fields read by :func:`_free_bytes`.
SUPERBLOCK_OFFSET = 1024
EXT4_MAGIC = 0xEF53
INCOMPAT_64BIT = 0x80


class HomeImageError(Exception):
    """A home cannot be made, moved into its image, or mounted; the message says why."""


@dataclass(frozen=True)
class DiskUsage:
    """A home's use of its quota, in bytes. ``used`` counts the filesystem's own metadata too (its
    journal, inode tables): it is what the quota leaves no longer free for files."""

    used: int
    quota: int

    @property
    def used_mb(self) -> int:
        return -(-self.used // MIB)  # rounded up: a home never looks emptier than it is

    @property
    def quota_mb(self) -> int:
        return self.quota // MIB


def usage(image: Path, home: Path) -> DiskUsage | None:
    """The home's use: from the mounted filesystem (``statvfs``) while its sandbox runs, else from
    the image's superblock (exact once unmounted). None when the home has no image yet."""
    try:
        quota = image.stat().st_size
    except FileNotFoundError:
        return None
    if is_mounted(home):
        st = os.statvfs(home)
        free = st.f_bfree * st.f_frsize
    else:
        free = _free_bytes(image)
    return DiskUsage(used=quota - free, quota=quota)


def is_mounted(home: Path) -> bool:
    return os.path.ismount(home)


def _free_bytes(image: Path) -> int:
    with open(image, "rb") as f:
        f.seek(SUPERBLOCK_OFFSET)
        sb = f.read(1024)
    if len(sb) < 1024 or struct.unpack_from("<H", sb, 0x38)[0] != EXT4_MAGIC:
        raise HomeImageError(f"{image} holds no ext4 filesystem")
    block_size = 1024 << struct.unpack_from("<I", sb, 0x18)[0]
    free = struct.unpack_from("<I", sb, 0x0C)[0]
    if struct.unpack_from("<I", sb, 0x60)[0] & INCOMPAT_64BIT:
        free |= struct.unpack_from("<I", sb, 0x158)[0] << 32
    return free * block_size


# e2fsprogs and mount live in sbin, which an unprivileged user's PATH (the hub's) may lack.
TOOLS_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env={"PATH": TOOLS_PATH})


def _check(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        raise HomeImageError(f"{what} failed: {(done.stderr or done.stdout).strip()[-500:]}")


def _preallocate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def mount_home(image: Path, home: Path, quota_mb: int, uid: int, gid: int) -> None:
    """Make the home's image (moving a plain home's files into it), or resize it to ``quota_mb``;
    then mount it at ``home``, its root the sandbox uid's, 0700."""
    if is_mounted(home):  # left mounted by a supervisor that was killed: nothing of it runs now
        unmount_home(home)
    home.mkdir(parents=True, exist_ok=True)
    image.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if image.exists():
        _resize(image, quota_mb)
    else:
        _create(image, home, quota_mb, uid, gid)
    if any(home.iterdir()):
        raise HomeImageError(f"{home} holds files outside its image {image} (put there while the home was "
                             "not mounted, or left by an interrupted move): move them into the home by hand")
    _check(_run("mount", "-t", "ext4", "-o", MOUNT_OPTIONS, str(image), str(home)), f"mounting {image} at {home}")
    os.chown(home, uid, gid)
    home.chmod(0o700)


def unmount_home(home: Path) -> None:
    """Unmount the home (and so detach its loop device). Lazily if something still holds it: it is
    then detached when the last holder goes."""
    if not is_mounted(home):
        return
    done = _run("umount", str(home))
    if done.returncode != 0:
        log.warning("home %s busy at unmount (%s); detaching it lazily", home, done.stderr.strip())
        _check(_run("umount", "--lazy", str(home)), f"unmounting {home}")


def _create(image: Path, home: Path, quota_mb: int, uid: int, gid: int) -> None:
    """A new image; a home that already holds files (from before quotas) is copied into it whole,
    under a temporary name, and emptied only once the image holding the copy has its final name."""
    partial = image.with_name(image.name + ".partial")
    partial.unlink(missing_ok=True)
    _preallocate(partial, quota_mb * MIB)
    try:
        _check(_run("mkfs.ext4", "-q", "-m", "0", "-E", f"nodiscard,lazy_itable_init=0,lazy_journal_init=0,root_owner={uid}:{gid}", str(partial)),
               f"making the filesystem of {image}")
        staging = image.with_name(image.name + ".mnt")
        staging.mkdir(mode=0o700, exist_ok=True)
        _check(_run("mount", "-t", "ext4", "-o", MOUNT_OPTIONS, str(partial), str(staging)), f"mounting {partial}")
        try:
            # mkfs makes lost+found; e2fsck makes it again if it ever needs one. The operator's
            # file browser would show it, unreadable, in every home.
            (staging / "lost+found").rmdir()
            if any(home.iterdir()):
                copied = _run("cp", "-a", "--", f"{home}/.", f"{staging}/")
                if copied.returncode != 0:
                    raise HomeImageError(
                        f"the files already in {home} do not fit in its quota of {quota_mb} MiB, or cannot be "
                        f"copied ({copied.stderr.strip()[-300:]}): raise the workspace's disk_mb "
                        "(enclave workspace set-limits WS disk_mb=...)")
        finally:
            _run("umount", str(staging))
            staging.rmdir()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(image)
    for entry in list(home.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    log.info("home %s: made its image %s of %d MiB", home, image, quota_mb)


def _resize(image: Path, quota_mb: int) -> None:
    """Grow or shrink the (unmounted) image to ``quota_mb``. A shrink its files do not allow keeps
    the image as it is, with a warning: the home stays usable and its files stay whole."""
    size, current = quota_mb * MIB, image.stat().st_size
    if size == current:
        return
    # resize2fs works only on a filesystem checked since it was last mounted. e2fsck's exit
    # codes below 4 mean clean, or errors it corrected.
    checked = _run("e2fsck", "-f", "-p", str(image))
    if checked.returncode >= 4:
        raise HomeImageError(f"checking {image} failed (e2fsck exit {checked.returncode}): "
                             f"{(checked.stderr or checked.stdout).strip()[-500:]}")
    if size > current:
        _preallocate(image, size)
        _check(_run("resize2fs", str(image)), f"growing {image}")
    else:
        shrunk = _run("resize2fs", str(image), f"{quota_mb}M")
        if shrunk.returncode != 0:
            log.warning("home image %s kept at %d MiB: its files do not fit in %d MiB (%s)",
                        image, current // MIB, quota_mb, shrunk.stderr.strip()[-300:])
            return
        os.truncate(image, size)
    log.info("home image %s resized from %d MiB to %d MiB", image, current // MIB, quota_mb)
