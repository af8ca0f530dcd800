"""The sealed view of a synthetic release (``synthetic.sealed``): the real rows behind it, in its
shape, on the data holder's side only.

One yearly panel of workers (several rows per person, ids sorted, missing wages, an outlier,
Chinese column names and values) is released synthetic and masked under one shared pseudonym key,
once for the module; each test reads it, and a test that changes a file puts it back.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from enclave_testing import grant

from enclave import accounts, supply, workspaces
from enclave.cli import main
from enclave.settings import Settings
from synthetic import masking, pipeline, sealed

TABLE = "工资面板"
BINS = [1950, 1970, 1990, 2010]
PANEL = {
    "name": "wages", "generated": True, "pseudonym_key": "panel",
    "tables": {TABLE: {"path": "工资面板.csv", "entity_column": "人员编号", "sequence_index": "年份", "columns": {
        "人员编号": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
        "姓名": {"role": "direct_identifier", "type": "string", "treatment": "drop"},
        "手机": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
        "年份": {"role": "measure", "type": "integer", "uniqueness_accepted": "每人每年一行，年份为分析所需"},
        "性别": {"role": "quasi_identifier", "type": "string"},
        "出生年份": {"role": "quasi_identifier", "type": "integer", "treatment": "bands", "bins": BINS},
        "地区": {"role": "quasi_identifier", "type": "string"},
        "工资": {"role": "sensitive", "type": "float"},
        "备注": {"role": "free_text", "type": "string", "treatment": "redact"},
    }}},
    "privacy": {"k": 2, "l": 2, "max_suppressed": 0.5},
    # Five epochs over 30 training people: these tests are about the sealed view, not utility.
    "synthesis": {"epochs": 5, "time_budget_s": 300},
    "gates": {"quality": 0.5, "new_row_synthesis": 0.5, "max_copy_excess": 0.1},
}
DIRECT = ("人员编号", "姓名", "手机")


def _panel(people: int = 60, seed: int = 3) -> pd.DataFrame:
    """2-5 yearly rows per person, sorted by person id; about 10 % of wages missing; one outlier."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(people):
        sex, region = rng.choice(["女", "男"]), rng.choice(["北京", "上海", "广州"])
        born, name = int(rng.integers(1960, 2000)), str(rng.choice(["王芳", "李伟", "张秀英", "刘洋", "陈静"])) + f"{i}"
        mobile = f"139{i:08d}"
        base, start = rng.lognormal(8.5, 0.4), int(rng.integers(2015, 2019))
        for year in range(start, start + int(rng.integers(2, 6))):
            wage = None if rng.random() < 0.1 else round(base * 1.03 ** (year - start) * rng.lognormal(0, 0.05), 1)
            rows.append({"人员编号": f"P{i:05d}", "姓名": name, "手机": mobile, "年份": year, "性别": sex,
                         "出生年份": born, "地区": region, "工资": wage, "备注": f"{name}，电话{mobile}，已核实"})
    df = pd.DataFrame(rows)
    df.loc[3, "工资"] = 900_000.0
    return df


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    """(settings, raw folder, synthetic release, masked release), the sealed view built."""
    settings = Settings(home=tmp_path_factory.mktemp("sealed-home"))
    raw = tmp_path_factory.mktemp("sealed-raw")
    _panel().to_csv(raw / "工资面板.csv", index=False)
    contract = raw / "wages.yaml"
    contract.write_text(yaml.safe_dump(PANEL, allow_unicode=True), encoding="utf-8")
    synthetic = pipeline.release(settings, contract, "synthetic", by="tester", progress=False).release
    masked = pipeline.release(settings, contract, "masked", by="tester", progress=False).release
    sealed.build(settings, synthetic, by="tester")
    return settings, raw, synthetic, masked


@pytest.fixture
def cli_home(panel, monkeypatch):
    """The ``enclave`` command on the module's home, in English unless a test says otherwise."""
    settings = panel[0]
    monkeypatch.setenv("ENCLAVE_HOME", str(settings.home))
    monkeypatch.setenv("ENCLAVE_CONFIG", str(settings.home / "enclave.toml"))
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(name, raising=False)
    return settings


def _cli(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def _view(settings, release) -> pd.DataFrame:
    return pd.read_parquet(sealed.sealed_dir(settings.holder_dir, release) / "data" / f"{TABLE}.parquet")


def _rows(df: pd.DataFrame) -> list[tuple]:
    """Rows as a sorted multiset, missing values as None."""
    rows = [tuple(None if pd.isna(v) else v for v in row) for row in df.itertuples(index=False)]
    return sorted(rows, key=lambda row: [(v is None, str(v)) for v in row])


def test_the_sealed_view_has_the_releases_schema_and_the_raw_rows(panel):
    settings, raw_dir, release, _ = panel
    folder = sealed.sealed_dir(settings.holder_dir, release)
    data = folder / "data"
    released = settings.release_store / release / "data"
    assert sorted(p.name for p in data.iterdir()) == sorted(p.name for p in released.iterdir()) == [
        "README.txt", f"{TABLE}.csv", f"{TABLE}.parquet"]
    # Same tables, column names, order and types: the release's Parquet schema, metadata included.
    schema = pq.read_schema(data / f"{TABLE}.parquet")
    assert schema.equals(pq.read_schema(released / f"{TABLE}.parquet"), check_metadata=True)
    assert list(pd.read_csv(data / f"{TABLE}.csv").columns) == schema.names

    # The raw rows, every one of them, with the release's treatment: the shared key's pseudonyms,
    # birth years in the release's bands, direct identifiers and free text gone.
    raw = pd.read_csv(raw_dir / "工资面板.csv", dtype={"人员编号": str, "手机": str})
    key = masking.load_or_create_key(settings.secrets_dir, "panel")
    expected = pd.DataFrame({"人员编号": masking.pseudonymise(raw["人员编号"], key), "年份": raw["年份"],
                             "性别": raw["性别"], "出生年份": masking.bands(raw["出生年份"], BINS),
                             "地区": raw["地区"], "工资": raw["工资"]})
    view = _view(settings, release)
    assert sorted(view.columns) == sorted(expected.columns)
    assert _rows(view[expected.columns]) == _rows(expected)
    assert view["工资"].isna().sum() == raw["工资"].isna().sum() > 0 and view["工资"].max() == 900_000.0
    # Shuffled as releases are: people do not come in the raw file's (sorted) order.
    assert list(pd.unique(view["人员编号"])) != list(pd.unique(expected["人员编号"]))

    manifest = sealed.read_manifest(settings.holder_dir, release)
    assert manifest["release_content_hash"] == pipeline.store.manifest(settings.release_store, release)["content_hash"]
    assert manifest["source"] == "wages" and manifest["created_by"] == "tester"
    assert manifest["source_files"][TABLE]["sha256"] == pipeline.store.sha256_file(raw_dir / "工资面板.csv")
    assert manifest["tables"][TABLE] == {"rows": len(raw), "columns": schema.names}
    assert sealed.check(settings, release) == []


def test_no_direct_identifier_of_the_raw_table_is_in_the_sealed_view(panel):
    settings, raw_dir, release, _ = panel
    raw = pd.read_csv(raw_dir / "工资面板.csv", dtype=str)
    identifiers = {v for c in DIRECT for v in raw[c].unique()}
    view = _view(settings, release).astype(str)
    cells = set(view.to_numpy().ravel())
    assert not cells & identifiers
    assert not any(i in cell for cell in cells for i in identifiers)
    for path in (sealed.sealed_dir(settings.holder_dir, release) / "data").iterdir():
        blob = path.read_bytes()
        assert not [i for i in identifiers if i.encode() in blob], path.name
        assert "备注".encode() not in blob and "电话".encode() not in blob  # free text is not carried


def test_pseudonyms_are_those_of_a_masked_release_under_the_same_key(panel):
    settings, raw_dir, release, masked = panel
    raw = pd.read_csv(raw_dir / "工资面板.csv", dtype=str)
    masked_rows = pd.read_parquet(settings.release_store / masked / "data" / f"{TABLE}.parquet")
    view = _view(settings, release)
    # The same person carries the same pseudonym in the masked release and in the sealed view.
    assert set(masked_rows["人员编号"]) <= set(view["人员编号"])
    person = masking.pseudonymise(raw["人员编号"], masking.load_or_create_key(settings.secrets_dir, "panel"))
    for pseudonym, years in view.groupby("人员编号")["年份"]:
        assert sorted(years) == sorted(raw.loc[person == pseudonym, "年份"].astype(int))
    # The synthetic release carries pseudonyms of no one: its people are generated afresh.
    synthetic = pd.read_parquet(settings.release_store / release / "data" / f"{TABLE}.parquet")
    assert not set(synthetic["人员编号"]) & set(view["人员编号"])


def test_the_sealed_view_is_roots_alone_and_outside_the_release_store(panel):
    settings, _, release, _ = panel
    folder = sealed.sealed_dir(settings.holder_dir, release)
    assert folder.is_relative_to(settings.holder_dir) and not folder.is_relative_to(settings.release_store)
    assert not list(settings.release_store.rglob("*sealed*"))
    for path in [folder, *folder.rglob("*")]:
        st = path.lstat()
        assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == (0o700 if path.is_dir() else 0o600), path


def test_each_refusal_has_its_code(panel):
    settings, raw_dir, release, masked = panel

    def refused(name: str) -> sealed.SealedViewError:
        with pytest.raises(sealed.SealedViewError) as caught:
            sealed.build(settings, name, by="tester")
        return caught.value

    assert refused(masked).code == "sealed.not_synthetic"
    assert refused("wages@99").code == "sealed.release_unknown"
    assert refused("../wages@1").code == "sealed.bad_release"

    registered = settings.holder_dir / "sources" / "wages.json"
    aside = registered.with_suffix(".aside")
    registered.rename(aside)
    try:
        error = refused(release)
        assert error.code == "sealed.source_not_registered"
        assert "enclave data source add wages CONTRACT.yaml" in str(error)
    finally:
        aside.rename(registered)

    key = masking.key_path(settings.secrets_dir, "panel")
    key.rename(key.with_suffix(".aside"))
    try:
        assert refused(release).code == "sealed.key_missing"
        assert not key.exists()  # not made anew: its pseudonyms would not be the release's
    finally:
        key.with_suffix(".aside").rename(key)
    assert not (settings.holder_dir / "sealed" / masked).exists()


def test_a_raw_file_changed_after_the_release_is_refused_naming_both_hashes(panel):
    settings, raw_dir, release, _ = panel
    path = raw_dir / "工资面板.csv"
    before = path.read_bytes()
    then = pipeline.store.sha256_file(path)
    view_hash = sealed.read_manifest(settings.holder_dir, release)["content_hash"]
    path.write_bytes(before.replace("北京".encode(), "天津".encode(), 1))
    now = pipeline.store.sha256_file(path)
    try:
        with pytest.raises(sealed.SealedViewError) as caught:
            sealed.build(settings, release, by="tester")
    finally:
        path.write_bytes(before)
    assert caught.value.code == "sealed.file_changed"
    assert now in str(caught.value) and then in str(caught.value) and now != then
    # The view made before stays as it was.
    assert sealed.read_manifest(settings.holder_dir, release)["content_hash"] == view_hash


def test_a_workspaces_sealed_view_has_only_the_granted_columns_at_its_views_paths(panel):
    settings, _, release, _ = panel
    accounts.add_user(settings, "wang", ["operator"], "sealed-view-password-1")
    workspaces.create(settings, "study")
    workspaces.add_member(settings, "study", "wang", "operator")
    with pytest.raises(sealed.SealedViewError) as caught:
        sealed.for_workspace(settings, "study", release)
    assert caught.value.code == "sealed.not_attached"

    grant(settings, "study", release, columns=["工资", "性别"], reason="工资按性别比较")
    granted = [c for c in pq.read_schema(settings.release_store / release / "data" / f"{TABLE}.parquet").names
               if c in ("工资", "性别")]  # in the release's order
    given = sealed.for_workspace(settings, "study", release)
    view = supply.view_dir(settings, "study", release)  # what its sandboxes see at /data/<release>
    assert sorted(p.name for p in given.path.iterdir()) == sorted(p.name for p in view.iterdir())
    schema = pq.read_schema(given.path / f"{TABLE}.parquet")
    assert schema.names == granted and schema.equals(pq.read_schema(view / f"{TABLE}.parquet"),
                                                               check_metadata=True)
    assert list(pd.read_csv(given.path / f"{TABLE}.csv").columns) == granted
    assert given.columns == {TABLE: granted}
    others = [c.encode() for c in ("人员编号", "年份", "出生年份", "地区")]
    assert not [c for p in given.path.iterdir() for c in others if c in p.read_bytes()]
    assert not given.path.is_relative_to(settings.release_store)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in given.path.iterdir())
    # The same rows as the sealed view's, in those columns.
    assert _rows(pd.read_parquet(given.path / f"{TABLE}.parquet")) == _rows(_view(settings, release)[granted])
    assert sealed.for_workspace(settings, "study", release).content_hash == given.content_hash

    # A workspace given the whole release sees every file as the release's data/ folder has it.
    workspaces.create(settings, "whole")
    grant(settings, "whole", release)
    whole = sealed.for_workspace(settings, "whole", release)
    full = sealed.sealed_dir(settings.holder_dir, release) / "data"
    assert {p.name: p.read_bytes() for p in whole.path.iterdir()} == {p.name: p.read_bytes() for p in full.iterdir()}


def test_cli_builds_and_checks_the_view_and_a_tampered_view_fails_its_check(panel, cli_home):
    settings, _, release, masked = panel
    out = _cli("data", "sealed-view", release)
    assert out.exit_code == 0, out.output
    view_hash = sealed.read_manifest(settings.holder_dir, release)["content_hash"]
    assert f"sealed view of {release} built in {settings.holder_dir / 'sealed' / release / 'data'}" in out.output
    assert view_hash in out.output and f"{TABLE}: " in out.output
    out = _cli("data", "sealed-view", release, "--check")
    assert out.exit_code == 0 and f"sealed view of {release}: intact (content hash {view_hash})" in out.output

    parquet = sealed.sealed_dir(settings.holder_dir, release) / "data" / f"{TABLE}.parquet"
    parquet.write_bytes(parquet.read_bytes()[:-9] + b"tampered!")
    os.chmod(parquet.parent, 0o755)
    try:
        out = _cli("data", "sealed-view", release, "--check")
        assert out.exit_code == 1
        assert f"data/{TABLE}.parquet: content differs from the manifest (sha256) [sealed.check.differs]" in out.output
        assert "can be read by others than root" in out.output and "[sealed.check.readable]" in out.output
    finally:
        sealed.build(settings, release, by="tester")

    # Refusals in the holder's language, with their codes.
    out = _cli("data", "sealed-view", masked, env={"LANG": "zh_CN.UTF-8"})
    assert out.exit_code == 1 and "[sealed.not_synthetic]" in out.output
    assert f"{masked} 不是合成发布版本" in out.output, out.output
    out = _cli("data", "sealed-view", "wages@99", "--check", env={"LANG": "zh_CN.UTF-8"})
    assert out.exit_code == 1 and "[sealed.not_built]" in out.output and "密封视图" in out.output
