"""JupyterLab in a real browser (Playwright driving Debian's chromium), as an operator.

* The download, open-in-new-tab, copy-download-link and export-as entries are absent from the file
  browser's context menu and the File menu; "Request export…" is there. JupyterLab works under the
  guard's Content-Security-Policy (it loads, opens a notebook and runs a cell).
* The export flow: the Request export dialog shows the automated checks and submits; the Exports
  panel shows the request; after the required reviewers approve through the review service, the
  operator downloads the released file from the panel's link.
"""

from __future__ import annotations

import re
import uuid

import pytest
from enclave_testing import download_from_exports_panel, log_in
from playwright.async_api import expect

pytestmark = pytest.mark.browser

PASSWORD = "correct-horse-battery-staple"  # tests/conftest.py's accounts
ABSENT = ("Download", "Open in New Browser Tab", "Copy Download Link", "Copy Shareable Link")
TIMEOUT = 90_000


async def login(browser, hub, username: str):
    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT)
    await log_in(page, hub, username, PASSWORD)
    return context, page


async def open_lab(page, hub, username: str, workspace: str):
    await page.goto(f"{hub.user_origin(username)}/user/{username}/{workspace}/lab")
    await show_file_browser(page)


async def show_file_browser(page):
    """The file browser in the left area (Lab restores whichever panel was open last)."""
    # Lab has restored its layout once the splash screen is gone.
    await page.wait_for_selector(".jp-LabShell", timeout=TIMEOUT)
    await page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=TIMEOUT)
    tab = page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="filebrowser"]')
    if "lm-mod-current" not in (await tab.get_attribute("class") or ""):
        await tab.click()
    await page.wait_for_selector(".jp-DirListing-content", timeout=TIMEOUT)


async def menu_labels(page) -> list[str]:
    await page.locator(".lm-Menu").first.wait_for(state="visible")
    return [t.strip() for t in await page.locator(".lm-Menu .lm-Menu-itemLabel").all_inner_texts() if t.strip()]


async def context_menu_on(page, name: str) -> list[str]:
    item = page.locator(".jp-DirListing-item", has_text=name).first
    await item.click(button="right")
    labels = await menu_labels(page)
    return labels


async def test_download_entries_are_absent(browser, enclave, alice, alice_kernel):
    out, err = alice_kernel.run("import pathlib\n(pathlib.Path.home() / 'table.csv').write_text('a,b\\n1,2\\n')\nprint('ok')")
    assert err is None
    errors: list[str] = []
    context, page = await login(browser, enclave, "alice")
    page.on("console", lambda m: m.type == "error" and "Content Security Policy" in m.text and errors.append(m.text))
    await open_lab(page, enclave, "alice", "alpha")

    labels = await context_menu_on(page, "table.csv")
    assert "Request export…" in labels
    for entry in ABSENT:
        assert entry not in labels
    await page.keyboard.press("Escape")

    await page.locator(".lm-MenuBar-itemLabel", has_text="File").first.click()
    labels = await menu_labels(page)
    assert "Save and Export Notebook As" not in labels and "Download" not in labels
    assert "Print…" not in labels
    await page.keyboard.press("Escape")

    # JupyterLab still works under the CSP: a notebook opens and runs.
    await page.locator(".lm-MenuBar-itemLabel", has_text="File").first.click()
    await page.locator(".lm-Menu-itemLabel", has_text="New").first.hover()
    await page.locator(".lm-Menu-itemLabel", has_text="Notebook").first.click()
    # JupyterLab asks which kernel; the only one offered is the sandboxed kernel.
    await expect(page.locator(".jp-Dialog", has_text="Select Kernel")).to_be_visible()
    assert "Python 3 (ipykernel)" not in await page.locator(".jp-Dialog").inner_text()
    await page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").click()
    await expect(page.locator(".jp-StatusBar-Widget", has_text="Idle").first).to_be_visible(timeout=TIMEOUT)
    cell = page.locator(".jp-Notebook .jp-Cell .cm-content").first
    await cell.click()
    await page.keyboard.type("print(6 * 7)")
    await page.keyboard.press("Shift+Enter")
    await expect(page.locator(".jp-OutputArea-output", has_text="42").first).to_be_visible(timeout=TIMEOUT)
    assert not errors, errors
    await context.close()


async def test_csv_upload_is_refused_in_the_file_browser(browser, enclave, alice, alice_kernel):
    context, page = await login(browser, enclave, "alice")
    await open_lab(page, enclave, "alice", "alpha")
    async with page.expect_file_chooser() as chooser:
        await page.locator('.jp-FileBrowser [data-command="filebrowser:upload"], .jp-FileBrowser .jp-id-upload').first.click()
    await (await chooser.value).set_files(
        {"name": "outside.csv", "mimeType": "text/csv", "buffer": b"id,name\n1,Ada\n"})
    dialog = page.locator(".jp-Dialog")
    await expect(dialog).to_contain_text("only notebooks and code or text files can be uploaded")
    await dialog.locator(".jp-Dialog-button").first.click()
    out, err = alice_kernel.run("import pathlib\nprint((pathlib.Path.home() / 'outside.csv').exists())")
    assert out.strip() == "False"
    await context.close()


async def test_request_export_flow(browser, review_hub):
    hub = review_hub
    alice = hub.login("alice", PASSWORD)
    assert alice.start("alpha").status_code == 200
    kernel = alice.kernel("alpha")
    out, err = kernel.run(
        "import pathlib\n(pathlib.Path.home() / 'counts.csv').write_text('district,count\\nHeping,35\\nNanshan,40\\n')\n"
        "print('ok')")
    assert err is None
    kernel.close()

    context, page = await login(browser, hub, "alice")
    await open_lab(page, hub, "alice", "alpha")
    await context_menu_on(page, "counts.csv")
    await page.locator(".lm-Menu-itemLabel", has_text="Request export…").click()
    dialog = page.locator(".jp-Dialog")
    # The automated checks of the review service appear before anything is submitted.
    await expect(dialog.locator(".enclave-check").first).to_be_visible(timeout=TIMEOUT)
    await expect(dialog.locator(".enclave-check").first).to_contain_text("counts.csv")
    await dialog.locator("textarea.enclave-justification").fill("District counts for the annual report.")
    await dialog.locator(".jp-Dialog-button", has_text="Submit for review").click()
    await expect(page.locator(".jp-Dialog", has_text="Export requested")).to_be_visible(timeout=TIMEOUT)
    await page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").click()

    await page.locator('.jp-SideBar [data-id="enclave-exports"]').click()
    entry = page.locator(".enclave-export", has_text="counts.csv")
    await expect(entry).to_be_visible(timeout=TIMEOUT)
    request_id = await entry.get_attribute("data-request-id")

    # carol reviews through the review service's pages.
    rctx, rpage = await login(browser, hub, "carol")
    await rpage.goto(f"{hub.service_url('exports')}/requests/{request_id}")
    await rpage.locator("form.vote textarea").fill("Counts above threshold; rounded.")
    await rpage.locator("form.vote button").click()
    await rpage.wait_for_load_state()
    # The vote decides the request (one approval required); a request-level step, where the service
    # asks for one, is offered on the page.
    approve = rpage.locator("form.transition:has(input[value=approved])")
    if await approve.count():
        await approve.locator("textarea").fill("Approved for the report.")
        await approve.locator("button").click()
        await rpage.wait_for_load_state()
    await rctx.close()

    # The operator's panel shows the release, and its link leads to the download.
    data = await download_from_exports_panel(context, entry, "counts.csv", TIMEOUT)
    assert b"Heping" in data
    await context.close()
    alice.stop("alpha")


async def test_exports_panel_for_an_operator_without_requests(browser, review_hub):
    """bob: the panel's empty state; "Request export…" first when searching "export"; a notebook
    opens with no console error (no closed route asked for); once his server stops, the panel stops
    asking and offers "Retry"."""
    hub = review_hub
    bob = hub.login("bob", PASSWORD)
    assert bob.start("alpha").status_code == 200
    kernel = bob.kernel("alpha")
    out, err = kernel.run(
        "import json, pathlib\n(pathlib.Path.home() / '分析.ipynb').write_text(json.dumps({'cells': [{'cell_type':"
        " 'code', 'metadata': {}, 'source': 'print(6 * 7)', 'outputs': [], 'execution_count': None}],"
        " 'metadata': {'kernelspec': {'name': 'enclave-python', 'display_name': 'Python'}}, 'nbformat': 4,"
        " 'nbformat_minor': 5}))\nprint('ok')")
    assert err is None
    kernel.close()
    context, page = await login(browser, hub, "bob")
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    await open_lab(page, hub, "bob", "alpha")

    await page.locator('.jp-SideBar [data-id="enclave-exports"]').click()
    await expect(page.locator(".enclave-exports-empty")).to_be_visible()
    await expect(page.locator(".enclave-exports-empty")).to_contain_text("No export requests yet")

    await page.keyboard.press("Control+Shift+C")
    await page.keyboard.type("export")
    first = page.locator(".lm-CommandPalette-item").first
    await expect(first).to_contain_text("Request export…")
    assert await page.locator(".lm-CommandPalette-item", has_text="Export Workspace").count() == 0
    await page.keyboard.press("Escape")

    await show_file_browser(page)
    await page.locator(".jp-DirListing-item", has_text="分析.ipynb").dblclick()
    await expect(page.locator(".jp-StatusBar-Widget", has_text="Idle").first).to_be_visible(timeout=TIMEOUT)
    await page.locator(".jp-Notebook .jp-Cell").first.click()
    await page.keyboard.press("Shift+Enter")
    await expect(page.locator(".jp-OutputArea-output", has_text="42").first).to_be_visible(timeout=TIMEOUT)
    assert not errors, errors

    await page.locator('.jp-SideBar [data-id="enclave-exports"]').click()
    await expect(page.locator(".enclave-exports-empty")).to_be_visible()
    asked: list[str] = []
    page.on("request", lambda r: "/enclave/api/exports" in r.url and asked.append(r.url))
    bob.stop("alpha")
    status = page.locator(".enclave-exports-status")
    # The hub answers for a stopped server (a 424, or a redirect the browser cannot follow): the
    # panel backs off, then stops.
    await expect(status).to_contain_text("The panel stopped updating", timeout=4 * TIMEOUT)
    await expect(status.locator("button", has_text="Retry")).to_be_visible()
    after_stop = len(asked)
    # Three polling periods: a panel still polling would have asked again.
    await page.wait_for_timeout(15_000)
    assert len(asked) == after_stop, asked[after_stop:]
    # JupyterLab's own notice of the stopped server, dismissed; then "Retry" asks again.
    notice = page.locator(".jp-Dialog", has_text="Server unavailable or unreachable")
    await expect(notice).to_be_visible()
    await notice.locator(".jp-Dialog-button.jp-mod-reject").click()
    async with page.expect_request(lambda r: "/enclave/api/exports" in r.url):
        await status.locator("button", has_text="Retry").click()
    await context.close()


async def test_failing_checks_confirmation_and_a_new_version_from_the_panel(browser, review_hub, decide, service_call):
    """alice requests export of a file whose checks fail: a dialog names the file and the failing
    check before anything is sent. In the panel, checks and decision are separate labels. carol
    returns it; from the panel (opened by its URL on that request) alice sends a new version from
    another path and resubmits."""
    hub = review_hub
    alice, carol = hub.login("alice", PASSWORD), hub.login("carol", PASSWORD)
    carol.http.get(f"{hub.service_url('exports')}/")  # the service's OAuth hand-shake
    assert alice.start("alpha").status_code == 200
    name = f"名单-{uuid.uuid4().hex[:6]}.csv"
    kernel = alice.kernel("alpha")
    out, err = kernel.run(
        "import pathlib\nh = pathlib.Path.home()\n"
        f"(h / {name!r}).write_text('id,姓名,邮箱\\n1,张三,zhangsan@example.com\\n2,李四,lisi@example.com\\n',"
        " encoding='utf-8')\n"
        f"(h / 'v2').mkdir(exist_ok=True)\n(h / 'v2' / {name!r}).write_text('区县,户数\\n和平区,125\\n南山区,140\\n',"
        " encoding='utf-8')\nprint('ok')")
    assert err is None
    kernel.close()

    context, page = await login(browser, hub, "alice")
    await open_lab(page, hub, "alice", "alpha")
    await context_menu_on(page, name)
    await page.locator(".lm-Menu-itemLabel", has_text="Request export…").click()
    dialog = page.locator(".jp-Dialog", has_text="Request export")
    await expect(dialog.locator(".enclave-check-fail")).to_be_visible(timeout=TIMEOUT)
    # The justification comes first, above the files and their checks.
    boxes = await dialog.locator("textarea.enclave-justification, .enclave-request-scroll").all()
    assert await boxes[0].evaluate("n => n.tagName") == "TEXTAREA"
    await dialog.locator("textarea.enclave-justification").fill("名单，用于核对。")
    await dialog.locator(".jp-Dialog-button", has_text="Submit for review").click()
    confirm = page.locator(".jp-Dialog", has_text="Send despite failing checks?")
    await expect(confirm).to_be_visible()
    await expect(confirm.locator(".enclave-failing-file")).to_contain_text(name)
    failing = await confirm.locator(".enclave-failing-check").all_inner_texts()
    assert failing and all(":" in f for f in failing), failing
    await confirm.locator(".jp-Dialog-button", has_text="Send anyway").click()
    await expect(page.locator(".jp-Dialog", has_text="Export requested")).to_be_visible(timeout=TIMEOUT)
    await page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").click()

    await page.locator('.jp-SideBar [data-id="enclave-exports"]').click()
    entry = page.locator(".enclave-export", has_text=name)
    await expect(entry).to_be_visible(timeout=TIMEOUT)
    request_id = await entry.get_attribute("data-request-id")
    file = entry.locator(".enclave-export-file")
    await expect(file.locator(".enclave-label-checks")).to_have_text("checks: fail")
    await expect(file.locator(".enclave-label-decision")).to_have_text("decision: awaiting review")
    await expect(entry.locator(".enclave-export-new-version")).to_have_count(0)

    decide(carol, request_id, "request_changes", "含有个人记录，请只导出汇总。")
    # The review service's request page links to the panel on this request.
    await page.goto(f"{hub.user_origin('alice')}/user/alice/alpha/lab?enclave-exports={request_id}")
    entry = page.locator(f'.enclave-export[data-request-id="{request_id}"]')
    await expect(entry).to_be_visible(timeout=TIMEOUT)
    await expect(entry).to_have_class(re.compile("enclave-export-focused"))
    await expect(entry.locator(".enclave-label-state")).to_have_text("returned: changes requested")
    await expect(entry.locator(".enclave-export-returned")).to_contain_text("含有个人记录，请只导出汇总。")
    await expect(entry.locator(".enclave-export-resubmit")).to_have_count(0)

    await entry.locator(".enclave-export-new-version").click()
    chooser = page.locator(".jp-Dialog", has_text="Send a new version")
    path = chooser.locator("input.enclave-new-version-path")
    await expect(path).to_have_value(name)
    await path.fill(f"v2/{name}")
    await chooser.locator(".jp-Dialog-button", has_text="Run the checks").click()
    checked = page.locator(".jp-Dialog", has_text="The new versions, checked")
    await expect(checked.locator(".enclave-check")).to_contain_text(f"from v2/{name}", timeout=TIMEOUT)
    await checked.locator(".jp-Dialog-button", has_text="Send").click()
    sent = page.locator(".jp-Dialog", has_text="New version sent")
    await expect(sent).to_contain_text(f"{name} (v2)", timeout=TIMEOUT)
    await sent.locator(".jp-Dialog-button", has_text="Resubmit now").click()
    await expect(entry.locator(".enclave-label-state")).to_have_text("submitted", timeout=TIMEOUT)
    await expect(entry.locator(".enclave-export-file-name")).to_have_text(f"{name} (v2)")
    stored = service_call(carol, "GET", f"requests/{request_id}").json()
    assert stored["state"] == "submitted" and stored["files"][0]["version"] == 2
    await context.close()
