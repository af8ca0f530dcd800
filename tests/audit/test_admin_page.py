"""The admin audit page in chromium: an administrator, logged in through the hub's login page, finds
it in the Services menu, filters the records by user, action and workspace and sees exactly the
matching ones (newest first, a page at a time), opens a record's detail, and follows a workspace to
its assessment report; an operator is refused.
"""

from __future__ import annotations

import pytest

from enclave_testing import HOLDER, PURPOSE

from .services_hub import SandboxRecords, browser, logged_in, running_hub  # noqa: F401

NORTH, SOUTH = "page-north", "page-south"
OPERATOR = "张三"
HOSTILE = "<img src=x onerror=alert(1)>"
MORE_THAN_A_PAGE = 55  # the page shows 50 records


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with running_hub(tmp_path_factory.mktemp("admin-page") / "home") as hub:
        yield hub


@pytest.fixture(scope="module")
def activity(hub):
    for ws in (NORTH, SOUTH):
        hub.cli("workspace", "create", ws, "--purpose", PURPOSE, "--holder", HOLDER)
        hub.cli("workspace", "add-member", ws, "olga", "--role", "operator")
        hub.cli("workspace", "attach", ws, "people@1")
        hub.consent(ws, "people@1")
    sandbox = SandboxRecords(hub)
    north, _ = sandbox.start("olga", NORTH, ["people@1"])
    for i in range(MORE_THAN_A_PAGE):
        sandbox.execute(north, f"step_{i} = {i}")
    sandbox.terminal(north, HOSTILE)
    south, _ = sandbox.start("olga", SOUTH, ["people@1"])
    sandbox.execute(south, "people = pd.read_parquet('/data/people@1/persons.parquet')")
    sandbox.stop("olga", SOUTH, south)
    zhang, _ = sandbox.start(OPERATOR, NORTH, ["people@1"])
    sandbox.execute(zhang, "# 统计各区人数\nprint('你好')")
    sandbox.close()


def newest_first(hub, **filters) -> list[int]:
    return [r["seq"] for r in reversed(hub.audit_records(**filters))]


async def shown(page) -> list[int]:
    return [int(s) for s in await page.locator("#records tbody tr[data-seq]").evaluate_all(
        "rows => rows.map(r => r.dataset.seq)")]


async def filter_by(page, **values) -> None:
    for field in ("user", "workspace", "action", "since", "until"):
        await page.fill(f"#{field}", values.get(field, ""))
    async with page.expect_navigation():
        await page.click("#filter")


async def test_an_administrator_filters_the_records(hub, activity, browser):  # noqa: F811
    context, page = await logged_in(browser, hub, "adam")
    refused = []
    page.on("console", lambda m: "Content Security Policy" in m.text and refused.append(m.text))

    # The Services menu of the hub leads to the page (through the hub's OAuth).
    audit = page.locator(".dropdown-menu a.dropdown-item", has_text="audit")
    assert await audit.get_attribute("href") == hub.service_url("audit") + "/"
    await page.goto(await audit.get_attribute("href"))
    await page.wait_for_selector("#records")
    assert await page.locator("h1").inner_text() == "Audit records"

    await filter_by(page, user="olga", action="kernel.execute", workspace=NORTH)
    expected = newest_first(hub, user="olga", action="kernel.execute", workspace=NORTH)
    assert len(expected) == MORE_THAN_A_PAGE
    assert await shown(page) == expected[:50]
    async with page.expect_navigation():
        await page.click("#older")
    assert await shown(page) == expected[50:]
    assert await page.locator("#older").count() == 0

    await filter_by(page, action="sandbox.*", workspace=SOUTH)
    expected = newest_first(hub, action="sandbox.*", workspace=SOUTH)
    assert len(expected) == 2 and await shown(page) == expected
    assert await page.locator("#records td.action").all_inner_texts() == ["sandbox.stop", "sandbox.start"]

    await filter_by(page, user="olga", action="terminal.input")
    [seq] = newest_first(hub, user="olga", action="terminal.input")
    assert await shown(page) == [seq]
    # Whatever a record holds is shown as text, never as markup.
    detail = page.locator(f"tr[data-seq='{seq}'] details")
    assert not await detail.locator("pre").is_visible()
    await detail.locator("summary").click()
    assert HOSTILE in await detail.locator("pre").inner_text()
    assert await page.locator("#records img").count() == 0

    await filter_by(page, user=OPERATOR, workspace=NORTH)
    expected = newest_first(hub, user=OPERATOR, workspace=NORTH)
    assert len(expected) == 2 and await shown(page) == expected
    row = page.locator(f"tr[data-seq='{expected[0]}']")
    assert await row.locator("td.actor").inner_text() == OPERATOR
    await row.locator("summary").click()
    assert "print('你好')" in await row.locator("pre").inner_text()

    await filter_by(page, action="export.sign")
    assert "no action matches 'export.sign'" in await page.locator(".error").inner_text()

    # A workspace leads to its assessment report, for the period chosen (here: the last 30 days).
    await filter_by(page, user="olga", workspace=NORTH)
    async with page.expect_navigation():
        await page.locator("#records td.workspace a").first.click()
    await page.wait_for_selector("figure.chart svg")
    assert await page.locator("#workspace").inner_text() == NORTH
    assert await page.locator("[data-metric=executions]").inner_text() == str(MORE_THAN_A_PAGE + 1)
    assert await page.locator("[data-metric=sessions]").inner_text() == "2"
    assert await page.locator("[data-metric=active_operators]").inner_text() == "2"
    assert not refused, refused
    await context.close()


async def test_an_operator_is_refused(hub, activity, browser):  # noqa: F811
    context, page = await logged_in(browser, hub, "olga")
    assert await page.locator(".dropdown-menu a.dropdown-item", has_text="audit").count() == 0
    for path in ("/", "/report?workspace=page-north&since=2020-01-01&until=2100-01-01"):
        response = await page.goto(hub.service_url("audit") + path)
        assert response.status == 403
        assert await page.locator("#records, [data-metric]").count() == 0
    await context.close()
