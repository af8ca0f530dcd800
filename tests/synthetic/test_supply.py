"""Minimum necessary: column views, what the sandbox's /data is built from, the supply manifest."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from enclave import accounts, sources, supply, workspaces
from enclave.cli import main
from synthetic import pipeline


HOLDER = "hana"


@pytest.fixture
def released(settings, enterprises_dir):
    release = pipeline.release(settings, enterprises_dir / "enterprises.yaml", "masked", progress=False).release
    accounts.add_user(settings, HOLDER, ["holder"], "holder-password-1")
    sources.set_holder(settings, sources.source_of(release), HOLDER)
    return release


def _workspace(settings, name: str) -> None:
    workspaces.create(settings, name, purpose="2026 年税务研究：各行业营业收入", holder=HOLDER)


def test_column_view_holds_exactly_the_granted_columns(settings, released):
    _workspace(settings, "tax")
    asked = workspaces.attach(settings, "tax", released, "alice", columns=["industry", "filings.revenue", "year"],
                              reason="revenue by industry for the 2026 tax study")
    # Asked for, not yet given: nothing is built or mounted before the data holder consents.
    assert asked.releases == () and workspaces.data_mounts(settings, asked) == []
    assert asked.awaiting[released]["columns"] == {"enterprises": ["industry"], "filings": ["year", "revenue"]}
    assert not supply.view_dir(settings, "tax", released).exists() and supply.read_manifest(settings, "tax") == []

    view = workspaces.consent(settings, "tax", released, HOLDER)
    assert view.views[released] == {"enterprises": ["industry"], "filings": ["year", "revenue"]}
    assert view.awaiting == {}
    ((mount, name),) = workspaces.data_mounts(settings, view)
    assert name == released and mount == supply.view_dir(settings, "tax", released)
    assert sorted(p.name for p in mount.iterdir()) == [
        "README.txt", "enterprises.csv", "enterprises.parquet", "filings.csv", "filings.parquet"]
    assert pq.read_schema(mount / "enterprises.parquet").names == ["industry"]
    assert pq.read_schema(mount / "filings.parquet").names == ["year", "revenue"]
    assert list(pd.read_csv(mount / "filings.csv").columns) == ["year", "revenue"]
    full = pd.read_parquet(settings.release_store / released / "data" / "filings.parquet")
    assert pd.read_parquet(mount / "filings.parquet")["revenue"].tolist() == full["revenue"].tolist()
    # Nothing of the other columns is in the view, not even in its README.
    for p in mount.iterdir():
        assert b"uscc" not in p.read_bytes() and b"registered_capital" not in p.read_bytes()

    entries = supply.read_manifest(settings, "tax")
    assert len(entries) == 1
    e = entries[0]
    assert (e["action"], e["release"], e["by"], e["consented_by"], e["reason"]) == (
        "attach", released, "alice", HOLDER, "revenue by industry for the 2026 tax study")
    assert e["columns"] == {"enterprises": ["industry"], "filings": ["year", "revenue"]}
    release_manifest = json.loads((settings.release_store / released / "manifest.json").read_text())
    assert e["release_content_hash"] == release_manifest["content_hash"]
    assert e["view_hash"] and e["at"]


def test_whole_release_is_mounted_from_data_and_recorded(settings, released):
    _workspace(settings, "all")
    workspaces.attach(settings, "all", released, "bob", reason="full access approved")
    view = workspaces.consent(settings, "all", released, HOLDER)
    assert workspaces.data_mounts(settings, view) == [(settings.release_store / released / "data", released)]
    assert supply.read_manifest(settings, "all")[0]["columns"] == "all"


def test_only_the_holder_of_the_source_answers(settings, released):
    """An admin cannot consent for the holder, nor another holder; a refusal removes the request."""
    accounts.add_user(settings, "other", ["holder"], "holder-password-2")
    accounts.add_user(settings, "root", ["admin"], "admin-password-1")
    _workspace(settings, "tax")
    workspaces.attach(settings, "tax", released, "root", columns=["industry"], reason="study")
    for stranger in ("root", "other"):
        with pytest.raises(workspaces.WorkspaceError, match=f"'{stranger}' is not the data holder of 'tax'"):
            workspaces.consent(settings, "tax", released, stranger)
    assert workspaces.get(settings, "tax").releases == ()
    with pytest.raises(workspaces.WorkspaceError, match="say why"):
        workspaces.refuse(settings, "tax", released, HOLDER, "  ")
    view = workspaces.refuse(settings, "tax", released, HOLDER, "用途不需要行业明细")
    assert view.awaiting == {} and view.releases == ()
    with pytest.raises(workspaces.WorkspaceError, match="not awaiting consent"):
        workspaces.consent(settings, "tax", released, HOLDER)


def test_attach_needs_a_holder_and_a_purpose(settings, released, enterprises_dir):
    workspaces.create(settings, "bare")
    with pytest.raises(workspaces.WorkspaceError, match="'bare' has no data holder"):
        workspaces.attach(settings, "bare", released, "root")
    workspaces.set_holder(settings, "bare", HOLDER)
    with pytest.raises(workspaces.WorkspaceError, match="'bare' has no purpose"):
        workspaces.attach(settings, "bare", released, "root")
    accounts.add_user(settings, "other", ["holder"], "holder-password-2")
    workspaces.create(settings, "elsewhere", purpose="another use", holder="other")
    with pytest.raises(workspaces.WorkspaceError, match=f"held by '{HOLDER}', not by 'other'"):
        workspaces.attach(settings, "elsewhere", released, "root")


def test_unknown_column_is_refused_and_nothing_is_attached(settings, released):
    _workspace(settings, "tax")
    with pytest.raises(workspaces.WorkspaceError, match="no column\\(s\\) 'salary', 'filings.industry'"):
        workspaces.attach(settings, "tax", released, "alice", columns=["industry", "salary", "filings.industry"])
    view = workspaces.get(settings, "tax")
    assert view.releases == () and view.awaiting == {}
    assert not supply.view_dir(settings, "tax", released).exists()
    assert supply.read_manifest(settings, "tax") == []
    assert not [p for p in supply.views_root(settings).rglob("*") if p.name.endswith(".partial")]


def test_detach_removes_the_view_and_is_recorded(settings, released):
    _workspace(settings, "tax")
    workspaces.attach(settings, "tax", released, "alice", columns=["industry"], reason="study")
    workspaces.consent(settings, "tax", released, HOLDER)
    view = workspaces.detach(settings, "tax", released, by="alice")
    assert view.releases == () and view.views == {}
    assert not supply.view_dir(settings, "tax", released).exists()
    assert [e["action"] for e in supply.read_manifest(settings, "tax")] == ["attach", "detach"]


def test_failed_manifest_write_attaches_nothing(settings, released, monkeypatch):
    _workspace(settings, "tax")
    workspaces.attach(settings, "tax", released, "alice", columns=["industry"], reason="study")

    def fail(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(supply, "record", fail)
    with pytest.raises(OSError, match="disk full"):
        workspaces.consent(settings, "tax", released, HOLDER)
    view = workspaces.get(settings, "tax")
    assert view.releases == () and list(view.awaiting) == [released]
    assert not supply.view_dir(settings, "tax", released).exists()


def test_cli_attach_with_columns(settings, released):
    runner = CliRunner()
    assert runner.invoke(main, ["workspace", "create", "tax", "--purpose", "industry study",
                                "--holder", HOLDER]).exit_code == 0
    result = runner.invoke(main, ["workspace", "attach", "tax", released, "--columns", "industry, year",
                                  "--reason", "industry study"])
    assert result.exit_code == 0, result.output
    asked = workspaces.get(settings, "tax").awaiting[released]
    assert asked["reason"] == "industry study" and asked["columns"] == {"enterprises": ["industry"],
                                                                       "filings": ["year"]}
    bad = runner.invoke(main, ["workspace", "attach", "tax", released, "--columns", " , "])
    assert bad.exit_code == 2 and "give at least one column" in bad.output
