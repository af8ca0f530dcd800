"""The container deployment (docker-compose.yml, images/): the stack brought up as docs/production.md
says, with real images and PostgreSQL, under a Compose project and a state directory of its own.

One stack for the module (a few minutes in all, from built images: images/build.sh must have built
enclave/hub, enclave/postgres and enclave/sandbox); its tests run in order on it: accounts made with
the CLI, a workspace started through the launcher, the hub restarted, the stack taken down and up,
and last the documented backup restored into an emptied deployment.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import jupyterhub
import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent))

from enclave_testing import (  # noqa: E402
    Browser,
    CHROMIUM,
    CHROMIUM_ARGS,
    Hub,
    cookie_value,
    download_from_exports_panel,
    free_port,
    request_export,
    vote,
    wait_for,
)

from enclave import migrate  # noqa: E402

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parent.parent
DOCKER = "/usr/bin/docker"
COMPOSE = "/usr/bin/docker-compose"
IMAGES = ("enclave/hub", "enclave/postgres", "enclave/sandbox")
# The variables docker-compose.yml reads from the environment; the fixture sets its own.
COMPOSE_VARIABLES = ("ENCLAVE_STATE", "ENCLAVE_PORT", "ENCLAVE_BIND", "ENCLAVE_PUBLIC_URL")
# The databases and where their migrations are (enclave/migrate.py runs them at the hub's start).
MIGRATIONS = {
    "enclave": REPO / "enclave" / "db_migrations",
    "exports": REPO / "enclave" / "exports" / "migrations",
    "audit": REPO / "enclave" / "audit" / "migrations",
}
# The services the hub starts (enclave.hub.configure).
SERVICES = ("audit", "exports", "provisioning")
# A password in Chinese, typed on standard input through `docker-compose exec`.
OPERATOR_PASSWORD = "数据分析-correct-horse-7"
ADMIN_PASSWORD = "管理员-battery-staple-42"


@dataclass
class Stack:
    project: str
    state: Path
    port: int
    db_password: str

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def compose(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 600) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
        env.update(ENCLAVE_STATE=str(self.state), ENCLAVE_PORT=str(self.port))
        result = subprocess.run(
            [COMPOSE, "--project-name", self.project, "--project-directory", str(REPO),
             "--file", str(REPO / "docker-compose.yml"), "--env-file", str(self.state / "compose.env"), *args],
            input=input, capture_output=True, text=True, env=env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)}: exit {result.returncode}\n"
                                 f"{result.stdout}\n{result.stderr}\n{self.logs()}")
        return result

    def exec(self, service: str, *argv: str, input: str | None = None, check: bool = True,
             user: str | None = None) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", *(("--user", user) if user else ()), service, *argv,
                            input=input, check=check)

    def enclave(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return self.exec("hub", "enclave", *args, input=input)

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail=150", check=False, timeout=60).stdout

    def container(self, service: str) -> dict:
        ids = self.compose("ps", "-q", service).stdout.split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return json.loads(subprocess.run([DOCKER, "inspect", ids[0]], capture_output=True, text=True,
                                         check=True).stdout)[0]

    def up(self) -> None:
        self.compose("up", "-d")
        self.wait_for_hub()

    def wait_for_hub(self) -> None:
        """Until the hub answers through the proxy, and so do the services it starts after it
        (a login is recorded by the audit service): each one's route leads to something that answers."""
        def answers() -> bool:
            try:
                if requests.get(self.url + "/hub/api", timeout=5).status_code != 200:
                    return False
                return all(requests.get(f"http://{name}--service.localhost:{self.port}/services/{name}/", timeout=5,
                                        allow_redirects=False).status_code not in (404, 502, 503)
                           for name in SERVICES)
            except requests.RequestException:
                return False
        try:
            wait_for(answers, 240, "the hub and its services behind the proxy", interval=1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def login(self, username: str, password: str) -> requests.Session:
        http = requests.Session()
        http.trust_env = False
        http.get(self.url + "/hub/login", timeout=30)
        r = http.post(self.url + "/hub/login", timeout=30, data={
            "username": username, "password": password,
            "_xsrf": cookie_value(http, self.url + "/hub/login", "_xsrf")})
        assert r.url.endswith("/hub/home"), f"login as {username}: {r.status_code} {r.url}\n{self.logs()}"
        return http

    def as_hub(self) -> Hub:
        """This deployment as tests/enclave_testing.py's HTTP helpers see a hub (its URL and
        origins): sessions, kernels through the proxy, the services' pages. Not started by them."""
        return Hub(home=self.state, port=self.port)

    def psql(self, database: str, sql: str) -> str:
        """A query as PostgreSQL's superuser, on the postgres container's own socket."""
        return self.exec("postgres", "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql,
                         user="postgres").stdout.strip()


def _make_shared_mount(path: Path) -> None:
    """The launcher binds the state directory with rshared propagation, which Docker allows only on
    a shared mount: systemd makes every mount shared, this machine's / is private. A bind mount of
    the directory onto itself, made shared, is one wherever it lies."""
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    subprocess.run(["mount", "--make-rshared", str(path)], check=True)


@pytest.fixture(scope="module")
def stack():
    missing = [image for image in IMAGES
               if subprocess.run([DOCKER, "image", "inspect", image], capture_output=True).returncode != 0]
    assert not missing, f"images {missing} are not built: run images/build.sh"
    state = Path(tempfile.mkdtemp(prefix="enclave-compose-"))
    _make_shared_mount(state)
    stack = Stack(project=f"enclave-test-{uuid.uuid4().hex[:10]}", state=state, port=free_port(),
                  db_password=secrets.token_urlsafe(24))
    (state / "compose.env").write_text("")
    # Small homes (the settings file in the state directory, as docs/production.md has it): each
    # home's image is allocated in full, and the backup test archives it.
    (state / "enclave.toml").write_text("[sandbox.limits]\ndisk_mb = 64\n")
    # The secrets as docs/production.md writes them: root's, mode 0600, in a 0700 folder.
    (state / "secrets").mkdir(mode=0o700)
    password_file = state / "secrets" / "postgres-password"
    password_file.write_text(stack.db_password + "\n")
    password_file.chmod(0o600)
    try:
        stack.up()
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False)
        # Homes the launcher loop-mounted, and the shared mount itself; then the state (root's files).
        subprocess.run(["umount", "--recursive", "--lazy", str(state)], check=False)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def accounts(stack):
    """An admin and an operator, provisioned with `enclave` in the hub's container."""
    made = stack.enclave("user", "add", "ops-admin", "--role", "admin", "--password-stdin", input=ADMIN_PASSWORD + "\n")
    assert "created ops-admin" in made.stdout
    made = stack.enclave("user", "add", "wang", "--role", "operator", "--password-stdin", input=OPERATOR_PASSWORD + "\n")
    assert "created wang" in made.stdout
    return {"ops-admin": ADMIN_PASSWORD, "wang": OPERATOR_PASSWORD}


def test_the_hub_runs_on_postgresql_with_every_migration_applied(stack, accounts):
    for database, migrations in MIGRATIONS.items():
        stamped = set(stack.psql(database, "SELECT version_num FROM alembic_version").split())
        assert stamped == migrate.head_revisions(migrations), database
    # JupyterHub's own tables, at its newest revision, in its database.
    stamped = set(stack.psql("jupyterhub", "SELECT version_num FROM alembic_version").split())
    assert stamped == migrate.head_revisions(Path(jupyterhub.__file__).parent / "alembic")
    assert stack.psql("jupyterhub", "SELECT count(*) FROM services WHERE name = 'exports'") == "1"
    # The accounts the CLI made are in PostgreSQL, and no SQLite database is in the state directory.
    assert stack.psql("enclave", "SELECT username FROM accounts ORDER BY username").split() == ["ops-admin", "wang"]
    assert not list(stack.state.rglob("*.sqlite")), list(stack.state.rglob("*.sqlite"))


def test_the_database_takes_no_connection_without_the_password(stack):
    # From the hub's container, as the role the hub uses, but without libpq's password file.
    attempt = stack.exec("hub", "python", "-I", "-c",
                         "import psycopg; psycopg.connect('host=postgres dbname=enclave user=enclave passfile=/dev/null')",
                         check=False)
    assert attempt.returncode != 0
    assert "password authentication failed" in attempt.stderr or "no password supplied" in attempt.stderr, attempt.stderr
    # And PostgreSQL is published on no host port.
    assert not stack.container("postgres")["NetworkSettings"]["Ports"].get("5432/tcp")


def test_the_operator_logs_in_over_http(stack, accounts):
    http = stack.login("wang", accounts["wang"])
    me = http.get(stack.url + "/hub/home", timeout=30)
    assert me.status_code == 200 and "wang" in me.text
    # A wrong password is refused.
    http = requests.Session()
    http.trust_env = False
    http.get(stack.url + "/hub/login", timeout=30)
    r = http.post(stack.url + "/hub/login", timeout=30, data={
        "username": "wang", "password": "not-" + accounts["wang"],
        "_xsrf": cookie_value(http, stack.url + "/hub/login", "_xsrf")})
    assert not r.url.endswith("/hub/home")


def test_the_images_and_containers_hold_no_secret(stack):
    password = stack.db_password
    for service in ("postgres", "hub", "launcher"):
        container = stack.container(service)
        assert password not in json.dumps(container), f"{service}'s configuration holds the database password"
    assert password not in stack.compose("config").stdout
    for image in IMAGES:
        config = subprocess.run([DOCKER, "image", "inspect", image], capture_output=True, text=True, check=True).stdout
        history = subprocess.run([DOCKER, "history", "--no-trunc", image], capture_output=True, text=True, check=True).stdout
        for text in (config, history):
            assert password not in text
            assert "PASSWORD=" not in text.replace("POSTGRES_PASSWORD_FILE", "")
    # No secret file, password file or build-time CA secret was left in the images' file systems.
    for image in ("enclave/hub", "enclave/postgres"):
        found = subprocess.run(
            [DOCKER, "run", "--rm", "--network=none", "--entrypoint", "/bin/sh", image, "-c",
             "find /run/secrets /run/enclave /root/.pgpass /var/lib/postgresql/data -type f 2>/dev/null; true"],
            capture_output=True, text=True, check=True).stdout
        assert found.strip() == "", f"{image}: {found}"


def test_the_hub_container_cannot_reach_docker(stack):
    hub = stack.container("hub")
    assert not any("docker.sock" in m.get("Source", "") for m in hub["Mounts"])
    assert not hub["HostConfig"]["Privileged"]
    # The attack: ask the Docker API from inside the hub's container, as its root.
    attempt = stack.exec("hub", "python", "-I", "-c", "import docker; print(docker.from_env().version())", check=False)
    assert attempt.returncode != 0
    assert "DockerException" in attempt.stderr or "FileNotFoundError" in attempt.stderr, attempt.stderr
    sockets = stack.exec("hub", "find", "/", "-xdev", "-type", "s", "-name", "docker.sock").stdout
    assert sockets.strip() == ""
    # The launcher does hold it.
    launcher = stack.container("launcher")
    assert any(m.get("Destination") == "/var/run/docker.sock" for m in launcher["Mounts"])


def _server(http: requests.Session, stack: Stack, user: str, workspace: str) -> dict | None:
    api = f"{stack.url}/hub/api/users/{user}"
    model = http.get(api, headers={"X-XSRFToken": cookie_value(http, api, "_xsrf") or ""}, timeout=30).json()
    return model.get("servers", {}).get(workspace)


def _sandbox_containers(workspace: str) -> list[str]:
    return subprocess.run([DOCKER, "ps", "--quiet", "--filter", "label=org.enclave.role=sandbox",
                           "--filter", f"name=-{workspace}-"], capture_output=True, text=True, check=True).stdout.split()


def test_an_operator_starts_a_workspace_through_the_launcher(stack, accounts):
    stack.enclave("workspace", "create", "survey")
    stack.enclave("workspace", "add-member", "survey", "wang", "--role", "operator")
    http = stack.login("wang", accounts["wang"])
    assert http.get(f"{stack.url}/hub/spawn/wang/survey", timeout=120).status_code == 200
    wait_for(lambda: (_server(http, stack, "wang", "survey") or {}).get("ready"), 120, "wang's survey server")
    # A container the host's Docker daemon runs, on the home the launcher loop-mounted (seen on the host).
    assert len(_sandbox_containers("survey")) == 1
    home = stack.state / "homes" / "wang" / "survey"
    assert os.path.ismount(home)
    fs = os.statvfs(home)
    assert fs.f_blocks * fs.f_frsize <= 64 * 2**20, "the home's quota is not the settings file's disk_mb"


def test_restarting_the_hub_keeps_the_accounts_and_running_sandboxes(stack, accounts):
    before = _sandbox_containers("survey")
    stack.compose("restart", "hub")
    stack.wait_for_hub()
    http = stack.login("wang", accounts["wang"])
    assert (_server(http, stack, "wang", "survey") or {}).get("ready")
    assert _sandbox_containers("survey") == before


def _production_doc_block(heading: str) -> str:
    """The first shell block after ``heading`` in docs/production.md."""
    doc = (REPO / "docs" / "production.md").read_text(encoding="utf-8")
    section = doc[doc.index(heading + "\n"):]
    return re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)


def _run_doc_block(stack: Stack, block: str, backup: Path) -> None:
    """Run a block of docs/production.md as written, on this stack: its paths are the test's
    (repository, state directory, backup folder) and `docker-compose` is this project's."""
    script = (block.replace("/opt/enclave", str(REPO)).replace("/var/lib/enclave", str(stack.state)))
    script = re.sub(r"/backup/enclave-(\$\(date \+%F\)|[^\s\"]+)", str(backup), script)
    compose = (f"docker-compose() {{ {COMPOSE} --project-name {stack.project} --project-directory {REPO}"
               f" --file {REPO / 'docker-compose.yml'} --env-file {stack.state / 'compose.env'} \"$@\"; }}\n")
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
    env.update(ENCLAVE_STATE=str(stack.state), ENCLAVE_PORT=str(stack.port))
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", compose + script], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, f"{block}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}\n{stack.logs()}"


# The export walk through the deployment: a release of households, the holder's consent in her
# browser, an operator's analysis in her container, two reviewers, the download and its verification.
WALK = "households"
WALK_RELEASE = "households@1"
WALK_PURPOSE = "各区县户数统计（测试）"
WALK_PEOPLE = {"heidi": "holder", "liu": "operator", "carol": "reviewer", "dave": "reviewer"}
WALK_PASSWORD = "走查-correct-horse-battery"
COUNTS = ("import pandas as pd\n"
          f"df = pd.read_csv('/data/{WALK_RELEASE}/table.csv')\n"
          "counts = (df.groupby('区县').size() / 5).round().astype(int) * 5\n"
          "counts.rename('户数').to_csv('counts.csv')\n"
          "print(open('counts.csv', encoding='utf-8').read())")


def _publish_walk_release(stack: Stack) -> None:
    """A release as the store publishes one (root's, read-only), in the deployment's state directory."""
    rows = [f"{district},{size}" for district, n in (("和平区", 60), ("南开区", 45), ("河西区", 35))
            for size in [1 + i % 5 for i in range(n)]]
    data = stack.state / "releases" / WALK_RELEASE / "data"
    data.mkdir(parents=True)
    (data / "table.csv").write_text("区县,人口\n" + "\n".join(rows) + "\n", encoding="utf-8")
    (data / "table.csv").chmod(0o444)
    data.chmod(0o555)


@pytest.mark.browser
async def test_an_export_walks_through_the_deployment_in_chromium(stack):
    from playwright.async_api import async_playwright, expect

    for name, role in WALK_PEOPLE.items():
        stack.enclave("user", "add", name, "--role", role, "--password-stdin", input=WALK_PASSWORD + "\n")
    _publish_walk_release(stack)
    stack.enclave("data", "set-holder", "households", "heidi")
    stack.enclave("workspace", "create", WALK, "--purpose", WALK_PURPOSE, "--holder", "heidi")
    for name, role in WALK_PEOPLE.items():
        if role in ("operator", "reviewer"):
            stack.enclave("workspace", "add-member", WALK, name, "--role", role)
    stack.enclave("workspace", "attach", WALK, WALK_RELEASE, "--reason", "户数统计")
    hub = stack.as_hub()

    async with async_playwright() as p:
        chromium = Browser(await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS))
        # heidi consents in her browser, shown the workspace's purpose.
        ctx, page = await chromium.person(hub, "heidi", WALK_PASSWORD)
        await page.goto(f"{hub.service_url('provisioning')}/consents")
        request = page.locator(f".consent-request[data-workspace={WALK}]")
        await expect(request.locator("p.purpose")).to_have_text(WALK_PURPOSE)
        await request.get_by_role("button", name="Consent").click()
        await expect(page.locator(f".consent-request[data-workspace={WALK}]")).to_have_count(0)
        await ctx.close()

        # liu starts the workspace's container, counts households on /data and asks to export them.
        liu_ctx, lab = await chromium.person(hub, "liu", WALK_PASSWORD)
        await lab.click(f"#start-{WALK}")
        await lab.wait_for_url(f"**/user/liu/{WALK}/lab**")
        await lab.wait_for_selector(".jp-DirListing-content")
        liu = hub.login("liu", WALK_PASSWORD)
        assert liu.start(WALK).status_code == 200  # already running: the server's log-in
        kernel = liu.kernel(WALK)
        written, error = kernel.run(COUNTS)
        kernel.close()
        assert error is None and written.startswith("区县,户数\n"), (written, error)
        assert len(_sandbox_containers(WALK)) == 2  # the server and its kernel, each a container
        dialog = await request_export(lab, ["counts.csv"], "各区县户数（已取整到5），用于年度报告。")
        await dialog.locator(".jp-Dialog-button", has_text="Submit for review").click()
        requested = lab.locator(".jp-Dialog", has_text="Export requested")
        await expect(requested).to_be_visible()
        await requested.locator(".jp-Dialog-button.jp-mod-accept").click()
        await lab.locator('.jp-SideBar [data-id="enclave-exports"]').click()
        entry = lab.locator(".enclave-export", has_text="counts.csv")
        request_id = await entry.get_attribute("data-request-id")

        # Two reviewers approve: the second approval releases it.
        for reviewer in ("carol", "dave"):
            ctx, page = await chromium.person(hub, reviewer, WALK_PASSWORD)
            await vote(page, hub, request_id, {"counts.csv": ("approve", "已取整，可以发布。")})
            await ctx.close()

        # liu downloads it from her Exports panel; the deployment's `enclave exports verify` accepts it.
        data = await download_from_exports_panel(liu_ctx, entry, "counts.csv", chromium.timeout)
        await liu_ctx.close()
        assert chromium.errors == [], "\n".join(chromium.errors)
    assert data.decode("utf-8-sig").replace("\r\n", "\n") == written.rstrip("\n") + "\n"
    downloaded = stack.state / "downloads" / "counts.csv"
    downloaded.parent.mkdir()
    downloaded.write_bytes(data)
    verified = stack.enclave("exports", "verify", str(downloaded))
    assert "VALID" in verified.stdout and "requested by liu" in verified.stdout, verified.stdout
    liu.stop(WALK)


def _requests_seen_by(stack: Stack, user: str, password: str) -> list[dict]:
    """The export requests ``user`` sees in the review service's API, logged in as a browser is."""
    session = stack.as_hub().login(user, password)
    service = stack.as_hub().service_url("exports")
    session.http.get(f"{service}/", timeout=60)  # the service's own log-in, through the hub
    r = session.http.get(f"{service}/api/requests", params={"mine": "true"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["requests"]


def test_down_then_up_keeps_the_accounts_and_requests(stack, accounts):
    stack.compose("down", "--timeout", "20")
    stack.up()
    stack.login("wang", accounts["wang"])
    stack.login("ops-admin", accounts["ops-admin"])
    listed = stack.enclave("user", "list").stdout
    assert "wang" in listed and "ops-admin" in listed
    # And the walk's export request, released.
    [request] = _requests_seen_by(stack, "liu", WALK_PASSWORD)
    assert request["state"] == "released", request


def test_the_documented_backup_restores_into_an_empty_deployment(stack, accounts):
    backup = Path(tempfile.mkdtemp(prefix="enclave-backup-"))
    try:
        _backup_and_restore(stack, accounts, backup)
    finally:
        shutil.rmtree(backup)


def _backup_and_restore(stack: Stack, accounts: dict, backup: Path) -> None:
    _run_doc_block(stack, _production_doc_block("## Backups"), backup)
    assert sorted(p.name for p in backup.iterdir()) == ["audit.dump", "enclave.dump", "exports.dump",
                                                       "jupyterhub.dump", "state.tar"]
    stack.wait_for_hub()
    # Everything is lost: the containers, the database volume and the state directory's contents
    # (the state directory itself is the fixture's shared mount, kept).
    stack.compose("down", "--volumes", "--timeout", "20")
    for entry in stack.state.iterdir():
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    _run_doc_block(stack, _production_doc_block("### Restoring"), backup)
    stack.wait_for_hub()
    stack.login("wang", accounts["wang"])
    assert set(stack.psql("enclave", "SELECT username FROM accounts").split()) == {"ops-admin", "wang", *WALK_PEOPLE}
    # The released export request of the walk is back, as its requester sees it.
    [request] = _requests_seen_by(stack, "liu", WALK_PASSWORD)
    assert request["state"] == "released", request
    # The restored secrets are the ones in use: the audit log still verifies with its signing key.
    stack.enclave("audit", "verify")
