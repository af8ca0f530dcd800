"""JupyterLab in the operator's language (issue #17): JupyterLab's own strings from the zh_CN language
pack, the guard's ("Request export…", the Exports panel, dialogs, upload notices) from the
catalogue shipped with the extension, and the display language set from the person's choice stored
on the hub (``enclave.languages``), not from a settings file the operator edits.

* The guard's catalogue is complete: every string the lab extension translates, and every refusal
  and notice the server extension translates (``N_`` in ``enclave_guard/*.py``), has a zh_CN
  translation with the same placeholders, and the catalogue holds nothing the guard no longer says.
* The spawner gives Lab the stored language as a generated, read-only app settings file outside the
  home; kernel code cannot reach it, and a server whose app settings are in the home refuses to start.
* In a real browser: an operator whose stored language is zh_CN sees Lab's menus and the guard's
  menu item, dialog and Exports panel in Chinese (screenshots for docs/screenshots/ with
  ENCLAVE_UPDATE_SCREENSHOTS=1); an operator who has chosen none sees English.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest
from enclave_testing import log_in
from playwright.async_api import expect

from enclave import accounts, languages, workspaces
from enclave.sandbox.policy import LAB_APP_SETTINGS, Identity, Limits, SandboxLayout, lab_overrides, server_policy
from enclave.settings import Settings
from enclave.spawner import LAB_LANGUAGE_SETTINGS

# The server helpers live in this folder's conftest.py (loaded once, as test_server_channels does).
if "guard_conftest" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("guard_conftest", Path(__file__).with_name("conftest.py"))
    sys.modules["guard_conftest"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["guard_conftest"])
start_server = sys.modules["guard_conftest"].start_server

PASSWORD = "correct-horse-battery-staple"  # tests/conftest.py's accounts
REPO = Path(__file__).resolve().parents[2]
EXTENSION = REPO / "extensions" / "enclave_guard"
CATALOGUE = EXTENSION / "enclave_guard" / "locale" / "zh_CN" / "LC_MESSAGES" / "enclave_guard.json"
# The docs' screenshots are rewritten only on request (ENCLAVE_UPDATE_SCREENSHOTS=1): a test run
# leaves the tree as it found it.
SCREENSHOTS = (REPO / "docs" / "screenshots" if os.environ.get("ENCLAVE_UPDATE_SCREENSHOTS") == "1"
               else Path(tempfile.gettempdir()) / "enclave-screenshots")
WORKSPACE = "yuyan"
TIMEOUT = 90_000

# trans.__('…', …) and trans._n('…', '…', n, …) in the extension's sources (single-quoted literals,
# as the sources are formatted).
LITERAL = r"'((?:[^'\\]|\\.)*)'"
CALL = re.compile(rf"trans\.(__|_n)\(\s*{LITERAL}(?:\s*,\s*{LITERAL})?")
# JupyterLab's (%1) and Python's (%(name)s, and %% for a percent sign).
PLACEHOLDER = re.compile(r"%\d+|%\(\w+\)[sd]|%%")


def _unescape(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal)


def source_messages() -> dict[str, str | None]:
    """Each message the guard translates, with its plural form (None for a singular): the lab
    extension's, and the server extension's refusals and notices (``N_("...")``)."""
    messages: dict[str, str | None] = {}
    for source in sorted((EXTENSION / "src").glob("*.ts")):
        for kind, singular, plural in CALL.findall(source.read_text(encoding="utf-8")):
            messages[_unescape(singular)] = _unescape(plural) if kind == "_n" else None
    for source in sorted((EXTENSION / "enclave_guard").glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "N_":
                messages[node.args[0].value] = None
    return messages


def test_the_guards_catalogue_translates_every_string_of_the_lab_extension():
    messages = source_messages()
    assert "Request export…" in messages and "Exports" in messages  # the extraction finds them
    assert "%(path)s: %(size)s bytes is over the %(limit_mib)s MiB upload limit" in messages
    catalogue = json.loads(CATALOGUE.read_text(encoding="utf-8"))
    header = catalogue.pop("")
    assert header["domain"] == "enclave_guard" and header["plural_forms"] == "nplurals=1; plural=0;"
    assert not messages.keys() - catalogue.keys(), f"no zh_CN translation: {sorted(messages.keys() - catalogue.keys())}"
    assert not catalogue.keys() - messages.keys(), f"not in the sources: {sorted(catalogue.keys() - messages.keys())}"
    for msgid, plural in messages.items():
        translation = catalogue[msgid]
        # Lab takes a plural's translation only from a list of more than one form (Chinese has
        # one: the second stays empty), a singular's only from a list of one.
        assert len(translation) == (2 if plural else 1), msgid
        assert translation[0].strip(), f"empty translation of {msgid!r}"
        for source in (msgid, plural) if plural else (msgid,):
            assert sorted(PLACEHOLDER.findall(translation[0])) == sorted(PLACEHOLDER.findall(source)), msgid


def test_lab_overrides_take_only_the_languages_enclave_has():
    assert json.loads(lab_overrides("zh_CN"))["@jupyterlab/translation-extension:plugin"] == {"locale": "zh_CN"}
    with pytest.raises(ValueError, match="display language must be one of en, zh_CN"):
        lab_overrides("../../home/alice")


def test_the_servers_sandbox_gets_the_language_as_a_read_only_file_outside_the_home(tmp_path):
    layout = SandboxLayout(
        env=REPO / ".venv-sandbox", home=tmp_path / "home", home_image=tmp_path / "home.ext4", run=tmp_path / "run",
        hub_socket_dir=tmp_path / "hub", exports_socket_dir=tmp_path / "exports", data=(),
        lab_state=tmp_path / "lab-state")
    policy = server_policy(layout, Identity(200_001, 200_001, "wei", "/home/wei"),
                           Limits(1024, 128, 1.0, 64, disk_mb=128, tmp_mb=32), "wei-yuyan", {}, lab_locale="zh_CN")
    assert f"--LabApp.app_settings_dir={LAB_APP_SETTINGS}" in policy.argv
    (overrides,) = [m for m in policy.mounts if m.target.startswith(LAB_APP_SETTINGS)]
    assert overrides.kind == "file" and overrides.target == f"{LAB_APP_SETTINGS}/overrides.json"
    assert overrides.content == lab_overrides("zh_CN")


def test_server_refuses_app_settings_in_the_home(tmp_path):
    """Lab reads overrides and page config from its app settings dir: in the home, kernel code
    could write them, so the guard stops the server."""
    with pytest.raises(RuntimeError, match="exited") as exc:
        start_server(tmp_path, {}, [f"--LabApp.app_settings_dir={tmp_path / 'home' / 'lab-settings'}"])
    assert "LabApp.app_settings_dir" in str(exc.value) and "in the home" in str(exc.value)


def test_kernel_code_cannot_reach_the_lab_app_settings(alice_kernel):
    out, err = alice_kernel.run(
        "import os\n"
        f"print(os.path.exists({LAB_APP_SETTINGS!r}))\n"
        "try:\n"
        f"    open({LAB_APP_SETTINGS + '/overrides.json'!r}, 'w').write('{{}}')\n"
        "    print('written')\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n")
    assert err is None
    assert out.split() == ["False", "FileNotFoundError"]


# -- in a real browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(enclave) -> Settings:
    """The workspace yuyan with the operators wei (who chose Chinese) and olivia (who chose none),
    accounts of this module's own so that other tests' users keep their language."""
    settings = Settings(home=enclave.home)
    workspaces.create(settings, WORKSPACE)
    for name in ("wei", "olivia"):
        accounts.add_user(settings, name, ["operator"], PASSWORD)
        workspaces.add_member(settings, WORKSPACE, name, "operator")
    languages.set_language(settings, "wei", "zh_CN")
    return settings


async def open_lab(browser, hub, username: str):
    """``username``'s Lab in yuyan, with a text file of a Chinese name in the home, the file browser shown.
    The browser asks for English: the display language is the stored choice, not the browser's."""
    session = hub.login(username, PASSWORD)
    r = session.start(WORKSPACE)
    assert r.status_code == 200, r.text[:500]
    r = session.server_api(WORKSPACE, "PUT", "/contents/结果说明.txt",
                           json={"type": "file", "format": "text", "content": "各区县户数汇总\n"})
    assert r.status_code in (200, 201), r.text
    context = await browser.new_context(locale="en-US", viewport={"width": 1200, "height": 720})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT)
    await log_in(page, hub, username, PASSWORD)
    await page.goto(f"{hub.user_origin(username)}/user/{username}/{WORKSPACE}/lab")
    await page.wait_for_selector(".jp-LabShell")
    await page.wait_for_selector("#jupyterlab-splash", state="detached")
    tab = page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="filebrowser"]')
    if "lm-mod-current" not in (await tab.get_attribute("class") or ""):
        await tab.click()
    await page.wait_for_selector(".jp-DirListing-content")
    return context, page


async def screenshot(page, name: str) -> None:
    """A screenshot of the page (for docs/screenshots/ with ENCLAVE_UPDATE_SCREENSHOTS=1)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / name))
    assert (SCREENSHOTS / name).stat().st_size > 10_000


async def menu_bar(page) -> list[str]:
    return [t.strip() for t in await page.locator(".lm-MenuBar-itemLabel").all_inner_texts()]


async def open_menu(page, label: str) -> list[str]:
    await page.locator(".lm-MenuBar-itemLabel", has_text=label).first.click()
    await page.locator(".lm-Menu").first.wait_for(state="visible")
    labels = [t.strip() for t in await page.locator(".lm-Menu .lm-Menu-itemLabel").all_inner_texts() if t.strip()]
    await page.keyboard.press("Escape")
    return labels


async def context_menu(page, name: str) -> list[str]:
    await page.locator(".jp-DirListing-item", has_text=name).first.click(button="right")
    await page.locator(".lm-Menu").first.wait_for(state="visible")
    return [t.strip() for t in await page.locator(".lm-Menu .lm-Menu-itemLabel").all_inner_texts() if t.strip()]


@pytest.mark.browser
async def test_operator_who_chose_chinese_sees_lab_and_the_guard_in_chinese(browser, enclave, settings):
    # A language kept in Lab's own user settings (say, from its Settings Editor) does not win over
    # the choice stored on the hub.
    kept = settings.home / "lab-state" / "wei" / WORKSPACE / LAB_LANGUAGE_SETTINGS
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps({"locale": "en"}))
    context, page = await open_lab(browser, enclave, "wei")
    assert await page.locator("html").get_attribute("lang") == "zh-CN"
    bar = await menu_bar(page)
    assert "文件" in bar and "编辑" in bar and "File" not in bar, bar
    # The language is the one chosen on the hub: Lab's own Language menu is not offered.
    assert not {"Language", "语言"} & set(await open_menu(page, "设置"))

    labels = await context_menu(page, "结果说明.txt")
    assert "申请导出…" in labels and "Request export…" not in labels, labels
    await page.locator(".lm-Menu .lm-Menu-itemLabel", has_text="申请导出…").click()
    dialog = page.locator(".jp-Dialog")
    await expect(dialog.locator(".jp-Dialog-header")).to_have_text("申请导出")
    await expect(dialog).to_contain_text("申请理由（必填）")
    await expect(dialog).to_contain_text("结果说明.txt")
    await expect(dialog.locator(".jp-Dialog-button.jp-mod-accept")).to_have_text("提交审核")
    # The automated checks' result for the file, its status and size in Chinese.
    await expect(dialog.locator(".enclave-check strong")).to_have_text(re.compile(r"^结果说明\.txt：(通过|警告|未通过)$"))
    await expect(dialog.locator(".enclave-check small")).to_contain_text("字节")
    await screenshot(page, "jupyterlab-zh_CN-request-export.png")
    await dialog.locator(".jp-Dialog-button.jp-mod-reject").click()
    await expect(dialog).to_have_count(0)

    await page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="enclave-exports"]').click()
    panel = page.locator(".enclave-exports")
    await expect(panel.locator("h2")).to_have_text("导出申请")
    await expect(panel.locator(".enclave-exports-empty")).to_be_visible()
    await expect(panel.locator(".enclave-exports-empty")).to_contain_text("还没有导出申请。")
    await expect(panel.locator(".enclave-exports-empty")).to_contain_text("右键单击文件，选择“申请导出…”")
    await screenshot(page, "jupyterlab-zh_CN-exports.png")
    await context.close()


@pytest.mark.browser
async def test_operator_who_chose_no_language_sees_english(browser, enclave, settings):
    assert languages.language_of(settings, "olivia") is None
    context, page = await open_lab(browser, enclave, "olivia")
    bar = await menu_bar(page)
    assert "File" in bar and "Edit" in bar and "文件" not in bar, bar
    assert "Request export…" in await context_menu(page, "结果说明.txt")
    await page.keyboard.press("Escape")
    await page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="enclave-exports"]').click()
    panel = page.locator(".enclave-exports")
    await expect(panel.locator("h2")).to_have_text("Exports")
    await expect(panel.locator(".enclave-exports-empty")).to_contain_text("No export requests yet.")
    await context.close()
