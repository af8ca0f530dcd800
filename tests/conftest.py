"""Fixtures around a real Enclave: hub, proxy and bubblewrap sandboxes, started as `make demo` would.

`enclave` (session): a hub with these accounts and workspaces, created in-process:

    alpha:  operators alice, bob; reviewer carol; release households@1 attached
    beta:   operator erin; release secret@1 attached (so alpha's sandboxes must not see it)

`hub_factory` starts further hubs with other settings (each with its own state directory).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from enclave_testing import Hub, PostgresCluster, backend_settings, grant  # noqa: E402
from playwright.async_api import expect  # noqa: E402

# A browser test's expectations wait up to 60 s, not Playwright's 5: a notebook run, a spawn or a
# review step takes longer than that on a loaded machine. (Expectations that hold return at once.)
expect.set_options(timeout=60_000)

from enclave import accounts, workspaces  # noqa: E402
from enclave.settings import Settings  # noqa: E402

ACCOUNTS = {
    "alice": "operator",
    "bob": "operator",
    "carol": "reviewer",
    "erin": "operator",
    "root-admin": "admin",
}
PASSWORD = "correct-horse-battery-staple"
RELEASES = {"households@1": "district,size\nHeping,3\n", "secret@1": "id,value\nx,1\n"}


def _publish(home: Path, name: str, csv: str) -> None:
    """A release as the store publishes one: read-only, readable by the sandboxes' uids."""
    data = home / "releases" / name / "data"
    data.mkdir(parents=True)
    (data / "table.csv").write_text(csv)
    (data / "table.csv").chmod(0o444)
    data.chmod(0o555)


@pytest.fixture(autouse=True)
def umask_of_the_test_process():
    """The CLI's entry makes what its process creates private (a umask of 077, keep_private); tests
    that run it in-process must not leave that umask to the files later tests make for sandboxes."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)


def seed(hub: Hub) -> None:
    """Accounts, workspaces and releases, made in-process (the CLI has its own tests)."""
    settings = Settings(home=hub.home)
    for release, csv in RELEASES.items():
        _publish(hub.home, release, csv)
    for name, role in ACCOUNTS.items():
        accounts.add_user(settings, name, [role], PASSWORD)
    for ws, members, release in (("alpha", (("alice", "operator"), ("bob", "operator"), ("carol", "reviewer")), "households@1"),
                                 ("beta", (("erin", "operator"),), "secret@1")):
        workspaces.create(settings, ws)
        for user, role in members:
            workspaces.add_member(settings, ws, user, role)
        grant(settings, ws, release)


def pytest_generate_tests(metafunc):
    """Tests through the session's hub run on the sandbox backends their module is marked with
    (``pytestmark = pytest.mark.backends("bubblewrap", "docker")``), on bubblewrap alone otherwise:
    one hub per backend for the whole session."""
    if "sandbox_backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        metafunc.parametrize("sandbox_backend", marker.args if marker else ("bubblewrap",),
                             indirect=True, scope="session")


@pytest.fixture(scope="session")
def sandbox_backend(request) -> str:
    """The sandbox backend of the session's hub: bubblewrap, or docker (containers of the image
    images/build.sh builds)."""
    return request.param


@pytest.fixture(scope="session")
def hub_factory(tmp_path_factory):
    hubs: list[Hub] = []

    def make(name: str, **env) -> Hub:
        hub = Hub(home=tmp_path_factory.mktemp(name), env_overrides=env)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.stop()
        hub.stop_all_sandboxes()  # their supervisors unmount the homes
        hub.stop_launcher()
        shutil.rmtree(hub.home / "home-images", ignore_errors=True)


@pytest.fixture(scope="session")
def enclave(hub_factory, sandbox_backend) -> Hub:
    hub = hub_factory(f"enclave-{sandbox_backend}", ENCLAVE_SANDBOX__IDLE_TIMEOUT="0",
                      **backend_settings(sandbox_backend))
    seed(hub)
    hub.start()
    return hub


@pytest.fixture(scope="session")
def alice(enclave):
    return enclave.login("alice", PASSWORD)


@pytest.fixture(scope="session")
def alice_kernel(alice):
    """alice's kernel in her alpha sandbox (started once for the session)."""
    r = alice.start("alpha")
    assert r.status_code == 200, r.text
    kernel = alice.kernel("alpha")
    yield kernel
    kernel.close()


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL 15 cluster for this session's tests; ``new_database()`` gives each its own database."""
    cluster = PostgresCluster()
    yield cluster
    cluster.stop()
