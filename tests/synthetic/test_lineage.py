"""Raw sources, release lineage and the composition check (issue #14, finding 4).

A generated panel of workers (several rows per person, ids sorted, missing regions, a wage
outlier, Chinese values) is released in several masked cuts whose age bands differ.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from enclave.cli import main
from synthetic import gates, keys, lineage, masking, sources
from synthetic.contract import load_contract, load_tables

INF = float("inf")
TENS = [0, 10, 20, 30, 40, 50, 60, 70, INF]
OFFSET = [0, 15, 25, 35, 45, 55, 65, INF]  # the same width, shifted by five years
TWENTIES = [0, 20, 40, 60, INF]  # coarser, on edges of TENS


def _cli(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _write_workers(folder, people: int = 400, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    birth = rng.integers(1956, 2001, people)
    sex = rng.choice(["女", "男"], people)
    region = rng.choice(["北京", "上海", "广州", "成都"], people)
    rows = []
    for i in range(people):  # sorted by person id, one row per person and year
        for year in (2019, 2020, 2021):
            rows.append({"person_id": f"P{i + 1:05d}", "year": year, "age": year - birth[i], "sex": sex[i],
                         "region": None if rng.random() < 0.03 else region[i],
                         "wage": round(float(rng.lognormal(8.5, 0.5)), 2)})
    df = pd.DataFrame(rows)
    df.loc[5, "wage"] = 2_500_000.0  # an outlier
    df.to_csv(folder / "workers.csv", index=False)


def _write_cut(folder, file: str, bins: list, name: str = "workers", data: str = "workers.csv",
               entity: bool = True) -> object:
    contract = {
        "name": name, "description": "工人面板（生成数据）", "generated": True,
        "tables": {"workers": {"path": data, "entity_column": "person_id", "columns": {
            "person_id": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
            "year": {"role": "measure", "type": "integer",
                     "uniqueness_accepted": "调查年份：每人每年一行，分析需要"},
            "age": {"role": "quasi_identifier", "type": "integer", "treatment": "bands", "bins": bins},
            "sex": {"role": "quasi_identifier", "type": "string"},
            "region": {"role": "quasi_identifier", "type": "string"},
            "wage": {"role": "measure", "type": "float", "treatment": "bands",
                     "bins": [0, 3000, 5000, 8000, 12000, INF],
                     "uniqueness_accepted": "wage bands are what the analyses need"},
        }}},
        "privacy": {"k": 5, "l": 1, "max_suppressed": 0.35},
    }
    if not entity:
        del contract["tables"]["workers"]["entity_column"]
    path = folder / file
    path.write_text(yaml.safe_dump(contract, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def workers(tmp_path):
    folder = tmp_path / "workers"
    folder.mkdir()
    _write_workers(folder)
    return folder


def _masked_release(settings, contract_path, release):
    """What the pipeline hands the gates: masked, shuffled tables indexed by raw row."""
    contract = load_contract(contract_path)
    raw = load_tables(contract, contract_path.parent)
    key = keys.release_key(settings.secrets_dir, contract, release)
    masked = masking.mask_tables(contract, raw, key, suppress=True, progress=False).tables
    released = {t: keys.shuffle(df, settings.secrets_dir, release, t) for t, df in masked.items()}
    return contract, raw, released


def test_composition_gate_combines_offset_bands_with_an_earlier_cut(settings, workers):
    holder = settings.holder_dir
    tens, offset = _write_cut(workers, "tens.yaml", TENS), _write_cut(workers, "offset.yaml", OFFSET)
    contract, raw, released = _masked_release(settings, tens, "workers@1")
    (alone,) = gates.composition(released=released, contract=contract, raw=raw, holder_dir=holder,
                                 release="workers@1")
    assert alone.passed and "no earlier published masked release of 'workers'" in alone.detail
    manifest = {"method": "masked", "source": {"workers": {"sha256": "0" * 64}}, "created_at": "now",
                "created_by": "holder", "contract": contract.model_dump(mode="json"), "gates": [alone.as_dict()]}
    lineage.record_release(holder, "workers@1", contract, released, raw, manifest, contract_path=tens)

    # The lineage holds one row per released row, in release order, and no raw person id.
    rows = lineage.rows(holder, "workers@1", "workers")
    assert len(rows) == len(released["workers"]) and rows["row_entity"].is_unique
    assert rows["qi.age"].tolist() == released["workers"]["age"].tolist()
    blob = b"".join(p.read_bytes() for p in (holder / "lineage").rglob("*") if p.is_file())
    assert b"P00001" not in blob and b"P00400" not in blob

    contract2, raw2, released2 = _masked_release(settings, offset, "workers@2")
    assert all(r.passed for r in gates.k_anonymity(released=released2, contract=contract2, raw=raw2))  # k=5 alone
    (combined,) = gates.composition(released=released2, contract=contract2, raw=raw2, holder_dir=holder,
                                    release="workers@2")
    assert not combined.passed and combined.value < 5 and combined.table == "workers"
    assert "with workers@1" in combined.detail and "below k=5" in combined.detail
    assert "e.g. age [" in combined.detail  # which bands intersect

    # The same count by hand: rows joined on (person, occurrence), bands of both cuts intersected.
    def by_row(rel):
        df = rel["workers"].copy()
        df["row"] = df.index
        return df[["row", "person_id", "age", "sex", "region"]]

    joined = by_row(released).merge(by_row(released2), on="row", suffixes=("", "_2"))
    people = raw["workers"].loc[joined["row"], "person_id"].to_numpy()
    per_class = (joined.assign(person=people).fillna("-")
                 .groupby(["age", "age_2", "sex", "region"])["person"].nunique())
    assert combined.value == per_class.min()


def _check_and_record(settings, path, release, method="masked"):
    contract, raw, released = _masked_release(settings, path, release)
    results = gates.composition(released=released, contract=contract, raw=raw, holder_dir=settings.holder_dir,
                                release=release)
    manifest = {"method": method, "source": {"workers": {"sha256": "0" * 64}}, "contract": {},
                "gates": [r.as_dict() for r in results]}
    if method == "synthetic" or all(r.passed for r in results):  # (synthetic: not gated here)
        lineage.record_release(settings.holder_dir, release, contract, released, raw, manifest)
    return results


def test_cuts_are_checked_together_across_file_versions(settings, workers):
    for n, bins in enumerate((TENS, TWENTIES), start=1):
        assert all(r.passed for r in _check_and_record(settings, _write_cut(workers, f"cut{n}.yaml", bins),
                                                       f"workers@{n}"))
    # A synthetic release is listed but not row-linked: later checks leave it out.
    assert _check_and_record(settings, _write_cut(workers, "synth.yaml", OFFSET), "workers@3", "synthetic")
    assert [r["row_linked"] for r in sources.releases(settings.holder_dir, "workers")] == [True, True, False]

    # A new version of the file (a year added) still joins on person and occurrence.
    extra = pd.read_csv(workers / "workers.csv", dtype=str).query("year == '2021'").assign(year="2022")
    extra.to_csv(workers / "workers.csv", mode="a", header=False, index=False)
    results = _check_and_record(settings, _write_cut(workers, "cut4.yaml", TENS), "workers@4")
    assert [r.detail.split(":")[0] for r in results] == [
        "with workers@1", "with workers@2", "with all of workers@1, workers@2 together"]
    assert all(r.passed for r in results)
    assert all(int(r.detail.split(": ")[1].split()[0]) > 1000 for r in results)  # rows in common

    # Without a primary key or entity column, rows of another file version cannot be aligned: said so.
    (unlinked,) = _check_and_record(settings, _write_cut(workers, "plain.yaml", OFFSET, entity=False),
                                    "workers@5")[:1]
    assert unlinked.passed and "no row identity in common" in unlinked.detail


def test_registry_records_file_versions_and_refuses_one_file_under_two_names(settings, workers):
    holder = settings.holder_dir
    contract = _write_cut(workers, "workers.yaml", TENS)
    out = _cli("data", "source", "add", "workers", str(contract))
    assert out.exit_code == 0, out.output
    assert "registered source workers" in out.output and "1200 rows" in out.output
    again = _cli("data", "source", "add", "workers", str(contract))
    assert again.exit_code == 0 and "files are unchanged" in again.output

    # The name must be the contract's.
    wrong = _cli("data", "source", "add", "panel", str(contract))
    assert wrong.exit_code == 1 and "differs from the contract's name 'workers'" in wrong.output
    # A missing file is named.
    missing = _write_cut(workers, "missing.yaml", TENS, name="missing", data="nowhere.csv")
    out = _cli("data", "source", "add", "missing", str(missing))
    assert out.exit_code == 1 and "nowhere.csv not found" in out.output
    # The same raw file under another name would escape the composition check.
    other = _write_cut(workers, "other.yaml", OFFSET, name="other")
    for args in (("data", "source", "add", "other", str(other)),
                 ("data", "release", str(other), "--method", "masked")):
        out = _cli(*args)
        assert out.exit_code == 1, out.output
        assert "same content" in out.output and "source 'workers'" in out.output
    assert [s.name for s in sources.sources(holder)] == ["workers"]

    # A new content of the file stays the same source, as a new file version.
    with open(workers / "workers.csv", "a", encoding="utf-8") as f:
        f.write("P00401,2021,30,女,成都,6000.0\n")
    out = _cli("data", "source", "add", "workers", str(contract))
    assert "new file version(s) recorded: workers" in out.output
    shown = json.loads(_cli("data", "source", "show", "workers", "--json").output)
    assert [v["rows"] for v in shown["files"]["workers"]] == [1200, 1201]
    assert shown["contract"] == str(contract.resolve())
    assert sources.source(holder, "workers").current_files()["workers"].sha256 == \
        shown["files"]["workers"][1]["sha256"]
    listed = _cli("data", "source", "list").output
    assert "workers" in listed and "2 file version(s)" in listed
    assert "not registered" in _cli("data", "source", "show", "nobody").output


def test_registration_is_atomic(settings, workers, monkeypatch):
    holder = settings.holder_dir
    contract = _write_cut(workers, "workers.yaml", TENS)
    sources.register(holder, "workers", contract, by="holder")
    before = (holder / "sources" / "workers.json").read_bytes()
    (workers / "workers.csv").write_text("person_id,year,age,sex,region,wage\nP1,2020,30,女,北京,1.0\n",
                                         encoding="utf-8")

    def crash(*_):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        sources.register(holder, "workers", contract, by="holder")
    monkeypatch.undo()
    assert (holder / "sources" / "workers.json").read_bytes() == before
    assert sorted(p.name for p in (holder / "sources").iterdir()) == [".lock", "workers.json"]


def test_two_cuts_through_enclave_data_release(settings, workers):
    """Acceptance: the offset cut is refused naming the first; coarser and identical bands publish."""
    tens = _write_cut(workers, "tens.yaml", TENS)
    first = _cli("data", "release", str(tens), "--method", "masked")
    assert first.exit_code == 0, first.output
    assert "registered source workers" in first.output and "published workers@1" in first.output

    offset = _write_cut(workers, "offset.yaml", OFFSET)
    refused = _cli("data", "release", str(offset), "--method", "masked")
    assert refused.exit_code == 1
    assert "new cut of source workers" in refused.output
    assert "composition_k [workers]" in refused.output and "with workers@1" in refused.output
    assert "below k=5" in refused.output

    for file, bins in (("twenties.yaml", TWENTIES), ("tens.yaml", TENS)):
        out = _cli("data", "release", str(_write_cut(workers, file, bins)), "--method", "masked")
        assert out.exit_code == 0, out.output

    shown = _cli("data", "lineage", "workers")
    assert shown.exit_code == 0, shown.output
    published = [line.split()[0] for line in shown.output.splitlines() if line.startswith("  workers@")]
    assert len(published) == 3 and "workers@1" in published
    assert "file version 1:" in shown.output and "cut contract" in shown.output
    assert "together" in shown.output  # the last release was checked against both earlier ones
    records = json.loads(_cli("data", "lineage", "workers", "--json").output)["releases"]
    assert [r["contract"]["cut"] for r in records] == [False, True, False]
    assert all(r["row_linked"] and all(g["passed"] for g in r["composition"]) for r in records)


def test_a_release_without_lineage_blocks_the_next_until_the_holder_accepts_it(settings, workers):
    """A masked release whose lineage was lost (or made before lineage was kept) cannot be combined,
    so the next masked release of the source is refused until the holder records why it may stay
    uncombined; each step is in the audit log."""
    import shutil

    from enclave.audit.reader import AuditReader

    tens = _write_cut(workers, "tens.yaml", TENS)
    assert _cli("data", "release", str(tens), "--method", "masked").exit_code == 0
    shutil.rmtree(settings.holder_dir / "lineage" / "workers" / "1")
    assert "workers@1  published without a lineage record" in _cli("data", "lineage", "workers").output

    again = _cli("data", "release", str(tens), "--method", "masked")
    assert again.exit_code == 1
    assert "cannot combine with workers@1: published without a lineage record" in again.output
    assert _cli("data", "lineage", "workers", "--accept-unlinked", "workers@1").exit_code == 2  # no reason
    accepted = _cli("data", "lineage", "workers", "--accept-unlinked", "workers@1",
                    "--reason", "发布于血缘记录之前；已与数据持有方确认")
    assert accepted.exit_code == 0, accepted.output
    assert "not combined (published without lineage; accepted by" in _cli("data", "lineage", "workers").output
    assert _cli("data", "release", str(tens), "--method", "masked").exit_code == 0

    reader = AuditReader(settings)
    try:
        actions = [r["action"] for r in reader.query(action="data.*")["records"]]
        refused = reader.query(action="data.release_refused")["records"]
        unlinked = reader.query(action="data.release_unlinked")["records"]
    finally:
        reader.close()
    assert actions.count("data.release_published") == 2 and actions.count("data.source_registered") == 1
    (refusal,) = refused
    assert refusal["detail"]["release"] == "workers@2"
    # Verdicts only: a gate's detail may hold figures of the real data.
    assert all(set(g) == {"gate", "table", "value", "threshold", "passed"} for g in refusal["detail"]["gates"])
    assert unlinked[0]["detail"] == {"release": "workers@1", "reason": "发布于血缘记录之前；已与数据持有方确认"}
