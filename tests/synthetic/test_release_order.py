"""Releases keep nothing of the raw file's order, share no pseudonym unless the holder declares it,
and every attempt, published or refused, is on the holder's record (issue #14, findings 2 and 7)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import yaml
from click.testing import CliRunner

from enclave.cli import main
from synthetic import keys, masking, release_log


def _release(contract, method="masked", *extra):
    return CliRunner().invoke(main, ["data", "release", str(contract), "--method", method, *extra],
                              catch_exceptions=False)


def _people_sorted_by_id(folder, n=600, seed=3):
    """A register sorted by person id, as exported from a database: id, sex, age band, region, wage."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "person_id": [f"P{i:06d}" for i in range(1, n + 1)],
        "sex": rng.choice(["男", "女"], n),
        "age": rng.integers(18, 70, n),
        "region": rng.choice(["北京", "上海", "天津"], n),
        "wage": np.round(rng.lognormal(8.5, 0.6, n), -2),
    })
    df.loc[rng.choice(n, 40, replace=False), "wage"] = np.nan
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / "people.csv", index=False)
    contract = {
        "name": "people",
        "tables": {"people": {"path": "people.csv", "primary_key": "person_id", "columns": {
            "person_id": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
            "sex": {"role": "quasi_identifier", "type": "string"},
            "age": {"role": "quasi_identifier", "type": "integer", "treatment": "bands", "bins": [18, 30, 45, 60, 70]},
            "region": {"role": "quasi_identifier", "type": "string"},
            "wage": {"role": "sensitive", "type": "float", "treatment": "bands",
                     "bins": [0, 3000, 6000, 10000, 20000, float("inf")]},
        }}},
        "privacy": {"k": 5, "l": 1},
    }
    path = folder / "people.yaml"
    path.write_text(yaml.safe_dump(contract, allow_unicode=True), encoding="utf-8")
    return df, path


def test_pseudonyms_in_release_order_do_not_map_back_to_sorted_ids(settings, tmp_path):
    raw, contract = _people_sorted_by_id(tmp_path / "raw")
    out = _release(contract)
    assert out.exit_code == 0, out.output
    released = pd.read_csv(settings.release_store / "people@1" / "data" / "people.csv", dtype=str)

    # The attack: the raw ids are known in sorted order; pair them with the pseudonyms in the
    # order the release lists them. Kept in file order, every pair would be right.
    kept = raw[raw["person_id"].isin(_raw_ids_of(settings, contract, released))]
    guesses = dict(zip(released["person_id"], sorted(kept["person_id"])))
    truth = dict(zip(_pseudonyms(settings, contract, kept["person_id"]), kept["person_id"]))
    right = sum(truth[p] == guess for p, guess in guesses.items())
    assert right <= 5, f"{right} of {len(guesses)} pseudonyms mapped back to their id"

    # No released column is monotone in the raw key, taken in release order.
    raw_order = pd.Series(range(len(raw)), index=raw["person_id"]).loc[
        [truth[p] for p in released["person_id"]]].to_numpy()
    assert not (np.diff(raw_order) > 0).all() and not (np.diff(raw_order) < 0).all()
    for column in released.columns:
        codes = pd.factorize(released[column])[0]
        assert abs(pd.Series(codes).corr(pd.Series(raw_order), method="spearman")) < 0.2, column


def _pseudonyms(settings, contract_path, ids: pd.Series, release="people@1") -> pd.Series:
    from synthetic.contract import load_contract

    key = keys.release_key(settings.secrets_dir, load_contract(contract_path), release)
    return masking.pseudonymise(ids, key)


def _raw_ids_of(settings, contract_path, released) -> list[str]:
    raw = pd.read_csv(contract_path.parent / "people.csv", dtype=str)
    pseudonyms = _pseudonyms(settings, contract_path, raw["person_id"])
    return raw.loc[pseudonyms.isin(released["person_id"]), "person_id"].tolist()


def test_two_releases_share_no_pseudonym_unless_the_contract_names_a_key(settings, tmp_path):
    raw, contract = _people_sorted_by_id(tmp_path / "raw")
    assert _release(contract).exit_code == 0
    assert _release(contract).exit_code == 0
    first, second = (pd.read_csv(settings.release_store / r / "data" / "people.csv", dtype=str)
                     for r in ("people@1", "people@2"))
    assert not set(first["person_id"]) & set(second["person_id"])
    # The same rows, in another order: the row order is drawn per release too.
    assert sorted(first["sex"] + first["age"]) == sorted(second["sex"] + second["age"])
    assert first["person_id"].tolist() != second["person_id"].tolist()

    linked = yaml.safe_load(contract.read_text(encoding="utf-8")) | {"pseudonym_key": "people-panel"}
    contract.write_text(yaml.safe_dump(linked, allow_unicode=True), encoding="utf-8")
    assert _release(contract).exit_code == 0
    assert _release(contract).exit_code == 0
    third, fourth = (pd.read_csv(settings.release_store / r / "data" / "people.csv", dtype=str)
                     for r in ("people@3", "people@4"))
    assert set(third["person_id"]) == set(fourth["person_id"])
    m = json.loads((settings.release_store / "people@3" / "manifest.json").read_text(encoding="utf-8"))
    assert m["pseudonym_key"]["name"] == "people-panel"
    m = json.loads((settings.release_store / "people@1" / "manifest.json").read_text(encoding="utf-8"))
    assert m["pseudonym_key"]["name"] == "people@1 (this release's own)"


def test_every_attempt_is_on_the_holders_record_refused_or_published(settings, tmp_path):
    raw, contract = _people_sorted_by_id(tmp_path / "raw")
    strict = yaml.safe_load(contract.read_text(encoding="utf-8"))
    strict["privacy"] = {"k": 200, "l": 1, "max_suppressed": 0.01}
    contract.write_text(yaml.safe_dump(strict, allow_unicode=True), encoding="utf-8")
    refused = _release(contract)
    assert refused.exit_code == 1 and "release refused" in refused.output
    strict["privacy"] = {"k": 5, "l": 1}
    contract.write_text(yaml.safe_dump(strict, allow_unicode=True), encoding="utf-8")
    assert _release(contract).exit_code == 0

    log = release_log.entries(settings.holder_dir, "people")
    assert [(e["release"], e["outcome"]) for e in log] == [("people@1", "refused"), ("people@1", "published")]
    first, second = log
    assert first["contract"]["sha256"] != second["contract"]["sha256"]
    assert not next(g for g in first["gates"] if g["gate"] == "suppressed_share")["passed"]
    # The refused attempt's report is the holder's, outside the store, and says it was refused.
    report = first["report"]
    assert report.startswith(str(settings.holder_dir / "refused"))
    assert "refused" in open(report, encoding="utf-8").read().lower()
    assert sorted(p.name for p in settings.release_store.iterdir()) == ["people@1"]
