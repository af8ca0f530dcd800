"""A hard disk quota per home, kept by the host's kernel, and a size on every tmpfs of a sandbox.

Each (operator, workspace) home is an ext4 image of its quota, loop-mounted by the supervisor
(``enclave.sandbox.home_image``); /tmp is a tmpfs of ``tmp_mb``. Quotas are small here (64 MiB) so
that filling them is quick.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import PASSWORD, seed
from enclave_testing import CHROMIUM, CHROMIUM_ARGS, log_in, wait_for
from playwright.async_api import async_playwright, expect

MIB = 2**20
QUOTA_MB = 64
TMP_MB = 32
# Writes a file of ``mb`` MiB in the home, a MiB at a time; an error ends the cell with it.
WRITE = """
with open({path!r}, 'wb') as f:
    for _ in range({mb}):
        f.write(b'\\1' * 2**20)
"""


def loop_devices_of(home: Path) -> list[str]:
    """Loop devices whose backing file is in this hub's state directory."""
    listing = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if str(home) in line]


def home_stops_at_its_quota(kernel) -> None:
    """Writing twice the quota into the home fails with ENOSPC; the file is removed again."""
    _, err = kernel.run(WRITE.format(path="/home/alice/big", mb=2 * QUOTA_MB))
    assert err == "OSError: [Errno 28] No space left on device"
    kernel.run("import os; os.remove('/home/alice/big')")


def mount_options(path: Path) -> set[str]:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(path):
            return set(fields[5].split(","))
    return set()


@pytest.fixture(scope="module")
def hub(hub_factory):
    hub = hub_factory("disk", ENCLAVE_SANDBOX__LIMITS__DISK_MB=str(QUOTA_MB),
                      ENCLAVE_SANDBOX__LIMITS__TMP_MB=str(TMP_MB), ENCLAVE_SANDBOX__IDLE_TIMEOUT="0")
    seed(hub)
    hub.start()
    yield hub
    hub.stop()
    hub.stop_all_sandboxes()
    # Every home unmounted at stop, its loop device detached with it; then the images go too.
    assert loop_devices_of(hub.home) == []
    assert not any(os.path.ismount(p) for p in (hub.home / "homes").glob("*/*"))
    shutil.rmtree(hub.home / "home-images")


@pytest.fixture(scope="module")
def alice(hub):
    session = hub.login("alice", PASSWORD)
    assert session.start("alpha").status_code == 200
    return session


def test_a_kernel_writing_past_its_quota_gets_enospc_and_the_host_keeps_its_space(hub, alice):
    kernel = alice.kernel("alpha")
    free_before = shutil.disk_usage(hub.home).free
    _, err = kernel.run(WRITE.format(path="/home/alice/big", mb=2 * QUOTA_MB))
    free_after = shutil.disk_usage(hub.home).free
    assert err == "OSError: [Errno 28] No space left on device"
    written = kernel.value("import os; print(os.path.getsize('/home/alice/big'))")
    assert 0.5 * QUOTA_MB * MIB < written < QUOTA_MB * MIB
    # The image's blocks were taken when it was made: filling the home takes none from the host
    # (the margin is for whatever else runs on this machine meanwhile).
    assert free_before - free_after < QUOTA_MB * MIB / 2
    image = hub.home / "home-images" / "alice" / "alpha.ext4"
    st = image.stat()
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == QUOTA_MB * MIB
    assert st.st_blocks * 512 >= QUOTA_MB * MIB  # preallocated, not sparse
    home = hub.home / "homes" / "alice" / "alpha"
    assert {"nosuid", "nodev", "noexec"} <= mount_options(home)
    assert len(loop_devices_of(hub.home)) == 1
    # Inside the sandbox too (bwrap's bind keeps the flags): nothing written to the home runs.
    _, err = kernel.run("import os, shutil, subprocess; shutil.copy('/usr/bin/true', '/home/alice/t');"
                        " os.chmod('/home/alice/t', 0o755); subprocess.run(['/home/alice/t'], check=True)")
    assert err is not None and err.startswith("PermissionError")
    kernel.run("import os; os.remove('/home/alice/big'); os.remove('/home/alice/t')")
    kernel.close()


def test_tmp_in_a_sandbox_is_bounded(alice):
    kernel = alice.kernel("alpha")
    size = kernel.value("import os; s = os.statvfs('/tmp'); print(s.f_blocks * s.f_frsize)")
    assert size == TMP_MB * MIB
    _, err = kernel.run(WRITE.format(path="/tmp/big", mb=2 * TMP_MB))
    assert err == "OSError: [Errno 28] No space left on device"
    kernel.run("import os; os.remove('/tmp/big')")
    kernel.close()


def test_the_quota_survives_a_restart_of_the_hub_and_of_the_sandbox(hub, alice):
    kernel = alice.kernel("alpha")
    kernel.run("open('/home/alice/kept.txt', 'w').write('still here')")
    kernel.close()
    hub.restart()  # the sandbox keeps running, its home mounted
    kernel = alice.kernel("alpha")
    home_stops_at_its_quota(kernel)
    kernel.close()
    alice.stop("alpha")
    home = hub.home / "homes" / "alice" / "alpha"
    assert not os.path.ismount(home) and not any(home.iterdir()) and loop_devices_of(hub.home) == []
    assert alice.start("alpha").status_code == 200
    kernel = alice.kernel("alpha")
    assert kernel.run("print(open('/home/alice/kept.txt').read())") == ("still here\n", None)
    home_stops_at_its_quota(kernel)
    kernel.close()


def test_a_larger_quota_takes_effect_at_the_next_start_and_one_below_use_is_refused(hub, alice):
    kernel = alice.kernel("alpha")
    assert kernel.run(WRITE.format(path="/home/alice/forty", mb=40)) == ("", None)
    refused = hub.enclave("workspace", "set-limits", "alpha", "disk_mb=32")
    assert refused.returncode != 0
    assert "cannot lower the disk quota of 'alpha' to 32 MiB: alice's home uses" in refused.stderr
    for bad in ("disk_mb=8", "disk_mb=lots", "tmp_mb=1"):
        assert hub.enclave("workspace", "set-limits", "alpha", bad).returncode != 0
    assert hub.enclave("workspace", "set-limits", "alpha", "disk_mb=128").returncode == 0
    listing = hub.enclave("workspace", "list").stdout
    assert "disk:      128 MiB per home; used: alice" in listing and "MiB of 64 MiB" in listing
    # Until the next start, the home keeps the quota it was mounted with.
    _, err = kernel.run(WRITE.format(path="/home/alice/sixty", mb=60))
    assert err == "OSError: [Errno 28] No space left on device"
    kernel.run("import os; os.remove('/home/alice/sixty')")
    kernel.close()
    alice.stop("alpha")
    assert alice.start("alpha").status_code == 200
    kernel = alice.kernel("alpha")
    assert kernel.run(WRITE.format(path="/home/alice/sixty", mb=60)) == ("", None)
    assert kernel.value("import os; print(os.path.getsize('/home/alice/forty'))") == 40 * MIB
    _, err = kernel.run(WRITE.format(path="/home/alice/more", mb=64))
    assert err == "OSError: [Errno 28] No space left on device"
    kernel.run("import os; [os.remove(f'/home/alice/{f}') for f in ('forty', 'sixty', 'more')]")
    kernel.close()
    assert (hub.home / "home-images" / "alice" / "alpha.ext4").stat().st_size == 128 * MIB


def test_an_existing_home_moves_into_its_image_whole(hub):
    """A home from before quotas: a plain folder, with files, folders and links."""
    home = hub.home / "homes" / "bob" / "alpha"
    (home / "project" / "data").mkdir(parents=True)
    (home / "notes.md").write_text("# notes\n")
    (home / "project" / "data" / "numbers.bin").write_bytes(bytes(range(256)) * 4096)
    (home / "project" / "latest").symlink_to("data/numbers.bin")
    for path in (home, home / "project", home / "project" / "data"):
        path.chmod(0o755)
    for path in (home / "notes.md", home / "project" / "data" / "numbers.bin"):
        path.chmod(0o644)
    bob = hub.login("bob", PASSWORD)
    assert bob.start("alpha").status_code == 200
    assert os.path.ismount(home)
    kernel = bob.kernel("alpha")
    found = kernel.value(
        "import os, json, hashlib; h = '/home/bob';"
        " print(json.dumps([sorted(os.listdir(h)), open(h + '/notes.md').read(),"
        " hashlib.sha256(open(h + '/project/latest', 'rb').read()).hexdigest(), os.readlink(h + '/project/latest')]))")
    assert found == [["notes.md", "project"], "# notes\n", hashlib.sha256(bytes(range(256)) * 4096).hexdigest(),
                     "data/numbers.bin"]
    kernel.close()
    bob.stop("alpha")
    # The plain folder gave everything to the image: nothing is left under the mount point.
    assert not os.path.ismount(home) and list(home.iterdir()) == []
    images = sorted(p.name for p in (hub.home / "home-images" / "bob").iterdir())
    assert images == ["alpha.ext4"]


def test_a_home_that_does_not_fit_its_quota_is_left_as_it_was(hub):
    """erin's home holds more than the quota: the start is refused, saying why, and nothing is lost."""
    home = hub.home / "homes" / "erin" / "beta"
    home.mkdir(parents=True)
    with open(home / "large.bin", "wb") as f:
        f.write(b"\1" * (QUOTA_MB + 8) * MIB)
    erin = hub.login("erin", PASSWORD)
    erin.http.get(f"{hub.url}/hub/spawn/erin/beta")
    stop = wait_for(lambda: hub.audit_records(action="sandbox.stop", workspace="beta"), 60, "the refused start")
    assert f"do not fit in its quota of {QUOTA_MB} MiB" in stop[0]["detail"]["reason"]
    assert "disk_mb" in stop[0]["detail"]["reason"]
    assert (home / "large.bin").stat().st_size == (QUOTA_MB + 8) * MIB
    assert not os.path.ismount(home) and list((hub.home / "home-images" / "erin").iterdir()) == []
    (home / "large.bin").unlink()


def test_doctor_checks_the_homes_disks(hub, alice):
    done = hub.enclave("doctor")
    lines = {line.split(":", 1)[0]: line for line in done.stdout.splitlines()}
    assert "OK home images" in lines and "OK mounted homes" in lines
    assert "1 running sandbox, each with its home's image mounted" in lines["OK mounted homes"]


@pytest.mark.browser
async def test_the_home_page_shows_each_homes_use_of_its_quota(hub, alice):
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        page.set_default_timeout(90_000)
        await log_in(page, hub, "alice", PASSWORD)
        disk = page.locator("#workspaces tr[data-server-name=alpha] .home-disk")
        await expect(disk).to_contain_text(re.compile(r"\d+ MiB of 128 MiB used"))
        await browser.close()
