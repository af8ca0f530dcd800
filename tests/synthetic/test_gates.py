"""The gates refuse leaking releases, and a refused release leaves nothing in the store."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

from synthetic import gates, keys, masking, pipeline, synthesis
from synthetic.contract import Contract, load_contract, load_tables


def _copy(tmp_path, residents_dir, edit=None, edit_csv=None):
    folder = tmp_path / "raw"
    shutil.copytree(residents_dir, folder)
    path = folder / "residents.yaml"
    if edit:
        c = yaml.safe_load(path.read_text(encoding="utf-8"))
        edit(c)
        path.write_text(yaml.safe_dump(c, allow_unicode=True), encoding="utf-8")
    if edit_csv:
        df = pd.read_csv(folder / "residents.generated.csv", dtype=str)
        edit_csv(df)
        df.to_csv(folder / "residents.generated.csv", index=False)
    return path


def _refused_by(settings, store_listing, path, method, gate_name):
    with pytest.raises(gates.GateFailure) as err:
        pipeline.release(settings, path, method, progress=False)
    failed = {r.gate for r in err.value.results if not r.passed}
    assert gate_name in failed, failed
    assert gate_name in str(err.value)
    assert store_listing() == []
    return err.value


def test_masked_table_with_a_k1_group_is_refused(residents_dir, tmp_path):
    contract = load_contract(residents_dir / "residents.yaml")
    raw = load_tables(contract, residents_dir)
    released = masking.mask_tables(contract, raw, b"k" * 32, suppress=False, progress=False).tables
    # Without suppression, the generated data has classes smaller than k.
    results = gates.run(gates.MASKED_GATES, progress=False, released=released, contract=contract, raw=raw,
                        key=b"k" * 32, method="masked", release="residents@1", holder_dir=tmp_path / "holder")
    k = next(r for r in results if r.gate == "k_anonymity")
    assert not k.passed and k.value < 5
    with pytest.raises(gates.GateFailure, match="k_anonymity"):
        gates.enforce(results)


def test_masked_release_needing_too_much_suppression_is_refused(settings, store_listing, tmp_path, residents_dir):
    def strict(c):
        c["privacy"] = {"k": 50, "l": 2, "max_suppressed": 0.05}

    _refused_by(settings, store_listing, _copy(tmp_path, residents_dir, strict), "masked", "suppressed_share")


def test_resident_id_left_in_free_text_is_refused(settings, store_listing, tmp_path, residents_dir):
    # Free text mistakenly declared a plain sensitive column: nothing redacts it, the gate catches it.
    def misclassify(c):
        c["tables"]["residents"]["columns"]["notes"] = {"role": "sensitive", "type": "string"}

    err = _refused_by(settings, store_listing, _copy(tmp_path, residents_dir, misclassify), "masked",
                      "no_identifier_patterns")
    detail = next(r.detail for r in err.results if r.gate == "no_identifier_patterns")
    assert "notes:resident_id" in detail


def test_pseudonym_key_reused_as_a_column_value_is_refused(settings, store_listing, tmp_path, residents_dir):
    # The key of the release about to be built (the first of this source: residents@1).
    key = keys.release_key(settings.secrets_dir, load_contract(residents_dir / "residents.yaml"), "residents@1")

    def leak_key(df):
        df.loc[df.index % 3 == 0, "education"] = f"batch-{key.hex()}"

    err = _refused_by(settings, store_listing, _copy(tmp_path, residents_dir, edit_csv=leak_key), "masked",
                      "no_key_material")
    assert "education" in next(r.detail for r in err.results if r.gate == "no_key_material")


def test_raw_identifier_copied_into_another_column_is_refused(settings, store_listing, tmp_path, residents_dir):
    # Names match no pattern; the gate knows them as the raw values of a direct identifier.
    def copy_names(df):
        df.loc[df.index % 7 == 0, "education"] = df["name"]

    err = _refused_by(settings, store_listing, _copy(tmp_path, residents_dir, edit_csv=copy_names), "masked",
                      "no_direct_identifiers")
    assert "column 'education' holds" in next(r.detail for r in err.results if r.gate == "no_direct_identifiers")


class _CopyingSynthesiser:
    """A generator that leaks: it 'samples' by handing back its training rows."""

    name = "copying"

    def __init__(self, contract, metadata):
        self.contract = contract

    def fit(self, tables):
        self.tables = tables

    def sample(self, rows):
        return {t: df.sample(n=rows[t], replace=True, random_state=0) for t, df in self.tables.items()}


def test_synthetic_data_containing_copied_real_rows_is_refused(settings, store_listing, tmp_path, residents_dir,
                                                               monkeypatch):
    monkeypatch.setattr(synthesis, "SDVSynthesiser", _CopyingSynthesiser)
    err = _refused_by(settings, store_listing, residents_dir / "residents.yaml", "synthetic", "exact_copies")
    failed = {r.gate: r.value for r in err.results if not r.passed}
    assert failed["new_row_synthesis"] == 0.0
    assert failed["dcr_overfitting_protection"] < 0.9


def test_new_row_share_agrees_with_sdmetrics():
    from sdmetrics.single_table import NewRowSynthesis

    rng = np.random.default_rng(3)
    n = 400
    real = pd.DataFrame({
        "cat": rng.choice(["a", "b", None], size=n),
        "num": np.where(rng.random(n) < 0.1, np.nan, rng.normal(100, 30, size=n).round(1)),
        "day": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 50, size=n), unit="D"),
    })
    near = real.sample(n=60, random_state=1).copy()
    near["num"] = near["num"] * 1.005  # within the 1% tolerance: still copies
    far = real.sample(n=60, random_state=2).copy()
    far["num"] = far["num"] * 1.5 + 1
    fresh = pd.DataFrame({
        "cat": rng.choice(["a", "b", None], size=80),
        "num": rng.normal(100, 30, size=80).round(3),
        "day": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 50, size=80), unit="D"),
    })
    syn = pd.concat([near, far, fresh, real.head(20)], ignore_index=True)
    metadata = {"columns": {"cat": {"sdtype": "categorical"}, "num": {"sdtype": "numerical"},
                            "day": {"sdtype": "datetime"}}}
    expected = NewRowSynthesis.compute(real_data=real, synthetic_data=syn, metadata=metadata)
    ours = gates.new_row_share(real, syn, ["num", "day"], ["cat"])
    assert ours == pytest.approx(expected)
    assert 0.1 < ours < 0.9
    # Tiny chunks give the same answer.
    assert gates.new_row_share(real, syn, ["num", "day"], ["cat"], max_pairs=50) == pytest.approx(expected)


def test_dcr_agrees_with_sdmetrics():
    """Distances to one reference set are SDMetrics' own; the overfitting score is SDMetrics' where
    training and holdout span the same ranges (the gate measures both on their joint range, which
    SDMetrics does not: see test_synthetic_gates for the shared scale against a brute force)."""
    from sdmetrics.single_table import DCROverfittingProtection
    from sdmetrics.single_table.privacy.dcr_utils import calculate_dcr

    rng = np.random.default_rng(5)

    def table(n):
        return pd.DataFrame({
            "cat": rng.choice(["a", "b", "c", None], size=n),
            "num": np.where(rng.random(n) < 0.05, np.nan, rng.normal(50, 10, size=n)),
            "const": np.full(n, 7.0),
            "day": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 300, size=n), unit="D"),
        })

    train, hold = table(300), table(300)
    for c in ("num", "day"):  # the holdout within the training range, reaching both ends of it
        hold[c] = hold[c].clip(train[c].min(), train[c].max())
        hold.loc[0, c], hold.loc[1, c] = train[c].min(), train[c].max()
    syn = pd.concat([train.sample(n=80, random_state=0), table(170)], ignore_index=True)  # some copies
    metadata = {"columns": {"cat": {"sdtype": "categorical"}, "num": {"sdtype": "numerical"},
                            "const": {"sdtype": "numerical"}, "day": {"sdtype": "datetime"}}}
    numerical, categorical = ["num", "const", "day"], ["cat"]
    expected = calculate_dcr(dataset=syn, reference_dataset=train, metadata=metadata).to_numpy()
    ours = gates.closest_record_distances(syn, train, numerical, categorical, chunk=64)
    assert ours == pytest.approx(expected)
    breakdown = DCROverfittingProtection.compute_breakdown(
        real_training_data=train, synthetic_data=syn, real_validation_data=hold, metadata=metadata,
        table_name=None)
    score, closer = gates.dcr_overfitting_protection(train, syn, hold, numerical, categorical)
    assert score == pytest.approx(breakdown["score"])
    assert closer == pytest.approx(breakdown["synthetic_data_percentages"]["closer_to_training"])
    assert score < 0.9  # the copies show


def test_cli_refusal_names_the_failed_gate(settings, store_listing, tmp_path, residents_dir):
    from click.testing import CliRunner

    from enclave.cli import main

    def misclassify(c):
        c["tables"]["residents"]["columns"]["notes"] = {"role": "sensitive", "type": "string"}

    path = _copy(tmp_path, residents_dir, misclassify)
    result = CliRunner().invoke(main, ["data", "release", str(path), "--method", "masked"])
    assert result.exit_code == 1
    assert "release refused" in result.output and "no_identifier_patterns [residents]" in result.output
    assert store_listing() == []
    assert CliRunner().invoke(main, ["data", "list"]).output == "no releases\n"
    # The refusal is in the audit log, with the gates' results.
    from enclave.audit.reader import AuditReader

    reader = AuditReader(settings)
    (refused,) = reader.query(action="data.release_refused")["records"]
    reader.close()
    assert refused["source"] == "cli" and refused["detail"]["method"] == "masked"
    assert any(g["gate"] == "no_identifier_patterns" and not g["passed"] for g in refused["detail"]["gates"])


def test_quality_and_diagnostic_are_sdvs_own_scores():
    """The gates hand SDMetrics categorical columns as pandas categoricals (for speed): the scores,
    property by property, are those of SDV's reports on the tables as they are."""
    from sdv.evaluation import evaluate_quality, run_diagnostic
    from sdv.metadata import Metadata

    def table(n, seed):
        r = np.random.default_rng(seed)
        level = r.integers(0, 5, n)  # education, which income and the region follow (pair trends)
        region = np.where(r.random(n) < 0.7, level * 6, r.integers(0, 30, n))
        return pd.DataFrame({
            "id": [f"R{seed}{i:06d}" for i in range(n)],
            "sex": r.choice(["女", "男", None], n, p=[0.5, 0.45, 0.05]),
            "region": [f"3301{x:02d}" for x in region],
            "education": np.array(["小学", "初中", "高中", "本科", "研究生"])[level],
            "income": np.where(r.random(n) < 0.05, np.nan, r.lognormal(9 + 0.4 * level, 0.5, n)),
            "visit": pd.Timestamp("2023-01-01") + pd.to_timedelta(r.integers(0, 700, n), unit="D"),
        })

    real, syn = table(3000, 1), table(2500, 2)
    syn.loc[syn.index[:40], "region"] = "339999"  # a region no real row has
    syn["income"] = syn["income"].sample(frac=1, random_state=0).to_numpy()  # education no longer tells it
    contract = Contract.model_validate({"name": "people", "tables": {"people": {"path": "p.csv", "primary_key": "id",
        "columns": {"id": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
                    "sex": {"role": "quasi_identifier", "type": "string"},
                    "region": {"role": "quasi_identifier", "type": "string"},
                    "education": {"role": "measure", "type": "string"},
                    "income": {"role": "measure", "type": "float"},
                    "visit": {"role": "date", "type": "date"}}}}})
    md = Metadata.detect_from_dataframes(data={"people": real})
    ctx = {"real": {"people": real}, "metadata": md}
    (quality,) = gates.quality(released={"people": syn}, synth_ctx=ctx, contract=contract)
    (diagnostic,) = gates.diagnostic(released={"people": syn}, synth_ctx=ctx, contract=contract)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected_quality = evaluate_quality(real, syn, md, verbose=False)
        expected_diagnostic = run_diagnostic(real, syn, md, verbose=False)
    assert quality.value == round(expected_quality.get_score(), 4)
    assert diagnostic.value == round(expected_diagnostic.get_score(), 4)
    props = expected_quality.get_properties()
    assert quality.detail == ", ".join(f"{p}: {s:.3f}" for p, s in zip(props["Property"], props["Score"]))
    assert not any(pd.isna(props["Score"]))  # both properties measured
    assert diagnostic.value < 1  # the new region shows
