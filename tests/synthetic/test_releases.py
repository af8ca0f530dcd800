"""End to end: releases from the generated datasets, through the CLI and the pipeline."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from enclave.cli import main
from synthetic import demo, keys, masking, pipeline, store, synthesis


def parsed_contract(folder):
    return pipeline.load_contract(folder / "residents.yaml")


def _cli(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_masked_release_of_the_demo_dataset_through_the_cli(settings, residents_dir):
    out = _cli("data", "release", str(residents_dir / "residents.yaml"), "--method", "masked")
    assert out.exit_code == 0, out.output
    assert "published residents@1 (masked)" in out.output
    root = settings.release_store / "residents@1"

    # Only data/ is for sandboxes; manifest and report (real distributions) sit beside it.
    assert sorted(p.name for p in root.iterdir()) == ["data", "manifest.json", "report.html"]
    assert sorted(p.name for p in (root / "data").iterdir()) == ["README.txt", "residents.csv", "residents.parquet"]
    assert "GENERATED DATA" in (root / "data" / "README.txt").read_text(encoding="utf-8")
    assert pq.read_schema(root / "data" / "residents.parquet").metadata[b"enclave.generated"] == b"true"

    m = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    assert m["method"] == "masked" and m["generated"] is True
    assert m["source"]["residents"]["sha256"] == store.sha256_file(residents_dir / "residents.generated.csv")
    assert m["contract"]["name"] == "residents"
    assert m["libraries"]["pandas"] and m["created_by"] and m["created_at"]
    assert m["parameters"] == {"k": 5, "l": 2, "max_suppressed": 0.15}
    assert all(g["passed"] for g in m["gates"])
    assert {g["gate"] for g in m["gates"]} >= {"k_anonymity", "l_diversity", "no_identifier_patterns",
                                               "no_key_material", "no_direct_identifiers"}
    report = (root / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in report and "k_anonymity" in report and "generated" in report

    released = pd.read_parquet(root / "data" / "residents.parquet")
    raw = pd.read_csv(residents_dir / "residents.generated.csv", dtype=str)
    assert "name" not in released and "address" not in released and "bank_card" not in released
    assert {"resident_id_birth_year_band", "resident_id_sex", "resident_id_region"} <= set(released.columns)
    # Raw data is not in the store: no raw identifier or raw file appears in any file of the release.
    blob = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
    for value in list(raw["resident_id"].head(50)) + list(raw["mobile"].head(50)) + list(raw["name"].head(20)):
        assert value.encode() not in blob
    assert not list(settings.release_store.rglob("*.generated.csv"))
    # The keys stay in the holder's secrets folder.
    for key in (keys.release_key(settings.secrets_dir, parsed_contract(residents_dir), "residents@1"),
                keys.holder_secret(settings.secrets_dir)):
        assert key.hex().encode() not in blob

    # Published, and so recorded in the audit log with its gates (the CLI started an audit service
    # for the while: no hub runs here).
    from enclave.audit.reader import AuditReader

    reader = AuditReader(settings)
    (published,) = reader.query(action="data.release_published")["records"]
    reader.close()
    assert published["source"] == "cli" and published["detail"]["release"] == "residents@1"
    assert published["detail"]["content_hash"] == m["content_hash"]
    assert [g["gate"] for g in published["detail"]["gates"]] == [g["gate"] for g in m["gates"]]

    listed = _cli("data", "list")
    assert "residents@1  masked" in listed.output and "GENERATED" in listed.output
    shown = _cli("data", "show", "residents@1")
    assert "pass  k_anonymity [residents]" in shown.output and "sha256" in shown.output
    assert _cli("data", "verify", "residents@1").exit_code == 0

    # Releases are immutable: a second run is a new version, the first is untouched.
    assert "residents@2" in _cli("data", "release", str(residents_dir / "residents.yaml"),
                                 "--method", "masked").output
    assert store.verify(settings.release_store, "residents@1") == []


def test_verify_detects_tampering(settings, residents_dir):
    name = pipeline.release(settings, residents_dir / "residents.yaml", "masked", progress=False).release
    csv = settings.release_store / name / "data" / "residents.csv"
    os.chmod(csv, 0o644)
    csv.write_text(csv.read_text(encoding="utf-8").replace("F", "M", 1), encoding="utf-8")
    (settings.release_store / name / "data" / "extra.csv").parent.chmod(0o755)
    (settings.release_store / name / "data" / "extra.csv").write_text("x\n1\n")
    result = _cli("data", "verify", name)
    assert result.exit_code == 1
    assert "data/residents.csv: content differs" in result.output
    assert "data/extra.csv: not listed" in result.output


def test_show_and_verify_unknown_release(settings):
    for cmd in ("show", "verify"):
        result = _cli("data", cmd, "nothing@1")
        assert result.exit_code == 1 and "not in the release store" in result.output
    assert "not a release name" in _cli("data", "show", "../etc@1").output


def test_pseudonyms_join_across_tables_of_a_release_and_across_releases_only_by_a_named_key(
        settings, enterprises_dir, tmp_path):
    first = pipeline.release(settings, enterprises_dir / "enterprises.yaml", "masked", progress=False)
    second = pipeline.release(settings, enterprises_dir / "enterprises.yaml", "masked", progress=False)
    data = settings.release_store / first.release / "data"
    ent, fil = pd.read_parquet(data / "enterprises.parquet"), pd.read_parquet(data / "filings.parquet")
    assert fil["uscc"].isin(ent["uscc"]).all()  # filings still join to their enterprise
    raw = pd.read_parquet(enterprises_dir / "enterprises.generated.parquet")
    key = keys.release_key(settings.secrets_dir, pipeline.load_contract(enterprises_dir / "enterprises.yaml"),
                           first.release)
    assert set(masking.pseudonymise(raw["uscc"], key)) >= set(ent["uscc"])
    # Each release has a key of its own: the two releases share no pseudonym.
    again = pd.read_parquet(settings.release_store / second.release / "data" / "enterprises.parquet")
    assert not set(again["uscc"]) & set(ent["uscc"])
    assert first.manifest["tables"]["filings"]["rows"] == len(fil)
    assert set(ent.columns) == {"uscc", "industry", "region_code", "registered_capital", "founded"}
    assert ent["region_code"].str.len().eq(2).all()

    # A holder who wants releases to join names a key; its releases then share pseudonyms.
    folder = tmp_path / "linked"
    shutil.copytree(enterprises_dir, folder)
    c = yaml.safe_load((folder / "enterprises.yaml").read_text(encoding="utf-8")) | {"pseudonym_key": "tax"}
    (folder / "enterprises.yaml").write_text(yaml.safe_dump(c, allow_unicode=True), encoding="utf-8")
    third, fourth = (pipeline.release(settings, folder / "enterprises.yaml", "masked", progress=False)
                     for _ in range(2))
    ent3, ent4 = (pd.read_parquet(settings.release_store / r.release / "data" / "enterprises.parquet")
                  for r in (third, fourth))
    assert set(ent3["uscc"]) == set(ent4["uscc"])
    assert set(masking.pseudonymise(raw["uscc"], masking.load_or_create_key(settings.secrets_dir, "tax"))) >= set(ent3["uscc"])


def test_synthetic_release_gaussian_copula_passes_every_gate(settings, residents_dir):
    result = pipeline.release(settings, residents_dir / "residents.yaml", "synthetic", progress=False)
    m = result.manifest
    gates = {(g["gate"], g["table"]): g for g in m["gates"]}
    assert all(g["passed"] for g in m["gates"])
    assert gates[("diagnostic", None)]["value"] == 1.0
    assert gates[("quality", None)]["value"] >= 0.8
    assert gates[("new_row_synthesis", "residents")]["value"] >= 0.99
    assert gates[("exact_copies", "residents")]["value"] == 0
    assert gates[("dcr_overfitting_protection", "residents")]["value"] >= 0.9
    assert {"attack_risk:singling_out", "attack_risk:linkability", "attack_risk:inference:diagnosis"} <= {
        g["gate"] for g in m["gates"]}
    p = m["parameters"]
    assert p["model"] == "gaussian_copula"
    assert p["training_rows"]["residents"] == p["holdout_rows"]["residents"] == 500  # equal-size holdout
    # Masking already dropped name, address, bank card and e-mail; the pseudonymised mobile and the
    # redacted notes are not given to the generator either.
    assert set(p["dropped_before_synthesis"]["residents"]) == {"mobile", "notes"}
    syn = pd.read_parquet(settings.release_store / result.release / "data" / "residents.parquet")
    assert len(syn) == 1000 and "notes" not in syn and "mobile" not in syn
    raw_ids = set(pd.read_csv(residents_dir / "residents.generated.csv", dtype=str)["resident_id"])
    assert not set(syn["resident_id"]) & raw_ids


def test_multi_table_synthesis_with_hma(settings, tmp_path):
    """HMA over two tables; thresholds are per contract, and the manifest keeps what they were."""
    folder = tmp_path / "raw"
    demo.write_enterprises(folder, n=120)
    c = yaml.safe_load((folder / "enterprises.yaml").read_text(encoding="utf-8"))
    # With 60 training enterprises, distance-based scores are too noisy for the default 0.9.
    c["gates"] = {"dcr_overfitting_protection": 0.5, "max_attack_risk": 0.2}
    c["synthesis"] = {"constraints": [{"table": "filings", "inequality": ["tax_paid", "revenue"]}]}
    (folder / "enterprises.yaml").write_text(yaml.safe_dump(c, allow_unicode=True), encoding="utf-8")
    result = pipeline.release(settings, folder / "enterprises.yaml", "synthetic", progress=False)
    m = result.manifest
    assert m["parameters"]["model"] == "hma"
    assert {g["table"] for g in m["gates"] if g["gate"] == "dcr_overfitting_protection"} == {"enterprises", "filings"}
    assert next(g for g in m["gates"] if g["gate"] == "dcr_overfitting_protection")["threshold"] == ">= 0.5"
    data = settings.release_store / result.release / "data"
    ent, fil = pd.read_parquet(data / "enterprises.parquet"), pd.read_parquet(data / "filings.parquet")
    assert fil["uscc"].isin(ent["uscc"]).all() and len(ent) == 120
    assert (fil["tax_paid"] <= fil["revenue"]).all()  # the contract's constraint holds
    assert m["parameters"]["constraints"] == [
        {"table": "filings", "inequality": ["tax_paid", "revenue"], "fixed_combinations": None}]


def test_ctgan_runs_within_its_budget_and_is_stopped_beyond_it(settings, residents_dir, store_listing):
    contract = pipeline.load_contract(residents_dir / "residents.yaml")
    fast = contract.model_copy(update={"synthesis": contract.synthesis.model_copy(
        update={"model": "ctgan", "epochs": 2, "time_budget_s": 300})})
    # The gates decide on quality; two epochs are about the run and the budget, not about utility.
    fast = fast.model_copy(update={"gates": fast.gates.model_copy(update={"quality": 0.0, "diagnostic": 0.0})})
    try:
        result = pipeline.release(settings, residents_dir / "residents.yaml", "synthetic", progress=False,
                                  contract=fast)
        assert result.manifest["parameters"]["model"] == "ctgan"
    except pipeline.gates.GateFailure as exc:  # a two-epoch model may still be refused on privacy
        assert exc.results and store_listing() == []
    slow = contract.model_copy(update={"synthesis": contract.synthesis.model_copy(
        update={"model": "tvae", "epochs": 5000, "time_budget_s": 3})})
    before = store_listing()
    with pytest.raises(synthesis.SynthesisError, match="did not finish within its time budget of 3 s"):
        pipeline.release(settings, residents_dir / "residents.yaml", "synthetic", progress=False, contract=slow)
    assert store_listing() == before


def test_failed_publication_leaves_no_partial_folder(settings, residents_dir, monkeypatch, store_listing):
    def broken_report(*_args, **_kwargs):
        raise RuntimeError("disk full while writing the report")

    monkeypatch.setattr(pipeline.report, "render", broken_report)
    with pytest.raises(RuntimeError, match="disk full"):
        pipeline.release(settings, residents_dir / "residents.yaml", "masked", progress=False)
    assert store_listing() == []


def test_publish_demo_release_is_quick_masked_and_reused(settings):
    name = demo.publish_demo_release(settings)
    assert name == "residents@1"
    assert json.loads((settings.release_store / name / "manifest.json").read_text())["generated"] is True
    assert demo.publish_demo_release(settings) == name
    shutil.rmtree(settings.home / "secrets")
