"""Masking treatments, keyed pseudonyms, and k/l checks that agree with pycanon."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synthetic import masking, privacy
from synthetic.contract import Column


def test_pseudonyms_stable_with_the_same_key_and_different_with_another(tmp_path):
    key = masking.load_or_create_key(tmp_path / "secrets")
    again = masking.load_or_create_key(tmp_path / "secrets")
    other = masking.load_or_create_key(tmp_path / "secrets", "other-project")
    assert key == again and key != other
    assert (tmp_path / "secrets" / "pseudonym-default.key").stat().st_mode & 0o077 == 0
    ids = pd.Series(["110105198503071230", "13812345678", None, "110105198503071230"])
    a, b, c = (masking.pseudonymise(ids, k) for k in (key, again, other))
    assert a.tolist() == b.tolist()
    assert a[0] == a[3] and a[0] != a[1] and a[2] is None
    assert all(x != y for x, y in zip(a.dropna(), c.dropna()))
    assert all(len(x) == masking.PSEUDONYM_HEX for x in a.dropna())
    # Same entity in another table (other dtype, spacing) maps to the same pseudonym.
    assert masking.pseudonymise(pd.Series([" 110105198503071230 "]), key)[0] == a[0]


def test_date_offsets_are_per_entity_bounded_and_nonzero():
    key = b"k" * 32
    entities = pd.Series([f"e{i % 300}" for i in range(3000)])
    offsets = masking.date_offsets(entities, key, max_days=30)
    per_entity = offsets.groupby(entities).nunique()
    assert (per_entity == 1).all()
    assert offsets.between(-30, 30).all() and (offsets != 0).all()
    assert offsets.nunique() > 40  # spread over the range, not one shift for everyone
    assert masking.date_offsets(entities, b"j" * 32, 30).ne(offsets).any()


def test_bands_truncate_top_bottom_and_derive():
    df = pd.DataFrame({
        "age": pd.Series([3, 29, 30, 64, 90, None], dtype="Int64"),
        "region": ["110105", "310104", "440106", "110101", "330106", None],
        "income": [1.0, 50.0, 60.0, 70.0, 80.0, 10_000.0],
        "rid": ["11010519491231002X"] * 6,
    })
    rep = masking.TableReport(rows_in=len(df))
    key = b"k" * 32
    age = masking.mask_column("age", Column(role="quasi_identifier", type="integer", treatment="bands",
                                            bins=[0, 30, 65, float("inf")]), df, key, False, rep)["age"]
    assert age.tolist() == ["[0, 30)", "[0, 30)", "[30, 65)", "[30, 65)", "[65, inf)", None]
    region = masking.mask_column("region", Column(role="quasi_identifier", type="string", treatment="truncate",
                                                  keep=2), df, key, False, rep)["region"]
    assert region.tolist() == ["11", "31", "44", "11", "33", None]
    income = masking.mask_column("income", Column(role="measure", type="float", treatment="top_bottom",
                                                  bottom=10, top="p80"), df, key, False, rep)["income"]
    assert income.min() == 10 and income.max() == pytest.approx(df["income"].quantile(0.8))
    derived = masking.mask_column("rid", Column(role="direct_identifier", type="string", treatment="derive",
                                                derive=["birth_year_band", "sex", "region"], region_level=4),
                                  df, key, False, rep)
    assert set(derived) == {"rid_birth_year_band", "rid_sex", "rid_region"}  # not a key: ID itself dropped
    assert derived["rid_birth_year_band"][0] == "[1940, 1950)"
    assert derived["rid_sex"][0] == "F" and derived["rid_region"][0] == "1101"


def test_bands_use_one_interval_notation():
    assert masking.band_labels([-5, 5, 9.5, 16, float("inf")]) == ["[-5, 5)", "[5, 9.5)", "[9.5, 16)", "[16, inf)"]
    assert masking.band_labels([float("-inf"), 0, 10]) == ["(-inf, 0)", "[0, 10)"]
    values = pd.Series([-5, 4, 5, 9.5, 100, None])
    assert masking.bands(values, [-5, 5, 9.5, float("inf")]).tolist() == [
        "[-5, 5)", "[-5, 5)", "[5, 9.5)", "[9.5, inf)", "[9.5, inf)", None]


def test_a_shifted_date_uses_the_tables_entity_column():
    from synthetic.contract import Table

    t = Table.model_validate({"path": "x.csv", "entity_column": "pid", "columns": {
        "pid": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
        "seen": {"role": "date", "type": "date", "treatment": "shift", "max_days": 30}}})
    df = pd.DataFrame({"pid": ["a", "a", "b"], "seen": pd.to_datetime(["2024-01-01", "2024-03-01", "2024-01-01"])})
    shifted = masking.mask_column("seen", t.columns["seen"], df, b"k" * 32, False,
                                  masking.TableReport(rows_in=3), shift_entity=t.shift_entity("seen"))["seen"]
    offsets = (shifted - df["seen"]).dt.days
    assert offsets[0] == offsets[1] and offsets[0] != 0


def test_redaction_removes_patterns_and_the_rows_own_names():
    df = pd.DataFrame({
        "name": ["张伟", "李娜"],
        "notes": ["张伟来电，电话13812345678", "复诊，血压平稳"],
    })
    rep = masking.TableReport(rows_in=2)
    out = masking.mask_column("notes", Column(role="free_text", type="string"), df, b"k" * 32, False, rep,
                              direct=["name"])["notes"]
    assert out.tolist() == ["[name]来电，电话[mobile]", "复诊，血压平稳"]
    assert rep.redacted["notes"] == {"mobile": 1, "own_direct_identifiers": 1}


def _random_table(seed: int, n: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "band": rng.choice(["[18, 30)", "[30, 45)", "[45, 65)", "[65, inf)"], size=n),
        "sex": rng.choice(["F", "M"], size=n),
        "region": rng.choice([f"{i:02d}" for i in range(11, 11 + rng.integers(3, 30))], size=n),
        "year": rng.integers(2000, 2000 + rng.integers(2, 8), size=n),
        "diagnosis": rng.choice(["a", "b", "c", "d"], size=n, p=[0.7, 0.2, 0.07, 0.03]),
        "outcome": rng.choice(["x", "y"], size=n, p=[0.9, 0.1]),
    })


@pytest.mark.parametrize("seed", range(6))
def test_k_and_l_agree_with_pycanon(pycanon, seed):
    from pycanon import anonymity

    df = _random_table(seed)
    for qis in (["band", "sex"], ["band", "sex", "region"], ["band", "sex", "region", "year"]):
        assert privacy.k_anonymity(df, qis) == anonymity.k_anonymity(df, qis)
        for sens in (["diagnosis"], ["outcome"], ["diagnosis", "outcome"]):
            assert privacy.l_diversity(df, qis, sens) == anonymity.l_diversity(df, qis, sens)
    suppressed = privacy.suppress(df, ["band", "sex", "region", "year"], ["diagnosis"], k=5, l=2)
    kept = suppressed.kept.reset_index(drop=True)  # pycanon indexes rows by position
    assert anonymity.k_anonymity(kept, ["band", "sex", "region", "year"]) >= 5
    assert anonymity.l_diversity(kept, ["band", "sex", "region", "year"], ["diagnosis"]) >= 2
    assert suppressed.suppressed_rows == len(df) - len(kept)


def test_suppression_removes_only_offending_classes():
    df = pd.DataFrame({"q": ["a"] * 6 + ["b"] * 6 + ["c"] * 2, "s": ["x", "y"] * 3 + ["x"] * 6 + ["x", "y"]})
    result = privacy.suppress(df, ["q"], ["s"], k=5, l=2)
    assert sorted(result.kept["q"].unique()) == ["a"]  # b: one value of s; c: only two rows
    assert (result.k, result.l, result.suppressed_rows) == (6, 2, 8)


def test_empty_values_form_their_own_class():
    df = pd.DataFrame({"q": ["a", "a", None, None, None], "s": ["x", "y", "x", "y", "y"]})
    assert privacy.k_anonymity(df, ["q"]) == 2
    assert privacy.class_sizes(df, ["q"]).tolist() == [2, 2, 3, 3, 3]


def test_pseudonym_is_the_documented_hmac():
    import hashlib
    import hmac

    key = b"k" * 32
    expected = hmac.new(key, b"pseudonym\0" + b"11010519491231002x", hashlib.sha256).hexdigest()[:20]
    assert masking.pseudonymise(pd.Series([" 11010519491231002X"]), key)[0] == expected
    assert masking.pseudonymise(pd.Series([42]), key)[0] == masking.pseudonymise(pd.Series(["42"]), key)[0]
