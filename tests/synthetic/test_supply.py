"""Minimum necessary: column views, what the sandbox's /data is built from, the supply manifest."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from enclave import supply, workspaces
from enclave.cli import main
from synthetic import pipeline


@pytest.fixture
def released(settings, enterprises_dir):
    return pipeline.release(settings, enterprises_dir / "enterprises.yaml", "masked", progress=False).release


def test_column_view_holds_exactly_the_granted_columns(settings, released):
    workspaces.create(settings, "tax")
    view = workspaces.attach(settings, "tax", released, "alice", columns=["industry", "filings.revenue", "year"],
                             reason="revenue by industry for the 2026 tax study")
    assert view.views[released] == {"enterprises": ["industry"], "filings": ["year", "revenue"]}
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
    assert (e["action"], e["release"], e["by"], e["reason"]) == (
        "attach", released, "alice", "revenue by industry for the 2026 tax study")
    assert e["columns"] == {"enterprises": ["industry"], "filings": ["year", "revenue"]}
    release_manifest = json.loads((settings.release_store / released / "manifest.json").read_text())
    assert e["release_content_hash"] == release_manifest["content_hash"]
    assert e["view_hash"] and e["at"]


def test_whole_release_is_mounted_from_data_and_recorded(settings, released):
    workspaces.create(settings, "all")
    view = workspaces.attach(settings, "all", released, "bob", reason="full access approved")
    assert workspaces.data_mounts(settings, view) == [(settings.release_store / released / "data", released)]
    assert supply.read_manifest(settings, "all")[0]["columns"] == "all"


def test_unknown_column_is_refused_and_nothing_is_attached(settings, released):
    workspaces.create(settings, "tax")
    with pytest.raises(workspaces.WorkspaceError, match="no column\\(s\\) 'salary', 'filings.industry'"):
        workspaces.attach(settings, "tax", released, "alice", columns=["industry", "salary", "filings.industry"])
    assert workspaces.get(settings, "tax").releases == ()
    assert not supply.view_dir(settings, "tax", released).exists()
    assert supply.read_manifest(settings, "tax") == []
    assert not [p for p in supply.views_root(settings).rglob("*") if p.name.endswith(".partial")]


def test_detach_removes_the_view_and_is_recorded(settings, released):
    workspaces.create(settings, "tax")
    workspaces.attach(settings, "tax", released, "alice", columns=["industry"], reason="study")
    view = workspaces.detach(settings, "tax", released, by="alice")
    assert view.releases == () and view.views == {}
    assert not supply.view_dir(settings, "tax", released).exists()
    assert [e["action"] for e in supply.read_manifest(settings, "tax")] == ["attach", "detach"]


def test_failed_manifest_write_attaches_nothing(settings, released, monkeypatch):
    workspaces.create(settings, "tax")

    def fail(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(supply, "record", fail)
    with pytest.raises(OSError, match="disk full"):
        workspaces.attach(settings, "tax", released, "alice", columns=["industry"], reason="study")
    assert workspaces.get(settings, "tax").releases == ()
    assert not supply.view_dir(settings, "tax", released).exists()


def test_cli_attach_with_columns(settings, released):
    runner = CliRunner()
    assert runner.invoke(main, ["workspace", "create", "tax"]).exit_code == 0
    result = runner.invoke(main, ["workspace", "attach", "tax", released, "--columns", "industry, year",
                                  "--reason", "industry study"])
    assert result.exit_code == 0, result.output
    assert f"attached columns industry, year of {released} to tax" in result.output
    (entry,) = supply.read_manifest(settings, "tax")
    assert entry["reason"] == "industry study" and entry["columns"] == {"enterprises": ["industry"],
                                                                       "filings": ["year"]}
    bad = runner.invoke(main, ["workspace", "attach", "tax", released, "--columns", " , "])
    assert bad.exit_code == 2 and "give at least one column" in bad.output
