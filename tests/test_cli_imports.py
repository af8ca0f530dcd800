"""``enclave`` starts fast because its commands import what they need when they run: these keep a
heavy import from creeping back into the command line's start-up (benchmarks/cli.py measures it).
Each such case runs in a fresh interpreter and looks at ``sys.modules``: never at a time.

The listing and provisioning commands are requests to the provisioning service: with it running, they
import none of the service layer (tests/test_provisioning_cli.py runs them through their life, and
without a hub). And the listing commands added with the budget (``user list``, ``workspace show``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Each takes from a tenth of a second to several seconds to import, and no listing command needs one.
HEAVY = ("pandas", "numpy", "nbformat", "jsonschema", "jupyterhub", "tornado", "sdv", "torch", "alembic",
         "enclave.exports.checks", "enclave.exports.files", "synthetic")


def modules_after(code: str, env: dict | None = None) -> set[str]:
    """The modules imported by running ``code`` in a new interpreter."""
    done = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY)


def test_importing_the_command_line_imports_nothing_heavy():
    assert heavy_in(modules_after("import enclave.cli")) == []


def test_help_reads_no_settings_and_opens_no_database():
    modules = modules_after("from enclave.cli import main\n"
                            "try:\n    main(['workspace', 'add-member', '--help'])\nexcept SystemExit:\n    pass")
    assert not {"pydantic", "sqlalchemy", "enclave.settings", "enclave.db"} & modules


# What the listing and provisioning commands import, with the provisioning service running: none of
# the service layer (SQLAlchemy, the settings' pydantic schema) nor the service's web framework.
SERVICE_SIDE = ("sqlalchemy", "pydantic", "pydantic_settings", "tornado", "alembic", "enclave.settings", "enclave.db",
                "enclave.accounts", "enclave.workspaces", "enclave.audit.client")
PROVISIONING_COMMANDS = (
    ["user", "list"], ["user", "show", "olga"], ["user", "show", "olga", "--format", "json"],
    ["user", "add", "nina", "--role", "operator"], ["user", "set-roles", "nina", "--role", "reviewer"],
    ["user", "disable", "nina", "--reason", "借调"], ["user", "enable", "nina"],
    ["user", "set-expiry", "nina", "2099-01-01"], ["user", "remove", "nina"],
    ["workspace", "list"], ["workspace", "show", "census"], ["workspace", "show", "census", "--format", "json"],
    ["workspace", "create", "survey"], ["workspace", "add-member", "survey", "olga", "--role", "operator"],
    ["workspace", "set-limits", "survey", "memory_mb=1024"], ["workspace", "freeze", "survey", "--reason", "审计"],
    ["workspace", "show", "nowhere"],  # a refusal too
    ["data", "sources"],
)


@pytest.fixture
def service(tmp_path):
    """A home with its provisioning service running, as beside a hub (its audit service too: the
    commands above change things)."""
    from audit.conftest import AuditHome
    from enclave_testing import beside_a_hub

    with beside_a_hub(AuditHome(tmp_path / "home")) as home:
        yield home


def test_listing_and_provisioning_commands_import_no_service_layer(service):
    """Nor, in English, Babel: English is the texts as written, and no catalogue is read for it (a
    refusal's message included)."""
    from enclave import accounts, workspaces

    english = service.env() | {"LANG": "C.UTF-8", "LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": ""}
    accounts.add_user(service.settings, "olga", ["operator"], "a-long-enough-password")
    workspaces.create(service.settings, "census")
    for args in PROVISIONING_COMMANDS:
        modules = modules_after(f"from enclave.cli import main\nmain({args!r}, standalone_mode=False)"
                                if args[-1] != "nowhere" else
                                f"from enclave.cli import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass",
                                english)
        assert heavy_in(modules) == [] and sorted(modules & set(SERVICE_SIDE)) == [], args
        assert "babel" not in {m.split(".")[0] for m in modules}, args
    assert workspaces.get(service.settings, "survey").state == "frozen"  # the commands did their work


def test_user_list_and_workspace_show(service, monkeypatch):
    """The two listing commands that came with the budget: what they show, and an unknown workspace."""
    from click.testing import CliRunner

    from enclave import accounts, workspaces
    from enclave.cli import main

    for key, value in service.env().items():
        if key.startswith("ENCLAVE_"):
            monkeypatch.setenv(key, value)
    settings = service.settings
    runner = CliRunner()
    assert runner.invoke(main, ["user", "list"]).output == "no accounts\n"
    accounts.add_user(settings, "olga", ["operator", "reviewer"], "a-long-enough-password")
    accounts.add_user(settings, "adam", ["admin"], "a-long-enough-password")
    workspaces.create(settings, "census")
    workspaces.add_member(settings, "census", "olga", "operator")

    listed = runner.invoke(main, ["user", "list"]).output.splitlines()
    assert listed[0].split() == ["ACCOUNT", "ROLES", "STATE", "EXPIRES", "CREATED"]
    assert [line.split()[:2] for line in listed[1:]] == [["adam", "admin"], ["olga", "operator,"]]
    assert "operator, reviewer" in listed[2] and "hash" not in "".join(listed).lower()

    shown = runner.invoke(main, ["workspace", "show", "census"])
    assert shown.exit_code == 0
    assert shown.output == runner.invoke(main, ["workspace", "list"]).output  # the one workspace, as listed
    assert "  operators: olga\n" in shown.output and "  reviewers: -\n" in shown.output
    assert "  disk:      4096 MiB per home; used: -\n" in shown.output
    missing = runner.invoke(main, ["workspace", "show", "nowhere"])
    assert missing.exit_code == 1 and "no workspace named 'nowhere'" in missing.output


def test_doctor_and_exports_verify_leave_the_review_service_unimported(tmp_path):
    """Both answer within a second: the doctor finds the intake socket, and verify reads releases and
    signatures, without the review service's web app (JupyterHub, tornado, jsonschema) or its checks;
    verify reads a watermark (PIL, pypdf) only for a file whose hash no release has."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}, "ENCLAVE_HOME": str(tmp_path)}
    doctor = modules_after("from enclave.cli import main\ntry:\n    main(['doctor'])\nexcept SystemExit:\n    pass", env)
    assert "enclave.cli.doctor" in doctor and "enclave.exports.sockets" in doctor
    assert heavy_in(doctor) == [] and "enclave.exports.app" not in doctor
    assert not (tmp_path / "enclave.sqlite").exists()  # the doctor changes nothing: it made no database
    verify = modules_after("from enclave.exports.verify import verify_file", env)
    assert heavy_in(verify) == [] and not {"enclave.exports.service", "PIL", "pypdf"} & verify
