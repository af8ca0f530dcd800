"""Notebooks are checked as strictly as files: each table a notebook shows fails where its CSV fails.

One small notebook is executed once with nbclient in the operators' environment (``.venv-sandbox``,
the kernel operators use), so every output is what pandas and IPython really produce: HTML
frames (plain, MultiIndex, truncated, Styler), printed and ``to_string`` frames, a Series'
repr, Markdown and JSON displays. Each case cell also writes the same frame with ``to_csv``; the
test then checks a notebook holding just that cell and the CSV, and asserts the same worst status.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from enclave.exports import checks, files
from synthetic.identifiers import resident_id_check_char

REPO = Path(__file__).resolve().parents[2]
SANDBOX_PYTHON = REPO / ".venv-sandbox" / "bin" / "python"
CAP = 16 * 2**20
RID17 = "11010519800101123"
RESIDENT_ID = RID17 + resident_id_check_char(RID17)

# Residents as an operator sees them: Chinese names and values, a sorted id column, missing ages and
# occupations, an income outlier, and a district (东城区) with only three residents.
SETUP = """
import json
import numpy as np
import pandas as pd
from pathlib import Path
from IPython.display import JSON, Markdown, display

OUT = Path({out!r})
rng = np.random.default_rng(13)
n = 60
residents = pd.DataFrame({{
    "居民编号": [f"R{{110101000 + 37 * i}}" for i in range(n)],
    "区县": ["东城区"] * 3 + list(rng.choice(["西城区", "朝阳区"], n - 3)),
    "性别": rng.choice(["女", "男"], n),
    "年龄": rng.integers(18, 90, n).astype(float),
    "职业": rng.choice(["教师", "工程师", "护士", "个体经营", None], n),
    "月收入": rng.integers(3000, 30000, n),
}}).sample(frac=1, random_state=1).sort_values("居民编号")
residents.loc[residents.index[[4, 17, 33]], "年龄"] = np.nan
residents.loc[residents.index[9], "月收入"] = 980000
(OUT / "released").mkdir()
residents.to_csv(OUT / "released" / "residents.csv", index=False)

def save(frame, name, **kw):
    frame.to_csv(OUT / f"{{name}}.csv", **kw)
"""

# name -> (code of one cell, the status its notebook and its CSV must both have)
CASES = {
    "records_html": ("save(residents.head(20), 'records_html')\nresidents.head(20)", "fail"),
    "records_print": ("save(residents.head(20), 'records_print')\nprint(residents.head(20))", "fail"),
    "records_to_string": ("save(residents.head(20), 'records_to_string', index=False)\n"
                          "print(residents.head(20).to_string(index=False))", "fail"),
    "records_truncated_html": ("save(residents, 'records_truncated_html')\n"
                               "with pd.option_context('display.max_rows', 10, 'display.max_columns', 5):\n"
                               "    display(residents)", "fail"),
    "records_truncated_text": ("save(residents, 'records_truncated_text')\n"
                               "with pd.option_context('display.max_rows', 10, 'display.max_columns', 5):\n"
                               "    print(residents)", "fail"),
    "records_printed_csv": ("save(residents.head(20), 'records_printed_csv')\nprint(residents.head(20).to_csv())",
                            "fail"),
    "records_to_dict": ("save(residents.head(20), 'records_to_dict', index=False)\n"
                        "residents.head(20).to_dict('records')", "fail"),
    "records_styler": ("save(residents.head(20), 'records_styler')\n"
                       "residents.head(20).style.highlight_max(subset=['月收入']).format(precision=1)", "fail"),
    "records_markdown": ("save(residents.head(20), 'records_markdown')\n"
                         "display(Markdown(residents.head(20).to_markdown()))", "fail"),
    "records_json": ("save(residents.head(20), 'records_json', index=False)\n"
                     "display(JSON(json.loads(residents.head(20).to_json(orient='records', force_ascii=False))))",
                     "fail"),
    "group_count_html": ("counts = residents.groupby('区县').size().reset_index(name='人数')\n"
                         "save(counts, 'group_count_html', index=False)\ncounts", "fail"),
    "group_count_series": ("save(residents['区县'].value_counts(), 'group_count_series')\n"
                           "residents['区县'].value_counts()", "fail"),
    "group_count_multiindex": ("g = residents.groupby(['区县', '性别'])['月收入'].agg(['count', 'median'])\n"
                               "save(g, 'group_count_multiindex')\ng", "fail"),
    "crosstab_multiindex_columns": (
        "ct = pd.crosstab(residents['区县'], [residents['性别'], residents['年龄'] >= 60])\n"
        "flat = ct.copy()\nflat.columns = [' / '.join(map(str, c)) for c in ct.columns]\n"
        "save(flat, 'crosstab_multiindex_columns')\nct", "fail"),
    "crosstab_printed": ("ct = pd.crosstab(residents['区县'], residents['性别'])\n"
                         "save(ct, 'crosstab_printed')\nprint(ct)", "fail"),
    # describe() per group: its count column holds whole floats (3.0), still counts of people.
    "group_describe": ("d = residents.groupby('区县')['月收入'].describe()\nsave(d, 'group_describe')\nd", "fail"),
    # describe() of a small group: statistics of three residents.
    "describe_small_group": ("d = residents[residents['区县'] == '东城区'][['年龄', '月收入']].describe()\n"
                             "save(d, 'describe_small_group')\nd", "fail"),
    # Aggregates a reviewer expects to pass: statistics and rounded counts of large groups.
    "describe": ("d = residents[['年龄', '月收入']].describe()\nsave(d, 'describe')\nd", "pass"),
    "describe_printed": ("d = residents[['年龄', '月收入']].describe()\nsave(d, 'describe_printed')\nprint(d)",
                         "pass"),
    "rounded_counts": ("r = (residents.groupby('性别').size() // 10 * 10).reset_index(name='人数')\n"
                       "save(r, 'rounded_counts', index=False)\nr", "pass"),
    "rounded_means": ("m = residents.groupby('性别')['月收入'].median().round(-3)\n"
                      "save(m, 'rounded_means')\nm", "pass"),
}
SAFE = [name for name, (_, status) in CASES.items() if status == "pass"]
# More of what an ordinary analysis shows, with no table to write as a CSV: none of it is flagged.
ORDINARY = ["residents.info()", "residents.dtypes", "residents.shape",
            "residents[['年龄', '月收入']].corr().round(2)", "print(f'平均月收入：{residents[\"月收入\"].mean():.0f} 元')"]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The case notebook, run once in the operators' kernel; the folder holding its CSV files."""
    out = tmp_path_factory.mktemp("notebook-cases")
    kernels = tmp_path_factory.mktemp("kernels")
    (kernels / "operators").mkdir()
    (kernels / "operators" / "kernel.json").write_text(json.dumps({
        "argv": [str(SANDBOX_PYTHON), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "operators", "language": "python"}))
    nb = new_notebook(cells=[new_code_cell(SETUP.format(out=str(out)))]
                      + [new_code_cell(code) for code, _ in CASES.values()]
                      + [new_code_cell("(OUT / 'counts.md').write_text(counts.to_markdown(index=False))")]
                      + [new_code_cell(code) for code in ORDINARY])
    km = KernelManager(kernel_name="operators", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    NotebookClient(nb, km=km, timeout=120).execute()
    cells = dict(zip(list(CASES) + ORDINARY, nb.cells[1:len(CASES) + 1] + nb.cells[len(CASES) + 2:]))
    return cells, out


def released(out: Path) -> checks.ReleasedIndex:
    return checks.ReleasedIndex.load([("residents@1", out / "released")])


def check(name: str, data: bytes, out: Path) -> list[dict]:
    ctx = checks.Context(checks.Thresholds(), released(out), {})
    return checks.run_checks(files.inspect(name, data, CAP), ctx)


def notebook_of(*cells) -> bytes:
    return nbformat.writes(new_notebook(cells=[new_markdown_cell("# 居民收入分析")] + list(cells))).encode()


@pytest.mark.parametrize("case", list(CASES))
def test_notebook_output_fails_where_its_csv_fails(executed, case):
    cells, out = executed
    expected = CASES[case][1]
    as_csv = check(f"{case}.csv", (out / f"{case}.csv").read_bytes(), out)
    in_notebook = check("分析.ipynb", notebook_of(cells[case]), out)
    assert checks.worst(as_csv) == expected, as_csv
    assert checks.worst(in_notebook) == expected, [f for f in in_notebook if f["status"] != "pass"]
    # The same checks object, each finding naming the cell and output a reviewer opens.
    flagged = lambda results: {(f["check"], f["status"]) for f in results if f["status"] != "pass"}  # noqa: E731
    assert flagged(in_notebook) == flagged(as_csv)
    for f in in_notebook:
        if f["status"] != "pass" and f["check"] in ("small_cells", "rounding", "microdata"):
            assert f["location"].startswith("cell 2, output 1, "), f


def test_record_rows_are_reported_where_they_are_shown(executed):
    cells, out = executed
    results = check("分析.ipynb", notebook_of(cells["group_count_html"], cells["records_html"]), out)
    microdata = [f for f in results if f["check"] == "microdata" and f["status"] == "fail"]
    assert {f["location"].split(":")[0] for f in microdata} == {"cell 3, output 1, HTML table 1"}
    assert any("column '居民编号'" in f["reason"] for f in microdata)
    assert any("copy rows of released dataset residents@1/residents.csv" in f["reason"] for f in microdata)
    [small] = [f for f in results if f["check"] == "small_cells" and f["status"] == "fail"]
    assert small["location"] == "cell 2, output 1, HTML table 1: row 1 column '人数'"


def test_truncated_frame_is_judged_by_the_rows_it_stands_for(executed):
    cells, out = executed
    results = check("分析.ipynb", notebook_of(cells["records_truncated_html"]), out)
    [record_level] = [f for f in results if f["check"] == "microdata" and "record-level" in f["reason"]]
    assert "in 10 of 10 rows shown of 60" in record_level["reason"]


def test_notebook_of_aggregates_only_passes(executed):
    cells, out = executed
    results = check("分析.ipynb", notebook_of(*(cells[name] for name in SAFE + ORDINARY)), out)
    assert checks.worst(results) == "pass", [f for f in results if f["status"] != "pass"]
    [summary] = [f for f in results if f["check"] == "notebook"]
    # The statistics, counts and means are read as tables (dtypes and the correlations too).
    assert f"{len(SAFE) + 2} table(s) found and checked like CSV files" in summary["reason"], summary


def test_table_pasted_into_a_markdown_cell_is_checked(executed):
    cells, out = executed
    pasted = "各区县人数：\n\n" + (out / "counts.md").read_text()  # to_markdown() in the operators' kernel
    results = check("分析.ipynb", notebook_of(new_markdown_cell(pasted)), out)
    [small] = [f for f in results if f["check"] == "small_cells" and f["status"] == "fail"]
    assert small["location"] == "cell 2, Markdown table 1: row 1 column '人数'"


def test_table_in_widget_state_is_checked(executed):
    _, out = executed
    counts = pd.read_csv(out / "group_count_html.csv")
    state = {"application/vnd.jupyter.widget-state+json": {"version_major": 2, "version_minor": 0, "state": {
        "a1b2": {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls",
                 "state": {"value": counts.to_html(index=False)}}}}}
    nb = new_notebook(cells=[new_code_cell("widgets.HTML(counts.to_html())")], metadata={"widgets": state})
    results = check("分析.ipynb", nbformat.writes(nb).encode(), out)
    [small] = [f for f in results if f["check"] == "small_cells" and f["status"] == "fail"]
    assert small["location"].startswith("widget state, model a1b2 value, HTML table 1")
    assert any(f["check"] == "active_content" and f["status"] == "review" for f in results)


def test_identifier_in_image_alt_text_names_the_output(executed):
    _, out = executed
    html = f'<img src="data:image/png;base64,AAAA" alt="居民 {RESIDENT_ID} 的收入走势">'
    nb = notebook_of(new_code_cell("display(HTML(chart))", outputs=[
        new_output("display_data", data={"text/html": html, "text/plain": "<IPython.core.display.HTML object>"})]))
    hits = [f for f in check("分析.ipynb", nb, out) if f["check"] == "identifiers" and f["status"] == "fail"]
    assert "cell 2, output 1 image alt text" in {f["location"] for f in hits}


def test_crafted_spans_cannot_blow_up_a_table():
    row = "<tr>" + '<td colspan="99999999" rowspan="99999999">1</td>' * 20_000 + "</tr>"
    nb = notebook_of(new_code_cell("x", outputs=[new_output(
        "display_data", data={"text/html": f"<table>{row * 3}</table>", "text/plain": "x"})]))
    inspected = files.inspect("分析.ipynb", nb, CAP)
    assert sum(len(r) for t in inspected.tables for r in t.rows) <= 2_000_000 + 20_000


def test_text_that_is_no_table_gives_no_table():
    nb = notebook_of(new_code_cell("fit()", outputs=[new_output(
        "stream", name="stdout", text="训练完成。\nAccuracy: 0.93\nepochs run: 12 of 12\n")]))
    assert files.inspect("分析.ipynb", nb, CAP).tables == []





def test_intake_fails_the_notebook_whose_outputs_show_records(executed, hub, tokens, intake):
    # The incident: df.head(20) and a group count of 3 in a notebook, checked before submitting.
    cells, _ = executed
    nb = notebook_of(cells["records_html"], cells["group_count_html"])
    r = intake(tokens["olga@ws1"]).submit({"分析.ipynb": nb}, path="/checks")
    assert r.status_code == 200, r.text
    [result] = r.json()["files"]
    assert result["status"] == "fail"
    failed = {(c["check"], c["location"].split(":")[0]) for c in result["checks"] if c["status"] == "fail"}
    assert {("microdata", "cell 2, output 1, HTML table 1"), ("small_cells", "cell 3, output 1, HTML table 1")} <= failed
