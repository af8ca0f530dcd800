"""JupyterLab in a real browser (Playwright driving Debian's chromium), as an operator.

* The download, open-in-new-tab, copy-download-link and export-as entries are absent from the file
  browser's context menu and the File menu; "Request export…" is there. JupyterLab works under the
  guard's Content-Security-Policy (it loads, opens a notebook and runs a cell).
* The export flow: the Request export dialog shows the automated checks and submits; the Exports
  panel shows the request; after the required reviewers approve through the review service, the
  operator downloads the released file from the panel's link.
"""

from __future__ import annotations

import pytest
import requests
from enclave_testing import CHROMIUM, CHROMIUM_ARGS, log_in
from playwright.async_api import async_playwright, expect

pytestmark = pytest.mark.browser

PASSWORD = "correct-horse-battery-staple"  # tests/conftest.py's accounts
ABSENT = ("Download", "Open in New Browser Tab", "Copy Download Link", "Copy Shareable Link")
TIMEOUT = 90_000


@pytest.fixture
async def browser():
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def login(browser, hub, username: str):
    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT)
    await log_in(page, hub, username, PASSWORD)
    return context, page


async def open_lab(page, hub, username: str, workspace: str):
    await page.goto(f"{hub.user_origin(username)}/user/{username}/{workspace}/lab")
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


def _service_registered(hub) -> bool:
    # Unregistered, the path falls through to the hub, which answers 404.
    return requests.get(f"{hub.service_url('exports')}/", timeout=10, allow_redirects=False).status_code != 404


@pytest.fixture(scope="session")
def review_hub(hub_factory):
    """A hub whose workspace policy needs one approval (alpha has one reviewer, carol)."""
    hub = hub_factory("review", ENCLAVE_SANDBOX__IDLE_TIMEOUT="0", ENCLAVE_EXPORTS__APPROVALS_REQUIRED="1")
    for name, role in (("alice", "operator"), ("carol", "reviewer")):
        r = hub.enclave("user", "add", name, "--role", role, "--password-stdin", input=PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
    for args in (("workspace", "create", "alpha"),
                 ("workspace", "add-member", "alpha", "alice", "--role", "operator"),
                 ("workspace", "add-member", "alpha", "carol", "--role", "reviewer")):
        r = hub.enclave(*args)
        assert r.returncode == 0, (args, r.stderr)
    hub.start()
    assert _service_registered(hub), "the export review service is not registered in the hub"
    return hub


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
    await rpage.locator("form.transition:has(input[value=approved]) textarea").fill("Approved for the report.")
    await rpage.locator("form.transition:has(input[value=approved]) button").click()
    await rpage.wait_for_load_state()
    await rctx.close()

    # The operator's panel shows the release, and its link leads to the download.
    link = entry.locator("a.enclave-export-download")
    await expect(link).to_be_visible(timeout=TIMEOUT)
    async with context.expect_page() as new_page:
        await link.click()
    service_page = await new_page.value
    service_page.set_default_timeout(TIMEOUT)
    async with service_page.expect_download() as download:
        await service_page.locator("button", has_text="Download counts.csv").click()
    path = await (await download.value).path()
    data = open(path, "rb").read()
    assert b"Heping" in data
    await context.close()
    alice.stop("alpha")
