"""Utility gates from declared analyses: regressions, grouped aggregates and classifiers.

The data is GENERATED, shaped like a wage survey: a panel (several years per person, ids sorted),
skewed wages with a few outliers, missing values, Chinese category labels.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from enclave.cli import main
from synthetic import analyses, masking
from synthetic.contract import Contract, load_contract, load_tables
from synthetic.gates import GateResult
from synthetic.gates.utility import analyses as analyses_gate

EDUCATION = ["小学", "初中", "高中", "本科"]


def wage_panel(n_people: int = 240, seed: int = 7) -> pd.DataFrame:
    """One row per person and year (2 to 4 years each), sorted by person id."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_people):
        age0 = int(rng.integers(20, 60))
        sex = rng.choice(["男", "女"])
        edu = rng.choice(EDUCATION, p=[0.2, 0.3, 0.3, 0.2])
        skill = rng.normal(0, 0.3)
        for j in range(int(rng.integers(2, 5))):
            age = age0 + j
            log_wage = 7.6 + 0.02 * age + 0.25 * EDUCATION.index(edu) + 0.15 * (sex == "男") + skill
            rows.append({"person_id": f"P{i:05d}", "year": 2019 + j, "age": age, "sex": sex, "education": edu,
                         "wage": round(float(np.exp(log_wage + rng.normal(0, 0.35))), 2),
                         "hours": round(float(rng.normal(42, 6)), 1)})
    df = pd.DataFrame(rows)
    df.loc[rng.choice(len(df), 4, replace=False), "wage"] *= 25  # outliers
    df.loc[rng.choice(len(df), 15, replace=False), "wage"] = np.nan  # not reported
    df.loc[rng.choice(len(df), 10, replace=False), "education"] = None
    return df


WAGE_CONTRACT = {
    "name": "wages",
    "generated": True,
    "tables": {"wages": {
        "path": "wages.csv",
        "entity_column": "person_id",
        "columns": {
            "person_id": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
            "year": {"role": "measure", "type": "integer",
                     "uniqueness_accepted": "the survey year; every person has several"},
            "age": {"role": "quasi_identifier", "type": "integer", "treatment": "bands",
                    "bins": [18, 30, 45, 60, 100]},
            "sex": {"role": "quasi_identifier", "type": "string"},
            "education": {"role": "sensitive", "type": "string"},
            "wage": {"role": "measure", "type": "float",
                     "uniqueness_accepted": "exact wages are what the wage regression needs"},
            "hours": {"role": "measure", "type": "float",
                      "uniqueness_accepted": "exact hours are what the wage regression needs"},
        },
    }},
    "privacy": {"k": 5, "l": 2, "max_suppressed": 0.2},
    "analyses": [
        {"name": "wage_model", "table": "wages",
         "regression": {"formula": "np.log(wage) ~ age + C(education) + C(sex)", "min_ci_overlap": 0.7}},
        {"name": "median_wage_by_education", "table": "wages",
         "aggregate": {"by": ["education"], "measure": "wage", "statistic": "median", "tolerance": 0.1}},
    ],
}


def _write(folder, name: str, contract: dict, df: pd.DataFrame):
    table = next(iter(contract["tables"].values()))
    df.to_csv(folder / table["path"], index=False, encoding="utf-8")
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(contract, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _cli(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def wages(tmp_path_factory):
    """The wage panel, its contract, and its raw and masked (unsuppressed) tables."""
    folder = tmp_path_factory.mktemp("wages")
    path = _write(folder, "wages", WAGE_CONTRACT, wage_panel())
    contract = load_contract(path)
    raw = load_tables(contract, folder)
    masked = masking.mask_tables(contract, raw, b"k" * 32, suppress=False, progress=False).tables
    return path, contract, raw, masked


def _with(contract: Contract, *declared: dict) -> Contract:
    return Contract.model_validate(contract.model_dump() | {"analyses": list(declared)})


# -- acceptance, through `enclave data release` ------------------------------------------------------------


def test_masked_release_keeps_the_declared_regression_and_shows_both_results(settings, wages):
    path = wages[0]
    out = _cli("data", "release", str(path), "--method", "masked")
    assert out.exit_code == 0, out.output
    (root,) = [p for p in settings.release_store.iterdir() if p.name.startswith("wages@")]
    m = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    gates = {g["gate"]: g for g in m["gates"]}
    model = gates["analysis:wage_model"]
    assert model["passed"] and model["table"] == "wages" and model["value"] >= 0.7
    # Both results, coefficient by coefficient, banded age as categories, Chinese levels intact.
    assert "R² real" in model["detail"] and "release" in model["detail"]
    assert "C(age)" not in model["detail"] and "age[T.[30, 45)]" in model["detail"]
    assert "C(education)[T.本科]: real" in model["detail"]
    by_education = gates["analysis:median_wage_by_education"]
    assert by_education["passed"] and "本科: real" in by_education["detail"]
    assert "analysis:wage_model" in (root / "report.html").read_text(encoding="utf-8")


INTERACTION_CONTRACT = {
    "name": "shifts",
    "generated": True,
    "tables": {"shifts": {
        "path": "shifts.csv",
        "columns": {
            "age": {"role": "measure", "type": "integer"},
            "sex": {"role": "quasi_identifier", "type": "string"},
            "wage": {"role": "measure", "type": "float"},
        },
    }},
    "privacy": {"max_unique_share": 1.0},
    # Low-dimensional on purpose; the privacy gates are not what this release is about.
    "gates": {"new_row_synthesis": 0.9, "max_attack_risk": 1.0, "subsample": 100, "anonymeter_attacks": 20},
    "analyses": [{"name": "wage_by_age_and_sex", "table": "shifts",
                  "regression": {"formula": "wage ~ age * C(sex)", "min_ci_overlap": 0.5}}],
}


def test_synthetic_release_losing_the_declared_regression_is_refused(settings, tmp_path):
    # Wages rise with age for men and fall with age for women: a relation through a category that a
    # Gaussian copula (pairwise correlations) cannot keep.
    rng = np.random.default_rng(3)
    n = 300
    age = rng.integers(20, 65, n)
    sex = rng.choice(["男", "女"], n)
    wage = np.where(sex == "男", 3000 + 80 * age, 9000 - 80 * age) + rng.normal(0, 300, n)
    df = pd.DataFrame({"age": age, "sex": sex, "wage": wage.round(2)})
    path = _write(tmp_path, "shifts", INTERACTION_CONTRACT, df)
    out = _cli("data", "release", str(path), "--method", "synthetic")
    assert out.exit_code != 0
    assert "analysis:wage_by_age_and_sex [shifts]" in out.output
    failed = re.findall(r"^  (\S+ \[\w+\]):", out.output, re.M)
    assert failed == ["analysis:wage_by_age_and_sex [shifts]"], out.output  # every other gate passed
    # The coefficients lost, by name: men's wage level flips, their rise with age is gone.
    assert "sign changed: C(sex)[T.男]" in out.output
    assert re.search(r"age:C\(sex\)\[T.男\]: real 16\d\.\d \[[^]]+\], release [^;]+, overlap 0.00", out.output)
    assert "R² real 0.93" in out.output
    assert not list(settings.release_store.glob("shifts@*"))


# -- the analyses, run directly on real rows and a release ---------------------------------------------


def test_regression_on_the_release_itself_passes_and_reports_every_coefficient(wages):
    _, contract, _, masked = wages
    o = analyses.compare(contract.analyses[0], contract, masked["wages"], masked["wages"])
    assert o.passed and o.value == 1.0
    terms = [c["term"] for c in o.figures["coefficients"]]
    assert terms[0] == "Intercept" and "age[T.[30, 45)]" in terms and "C(sex)[T.男]" in terms
    assert o.figures["r2"]["real"] == o.figures["r2"]["release"] > 0.2


def test_regression_whose_coefficient_changes_sign_fails_naming_it(wages):
    _, contract, _, masked = wages
    real = masked["wages"]
    flipped = real.assign(wage=real["wage"] * np.where(real["sex"] == "男", 0.4, 1.0))
    o = analyses.compare(contract.analyses[0], contract, real, flipped)
    assert not o.passed
    assert o.detail.startswith("sign changed: C(sex)[T.男]")
    (sex,) = [c for c in o.figures["coefficients"] if c["term"] == "C(sex)[T.男]"]
    assert sex["sign_changed"] and sex["real"]["estimate"] > 0 > sex["release"]["estimate"]


def test_regression_with_a_level_on_one_side_only_says_so(wages):
    _, contract, _, masked = wages
    real = masked["wages"]
    release = real[real["education"] != "小学"].copy()
    release.loc[release.index[:5], "education"] = "博士"
    o = analyses.compare(contract.analyses[0], contract, real, release)
    assert "education level(s) 博士 only in the release (5 row(s) left out)" in o.figures["notes"]
    assert "education level(s) 小学 only in the real rows (not estimable on the release)" in o.figures["notes"]
    assert o.figures["rows"]["release"] < o.figures["rows"]["real"]


def test_regression_leaves_out_rows_whose_terms_are_infinite(wages):
    _, contract, _, masked = wages
    real = masked["wages"]
    release = real.copy()
    release.loc[release.index[release["wage"].notna()][:3], "wage"] = 0.0  # np.log(0)
    o = analyses.compare(contract.analyses[0], contract, real, release)
    assert "3 row(s) of the release left out: a term is infinite there" in o.figures["notes"]
    assert o.passed and o.figures["rows"]["release"] == o.figures["rows"]["real"] - 3


def test_regression_on_raw_numbers_bands_them_as_the_release_does(wages):
    _, contract, raw, masked = wages
    o = analyses.compare(contract.analyses[0], contract, raw["wages"], masked["wages"])
    assert o.passed and o.value == 1.0  # raw ages are put in the contract's bands first


def test_ci_overlap_follows_karr():
    assert analyses.ci_overlap((0, 2), (0, 2)) == 1.0
    assert analyses.ci_overlap((0, 2), (1, 3)) == 0.5
    assert analyses.ci_overlap((0, 2), (0.5, 1.5)) == pytest.approx(0.75)
    assert analyses.ci_overlap((0, 1), (2, 3)) == 0.0


def test_aggregate_names_the_groups_off_and_missing(wages):
    _, contract, _, masked = wages
    a = contract.analyses[1]
    real = masked["wages"]
    release = real[real["education"] != "初中"].assign(
        wage=lambda d: d["wage"] * np.where(d["education"] == "本科", 1.5, 1.0))
    o = analyses.compare(a, contract, real, release)
    assert not o.passed
    assert "初中 (missing in the release)" in o.detail and "本科 (" in o.detail
    assert {g["group"] for g in o.figures["groups"] if not g["passed"]} == {"初中", "本科"}
    assert o.figures["groups"][-1]["group"] == "(missing)"  # missing education is a group of its own


def test_aggregate_leaves_out_groups_of_fewer_than_k_entities(wages):
    _, contract, _, masked = wages
    real = masked["wages"].copy()
    few = real["person_id"].isin(real["person_id"].unique()[:3])
    real.loc[few, "education"] = "博士"
    a = analyses.Analysis.model_validate(
        {"name": "count", "table": "wages", "aggregate": {"by": ["education"], "statistic": "count"}})
    o = analyses.compare(a, contract, real, real[~few])
    assert o.passed and "博士" not in o.detail  # 3 people: neither compared nor shown
    assert o.figures["groups_not_compared"] == 1


def test_classifier_trained_on_the_release_is_scored_on_real_rows(wages):
    _, contract, _, masked = wages
    a = analyses.Analysis.model_validate(
        {"name": "degree", "table": "wages",
         "classifier": {"target": "education", "features": ["wage", "age", "sex", "hours"],
                        "metric": "roc_auc", "tolerance": 0.05}})
    real = masked["wages"]
    kept = analyses.compare(a, contract, real, real)
    assert kept.passed and kept.value == kept.figures["score"]["real"] > 0.6
    # A release whose target no longer relates to the features scores like chance.
    shuffled = real.assign(education=real["education"].sample(frac=1, random_state=1).to_numpy())
    lost = analyses.compare(a, contract, real, shuffled)
    assert not lost.passed and lost.value < kept.value - 0.05
    assert "roc_auc on" in lost.detail and "predicting education" in lost.detail
    # A synthetic release's classifier is scored on the holdout the generator never saw.
    train, holdout = real.iloc[: len(real) // 2], real.iloc[len(real) // 2:]
    (result,) = analyses_gate(released={"wages": shuffled}, contract=_with(contract, a.model_dump()),
                              real=masked, synth_ctx={"train": {"wages": train}, "holdout": {"wages": holdout}})
    assert result.gate == "analysis:degree" and not result.passed
    labelled = [int(d["education"].notna().sum()) for d in (holdout, train)]
    assert "on {} real test rows".format(labelled[0]) in result.detail
    assert "trained on {} real rows".format(labelled[1]) in result.detail


# -- bad declarations --------------------------------------------------------------------------------------


@pytest.mark.parametrize("declared, problem", [
    ({"regression": {"formula": "wage ~ age + C(grade)"}},
     "analysis 'bad': formula 'wage ~ age + C(grade)' names column 'grade', which is not in the table"),
    ({"regression": {"formula": "wage ~ person_id"}},
     "analysis 'bad': column 'person_id' is a direct identifier (released as a pseudonym at most)"),
    ({"regression": {"formula": "education ~ age"}},
     "analysis 'bad': the outcome 'education' is category, not a number"),
    ({"regression": {"formula": "wage ~ __import__('os').getcwd()"}},
     "'__import__('os').getcwd' is not allowed"),
    ({"regression": {"formula": "wage ~ open('/etc/passwd')"}}, "function 'open' is not allowed"),
    ({"regression": {"formula": "wage ~ np.random.rand(1)"}},
     "'np.random.rand' is not allowed"),
    ({"regression": {"formula": "wage ~ age +"}}, "analysis 'bad': formula 'wage ~ age +' is not valid"),
    ({"aggregate": {"by": ["sex"], "measure": "education"}},
     "analysis 'bad': measure 'education' is not numeric (category)"),
    ({"aggregate": {"by": ["wage"], "measure": "hours"}},
     "analysis 'bad': group column 'wage' is a continuous measure"),
    ({"classifier": {"target": "sex", "features": ["wage", "sex"]}}, "target 'sex' is also a feature"),
    ({"classifier": {"target": "wage", "features": ["age"]}},
     "analysis 'bad': target 'wage' is a continuous measure"),
])
def test_bad_declarations_are_named_at_contract_check(wages, declared, problem):
    _, contract, raw, _ = wages
    bad = _with(contract, {"name": "bad", "table": "wages", **declared})
    problems = analyses.check(bad, raw)
    assert any(problem in p for p in problems), problems


def test_a_target_with_one_class_is_named(wages):
    _, contract, raw, _ = wages
    one = {"wages": raw["wages"].assign(sex="男")}
    bad = _with(contract, {"name": "by_sex", "table": "wages",
                           "classifier": {"target": "sex", "features": ["wage"]}})
    assert analyses.check(bad, one) == [
        "analysis 'by_sex': target 'sex' has 1 class(es) in the data: a classifier needs two"]
    assert analyses.check(contract, raw) == []


def test_an_analysis_that_cannot_run_is_a_failed_gate_with_the_reason(wages):
    _, contract, _, masked = wages
    bad = _with(contract, {"name": "broken", "table": "wages", "regression": {"formula": "wage ~ grade"}},
                {"name": "too_few", "table": "wages", "regression": {"formula": "wage ~ hours"}})
    tiny = {"wages": masked["wages"].head(2)}
    broken, too_few = analyses_gate(released=tiny, contract=bad, real=masked)
    assert broken == GateResult("analysis:broken", "wages", None, "a regression that runs", False,
                                "cannot run: formula 'wage ~ grade' names column 'grade', which is not in the table")
    assert not too_few.passed and "complete row(s) on the release, too few" in too_few.detail
    (missing,) = analyses_gate(released={"wages": masked["wages"].drop(columns="hours")}, contract=bad.model_copy(
        update={"analyses": bad.analyses[1:]}), real=masked)
    assert missing.detail == "cannot run: column(s) hours missing from the release"
