"""Each person's language, chosen on the hub's home page and stored for them (enclave.languages):
the home page offers it, defaulting to the browser's; the review service, on another origin, follows
the stored choice over the browser's ``Accept-Language``; admins set it with ``enclave user
set-language``. Through the session's real hub, with accounts of this module's own (so that the
other tests' users keep reading their browser's language). The same in a real browser, through
every page, is the acceptance walk (``tests/test_chinese_walk.py``).
"""

from __future__ import annotations

import json
import re

import pytest
import requests
from conftest import PASSWORD
from enclave_testing import cookie_value

from enclave import accounts, db, i18n, languages, workspaces
from enclave.settings import Settings

WORKSPACE = "lingua"
ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
EN = {"Accept-Language": "en-US,en;q=0.9"}


@pytest.fixture(scope="module")
def settings(enclave) -> Settings:
    """The reviewer lena of the workspace lingua, and the operator mark."""
    settings = Settings(home=enclave.home)
    for name, role in (("lena", "reviewer"), ("mark", "operator")):
        accounts.add_user(settings, name, [role], PASSWORD)
    workspaces.create(settings, WORKSPACE)
    workspaces.add_member(settings, WORKSPACE, "lena", "reviewer")
    workspaces.add_member(settings, WORKSPACE, "mark", "operator")
    return settings


@pytest.fixture(scope="module")
def lena(enclave, settings):
    return enclave.login("lena", PASSWORD)


@pytest.fixture(scope="module")
def mark(enclave, settings):
    return enclave.login("mark", PASSWORD)


def home(session, headers: dict | None = None) -> str:
    r = session.http.get(f"{session.hub.url}/hub/home", headers=headers or {})
    assert r.status_code == 200, r.text[:500]
    assert r.headers["Content-Type"] == "text/html; charset=UTF-8"
    return r.text


def shown_language(page: str) -> str:
    """The language the home page's setting shows as current."""
    setting = re.search(r'<form id="language-setting".*?</form>', page, re.S)
    assert setting, "the home page has no language setting"
    current = re.findall(r'<button[^>]*value="(\w+)"[^>]*aria-current="true"', setting.group(0))
    assert len(current) == 1, setting.group(0)
    return current[0]


def choose(session, language: str, **fields):
    """Post the home page's language setting, as its buttons do (with the hub's _xsrf)."""
    url = f"{session.hub.url}/hub/language"
    xsrf = cookie_value(session.http, url, "_xsrf")
    return session.http.post(url, data={"language": language, "_xsrf": xsrf, **fields}, allow_redirects=False)


def test_the_languages_stored_are_the_locales_enclave_has():
    assert sorted(db.LANGUAGES) == sorted(i18n.LOCALES)


def test_the_home_page_offers_the_setting_and_defaults_to_the_browsers_language(lena):
    page = home(lena, ZH)
    assert "语言 / Language:" in page and ">简体中文</button>" in page and ">English</button>" in page
    assert shown_language(page) == "zh_CN" and 'id="language-from-browser"' in page
    assert shown_language(home(lena, EN)) == "en"
    assert shown_language(home(lena, {"Accept-Language": "fr-FR, de;q=0.8"})) == "en"
    assert shown_language(home(lena)) == "en"


def test_choosing_chinese_stores_it_for_that_user_alone_and_records_it(enclave, settings, lena, mark):
    r = choose(lena, "zh_CN")
    assert r.status_code == 302 and r.headers["Location"] == "/hub/home"
    assert languages.language_of(settings, "lena") == "zh_CN"
    # The stored choice wins over the browser's, and the page no longer says it is the browser's.
    page = home(lena, EN)
    assert shown_language(page) == "zh_CN" and 'id="language-from-browser"' not in page
    record = enclave.audit_records(action="account.language_set", user="lena")[-1]
    assert record["source"] == "hub" and record["detail"] == {"user": "lena", "language": "zh_CN"}
    # Another person is unaffected: still their browser's language, nothing stored.
    assert languages.language_of(settings, "mark") is None
    assert shown_language(home(mark, EN)) == "en"


def test_one_cannot_set_another_persons_language(enclave, settings, lena, mark):
    choose(lena, "zh_CN")
    # The form takes no user: naming one is refused, not ignored.
    r = choose(mark, "en", user="lena")
    assert r.status_code == 400 and "unknown field(s) user" in r.text
    # There is no route with a user in it.
    r = mark.http.post(f"{enclave.url}/hub/language/lena", data={
        "language": "en", "_xsrf": cookie_value(mark.http, f"{enclave.url}/hub/language", "_xsrf")})
    assert r.status_code == 404
    # A form posted from another origin carries no _xsrf of the hub's: refused.
    r = mark.http.post(f"{enclave.url}/hub/language", data={"language": "zh_CN"}, allow_redirects=False)
    assert r.status_code == 403 and "_xsrf" in r.text
    # Nobody logged in: refused.
    nobody = requests.Session()
    nobody.trust_env = False
    r = nobody.post(f"{enclave.url}/hub/language", data={"language": "en"}, allow_redirects=False)
    assert r.status_code in (302, 403) and "/hub/login" in r.headers.get("Location", "/hub/login")
    assert languages.language_of(settings, "lena") == "zh_CN"
    assert languages.language_of(settings, "mark") is None


def test_a_language_enclave_does_not_have_is_refused_by_name(settings, mark):
    for given in ("fr", "zh-TW", ""):
        r = choose(mark, given)
        assert r.status_code == 400, r.text[:300]
        assert "language must be one of en, zh_CN" in r.text and f"{given!r}" in r.text.replace("&#39;", "'")
    assert languages.language_of(settings, "mark") is None


def test_the_review_service_follows_the_stored_choice(enclave, settings, lena):
    queue = f"{enclave.service_url('exports')}/queue?workspace={WORKSPACE}"
    choose(lena, "zh_CN")
    lena.http.get(enclave.service_url("exports") + "/")  # the service's login (HubOAuth)
    r = lena.http.get(queue, headers=EN)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Language"] == "zh-CN" and "<h1>审核队列</h1>" in r.text
    # Back to English on the hub's home page: the next load of the service's page is English.
    assert choose(lena, "en").status_code == 302
    r = lena.http.get(queue, headers=ZH)
    assert r.headers["Content-Language"] == "en" and "<h1>Review queue</h1>" in r.text and "审核队列" not in r.text


def test_admins_set_a_persons_language_with_the_cli(enclave, settings):
    r = enclave.enclave("user", "set-language", "mark", "zh_CN")
    assert r.returncode == 0, r.stderr
    assert "mark reads Enclave in 简体中文 (zh_CN)" in r.stdout
    assert languages.language_of(settings, "mark") == "zh_CN"
    record = enclave.audit_records(action="account.language_set")[-1]
    assert record["source"] == "cli" and record["detail"] == {"user": "mark", "language": "zh_CN"}
    r = enclave.enclave("user", "set-language", "mark", "de")
    assert r.returncode == 1 and "unknown language 'de'; language: one of zh_CN, en" in r.stderr
    r = enclave.enclave("user", "set-language", "nobody", "en")
    assert r.returncode == 1 and "no account named 'nobody'" in r.stderr
    assert languages.language_of(settings, "mark") == "zh_CN"
    assert languages.language_of(settings, "nobody") is None


def test_a_removed_accounts_choice_goes_with_it(enclave, settings):
    """A later account of the same name chooses its own language."""
    enclave.enclave("user", "add", "ruth", "--role", "operator", "--password-stdin", input="ruth-pass-123456\n")
    assert enclave.enclave("user", "set-language", "ruth", "zh_CN").returncode == 0
    assert enclave.enclave("user", "remove", "ruth").returncode == 0
    assert languages.language_of(settings, "ruth") is None


def test_jupyterlab_follows_the_browser_that_asked_for_the_start_until_a_language_is_chosen(enclave, settings):
    """With nothing stored, JupyterLab gets the language of the browser that asked for the start, as
    every page does: its read-only application settings say so (enclave.sandbox.policy.lab_overrides)."""
    accounts.add_user(settings, "nora", ["operator"], PASSWORD)
    workspaces.add_member(settings, WORKSPACE, "nora", "operator")
    nora = enclave.login("nora", PASSWORD)
    nora.http.headers.update(ZH)
    assert nora.start(WORKSPACE).status_code == 200
    spec = json.loads((enclave.home / "run" / "sandboxes" / "nora" / WORKSPACE / "spec.json").read_text())
    (overrides,) = [m["content"] for m in spec["server"]["mounts"] if m["target"].endswith("/overrides.json")]
    assert json.loads(overrides)["@jupyterlab/translation-extension:plugin"] == {"locale": "zh_CN"}
    nora.stop(WORKSPACE)
