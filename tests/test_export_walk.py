"""The export path as its people walk it, in chromium, on the demo's accounts and data.

alice (operator) analyses the masked residents release in JupyterLab: reads the Parquet file,
fits a scikit-learn model, draws a chart with a Chinese title, and shows 20 rows in a notebook.
The notebook's export is refused by the checks (record-level rows), so she goes back; she requests
the chart and a table of counts instead. carol and dave (reviewers) find the request from the hub
home, and both ask for the counts to be rounded: the request returns to alice with their reasons.
alice sends a new version of the counts and resubmits; both approve, which releases the request;
alice downloads the new version from her Exports panel. No page logs a console error.

Then the sealed-run path: alice builds a regression on the synthetic release and runs it on the real
rows ("Run on real data…"), with a second notebook that fails on the real rows only; heidi (the data
holder) shortens the workspace's time limit and approves both; alice's panel shows the two runs in
the same words; carol and dave, whom heidi appointed, release the coefficients and, of the failed
run, its exception's type alone; alice downloads both, the coefficients are those computed directly on
the raw file (not the synthetic ones), and ``enclave audit trace`` walks from the file to the run, its notebook and
the source.
"""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pandas as pd

import pytest
from enclave_testing import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Browser,
    backend_settings,
    download_from_exports_panel,
    request_export,
    vote,
)
from playwright.async_api import async_playwright, expect

from enclave import demo
from enclave.audit.client import Recorder, audit_service
from enclave.settings import Settings
from synthetic import sealed

# On bubblewrap; the container deployment's walk (tests/test_compose.py) runs the same path on Docker.
pytestmark = pytest.mark.browser

TIMEOUT = 120_000
RELEASE = "/data/residents@1/residents.parquet"

CELLS = [
    f"import pandas as pd\ndf = pd.read_parquet({RELEASE!r})\nprint('rows, columns:', df.shape)",
    "df.head(20)",
    "from sklearn.linear_model import LinearRegression\n"
    "X = pd.get_dummies(df[['education', 'resident_id_sex']], dtype=float)\n"
    "y = df['income'].fillna(df['income'].median())\n"
    "model = LinearRegression().fit(X, y)\n"
    "print('R2:', round(model.score(X, y), 3))",
    "import warnings\n"
    "import matplotlib.pyplot as plt\n"
    "with warnings.catch_warnings(record=True) as caught:\n"
    "    warnings.simplefilter('always')\n"
    "    ax = df.groupby('education')['income'].median().plot.bar(title='各学历收入中位数')\n"
    "    ax.set_xlabel('学历')\n"
    "    ax.figure.savefig('chart.png')\n"
    "    plt.close(ax.figure)\n"
    "print('glyph warnings:', [str(w.message) for w in caught if 'missing from' in str(w.message)])",
    "counts = df.groupby('resident_id_region').size().rename('人数')\n"
    "counts.to_csv('counts.csv')\n"
    "print('regions:', len(counts))",
]
ROUNDED = ("rounded = (counts / 5).round().astype(int) * 5\n"
           "rounded.to_csv('counts.csv')\nprint('rounded:', rounded.tolist())")
ROUND_PLEASE = "请把人数四舍五入到5的倍数。"


def notebook(cells: list[str]) -> str:
    return json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {},
                   "outputs": [], "source": code} for i, code in enumerate(cells)],
        "metadata": {"kernelspec": {"display_name": "Python 3 (sandboxed)", "language": "python",
                                    "name": "enclave-python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }, ensure_ascii=False)


@pytest.fixture(scope="module")
def walk(hub_factory, sandbox_backend):
    """The demo, as ``make demo`` seeds it (two approvals per file), on a hub of its own for the
    module's sandbox backend."""
    hub = hub_factory(f"walk-{sandbox_backend}", ENCLAVE_SANDBOX__IDLE_TIMEOUT="0", ENCLAVE_SEALED_RUNS__SLOTS="2",
                      **backend_settings(sandbox_backend))
    with audit_service(Settings(home=hub.home)) as log:  # recorded as `enclave demo` records its seeding
        passwords = {name: password for name, _, password in demo.seed(Settings(home=hub.home),
                                                                       Recorder(log, "cli", "root"))}
    hub.start()
    return hub, passwords


@pytest.fixture
async def chromium():
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield Browser(b)
        await b.close()


async def test_alice_carol_dave_alice(chromium, walk):
    hub, passwords = walk

    # -- alice analyses --
    alice_ctx, lab = await chromium.person(hub, "alice", passwords["alice"])
    await lab.click("#start-demo")
    await lab.wait_for_url("**/user/alice/demo/lab**")
    await lab.wait_for_selector(".jp-DirListing-content")
    alice = hub.login("alice", passwords["alice"])  # a second session of alice's, for writing files from a kernel
    r = alice.start("demo")  # already running: just the server's log-in
    assert r.status_code == 200, (r.status_code, r.text[:500])
    r = alice.server_api("demo", "PUT", "/contents/analysis.ipynb",
                         json={"type": "notebook", "format": "json", "content": json.loads(notebook(CELLS))})
    assert r.status_code in (200, 201), r.text

    await lab.locator(".jp-DirListing-item", has_text="analysis.ipynb").dblclick()
    await lab.wait_for_selector(".jp-Notebook .jp-Cell")
    # The notebook's kernel started and connected (the status bar names it, idle), as a person
    # waits for before running anything: cells run before then are not sent.
    await expect(lab.get_by_text("Python 3 (sandboxed) | Idle")).to_be_visible()
    await lab.get_by_text("Run", exact=True).first.click()
    await lab.get_by_text("Run All Cells", exact=True).click()
    outputs = lab.locator(".jp-Notebook .jp-OutputArea-output")
    await expect(outputs.filter(has_text="regions:")).to_be_visible()
    # Their text, rendered or not: JupyterLab leaves cells scrolled out of view unrendered
    # (content-visibility), and chromium gives such an element no inner text.
    text = "\n".join(await outputs.all_text_contents())
    assert "rows, columns: (" in text and ", 10)" in text.split("rows, columns: (", 1)[1].splitlines()[0], text
    assert "R2:" in text, text
    assert "glyph warnings: []" in text, text
    assert "Error" not in text, text
    await lab.keyboard.press("Control+s")
    await expect(lab.locator(".jp-mod-dirty")).to_have_count(0)

    # The notebook shows 20 records: its export fails the checks, and alice is asked before sending.
    dialog = await request_export(lab, ["analysis.ipynb"], "模型和图表。")
    await expect(dialog.locator(".enclave-check", has_text="analysis.ipynb")).to_contain_text("fail")
    await dialog.locator(".jp-Dialog-button", has_text="Submit for review").click()
    confirm = lab.locator(".jp-Dialog", has_text="Send anyway")
    await expect(confirm).to_be_visible()
    await expect(confirm).to_contain_text("analysis.ipynb")
    await confirm.locator(".jp-Dialog-button", has_text="Go back").click()
    # Back at the request, justification kept; she cancels it.
    again = lab.locator(".jp-Dialog", has_text="Request export")
    await expect(again.locator("textarea.enclave-justification")).to_have_value("模型和图表。")
    await again.locator(".jp-Dialog-button", has_text="Cancel").click()
    await expect(lab.locator(".jp-Dialog")).to_have_count(0)

    # The chart and the counts instead.
    dialog = await request_export(lab, ["chart.png", "counts.csv"], "各学历收入中位数图和各地区人数，用于年度报告。")
    await dialog.locator(".jp-Dialog-button", has_text="Submit for review").click()
    sent_anyway = lab.locator(".jp-Dialog .jp-Dialog-button", has_text="Send anyway")
    requested = lab.locator(".jp-Dialog", has_text="Export requested")
    await expect(sent_anyway.or_(requested.first)).to_be_visible()
    if await sent_anyway.count():
        await sent_anyway.click()
    await expect(requested).to_be_visible()
    await requested.locator(".jp-Dialog-button.jp-mod-accept").click()
    await lab.locator('.jp-SideBar [data-id="enclave-exports"]').click()
    entry = lab.locator(".enclave-export", has_text="counts.csv")
    await expect(entry).to_be_visible()
    request_id = await entry.get_attribute("data-request-id")

    # -- carol and dave review: both ask for rounded counts, which returns the request --
    for reviewer in ("carol", "dave"):
        ctx, page = await chromium.person(hub, reviewer, passwords[reviewer])
        await page.locator("a.review-queue").first.click()
        awaiting = page.locator("#awaiting")
        await expect(awaiting).to_contain_text("counts.csv")
        await awaiting.locator("a", has_text="counts.csv").click()
        # One vote of two: no request-level decision is offered yet.
        await expect(page.locator("form.transition")).to_have_count(0)
        await vote(page, hub, request_id, {"chart.png": ("approve", "图表只含中位数，可以发布。"),
                                           "counts.csv": ("request_changes", ROUND_PLEASE)})
        await ctx.close()
    await expect(entry.locator(".enclave-export-returned")).to_contain_text(ROUND_PLEASE)

    # -- alice sends a new version of the counts and resubmits --
    kernel = alice.kernel("demo")
    out, err = kernel.run(CELLS[0] + "\n" + CELLS[4] + "\n" + ROUNDED)
    assert err is None, err
    await entry.locator("button.enclave-export-new-version").click()
    dialog = lab.locator(".jp-Dialog", has_text="Send a new version")
    await dialog.locator("tr[data-file='chart.png'] input").fill("")  # the chart stays as it is
    await dialog.locator(".jp-Dialog-button", has_text="Run the checks").click()
    checked = lab.locator(".jp-Dialog", has_text="The new versions, checked")
    await expect(checked.locator(".enclave-check").first).to_be_visible()
    await checked.locator(".jp-Dialog-button", has_text="Send").click()
    resubmit = lab.locator(".jp-Dialog", has_text="New version sent")
    await expect(resubmit).to_contain_text("counts.csv (v2)")
    await resubmit.locator(".jp-Dialog-button", has_text="Resubmit now").click()
    await expect(entry.locator(".enclave-label-state")).to_have_attribute("data-value", "submitted")

    # -- both approve the new version: the second approval releases the request --
    for reviewer in ("carol", "dave"):
        ctx, page = await chromium.person(hub, reviewer, passwords[reviewer])
        await vote(page, hub, request_id, {"counts.csv": ("approve", "已四舍五入，可以发布。")})
        await ctx.close()

    # -- alice downloads the new version from her panel --
    data = await download_from_exports_panel(alice_ctx, entry, "counts.csv", TIMEOUT)
    released = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert released[0][-1] == "人数"
    assert released[1:] and all(int(row[-1]) % 5 == 0 for row in released[1:]), released
    await alice_ctx.close()
    kernel.close()
    alice.stop("demo")

    assert chromium.errors == [], "\n".join(chromium.errors)


# -- sealed runs: the same regression on the synthetic release and on the real rows ------------------

FOLDER = "真实运行"
REGRESSION = [
    "import json, os\nimport numpy as np, pandas as pd\n"
    "df = pd.read_parquet('/data/residents@2/residents.parquet').dropna(subset=['income'])\n"
    "X = pd.get_dummies(df[['education', 'resident_id_sex']], drop_first=True, dtype=float)\n"
    "X.insert(0, '常数', 1.0)\n"
    "coef, *_ = np.linalg.lstsq(X.to_numpy(), df['income'].to_numpy(float), rcond=None)\n"
    "coefficients = {name: float(c) for name, c in zip(X.columns, coef)}",
    "os.makedirs('结果', exist_ok=True)\n"
    "json.dump(coefficients, open('结果/系数.json', 'w', encoding='utf-8'), ensure_ascii=False, indent=1)",
]
# Pseudonyms of the synthetic release are generated ("sdv-id-…"); the sealed view's are the real rows'.
FAILS_ON_REAL_ROWS = REGRESSION[:1] + [
    "if not df['resident_id'].iloc[0].startswith('sdv-id-'):\n    raise LookupError('只在真实数据上失败')"]


def coefficients_of(df: pd.DataFrame) -> dict[str, float]:
    df = df.dropna(subset=["income"])
    X = pd.get_dummies(df[["education", "resident_id_sex"]], drop_first=True, dtype=float)
    X.insert(0, "常数", 1.0)
    coef, *_ = np.linalg.lstsq(X.to_numpy(), df["income"].to_numpy(float), rcond=None)
    return {name: float(c) for name, c in zip(X.columns, coef)}


async def run_on_real_data(lab, notebook: str, output: str) -> None:
    """Right-click ``notebook`` in the file browser, "Run on real data…", keep ``output``, submit (the
    Exports panel then shows the run, in the file browser's place)."""
    item = lab.locator(".jp-DirListing-item", has_text=notebook).first
    if not await item.is_visible():
        await lab.locator('.jp-SideBar [data-id="filebrowser"]').click()
    await item.click(button="right")
    await lab.locator(".lm-Menu-itemLabel", has_text="Run on real data…").click()
    dialog = lab.locator(".jp-Dialog", has_text="Run on real data")
    await dialog.locator("select.enclave-sealed-run-release").select_option("residents@2")
    await dialog.locator("textarea.enclave-sealed-run-outputs").fill(output)
    await dialog.locator(".jp-Dialog-button", has_text="Submit the run").click()
    await expect(lab.locator(".enclave-sealed-run", has_text=notebook)).to_be_visible()


async def review(chromium, hub, reviewer: str, password: str, title: str, decisions: dict[str, str]) -> str:
    """``reviewer`` finds the request titled ``title`` awaiting their vote and votes on every file:
    approve those named in ``decisions``, reject the rest. Returns the request's id."""
    ctx, page = await chromium.person(hub, reviewer, password)
    await page.goto(f"{hub.service_url('exports')}/")
    link = page.locator("#awaiting a", has_text=title)
    await expect(link).to_be_visible()
    request_id = re.search(r"requests/([0-9a-f]{32})", await link.get_attribute("href")).group(1)
    await link.click()
    names = await page.locator("section.file h3").all_inner_texts()
    files = [n.split()[0] for n in names]
    assert set(decisions) <= set(files), files
    await vote(page, hub, request_id, {f: ("approve", decisions[f]) if f in decisions
                                       else ("reject", "不发布：含有对原始数据运行的细节。") for f in files})
    await ctx.close()
    return request_id


async def test_alice_runs_her_regression_on_the_real_rows(chromium, walk, tmp_path):
    hub, passwords = walk
    settings = Settings(home=hub.home)

    # -- alice writes her notebooks and builds the regression on the synthetic release --
    alice_ctx, lab = await chromium.person(hub, "alice", passwords["alice"])
    await lab.click("#start-demo")
    await lab.wait_for_url("**/user/alice/demo/lab**")
    # Lab comes back as she left it: her Exports panel may be where the file browser was.
    await lab.wait_for_selector(".jp-SideBar [data-id='filebrowser']")
    if not await lab.locator(".jp-DirListing-content").is_visible():
        await lab.locator(".jp-SideBar [data-id='filebrowser']").click()
    await lab.wait_for_selector(".jp-DirListing-content")
    alice = hub.login("alice", passwords["alice"])
    assert alice.start("demo").status_code == 200
    assert alice.server_api("demo", "PUT", f"/contents/{FOLDER}", json={"type": "directory"}).status_code in (200, 201)
    for name, cells in (("回归.ipynb", REGRESSION), ("只在真实数据上失败.ipynb", FAILS_ON_REAL_ROWS)):
        r = alice.server_api("demo", "PUT", f"/contents/{FOLDER}/{name}",
                             json={"type": "notebook", "format": "json", "content": json.loads(notebook(cells))})
        assert r.status_code in (200, 201), r.text
    kernel = alice.kernel("demo")
    out, err = kernel.run("\n".join(REGRESSION[:1]) + "\nprint(json.dumps(coefficients, ensure_ascii=False))")
    assert err is None, err
    on_synthetic = json.loads(out.strip().splitlines()[-1])
    kernel.close()

    # -- she runs both on the real data: they wait for the data holder --
    await lab.locator(".jp-DirListing-item", has_text=FOLDER).dblclick()
    await lab.wait_for_selector(".jp-DirListing-item >> text=回归.ipynb")
    await run_on_real_data(lab, "回归.ipynb", f"{FOLDER}/结果/系数.json")
    await run_on_real_data(lab, "只在真实数据上失败.ipynb", f"{FOLDER}/结果/系数.json")
    runs = lab.locator(".enclave-sealed-run")
    await expect(runs.filter(has_text="回归.ipynb")).to_contain_text("awaiting the data holder's approval")

    # -- heidi shortens the time limit (a run holds its slot for all of it) and approves both --
    ctx, page = await chromium.person(hub, "heidi", passwords["heidi"])
    await page.goto(f"{hub.service_url('exports')}/sealed-runs")
    await page.locator("#seconds-demo").fill("30")
    await page.locator("#policy-demo button[type=submit]").click()
    await expect(page.locator("#flash")).to_be_visible()
    # She reads each notebook's code before it runs on her data.
    await expect(page.locator("#awaiting details.code pre", has_text="np.linalg.lstsq").first).to_be_attached()
    for _ in range(2):
        await page.locator("#awaiting form.approve button").first.click()
        await expect(page.locator("#flash")).to_be_visible()
    await expect(page.locator("#awaiting form.approve")).to_have_count(0)
    await ctx.close()

    sealed_view = sealed.sealed_dir(settings.holder_dir, "residents@2") / "data" / "residents.parquet"
    assert sealed_view.is_file()  # on the holder's side

    # -- alice's panel: the run that succeeded and the one that failed end in the same words --
    for name in ("回归.ipynb", "只在真实数据上失败.ipynb"):
        await expect(runs.filter(has_text=name)).to_have_class(re.compile("enclave-sealed-run-ended"), timeout=TIMEOUT)
    states = [await runs.filter(has_text=n).locator(".enclave-label-run").inner_text()
              for n in ("回归.ipynb", "只在真实数据上失败.ipynb")]
    assert states[0] == states[1] == "ended: results go to review", states
    panel_text = await lab.locator(".enclave-sealed-runs").inner_text()
    assert "LookupError" not in panel_text and "Traceback" not in panel_text, panel_text

    # -- from alice's sandbox, before review: nothing of the runs but their states; no sealed view, no
    # raw source, no run's files, no way to the review service but her server's --
    r = alice.server_request("demo", "GET", "enclave/api/sealed-runs")
    assert r.status_code == 200, r.text
    assert all(set(run) == {"id", "release", "notebook", "submitted_at", "state", "withdrawable"}
               for run in r.json()["runs"]), r.json()
    r = alice.server_request("demo", "GET", "enclave/api/exports")
    assert r.status_code == 200 and "Sealed run of" not in r.text, r.text
    probe = [str(sealed_view), str(settings.holder_dir / "demo" / "residents" / "residents.generated.csv"),
             str(settings.holder_dir), str(settings.run_dir / "sealed"), str(settings.home / "exports"),
             "/run/enclave/exports/intake.sock"]
    kernel = alice.kernel("demo")
    out, err = kernel.run(
        "import json, os, socket\nfound = {'data': sorted(os.listdir('/data'))}\n"
        f"for p in {probe!r}:\n"
        "    try:\n        open(p, 'rb').read(1); found[p] = 'read'\n"
        "    except Exception as e:\n        found[p] = type(e).__name__\n"
        "try:\n    socket.create_connection(('127.0.0.1', %d), timeout=3); found['hub'] = 'connected'\n"
        "except Exception as e:\n    found['hub'] = type(e).__name__\n"
        "print(json.dumps(found))" % hub.port)
    kernel.close()
    assert err is None, err
    found = json.loads(out.strip().splitlines()[-1])
    assert found.pop("data") == ["residents@1", "residents@2"], found
    assert all(v in ("FileNotFoundError", "PermissionError", "OSError", "ConnectionRefusedError") for v in found.values()), found

    # -- carol and dave, appointed by heidi, release the coefficients, and of the failure its type alone --
    for reviewer in ("carol", "dave"):
        ok = await review(chromium, hub, reviewer, passwords[reviewer], "回归.ipynb",
                          {"系数.json": "回归系数，汇总结果，可以发布。"})
        failed = await review(chromium, hub, reviewer, passwords[reviewer], "只在真实数据上失败.ipynb",
                              {"error-type.txt": "只告诉申请人异常类型。"})

    # -- alice downloads them from her panel --
    entry = lab.locator(f".enclave-export[data-request-id='{ok}']")
    if not await lab.locator(".enclave-sealed-runs").is_visible():  # the panel is open since her runs
        await lab.locator('.jp-SideBar [data-id="enclave-exports"]').click()
    data = await download_from_exports_panel(alice_ctx, entry, "系数.json", TIMEOUT)
    on_real = json.loads(data.decode("utf-8"))
    # Directly on the raw file on the holder's side, treated as the release's contract says: sex from
    # the ID number (its 17th digit), income top/bottom coded at the 1st and 99th percentiles.
    raw = pd.read_csv(settings.holder_dir / "demo" / "residents" / "residents.generated.csv", dtype=str)
    income = raw["income"].astype(float)
    on_raw = coefficients_of(pd.DataFrame({
        "education": raw["education"], "income": income.clip(income.quantile(0.01), income.quantile(0.99)),
        "resident_id_sex": np.where(raw["resident_id"].str[16].astype(int) % 2 == 1, "M", "F")}))
    assert on_real == pytest.approx(on_raw)
    assert on_real != pytest.approx(on_synthetic)
    error_type = await download_from_exports_panel(
        alice_ctx, lab.locator(f".enclave-export[data-request-id='{failed}']"), "error-type.txt", TIMEOUT)
    assert error_type.decode().strip() == "LookupError"
    await alice_ctx.close()
    alice.stop("demo")

    # -- from the downloaded file back to the run, its notebook and the source --
    downloaded = tmp_path / "系数.json"
    downloaded.write_bytes(data)
    r = hub.enclave("audit", "trace", str(downloaded), "--format", "json")
    assert r.returncode == 0, r.stderr
    traced = json.loads(r.stdout)
    assert traced["released"] and traced["problems"] == [], traced["problems"]
    run = traced["sealed_run"]
    assert run["requester"] == "alice" and run["release"] == "residents@2"
    assert [s["step"] for s in run["steps"]] == ["approve", "start", "run", "end"]
    assert run["source"]["name"] == "residents" and run["source"]["sealed_view"] and run["source"]["registered"]
    assert chromium.errors == [], "\n".join(chromium.errors)
