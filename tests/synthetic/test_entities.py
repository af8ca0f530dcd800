"""Masked releases count people, not rows (issue #14, findings 1, 3, 5 and 9).

Panels are GENERATED: people x years, sorted ids, wages with missing values and outliers.
"""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from enclave.cli import main
from synthetic import privacy

YEARS = (2019, 2020, 2021, 2022, 2023)


def _panel(seed: int = 3) -> pd.DataFrame:
    """60 people in 12 classes of 5 (sex x region x age band), one row per person and year."""
    rng = np.random.default_rng(seed)
    rows = []
    classes = list(itertools.product(["男", "女"], ["北京", "上海", "广东"], [25, 45]))
    for p in range(60):
        sex, region, age = classes[p % len(classes)]
        base = rng.lognormal(11, 0.4)
        for y in YEARS:
            wage = float(np.round(base * rng.uniform(0.9, 1.2), 0))
            if rng.random() < 0.08:
                wage = None  # not reported that year
            elif rng.random() < 0.02:
                wage = wage * 40  # an outlier
            rows.append({"person_id": f"P{p:05d}", "name": f"居民{p}", "sex": sex, "region": region,
                         "age": age + y - 2019, "year": y, "wage": wage})
    return pd.DataFrame(rows)


def _person(pid: str, sex: str, region: str, age: int, wages) -> list[dict]:
    return [{"person_id": pid, "name": f"居民{pid}", "sex": sex, "region": region, "age": age + y - 2019,
             "year": y, "wage": w} for y, w in zip(YEARS, wages)]


def _contract(**privacy_settings) -> dict:
    return {
        "name": "wages",
        "description": "工资面板 (GENERATED)",
        "generated": True,
        "tables": {"wages": {
            "path": "wages.csv",
            "entity_column": "person_id",
            "columns": {
                "person_id": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
                "name": {"role": "direct_identifier", "type": "string", "treatment": "drop"},
                "sex": {"role": "quasi_identifier", "type": "string"},
                "region": {"role": "quasi_identifier", "type": "string"},
                "age": {"role": "quasi_identifier", "type": "integer", "treatment": "bands",
                        "bins": [0, 35, 60, float("inf")]},
                "year": {"role": "measure", "type": "integer"},
                "wage": {"role": "sensitive", "type": "float"},
            },
        }},
        "privacy": {"k": 5, "l": 2, "max_suppressed": 0.1, **privacy_settings},
    }


def _write(folder, df: pd.DataFrame, contract: dict):
    folder.mkdir(parents=True, exist_ok=True)
    # Sorted by id, as registers are.
    df.sort_values(["person_id", "year"]).to_csv(folder / "wages.csv", index=False)
    path = folder / "wages.yaml"
    path.write_text(yaml.safe_dump(contract, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _release(path):
    return CliRunner().invoke(main, ["data", "release", str(path), "--method", "masked"], catch_exceptions=False)


def _published(settings, output: str) -> tuple[pd.DataFrame, dict]:
    """The released table and the manifest of the release the CLI says it published."""
    name = re.search(r"published (wages@\d+)", output).group(1)
    root = settings.release_store / name
    return pd.read_parquet(root / "data" / "wages.parquet"), json.loads((root / "manifest.json").read_text("utf-8"))


QIS = ["sex", "region", "age"]


def test_a_person_alone_in_a_class_is_suppressed_although_rows_count_five(settings, tmp_path):
    # One person in 深圳: five rows (k=5 over rows) with five different wages (l=5), one person.
    alone = _person("P90000", "女", "深圳", 25, [8000.0, 8200.0, 8500.0, 9000.0, 9100.0])
    df = pd.concat([_panel(), pd.DataFrame(alone)], ignore_index=True)
    out = _release(_write(tmp_path / "raw", df, _contract()))
    assert out.exit_code == 0, out.output
    released, m = _published(settings, out.output)
    assert not released["region"].eq("深圳").any()
    # Every class holds at least k people, counted by pseudonym.
    assert released.groupby(QIS)["person_id"].nunique().min() >= 5
    report = m["masking"]["wages"]
    assert (report["suppressed_rows"], report["suppressed_entities"], report["entities_in"]) == (5, 1, 61)
    share = next(g for g in m["gates"] if g["gate"] == "suppressed_share")
    assert "5 of 305 rows, 1 of 61 distinct 'person_id' entities" in share["detail"]
    k = next(g for g in m["gates"] if g["gate"] == "k_anonymity")
    assert k["value"] >= 5 and "distinct 'person_id' entities" in k["detail"]


def test_a_class_whose_only_known_wage_is_one_persons_is_suppressed(settings, tmp_path):
    # Five people in 深圳; only one of them ever reported a wage. Counting an empty wage as a value
    # gave l=6; the one known wage is that person's, so l=1.
    people = [_person(f"P9000{i}", "女", "深圳", 25, [None] * 5) for i in range(4)]
    people.append(_person("P90009", "女", "深圳", 25, [8000.0, 8200.0, 8500.0, 9000.0, 9100.0]))
    df = pd.concat([_panel(), pd.DataFrame([r for p in people for r in p])], ignore_index=True)
    out = _release(_write(tmp_path / "raw", df, _contract()))
    assert out.exit_code == 0, out.output
    released, m = _published(settings, out.output)
    assert not released["region"].eq("深圳").any()
    known = released.dropna(subset=["wage"])
    assert known.groupby(QIS)["person_id"].nunique().min() >= 2
    l_gate = next(g for g in m["gates"] if g["gate"] == "l_diversity")
    assert l_gate["value"] >= 2 and "missing values do not count" in l_gate["detail"]


def test_missing_values_may_count_towards_l_when_the_contract_says_so(tmp_path):
    df = pd.DataFrame({"q": ["a"] * 6, "s": [None, None, None, 1.0, 1.0, None],
                       "who": ["x", "y", "z", "x", "x", "w"]})
    assert privacy.l_diversity(df, ["q"], ["s"], df["who"]) == 1
    assert privacy.l_diversity(df, ["q"], ["s"], df["who"], missing_counts=True) == 2
    assert privacy.l_diversity(df.assign(s=None), ["q"], ["s"], df["who"]) == 0


def _measure_contract(accepted: str | None = None) -> dict:
    c = _contract()
    savings = {"role": "measure", "type": "float"}
    if accepted:
        savings["uniqueness_accepted"] = accepted
    c["tables"]["wages"]["columns"]["savings"] = savings
    return c


def test_a_kept_continuous_measure_making_people_unique_is_refused_then_accepted(settings, tmp_path):
    df = _panel()
    rng = np.random.default_rng(5)
    df["savings"] = np.round(rng.lognormal(10, 1, size=len(df)), 2)
    out = _release(_write(tmp_path / "raw", df, _measure_contract()))
    assert out.exit_code == 1
    assert "unique_entities [wages]: 1.0 (needs <= 0.0)" in out.output
    assert "measures making entities unique" in out.output and "'savings' 100.0%" in out.output
    assert "'year'" not in out.output.split("measures making entities unique")[1]  # year alone is harmless
    assert "published" not in out.output

    reason = "储蓄是本研究的结果变量，不在任何公开来源中 (savings are the outcome studied; in no public source)"
    out = _release(_write(tmp_path / "raw", df, _measure_contract(reason)))
    assert out.exit_code == 0, out.output
    _, m = _published(settings, out.output)
    gate = next(g for g in m["gates"] if g["gate"] == "unique_entities")
    assert gate["passed"] and gate["value"] == 0.0
    assert reason in gate["detail"] and "with the accepted measures too: 100.0%" in gate["detail"]
    # The manifest keeps the reason with the contract.
    assert m["contract"]["tables"]["wages"]["columns"]["savings"]["uniqueness_accepted"] == reason


def test_a_suppression_refusal_names_the_quasi_identifier_responsible(settings, tmp_path):
    df = _panel()
    # Exact ages (spread within each group), kept as they are: nearly every person alone in a class.
    df["age"] += df["person_id"].str[1:].astype(int) % 7
    c = _contract()
    c["tables"]["wages"]["columns"]["age"] = {"role": "quasi_identifier", "type": "integer"}
    out = _release(_write(tmp_path / "raw", df, c))
    assert out.exit_code == 1
    line = next(x for x in out.output.splitlines() if x.strip().startswith("suppressed_share [wages]"))
    assert re.search(r"classes with fewer than k=5 entities: [1-6]\d entities", line)
    assert "classes with l < 2 on 'wage'" in line
    # Dropping age would leave every class with 10 people: it is named first, with 0 suppressed.
    assert "suppressed if a quasi-identifier were dropped (or coarsened): without 'age' 0 of 60" in line


# -- the counting functions against brute-force pandas ------------------------------------------


def _random_panel(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    people = int(rng.integers(3, n))
    df = pd.DataFrame({
        "who": rng.choice([f"p{i}" for i in range(people)] + [None], size=n),
        "a": rng.choice(["x", "y", None], size=n),
        "b": rng.integers(0, 3, size=n),
        "s": rng.choice([1.0, 2.0, 3.0, np.nan], size=n, p=[0.3, 0.2, 0.1, 0.4]),
        "t": rng.choice(["甲", "乙", None], size=n),
    })
    return df


def _brute(df: pd.DataFrame, qis: list[str], sensitive: list[str], missing_counts: bool) -> tuple[int, int]:
    d = df.astype(object).where(df.notna(), "<missing>")  # missing is a value of quasi-identifiers
    k = min(len(set(g["who"])) for _, g in d.groupby(qis))
    l = None
    for _, g in d.groupby(qis):
        for s in sensitive:
            held = g if missing_counts else g[g[s] != "<missing>"]
            here = min(held[s].nunique(), held["who"].nunique())
            l = here if l is None else min(l, here)
    return k, l


@pytest.mark.parametrize("seed", range(12))
def test_entity_counts_agree_with_brute_force_groupby(seed):
    df = _random_panel(seed)
    for qis in (["a"], ["a", "b"], ["b"]):
        for sens, missing in itertools.product((["s"], ["s", "t"]), (False, True)):
            k, l = _brute(df, qis, sens, missing)
            assert privacy.k_anonymity(df, qis, df["who"]) == k
            assert privacy.l_diversity(df, qis, sens, df["who"], missing) == l
            kept = privacy.suppress(df, qis, sens, 3, 2, df["who"], missing)
            if len(kept.kept):
                k_kept, l_kept = _brute(kept.kept, qis, sens, missing)
                assert k_kept >= 3 and l_kept >= 2
            lost = df.loc[~df.index.isin(kept.kept.index), "who"].astype(object).where(lambda s: s.notna(), "<m>")
            assert kept.suppressed_entities == lost.nunique()
            assert kept.entities == df["who"].nunique(dropna=False)
    # Uniqueness: entities having a row whose (a, b, s) no other entity shares.
    d = df.astype(object).where(df.notna(), "<missing>")
    owners = d.groupby(["a", "b", "s"])["who"].transform("nunique")
    expected = d.loc[owners == 1, "who"].nunique()
    got = privacy.unique_entities(df, ["a", "b", "s"], df["who"])
    assert (got.unique, got.entities) == (expected, d["who"].nunique())


def test_without_an_entity_column_every_row_is_an_entity():
    df = _random_panel(1)
    k, l = _brute(df.assign(who=range(len(df))), ["a", "b"], ["s"], True)
    assert privacy.k_anonymity(df, ["a", "b"]) == k
    assert privacy.l_diversity(df, ["a", "b"], ["s"], missing_counts=True) == l
    assert privacy.unique_entities(df, ["a", "b"]).entities == len(df)


def test_uniqueness_names_a_combination_of_measures_when_none_alone_does_it():
    from synthetic.contract import Contract
    from synthetic.gates.masked import unique_entities

    contract = Contract.model_validate({"name": "c", "tables": {"t": {"path": "t.csv", "columns": {
        "sex": {"role": "quasi_identifier", "type": "string"},
        "x": {"role": "measure", "type": "integer"}, "y": {"role": "measure", "type": "integer"}}}}})
    # Each value of x and of y is shared within each sex; the pairs (x, y) are not.
    df = pd.DataFrame({"sex": ["女"] * 4 + ["男"] * 4, "x": [1, 1, 2, 2] * 2, "y": [1, 2, 1, 2] * 2})
    (result,) = unique_entities(released={"t": df}, contract=contract, raw={"t": df})
    assert not result.passed and result.value == 1.0
    assert "no measure alone does it, their combination does: coarsen some of ['x', 'y']" in result.detail
