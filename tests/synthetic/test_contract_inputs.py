"""Bad input: each refused with an error naming the problem, and nothing left in the release store."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from enclave.cli import main
from synthetic import demo, pipeline
from synthetic.contract import ContractError, load_contract


def _dataset(tmp_path, residents_dir, edit_contract=None, edit_csv=None):
    folder = tmp_path / "raw"
    shutil.copytree(residents_dir, folder)
    path = folder / "residents.yaml"
    if edit_contract:
        c = yaml.safe_load(path.read_text(encoding="utf-8"))
        edit_contract(c)
        path.write_text(yaml.safe_dump(c, allow_unicode=True), encoding="utf-8")
    if edit_csv:
        edit_csv(folder / "residents.generated.csv")
    return path


def _refused(settings, store_listing, contract_path, *fragments):
    with pytest.raises(ContractError) as err:
        pipeline.release(settings, contract_path, "masked", progress=False)
    for f in fragments:
        assert f in str(err.value)
    assert store_listing() == []
    return err.value


def test_malformed_csv(settings, store_listing, tmp_path, residents_dir):
    def corrupt(p):
        lines = p.read_text(encoding="utf-8").splitlines()
        lines[5] = lines[5] + ',"extra","fields"'
        p.write_text("\n".join(lines) + "\n", encoding="utf-8")

    path = _dataset(tmp_path, residents_dir, edit_csv=corrupt)
    _refused(settings, store_listing, path, "table 'residents'", "not well-formed CSV", "line 6")


def test_corrupt_parquet(settings, store_listing, tmp_path, enterprises_dir):
    folder = tmp_path / "raw"
    shutil.copytree(enterprises_dir, folder)
    parquet = folder / "enterprises.generated.parquet"
    data = parquet.read_bytes()
    parquet.write_bytes(data[: len(data) // 2])
    _refused(settings, store_listing, folder / "enterprises.yaml", "table 'enterprises'", "not a readable Parquet file")


def test_contract_names_a_missing_column(settings, store_listing, tmp_path, residents_dir):
    def add(c):
        c["tables"]["residents"]["columns"]["blood_type"] = {"role": "measure", "type": "string"}

    path = _dataset(tmp_path, residents_dir, edit_contract=add)
    _refused(settings, store_listing, path, "'blood_type'", "missing from residents.generated.csv")


def test_column_not_described_by_contract(settings, store_listing, tmp_path, residents_dir):
    def drop(c):
        del c["tables"]["residents"]["columns"]["education"]

    path = _dataset(tmp_path, residents_dir, edit_contract=drop)
    _refused(settings, store_listing, path, "'education'", "not described by the contract")


def test_wrong_type_names_column_row_and_value(settings, store_listing, tmp_path, residents_dir):
    def bad_income(p):
        df = pd.read_csv(p, dtype=str)
        df.loc[9, "income"] = "a lot"
        df.to_csv(p, index=False)

    path = _dataset(tmp_path, residents_dir, edit_csv=bad_income)
    _refused(settings, store_listing, path, "column 'income' is declared float", "row 10", "'a lot'")


def test_wrong_type_in_parquet(settings, store_listing, tmp_path, enterprises_dir):
    folder = tmp_path / "raw"
    shutil.copytree(enterprises_dir, folder)
    c = yaml.safe_load((folder / "enterprises.yaml").read_text(encoding="utf-8"))
    c["tables"]["enterprises"]["columns"]["industry"]["type"] = "integer"
    (folder / "enterprises.yaml").write_text(yaml.safe_dump(c, allow_unicode=True), encoding="utf-8")
    _refused(settings, store_listing, folder / "enterprises.yaml", "column 'industry' is declared integer", "object")


def test_empty_table(settings, store_listing, tmp_path, residents_dir):
    def empty(p):
        p.write_text(p.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")

    path = _dataset(tmp_path, residents_dir, edit_csv=empty)
    _refused(settings, store_listing, path, "residents.generated.csv has no rows")


def test_invalid_resident_id_for_derived_fields(settings, store_listing, tmp_path, residents_dir):
    def typo(p):
        df = pd.read_csv(p, dtype=str)
        rid = df.loc[3, "resident_id"]
        df.loc[3, "resident_id"] = rid[:17] + ("1" if rid[17] != "1" else "2")
        df.to_csv(p, index=False)

    path = _dataset(tmp_path, residents_dir, edit_csv=typo)
    _refused(settings, store_listing, path, "column 'resident_id'", "not valid resident IDs", "row 4")


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda c: c["tables"]["residents"]["columns"]["name"].update(treatment="bands"),
         "treatment 'bands' is not allowed for role 'direct_identifier'"),
        (lambda c: c["tables"]["residents"]["columns"]["income"].update(role="quasi_identifier", treatment="truncate", keep=2),
         "treatment 'truncate' needs a column of type string"),
        (lambda c: c["tables"]["residents"]["columns"]["visit_date"].update(entity="nobody"),
         "shifts by entity 'nobody', not a column"),
        (lambda c: c["tables"]["residents"]["columns"]["resident_id"].update(treatment="drop"),
         "key column 'resident_id' must be a direct_identifier"),
        (lambda c: c.update(name="Bad Name"), "name: must be lower-case"),
        (lambda c: c["tables"]["residents"]["columns"]["income"].update(top="p999x"), "'p999x'"),
    ],
)
def test_contract_schema_errors_name_the_problem(tmp_path, residents_dir, edit, fragment):
    path = _dataset(tmp_path, residents_dir, edit_contract=edit)
    with pytest.raises(ContractError) as err:
        load_contract(path)
    assert fragment in str(err.value)


def test_every_problem_is_reported_at_once(settings, store_listing, tmp_path, residents_dir):
    def two(c):
        c["tables"]["residents"]["columns"]["ghost"] = {"role": "measure", "type": "float"}
        c["tables"]["residents"]["columns"]["education"]["type"] = "integer"

    path = _dataset(tmp_path, residents_dir, edit_contract=two)
    err = _refused(settings, store_listing, path, "'ghost'")
    assert len(err.problems) == 1  # missing columns stop type checks of that table


def test_cli_reports_bad_input_and_exits_nonzero(settings, store_listing, tmp_path, residents_dir):
    def empty(p):
        p.write_text(p.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")

    path = _dataset(tmp_path, residents_dir, edit_csv=empty)
    result = CliRunner().invoke(main, ["data", "release", str(path), "--method", "masked"])
    assert result.exit_code == 1
    assert "has no rows" in result.output
    assert store_listing() == []


def test_missing_data_file(settings, store_listing, tmp_path, residents_dir):
    path = _dataset(tmp_path, residents_dir)
    (path.parent / "residents.generated.csv").unlink()
    _refused(settings, store_listing, path, "not found")


def test_generated_label_in_contract():
    assert demo.RESIDENTS_CONTRACT["generated"] and demo.ENTERPRISES_CONTRACT["generated"]
