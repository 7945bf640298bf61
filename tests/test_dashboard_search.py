"""Issue 14 in the dashboard: the search box, tags, the failure groups panel and progress health.

A real headless Chromium (the fixtures of test_dashboard.py: skipped without a browser unless
JOBLINE_REQUIRE_BROWSER=1) on the real server, Redis and worker, at desktop and phone widths.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import create_job, wait_until
from tests.test_dashboard import (  # noqa: F401  (browser and watched are fixtures: imported for pytest)
    ARTIFACTS,
    OUTSIDE_ITS_CARD,
    PHONE,
    XSS_NAME,
    Watched,
    browser,
    count_of,
    expect_live,
    is_post,
    no_sideways_scroll,
    queue_item,
    row_of,
    settled,
    watched,
)

try:
    from playwright.async_api import Locator, Page, expect
except ImportError:  # the `browser` fixture skips or fails the test
    pass

ROWS = "#job-rows > [role=row]"
WIDTHS = {"desktop": {"width": 1440, "height": 900}, "phone": PHONE}


def listed(page: Page) -> Locator:
    return page.locator(ROWS)


def fragment(page: Page) -> dict[str, list[str]]:
    """The filters the page's address carries (its fragment, as a query string)."""
    return parse_qs(urlsplit(page.url).fragment)


def list_queries(urls: list[str]) -> list[dict[str, list[str]]]:
    return [parse_qs(urlsplit(url).query) for url in urls]


async def expect_rows(page: Page, jobs: list[dict[str, Any]]) -> None:
    """The list shows exactly these jobs."""
    await expect(listed(page)).to_have_count(len(jobs))
    for job in jobs:
        await expect(row_of(page, job["id"])).to_be_visible()


async def in_reach(page: Page, locator: Locator) -> None:
    """Visible and wholly inside the viewport's width (a phone must not scroll sideways to it)."""
    await locator.scroll_into_view_if_needed()
    box = await locator.bounding_box()
    width = page.viewport_size["width"] if page.viewport_size else 0
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, box


# -- the search box -----------------------------------------------------------------------------
@pytest.mark.parametrize("width", ["desktop", "phone"])
async def test_search_box_filters_the_list_and_the_address_keeps_it(
    width: str, client: Any, watched: Watched
) -> None:
    page = watched.page
    await page.set_viewport_size(WIDTHS[width])
    crawl = await create_job(client, name="Crawl pricing page", type="noop", tags=["customer:42"])
    docs = await create_job(client, name="crawl docs", type="noop")
    archive = await create_job(client, name="Archive the CRAWL results", type="noop")
    digest = await create_job(client, name="Send digest", type="noop")
    html = await create_job(client, name=XSS_NAME, type="noop")  # no worker: they all wait
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect(page.locator("#total")).to_have_text("5 jobs")
    search = page.locator("#search")
    await in_reach(page, search)

    # Typed faster than the pause that sends it: not a list load per key (one, unless the machine
    # stalls between two keys), the last for the whole word; case does not matter.
    loads = len(watched.list_requests)
    await search.press_sequentially("CRAWL", delay=15)
    await expect(page).to_have_url(re.compile(r"#q=CRAWL$"))
    await expect_rows(page, [crawl, docs, archive])
    await expect(page.locator("#total")).to_have_text("3 jobs")
    await expect(page.locator("#search-status")).to_have_text("3 matching jobs")  # for a screen reader
    searched = [q.get("q") for q in list_queries(watched.list_requests[loads:])]
    assert 1 <= len(searched) < 5 and searched[-1] == ["CRAWL"], searched
    await expect(page.locator("#search-clear")).to_be_visible()

    # Live: a new job that matches comes in by its event; one that does not stays out.
    loads = len(watched.list_requests)
    sitemap = await create_job(client, name="Crawl the sitemap", type="noop")
    await create_job(client, name="Unrelated", type="noop")
    await expect_rows(page, [sitemap, crawl, docs, archive])
    await expect(page.locator("#total")).to_have_text("4 jobs")
    assert watched.list_requests[loads:] == []

    # With a status filter too: both go to the API and into the address.
    assert (await client.post(f"/api/jobs/{docs['id']}/cancel", json={})).status == 200
    await expect(row_of(page, docs["id"]).locator(".badge")).to_have_text("cancelled")
    loads = len(watched.list_requests)
    await page.locator('#filter button[data-status="cancelled"]').click()
    await expect_rows(page, [docs])
    await expect(page.locator("#total")).to_have_text("1 cancelled")
    assert list_queries(watched.list_requests[loads:])[-1] == {
        "limit": ["200"], "status": ["cancelled"], "q": ["CRAWL"]
    }
    assert fragment(page) == {"status": ["cancelled"], "q": ["CRAWL"]}

    # A reload (or the link, shared) shows the same search.
    await page.reload()
    await expect_live(page)
    await expect(search).to_have_value("CRAWL")
    await expect(page.locator('#filter button[data-status="cancelled"]')).to_have_attribute("aria-pressed", "true")
    await expect_rows(page, [docs])
    await page.locator('#filter button[data-status=""]').click()
    await expect_rows(page, [sitemap, crawl, docs, archive])

    # A job's exact id finds it, whatever its name; Enter searches at once.
    await search.fill(digest["id"])
    await search.press("Enter")
    await expect_rows(page, [digest])
    assert fragment(page) == {"q": [digest["id"]]}

    # A search is text: HTML in it, or in the names it finds, shows as typed and makes no element.
    await search.fill(XSS_NAME)
    await search.press("Enter")
    await expect_rows(page, [html])
    await expect(row_of(page, html["id"]).locator(".c-name .link")).to_have_text(XSS_NAME)
    nothing = "<b>no such</b> job"
    await search.fill(nothing)
    await search.press("Enter")
    await expect(page.locator("#empty")).to_contain_text(f"No jobs match “{nothing}”")
    assert await page.evaluate("[document.images.length, document.querySelectorAll('#empty b').length]") == [0, 0]

    # The clear button: every job again, the address without a search, focus back in the box.
    await page.locator("#search-clear").click()
    await expect(listed(page)).to_have_count(7)
    await expect(search).to_have_value("")
    await expect(search).to_be_focused()
    await expect(page.locator("#search-clear")).to_be_hidden()
    assert fragment(page) == {}
    # Escape in the box clears it too.
    await search.fill("digest")
    await search.press("Enter")
    await expect_rows(page, [digest])
    await search.press("Escape")
    await expect(listed(page)).to_have_count(7)
    if width == "phone":
        await no_sideways_scroll(page)
    watched.assert_clean()


# -- tags -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", ["desktop", "phone"])
async def test_tag_chips_filter_the_list_by_tag(width: str, client: Any, watched: Watched) -> None:
    page = watched.page
    await page.set_viewport_size(WIDTHS[width])
    acme = await create_job(client, name="Invoice ACME", type="noop", tags=["customer:42", "eu"])
    globex = await create_job(client, name="Invoice Globex", type="noop", tags=["customer:7", "eu"])
    report = await create_job(client, name="Report for ACME", type="noop", tags=["customer:42"])
    plain = await create_job(client, name="Untagged", type="noop")
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect_rows(page, [acme, globex, report, plain])
    acme_row = row_of(page, acme["id"])
    await expect(acme_row.locator(".tags .tag")).to_have_text(["customer:42", "eu"])
    await expect(row_of(page, plain["id"]).locator(".tags .tag")).to_have_count(0)
    eu = acme_row.locator('.tag[data-tag="eu"]')
    await expect(eu).to_have_accessible_name("Filter by tag eu")
    await in_reach(page, eu)

    # A click on a chip: only jobs with that tag, an active filter that says so, the address too.
    loads = len(watched.list_requests)
    await eu.click()
    await expect_rows(page, [acme, globex])
    active = page.locator("#active-filters .filter-chip")
    await expect(active).to_have_count(1)
    await expect(active).to_contain_text("eu")
    await expect(active).to_have_accessible_name("Remove the filter tag eu")
    assert list_queries(watched.list_requests[loads:]) == [{"limit": ["200"], "tag": ["eu"]}]
    assert fragment(page) == {"tag": ["eu"]}

    # A second chip: both must match.
    await row_of(page, acme["id"]).locator('.tag[data-tag="customer:42"]').click()
    await expect_rows(page, [acme])
    await expect(active).to_have_count(2)
    assert fragment(page) == {"tag": ["eu", "customer:42"]}
    await expect(page.locator("#total")).to_have_text("1 job")

    # Live: a new job with both tags comes in by its event; one with only one of them does not.
    both = await create_job(client, name="Invoice ACME, again", type="noop", tags=["eu", "customer:42", "q3"])
    await create_job(client, name="Invoice Initech", type="noop", tags=["eu"])
    await expect_rows(page, [both, acme])
    await expect(page.locator("#total")).to_have_text("2 jobs")

    # The detail view shows a job's tags; its chips filter too. Removing a filter widens the list.
    await row_of(page, both["id"]).locator(".c-name .link").click()
    await expect(page.locator("#d-tags .tag")).to_have_text(["eu", "customer:42", "q3"])
    await page.locator('#d-tags .tag[data-tag="q3"]').click()
    await expect_rows(page, [both])
    await page.locator("#d-close").click()
    await page.locator('#active-filters .filter-chip[data-tag="q3"]').click()
    await page.locator('#active-filters .filter-chip[data-tag="eu"]').click()
    await expect_rows(page, [both, report, acme])
    await expect(page.locator("#active-filters .filter-chip[data-tag='customer:42']")).to_be_focused()
    assert fragment(page) == {"tag": ["customer:42"]}

    # With a search: "report" among the jobs tagged customer:42.
    await page.locator("#search").fill("report")
    await expect_rows(page, [report])
    url = page.url
    if width == "phone":
        await no_sideways_scroll(page)
        ARTIFACTS.mkdir(exist_ok=True)
        await settled(page)
        await page.screenshot(path=ARTIFACTS / "dashboard-search-phone.png", animations="disabled")

    # The link, opened elsewhere: the same search and tag.
    other = await page.context.new_page()
    await other.goto(url)
    await expect_live(other)
    await expect(other.locator("#search")).to_have_value("report")
    await expect(other.locator("#active-filters .filter-chip")).to_have_count(1)
    await expect_rows(other, [report])
    await other.close()

    # Tags from the create form, separated by spaces or commas. The new job is hidden by the filters (the
    # page says so), and shows with its chips once they are cleared.
    await page.fill("#f-name", "Invoice Umbrella")
    await page.select_option("#f-type", "noop")
    await page.fill("#f-tags", "customer:9, eu")
    async with page.expect_response(is_post("/api/jobs")) as info:
        await page.click("#f-submit")
    response = await info.value
    assert response.status == 201 and response.request.post_data_json["tags"] == ["customer:9", "eu"]
    await expect(page.locator("#toasts .toast.info")).to_contain_text("it is hidden by the search and tag filters")
    await page.locator("#search-clear").click()
    await page.locator('#active-filters .filter-chip[data-tag="customer:42"]').click()
    await expect(page.locator("#active-filters")).to_be_hidden()
    made = await response.json()
    await expect(row_of(page, made["id"]).locator(".tag")).to_have_text(["customer:9", "eu"])
    await expect(listed(page)).to_have_count(7)
    assert fragment(page) == {}
    watched.assert_clean()


# -- the failure groups panel ---------------------------------------------------------------------
async def fail_job(client: Any, name: str, message: str, tags: list[str] | None = None) -> dict[str, Any]:
    return await create_job(client, name=name, type="fail", maxAttempts=1, data={"message": message}, tags=tags or [])


async def test_failure_groups_panel_retries_and_deletes_a_group_live(
    client: Any, start_worker: Any, watched: Watched
) -> None:
    page = watched.page
    await start_worker()
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    panel = page.locator("#failures-card")
    await expect(panel.locator("#failures-summary")).to_have_text(re.compile("^No failed jobs"))

    # Three timeouts that differ only in their numbers: one group. Another error: a second group.
    timeouts = [
        await fail_job(
            client, f"Fetch page {i}", f"timed out after {10 + i} s on page {1000 + i}",
            ["crawler", f"customer:{42 + i % 2}"],
        )
        for i in range(3)
    ]
    parse = await fail_job(client, "Parse feed", "unexpected token 'x' in feed")
    for job in [*timeouts, parse]:
        await expect(row_of(page, job["id"]).locator(".badge")).to_have_text("failed")
    groups = page.locator("#failure-list > .frow")
    await expect(groups).to_have_count(2)
    timeout_group = groups.nth(0)  # most jobs first
    await expect(timeout_group.locator(".f-sample")).to_contain_text("timed out after")
    await expect(timeout_group.locator(".f-count-n")).to_have_text("3")
    await expect(timeout_group.locator(".f-where")).to_have_text("fail · default")
    await expect(timeout_group.locator(".f-meta")).to_contain_text("first seen ")
    await expect(timeout_group.locator(".f-meta")).to_contain_text("last seen ")
    await expect(groups.nth(1).locator(".f-count-n")).to_have_text("1")
    await expect(panel.locator("#failures-summary")).to_have_text("2 groups · 4 failed jobs")

    # Live: one more of the same kind fails; its group counts it, with no reload.
    late = await fail_job(client, "Fetch page 3", "timed out after 99 s on page 4242", ["crawler", "customer:7"])
    await expect(timeout_group.locator(".f-count-n")).to_have_text("4")
    await expect(panel.locator("#failures-summary")).to_have_text("2 groups · 5 failed jobs")
    listing = await (await client.get("/api/admin/failures")).json()
    fingerprints = {g["count"]: g["fingerprint"] for g in listing["groups"]}
    # The group's jobs, each a link to its detail view.
    await timeout_group.locator(".f-jobs summary").click()
    await expect(timeout_group.locator(".f-job-list .link")).to_have_count(4)

    # A search shows the failed jobs (and a page crawl running), the panel their groups: the README's screenshot.
    running = await create_job(
        client, name="Crawl the pricing page", data={"steps": 40, "stepMs": 500}, tags=["crawler"]
    )
    await page.locator("#search").fill("page")
    await expect_rows(page, [running, late, *reversed(timeouts)])
    await expect(row_of(page, running["id"]).locator(".health")).to_have_text(re.compile("left$"))
    await expect(count_of(queue_item(page), "active")).to_have_text("1")  # the panels have caught up
    await page.set_viewport_size({"width": 1600, "height": 1160})
    await page.mouse.move(0, 0)
    await settled(page)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-search.png", animations="disabled")
    await page.emulate_media(color_scheme="dark")
    await page.screenshot(path=ARTIFACTS / "dashboard-search-dark.png", animations="disabled")
    await page.emulate_media(color_scheme="light")

    # On a phone: the panel's figures and buttons fit, nothing scrolls sideways.
    await page.set_viewport_size(PHONE)
    await in_reach(page, timeout_group.locator('button[data-fact="delete"]'))
    assert await page.evaluate(OUTSIDE_ITS_CARD, "#failures-card button, #failures-card .frow > *") == []
    await no_sideways_scroll(page)
    await settled(page)
    await page.screenshot(path=ARTIFACTS / "dashboard-failures-phone.png", animations="disabled")
    await page.set_viewport_size(WIDTHS["desktop"])

    # Retry all (the queue paused, as while the cause is fixed: the retried jobs wait).
    assert (await client.post("/api/admin/queues/default/pause", json={})).status == 200
    await expect(queue_item(page).locator(".q-state")).to_have_text("paused")
    async with page.expect_response(is_post("/api/jobs/bulk")) as info:
        await timeout_group.locator('button[data-fact="retry"]').click()
    response = await info.value
    assert response.request.post_data_json == {"action": "retry", "failureGroup": fingerprints[4], "queue": "default"}
    assert await response.json() == {"affected": 4}
    await expect(page.locator("#toasts .toast.info")).to_contain_text("Retried 4 jobs")
    for job in [*timeouts, late]:  # they leave `failed`, and the panel follows
        await expect(row_of(page, job["id"]).locator(".badge")).to_have_text("waiting")
    await expect(groups).to_have_count(1)
    await expect(panel.locator("#failures-summary")).to_have_text("1 group · 1 failed job")
    await expect(count_of(queue_item(page), "failed")).to_have_text("1")
    await expect(count_of(queue_item(page), "waiting")).to_have_text("4")

    # Delete all asks first: the first click only arms the button.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if r.method == "POST" else None)
    delete = groups.nth(0).locator('button[data-fact="delete"]')
    await delete.click()
    await expect(delete).to_have_text("Confirm")
    await page.wait_for_timeout(300)
    assert requests == []
    async with page.expect_response(is_post("/api/jobs/bulk")) as info:
        await delete.click()
    response = await info.value
    assert response.request.post_data_json == {"action": "delete", "failureGroup": fingerprints[1], "queue": "default"}
    assert await response.json() == {"affected": 1}
    await page.locator("#search-clear").click()
    await expect(row_of(page, parse["id"])).to_have_count(0)
    await expect(groups).to_have_count(0)
    await expect(panel.locator("#failures-summary")).to_have_text(re.compile("^No failed jobs"))
    assert (await client.get(f"/api/jobs/{parse['id']}")).status == 404
    assert (await client.post(f"/api/jobs/{running['id']}/cancel", json={})).status == 200  # quick worker stop
    watched.assert_clean()


# -- progress health ------------------------------------------------------------------------------
async def redis_ms(redis_client: Any) -> int:
    seconds, micros = await redis_client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_progress_health_shows_time_left_flags_a_stuck_job_and_a_queue_backlog(
    client: Any, start_worker: Any, redis_client: Any, watched: Watched
) -> None:
    from jobline.keys import Keys

    page = watched.page
    worker = await start_worker(queues=("default",))
    await page.goto(str(client.make_url("/")))
    await expect_live(page)

    # A demo job, while it runs: the time left at its pace so far.
    demo = await create_job(client, name="Crawl the docs", data={"steps": 5, "stepMs": 700})
    demo_row = row_of(page, demo["id"])
    await expect(demo_row.locator(".c-status .health")).to_have_text(re.compile(r"^(\d+|< 1) s left$"))
    await expect(demo_row.locator(".c-status .health")).to_have_attribute(
        "title", re.compile(r"^About (\d+|< 1) s left")
    )
    await expect(demo_row.locator(".badge")).to_have_text("completed")
    await expect(demo_row.locator(".c-status .health")).to_be_hidden()

    # A job that reports a step and then hangs, its worker alive (its heartbeat beats on).
    hung = await create_job(client, name="Hangs after its first step", type="block")
    await wait_until(lambda: _stepped(client, hung["id"]))
    # Its times moved back, as the clock would have moved on: started 9 s ago, its one step took 3 s,
    # and it has not moved for 6 s. Stuck past max(10 s, 3 × 3 s): in about 4 s.
    now = await redis_ms(redis_client)
    await redis_client.hset(Keys().job(hung["id"]), mapping={"startedAt": now - 9_000, "progressAt": now - 6_000})
    await page.reload()  # the page reads the job as the server has it now
    await expect_live(page)
    row = row_of(page, hung["id"])
    health = row.locator(".c-status .health")
    await expect(health).to_have_text(re.compile(r"left$"))  # 1% in 9 s: a long way to go; not stuck yet
    await expect(row.locator(".stuck")).to_have_count(0)
    await row.evaluate("node => { node.__kept = true; }")

    # It goes stuck on the page's own once-a-second check: no event, no reload, the same row.
    await expect(row.locator(".stuck")).to_be_visible(timeout=10_000)
    await expect(row.locator(".stuck")).to_contain_text("stuck")
    assert await row.evaluate("node => node.__kept === true && node.hasAttribute('data-stuck')")
    title = await health.get_attribute("title") or ""
    why = rf"No progress for 1\d s: more than 3× its average step \(3 s\) .* worker {worker.id} is alive"
    assert re.match(why, title), title
    # Its worker is alive by the server's list of live workers (the panel shows it).
    await expect(page.locator(f'#worker-rows > [data-id="{worker.id}"]')).to_be_visible()

    # The detail view says so too.
    await row.locator(".c-name .link").click()
    await expect(page.locator("#d-health .stuck")).to_be_visible()
    await expect(page.locator("#detail")).to_have_attribute("data-stuck", "")
    await page.locator("#d-close").click()

    ARTIFACTS.mkdir(exist_ok=True)
    await page.mouse.move(0, 0)
    await page.screenshot(path=ARTIFACTS / "dashboard-stuck.png", animations="disabled")

    # A phone: the flag is in reach, the page no wider than the screen.
    await page.set_viewport_size(PHONE)
    await in_reach(page, row.locator(".stuck"))
    await no_sideways_scroll(page)
    await settled(page)
    await page.screenshot(path=ARTIFACTS / "dashboard-stuck-phone.png", animations="disabled")
    await page.set_viewport_size(WIDTHS["desktop"])

    # Cancelled: no longer active, no flag.
    assert (await client.post(f"/api/jobs/{hung['id']}/cancel", json={})).status == 200
    await expect(row.locator(".badge")).to_have_text("cancelled")
    await expect(row.locator(".stuck")).to_have_count(0)
    await expect(health).to_be_hidden()

    # A queue's backlog at its throughput: waiting jobs ÷ completed per second over the last minute.
    for i in range(3):
        await create_job(client, name=f"Quick {i}", type="noop")
    queue = queue_item(page)
    await expect(count_of(queue, "completed")).to_have_text("4")  # the demo job and these three
    await expect(queue.locator(".q-drain")).to_have_text("Nothing waiting")
    assert (await client.post("/api/admin/queues/default/pause", json={})).status == 200
    for i in range(8):
        await create_job(client, name=f"Later {i}", type="noop")
    await expect(count_of(queue, "waiting")).to_have_text("8")
    # 8 waiting at 4 a minute: 2 min.
    await expect(queue.locator(".q-drain")).to_have_text("Clears in ≈ 2 min")
    await expect(queue.locator(".q-drain")).to_have_attribute("title", re.compile("^8 waiting jobs at 4 completed"))
    # A queue that completed nothing in the last minute has no estimate.
    await create_job(client, name="Digest", type="noop", queue="emails")
    await expect(queue_item(page, "emails").locator(".q-drain")).to_have_text("Clears in —")
    watched.assert_clean()


async def _stepped(client: Any, job_id: str) -> bool:
    job = await (await client.get(f"/api/jobs/{job_id}")).json()
    return job["status"] == "active" and job["progressSteps"] >= 1
