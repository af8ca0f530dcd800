"""``enclave user``, ``enclave workspace`` and ``enclave data sources|set-holder`` through a whole life,
run as the real command (a process each, as an admin runs it) on a throwaway ENCLAVE_HOME whose audit
and provisioning services run, as they do beside a hub: each command is a request to the provisioning
service over its root-only socket. The holder's consent is an action of the holder's own account (the
provisioning pages and API): here it is the service layer's ``workspaces.consent``, in-process.

And the commands with no service running (first-time setup, before any hub): each starts one for
the while, and stops it.
"""

from __future__ import annotations

import getpass
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from audit.conftest import AuditHome
from enclave import accounts, workspaces
from enclave.provisioning.client import APPLY_BODY_LIMIT, call, reachable, socket_path
from enclave_testing import ENCLAVE, ProvisioningService, beside_a_hub

PASSWORD = "a-long-enough-password"
PURPOSE = "人口普查：分析各区县的人口结构，为养老设施规划提供依据"
RESIDENTS = pd.DataFrame({"区县": ["和平", "南开", "河西"], "人数": [120, 35, 45], "身份证号": ["1", "2", "3"]})


def services_of(home: Path) -> list[str]:
    """The command lines of the processes that run a service (provisioning, audit) on ``home``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not a process
            continue
        if b"ENCLAVE_HOME=" + str(home).encode() in environ and any(b"enclave." in part for part in cmdline):
            found.append(b" ".join(cmdline).decode(errors="replace"))
    return found


def _home(tmp_path: Path) -> AuditHome:
    """An Enclave home with the release ``residents@1`` in its store."""
    home = AuditHome(tmp_path / "home")
    data = home.settings.release_store / "residents@1" / "data"
    data.mkdir(parents=True)
    RESIDENTS.to_parquet(data / "residents.parquet", index=False)
    RESIDENTS.to_csv(data / "residents.csv", index=False)
    return home


@pytest.fixture
def home(tmp_path):
    """An Enclave home with its audit and provisioning services running, as beside a hub."""
    with beside_a_hub(_home(tmp_path)) as home:
        yield home


def run(home: AuditHome, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENCLAVE), *args], env=home.env(), input=input, capture_output=True, text=True,
                          timeout=120)


def ok(home: AuditHome, *args: str, input: str | None = None) -> str:
    done = run(home, *args, input=input)
    assert done.returncode == 0, f"enclave {' '.join(args)}: {done.stderr}"
    return done.stdout


def refused(home: AuditHome, *args: str, input: str | None = None) -> str:
    """The error of a command that must fail as a refusal (exit 1, one 'Error: ' line), not a crash."""
    done = run(home, *args, input=input)
    assert done.returncode == 1 and done.stderr.startswith("Error: ") and "Traceback" not in done.stderr, \
        f"enclave {' '.join(args)}: exit {done.returncode}: {done.stderr}"
    return done.stderr


def add(home: AuditHome, name: str, *roles: str) -> None:
    ok(home, "user", "add", name, *(a for r in roles for a in ("--role", r)), "--password-stdin", input=PASSWORD + "\n")


def test_accounts_through_their_life(home):
    add(home, "adam", "admin")
    add(home, "hanna", "holder")
    add(home, "olga", "operator")
    add(home, "rita", "reviewer")
    created = ok(home, "user", "add", "tian", "--role", "operator", "--expires", "2099-06-30")
    assert created.startswith("created tian (operator), expires 2099-06-30T00:00:00+00:00\npassword: ")

    listed = [line.split() for line in ok(home, "user", "list").splitlines()]
    assert listed[0] == ["ACCOUNT", "ROLES", "STATE", "EXPIRES", "CREATED"]
    assert [row[:4] for row in listed[1:]] == [
        ["adam", "admin", "active", "-"], ["hanna", "holder", "active", "-"], ["olga", "operator", "active", "-"],
        ["rita", "reviewer", "active", "-"], ["tian", "operator", "active", "2099-06-30T00:00:00+00:00"]]

    # Chinese reasons round-trip through the command line, the text and the JSON.
    assert ok(home, "user", "disable", "olga", "--reason", "借调到其他部门") == "disabled olga: 借调到其他部门\n"
    assert "  state:      disabled (借调到其他部门)\n" in ok(home, "user", "show", "olga")
    shown = json.loads(ok(home, "user", "show", "olga", "--format", "json"))
    assert shown["state"] == "disabled" and shown["state_reason"] == "借调到其他部门" and shown["usable"] is False
    assert ok(home, "user", "enable", "olga") == "enabled olga\n"
    assert ok(home, "user", "set-roles", "olga", "--role", "operator", "--role", "reviewer") \
        == "olga now holds operator, reviewer (from its next login)\n"
    assert ok(home, "user", "set-expiry", "tian", "2099-01-01T08:00+08:00") == "tian expires 2099-01-01T00:00:00+00:00\n"
    assert ok(home, "user", "set-expiry", "tian", "--never") == "tian does not expire\n"
    assert accounts.get_account(home.settings, "tian").expires_at is None
    assert ok(home, "user", "remove", "tian") == "removed tian\n"
    assert "tian" not in [a.name for a in accounts.all_accounts(home.settings)]

    # The last usable admin stays one, whichever way it would stop being one.
    for args in (("disable", "adam", "--reason", "x"), ("remove", "adam"), ("set-roles", "adam", "--role", "operator"),
                 ("set-expiry", "adam", "2020-01-01")):
        assert "it is the last active admin account" in refused(home, "user", *args), args
    add(home, "bert", "admin")
    assert ok(home, "user", "disable", "adam", "--reason", "离职") == "disabled adam: 离职\n"

    # Bad input names the problem.
    assert refused(home, "user", "show", "nobody") == "Error: no account named 'nobody' [account.unknown]\n"
    assert "'30/06/2027' is not a date" in refused(home, "user", "set-expiry", "rita", "30/06/2027")
    assert "'2027-02-30' is not a date" in refused(home, "user", "add", "ulla", "--role", "reviewer",
                                                   "--expires", "2027-02-30")
    both = run(home, "user", "set-expiry", "rita", "2027-01-01", "--never")
    assert both.returncode == 2 and "as DATE or --never, not both" in both.stderr

    ok(home, "user", "set-expiry", "rita", "2020-01-01")
    states = {row[0]: row[-3:-1] for row in (line.split() for line in ok(home, "user", "list").splitlines()[1:])}
    assert states == {"adam": ["disabled", "-"], "bert": ["active", "-"], "hanna": ["active", "-"],
                      "olga": ["active", "-"], "rita": ["expired", "2020-01-01T00:00:00+00:00"]}

    # Each change is an audit record: who ran the command, what changed, and why.
    records = {r["action"]: r for r in home.all_records()}
    assert (records["account.disable"]["source"], records["account.disable"]["actor"]) == ("cli", getpass.getuser())
    assert records["account.disable"]["detail"] == {"user": "adam", "reason": "离职"}
    assert records["account.remove"]["detail"]["user"] == "tian"


def test_a_workspace_through_its_life(home):
    settings = home.settings
    for name, roles in (("adam", ["admin"]), ("hanna", ["holder"]), ("olga", ["operator", "reviewer"]),
                        ("rita", ["reviewer"]), ("otto", ["operator"])):
        accounts.add_user(settings, name, roles, PASSWORD)

    assert ok(home, "data", "sources").splitlines()[1].split() == ["residents", "-", "residents@1"]
    assert "'olga' cannot hold sources" in refused(home, "data", "set-holder", "residents", "olga")
    assert ok(home, "data", "set-holder", "residents", "hanna") == "holder of residents: hanna\n"
    assert ok(home, "data", "sources").splitlines()[1].split() == ["residents", "hanna", "residents@1"]
    assert "no workspace named 'nowhere'" in refused(home, "workspace", "show", "nowhere")

    ok(home, "workspace", "create", "census", "--purpose", PURPOSE, "--holder", "hanna", "--expires", "2099-12-31")
    for user, role in (("olga", "operator"), ("otto", "operator"), ("rita", "reviewer"), ("adam", "owner")):
        ok(home, "workspace", "add-member", "census", user, "--role", role)
    # One account is not operator and reviewer of one workspace, unless the workspace allows it.
    assert "the workspace's policy keeps operators and reviewers apart" in refused(
        home, "workspace", "add-member", "census", "olga", "--role", "reviewer")
    ok(home, "workspace", "set-operators-may-review", "census", "yes")
    ok(home, "workspace", "add-member", "census", "olga", "--role", "reviewer")
    assert ok(home, "workspace", "remove-member", "census", "olga", "--role", "reviewer") \
        == "olga is no longer a reviewer of census\n"
    ok(home, "workspace", "set-operators-may-review", "census", "no")

    assert "unknown export policy key(s) colour" in refused(home, "workspace", "set-export-policy", "census",
                                                            "colour=red")
    assert ok(home, "workspace", "set-export-policy", "census", "approvals_required=1", "min_cell_count=20") \
        == 'export policy of census: {"approvals_required": 1, "min_cell_count": 20} (census/v1)\n'
    asked = ok(home, "workspace", "attach", "census", "residents@1", "--columns", "区县,人数", "--reason", "统计各区人口")
    assert asked == ("asked for columns 区县, 人数 of residents@1 in census: awaiting consent by hanna"
                     " (then mounted at /data/residents@1)\n")
    text = ok(home, "workspace", "show", "census")
    assert "  releases:  -\n" in text
    assert f"  awaiting consent: residents@1 [residents: 区县, 人数], asked by {getpass.getuser()}: 统计各区人口\n" in text

    workspaces.consent(settings, "census", "residents@1", "hanna")  # on the holder's own pages

    shown = ok(home, "workspace", "show", "census", "--format", "json")
    assert shown == json.dumps(workspaces.get(settings, "census").describe(), ensure_ascii=False, sort_keys=True,
                               indent=2) + "\n"
    expected = {
        "name": "census", "purpose": PURPOSE, "holder": "hanna", "state": "active", "state_reason": "",
        "expires_at": "2099-12-31T00:00:00+00:00", "operators_may_review": False,
        "members": {"owner": ["adam"], "operator": ["olga", "otto"], "reviewer": ["rita"]},
        "releases": {"residents@1": {"columns": {"residents": ["区县", "人数"]}, "reason": "统计各区人口",
                                     "status": "attached"}},
        "limits": {}, "guard": {}, "export_policy": {"approvals_required": 1, "min_cell_count": 20}}
    described = json.loads(shown)
    assert {key: described.get(key) for key in expected} == expected
    assert f'"purpose": "{PURPOSE}"' in shown  # the text itself, not \u escapes
    account = json.loads(ok(home, "user", "show", "olga", "--format", "json"))
    assert account["workspaces"] == {"census": ["operator"]}
    assert account["holder_of"] == {"sources": [], "workspaces": []}
    assert "  holder of:  sources residents; workspaces census\n" in ok(home, "user", "show", "hanna")

    assert "cannot remove 'hanna': it is the data holder of residents, workspace census" in refused(
        home, "user", "remove", "hanna")
    ok(home, "workspace", "set-purpose", "census", "人口普查：各街道老年人口分布")
    ok(home, "workspace", "detach", "census", "residents@1")
    ok(home, "workspace", "set-expiry", "census", "--never")

    assert ok(home, "workspace", "freeze", "census", "--reason", "数据持有方要求暂停使用") \
        == "froze census: 数据持有方要求暂停使用\n"
    listed = ok(home, "workspace", "list")
    assert "  purpose:   人口普查：各街道老年人口分布\n" in listed
    assert "  state:     frozen (数据持有方要求暂停使用)\n" in listed and "  releases:  -\n" in listed
    assert ok(home, "workspace", "unfreeze", "census") == "unfroze census\n"

    # Archiving is final: asked for confirmation, and then nothing changes the workspace.
    declined = run(home, "workspace", "archive", "census", "--reason", "项目结束", input="n\n")
    assert declined.returncode == 1 and "This is final" in declined.stdout and "Aborted!" in declined.stderr
    assert workspaces.get(settings, "census").state == "active"
    assert ok(home, "workspace", "archive", "census", "--reason", "项目结束", "--yes") == "archived census: 项目结束\n"
    assert "workspace 'census' is archived: it can no longer change" in refused(
        home, "workspace", "set-purpose", "census", "另一用途")
    assert "workspace 'census' is archived: it cannot be unfrozen" in refused(home, "workspace", "unfreeze", "census")

    described = workspaces.get(settings, "census").describe()
    assert described["state"] == "archived" and described["state_reason"] == "项目结束"
    assert described["purpose"] == "人口普查：各街道老年人口分布" and described["releases"] == {}
    records = [r for r in home.all_records() if r["workspace"] == "census"]
    assert [r["action"] for r in records] == [
        "workspace.create", *["workspace.member_add"] * 4, "workspace.separation_set", "workspace.member_add",
        "workspace.member_remove", "workspace.separation_set", "workspace.export_policy_set",
        "workspace.attach_request", "workspace.purpose_set",
        "workspace.detach", "workspace.expiry_set", "workspace.freeze", "workspace.unfreeze", "workspace.archive"]
    assert records[0]["detail"] == {"purpose": PURPOSE, "user": "hanna", "expires_at": "2099-12-31T00:00:00+00:00"}


def test_apply_and_set_password_are_requests_to_the_service(home, tmp_path):
    """``enclave apply`` sends the file to the service (POST /apply) and ``user set-password`` asks
    the socket's own route: neither imports the service layer, and their changes are the OS user's."""
    from argon2 import PasswordHasher
    from enclave import db
    from test_cli_imports import SERVICE_SIDE, heavy_in, modules_after

    file = tmp_path / "普查.yaml"
    file.write_text("accounts:\n  amy: {roles: [operator]}\nworkspaces:\n  census:\n    purpose: 人口普查\n"
                    "    members: {operator: [amy]}\n", encoding="utf-8")
    for args in (["apply", str(file), "--dry-run"], ["user", "set-password", "nobody"]):
        modules = modules_after(f"from enclave.cli import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass",
                                home.env())
        assert heavy_in(modules) == [] and sorted(modules & set(SERVICE_SIDE)) == [], args
    assert ok(home, "apply", str(file), "--dry-run").splitlines() == [
        "+ account amy: create (operator); its password is printed once", "+ workspace census: create, purpose: 人口普查",
        "+ workspace census: add operator amy", "dry run: 3 change(s) would be made; nothing was changed"]
    applied = ok(home, "apply", str(file)).splitlines()
    assert applied[3:5] == [f"applied 3 change(s) from {file}, in one transaction",
                            "passwords of the new accounts (shown this once; hand each to its owner, who should change it):"]
    assert applied[5].startswith("  amy: ") and workspaces.get(home.settings, "census").describe()["members"]["operator"] == ["amy"]
    assert ok(home, "apply", str(file)) == f"nothing to change: Enclave already is as {file} declares\n"
    (tmp_path / "gbk.yaml").write_bytes("workspaces:\n  census: {purpose: 人口普查}\n".encode("gbk"))
    assert "gbk.yaml is not UTF-8 text (invalid continuation byte at byte 32)" in refused(home, "apply", str(tmp_path / "gbk.yaml"))
    too_big = _written(tmp_path / "big.yaml", "#" * APPLY_BODY_LIMIT + "\n")
    error = refused(home, "apply", str(too_big))
    assert "big.yaml is too large to apply: " in error and " bytes to send, the provisioning service takes at most" \
        " 4194304 (4 MiB); split it into several files" in error
    assert "bad.yaml is refused; nothing was applied (1 problem(s)): [apply.refused]\n" in refused(
        home, "apply", str(_written(tmp_path / "bad.yaml", "accounts: [amy]\n")))

    assert ok(home, "user", "set-password", "amy", "--password-stdin", input="口令：一个足够长的新密码\n") \
        == "password set for amy\n"
    with db.snapshot(home.settings.enclave_db_url) as session:
        assert PasswordHasher().verify(session.get(db.Account, "amy").password_hash, "口令：一个足够长的新密码")
    assert refused(home, "user", "set-password", "amy", "--password-stdin", input="short\n") \
        == "Error: password too short: at least 12 characters [account.password_too_short]\n"
    assert refused(home, "user", "set-password", "nobody") == "Error: no account named 'nobody' [account.unknown]\n"
    records = [r for r in home.all_records() if r["action"] in ("account.create", "account.password_set")]
    assert [(r["action"], r["source"], r["actor"]) for r in records] == [
        ("account.create", "cli", getpass.getuser()), ("account.password_set", "cli", getpass.getuser())]


def _written(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_actor_is_who_ran_sudo(home):
    """Through ``sudo``, the change is the person's who ran it, not root's."""
    done = subprocess.run([str(ENCLAVE), "workspace", "create", "sudoed"], env={**home.env(), "SUDO_USER": "ops"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [record] = [r for r in home.all_records() if r["action"] == "workspace.create"]
    assert (record["source"], record["actor"], record["workspace"]) == ("cli", "ops", "sudoed")


def test_without_a_hub_a_command_starts_the_service_for_the_while(tmp_path):
    """First-time setup: no hub, so no provisioning or audit service. Each command starts both for
    the while and stops them when it ends: no process is left, nor a socket; its change is recorded
    as the OS user's from the CLI, and a refusal is still a clear error with exit 1."""
    home = _home(tmp_path)
    assert not reachable(socket_path(home.home))
    made = run(home, "user", "add", "adam", "--role", "admin", "--password-stdin", input=PASSWORD + "\n")
    assert (made.returncode, made.stdout) == (0, "created adam (admin)\n"), made.stderr
    assert refused(home, "user", "show", "nobody") == "Error: no account named 'nobody' [account.unknown]\n"
    assert ok(home, "user", "list").splitlines()[1].split()[:3] == ["adam", "admin", "active"]
    assert services_of(home.home) == []
    assert not socket_path(home.home).exists() and not home.socket.exists()
    home.start()  # the audit log, read through its service
    [record] = [r for r in home.all_records() if r["action"] == "account.create"]
    assert (record["source"], record["actor"]) == ("cli", getpass.getuser())
    home.cleanup()


def test_a_hub_starting_meanwhile_takes_the_socket_over(tmp_path):
    """A service started for the while serves the CLI's socket; the hub's, starting meanwhile, binds
    it anew (as any provisioning service does, :func:`enclave.provisioning.app.bind_cli_socket`).
    The one for the while, stopping, leaves that socket in place: the hub's still answers."""
    home = _home(tmp_path)
    for_the_while = ProvisioningService(home.home, home.env()).start()
    try:
        hubs = ProvisioningService(home.home, home.env()).start()
    finally:
        assert for_the_while.stop() == 0
    try:
        assert reachable(socket_path(home.home)) and call("GET", "/workspaces", home=home.home) == []
    finally:
        assert hubs.stop() == 0
    assert not socket_path(home.home).exists()
