"""Bad input: each refused with an error naming the problem, and nothing left in the release store."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from enclave.cli import main
from synthetic import demo, pipeline
from synthetic.contract import ContractError, load_contract, load_tables


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
    # df.loc[9] is the file's line 11: the header is line 1.
    _refused(settings, store_listing, path, "column 'income' is declared float", "line 11 'a lot'")


def test_wrong_type_in_parquet(settings, store_listing, tmp_path, enterprises_dir):
    folder = tmp_path / "raw"
    shutil.copytree(enterprises_dir, folder)
    c = yaml.safe_load((folder / "enterprises.yaml").read_text(encoding="utf-8"))
    c["tables"]["enterprises"]["columns"]["industry"]["type"] = "integer"
    (folder / "enterprises.yaml").write_text(yaml.safe_dump(c, allow_unicode=True), encoding="utf-8")
    _refused(settings, store_listing, folder / "enterprises.yaml", "column 'industry' is declared integer",
             "holds text values (first: row 1 ")


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
    _refused(settings, store_listing, path, "column 'resident_id'", "1 value(s) are not valid resident IDs: line 5 '")


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


# -- messages a holder can act on: file lines, every bad value, the duplicates' lines, names ---------


def _panel_dataset(folder, fmt="csv", edit=None):
    """A small wage panel with Chinese column names: several rows per person, ids sorted."""
    folder.mkdir(exist_ok=True)
    people = [f"P{i:04d}" for i in range(1, 13) for _ in range(3)]
    df = pd.DataFrame({
        "人员编号": people,
        "记录号": [f"R{i:05d}" for i in range(len(people))],
        "年份": [str(2018 + i % 3) for i in range(len(people))],
        "月收入": [str(3000 + 250 * i) if i % 7 else "" for i in range(len(people))],
        "备注": ["复诊，\n血压平稳" if i == 0 else "无" for i in range(len(people))],
    })
    if edit:
        edit(df)
    path = folder / f"panel.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path, index=False)
    contract = {
        "name": "panel", "generated": True,
        "tables": {"wages": {
            "path": path.name, "primary_key": "记录号", "entity_column": "人员编号",
            "columns": {
                "人员编号": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
                "记录号": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
                "年份": {"role": "quasi_identifier", "type": "integer"},
                "月收入": {"role": "measure", "type": "float"},
                "备注": {"role": "free_text", "type": "string"},
            },
        }},
    }
    (folder / "panel.yaml").write_text(yaml.safe_dump(contract, allow_unicode=True), encoding="utf-8")
    return folder / "panel.yaml"


def test_every_bad_value_is_listed_by_its_file_line_through_the_cli(settings, store_listing, tmp_path):
    def typos(df):
        for i, value in zip((4, 9, 10, 20, 25, 30, 33), ("五千", "n/a", "3,500", "?", "约4000", "-", "x")):
            df.loc[i, "月收入"] = value

    path = _panel_dataset(tmp_path / "raw", edit=typos)
    result = CliRunner().invoke(main, ["data", "release", str(path), "--method", "masked"])
    assert result.exit_code == 1
    # Row 0's note holds a line break inside quotes, so row i sits on line i + 3 of the file.
    assert ("column '月收入' is declared float but 7 value(s) are not numbers: line 7 '五千', line 12 'n/a',"
            " line 13 '3,500', line 23 '?', line 28 '约4000', and 2 more") in result.output
    lines = (path.parent / "panel.csv").read_text(encoding="utf-8").splitlines()
    assert lines[7 - 1].split(",")[3] == "五千" and lines[28 - 1].split(",")[3] == "约4000"
    assert store_listing() == []


def test_a_duplicate_primary_key_names_the_lines_of_each_duplicate(tmp_path):
    def duplicates(df):
        df.loc[[5, 17], "记录号"] = "R00002"
        df.loc[30, "记录号"] = "R00029"

    path = _panel_dataset(tmp_path / "raw", edit=duplicates)
    with pytest.raises(ContractError) as err:
        load_tables(load_contract(path), path.parent)
    assert ("primary key '记录号' has 2 value(s) on more than one row:"
            " 'R00002' on lines 5, 8, 20; 'R00029' on lines 32, 33") in str(err.value)


def test_parquet_rows_are_counted_from_one(tmp_path):
    def duplicates(df):
        df.loc[3, "记录号"] = "R00000"
        df.loc[6, "年份"] = None

    path = _panel_dataset(tmp_path / "raw", fmt="parquet", edit=duplicates)
    with pytest.raises(ContractError) as err:
        load_tables(load_contract(path), path.parent)
    assert "'R00000' on rows 1, 4" in str(err.value)
    assert "column '年份' is declared integer but holds text values (first: row 1 '2018')" in str(err.value)


def test_chinese_column_names_and_values_are_read(tmp_path):
    path = _panel_dataset(tmp_path / "raw")
    tables = load_tables(load_contract(path), path.parent)
    assert tables["wages"]["月收入"].dtype == "float64" and tables["wages"]["备注"][0] == "复诊，\n血压平稳"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["tables"]["residents"]["columns"]["education"].update(role="quasi"),
         "tables.residents.columns.education.role: 'quasi' is not allowed (allowed: 'direct_identifier',"
         " 'quasi_identifier', 'sensitive', 'free_text', 'date' or 'measure')"),
        (lambda c: c["tables"]["residents"]["columns"]["income"].update(treatment="round"),
         "tables.residents.columns.income.treatment: 'round' is not allowed (allowed: 'keep', 'drop',"),
        (lambda c: c["tables"]["residents"]["columns"]["income"].update(type="int"),
         "tables.residents.columns.income.type: 'int' is not allowed (allowed: 'string', 'integer', 'float',"),
        (lambda c: c["tables"]["residents"]["columns"]["income"].update(treatmnt="keep"),
         "tables.residents.columns.income: unknown key 'treatmnt' (allowed: role, type, treatment,"),
        (lambda c: c.update(privacy={"k": 5, "missing_counts_toward_l": True}),
         "privacy: unknown key 'missing_counts_toward_l' (allowed: k, l, max_suppressed, missing_counts_towards_l,"),
        (lambda c: c["tables"]["residents"].update(entity_column="人员编号"),
         "table 'residents': entity_column '人员编号' is not one of its columns"),
        (lambda c: c["tables"]["residents"].update(sequence_index="visit_date"),
         "table 'residents': sequence_index needs entity_column (whose rows it orders)"),
        (lambda c: c.update(synthesis={"seed": "七"}),
         "synthesis.seed: Input should be a valid integer, unable to parse string as an integer (given: '七')"),
        (lambda c: c["tables"]["residents"]["columns"].update({"1st visit": {"role": "measure", "type": "float"}}),
         "column names must be identifiers (letters, Chinese characters included,"),
    ],
)
def test_schema_errors_name_the_value_given_and_what_is_allowed(tmp_path, residents_dir, edit, message):
    path = _dataset(tmp_path, residents_dir, edit_contract=edit)
    with pytest.raises(ContractError) as err:
        load_contract(path)
    assert message in str(err.value)


# -- the contract reference, docs/contracts.md --------------------------------------------------------


def test_the_contract_reference_is_current_and_its_example_is_a_sound_contract():
    import subprocess
    import sys

    from synthetic import contract_reference
    from synthetic.contract import Contract

    done = subprocess.run([sys.executable, "-m", "synthetic.contract_reference", "--check"],
                          cwd=contract_reference.DOC_PATH.parent.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    page = contract_reference.DOC_PATH.read_text(encoding="utf-8")
    example = Contract.model_validate(yaml.safe_load(page.split("```yaml\n")[1].split("```")[0]))
    assert example.tables["wages"].entity_column == "person_id" and example.analyses[0].kind == "regression"
    # Every key at every level, with its default.
    for path, model in contract_reference._sections(Contract, ""):
        heading = f"### `{path}`" if path else "### Top level"
        section = page.split(heading + "\n")[1].split("\n### ")[0]
        for key in model.model_fields:
            assert f"| `{key}` |" in section, (path, key)
    for row in ("| `entity_column` |", "| `sequence_index` |", "| `missing_counts_towards_l` | `true` or `false` | `false` |",
                "| `seed` | integer | `0` |", "| `max_copy_excess` | number, ≥ 0, ≤ 1 | `0.01` |"):
        assert row in page
    for section in ("## Panel data", "## Missing values", "## Band labels", "## Uniqueness", "## Pseudonym keys",
                    "## Analyses", "`[lo, inf)`"):
        assert section in page


def test_a_stale_contract_reference_is_caught(monkeypatch, capsys):
    from synthetic import contract_reference
    from synthetic.contract import Privacy

    field = Privacy.model_fields["k"]
    monkeypatch.setattr(field, "description", field.description + " Changed.")
    assert contract_reference.main(["--check"]) == 1
    assert "is out of date: run `python -m synthetic.contract_reference`" in capsys.readouterr().err
