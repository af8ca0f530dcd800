"""Disclosure checks and upload inspection, on seeded files (no hub needed)."""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import json
import subprocess
import sys
import zipfile

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image, PngImagePlugin
from pypdf import PdfWriter

from enclave.exports import checks, files, identifiers
from synthetic.identifiers import resident_id_check_char, uscc_check_char

CAP = 16 * 2**20
RID17 = "11010519800101123"
RESIDENT_ID = RID17 + resident_id_check_char(RID17)
BAD_RESIDENT_ID = RID17 + ("0" if resident_id_check_char(RID17) != "0" else "1")
USCC = "91350100M000100Y4" + uscc_check_char("91350100M000100Y4")


def ctx(released=None, acro=None) -> checks.Context:
    return checks.Context(checks.Thresholds(), released or checks.ReleasedIndex([]), acro or {})


def run(name: str, data: bytes, **kw) -> list[dict]:
    return checks.run_checks(files.inspect(name, data, CAP), ctx(**kw))


def failing(results: list[dict], check: str) -> list[dict]:
    return [r for r in results if r["check"] == check and r["status"] == "fail"]


def png(text: dict[str, str] | None = None, size=(8, 8)) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    out = io.BytesIO()
    Image.new("RGB", size, "white").save(out, "PNG", pnginfo=info)
    return out.getvalue()


def notebook(outputs=(), metadata=None, source="df.groupby('region').size()") -> bytes:
    nb = new_notebook(cells=[new_markdown_cell("# Analysis"), new_code_cell(source, outputs=list(outputs))])
    nb.metadata.update(metadata or {})
    return nbformat.writes(nb).encode()


# -- tables --


def test_small_cells_fail_with_their_location():
    results = run("table.csv", b"region,count\nnorth,120\nsouth,3\neast,45\n")
    [small] = failing(results, "small_cells")
    assert small["cells"] == [[2, 1]]
    assert "row 2 column 'count'" in small["location"]
    assert checks.worst(results) == "fail"


def test_crosstab_counts_are_checked_without_count_header():
    results = run("xtab.csv", b"region,male,female\nnorth,40,35\nsouth,15,4\n")
    [small] = failing(results, "small_cells")
    assert small["cells"] == [[2, 2]]


def test_counts_written_as_whole_floats_are_counts():
    # pandas writes a count column holding a missing value, or describe()'s count, as floats.
    results = run("table.csv", b"region,count\nnorth,120.0\nsouth,3.0\neast,\n")
    [small] = failing(results, "small_cells")
    assert small["cells"] == [[2, 1]]


def test_whole_floats_without_a_count_header_are_not_counts():
    assert checks.worst(run("medians.csv", b"sex,median_age\nF,7.0\nM,41.0\n")) == "pass"


def test_safe_rounded_table_passes():
    results = run("table.csv", b"region,count\nnorth,120\nsouth,35\n")
    assert checks.worst(results) == "pass", results


def test_unrounded_counts_ask_for_review():
    results = run("table.csv", b"region,count\nnorth,121\nsouth,35\n")
    [r] = [r for r in results if r["check"] == "rounding"]
    assert r["status"] == "review" and r["cells"] == [[1, 1]]


def test_row_cap():
    body = "".join(f"g{i},{100 + i * 5}\n" for i in range(5001))
    assert failing(run("big.csv", ("group,count\n" + body).encode()), "rows")


def test_acro_dominance_and_p_percent_results_flag_cells():
    acro = json.dumps({"version": "1.0.2", "tool": {"name": "ACRO"}, "results": {"output_1": {
        "status": "fail", "summary": "NKCheck: fail", "files": [{"name": "means.csv", "sdc": {
            "summary": {"NKCheck": 1, "PPercentCheck": 1},
            "cells": {"NKCheck": [[0, 1]], "PPercentCheck": [[0, 1]], "MinimumThresholdCheck": []}}}]}}}).encode()
    table = b"region,A,B\nnorth,51234.5,61000.2\nsouth,40000.1,39000.0\n"
    inspected = [files.inspect("means.csv", table, CAP), files.inspect("results.json", acro, CAP)]
    found = checks.run_checks(inspected[0], ctx(acro=checks.acro_outputs(inspected)))
    flagged = failing(found, "acro")
    assert {f["reason"].split(" check")[0] for f in flagged} == {"ACRO dominance (N,K)", "ACRO p% rule"}
    assert flagged[0]["cells"] == [[1, 2]]


# -- microdata --


def released_index(rows: list[list[str]]) -> checks.ReleasedIndex:
    return checks.ReleasedIndex([checks._ReleasedTable("people/people.csv", rows[0], rows[1:])])


PEOPLE = [["region", "age", "income", "sector"]] + [
    [["north", "south", "east"][i % 3], str(20 + i % 40), str(30000 + i * 1237), f"s{i % 2}"] for i in range(90)
]


def csv_bytes(rows) -> bytes:
    return "".join(",".join(r) + "\n" for r in rows).encode()


def test_copied_dataset_rows_fail():
    copied = [PEOPLE[0]] + PEOPLE[10:14]
    [hit] = failing(run("extract.csv", csv_bytes(copied), released=released_index(PEOPLE)), "microdata")
    assert "copy rows of released dataset people/people.csv" in hit["reason"]


def test_copied_rows_written_with_pandas_unnamed_index_fail():
    # df.to_csv() writes the index as a first column with an empty name: the named columns are the data.
    copied = [[""] + PEOPLE[0]] + [[str(i)] + row for i, row in enumerate(PEOPLE[10:14], start=10)]
    [hit] = failing(run("extract.csv", csv_bytes(copied), released=released_index(PEOPLE)), "microdata")
    assert "4 row(s) copy rows of released dataset people/people.csv" in hit["reason"]


def test_near_duplicate_rows_fail_reordered_renamed_and_reformatted():
    # Columns renamed and reordered, text upper-cased, numbers written differently.
    rows = [["Income", "Sector", "Region", "Age"]] + [
        [f"{float(r[2]):.1f}", r[3].upper(), r[0].upper(), r[1]] for r in PEOPLE[20:23]
    ]
    found = failing(run("extract.csv", csv_bytes(rows), released=released_index(PEOPLE)), "microdata")
    assert any("nearly duplicate" in f["reason"] for f in found), found


def test_group_level_rows_shared_by_many_records_are_not_microdata():
    # Each (region, sector) pair is shared by 15 released records: these rows describe groups, not people.
    rows = [["region", "sector"]] + [["north", "s0"], ["south", "s1"]]
    assert not failing(run("groups.csv", csv_bytes(rows), released=released_index(PEOPLE)), "microdata")


def test_record_level_table_with_identifier_column_fails():
    rows = [["person_id", "age"]] + [[f"P{100000 + i}", str(30 + i % 20)] for i in range(40)]
    [hit] = failing(run("people.csv", csv_bytes(rows)), "microdata")
    assert "record-level" in hit["reason"]


# -- identifiers --


@pytest.mark.parametrize("text, kind", [
    (f"id: {RESIDENT_ID}", "resident_id"),
    ("call 13812345678", "mobile"),
    ("card 6222 0212 3456 7894", "bank_card"),
    (f"company {USCC}", "uscc"),
    ("write to zhang.san@example.cn", "email"),
])
def test_identifiers_found_in_text(text, kind):
    [m] = identifiers.find(text)
    assert m.kind == kind


def test_identifier_lookalikes_are_not_reported():
    assert identifiers.find(f"{BAD_RESIDENT_ID} 6222021234567890 ab13812345678cd") == []


def test_identifier_findings_mask_the_value_and_say_where():
    results = run("notes.txt", f"line one\nperson {RESIDENT_ID} here\n".encode())
    [hit] = failing(results, "identifiers")
    assert hit["location"] == "line 2, column 8"
    assert RESIDENT_ID not in hit["reason"] and "resident identity number" in hit["reason"]


def test_resident_id_in_notebook_output_is_found():
    nb = notebook([new_output("stream", name="stdout", text=f"top earner: {RESIDENT_ID}\n")])
    [hit] = failing(run("analysis.ipynb", nb), "identifiers")
    assert hit["location"] == "cell 2, output 1 (stdout)"


def test_resident_id_in_notebook_metadata_is_found():
    nb = notebook(metadata={"author": {"id_card": RESIDENT_ID}})
    [hit] = failing(run("analysis.ipynb", nb), "identifiers")
    assert hit["location"] == "notebook metadata"


def test_resident_id_in_image_embedded_in_notebook_is_found():
    image = base64.b64encode(png({"Comment": f"subject {RESIDENT_ID}"})).decode()
    nb = notebook([new_output("display_data", data={"image/png": image, "text/plain": "<Figure>"})])
    results = run("analysis.ipynb", nb)
    [hit] = failing(results, "identifiers")
    assert hit["location"] == "cell 2, output 1 image/png metadata 'Comment'"
    assert any(r["check"] == "metadata" and r["status"] == "review" for r in results)


def test_resident_id_in_png_text_chunk_is_found_and_metadata_reported():
    results = run("figure.png", png({"Description": f"patient {RESIDENT_ID}"}))
    [hit] = failing(results, "identifiers")
    assert hit["location"] == "image metadata 'Description'"
    [meta] = [r for r in results if r["check"] == "metadata"]
    assert meta["status"] == "review" and "Description" in meta["reason"]


def test_identifier_in_pdf_metadata_is_found():
    w = PdfWriter()
    w.add_blank_page(72, 72)
    w.add_metadata({"/Author": "zhang.san@example.cn"})
    out = io.BytesIO()
    w.write(out)
    [hit] = failing(run("report.pdf", out.getvalue()), "identifiers")
    assert hit["location"] == "PDF metadata /Author"


def test_notebook_widget_state_and_scripts_are_reported():
    nb = notebook([new_output("display_data", data={"application/javascript": "fetch('x')", "text/plain": "x"}),
                   new_output("display_data", data={"text/html": "<img src=x onerror=fetch('y')>"})],
                  metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}})
    reasons = [r["reason"] for r in run("analysis.ipynb", nb) if r["check"] == "active_content"]
    assert any("widget state" in r for r in reasons) and any("application/javascript" in r for r in reasons)
    assert any("cell 2, output 2: text/html" in r for r in reasons)


# -- types and bad input --


@pytest.mark.parametrize("name, data, sniffed", [
    ("table.csv", png(), "png"),
    ("figure.png", b"region,count\nnorth,20\n", "text"),
    ("analysis.ipynb", b'{"a": 1}', "json"),
])
def test_extension_must_match_content(name, data, sniffed):
    [hit] = failing(run(name, data), "type")
    assert sniffed in hit["reason"]


def _zip_bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.csv", b"0" * (64 * 2**20))
    return out.getvalue()


@pytest.mark.parametrize("name, data, message", [
    ("table.csv", _zip_bomb(), "zip archive: archives and compressed files are not accepted"),
    ("table.csv", gzip.compress(b"0" * 2**20), "gzip stream"),
    ("notes.txt", bz2.compress(b"0" * 2**20), "bzip2 stream"),
    ("../../etc/passwd.txt", b"x", "not allowed"),
    ("sub/dir.csv", b"a\n1\n", "not allowed"),
    ("..csv", b"a\n1\n", "not allowed"),
    ("program.exe", b"MZ", "type '.exe' is not exportable"),
    ("table.csv", "region,count\nnörth,20\n".encode("latin-1"), "not UTF-8 text (invalid byte at offset 14)"),
    ("table.csv", b"region,count\nnorth,20\nsouth,30,extra\n", "ragged: line 3 has 3 fields, the header has 2"),
    ("empty.csv", b"", "is empty"),
    ("big.txt", b"x" * (CAP + 1), "over the 16 MiB cap"),
    ("drawing.svg", b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><svg>&b;</svg>',
     "SVG 'drawing.svg' is refused"),
])
def test_bad_input_is_rejected_with_a_clear_error(name, data, message):
    with pytest.raises(files.FileRejected, match=None) as exc:
        files.inspect(name, data, CAP)
    assert message in str(exc.value)


def test_image_decompression_bomb_is_rejected():
    out = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(out, "PNG")  # 100 Mpx, a few KB on disk
    with pytest.raises(files.FileRejected, match="decompression bomb"):
        files.inspect("huge.png", out.getvalue(), CAP)


def test_importing_the_checks_loads_no_heavy_library():
    # The CLI names these modules and must start fast: pandas, nbformat and the rest load on first use.
    heavy = ("pandas", "numpy", "nbformat", "jsonschema", "PIL", "pypdf", "defusedxml", "synthetic.identifiers")
    code = ("import sys, enclave.exports.checks, enclave.exports.files\n"
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"imported at module level: {loaded}"
