"""``enclave apply FILE.yaml``: the whole file in one transaction, idempotent, ``--dry-run`` changing
nothing, removals only with ``prune:``, every mistake of a file named with its line.

Real SQLite, the real audit service (tests/audit/conftest.py's AuditHome), the real commands run in
process as click runs them, each starting the provisioning service for the while (no hub runs here),
which applies the file (POST /apply); each test uses names of its own in the module's Enclave home.
"""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest
from click.testing import CliRunner

from audit.conftest import AuditHome
from enclave.cli import main

PURPOSE = "人口普查分析：按区统计户规模（应用场景经数据持有方审批）"


def publish(home, release: str) -> None:
    """A release in the store with one table of three columns (as a Parquet file and its CSV)."""
    data = home / "releases" / release / "data"
    data.mkdir(parents=True)
    frame = pd.DataFrame({"district": ["和平区", "河西区"], "size": [3, 4], "income": [5200, 6100]})
    frame.to_parquet(data / "households.parquet")
    frame.to_csv(data / "households.csv", index=False)


@pytest.fixture(scope="module")
def enclave_home(tmp_path_factory):
    home = AuditHome(tmp_path_factory.mktemp("apply") / "home")
    home.start()
    yield home
    home.stop()
    home.cleanup()


def run(home: AuditHome, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=home.env(), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def apply(home: AuditHome, tmp_path, text: str, *options: str) -> tuple[int, str, str]:
    path = tmp_path / "enclave.yaml"
    path.write_text(text, encoding="utf-8")
    return run(home, "apply", str(path), *options)


def show(home: AuditHome, workspace: str) -> dict | None:
    code, out, _ = run(home, "workspace", "show", workspace, "--format", "json")
    return json.loads(out) if code == 0 else None


def record_count(home: AuditHome) -> int:
    return len(home.all_records())


CENSUS = textwrap.dedent("""\
    accounts:
      {p}-holder: {{roles: [holder]}}
      {p}-op: {{roles: [operator]}}
      {p}-op2: {{roles: [operator]}}
      {p}-rev: {{roles: [reviewer]{reviewer}}}
      {p}-owner: {{roles: [operator, reviewer]}}
    sources:
      {p}-households: {{holder: {p}-holder}}
    workspaces:
      {p}-ws:{state}
        purpose: {purpose}
        holder: {p}-holder
        expires_at: 2027-12-31T18:00:00+08:00
        members:
          operator: [{p}-op{operators}]
          reviewer: [{p}-rev]
          owner: [{p}-owner]
        releases:
          {p}-households@1:
            columns: {columns}
            reason: 按区统计户规模
        limits: {{memory_mb: 4096, pids: 128}}
        guard: {{terminals: false}}
        export_policy: {{approvals_required: 2, min_cell_count: 10}}
    """)


def census_file(home: AuditHome, p: str, *, purpose: str = PURPOSE, operators: str = "", columns: str = "[district, size]",
                reviewer: str = "", state: str = "", more: str = "") -> str:
    """A file for workspace ``{p}-ws``, its holder, source ``{p}-households`` and members (names
    starting ``p``); its two releases are published in the store."""
    for version in (1, 2):
        if not (home.home / "releases" / f"{p}-households@{version}").exists():
            publish(home.home, f"{p}-households@{version}")
    return CENSUS.format(p=p, purpose=purpose, operators=operators, columns=columns, reviewer=reviewer,
                         state=state) + more


def test_apply_makes_what_the_file_says_and_a_second_apply_changes_nothing(enclave_home, tmp_path):
    code, out, err = apply(enclave_home, tmp_path, census_file(enclave_home, "a"))
    assert code == 0, err
    assert "+ workspace a-ws: ask for a-households@1 (columns district, size), awaiting the consent of a-holder" in out
    passwords = out.split("passwords of the new accounts")[1].splitlines()[1:]
    assert sorted(p.split(":")[0].strip() for p in passwords) == ["a-holder", "a-op", "a-op2", "a-owner", "a-rev"]
    assert show(enclave_home, "a-ws") == {
        "name": "a-ws",
        "purpose": PURPOSE,
        "holder": "a-holder",
        "state": "active",
        "state_reason": "",
        "expires_at": "2027-12-31T10:00:00+00:00",
        "operators_may_review": False,
        "members": {"operator": ["a-op"], "reviewer": ["a-rev"], "owner": ["a-owner"]},
        # A request: it waits for the holder's consent, which the file cannot give.
        "releases": {"a-households@1": {"columns": {"households": ["district", "size"]}, "reason": "按区统计户规模",
                                        "status": "awaiting_consent"}},
        "limits": {"memory_mb": 4096, "pids": 128},
        "guard": {"terminals": False},
        "export_policy": {"approvals_required": 2, "min_cell_count": 10},
    }
    code, out, _ = run(enclave_home, "user", "show", "a-owner", "--format", "json")
    assert code == 0 and json.loads(out)["roles"] == ["operator", "reviewer"]
    made = [r for r in enclave_home.all_records()
            if r["workspace"] == "a-ws" or str(r["detail"].get("user", "")).startswith("a-")]
    # One record per change: 5 accounts, the source, the workspace, 3 members, the request, limits, guard,
    # export policy.
    assert len(made) == 14 and {r["source"] for r in made} == {"cli"}

    before = record_count(enclave_home)
    code, out, err = apply(enclave_home, tmp_path, census_file(enclave_home, "a"))
    assert code == 0, err
    assert out.strip() == f"nothing to change: Enclave already is as {tmp_path / 'enclave.yaml'} declares"
    assert record_count(enclave_home) == before


def test_a_workspace_built_by_the_cli_is_the_one_the_file_builds(enclave_home, tmp_path):
    """The acceptance of issue #15: the same workspace by commands and by apply, the same state."""
    assert apply(enclave_home, tmp_path, census_file(enclave_home, "h"))[0] == 0
    commands = [
        ("workspace", "create", "h-cli", "--purpose", PURPOSE, "--holder", "h-holder", "--expires", "2027-12-31T18:00:00+08:00"),
        ("workspace", "add-member", "h-cli", "h-op", "--role", "operator"),
        ("workspace", "add-member", "h-cli", "h-rev", "--role", "reviewer"),
        ("workspace", "add-member", "h-cli", "h-owner", "--role", "owner"),
        ("workspace", "attach", "h-cli", "h-households@1", "--columns", "district,size", "--reason", "按区统计户规模"),
        ("workspace", "set-limits", "h-cli", "memory_mb=4096", "pids=128"),
        ("workspace", "set-guard", "h-cli", "terminals=false"),
        ("workspace", "set-export-policy", "h-cli", "approvals_required=2", "min_cell_count=10"),
    ]
    for command in commands:
        code, _, err = run(enclave_home, *command)
        assert code == 0, (command, err)
    by_file, by_cli = show(enclave_home, "h-ws"), show(enclave_home, "h-cli")
    assert by_file.pop("name") == "h-ws" and by_cli.pop("name") == "h-cli"
    assert by_cli == by_file
    # And the file, naming the workspace the commands built, finds nothing to change.
    same = census_file(enclave_home, "h").replace("h-ws:", "h-cli:")
    assert apply(enclave_home, tmp_path, same)[1].startswith("nothing to change")


def test_dry_run_prints_the_diff_and_changes_nothing(enclave_home, tmp_path):
    assert apply(enclave_home, tmp_path, census_file(enclave_home, "b"))[0] == 0
    built, records = show(enclave_home, "b-ws"), record_count(enclave_home)

    changed = census_file(enclave_home, "b", purpose="住户收入分析", operators=", b-op2", columns="[district, income]")
    code, out, err = apply(enclave_home, tmp_path, changed, "--dry-run")
    assert code == 0, err
    assert out.splitlines() == [
        "~ workspace b-ws: asked for again, with its new columns or reason: the data holder's consent is asked"
        " again — b-households@1, awaiting consent",
        "~ workspace b-ws: purpose: 住户收入分析",
        "+ workspace b-ws: add operator b-op2",
        "+ workspace b-ws: ask for b-households@1 (columns district, income), awaiting the consent of b-holder",
        "dry run: 4 change(s) would be made; nothing was changed",
    ]
    assert show(enclave_home, "b-ws") == built and record_count(enclave_home) == records

    code, out, err = apply(enclave_home, tmp_path, changed)
    assert code == 0, err
    after = show(enclave_home, "b-ws")
    assert after["purpose"] == "住户收入分析" and after["members"]["operator"] == ["b-op", "b-op2"]
    assert after["releases"]["b-households@1"]["columns"] == {"households": ["district", "income"]}
    assert record_count(enclave_home) == records + 4  # one record per change


def test_a_file_with_mistakes_is_refused_with_each_named_and_nothing_applied(enclave_home, tmp_path):
    assert apply(enclave_home, tmp_path, census_file(enclave_home, "c"))[0] == 0
    before, records = show(enclave_home, "c-ws"), record_count(enclave_home)
    code, _, err = apply(enclave_home, tmp_path, textwrap.dedent("""\
        accounts:
          c-new: {roles: [operator]}
          c-bad: {roles: [operator, superuser]}
          c-odd: {roles: [reviewer], colour: blue}
          c-late: {roles: [operator], expires_at: 2027-02-30}
          c-new: {roles: [reviewer]}
        workspaces:
          c-ws:
            purpose: 新的用途
            state: frozen
            operators_may_review: "否"
            members:
              operator: [c-op, c-owner, c-nobody]
              reviewer: [c-owner, c-op]
            releases:
              c-households@1: {columns: [district, 收入]}
              missing@2: {}
          c-other:
            purpose: 另一个
            export_policy: {approvals_required: many, colour: 1}
        """))
    assert code == 1
    file = tmp_path / "enclave.yaml"
    assert "nothing was applied (13 problem(s))" in err
    assert [line for line in err.splitlines() if line.startswith(str(file))] == [
        f"{file}:3: accounts.c-bad.roles[1]: unknown role 'superuser' (one of: admin, holder, operator, reviewer)",
        f"{file}:4: accounts.c-odd.colour: unknown key (keys in account: roles, state, state_reason, expires_at)",
        f"{file}:5: accounts.c-late.expires_at: '2027-02-30' cannot be read: day is out of range for month",
        f"{file}:6: accounts.c-new: given twice (first on line 2)",
        f"{file}:10: workspaces.c-ws.state: frozen: say why with state_reason (the reason is recorded)",
        f"{file}:11: workspaces.c-ws.operators_may_review: must be true or false (got text)",
        f"{file}:13: workspaces.c-ws.members.operator[2]: no account named 'c-nobody' in the file or in Enclave",
        f"{file}:14: workspaces.c-ws.members.reviewer[0]: 'c-owner' would be both operator and reviewer of 'c-ws',"
        " which its policy does not allow (operators_may_review: false)",
        f"{file}:14: workspaces.c-ws.members.reviewer[1]: 'c-op' does not hold the reviewer role",
        f"{file}:16: workspaces.c-ws.releases.c-households@1.columns: release 'c-households@1' has no column(s) '收入'"
        " (it has: households.district, households.size, households.income)",
        f"{file}:17: workspaces.c-ws.releases.missing@2: release 'missing@2' is not in the release store"
        f" ({enclave_home.home / 'releases'})",
        f"{file}:20: workspaces.c-other.export_policy.approvals_required: Input should be a valid integer, unable to"
        " parse string as an integer",
        f"{file}:20: workspaces.c-other.export_policy.colour: unknown export policy key (one of: approvals_required,"
        " max_file_mb, max_files_per_request, max_csv_rows, min_cell_count, round_base, nk_n, nk_k, p_ratio)",
    ]
    # The file's sound parts are not applied either.
    assert run(enclave_home, "user", "show", "c-new")[0] != 0 and show(enclave_home, "c-other") is None
    assert show(enclave_home, "c-ws") == before and record_count(enclave_home) == records

    # The file cannot consent for the data holder: a release it names is only ever asked for.
    consenting = census_file(enclave_home, "c").replace(
        "        reason: 按区统计户规模\n", "        reason: 按区统计户规模\n        status: attached\n        consented_by: c-holder\n")
    code, _, err = apply(enclave_home, tmp_path, consenting)
    assert code == 1 and "workspaces.c-ws.releases.c-households@1.status: unknown key (keys in release: columns, reason)" in err
    assert "workspaces.c-ws.releases.c-households@1.consented_by: unknown key" in err
    assert show(enclave_home, "c-ws")["releases"]["c-households@1"]["status"] == "awaiting_consent"

    code, _, err = apply(enclave_home, tmp_path, "accounts:\n  c-x: [operator\n  c-y: 1\n")
    assert code == 1 and f"{file}:3: YAML syntax: expected ',' or ']', but got ':'" in err


def test_a_refusal_in_the_middle_leaves_nothing_applied(enclave_home, tmp_path):
    """A change the service layer refuses after others were made in the transaction, and a record
    the audit log refuses: either way, nothing of the file is applied and nothing is recorded."""
    assert apply(enclave_home, tmp_path, census_file(enclave_home, "d"))[0] == 0
    before, records = show(enclave_home, "d-ws"), record_count(enclave_home)

    # The guard's own check (in the operators' environment) refuses the file's last change.
    bad_guard = census_file(enclave_home, "d", purpose="新的用途", operators=", d-op2", more=(
        "  d-new:\n    purpose: 新工作区\n    guard: {upload_max_mb: lots}\n"))
    code, out, err = apply(enclave_home, tmp_path, bad_guard)
    assert code == 1 and "workspaces.d-new.guard: invalid guard settings for 'd-new'" in err, err
    assert "(nothing was applied)" in err
    assert show(enclave_home, "d-ws") == before and show(enclave_home, "d-new") is None
    assert record_count(enclave_home) == records

    # The audit log refuses a record (its detail is over 64 KiB): the changes made before it roll back.
    code, out, err = apply(enclave_home, tmp_path, census_file(enclave_home, "d", purpose="数" * 30_000, operators=", d-op2"))
    assert code == 1 and "is refused; nothing was applied: the audit log does not take its records" in err, err
    assert "detail is 90110 bytes once encoded" in err
    assert show(enclave_home, "d-ws") == before and record_count(enclave_home) == records


def test_asking_again_for_an_attached_release_replaces_it_and_a_rollback_keeps_its_files(enclave_home, tmp_path):
    from enclave import supply, workspaces

    assert apply(enclave_home, tmp_path, census_file(enclave_home, "g"))[0] == 0
    settings = enclave_home.settings
    workspaces.consent(settings, "g-ws", "g-households@1", "g-holder")  # the holder's own action
    view = supply.view_dir(settings, "g-ws", "g-households@1")
    manifest = supply.read_manifest(settings, "g-ws")
    assert view.is_dir() and manifest[-1]["action"] == "attach"

    # Other columns, and a refusal after the detach: the view and the manifest stay as they were.
    failing = census_file(enclave_home, "g", columns="[district, income]", more=(
        "  g-new:\n    purpose: 新工作区\n    guard: {upload_max_mb: lots}\n"))
    code, _, err = apply(enclave_home, tmp_path, failing)
    assert code == 1 and "(nothing was applied)" in err
    assert view.is_dir() and supply.read_manifest(settings, "g-ws") == manifest
    assert show(enclave_home, "g-ws")["releases"]["g-households@1"]["status"] == "attached"

    code, out, err = apply(enclave_home, tmp_path, census_file(enclave_home, "g", columns="[district, income]"))
    assert code == 0, err
    assert not view.exists() and supply.read_manifest(settings, "g-ws")[-1]["action"] == "detach"
    assert show(enclave_home, "g-ws")["releases"]["g-households@1"] == {
        "columns": {"households": ["district", "income"]}, "reason": "按区统计户规模", "status": "awaiting_consent"}


def test_removals_only_with_prune(tmp_path):
    home = AuditHome(tmp_path / "home")  # its own home: pruning accounts removes every account not in the file
    home.start()
    try:
        two_releases = census_file(home, "e").replace("    releases:\n", "    releases:\n      e-households@2: {}\n")
        code, _, err = apply(home, tmp_path, two_releases)
        assert code == 0, err
        assert run(home, "user", "add", "e-stranger", "--role", "operator")[0] == 0
        built = show(home, "e-ws")
        assert set(built["releases"]) == {"e-households@1", "e-households@2"}

        # An owner, a release and two accounts fewer: without prune, nothing goes.
        smaller = census_file(home, "e").replace("owner: [e-owner]", "owner: []").replace("  e-op2: {roles: [operator]}\n", "")
        code, out, err = apply(home, tmp_path, smaller)
        assert code == 0 and out.startswith("nothing to change"), out + err
        assert show(home, "e-ws") == built

        pruning = "prune: {members: true, releases: true, accounts: true}\n" + smaller
        code, out, err = apply(home, tmp_path, pruning, "--dry-run")
        assert code == 0, err
        assert "- workspace e-ws: detach (not in the file) — e-households@2, awaiting consent" in out
        assert "- workspace e-ws: remove owner e-owner (not in the file)" in out
        assert "- account e-stranger: remove (not in the file)" in out and "- account e-op2: remove (not in the file)" in out
        assert show(home, "e-ws") == built

        code, out, err = apply(home, tmp_path, pruning)
        assert code == 0, err
        after = show(home, "e-ws")
        assert after["members"]["owner"] == [] and set(after["releases"]) == {"e-households@1"}
        assert run(home, "user", "show", "e-stranger")[0] != 0 and run(home, "user", "show", "e-op2")[0] != 0
        assert apply(home, tmp_path, pruning)[1].startswith("nothing to change")
    finally:
        home.stop()
        home.cleanup()


def test_freeze_and_disable_from_the_file_and_back(enclave_home, tmp_path):
    assert apply(enclave_home, tmp_path, census_file(enclave_home, "f"))[0] == 0
    stopped = census_file(enclave_home, "f", state="\n    state: frozen\n    state_reason: 数据持有方要求暂停",
                          reviewer=", state: disabled, state_reason: 已离职")
    code, out, err = apply(enclave_home, tmp_path, stopped)
    assert code == 0, err
    assert "~ workspace f-ws: frozen: 数据持有方要求暂停" in out and "~ account f-rev: disabled: 已离职" in out
    ws = show(enclave_home, "f-ws")
    assert (ws["state"], ws["state_reason"]) == ("frozen", "数据持有方要求暂停")
    account = json.loads(run(enclave_home, "user", "show", "f-rev", "--format", "json")[1])
    assert (account["state"], account["state_reason"]) == ("disabled", "已离职")
    assert apply(enclave_home, tmp_path, stopped)[1].startswith("nothing to change")
    # A file that does not say a state keeps the state there is.
    assert apply(enclave_home, tmp_path, census_file(enclave_home, "f"))[1].startswith("nothing to change")

    code, out, err = apply(enclave_home, tmp_path, census_file(enclave_home, "f").replace(
        "  f-ws:\n", "  f-ws:\n    state: active\n").replace("[reviewer]}", "[reviewer], state: active}"))
    assert code == 0 and "~ workspace f-ws: unfrozen" in out and "~ account f-rev: enabled" in out, out + err
    assert show(enclave_home, "f-ws")["state"] == "active"


def test_the_page_is_current_and_its_example_is_a_sound_file(enclave_home):
    from enclave.provisioning.apply import DOC_PATH, parse

    code, _, err = run(enclave_home, "apply-doc", "--check")
    assert code == 0, err
    example = DOC_PATH.read_text(encoding="utf-8").split("```yaml\n")[1].split("```")[0]
    declared = parse(example, "example")
    assert declared.problems == [] and declared.workspaces["census"]["purpose"] == "人口普查分析：按区统计户规模"
    assert declared.prune == {"accounts": False, "members": True, "releases": False}
