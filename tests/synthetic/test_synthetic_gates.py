"""Fair synthetic gates (issue #14, findings 6 and 7) and panel tables synthesised with PAR.

Every dataset here is GENERATED, shaped like the public survey and panel data the findings came
from: sorted ids, missing values, an outlier, several rows per person.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from enclave.cli import main
from synthetic import gates, masking, synthesis
from synthetic.contract import Contract, load_contract, load_tables
from synthetic.gates.synthetic import column_ranges


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _write(folder, name: str, df: pd.DataFrame, contract: dict):
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / f"{name}.csv", index=False)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(contract, allow_unicode=True), encoding="utf-8")
    return path


def _halves(path):
    """The prepared training and holdout halves a synthetic release of ``path`` learns and is judged on."""
    contract = load_contract(path)
    raw = load_tables(contract, path.parent)
    masked = masking.mask_tables(contract, raw, b"t" * 32, suppress=False, progress=False).tables
    prepared = synthesis.prepare(contract, masked)
    train, holdout = synthesis.split_holdout(contract, prepared.tables, contract.synthesis.seed)
    return contract, prepared, train, holdout


def _published(settings, release: str, table: str):
    root = settings.release_store / release
    return json.loads((root / "manifest.json").read_text(encoding="utf-8")), pd.read_parquet(
        root / "data" / f"{table}.parquet")


# -- Finding 6: distance to closest record on one scale ------------------------------------------

WAGES = {
    "name": "wages", "generated": True,
    "tables": {"wages": {"path": "wages.csv", "primary_key": "person_id", "columns": {
        "person_id": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
        "sex": {"role": "quasi_identifier", "type": "string"},
        "region": {"role": "quasi_identifier", "type": "string"},
        "education": {"role": "sensitive", "type": "string"},
        "wage": {"role": "measure", "type": "float"},
        "hours": {"role": "measure", "type": "float"},
    }}},
}


def _wages_with_an_outlier_in_training(folder, n=600, seed=0):
    """A wage survey (sorted ids, 5 % missing wages) with one wage 20 x the largest, in the training half."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "person_id": [f"P{i:06d}" for i in range(n)],
        "sex": rng.choice(["女", "男"], n),
        "region": rng.choice(["北京", "上海", "广东", "四川", "湖北"], n),
        "education": rng.choice(["小学", "初中", "高中", "大学"], n, p=[0.2, 0.3, 0.3, 0.2]),
        "wage": rng.lognormal(8.5, 0.5, n).round(1),
        "hours": rng.normal(40, 8, n).round(1),
    })
    df.loc[rng.random(n) < 0.05, "wage"] = np.nan
    contract = Contract.model_validate(WAGES)
    train, _ = synthesis.split_holdout(contract, {"wages": df.assign(row=range(n))}, contract.synthesis.seed)
    df.loc[int(train["wages"]["row"].iloc[0]), "wage"] = df["wage"].max() * 20
    return _write(folder, "wages", df, WAGES)


def test_outlier_in_the_training_half_does_not_refuse_an_honest_release(settings, tmp_path):
    path = _wages_with_an_outlier_in_training(tmp_path / "raw")
    out = _cli("data", "release", path, "--method", "synthetic")
    assert out.exit_code == 0, out.output
    assert "published wages@1 (synthetic)" in out.output
    manifest, syn = _published(settings, "wages@1", "wages")
    dcr = next(g for g in manifest["gates"] if g["gate"] == "dcr_overfitting_protection")
    assert dcr["passed"] and dcr["value"] >= 0.9, dcr

    # The same synthetic rows and halves, each half on its own range (SDMetrics', and the gate's
    # before): the outlier stretches the training range, so rows look closer to training - refused.
    contract, _, train, holdout = _halves(path)
    columns = ["sex", "region", "education", "wage", "hours"]
    numerical, categorical = ["wage", "hours"], ["sex", "region", "education"]
    train, holdout, syn = train["wages"][columns], holdout["wages"][columns], syn[columns]
    to_train = gates.closest_record_distances(syn, train, numerical, categorical)
    to_holdout = gates.closest_record_distances(syn, holdout, numerical, categorical)
    per_set_score = min(2 * (1 - (to_train < to_holdout).mean()), 1.0)
    assert per_set_score < contract.gates.dcr_overfitting_protection
    score, closer = gates.dcr_overfitting_protection(train, syn, holdout, numerical, categorical)
    assert score == pytest.approx(dcr["value"], abs=1e-4) and f"{closer:.1%} closer to training" in dcr["detail"]


def _brute_force_dcr(data: pd.DataFrame, reference: pd.DataFrame, ranges: dict[str, float]) -> list[float]:
    """Distance to closest record, one pair at a time, as SDMetrics defines it, on the given ranges."""
    out = []
    for _, row in data.iterrows():
        best = np.inf
        for _, ref in reference.iterrows():
            total = 0.0
            for c in data.columns:
                a, b = row[c], ref[c]
                if pd.isna(a) or pd.isna(b):
                    total += 0.0 if pd.isna(a) and pd.isna(b) else 1.0
                elif c in ranges:
                    total += float(abs(a - b) > 0) if ranges[c] == 0 else min(abs(a - b) / ranges[c], 1.0)
                else:
                    total += float(a != b)
            best = min(best, total / len(data.columns))
        out.append(best)
    return out


def test_distance_gate_measures_training_and_holdout_on_one_shared_scale():
    rng = np.random.default_rng(11)

    def table(n):
        return pd.DataFrame({
            "region": rng.choice(["华北", "华东", None], size=n),
            "wage": np.where(rng.random(n) < 0.1, np.nan, rng.normal(6000, 1500, size=n).round(0)),
            "children": rng.integers(0, 3, size=n).astype(float),
        })

    train, holdout, syn = table(40), table(40), table(30)
    train.loc[5, "wage"] = 600_000.0  # the outlier is in the training half only
    ranges = column_ranges([train, holdout], ["wage", "children"])
    assert ranges["wage"] == np.nanmax(train["wage"]) - min(np.nanmin(train["wage"]), np.nanmin(holdout["wage"]))
    expected_train = _brute_force_dcr(syn, train, ranges)
    expected_holdout = _brute_force_dcr(syn, holdout, ranges)
    assert gates.closest_record_distances(syn, train, ["wage", "children"], ["region"], chunk=7,
                                          ranges=ranges) == pytest.approx(expected_train)
    score, closer = gates.dcr_overfitting_protection(train, syn, holdout, ["wage", "children"], ["region"])
    assert closer == pytest.approx(np.mean(np.array(expected_train) < np.array(expected_holdout)))
    assert score == pytest.approx(min(2 * (1 - closer), 1.0))


# -- Finding 7: exact copies against the holdout's chance rate -----------------------------------

INSURANCE = {
    "name": "insurance", "generated": True,
    "tables": {"people": {"path": "people.csv", "primary_key": "household_id", "columns": {
        "household_id": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
        "sex": {"role": "quasi_identifier", "type": "string"},
        "age_band": {"role": "quasi_identifier", "type": "string"},
        "insured": {"role": "sensitive", "type": "string"},
    }}},
    # Three categorical columns have 24 combinations, all present in the real data: no synthetic
    # row can be new, so that gate is off here; exact_copies still bounds copying beyond chance.
    "gates": {"new_row_synthesis": 0.0},
}


def _insurance(folder, n=1000, seed=1):
    """A low-dimensional survey table: three categorical columns, some answers missing."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "household_id": [f"H{i:06d}" for i in range(n)],
        "sex": rng.choice(["女", "男"], n),
        "age_band": rng.choice(["[0, 18)", "[18, 40)", "[40, 65)", "[65, ∞)"], n),
        "insured": rng.choice(["是", "否", None], n, p=[0.7, 0.25, 0.05]),
    })
    return _write(folder, "people", df, INSURANCE)


def test_chance_copies_on_a_low_dimensional_table_pass_and_real_copying_is_refused(settings, tmp_path):
    path = _insurance(tmp_path / "raw")
    out = _cli("data", "release", path, "--method", "synthetic")
    assert out.exit_code == 0, out.output
    manifest, syn = _published(settings, "insurance@1", "people")
    copies = next(g for g in manifest["gates"] if g["gate"] == "exact_copies")
    assert copies["passed"] and copies["threshold"] == "<= 0.01"
    # Nearly every synthetic row equals some real row - training and holdout alike.
    to_train, to_holdout = (int(x) for x in
                            pd.Series(copies["detail"]).str.extract(r"(\d+) of \d+ .* row, (\d+) a holdout").iloc[0])
    assert to_train > 0.9 * len(syn) and to_holdout > 0.9 * len(syn)


def test_a_generator_copying_training_rows_is_refused(tmp_path):
    contract, prepared, train, holdout = _halves(_wages_with_an_outlier_in_training(tmp_path / "raw"))
    ctx = {"real": prepared.tables, "train": train, "holdout": holdout}
    rows = train["wages"]
    # Fresh rows (hours nobody reported) with 3 % of the rows copied from training: 0.03 > 0.01.
    fresh = rows.sample(n=582, replace=True, random_state=1).assign(hours=lambda d: d["hours"] + 0.05)
    leaky = pd.concat([fresh, rows.sample(n=18, random_state=2)], ignore_index=True)
    for released, copied in ((rows.sample(n=600, replace=True, random_state=0), 600), (leaky, 18)):
        (result,) = gates.exact_copies(released={"wages": released}, synth_ctx=ctx, contract=contract)
        assert not result.passed and result.value == pytest.approx(copied / 600, abs=0.005)
        assert result.detail.startswith(f"{copied} of 600 synthetic rows equal a training row, 0 a holdout row")
    (honest,) = gates.exact_copies(released={"wages": fresh}, synth_ctx=ctx, contract=contract)
    assert honest.passed and honest.value == 0


def test_copies_compare_values_whatever_their_dtype_and_empty_equals_empty():
    contract = Contract.model_validate({"name": "households", "tables": {"h": {
        "path": "h.csv", "primary_key": "id", "columns": {
            "id": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
            "members": {"role": "measure", "type": "integer"},
            "city": {"role": "quasi_identifier", "type": "string"},
        }}}, "gates": {"max_copy_excess": 0.2}})
    train = pd.DataFrame({"id": ["a", "b", "c"], "members": pd.array([2, 3, None], dtype="Int64"),
                          "city": ["杭州", None, "宁波"]})
    holdout = pd.DataFrame({"id": ["d", "e", "f"], "members": pd.array([5, 6, 7], dtype="Int64"),
                            "city": ["温州", "温州", "温州"]})
    # 2.0 equals 2, an empty city equals an empty city, NaN equals <NA>; ids are generated afresh.
    syn = pd.DataFrame({"id": ["x", "y", "z", "w"], "members": [2.0, 3.0, np.nan, 5.0],
                        "city": ["杭州", np.nan, "宁波", "温州"]})
    ctx = {"train": {"h": train}, "holdout": {"h": holdout}}
    (result,) = gates.exact_copies(released={"h": syn}, synth_ctx=ctx, contract=contract)
    assert result.detail.startswith("3 of 4 synthetic rows equal a training row, 1 a holdout row")
    assert result.value == 0.5 and not result.passed and result.threshold == "<= 0.2"


# Anonymeter's attacks in a process of their own: a table shaped like the wages survey, and a
# "release" of fresh rows with 3 % of the training rows copied (as above), so that every risk has
# something to measure.
_ATTACKS_IN_A_PROCESS = """
import json, sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
sys.path[:0] = [sys.argv[2], sys.argv[3]]
import pandas as pd
from synthetic import gates
from test_synthetic_gates import _halves, _wages_with_an_outlier_in_training
contract, prepared, train, holdout = _halves(_wages_with_an_outlier_in_training(Path(sys.argv[1])))
rows = train["wages"]
fresh = rows.sample(n=582, replace=True, random_state=1).assign(hours=lambda d: d["hours"] + 0.05)
released = {"wages": pd.concat([fresh, rows.sample(n=18, random_state=2)], ignore_index=True)}
ctx = {"real": prepared.tables, "train": train, "holdout": holdout}
print(json.dumps({r.gate: r.value for r in gates.attack_risks(released=released, synth_ctx=ctx, contract=contract)}))
"""


def test_attack_risks_are_the_same_in_every_run(tmp_path):
    """A gate's value depends on the data and ``synthesis.seed`` alone, or a holder re-runs a
    release until chance lets it pass. Polars, under Anonymeter's singling-out attack, lists a
    column's values and rare values in an order that changes from process to process, and the
    attack's queries were drawn from those lists."""
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    runs = [subprocess.run([sys.executable, "-c", _ATTACKS_IN_A_PROCESS, str(tmp_path / f"raw{i}"), str(here),
                            str(here.parent.parent)], capture_output=True, text=True, timeout=300,
                           env={**__import__("os").environ, "PYTHONHASHSEED": str(i)})
            for i in range(4)]
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    risks = [json.loads(r.stdout.splitlines()[-1]) for r in runs]
    assert risks[0]["attack_risk:singling_out"] > 0  # the attack finds something to measure
    assert risks == [risks[0]] * len(risks)


# -- Panels: PAR keeps each person's rows together ------------------------------------------------

PANEL = {
    "name": "panel", "generated": True,
    "tables": {"wages": {"path": "wages.csv", "entity_column": "person_id", "sequence_index": "year",
                         "columns": {
        "person_id": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
        "year": {"role": "measure", "type": "integer"},
        "sex": {"role": "quasi_identifier", "type": "string"},
        "birth_year": {"role": "quasi_identifier", "type": "integer", "treatment": "bands",
                       "bins": [1950, 1970, 1990, 2010]},
        "region": {"role": "quasi_identifier", "type": "string"},
        "employer": {"role": "measure", "type": "string"},
        "wage": {"role": "sensitive", "type": "float"},
    }}},
    "synthesis": {"epochs": 5, "time_budget_s": 300},
    # Five epochs over 20 training people: the test is about keeping people's rows together and
    # about the budget, not about utility; a panel's yearly rows of one person also repeat often.
    "gates": {"quality": 0.5, "new_row_synthesis": 0.5},
}


def _panel(folder, people=40, seed=0, contract=PANEL):
    """A yearly panel of workers: 2-5 rows per person, ids sorted, missing wages, one outlier."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(people):
        sex, region = rng.choice(["女", "男"]), rng.choice(["北京", "上海", "广州"])
        born = int(rng.integers(1960, 2000))
        base, start = rng.lognormal(8.5, 0.4), int(rng.integers(2015, 2019))
        for year in range(start, start + int(rng.integers(2, 6))):
            wage = None if rng.random() < 0.1 else round(base * 1.03 ** (year - start) * rng.lognormal(0, 0.05), 1)
            rows.append({"person_id": f"P{i:05d}", "year": year, "sex": sex, "birth_year": born, "region": region,
                         "employer": rng.choice(["国企", "私企", "外企"]), "wage": wage})
    df = pd.DataFrame(rows)
    df.loc[3, "wage"] = 900_000.0
    return _write(folder, "wages", df, contract)


def test_panel_is_split_by_person_and_synthesised_with_par(settings, tmp_path):
    path = _panel(tmp_path / "raw")
    contract, prepared, train, holdout = _halves(path)
    # Each person's rows are on one side of the split, and the sides hold as many people.
    people_train, people_holdout = set(train["wages"]["person_id"]), set(holdout["wages"]["person_id"])
    assert not people_train & people_holdout and len(people_train) == len(people_holdout) == 20
    rows_per_person = prepared.tables["wages"]["person_id"].value_counts()
    for half in (train, holdout):
        kept = half["wages"]["person_id"].value_counts()
        assert kept.equals(rows_per_person[kept.index])  # all of a person's rows, on one side

    # PAR's own output: every synthetic person's rows come in order of the sequence index.
    synth = synthesis.SDVSynthesiser(contract, synthesis.build_metadata(contract, prepared.tables))
    assert synth.name == "par"
    synth.fit(train)
    sampled = synth.sample({"wages": len(prepared.tables["wages"])})["wages"]
    assert sorted(synth._context) == ["birth_year", "region", "sex"]  # constant within every person
    assert sampled.groupby("person_id", sort=False)["year"].apply(lambda y: y.is_monotonic_increasing).all()

    out = _cli("data", "release", path, "--method", "synthetic")
    assert out.exit_code == 0, out.output
    manifest, syn = _published(settings, "panel@1", "wages")
    assert manifest["parameters"]["model"] == "par"
    people = syn.groupby("person_id")
    assert len(people) > 30 and people.size().max() > 1
    # A person's sex, birth band and region are one per person; a year appears once per person.
    assert (people[["sex", "birth_year", "region"]].nunique() == 1).all().all()
    assert not syn.duplicated(["person_id", "year"]).any()
    assert not set(syn["person_id"]) & set(pd.read_csv(path.parent / "wages.csv")["person_id"])


def test_par_beyond_its_time_budget_is_refused_with_the_reason(settings, tmp_path, store_listing):
    path = _panel(tmp_path / "raw", contract=PANEL | {"synthesis": {"epochs": 5000, "time_budget_s": 2}})
    out = _cli("data", "release", path, "--method", "synthetic")
    assert out.exit_code == 1
    assert "par did not finish within its time budget of 2 s (5000 epochs)" in out.output
    assert "lower synthesis.epochs or raise synthesis.time_budget_s" in out.output
    assert store_listing() == []


def test_entity_columns_in_a_release_of_several_tables_are_refused(tmp_path):
    contract = Contract.model_validate({"name": "two", "tables": {
        "people": {"path": "p.csv", "primary_key": "pid", "columns": {
            "pid": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
            "sex": {"role": "quasi_identifier", "type": "string"}}},
        "visits": {"path": "v.csv", "entity_column": "pid",
                   "foreign_keys": [{"column": "pid", "references": "people.pid"}], "columns": {
            "pid": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
            "cost": {"role": "measure", "type": "float"}}}}})
    tables = {"people": pd.DataFrame({"pid": ["a", "b"], "sex": ["女", "男"]}),
              "visits": pd.DataFrame({"pid": ["a", "a", "b"], "cost": [1.0, 2.0, 3.0]})}
    with pytest.raises(synthesis.SynthesisError, match=r"table\(s\) \['visits'\] declare entity_column.*one table"):
        synthesis.build_metadata(contract, tables)
