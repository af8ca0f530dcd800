"""The review pages in a real browser (Debian's chromium through Playwright), behind a real hub."""

from __future__ import annotations

import base64

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from playwright.sync_api import expect, sync_playwright

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TABLE = b"region,count\nnorth,120\nsouth,3\neast,45\n"


def _notebook() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (12, 12), "red").save(out, "PNG")
    nb = new_notebook(cells=[new_code_cell("df.plot()", outputs=[
        new_output("display_data", data={"image/png": base64.b64encode(out.getvalue()).decode(), "text/plain": "<Figure>"}),
        new_output("display_data", data={"text/html": "<b id='injected'>table</b><script>document.title='pwned'</script>"}),
    ])])
    return nbformat.writes(nb).encode()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


def page_for(browser, hub, username: str):
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", hub.password)
    page.click("[type=submit]")
    page.wait_for_url(lambda url: "/hub/login" not in url)
    return page


def test_review_and_release_in_the_browser(hub, tokens, client, browser, tmp_path):
    r = client(tokens["olga@ws1"]).submit({"table.csv": TABLE, "analysis.ipynb": _notebook()},
                                          title="Regional counts", context="Counts per region for the report.")
    assert r.status_code == 201, r.text
    rid = r.json()["id"]

    for reviewer in ("rita", "rob"):
        page = page_for(browser, hub, reviewer)
        page.goto(f"{hub.service}/queue")
        expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
        page.select_option("#workspace", "ws1")
        page.select_option("#state", "submitted" if reviewer == "rita" else "in_review")
        page.get_by_role("button", name="Filter").click()
        page.get_by_role("link", name="Regional counts").first.click()
        expect(page.locator("#state")).to_have_text("submitted" if reviewer == "rita" else "in review")

        # The small count is highlighted in the rendered table, with the failing check listed.
        flagged = page.locator("#file-{} td.flag-fail".format(r.json()["files"][0]["id"]))
        expect(flagged).to_have_text("3")
        expect(page.locator("table.checks").first).to_contain_text("count cell(s) under the minimum of 10")
        # The notebook is rendered in a sandboxed frame, its script removed.
        frame = page.frame_locator("iframe.render")
        expect(frame.locator("img")).to_have_count(1)
        expect(frame.locator("body")).to_contain_text("table")
        assert page.title() != "pwned"

        for f in r.json()["files"]:
            section = page.locator(f"#file-{f['id']}")
            section.locator("select[name=decision]").select_option("approve")
            section.locator("textarea[name=reason]").fill(f"{reviewer}: acceptable, region south merged later")
            section.get_by_role("button", name=f"Vote on {f['name']}").click()
            expect(page.locator("#state")).to_have_text("in review")
        if reviewer == "rita":
            # Blind review: rita sees only her own votes so far.
            expect(page.locator("#file-{} ul li".format(r.json()["files"][0]["id"]))).to_contain_text("rita")
            page.fill("#comment-text", "Please merge south into a larger region next time.")
            page.select_option("#visibility", "public")
            page.get_by_role("button", name="Add comment").click()
        else:
            page.fill("#reason-approved", "Both reviewers approve; counts acceptable for publication.")
            page.get_by_role("button", name="Approve").click()
            expect(page.locator("#state")).to_have_text("released")
            expect(page.locator("#history")).to_contain_text("release")
        page.context.close()

    page = page_for(browser, hub, "olga")
    page.goto(f"{hub.service}/mine")
    expect(page.get_by_role("heading", name="My export requests")).to_be_visible()
    page.get_by_role("link", name="Regional counts").first.click()
    expect(page.locator("#state")).to_have_text("released")
    expect(page.get_by_text("Please merge south into a larger region next time.")).to_be_visible()
    expect(page.locator("td.flag-fail")).to_have_count(0)  # requesters see checks, not file previews
    with page.expect_download() as info:
        page.get_by_role("button", name="Download table.csv").click()
    path = tmp_path / "table.csv"
    info.value.save_as(path)
    assert path.read_bytes() == TABLE
    page.context.close()

    history = client(tokens["olga"]).get(f"/requests/{rid}").json()["history"]
    assert ("olga", "download") in [(e["actor"], e["action"]) for e in history]
