"""The hub's pages in a real browser (Playwright driving Debian's chromium)."""

from __future__ import annotations

import re

import pytest
from conftest import PASSWORD
from enclave_testing import CHROMIUM, CHROMIUM_ARGS, log_in, wait_for
from playwright.async_api import async_playwright, expect

pytestmark = pytest.mark.browser

TIMEOUT = 90_000


@pytest.fixture
async def page():
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        page.set_default_timeout(TIMEOUT)
        yield page
        await browser.close()


async def login(page, hub, username: str) -> None:
    await log_in(page, hub, username, PASSWORD)


async def test_operator_starts_a_workspace_from_the_home_page(page, enclave):
    await login(page, enclave, "bob")
    table = page.locator("#workspaces")
    await expect(table).to_contain_text("alpha")
    await expect(table).to_contain_text("households@1")
    await expect(table).not_to_contain_text("beta")  # not bob's workspace
    await page.click("#start-alpha")
    await page.wait_for_url("**/user/bob/alpha/lab**")
    await page.wait_for_selector(".jp-DirListing-content")
    await page.goto(f"{enclave.url}/hub/home")
    await page.click("#stop-alpha")
    await expect(page.locator("#start-alpha")).to_be_visible()


async def test_spawn_pending_page_shows_why_a_sandbox_failed(page, enclave):
    release = enclave.home / "releases" / "secret@1"
    moved = release.with_name("secret-moved-browser")
    release.rename(moved)
    try:
        await login(page, enclave, "erin")
        await page.goto(f"{enclave.url}/hub/spawn/erin/beta")
        await expect(page.locator("body")).to_contain_text("not in the release store", timeout=60_000)
        await expect(page.locator("body")).to_contain_text("secret@1")
    finally:
        moved.rename(release)


async def test_reviewer_sees_no_start_button(page, enclave):
    await login(page, enclave, "carol")
    row = page.locator("#workspaces tr", has_text="alpha")
    await expect(row).to_contain_text("reviewer")
    await expect(row.locator(".start-server")).to_have_count(0)


async def test_reviewer_follows_the_home_page_link_to_the_workspace_review_queue(page, enclave):
    await login(page, enclave, "carol")
    link = page.locator("#workspaces tr", has_text="alpha").locator("a.review-queue")
    await expect(link).to_have_text("review exports")
    await link.click()
    await page.wait_for_url(f"{enclave.service_url('exports')}/queue?workspace=alpha")
    await expect(page.locator("h1")).to_contain_text("Review queue")


async def test_admin_page_offers_only_actions_that_work(page, enclave):
    """JupyterHub's own admin page offered adding users, starting and opening servers, none of which
    an Enclave admin may do; Enclave's lists what runs, and its one action, stopping a sandbox, works."""
    erin = enclave.login("erin", PASSWORD)
    assert erin.start("beta").status_code == 200
    errors = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await login(page, enclave, "root-admin")
    await page.click("a.nav-link:text-is('Admin')")
    await page.wait_for_url("**/hub/admin")
    body = page.locator("body")
    await expect(page.locator("#admin-workspaces")).to_contain_text("alpha")
    await expect(page.locator("#accounts")).to_contain_text("erin")
    for stock in ("Add Users", "Start Server", "Access Server", "Edit User", "Shutdown Hub"):
        await expect(body).not_to_contain_text(stock)
    # The page's one kind of action: a stop button per running sandbox (erin's, and those other
    # tests left running, not clicked here). Stopping asks first, then stops.
    actions = page.locator("#enclave-admin").locator("button, a[role=button], form, input[type=submit]")
    assert await actions.count() == await page.locator(".sandbox-row .stop-sandbox").count() >= 1
    row = page.locator(".sandbox-row[data-user='erin'][data-workspace='beta']")
    await expect(row).to_contain_text("running")
    asked = []

    async def confirm(dialog):
        asked.append(dialog.message)
        await dialog.accept()

    page.on("dialog", confirm)
    await row.locator(".stop-sandbox").click()
    await expect(row.locator(".sandbox-state")).to_have_text(re.compile("stopping|stopped"))
    assert asked and "erin" in asked[0] and "beta" in asked[0]
    await expect(page.locator("#stop-error")).to_be_hidden()
    wait_for(lambda: "beta" not in erin.hub_api("GET", "/users/erin").json().get("servers", {}), 60,
             "erin's sandbox to stop")
    await page.reload()
    await expect(page.locator(".sandbox-row[data-user='erin']")).to_have_count(0)
    assert not errors, errors
