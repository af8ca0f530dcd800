"""Chinese content everywhere data goes (issue #17): column names, file names, category values and
justifications in Chinese survive the contract, the masked release (Parquet, CSV, manifest, README,
report, gates), a workspace's column view and its data supply manifest, and an export request's
checks, votes, signed manifest, watermark, download, ``enclave exports verify`` and the audit trail.

One real hub with its review and audit services (as tests/exports runs them) on a home of this
module's; the 人口抽样 fixture (GENERATED, Chinese column names) is released into it through
``enclave data release`` and attached to workspace ws1 as a column view.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from urllib.parse import quote, unquote

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from enclave_testing import grant
from exports.conftest import REPO, Client, make_tokens, running_hub
from PIL import Image, PngImagePlugin

from enclave import supply
from enclave.cli import main as cli
from enclave.exports import release
from synthetic import demo

RELEASE = "population_sample@1"
TABLE = "人口抽样"
COLUMNS = ["编号", "性别", "年龄", "区县", "月收入", "诊断"]
FILE = "各区县月收入汇总.csv"
FIGURE = "各区县月收入图.png"
TITLE = "各区县月收入汇总（2025年抽样）"
JUSTIFICATION = "用于《区县居民收入分析报告》第三章：按区县汇总的人数与月收入中位数，人数已四舍五入到5的倍数，无小于10的单元格。"
REASONS = {"rita": "已核对：人数均不少于10且为5的倍数，可以导出。", "rob": "同意导出；中位数不涉及个人。"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub of this module's, its home also this process's (the CLI runs on it)."""
    home = tmp_path_factory.mktemp("chinese-home")
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("ENCLAVE_")]:
            mp.delenv(k)
        mp.setenv("ENCLAVE_HOME", str(home))
        mp.setenv("ENCLAVE_CONFIG", str(home / "enclave.toml"))
        with running_hub(home) as running:
            yield running


@pytest.fixture(scope="module")
def released(hub, tmp_path_factory):
    """The 人口抽样 fixture released (masked) into the hub's store through ``enclave data release``:
    the CLI's output and the release's folder."""
    raw = tmp_path_factory.mktemp("holder-raw")
    contract = demo.write_population_sample(raw, n=1000)
    out = CliRunner().invoke(cli, ["data", "release", str(contract), "--method", "masked"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return out.output, hub.settings.release_store / RELEASE


def test_a_masked_release_keeps_the_chinese_column_names(released):
    output, root = released
    assert f"published {RELEASE} (masked)" in output and f"{TABLE}: 1000 rows, 6 columns" in output
    data = root / "data"
    assert sorted(p.name for p in data.iterdir()) == ["README.txt", f"{TABLE}.csv", f"{TABLE}.parquet"]

    assert pq.read_schema(data / f"{TABLE}.parquet").names == COLUMNS
    raw_csv = (data / f"{TABLE}.csv").read_bytes()
    assert raw_csv.split(b"\n", 1)[0].decode("utf-8") == ",".join(COLUMNS)  # UTF-8, no BOM, readable header
    table = pd.read_parquet(data / f"{TABLE}.parquet")
    assert set(table["性别"]) == {"男", "女"} and set(table["诊断"]) <= set(demo.DIAGNOSES)
    assert set(table["年龄"]) <= {"[18, 30)", "[30, 45)", "[45, 60)", "[60, 75)", "[75, inf)"}
    assert list(pd.read_csv(data / f"{TABLE}.csv", dtype=str).columns) == COLUMNS

    readme = (data / "README.txt").read_text(encoding="utf-8")
    assert f"Table {TABLE}: 1000 rows; columns: {', '.join(COLUMNS)}" in readme

    m = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    assert m["tables"] == {TABLE: {"rows": 1000, "columns": COLUMNS}}
    assert m["contract"]["name"] == "population_sample"
    gates = {g["gate"]: g for g in m["gates"] if g["table"] == TABLE}
    assert gates["k_anonymity"]["passed"] and "over ['性别', '年龄', '区县']" in gates["k_anonymity"]["detail"]
    assert gates["l_diversity"]["passed"] and "of ['诊断']" in gates["l_diversity"]["detail"]
    assert demo.POPULATION_SAMPLE_CONTRACT["tables"][TABLE]["columns"]["月收入"]["uniqueness_accepted"] \
        in gates["unique_entities"]["detail"]
    # People read the manifest: Chinese is written as itself, never as \\uXXXX escapes.
    assert "\\u" not in (root / "manifest.json").read_text(encoding="utf-8")

    report = (root / "report.html").read_text(encoding="utf-8")
    for column in COLUMNS[1:]:
        assert column in report
    assert "over [&#39;性别&#39;, &#39;年龄&#39;, &#39;区县&#39;]" in report


def test_a_column_view_with_chinese_column_names(hub, released):
    settings = hub.settings
    tables = supply.release_tables(settings, RELEASE)
    # ',' and what Chinese input methods type between names ('，', '、') separate names alike.
    for spec in (["性别", "月收入"], ["性别，月收入"], [f"{TABLE}.性别、月收入"], ["月收入, 性别"]):
        assert supply.select_columns(tables, RELEASE, spec) == {TABLE: ["性别", "月收入"]}
    with pytest.raises(supply.SupplyError, match="has no column\\(s\\) '收入'.*人口抽样.月收入"):
        supply.select_columns(tables, RELEASE, ["性别", "收入"])

    grant(settings, "ws1", RELEASE, columns=["性别，月收入"], reason="按性别分析月收入")
    view = supply.view_dir(settings, "ws1", RELEASE)
    assert sorted(p.name for p in view.iterdir()) == ["README.txt", f"{TABLE}.csv", f"{TABLE}.parquet"]
    assert pq.read_schema(view / f"{TABLE}.parquet").names == ["性别", "月收入"]
    with (view / f"{TABLE}.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["性别", "月收入"] and len(rows) == 1001 and {r[0] for r in rows[1:]} == {"男", "女"}
    assert "columns: 性别, 月收入" in (view / "README.txt").read_text(encoding="utf-8")

    text = supply.manifest_path(settings, "ws1").read_text(encoding="utf-8")
    (entry,) = [e for e in json.loads(text)["entries"] if e["release"] == RELEASE]
    assert entry["columns"] == {TABLE: ["性别", "月收入"]} and entry["reason"] == "按性别分析月收入"
    assert '"人口抽样": [\n' in text and '"性别"' in text and "\\u" not in text


def summary_table(counts: dict[str, int], count_column: str = "人数") -> bytes:
    """What an operator writes from the view: people and median monthly income by district."""
    lines = [f"区县,{count_column},月收入中位数"] + [f"{d},{n},{6000 + 37 * n:.1f}" for d, n in counts.items()]
    return ("\n".join(lines) + "\n").encode()


def chart() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "各区县月收入中位数")
    out = io.BytesIO()
    Image.new("RGB", (24, 16), "white").save(out, "PNG", pnginfo=info)
    return out.getvalue()


def test_an_export_in_chinese_through_checks_review_release_verify_and_audit(hub, released, tmp_path):
    settings = hub.settings
    tokens = make_tokens(hub)
    api = lambda who: Client(tokens[who], hub.service + "/api")  # noqa: E731

    # The checks read the Chinese header: a small count under 人数 (or the other words Chinese
    # tables head counts with) fails, naming the column.
    headers = ["人数", "病例数", "就诊人次", "企业家数", "样本量"]
    r = api("olga@ws1").submit({f"{h}.csv": summary_table({"朝阳区": 3, "东城区": 120}, h) for h in headers},
                               path="/checks")
    for header, checked in zip(headers, r.json()["files"], strict=True):
        (small,) = [c for c in checked["checks"] if c["check"] == "small_cells"]
        assert small["status"] == "fail" and small["location"] == f"row 1 column {header!r}", (header, small)
    # Rows copied from the release with a Chinese header are caught, also written with the byte
    # order mark pandas' encoding="utf-8-sig" puts first (which Excel needs for Chinese).
    rows = pd.read_csv(released[1] / "data" / f"{TABLE}.csv", dtype=str, keep_default_na=False)
    copy = rows[["性别", "区县", "月收入"]].head(30).to_csv(index=False).encode("utf-8-sig")
    r = api("olga@ws1").submit({"抽样明细.csv": copy}, path="/checks")
    (checked,) = r.json()["files"]
    assert checked["status"] == "fail"
    assert any(c["check"] == "microdata" and f"released dataset {RELEASE}/{TABLE}.csv" in c["reason"]
               for c in checked["checks"]), checked["checks"]

    table = summary_table({"朝阳区": 120, "东城区": 85, "徐汇区": 40, "浦东新区": 65})
    r = api("olga@ws1").submit({FILE: table, FIGURE: chart()}, title=TITLE, context=JUSTIFICATION)
    assert r.status_code == 201, r.text
    req = r.json()
    rid = req["id"]
    assert (req["title"], req["context"]) == (TITLE, JUSTIFICATION)
    by_name = {f["name"]: f for f in req["files"]}
    assert set(by_name) == {FILE, FIGURE} and by_name[FILE]["check_status"] == "pass"
    (counted,) = [c for c in by_name[FILE]["checks"] if c["check"] == "small_cells"]
    assert counted["reason"] == "every count in 1 count column(s) is at least 10"
    assert RELEASE in req["datasets"]

    for who in ("rita", "rob"):
        for f in req["files"]:
            r = api(who).post(f"/requests/{rid}/votes", {"file_id": f["id"], "decision": "approve",
                                                          "reason": REASONS[who]})
            assert r.status_code == 201, r.text
    assert r.json()["state"] == "released"
    seen = api("rita").get(f"/requests/{rid}").json()
    assert (seen["title"], seen["context"]) == (TITLE, JUSTIFICATION)

    # Downloaded under its Chinese name, with the signed manifest naming it.
    downloads = tmp_path / "下载"
    downloads.mkdir()
    for name, f in by_name.items():
        link = api("olga").post(f"/requests/{rid}/files/{f['id']}/links")
        assert link.status_code == 201, link.text
        got = api("olga").session.get(hub.url + link.json()["url"], timeout=30)
        assert got.status_code == 200
        disposition = got.headers["Content-Disposition"]
        assert disposition == f"attachment; filename*=UTF-8''{quote(name, safe='')}"
        assert unquote(disposition.split("''", 1)[1], errors="strict") == name
        (downloads / name).write_bytes(got.content)
        signed = api("olga").get(f"/requests/{rid}/files/{f['id']}/manifest").json()
        m = signed["manifest"]
        assert signed["signature_valid"] and m["file"]["name"] == name and m["title"] == TITLE
        assert sorted(a["reason"] for a in m["approvers"]) == sorted(REASONS.values())
        assert RELEASE in m["datasets"]
    assert (downloads / FILE).read_bytes() == table
    assert m["file"]["watermarked"]  # the figure, last: its watermark names its release
    assert release.read_watermark((downloads / FIGURE).read_bytes()) == m["release_id"]
    assert "Title" not in Image.open(downloads / FIGURE).info

    # enclave exports verify, in this process and as an administrator runs it (C locale included).
    out = CliRunner().invoke(cli, ["exports", "verify", str(downloads / FILE)])
    assert out.exit_code == 0, out.output
    assert f"as '{FILE}'" in out.output and all(reason in out.output for reason in REASONS.values())
    for env in ({}, {"LC_ALL": "C", "LANG": "C"}):
        run = subprocess.run([str(REPO / ".venv" / "bin" / "enclave"), "exports", "verify", "--json",
                              str(downloads / FILE)], env={**hub.env, **env}, capture_output=True, timeout=120)
        assert run.returncode == 0, run.stderr.decode("utf-8", "replace")
        found = json.loads(run.stdout.decode("utf-8"))
        assert found["valid"] and found["releases"][0]["manifest"]["file"]["name"] == FILE
        assert FILE.encode() in run.stdout and b"\\u" not in run.stdout

    # The audit trail holds every Chinese string exactly.
    (submitted,) = hub.records("export.request", rid)
    assert (submitted["detail"]["title"], submitted["detail"]["justification"]) == (TITLE, JUSTIFICATION)
    assert {f["name"] for f in submitted["detail"]["files"]} == {FILE, FIGURE}
    checks = {r["detail"]["file"]: r["detail"] for r in hub.records("export.check", rid)}
    assert set(checks) == {FILE, FIGURE} and checks[FILE]["status"] == "pass"
    votes = hub.records("export.vote", rid)
    assert sorted(v["detail"]["reason"] for v in votes) == sorted([*REASONS.values()] * 2)
    assert {r["detail"]["file"] for r in hub.records("export.release", rid)} == {FILE, FIGURE}
    assert {r["detail"]["file"] for r in hub.records("export.download", rid)} == {FILE, FIGURE}
    (published,) = [r for r in hub.records("data.release_published") if r["detail"]["release"] == RELEASE]
    assert {g["table"] for g in published["detail"]["gates"]} >= {TABLE}

    query = subprocess.run([str(REPO / ".venv" / "bin" / "enclave"), "audit", "query", "--action", "export.*",
                            "--format", "jsonl"], env=hub.env, capture_output=True, timeout=120)
    assert query.returncode == 0, query.stderr.decode("utf-8", "replace")
    lines = query.stdout.decode("utf-8").splitlines()
    mine = [line for line in lines if rid in line]
    assert len(mine) == 1 + 2 + 4 + 1 + 2 + 2, mine  # request, checks, votes, decision, releases, downloads
    assert all("\\u" not in line for line in mine)
    assert TITLE in "".join(mine) and FILE in "".join(mine) and REASONS["rita"] in "".join(mine)

    trace = subprocess.run([str(REPO / ".venv" / "bin" / "enclave"), "audit", "trace", str(downloads / FILE)],
                           env=hub.env, capture_output=True, timeout=120)
    assert trace.returncode == 0, trace.stderr.decode("utf-8", "replace")
    text = trace.stdout.decode("utf-8")
    assert text.startswith(f"{FILE} (version 1)") and f"“{TITLE}”" in text
    assert all(reason in text for reason in REASONS.values())
    hub.verify_audit_log()
