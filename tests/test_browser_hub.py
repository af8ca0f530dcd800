"""The hub's pages in a real browser (Playwright driving Debian's chromium)."""

from __future__ import annotations

import pytest
from conftest import PASSWORD
from enclave_testing import CHROMIUM, CHROMIUM_ARGS, log_in
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
