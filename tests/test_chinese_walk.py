"""The acceptance walk of issue #17 in a real browser (Playwright, Debian's chromium) set to
``zh-CN``: the login page, the hub's home page, the spawn page, JupyterLab (its menus, the Request
export dialog, the Exports panel), the review queue and a request page render in Chinese; then
switching to English on the hub's home page switches every page from its next load on (the hub's
and the review service's at once, JupyterLab from its next start, as ``enclave.spawner``'s
``_lab_locale`` reads the choice at each start).

lin is an operator of the workspace xingzou and a reviewer of shenhe, where kai has asked for an
export. JupyterLab's display language is the one stored on the hub, else that of the browser
that asked for the start; here the test's own HTTP session asks for it, so lin first chooses
简体中文 on the home page (until then the hub's pages follow the browser).

Screenshots of each page, for the docs, go to docs/screenshots/ with ENCLAVE_UPDATE_SCREENSHOTS=1
(hub-*.png, walk-*.png); otherwise to a temporary folder, so that a test run leaves the tree as it
found it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest
from conftest import PASSWORD
from enclave_testing import CHROMIUM, CHROMIUM_ARGS, grant, log_in, wait_for
from playwright.async_api import async_playwright, expect

from enclave import accounts, languages, workspaces
from enclave.exports.service import Actor, ExportService, Upload
from enclave.settings import Settings

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = (REPO / "docs" / "screenshots" if os.environ.get("ENCLAVE_UPDATE_SCREENSHOTS") == "1"
               else Path(tempfile.gettempdir()) / "enclave-screenshots")
TIMEOUT = 90_000
LAB, REVIEW = "xingzou", "shenhe"
TITLE = "各区县户数汇总"


@pytest.fixture(scope="module")
def settings(enclave) -> Settings:
    settings = Settings(home=enclave.home)
    for name, role in (("lin", ["operator", "reviewer"]), ("kai", ["operator"])):
        accounts.add_user(settings, name, role, PASSWORD)
    workspaces.create(settings, LAB)
    workspaces.add_member(settings, LAB, "lin", "operator")
    grant(settings, LAB, "households@1")
    workspaces.create(settings, REVIEW)
    workspaces.add_member(settings, REVIEW, "kai", "operator")
    workspaces.add_member(settings, REVIEW, "lin", "reviewer")
    return settings


@pytest.fixture(scope="module")
def request_id(settings) -> str:
    """kai's export request in shenhe: a Chinese file name, columns, values and justification."""
    exports = ExportService(settings)
    try:
        return exports.submit(
            Actor("kai", frozenset({"custom:exports:request!user=kai"}), workspace=REVIEW), TITLE,
            "用于区县住房保障政策评估的汇总表，每个单元格均不少于 10 户。",
            [Upload("户数汇总.csv", "区县,户数\n和平区,120\n河西区,85\n".encode())])
    finally:
        exports.close()


async def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / name))


async def menu_bar(page) -> list[str]:
    return [t.strip() for t in await page.locator(".lm-MenuBar-itemLabel").all_inner_texts()]


async def open_lab(page, enclave) -> None:
    await page.goto(f"{enclave.user_origin('lin')}/user/lin/{LAB}/lab")
    await page.wait_for_selector(".jp-LabShell")
    await page.wait_for_selector("#jupyterlab-splash", state="detached")


def restart_lab(lin) -> None:
    """Stop lin's sandbox of xingzou and start it again (as the home page's buttons do)."""
    assert lin.hub_api("DELETE", f"/users/lin/servers/{LAB}").status_code in (202, 204)
    wait_for(lambda: LAB not in lin.hub_api("GET", "/users/lin").json().get("servers", {}), 60,
             "lin's sandbox to stop")
    assert lin.start(LAB).status_code == 200


async def test_a_chinese_browser_walks_through_enclave_then_switches_to_english(enclave, settings, request_id):
    # lin's sessions for what the walk does behind the browser's back: one starts, one watches.
    lin, watcher = enclave.login("lin", PASSWORD), enclave.login("lin", PASSWORD)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            page.set_default_timeout(TIMEOUT)

            # The login page, before anyone is known: the browser's language.
            await page.goto(f"{enclave.url}/hub/login")
            await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
            await expect(page.locator("h1")).to_have_text("登录")
            await expect(page.locator("label[for=username_input]")).to_have_text("用户名：")
            await screenshot(page, "hub-login.png")

            # The home page, in the browser's language until lin chooses.
            await log_in(page, enclave, "lin", PASSWORD)
            await expect(page.locator("h1")).to_have_text("我的工作空间")
            await expect(page.locator("#language-from-browser")).to_be_visible()
            await expect(page.locator("#workspaces thead")).to_contain_text("已发布数据（/data）")
            await expect(page.locator(f"#review-{REVIEW}")).to_have_text("审核导出")
            await expect(page.locator("#nav-home")).to_have_text("首页")
            await screenshot(page, "hub-home.png")
            # Choosing 简体中文 stores it: JupyterLab (on another origin) follows the stored choice.
            await page.click("#language-zh_CN")
            await expect(page.locator("#language-from-browser")).to_have_count(0)
            assert languages.language_of(settings, "lin") == "zh_CN"

            # The spawn page while the sandbox starts (the start is asked for as the home page's
            # button asks; the page is opened once the hub has it pending), then JupyterLab.
            starting = asyncio.create_task(asyncio.to_thread(lin.start, LAB))
            await asyncio.to_thread(wait_for, lambda: LAB in watcher.hub_api("GET", "/users/lin").json()["servers"], 60,
                                    "the hub to have lin's start pending")
            await page.goto(f"{enclave.url}/hub/spawn-pending/lin/{LAB}")
            await expect(page.locator("#starting")).to_have_text(f"您在工作空间 {LAB} 的沙箱正在启动。")
            await expect(page.locator("#stop-server-btn")).to_have_text("停止沙箱")
            await screenshot(page, "hub-spawn-pending.png")
            assert (await starting).status_code == 200
            r = lin.server_api(LAB, "PUT", "/contents/结果说明.txt",
                               json={"type": "file", "format": "text", "content": "各区县户数汇总\n"})
            assert r.status_code in (200, 201), r.text

            await open_lab(page, enclave)
            await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
            bar = await menu_bar(page)
            assert "文件" in bar and "编辑" in bar and "File" not in bar, bar
            tab = page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="filebrowser"]')
            if "lm-mod-current" not in (await tab.get_attribute("class") or ""):
                await tab.click()
            await page.locator(".jp-DirListing-item", has_text="结果说明.txt").first.click(button="right")
            await page.locator(".lm-Menu .lm-Menu-itemLabel", has_text="申请导出…").click()
            dialog = page.locator(".jp-Dialog")
            await expect(dialog.locator(".jp-Dialog-header")).to_have_text("申请导出")
            await expect(dialog.locator(".jp-Dialog-button.jp-mod-accept")).to_have_text("提交审核")
            await expect(dialog).to_contain_text("申请理由（必填）")
            await expect(dialog).not_to_contain_text("正在运行自动检查")  # the checks have answered
            await screenshot(page, "walk-lab-request-export.png")
            await dialog.locator(".jp-Dialog-button.jp-mod-reject").click()
            await expect(dialog).to_have_count(0)
            await page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="enclave-exports"]').click()
            await expect(page.locator(".enclave-exports h2")).to_have_text("导出申请")
            await expect(page.locator(".enclave-exports-empty")).to_be_visible()
            await expect(page.locator(".enclave-exports-empty")).to_contain_text("还没有导出申请。")
            await screenshot(page, "walk-lab-exports.png")

            # The review queue and the request, on the review service's own origin.
            await page.goto(f"{enclave.url}/hub/home")
            await page.click(f"#review-{REVIEW}")
            await expect(page.locator("h1")).to_have_text("审核队列")
            await expect(page.locator("h2").last).to_have_text("全部导出申请")
            await page.locator("a", has_text=TITLE).first.click()
            await page.wait_for_url(f"**/requests/{request_id}**")
            await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
            await expect(page.locator("h2", has_text="文件")).to_be_visible()
            await expect(page.locator("body")).to_contain_text("户数汇总.csv")
            await screenshot(page, "walk-review-request.png")
            await page.go_back()
            await screenshot(page, "walk-review-queue.png")

            # English, chosen on the home page: the hub's and the review service's pages follow at
            # their next load, the browser still asking for Chinese.
            await page.goto(f"{enclave.url}/hub/home")
            await page.click("#language-en")
            await page.wait_for_url("**/hub/home")
            await expect(page.locator("html")).to_have_attribute("lang", "en")
            await expect(page.locator("h1")).to_have_text("Your workspaces")
            await expect(page.locator("#nav-home")).to_have_text("Home")
            await page.click(f"#review-{REVIEW}")
            await expect(page.locator("h1")).to_have_text("Review queue")
            await page.goto(f"{enclave.service_url('exports')}/requests/{request_id}")
            await expect(page.locator("h2", has_text="Files")).to_be_visible()
            # JupyterLab keeps the language it started with until its next start.
            await open_lab(page, enclave)
            assert "文件" in await menu_bar(page)
            await asyncio.to_thread(restart_lab, lin)
            await open_lab(page, enclave)
            bar = await menu_bar(page)
            assert "File" in bar and "文件" not in bar, bar
            await context.close()
        finally:
            await browser.close()
            lin.hub_api("DELETE", f"/users/lin/servers/{LAB}")
