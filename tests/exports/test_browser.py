"""The review pages in a real browser (Debian's chromium through Playwright), behind a real hub."""

from __future__ import annotations

import base64

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from playwright.sync_api import expect, sync_playwright

from .conftest import sha

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
    """A page logged in as ``username``; its console errors and uncaught exceptions are kept in
    ``page.errors`` (every test asserts there are none)."""
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    # Logged in, straight to the review service (the test hub has no servers to spawn).
    page.goto(f"{hub.url}/hub/login?next=/services/exports/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", hub.password)
    page.click("[type=submit]")
    page.wait_for_url(lambda url: "/services/exports/" in url)
    page.errors = []
    page.on("console", lambda m: page.errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: page.errors.append(f"{page.url}: {exc}"))
    return page


def close(page) -> None:
    assert page.errors == [], page.errors
    page.context.close()


def provenance(name: str) -> dict:
    """Provenance as the guard captures it: 150 packages, the executions whose code names the file."""
    return {"workspace": "ws1", "user": "olga", "path": f"out/{name}", "role": "output", "releases": ["people@1"],
            "executions": [{"time": "2026-03-01T08:00:00Z", "user": "olga", "kernel_id": "k1", "msg_id": "m1",
                            "notebook": "分析.ipynb", "code": f"counts.to_csv('out/{name}')"}],
            "packages": {f"package-{i:03d}": f"1.{i}.0" for i in range(150)}}


def submit(client, tokens, files: dict[str, bytes], title: str) -> dict:
    manifest = {"files": {n: {"sha256": sha(d), "provenance": provenance(n)} for n, d in files.items()}}
    r = client(tokens["olga@ws1"]).submit(files, title=title, context="Counts per region for the report.",
                                          manifest=manifest)
    assert r.status_code == 201, r.text
    return r.json()


def vote_in_page(page, f: dict, decision: str, reason: str) -> None:
    section = page.locator(f"#file-{f['id']}")
    section.locator("select[name=decision]").select_option(decision)
    section.locator("textarea[name=reason]").fill(reason)
    section.get_by_role("button", name=f"Vote on {f['name']}").click()


def test_review_and_release_in_the_browser(hub, tokens, client, browser, tmp_path):
    req = submit(client, tokens, {"table.csv": TABLE, "analysis.ipynb": _notebook()}, "Regional counts")
    rid, files = req["id"], req["files"]
    request_url = f"{hub.service}/requests/{rid}"

    for reviewer in ("rita", "rob"):
        page = page_for(browser, hub, reviewer)
        page.goto(f"{hub.service}/queue")
        expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
        # The request awaits this reviewer's vote: it is listed first, in a list of its own.
        expect(page.locator("#awaiting").get_by_role("link", name="Regional counts")).to_have_count(1)
        page.locator("#awaiting").get_by_role("link", name="Regional counts").click()
        expect(page.locator("#state")).to_have_text("submitted" if reviewer == "rita" else "in review")
        # Blind votes: rob sees neither rita's votes and views nor when the review started (her
        # public comment, yes).
        expect(page.locator("#history")).not_to_contain_text("start review")
        expect(page.locator("#history tr").filter(has_text="vote")).to_have_count(0)
        expect(page.locator("#history tr").filter(has_text="rita")).to_have_count(1 if reviewer == "rob" else 0)

        # The small count is highlighted in the rendered table, with the failing check listed.
        expect(page.locator(f"#file-{files[0]['id']} td.flag-fail")).to_have_text("3")
        expect(page.locator("table.checks").first).to_contain_text("count cell(s) under the minimum of 10")
        # The notebook is rendered in a sandboxed frame, its script removed.
        frame = page.frame_locator("iframe.render")
        expect(frame.locator("img")).to_have_count(1)
        expect(frame.locator("body")).to_contain_text("table")
        assert page.title() != "pwned"
        # Provenance is a summary: the executions that name the file, labelled so; the packages folded.
        table = page.locator(f"#file-{files[0]['id']}")
        expect(table.locator("details.executions summary")).to_have_text(
            "Executions whose code mentions this file's name (1)")
        expect(table.locator(".execution")).to_contain_text("counts.to_csv('out/table.csv')")
        expect(table.locator(".execution")).to_contain_text("分析.ipynb")
        expect(table.locator(".provenance")).to_contain_text("Releases mounted: people@1")
        expect(table.locator("details.packages summary")).to_have_text("Python packages (150)")
        expect(table.get_by_text("package-149")).to_be_hidden()
        expect(table.locator(".provenance")).not_to_contain_text("{'")

        # Only votes can succeed until the last one: no decision buttons.
        expect(page.locator("#next-step form.transition")).to_have_count(0)
        for f in files:
            vote_in_page(page, f, "approve", f"{reviewer}: acceptable, 南区 merged later")
            if reviewer == "rita":
                # Each vote is confirmed, and the page comes back to the file voted on.
                expect(page.locator("#flash")).to_have_text(f"Your vote on {f['name']} is recorded: approve.")
                assert page.url == f"{request_url}#file-{f['id']}"
                expect(page.locator("#state")).to_have_text("in review")
                expect(page.locator("#next-step form.transition")).to_have_count(0)
        if reviewer == "rita":
            expect(page.locator("#next-step")).to_contain_text("Your votes are in")
            page.fill("#comment-text", "Please merge south into a larger region next time.")
            page.select_option("#visibility", "public")
            page.get_by_role("button", name="Add comment").click()
            expect(page.locator("#flash")).to_have_text("Your comment is added.")
        else:
            # The second approval of the last file releases the request: no further click.
            expect(page.locator("#flash")).to_contain_text("The votes decided the request: it is released.")
            expect(page.locator("#state")).to_have_text("released")
            expect(page.locator("#history")).to_contain_text("release")
            expect(page.locator("#next-step form.transition")).to_have_count(0)
        close(page)

    page = page_for(browser, hub, "olga")
    page.goto(f"{hub.service}/mine")
    expect(page.get_by_role("heading", name="My export requests")).to_be_visible()
    page.get_by_role("link", name="Regional counts").first.click()
    expect(page.locator("#state")).to_have_text("released")
    expect(page.get_by_text("Please merge south into a larger region next time.")).to_be_visible()
    expect(page.locator("td.flag-fail")).to_have_count(0)  # requesters see checks, not file previews
    # The downloads are the page's next step, at its top.
    with page.expect_download() as info:
        page.locator("#next-step").get_by_role("button", name="Download table.csv").click()
    path = tmp_path / "table.csv"
    info.value.save_as(path)
    assert path.read_bytes() == TABLE

    # The signed manifest is a page, with its JSON a link away.
    page.locator(f"#file-{files[0]['id']}").get_by_role("link", name="signed manifest").click()
    expect(page.get_by_role("heading", name="Signed manifest of table.csv")).to_be_visible()
    expect(page.locator("#signature")).to_contain_text("valid")
    expect(page.locator("#signature .badge")).to_have_text("valid")
    expect(page.locator("#files")).to_contain_text(sha(TABLE))
    expect(page.locator("#approvals")).to_contain_text("rita")
    expect(page.locator("#approvals")).to_contain_text("taken by the vote of rob")
    expect(page.locator("#provenance")).to_contain_text("Executions whose code mentions this file's name (1)")
    signed = page.request.get(hub.url + page.locator("#manifest-json").get_attribute("href"))
    assert signed.ok and signed.json()["manifest"]["file"]["sha256"] == sha(TABLE)
    assert signed.json()["signature_valid"] is True
    close(page)

    history = client(tokens["olga"]).get(f"/requests/{rid}").json()["history"]
    assert ("olga", "download") in [(e["actor"], e["action"]) for e in history]


def test_a_conflict_shows_the_one_step_to_take_and_a_return_points_to_a_new_version(hub, tokens, client, browser):
    req = submit(client, tokens, {"区域.csv": TABLE}, "冲突的请求")
    rid, [f] = req["id"], req["files"]
    page = page_for(browser, hub, "rita")
    page.goto(f"{hub.service}/requests/{rid}")
    vote_in_page(page, f, "approve", "汇总表，可以")
    expect(page.locator("#flash")).to_have_text("Your vote on 区域.csv is recorded: approve.")
    close(page)

    page = page_for(browser, hub, "rob")
    page.goto(f"{hub.service}/requests/{rid}")
    vote_in_page(page, f, "reject", "南区只有 3 人")
    expect(page.locator("#state")).to_have_text("in review")
    # The votes conflict: the page says so, and offers the steps a reviewer takes, and only those.
    expect(page.locator("#next-step")).to_contain_text("The votes on 区域.csv conflict")
    expect(page.locator("#next-step form.transition button")).to_have_text(["Reject", "Return"])
    expect(page.locator(f"#file-{f['id']} ul.votes")).to_contain_text("rita")
    page.fill("#reason-returned", "请把南区并入更大的区域")
    page.locator("#next-step").get_by_role("button", name="Return").click()
    expect(page.locator("#flash")).to_have_text("Done: the request is returned.")
    expect(page.locator("#state")).to_have_text("returned")
    close(page)

    page = page_for(browser, hub, "olga")
    page.goto(f"{hub.service}/requests/{rid}")
    expect(page.locator("#next-step blockquote.reason")).to_have_text("请把南区并入更大的区域")
    link = page.get_by_role("link", name="Send a new version")
    expect(link).to_have_attribute("href", f"/user/olga/ws1/lab?enclave-exports={rid}")
    # Resubmitting the same file cannot succeed, so it is not offered: only withdrawing is.
    expect(page.locator("#next-step form.transition button")).to_have_text(["Withdraw"])
    close(page)


def test_revoking_asks_first(hub, tokens, client, browser):
    req = submit(client, tokens, {"table.csv": TABLE}, "To revoke")
    for who in ("rita", "rob"):
        r = client(tokens[who]).post(f"/requests/{req['id']}/votes", {
            "file_id": req["files"][0]["id"], "decision": "approve", "reason": "safe"})
    assert r.json()["state"] == "released"

    page = page_for(browser, hub, "adam")
    page.goto(f"{hub.service}/requests/{req['id']}")
    confirm = page.locator("#confirm-revoked")
    expect(confirm).to_be_hidden()
    # Dismissed: nothing happens.
    page.get_by_role("button", name="Revoke the release…").click()
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("Revoke this release?")
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    page.reload()
    expect(page.locator("#state")).to_have_text("released")
    # Accepted: revoked.
    page.get_by_role("button", name="Revoke the release…").click()
    confirm.locator("textarea").fill("released by mistake")
    confirm.get_by_role("button", name="Revoke the release").click()
    expect(page.locator("#state")).to_have_text("revoked")
    expect(page.locator("#flash")).to_have_text("Done: the request is revoked.")
    page.reload()
    expect(page.locator("#flash")).to_have_count(0)  # shown once
    # A message is the service's own: one planted in the cookie, unsigned, is not shown.
    page.context.add_cookies([{"name": "enclave-exports-flash", "value": '"Approved by the security team"',
                               "domain": "localhost", "path": "/services/exports/"}])
    page.reload()
    expect(page.locator("#state")).to_have_text("revoked")
    expect(page.locator("#flash")).to_have_count(0)
    close(page)
