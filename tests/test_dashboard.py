"""The dashboard in a real headless Chromium, driven by Playwright, against the real server, Redis and worker.

Uses the system Chromium (env CHROMIUM_PATH, else /usr/bin/chromium or /usr/bin/chromium-browser); never
downloads one. Without a browser the tests skip, unless JOBLINE_REQUIRE_BROWSER=1, which makes them fail.
Screenshots go to test-artifacts/ at the repository root.
"""

from __future__ import annotations

import asyncio
import os
import re
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.conftest import ROOT, create_job

try:
    from playwright.async_api import Browser, Locator, Page, async_playwright, expect
except ImportError:  # reported by the `browser` fixture
    async_playwright = None  # type: ignore[assignment]

ARTIFACTS = ROOT / "test-artifacts"
DASHBOARD_FILE = ROOT / "static" / "index.html"
BROWSER_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
WAIT_MS = 30_000  # the longest any single wait may take
if async_playwright is not None:
    expect.set_options(timeout=WAIT_MS)
XSS_NAME = "<img src=x onerror=alert(1)>"
LOCAL_TOKEN = "local-t0ken"  # what run.py would make for a page opened from disk


def browser_unavailable(reason: str) -> None:
    if os.environ.get("JOBLINE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (JOBLINE_REQUIRE_BROWSER=1)", pytrace=False)
    pytest.skip(reason)


def chromium_executable() -> str | None:
    configured = os.environ.get("CHROMIUM_PATH")
    for candidate in [configured] if configured else BROWSER_PATHS:
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if async_playwright is None:
        browser_unavailable("playwright is not installed")
    executable = chromium_executable()
    if executable is None:
        browser_unavailable("no Chromium found (set CHROMIUM_PATH or install the chromium package)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=BROWSER_ARGS, headless=True, timeout=WAIT_MS
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Watched:
    """A page plus everything it reported that a user would count as broken."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    list_requests: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.page_errors == [], f"uncaught errors in the page: {self.page_errors}"
        assert self.console_errors == [], f"console errors: {self.console_errors}"
        assert self.dialogs == [], f"dialogs opened: {self.dialogs}"


@pytest.fixture
async def watched(client: Any, browser: Browser) -> AsyncIterator[Watched]:
    """A fresh page (closed before the server stops, as it depends on `client`)."""
    context = await browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    w = Watched(page)
    page.on("console", lambda message: w.console_errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: w.page_errors.append(str(error)))

    async def on_dialog(dialog: Any) -> None:
        w.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    page.on("dialog", on_dialog)

    def on_request(request: Any) -> None:
        if request.method == "GET" and re.search(r"/api/jobs(\?|$)", request.url):
            w.list_requests.append(request.url)

    page.on("request", on_request)
    yield w
    await context.close()


def row_of(page: Page, job_id: str) -> Locator:
    return page.locator(f'#job-rows > [role="row"][data-id="{job_id}"]')


async def expect_live(page: Page) -> None:
    indicator = page.locator("#conn")
    await expect(indicator).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    await expect(indicator).to_have_text(re.compile(r"\blive\b", re.I))
    await expect(indicator).to_have_attribute("aria-label", "Connection: live")


async def create_from_form(page: Page, name: str, steps: int, step_ms: int) -> dict[str, Any]:
    """Fill the create form for a demo job, submit it, check what was sent, return the created job."""
    await page.fill("#f-name", name)
    await page.select_option("#f-type", "demo")
    await page.fill("#f-steps", str(steps))
    await page.fill("#f-step-ms", str(step_ms))
    async with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/api/jobs"), timeout=WAIT_MS
    ) as info:
        await page.click("#f-submit")
    response = await info.value
    assert response.status == 201, await response.text()
    assert response.request.post_data_json == {
        "name": name,
        "type": "demo",
        "data": {"steps": steps, "stepMs": step_ms},
        "priority": "normal",
    }
    return await response.json()


async def sample_until_status(row: Locator, status: str, interval: float = 0.04) -> list[tuple[str, float]]:
    """(status, bar width %) samples of a row until it shows `status`."""
    samples: list[tuple[str, float]] = []
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        current, width = await row.evaluate(
            "tr => [tr.dataset.status, parseFloat(tr.querySelector('.bar-fill').style.width || '0')]"
        )
        samples.append((current, width))
        if current == status:
            return samples
        assert time.monotonic() < deadline, f"row never became {status}: {samples[-5:]}"
        await asyncio.sleep(interval)


async def test_dashboard_live_progress_actions_and_text_only_rendering(
    client: Any, start_worker: Any, watched: Watched
) -> None:
    page = watched.page
    await start_worker()
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect(page.locator("#empty")).to_contain_text("No jobs yet")
    await page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page
    list_loads = len(watched.list_requests)

    # A demo job from the form: its row appears, the bar grows, the row turns completed, all by events.
    demo = await create_from_form(page, "Browser demo", steps=5, step_ms=300)
    row = row_of(page, demo["id"])
    await expect(row).to_be_visible()
    await expect(row.locator(".c-name button")).to_have_text("Browser demo")
    samples = await sample_until_status(row, "completed")
    widths = [width for _, width in samples]
    assert widths == sorted(widths), f"progress went backwards: {samples}"
    assert len({w for w in widths if 0 < w < 100}) >= 2, f"progress did not advance in steps: {samples}"
    await expect(row.locator(".badge")).to_have_text("completed")
    await expect(row.locator(".pct")).to_have_text("100%")
    await expect(row.locator(".c-attempts")).to_have_text("1/3")
    await expect(row.locator(".c-finished")).not_to_have_text("—")
    await expect(row.locator(".c-actions button")).to_have_text(["Delete"])

    # A long job, cancelled from its row while it runs.
    long_job = await create_from_form(page, "Long crawl", steps=50, step_ms=200)
    long_row = row_of(page, long_job["id"])
    await expect(long_row).to_have_attribute("data-status", "active")
    await expect(long_row.locator(".pct")).not_to_have_text("0%")  # a step has been reported
    await expect(long_row.locator(".c-action")).not_to_have_text("—")
    await long_row.locator('button[data-act="cancel"]').click()
    await expect(long_row.locator(".badge")).to_have_text("cancelled")
    await expect(long_row.locator(".c-actions button")).to_have_text(["Retry", "Delete"])
    await asyncio.sleep(0.6)  # a late progress report from the stopping worker must not bring it back
    await expect(long_row.locator(".badge")).to_have_text("cancelled")

    # Job text is text: a name (and data) that is HTML shows literally and creates no element.
    xss = await create_job(client, name=XSS_NAME, type="noop", data={"html": "<img src=y onerror=alert(2)>"})
    xss_row = row_of(page, xss["id"])
    await expect(xss_row.locator(".c-name button")).to_have_text(XSS_NAME)
    await expect(xss_row.locator(".badge")).to_have_text("completed")
    await xss_row.locator(".c-name button").click()
    await expect(page.locator("#d-name")).to_have_text(XSS_NAME)
    await expect(page.locator("#d-data")).to_contain_text('"html": "<img src=y onerror=alert(2)>"')
    await page.wait_for_timeout(300)  # give any injected onerror handler time to fire
    assert await page.locator("#jobs img").count() == 0
    assert await page.locator("#detail img").count() == 0
    assert await page.evaluate("document.images.length") == 0
    assert watched.dialogs == []
    await page.click("#d-close")
    await expect(page.locator("#detail")).to_be_hidden()

    # A few more states, so the screenshots show the range: delayed, failed, and one running.
    delayed = await create_job(client, name="Nightly report", delayMs=3_600_000, priority="high")
    failed = await create_job(
        client, name="Flaky scrape", type="fail", maxAttempts=1, data={"message": "net::ERR_CONNECTION_RESET"}
    )
    running = await create_job(client, name="Crawl documentation site", data={"steps": 100, "stepMs": 400})
    await expect(row_of(page, delayed["id"]).locator(".c-actions button")).to_have_text(
        ["Promote", "Cancel", "Delete"]
    )
    await expect(row_of(page, delayed["id"]).locator(".chip")).to_be_visible()
    await expect(row_of(page, failed["id"]).locator(".badge")).to_have_text("failed")
    await expect(row_of(page, failed["id"]).locator(".c-action")).to_contain_text("net::ERR_CONNECTION_RESET")
    await expect(row_of(page, running["id"]).locator(".pct")).not_to_have_text("0%")
    await expect(page.locator("#total")).to_have_text("6 jobs")

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard.png", animations="disabled")

    # The detail view of the finished demo job, with its logs.
    await row.locator(".c-name button").click()
    await expect(page.locator("#detail")).to_be_visible()
    await expect(page.locator("#d-name")).to_have_text("Browser demo")
    await expect(page.locator("#d-logs")).to_contain_text("step 5/5")
    await expect(page.locator("#d-result")).to_contain_text("completed 5 web-agent steps")
    await page.screenshot(path=ARTIFACTS / "dashboard-detail.png", animations="disabled")
    await page.emulate_media(color_scheme="dark")
    await page.screenshot(path=ARTIFACTS / "dashboard-dark.png", animations="disabled")

    # Everything above came from the one stream: no list fetch since the first, the page never reloaded.
    assert await page.evaluate("window.__sameDocument") is True
    assert watched.list_requests[list_loads:] == []
    watched.assert_clean()
    assert (await client.post(f"/api/jobs/{running['id']}/cancel", json={})).status == 200  # quick worker stop


async def test_dashboard_opened_from_disk_uses_the_api_parameter(
    aiohttp_client: Any, redis_url: str, watched: Watched
) -> None:
    from jobline.server import Settings, create_app

    page = watched.page
    # A page from disk (Origin: null) needs the local token run.py makes; it prints a link like this one.
    client = await aiohttp_client(create_app(Settings(redis_url=redis_url, local_token=LOCAL_TOKEN)))
    api = str(client.make_url("/")).rstrip("/")
    before = await create_job(client, name="Made before the page opened", type="noop")  # no worker: waits

    await page.goto(f"{DASHBOARD_FILE.as_uri()}?api={quote(api, safe='')}#token={LOCAL_TOKEN}")
    await expect_live(page)
    assert "token=" not in page.url
    await expect(row_of(page, before["id"]).locator(".badge")).to_have_text("waiting")
    await expect(page.locator("#total")).to_have_text("1 job")
    await expect(page.locator("#api-host")).to_have_text(api.removeprefix("http://"))

    # Live events and a JSON action (a CORS preflight) across origins.
    after = await create_job(client, name="Made after", type="noop")
    after_row = row_of(page, after["id"])
    await expect(after_row.locator(".badge")).to_have_text("waiting")
    await after_row.locator('button[data-act="cancel"]').click()
    await expect(after_row.locator(".badge")).to_have_text("cancelled")
    await expect(page.locator("#total")).to_have_text("2 jobs")
    watched.assert_clean()


async def test_api_errors_show_as_toasts_with_the_server_message(client: Any, watched: Watched) -> None:
    page = watched.page
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await page.fill("#f-name", "Too far out")
    await page.fill("#f-delay", str(400 * 24 * 3600 * 1000))  # beyond the 366-day maximum
    async with page.expect_response(lambda r: r.request.method == "POST") as info:
        await page.click("#f-submit")
    assert (await info.value).status == 400
    toast = page.locator("#toasts .toast")
    await expect(toast).to_have_count(1)
    await expect(toast).to_contain_text("delayMs")
    await expect(page.locator("#job-rows > [role=row]")).to_have_count(0)
    await toast.locator("button").click()
    await expect(toast).to_have_count(0)
    # The browser itself logs the failed request; anything else would be the page's fault.
    watched.console_errors = [e for e in watched.console_errors if "status of 400" not in e]
    watched.assert_clean()


# -- the queue and worker panels, bulk actions, token ----------------------------------------------
# The panels poll every 3 s and refresh on events (at most once a second); waits below allow for that.
ADMIN_POLL_S = 3.0
HTML = {n: f"<img src=x onerror=alert({n})>" for n in range(3, 7)}


def queue_item(page: Page, name: str = "default") -> Locator:
    return page.locator(f'#queue-list > .qitem[data-queue="{name}"]')


def count_of(queue: Locator, status: str) -> Locator:
    return queue.locator(f'.stat[data-status="{status}"] .stat-n')


def worker_row(page: Page, worker_id: str) -> Locator:
    return page.locator(f'#worker-rows > [role="row"][data-id="{worker_id}"]')


def is_post(path: str) -> Any:
    return lambda r: r.request.method == "POST" and r.url.endswith(path)


async def test_queue_panel_pauses_and_resumes_a_queue(client: Any, start_worker: Any, watched: Watched) -> None:
    page = watched.page
    await start_worker()
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    queue = queue_item(page)
    # Listed before its first job: a live worker serves it.
    await expect(queue.locator(".q-state")).to_have_text("running")

    async with page.expect_response(is_post("/api/admin/queues/default/pause")) as info:
        await queue.locator('button[data-qact="pause"]').click()
    assert (await info.value).status == 200
    await expect(queue).to_have_attribute("data-paused", "true")
    await expect(queue.locator(".q-state")).to_have_text("paused")
    await expect(queue.locator("button.q-pause")).to_have_text("Resume")
    await expect(page.locator("#queues-summary")).to_have_text("1 queue · 1 paused")

    # A job created now waits, though the worker has free slots.
    job = await create_job(client, name="Held by the pause", type="noop")
    row = row_of(page, job["id"])
    await expect(row.locator(".badge")).to_have_text("waiting")
    await expect(count_of(queue, "waiting")).to_have_text("1")
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert await row.get_attribute("data-status") == "waiting"
        await asyncio.sleep(0.1)
    await expect(queue).to_have_attribute("data-paused", "true")

    async with page.expect_response(is_post("/api/admin/queues/default/resume")) as info:
        await queue.locator('button[data-qact="resume"]').click()
    assert (await info.value).status == 200
    await expect(row.locator(".badge")).to_have_text("completed")
    await expect(queue).to_have_attribute("data-paused", "false")
    await expect(queue.locator("button.q-pause")).to_have_text("Pause")
    await expect(count_of(queue, "completed")).to_have_text("1")
    await expect(count_of(queue, "waiting")).to_have_text("0")

    # Paused and resumed elsewhere (curl): the `queue` events show it at once, before any poll.
    assert (await client.post("/api/admin/queues/default/pause", json={})).status == 200
    await expect(queue.locator(".q-state")).to_have_text("paused", timeout=ADMIN_POLL_S * 500)
    assert (await client.post("/api/admin/queues/default/resume", json={})).status == 200
    await expect(queue.locator(".q-state")).to_have_text("running", timeout=ADMIN_POLL_S * 500)
    watched.assert_clean()


async def test_clean_confirmation_survives_live_updates(client: Any, start_worker: Any, watched: Watched) -> None:
    page = watched.page
    polls: list[float] = []
    page.on(
        "request",
        lambda r: polls.append(time.monotonic()) if r.method == "GET" and r.url.endswith("/api/admin/queues") else None,
    )
    await start_worker()
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    finished = [await create_job(client, name=f"Finished {i}", type="noop") for i in range(3)]
    later = await create_job(client, name="Nightly report", type="noop", delayMs=3_600_000)
    for job in finished:
        await expect(row_of(page, job["id"]).locator(".badge")).to_have_text("completed")
    queue = queue_item(page)
    await expect(count_of(queue, "completed")).to_have_text("3")

    await queue.locator('button[data-qact="clean"]').click()
    confirm = queue.locator(".q-confirm")
    status, age = confirm.locator("select").nth(0), confirm.locator("select").nth(1)
    await expect(confirm).to_be_visible()
    await expect(status).to_be_focused()
    await status.select_option("completed")
    await age.select_option("0")
    await expect(confirm.locator(".hint")).to_have_text("· 3 jobs, no undo")
    await queue.evaluate("node => { node.__kept = true; node.querySelector('.q-confirm').__kept = true; }")

    # While it is open: jobs are created, run, report progress and finish (events), and polls come.
    more = [await create_job(client, name=f"More {i}", type="noop") for i in range(2)]
    crawl = await create_job(client, name="Short crawl", data={"steps": 6, "stepMs": 150})
    for job in [*more, crawl]:
        await expect(row_of(page, job["id"]).locator(".badge")).to_have_text("completed")
    await expect(count_of(queue, "completed")).to_have_text("6")  # counts change in place...
    await expect(confirm.locator(".hint")).to_have_text("· 6 jobs, no undo")  # ...inside the confirm too
    quiet_since = len(polls)
    await page.wait_for_timeout(ADMIN_POLL_S * 1000 + 700)  # a full periodic cycle
    assert len(polls) > quiet_since, "no refresh happened while the confirm was open"
    await expect(confirm).to_be_visible()
    assert await queue.evaluate("node => node.isConnected && node.__kept && node.querySelector('.q-confirm').__kept")
    await expect(status).to_be_focused()  # focus, too, stayed where it was
    assert await status.input_value() == "completed"
    assert await age.input_value() == "0"
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-clean.png", animations="disabled")

    async with page.expect_response(is_post("/api/admin/queues/default/clean")) as info:
        await confirm.locator('button[data-qact="clean-confirm"]').click()
    response = await info.value
    assert response.request.post_data_json == {"status": "completed", "olderThanMs": 0}
    assert await response.json() == {"removed": 6}
    await expect(confirm).to_be_hidden()
    await expect(page.locator("#toasts .toast")).to_contain_text("Removed 6 completed jobs from default")
    await expect(page.locator("#job-rows > [role=row]")).to_have_count(1)  # the completed rows are gone
    await expect(row_of(page, later["id"]).locator(".badge")).to_have_text("delayed")
    await expect(page.locator("#total")).to_have_text("1 job")
    await expect(count_of(queue, "completed")).to_have_text("0")
    await expect(count_of(queue, "delayed")).to_have_text("1")
    watched.assert_clean()


async def test_bulk_actions_on_selected_rows(client: Any, watched: Watched) -> None:
    page = watched.page
    jobs = [await create_job(client, name=f"Batch {i}", type="noop") for i in range(5)]  # no worker: they wait
    chosen, spare, other = jobs[:3], jobs[3], jobs[4]
    assert (await client.post(f"/api/jobs/{other['id']}/cancel", json={})).status == 200
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect(page.locator("#total")).to_have_text("5 jobs")
    bulk, select_all = page.locator("#bulk"), page.locator("#select-all")
    await expect(bulk).to_be_hidden()

    for job in chosen:
        await row_of(page, job["id"]).locator("input.row-check").check()
    await expect(bulk).to_be_visible()
    await expect(page.locator("#bulk-count")).to_have_text("3 selected")
    assert await select_all.evaluate("box => box.indeterminate && !box.checked")

    # A selected row changes (priority, by event): it stays selected.
    patched = await client.patch(f"/api/jobs/{chosen[0]['id']}", json={"priority": "high"})
    assert patched.status == 200, await patched.text()
    await expect(row_of(page, chosen[0]["id"]).locator(".chip")).to_be_visible()
    await expect(row_of(page, chosen[0]["id"]).locator("input.row-check")).to_be_checked()

    async with page.expect_response(is_post("/api/jobs/bulk")) as info:
        await bulk.locator('button[data-bulk="cancel"]').click()
    response = await info.value
    sent = response.request.post_data_json
    assert sent["action"] == "cancel" and sorted(sent["ids"]) == sorted(j["id"] for j in chosen)
    assert await response.json() == {"affected": 3}
    await expect(page.locator("#toasts .toast")).to_contain_text("Cancelled 3 jobs")
    for job in chosen:
        row = row_of(page, job["id"])
        await expect(row.locator(".badge")).to_have_text("cancelled")
        await expect(row.locator("input.row-check")).to_be_checked()  # kept across the update
    await expect(row_of(page, spare["id"]).locator(".badge")).to_have_text("waiting")
    await expect(row_of(page, spare["id"]).locator("input.row-check")).not_to_be_checked()
    await expect(bulk.locator('button[data-bulk="cancel"]')).to_be_disabled()  # nothing left to cancel
    await expect(bulk.locator('button[data-bulk="retry"]')).to_be_enabled()

    delete = bulk.locator('button[data-bulk="delete"]')
    await delete.click()  # the first click arms it
    await expect(delete).to_have_text("Confirm")
    async with page.expect_response(is_post("/api/jobs/bulk")) as info:
        await delete.click()
    response = await info.value
    assert response.request.post_data_json["action"] == "delete"
    assert await response.json() == {"affected": 3}
    for job in chosen:
        await expect(row_of(page, job["id"])).to_have_count(0)
    await expect(bulk).to_be_hidden()
    await expect(page.locator("#total")).to_have_text("2 jobs")
    for job in chosen:
        assert (await client.get(f"/api/jobs/{job['id']}")).status == 404

    # Select-all takes the rows shown: with the "cancelled" filter, only that one.
    await page.locator('#filter button[data-status="cancelled"]').click()
    await expect(page.locator("#job-rows > [role=row]")).to_have_count(1)
    await select_all.check()
    await expect(page.locator("#bulk-count")).to_have_text("1 selected")
    await expect(row_of(page, other["id"]).locator("input.row-check")).to_be_checked()
    async with page.expect_response(is_post("/api/jobs/bulk")) as info:
        await bulk.locator('button[data-bulk="retry"]').click()
    assert (await info.value).request.post_data_json == {"action": "retry", "ids": [other["id"]]}
    await expect(page.locator("#job-rows > [role=row]")).to_have_count(0)  # retried: waiting, filtered out
    await expect(bulk).to_be_hidden()
    assert not await select_all.is_checked()
    await page.locator('#filter button[data-status=""]').click()
    await expect(row_of(page, other["id"]).locator(".badge")).to_have_text("waiting")
    await expect(row_of(page, other["id"]).locator("input.row-check")).not_to_be_checked()
    await select_all.check()
    await expect(page.locator("#bulk-count")).to_have_text("2 selected")
    await select_all.uncheck()
    await expect(bulk).to_be_hidden()
    watched.assert_clean()


async def test_workers_panel_and_admin_screenshots(client: Any, start_worker: Any, watched: Watched) -> None:
    page = watched.page
    worker = await start_worker()
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    row = worker_row(page, worker.id)
    await expect(row.locator(".w-id")).to_have_text(worker.id)
    await expect(row.locator(".w-host")).to_have_text(f"{worker.host} · pid {os.getpid()}")
    await expect(row.locator(".w-queues")).to_have_text("default")
    await expect(row.locator(".w-active")).to_have_text("0/5")
    await expect(row.locator(".w-processed")).to_have_text("0")
    await expect(row.locator(".w-seen")).to_have_text(re.compile(r"^(just now|\d s ago)$"))
    await expect(page.locator("#workers-summary")).to_have_text("1 live · 0/5 slots busy")

    quick = [await create_job(client, name=f"Quick check {i}", type="noop") for i in range(3)]
    flaky = await create_job(
        client, name="Flaky scrape", type="fail", maxAttempts=1, data={"message": "net::ERR_CONNECTION_RESET"}
    )
    blocker = await create_job(client, name="Long crawl", type="block")
    for job in quick:
        await expect(row_of(page, job["id"]).locator(".badge")).to_have_text("completed")
    await expect(row_of(page, flaky["id"]).locator(".badge")).to_have_text("failed")
    await expect(row_of(page, blocker["id"]).locator(".badge")).to_have_text("active")
    await expect(row.locator(".w-processed")).to_have_text("3")  # grew as the jobs ran
    await expect(row.locator(".w-failed")).to_have_text("1")
    await expect(row.locator(".w-active")).to_have_text("1/5")
    queue = queue_item(page)
    await expect(count_of(queue, "completed")).to_have_text("3")
    await expect(count_of(queue, "failed")).to_have_text("1")
    await expect(count_of(queue, "active")).to_have_text("1")
    await expect(queue.locator(".q-rate")).to_have_text("3 done/min · 1 failed")
    await expect(queue.locator(".q-failures .sum-latest")).to_have_text(
        "Flaky scrape: RuntimeError: net::ERR_CONNECTION_RESET"
    )
    chart = queue.locator("svg.q-chart")
    await expect(chart).to_have_attribute("aria-label", "Last 15 minutes: 3 completed, 1 failed")
    heights = "rs => rs.map(r => +r.getAttribute('height'))"
    ok, bad = [await chart.locator(f"rect.{kind}").evaluate_all(heights) for kind in ("ok", "bad")]
    assert len(ok) == len(bad) == 15 and sum(ok) > 0 and sum(bad) > 0, (ok, bad)

    # More for the screenshot: a second, paused queue with work waiting, a running demo job, a selection.
    for i in range(2):
        await create_job(client, name=f"Send digest {i}", type="noop", queue="emails")
    assert (await client.post("/api/admin/queues/emails/pause", json={})).status == 200
    demo = await create_job(client, name="Crawl documentation site", data={"steps": 100, "stepMs": 400})
    await expect(row_of(page, demo["id"]).locator(".pct")).not_to_have_text("0%")
    emails = queue_item(page, "emails")
    await expect(emails.locator(".q-state")).to_have_text("paused")
    await expect(count_of(emails, "waiting")).to_have_text("2")
    for job in quick[:2]:
        await row_of(page, job["id"]).locator("input.row-check").check()
    await page.mouse.move(0, 0)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-admin.png", animations="disabled")
    await page.emulate_media(color_scheme="dark")
    await page.screenshot(path=ARTIFACTS / "dashboard-admin-dark.png", animations="disabled")
    for job in (blocker, demo):  # quick worker stop
        assert (await client.post(f"/api/jobs/{job['id']}/cancel", json={})).status == 200
    watched.assert_clean()


async def test_html_in_every_field_shows_as_text(client: Any, start_worker: Any, watched: Watched) -> None:
    page = watched.page
    await start_worker()
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    name = "<b>bold</b><img src=x onerror=alert(7)>"
    reason = f"RuntimeError: {HTML[5]}"
    failing = await create_job(client, name=name, type="html_everywhere", maxAttempts=1, data={"holdMs": 2500})
    echo_name = "<script>alert(8)</script>"
    echoed = await create_job(client, name=echo_name, type="echo", data={"html": HTML[6]})

    # While it runs: the action in the row and the detail view, the log line in the detail view.
    row = row_of(page, failing["id"])
    await expect(row.locator(".c-name button")).to_have_text(name)
    await expect(row.locator(".c-action")).to_have_text(HTML[3])
    await row.locator(".c-name button").click()
    await expect(page.locator("#d-name")).to_have_text(name)
    await expect(page.locator("#d-action")).to_have_text(HTML[3])
    await expect(page.locator("#d-logs")).to_contain_text(HTML[4])
    # Failed: the reason in the row, the detail view and the queue panel's recent failures.
    await expect(row.locator(".badge")).to_have_text("failed")
    await expect(row.locator(".c-action")).to_have_text(reason)
    await expect(page.locator("#d-reason")).to_have_text(reason)
    await expect(page.locator("#d-logs")).to_contain_text(HTML[4])
    await expect(page.locator("#d-logs")).to_contain_text(reason)  # each attempt's failure is logged, as text
    failures = queue_item(page).locator(".q-failures")
    await expect(failures.locator(".sum-latest")).to_have_text(f"{name}: {reason}")
    await failures.locator("summary").click()
    item = failures.locator("li").first
    await expect(item.locator(".link")).to_have_text(name)
    await expect(item.locator(".why")).to_have_text(reason)

    # A result that is HTML, under a name that is a script.
    echo_row = row_of(page, echoed["id"])
    await expect(echo_row.locator(".badge")).to_have_text("completed")
    await echo_row.locator(".c-name button").click()
    await expect(page.locator("#d-name")).to_have_text(echo_name)
    await expect(page.locator("#d-result")).to_contain_text(f'"html": "{HTML[6]}"')
    # The failure in the queue panel opens its job.
    await item.locator(".link").click()
    await expect(page.locator("#d-name")).to_have_text(name)
    await expect(page.locator("#d-reason")).to_have_text(reason)

    # A toast that quotes a job name.
    await page.click("#d-close")
    await page.locator('#filter button[data-status="failed"]').click()
    await page.fill("#f-name", HTML[3])
    await page.select_option("#f-type", "noop")
    await page.click("#f-submit")
    await expect(page.locator("#toasts .toast.info")).to_contain_text(f"Created “{HTML[3]}”")

    await page.wait_for_timeout(300)  # give any injected handler time to fire
    injected = "[document.images.length, document.querySelectorAll('b').length, document.scripts.length]"
    assert await page.evaluate(injected) == [0, 0, 1]
    watched.assert_clean()  # includes: no alert() dialog opened


async def test_api_token_is_asked_once_and_kept(aiohttp_client: Any, redis_url: str, watched: Watched) -> None:
    from jobline.server import Settings, create_app

    page = watched.page
    secured = await aiohttp_client(create_app(Settings(redis_url=redis_url, api_token="t0k")))
    auth = {"Authorization": "Bearer t0k"}

    async def create(name: str) -> dict[str, Any]:
        response = await secured.post("/api/jobs", json={"name": name, "type": "noop"}, headers=auth)
        assert response.status == 201, await response.text()
        return await response.json()

    before = await create("Made before the page opened")
    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r) if "/api/" in r.url else None)
    await page.add_init_script(
        "window.__prompts = 0; const show = HTMLDialogElement.prototype.showModal;"
        "HTMLDialogElement.prototype.showModal = function () { window.__prompts += 1; return show.call(this); };"
    )
    await page.goto(str(secured.make_url("/")))
    dialog = page.locator("#token-dialog")
    await expect(dialog).to_be_visible()
    await expect(page.locator("#token-input")).to_be_focused()
    await page.fill("#token-input", "t0k")
    await page.press("#token-input", "Enter")  # Enter saves
    await expect(dialog).to_be_hidden()
    await expect_live(page)
    await expect(row_of(page, before["id"]).locator(".badge")).to_have_text("waiting")
    await expect(count_of(queue_item(page), "waiting")).to_have_text("1")
    after = await create("Made while the page is open")
    await expect(row_of(page, after["id"]).locator(".badge")).to_have_text("waiting")  # live, by the stream
    await expect(count_of(queue_item(page), "waiting")).to_have_text("2")
    assert await page.evaluate("localStorage.getItem('jobline.token@' + location.origin)") == "t0k"
    assert await page.evaluate("window.__prompts") == 1  # one prompt, though several requests got a 401

    # The stream carried the token as a query parameter; every other call as a header.
    streams = [i for i, r in enumerate(requests) if "/api/jobs/stream?" in r.url and "access_token=t0k" in r.url]
    assert streams, [r.url for r in requests]
    made = [r for r in requests[streams[0] :] if "/api/jobs/stream" not in r.url]
    assert {"/api/admin/queues", "/api/admin/workers", "/api/jobs?limit=200"} <= {
        r.url.removeprefix(str(secured.make_url(""))) for r in made
    }, [r.url for r in made]
    for r in made:
        assert (await r.all_headers()).get("authorization") == "Bearer t0k", r.url

    # A reload: the kept token is used, no second prompt.
    await page.reload()
    await expect_live(page)
    await expect(row_of(page, after["id"]).locator(".badge")).to_have_text("waiting")
    await expect(count_of(queue_item(page), "waiting")).to_have_text("2")
    assert await page.evaluate("window.__prompts") == 0
    await expect(dialog).to_be_hidden()
    # The browser logs the 401s before the token was given; nothing else may be logged.
    watched.console_errors = [e for e in watched.console_errors if "401" not in e]
    watched.assert_clean()


async def test_page_reconnects_after_a_server_restart_and_shows_the_final_states(
    redis_url: str, start_worker: Any, browser: Browser
) -> None:
    """The server goes away mid-job and comes back on the same port: the page reconnects by itself,
    replays what it missed, and shows the job completed, without a reload."""
    from aiohttp.test_utils import TestServer

    from jobline.server import Settings, create_app
    from tests.conftest import free_port

    port = free_port()
    first = TestServer(create_app(Settings(redis_url=redis_url)), port=port)
    await first.start_server()
    second: TestServer | None = None
    context = await browser.new_context()
    try:
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        await start_worker()
        await page.goto(f"http://127.0.0.1:{port}/")
        await expect_live(page)
        await page.evaluate("window.__sameDocument = true")
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"http://127.0.0.1:{port}/api/jobs", json={"name": "Survives a restart", "data": {"steps": 12, "stepMs": 250}}
            ) as response:
                job = await response.json()
        row = row_of(page, job["id"])
        await expect(row).to_have_attribute("data-status", "active")

        await first.close()  # the server goes away while the job runs
        await expect(page.locator("#conn")).not_to_have_attribute("data-state", "live")
        await asyncio.sleep(1.5)
        second = TestServer(create_app(Settings(redis_url=redis_url)), port=port)
        await second.start_server()

        await expect_live(page)
        await expect(row.locator(".badge")).to_have_text("completed")
        await expect(row.locator(".pct")).to_have_text("100%")
        assert await page.evaluate("window.__sameDocument") is True  # no reload
    finally:
        await context.close()
        await first.close()
        if second is not None:
            await second.close()


# -- security review (issue 17): a token stays with its origin; no job blanks the page ------------
TOKEN = "s3cret-t0ken"
# Records every Content-Security-Policy violation: a page that tried to reach a host its CSP forbids.
CSP_WATCH = (
    "window.__violations = [];"
    "document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.blockedURI));"
)


@asynccontextmanager
async def other_host() -> AsyncIterator[tuple[str, list[str]]]:
    """Another server (another port: another origin) that records every request it gets and allows
    any cross-origin call, token included, so a leak to it would succeed. It answers like an empty Jobline."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    seen: list[str] = []
    done = asyncio.Event()

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path_qs} Authorization={request.headers.get('Authorization')}")
        cors = {
            "Access-Control-Allow-Origin": request.headers.get("Origin", "*"),
            "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, Last-Event-ID",
        }
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=cors)
        if request.path == "/api/jobs/stream":  # open until the test ends
            stream = web.StreamResponse(headers={**cors, "Content-Type": "text/event-stream"})
            await stream.prepare(request)
            await stream.write(b"retry: 60000\n\n")
            await done.wait()
            return stream
        return web.json_response({"jobs": [], "total": 0, "queues": [], "workers": []}, headers=cors)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), seen
    finally:
        done.set()
        await server.close()


def save_token(origin: str) -> str:
    """An init script: TOKEN saved for `origin` as the page keeps it, and as version 1 kept it (one key
    for any server), before the page's own script runs."""
    return "".join(f"localStorage.setItem('{key}', '{TOKEN}');" for key in (f"jobline.token@{origin}", "jobline.token"))


async def secured_client(aiohttp_client: Any, redis_url: str) -> Any:
    from jobline.server import Settings, create_app

    return await aiohttp_client(create_app(Settings(redis_url=redis_url, api_token=TOKEN)))


async def create_secured(client: Any, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/jobs", json=fields, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 201, await response.text()
    return await response.json()


async def test_saved_token_is_not_sent_to_another_host(aiohttp_client: Any, redis_url: str, watched: Watched) -> None:
    """Served by the server, the page talks to its own origin only: ?api= cannot point it, and the
    token it keeps, at another host."""
    page = watched.page
    secured = await secured_client(aiohttp_client, redis_url)
    own = str(secured.make_url("")).rstrip("/")
    job = await create_secured(secured, name="Listed by its own server", type="noop")  # no worker: waits
    # The token is saved for the server's origin, as this page keeps it (and as version 1 kept it).
    await page.add_init_script(CSP_WATCH + save_token(own))

    async with other_host() as (other, seen):
        await page.goto(f"{own}/?api={quote(other, safe='')}")
        await expect_live(page)
        await page.wait_for_timeout(2000)  # what a leak would take: version 1 leaked within a second
        assert seen == [], f"the other host was called: {seen}"
        # Live with its own server, with the token (the server requires it): its jobs are listed.
        await expect(row_of(page, job["id"]).locator(".badge")).to_have_text("waiting")
        await expect(page.locator("#toasts .toast")).to_contain_text("?api= is only for the page opened from disk")
    assert await page.evaluate("window.__violations") == []  # it did not even try (the CSP would stop it)
    await expect(page.locator("#token-dialog")).to_be_hidden()
    watched.assert_clean()


async def test_token_saved_for_one_api_is_not_sent_to_another_from_disk(
    client: Any, watched: Watched
) -> None:
    """Opened from disk, ?api= may name any server; the token saved for one is never sent to another."""
    page = watched.page
    own = str(client.make_url("")).rstrip("/")
    await page.add_init_script(save_token(own))

    async with other_host() as (other, seen):
        await page.goto(f"{DASHBOARD_FILE.as_uri()}?api={quote(other, safe='')}")
        await expect_live(page)  # the other host is this page's API now
        await expect(page.locator("#empty")).to_contain_text("No jobs yet")
        assert any(line.startswith("GET /api/jobs?limit=") for line in seen), seen
        assert [line for line in seen if TOKEN in line] == [], seen
    assert await page.evaluate(f"localStorage.getItem('jobline.token@{own}')") == TOKEN  # still kept for its own
    await expect(page.locator("#api-host")).to_have_text(other.removeprefix("http://"))
    watched.assert_clean()


async def test_token_in_the_address_is_kept_and_removed_from_it(
    aiohttp_client: Any, redis_url: str, watched: Watched
) -> None:
    page = watched.page
    secured = await secured_client(aiohttp_client, redis_url)
    job = await create_secured(secured, name="Behind a token", type="noop")
    await page.add_init_script(
        "window.__prompts = 0; const show = HTMLDialogElement.prototype.showModal;"
        "HTMLDialogElement.prototype.showModal = function () { window.__prompts += 1; return show.call(this); };"
    )
    await page.goto(f"{secured.make_url('/')}#token={TOKEN}")
    await expect_live(page)
    await expect(row_of(page, job["id"]).locator(".badge")).to_have_text("waiting")
    assert "token=" not in page.url, page.url
    assert await page.evaluate("location.hash") == ""
    assert await page.evaluate("window.__prompts") == 0
    await expect(page.locator("#token-dialog")).to_be_hidden()
    assert await page.evaluate("localStorage.getItem('jobline.token@' + location.origin)") == TOKEN

    await page.reload()  # kept: no token in the address now
    await expect_live(page)
    await expect(row_of(page, job["id"]).locator(".badge")).to_have_text("waiting")
    assert await page.evaluate("window.__prompts") == 0
    watched.assert_clean()


async def test_version_1_token_is_taken_over_for_the_page_own_origin_only(
    aiohttp_client: Any, redis_url: str, watched: Watched
) -> None:
    """Version 1 kept one token (`jobline.token`) for any server. Served, the page talks to its own
    origin only, so it may keep that token for its own origin; the old key goes."""
    page = watched.page
    secured = await secured_client(aiohttp_client, redis_url)
    job = await create_secured(secured, name="Behind a token", type="noop")
    await page.add_init_script(f"localStorage.setItem('jobline.token', '{TOKEN}');")
    await page.goto(str(secured.make_url("/")))
    await expect_live(page)
    await expect(row_of(page, job["id"]).locator(".badge")).to_have_text("waiting")
    await expect(page.locator("#token-dialog")).to_be_hidden()
    kept = "['jobline.token@' + location.origin, 'jobline.token'].map((key) => localStorage.getItem(key))"
    assert await page.evaluate(kept) == [TOKEN, None]
    watched.assert_clean()


def detail_field(page: Page, label: str) -> Locator:
    return page.locator("#d-fields > div", has=page.locator("dt", has_text=re.compile(f"^{label}$"))).locator("dd")


async def test_a_job_with_absurd_times_does_not_blank_the_table(
    client: Any, redis_client: Any, watched: Watched
) -> None:
    from jobline.keys import Keys

    page = watched.page
    normal = await create_job(client, name="An ordinary job", type="noop")
    odd = await create_job(client, name="Odd times", type="noop", delayMs=3_600_000)  # delayed: shows its run-at
    # Out of the JS Date range, both ways (Date(2.3e16) is invalid; Intl throws RangeError on it).
    await redis_client.hset(
        Keys().job(odd["id"]),
        mapping={"runAt": "23000000000000000", "startedAt": "-9223372036854775808", "progress": "1000000000"},
    )
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect(row_of(page, normal["id"]).locator(".c-name button")).to_have_text("An ordinary job")
    row = row_of(page, odd["id"])
    await expect(row.locator(".c-name button")).to_have_text("Odd times")
    await expect(row.locator(".badge")).to_have_text("delayed")
    await expect(row.locator(".c-action")).to_have_text("runs at —")
    await expect(row.locator(".pct")).to_have_text("100%")
    await expect(page.locator("#total")).to_have_text("2 jobs")

    await row.locator(".c-name button").click()
    await expect(page.locator("#d-name")).to_have_text("Odd times")
    await expect(detail_field(page, "Run at")).to_have_text("—")
    await expect(detail_field(page, "Started")).to_have_text("—")
    await expect(detail_field(page, "Created")).not_to_have_text("—")
    await page.click("#d-close")

    await page.set_viewport_size({"width": 390, "height": 844})  # phone
    await expect(row_of(page, normal["id"])).to_be_visible()
    await expect(row).to_be_visible()
    watched.assert_clean()  # no uncaught error (pageerror), nothing logged as an error


async def publish_job_event(redis_client: Any, job: dict[str, Any]) -> None:
    """A `job` event as the server's scripts emit one (into the event log, then published), with a job
    no script would write: what the page must survive from a buggy or newer server."""
    from jobline.keys import Keys

    keys = Keys()
    payload = json.dumps({"job": job})
    event_id = await redis_client.xadd(keys.event_log("default"), {"e": "job", "d": payload})
    await redis_client.publish(keys.job_channel(job["id"]), f"default\n{event_id}\njob\n{payload}")


async def test_jobs_with_odd_fields_render_in_their_rows(client: Any, redis_client: Any, watched: Watched) -> None:
    page = watched.page
    normal = await create_job(client, name="An ordinary job", type="noop")
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect(row_of(page, normal["id"])).to_be_visible()

    # Missing fields, a null name, a huge progress, a date that is text: shown as far as they can be.
    odd_fields = {"id": "odd-fields", "name": None, "status": "active", "rev": 1, "progress": 1e9, "createdAt": "soon"}
    await publish_job_event(redis_client, odd_fields)
    # A name that cannot even be made text: the row still shows, by its id.
    unprintable_name = {"toString": 1, "valueOf": 1}  # String() of it throws
    unprintable = {"id": "unprintable", "name": unprintable_name, "status": "waiting", "rev": 1}
    await publish_job_event(redis_client, unprintable)
    odd = row_of(page, "odd-fields")
    await expect(odd.locator(".c-name button")).to_have_text("odd-fields")
    await expect(odd.locator(".badge")).to_have_text("active")
    await expect(odd.locator(".pct")).to_have_text("100%")
    await expect(odd.locator(".c-attempts")).to_have_text("—/—")
    await expect(odd.locator(".c-created")).to_have_text("—")
    unprintable_row = row_of(page, "unprintable")
    await expect(unprintable_row.locator(".c-name button")).to_have_text("unprintable")
    await expect(unprintable_row.locator(".badge")).to_have_text("waiting")
    await expect(row_of(page, normal["id"]).locator(".c-name button")).to_have_text("An ordinary job")
    await expect(page.locator("#job-rows > [role=row]")).to_have_count(3)
    watched.assert_clean()  # no uncaught error: the unprintable row was drawn by its fallback


BIG = {"note": "kept", "pages": ["x" * 100] * 50}  # over 4 KiB encoded: events leave it out


async def test_an_event_without_data_keeps_the_data_the_page_has(
    client: Any, redis_client: Any, watched: Watched
) -> None:
    from jobline.keys import Keys

    page = watched.page
    job = await create_job(client, name="Big input", type="noop", data=BIG)  # no worker: waits
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    row = row_of(page, job["id"])
    await expect(row.locator(".badge")).to_have_text("waiting")  # the list has the job with its data

    patched = await client.patch(f"/api/jobs/{job['id']}", json={"priority": "high"})
    assert patched.status == 200, await patched.text()
    await expect(row.locator(".chip")).to_be_visible()  # the event arrived
    _, latest = (await redis_client.xrevrange(Keys().event_log("default"), count=1))[0]
    event = json.loads(latest["d"])["job"]
    assert event["id"] == job["id"] and event["dataOmitted"] is True and "data" not in event

    # Open the job while its fetch is held: what shows is what the page kept.
    held: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def hold_first(route: Any) -> None:
        if held.done():
            await route.continue_()
        else:
            held.set_result(route)

    await page.route(f"**/api/jobs/{job['id']}", hold_first)
    await row.locator(".c-name button").click()
    route = await asyncio.wait_for(held, WAIT_MS / 1000)
    await expect(detail_field(page, "Priority")).to_have_text("high")  # the view shows the event's job...
    await expect(page.locator("#d-data")).to_contain_text('"note": "kept"')  # ...with the data from the list
    await route.continue_()
    await expect(page.locator("#d-logs")).to_have_text("No log lines yet.")  # the fetch came back
    await expect(page.locator("#d-data")).to_contain_text('"note": "kept"')
    watched.assert_clean()


async def test_detail_view_fetches_the_data_an_event_left_out(client: Any, watched: Watched) -> None:
    page = watched.page
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    job = await create_job(client, name="Big from the start", type="noop", data=BIG)  # known by its event only
    row = row_of(page, job["id"])
    await expect(row.locator(".badge")).to_have_text("waiting")
    async with page.expect_response(lambda r: r.url.endswith(f"/api/jobs/{job['id']}")) as info:
        await row.locator(".c-name button").click()
    assert (await info.value).status == 200
    await expect(page.locator("#d-data")).to_contain_text('"note": "kept"')
    await expect(page.locator("#d-result")).to_have_text("null")
    watched.assert_clean()


# -- a phone, a wide screen, and a queue no worker serves (issue 10) -------------------------------
PHONE = {"width": 390, "height": 844}
LONG_QUEUE = "q" * 32 + "-" + "x" * 31  # the longest name a queue may have: 64 characters

# The parts of a job row a user needs, by selector; each must lie inside the viewport's width and
# inside the job list's own box (nothing hidden off to the side of a scroller).
ROW_PARTS = ".c-name button, .badge, .bar, .pct, .c-action, .c-attempts, .c-created, .c-actions button"
OUT_OF_REACH = """([wrap, parts]) => {
  const box = document.querySelector(wrap).getBoundingClientRect();
  const right = Math.min(innerWidth, box.right);
  const out = [];
  for (const row of document.querySelectorAll('#job-rows > [role=row]')) {
    for (const node of row.querySelectorAll(parts)) {
      if (!node.getClientRects().length) continue;  // not rendered (an empty action line)
      const r = node.getBoundingClientRect();
      if (r.width === 0 || r.left < box.left - 0.5 || r.right > right + 0.5) {
        out.push(`${row.dataset.status} ${node.className || node.tagName}: ${r.left.toFixed(0)}..${r.right.toFixed(0)}`);
      }
    }
  }
  return out;
}"""
# Every element whose box reaches past the viewport's right edge (what would make the page scroll sideways).
PAST_THE_EDGE = """() => [...document.querySelectorAll('body *')]
  .filter((node) => node.getClientRects().length && node.getBoundingClientRect().right > innerWidth + 0.5
    && !node.closest('[hidden], .sr-only'))
  .map((node) => `${node.tagName.toLowerCase()}.${node.className}#${node.id}`).slice(0, 10)"""

# The controls and figures of the form and the panels: each must lie inside its card (a panel clips
# what overflows it, so "no sideways scroll" alone would not show a control cut off at its edge).
PANEL_PARTS = (
    "#create-form input:not([hidden] *), #create-form select:not([hidden] *), #create-form button, "
    "#queues-card button, #queues-card select, #queues-card .stat, #queues-card code, #queues-card .q-limits > *, "
    "#workers-card [role=row] > *, "
    "#schedules-card button, #schedules-card input, #schedules-card select, #schedules-card .srow > *, "
    "#schedules-card .srow .s-id, #schedules-card .sf-error"
)
OUTSIDE_ITS_CARD = """(parts) => [...document.querySelectorAll(parts)]
  .filter((node) => node.getClientRects().length)
  .filter((node) => {
    const card = node.closest('.card').getBoundingClientRect();
    const r = node.getBoundingClientRect();
    return r.left < card.left - 0.5 || r.right > Math.min(card.right, innerWidth) + 0.5;
  })
  .map((node) => `${node.tagName.toLowerCase()}.${node.className} ${node.textContent.slice(0, 30)}`)"""


async def settled(page: Page) -> None:
    """Two frames: rows just scrolled into view are drawn (they skip rendering off screen)."""
    await page.evaluate("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")


async def no_sideways_scroll(page: Page) -> None:
    widths = await page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}; past the edge: {await page.evaluate(PAST_THE_EDGE)}"


async def test_phone_job_rows_show_every_part_and_their_buttons_work(
    client: Any, start_worker: Any, watched: Watched
) -> None:
    page = watched.page
    await page.set_viewport_size(PHONE)
    await start_worker(concurrency=1)  # one slot: with the long job running, the next one waits
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    failed = await create_job(
        client, name="Flaky scrape", type="fail", maxAttempts=1, data={"message": "net::ERR_CONNECTION_RESET"}
    )
    await expect(row_of(page, failed["id"]).locator(".badge")).to_have_text("failed")
    active = await create_job(client, name="Crawl the whole documentation site, every page", type="block")
    await expect(row_of(page, active["id"]).locator(".badge")).to_have_text("active")
    waiting = await create_job(client, name="Send the weekly digest", type="noop")
    delayed = await create_job(client, name="Nightly report", type="noop", delayMs=3_600_000, priority="high")
    await expect(row_of(page, waiting["id"]).locator(".badge")).to_have_text("waiting")
    await expect(row_of(page, delayed["id"]).locator(".c-actions button")).to_have_text(["Promote", "Cancel", "Delete"])
    await expect(row_of(page, active["id"]).locator(".c-action")).to_have_text("blocking")

    # Every part of every row, the buttons included, lies within the screen's width: no sideways scrolling.
    assert await page.evaluate(OUT_OF_REACH, ["#jobs-card .table-wrap", ROW_PARTS]) == []
    assert await page.evaluate(
        "(() => { const w = document.querySelector('#jobs-card .table-wrap'); return w.scrollWidth <= w.clientWidth; })()"
    )
    await row_of(page, delayed["id"]).scroll_into_view_if_needed()
    await page.mouse.move(0, 0)
    await settled(page)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-phone.png", animations="disabled", full_page=True)

    # A row's button does what it says: cancel the waiting job.
    waiting_row = row_of(page, waiting["id"])
    cancel = waiting_row.locator('button[data-act="cancel"]')
    await cancel.scroll_into_view_if_needed()
    box = await cancel.bounding_box()
    assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= PHONE["width"], box
    await cancel.click()
    await expect(waiting_row.locator(".badge")).to_have_text("cancelled")
    await expect(waiting_row.locator(".c-actions button")).to_have_text(["Retry", "Delete"])
    assert await page.evaluate(OUT_OF_REACH, ["#jobs-card .table-wrap", ROW_PARTS]) == []
    await no_sideways_scroll(page)
    assert (await client.post(f"/api/jobs/{active['id']}/cancel", json={})).status == 200  # quick worker stop
    watched.assert_clean()


async def test_phone_filter_chips_are_all_in_reach_and_filter(client: Any, watched: Watched) -> None:
    page = watched.page
    await page.set_viewport_size(PHONE)
    waiting = await create_job(client, name="Waits for a worker", type="noop")  # no worker: waits
    cancelled = await create_job(client, name="Changed my mind", type="noop")
    assert (await client.post(f"/api/jobs/{cancelled['id']}/cancel", json={})).status == 200
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect(page.locator("#total")).to_have_text("2 jobs")

    chips = page.locator("#filter button")
    await expect(chips).to_have_text(
        ["All", "Waiting", "Waiting children", "Delayed", "Active", "Completed", "Failed", "Cancelled"]
    )
    await page.locator("#filter").scroll_into_view_if_needed()
    for i in range(await chips.count()):  # all at once, each whole: none is cut at the edge or scrolled away
        await expect(chips.nth(i)).to_be_in_viewport(ratio=1)
    await chips.filter(has_text="Cancelled").click()
    await expect(page.locator("#job-rows > [role=row]")).to_have_count(1)
    await expect(row_of(page, cancelled["id"]).locator(".badge")).to_have_text("cancelled")
    await expect(chips.filter(has_text="Cancelled")).to_have_attribute("aria-pressed", "true")
    await expect(page.locator("#total")).to_have_text("1 cancelled")
    await chips.filter(has_text="All").click()
    await expect(row_of(page, waiting["id"]).locator(".badge")).to_have_text("waiting")
    await no_sideways_scroll(page)
    watched.assert_clean()


async def test_phone_page_never_scrolls_sideways(client: Any, start_worker: Any, watched: Watched) -> None:
    """The create form, both panels, the bulk bar, a clean confirmation, long names and the detail
    view: none of them is wider than a phone."""
    page = watched.page
    await page.set_viewport_size(PHONE)
    await start_worker(queues=("default", LONG_QUEUE))
    long_name = "A job whose name goes on and on: " + "crawl-every-page-of-the-documentation-site-" * 3
    jobs = [
        await create_job(client, name=long_name, type="noop", queue=LONG_QUEUE, delayMs=3_600_000),
        await create_job(client, name="Flaky scrape", type="fail", maxAttempts=1, data={"message": "x" * 300}),
        await create_job(client, name="Digest", type="noop", queue="emails"),  # no worker serves it
    ]
    assert (await client.post("/api/admin/queues/emails/pause", json={})).status == 200
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect(row_of(page, jobs[1]["id"]).locator(".badge")).to_have_text("failed")
    await expect(queue_item(page, LONG_QUEUE)).to_be_visible()
    await expect(queue_item(page, "emails").locator(".q-state")).to_have_text("paused")
    await expect(page.locator("#worker-rows > [role=row]")).to_have_count(1)
    await no_sideways_scroll(page)
    assert await page.evaluate(OUTSIDE_ITS_CARD, PANEL_PARTS) == []

    await queue_item(page).locator('button[data-qact="clean"]').click()  # the clean confirmation
    await expect(queue_item(page).locator(".q-confirm")).to_be_visible()
    for job in jobs[:2]:  # the bulk bar
        await row_of(page, job["id"]).locator("input.row-check").check()
    await expect(page.locator("#bulk")).to_be_visible()
    await no_sideways_scroll(page)
    assert await page.evaluate(OUTSIDE_ITS_CARD, PANEL_PARTS) == []
    await settled(page)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-phone-panels.png", animations="disabled", full_page=True)

    await row_of(page, jobs[0]["id"]).locator(".c-name button").click()  # the detail view
    await expect(page.locator("#d-name")).to_have_text(long_name)
    await no_sideways_scroll(page)
    watched.assert_clean()


async def test_wide_screen_shows_short_queue_names_whole(client: Any, watched: Watched) -> None:
    page = watched.page
    await page.set_viewport_size({"width": 1400, "height": 900})
    for queue in ("default", "emails", LONG_QUEUE):
        await create_job(client, name=f"On {queue}", type="noop", queue=queue)  # no worker: they wait
    assert (await client.post("/api/admin/queues/emails/pause", json={})).status == 200
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect(count_of(queue_item(page, LONG_QUEUE), "waiting")).to_have_text("1")
    await expect(queue_item(page, "emails").locator(".q-state")).to_have_text("paused")

    whole = "label => label.scrollWidth <= label.clientWidth"
    for queue in ("default", "emails"):
        label = queue_item(page, queue).locator(".q-label")
        await expect(label).to_have_text(queue)
        await expect(label).to_have_attribute("title", queue)
        assert await label.evaluate(whole), f"{queue} is cut"
    # A 64-character name may be shortened, but it keeps to its panel and names itself in full.
    long_label = queue_item(page, LONG_QUEUE).locator(".q-label")
    await expect(long_label).to_have_attribute("title", LONG_QUEUE)
    panel = await page.locator("#queues-card").bounding_box()
    label_box = await long_label.bounding_box()
    assert panel and label_box and label_box["x"] + label_box["width"] <= panel["x"] + panel["width"]
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-1400.png", animations="disabled")
    watched.assert_clean()


def no_worker_hint(page: Page, queue: str) -> Locator:
    return queue_item(page, queue).locator(".q-noworker")


async def test_queue_panel_says_when_no_worker_serves_a_queue(client: Any, start_worker: Any, watched: Watched) -> None:
    page = watched.page
    first = await create_job(client, name="Send digest 1", type="block", queue="emails")  # no worker: waits
    second = await create_job(client, name="Send digest 2", type="block", queue="emails")
    idle = await create_job(client, name="Nothing left to run", type="noop")
    assert (await client.post(f"/api/jobs/{idle['id']}/cancel", json={})).status == 200
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    hint = no_worker_hint(page, "emails")
    await expect(hint).to_be_visible()
    await expect(hint).to_contain_text("No worker serves this queue")
    await expect(hint).to_contain_text("python worker.py --queue emails")
    await expect(row_of(page, second["id"]).locator(".c-action")).to_have_text("no worker serves emails")
    await expect(count_of(queue_item(page), "cancelled")).to_have_text("1")
    await expect(no_worker_hint(page, "default")).to_be_hidden()  # nothing waits on it
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-no-worker.png", animations="disabled")

    # A worker for "emails", one slot: the first job runs, the second still waits, and no hint is left.
    await start_worker(queues=("emails",), concurrency=1)
    await expect(row_of(page, first["id"]).locator(".badge")).to_have_text("active")
    await expect(hint).to_be_hidden()  # by the panel's next refresh
    await expect(count_of(queue_item(page, "emails"), "waiting")).to_have_text("1")
    await expect(row_of(page, second["id"]).locator(".badge")).to_have_text("waiting")
    await expect(row_of(page, second["id"]).locator(".c-action")).to_have_text("—")
    for job in (first, second):  # quick worker stop
        assert (await client.post(f"/api/jobs/{job['id']}/cancel", json={})).status == 200
    watched.assert_clean()


async def test_queue_panel_shows_no_hint_when_the_server_does_not_count_workers(
    client: Any, watched: Watched
) -> None:
    """A server without the `workers` field (an older one): unknown, so no hint, rather than a wrong one."""
    page = watched.page

    async def without_workers(route: Any) -> None:
        response = await route.fetch()
        body = await response.json()
        for queue in body["queues"]:
            queue.pop("workers", None)
        await route.fulfill(response=response, json=body)

    await page.route("**/api/admin/queues", without_workers)
    job = await create_job(client, name="Send digest", type="noop", queue="emails")  # no worker: waits
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect(count_of(queue_item(page, "emails"), "waiting")).to_have_text("1")
    await expect(row_of(page, job["id"]).locator(".badge")).to_have_text("waiting")
    await expect(no_worker_hint(page, "emails")).to_be_hidden()
    await expect(row_of(page, job["id"]).locator(".c-action")).to_have_text("—")
    watched.assert_clean()


# -- the detail view's timeline and saved state (issue 16) -----------------------------------------
TIMELINE = "#d-timeline > li"
# No handler can emit this name (names are [A-Za-z0-9_.:-]); a buggy or newer server might send it.
HTML_EVENT_NAME = "<img src=x onerror=alert(9)>"


def compact(value: Any) -> str:
    """JSON as the page shows it: compact, as JSON.stringify writes it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def publish_custom_event(redis_client: Any, job_id: str, name: str, data: Any, at: int) -> str:
    """A `job-event` as ctx.emit sends one: into the event log, then published; returns its stream id.
    (Only the stream's part: the job's own `events` list is left alone.)"""
    from jobline.keys import Keys

    keys = Keys()
    payload = json.dumps({"jobId": job_id, "name": name, "data": data, "at": at})
    event_id = await redis_client.xadd(keys.event_log("default"), {"e": "job-event", "d": payload})
    await redis_client.publish(keys.job_channel(job_id), f"default\n{event_id}\njob-event\n{payload}")
    return event_id


def single_job_view_with(fields: dict[str, Any]) -> Any:
    """A route handler: the real single-job answer with `fields` (read at each request) put over it."""

    async def handle(route: Any) -> None:
        response = await route.fetch()
        body = await response.json()
        body.update(fields)
        await route.fulfill(response=response, json=body)

    return handle


async def test_detail_timeline_shows_custom_events_live_and_once(
    client: Any, redis_client: Any, watched: Watched
) -> None:
    """Events arrive on the stream while the view is open; loads of the job (its `events`) overlap them
    both ways; none shows twice, and every name and value is text."""
    page = watched.page
    job = await create_job(client, name="Check pricing page", type="noop")  # no worker: it waits, unchanged
    other = await create_job(client, name="Another job", type="noop")
    served: dict[str, Any] = {"events": [], "state": {}}  # what its single-job view answers, from here on
    await page.route(f"**/api/jobs/{job['id']}", single_job_view_with(served))
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    list_loads = len(watched.list_requests)
    await row_of(page, job["id"]).locator(".c-name button").click()
    await expect(page.locator("#d-name")).to_have_text("Check pricing page")
    await expect(page.locator("#d-timeline-empty")).to_have_text("No events yet.")
    await expect(page.locator("#d-state")).to_have_text("none")
    timeline = page.locator(TIMELINE)

    # Live, in order, as text; another job's event is not this job's.
    at = int(time.time() * 1000)
    sent = [
        {"name": "screenshot", "data": {"step": 1, "url": "https://example.com/pricing"}, "at": at},
        {"name": HTML_EVENT_NAME, "data": {"html": "<b>bold</b><img src=y onerror=alert(10)>"}, "at": at + 5},
        {"name": "checked", "data": None, "at": at + 9},
    ]
    for event in sent:
        await publish_custom_event(redis_client, job["id"], **event)
    await publish_custom_event(redis_client, other["id"], "elsewhere", {"n": 1}, at)
    await expect(timeline.locator(".t-name")).to_have_text([e["name"] for e in sent])
    await expect(timeline.locator(".t-data")).to_have_text([compact(e["data"]) for e in sent])
    await expect(page.locator("#d-timeline-count")).to_have_text("3")
    await expect(page.locator("#d-timeline-empty")).to_be_hidden()
    await timeline.evaluate_all("items => items.forEach((item) => { item.__kept = true; })")

    # A reload of the view (a job event for it) whose `events` holds them and one more, not yet seen
    # live: shown once each, the three drawn before untouched. The saved state comes with the reload.
    late = {"name": "screenshot", "data": {"step": 2, "url": "https://example.com/checkout"}, "at": at + 20}
    served.update(events=[*sent, late], state={"step": 2, "note": "<i>resume here</i>"})
    patched = await client.patch(f"/api/jobs/{job['id']}", json={"priority": "high"})
    assert patched.status == 200, await patched.text()
    await expect(page.locator("#d-state")).to_have_text(compact(served["state"]))
    await expect(timeline.locator(".t-name")).to_have_text([e["name"] for e in [*sent, late]])
    assert await timeline.evaluate_all("items => items.map((item) => !!item.__kept)") == [True, True, True, False]
    # ...then its live copy arrives, and one more after it: the copy adds nothing.
    after = {"name": "extracted", "data": {"rows": 12}, "at": at + 30}
    await publish_custom_event(redis_client, job["id"], **late)
    await publish_custom_event(redis_client, job["id"], **after)
    await expect(timeline.locator(".t-data")).to_have_text([compact(e["data"]) for e in [*sent, late, after]])

    # An event that comes live while a reload is on its way, which read the job before it: kept.
    held: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    served["events"] = [*sent, late, after]

    async def hold(route: Any) -> None:
        if not held.done():
            held.set_result(route)
        else:
            await route.fallback()

    await page.route(f"**/api/jobs/{job['id']}", hold)  # tried before the earlier handler
    assert (await client.patch(f"/api/jobs/{job['id']}", json={"priority": "normal"})).status == 200
    route = await asyncio.wait_for(held, WAIT_MS / 1000)
    during = {"name": "submitted", "data": {"ok": True}, "at": at + 40}
    await publish_custom_event(redis_client, job["id"], **during)
    await expect(timeline).to_have_count(6)
    served["state"] = {"step": 4}  # shows when the held answer has been drawn
    await route.fallback()  # the answer, without it
    await expect(page.locator("#d-state")).to_have_text('{"step":4}')
    every = [*sent, late, after, during]
    await expect(timeline.locator(".t-name")).to_have_text([e["name"] for e in every])
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-timeline.png", animations="disabled")

    # Reopened: the same timeline, from `events` alone.
    served["events"] = every
    await page.click("#d-close")
    await row_of(page, job["id"]).locator(".c-name button").click()
    await expect(timeline.locator(".t-name")).to_have_text([e["name"] for e in every])
    await expect(timeline.locator(".t-data")).to_have_text([compact(e["data"]) for e in every])
    await expect(page.locator("#d-timeline-count")).to_have_text("6")
    await expect(page.locator("#d-state")).to_have_text(compact(served["state"]))
    # The server's cap trimmed the oldest: a reload drops it too, as a reopen would.
    served["events"] = every[1:]
    assert (await client.patch(f"/api/jobs/{job['id']}", json={"priority": "high"})).status == 200
    await expect(timeline.locator(".t-name")).to_have_text([e["name"] for e in every[1:]])

    await page.wait_for_timeout(300)  # give any injected handler time to fire
    injected = "[document.images.length, document.querySelectorAll('#detail b, #detail i').length]"
    assert await page.evaluate(injected) == [0, 0]
    await expect(row_of(page, other["id"]).locator(".c-name button")).to_have_text("Another job")
    assert watched.list_requests[list_loads:] == []  # the list took no part in it
    watched.assert_clean()


async def test_detail_timeline_of_a_running_demo_job_then_reopened(
    client: Any, start_worker: Any, watched: Watched
) -> None:
    """The built-in demo emits `screenshot` at its "Taking screenshot" steps (5 and 15 of 15)."""
    page = watched.page
    job = await create_job(client, name="Screenshots", data={"steps": 15, "stepMs": 150})  # no worker yet
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await row_of(page, job["id"]).locator(".c-name button").click()
    await expect(page.locator("#d-timeline-empty")).to_have_text("No events yet.")
    await expect(page.locator("#d-state")).to_have_text("none")

    await start_worker()
    sample = """() => [document.querySelector('#d-status').textContent,
      [...document.querySelectorAll('#d-timeline > li .t-data')].map((node) => node.textContent)]"""
    samples: list[tuple[str, list[str]]] = []
    deadline = time.monotonic() + WAIT_MS / 1000
    while not samples or samples[-1][0] != "completed":
        status, data = await page.evaluate(sample)
        samples.append((status, data))
        assert len(data) == len(set(data)), f"an event shows twice: {data}"
        assert time.monotonic() < deadline, f"the job never completed: {samples[-3:]}"
        await asyncio.sleep(0.04)
    assert any(status == "active" and len(data) == 1 for status, data in samples), "no event showed while it ran"
    counts = [len(data) for _, data in samples]
    assert counts == sorted(counts), f"the timeline lost entries: {counts}"

    full = await (await client.get(f"/api/jobs/{job['id']}")).json()
    events = full["events"]
    assert [e["name"] for e in events] == ["screenshot", "screenshot"], events
    assert [e["data"]["step"] for e in events] == [5, 15], events
    timeline = page.locator(TIMELINE)
    await expect(timeline.locator(".t-data")).to_have_text([compact(e["data"]) for e in events])
    await page.wait_for_timeout(1500)  # the view's reload after the last event: still once each
    await expect(timeline).to_have_count(2)

    await page.click("#d-close")
    await row_of(page, job["id"]).locator(".c-name button").click()
    await expect(page.locator("#d-status")).to_have_text("completed")
    await expect(timeline.locator(".t-name")).to_have_text(["screenshot", "screenshot"])
    await expect(timeline.locator(".t-data")).to_have_text([compact(e["data"]) for e in events])
    await expect(page.locator("#d-state")).to_have_text("none" if full["state"] == {} else compact(full["state"]))
    watched.assert_clean()


async def test_phone_timeline_wraps_long_event_data(client: Any, redis_client: Any, watched: Watched) -> None:
    page = watched.page
    await page.set_viewport_size(PHONE)
    job = await create_job(client, name="Crawl the documentation site", type="noop")  # no worker: waits
    long_state = {"cursor": "c" * 300}
    await page.route(f"**/api/jobs/{job['id']}", single_job_view_with({"state": long_state}))
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await row_of(page, job["id"]).locator(".c-name button").click()
    await expect(page.locator("#d-state")).to_have_text(compact(long_state))

    long_data = {"url": "https://example.com/" + "a" * 400, "text": "lorem ipsum " * 40}
    long_name = "n" * 64  # the longest name a handler may give
    await publish_custom_event(redis_client, job["id"], long_name, long_data, int(time.time() * 1000))
    item = page.locator(TIMELINE)
    await expect(item.locator(".t-data")).to_have_text(compact(long_data))
    await expect(item.locator(".t-name")).to_have_text(long_name)
    await settled(page)
    await no_sideways_scroll(page)
    fits = """(node) => { const r = node.getBoundingClientRect();
      return [r.right <= innerWidth + 0.5, node.scrollWidth <= node.clientWidth, Math.round(r.height)]; }"""
    for part in (item.locator(".t-data"), item.locator(".t-name"), page.locator("#d-state")):
        within, unclipped, height = await part.evaluate(fits)
        assert within and unclipped, f"{part} is wider than the screen or cut"
    assert (await item.locator(".t-data").evaluate(fits))[2] > 40, "the long data did not wrap"
    await item.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-phone-timeline.png", animations="disabled")
    watched.assert_clean()


# -- queue limits (rate limit, concurrency, retention), held-back queues, uniqueKey ----------------
LIMITS = "#limits-dialog"
DAY_MS = 86_400_000


def is_patch(path: str) -> Any:
    return lambda r: r.request.method == "PATCH" and r.url.endswith(path)


def limits_of(page: Page, name: str = "default") -> Locator:
    return queue_item(page, name).locator(".q-limits-text")


def held_chip(page: Page, name: str) -> Locator:
    return queue_item(page, name).locator(".q-held")


async def listed_queue(client: Any, name: str) -> dict[str, Any]:
    response = await client.get("/api/admin/queues")
    assert response.status == 200, await response.text()
    return next(q for q in (await response.json())["queues"] if q["name"] == name)


async def patch_queue(client: Any, name: str, body: dict[str, Any]) -> None:
    response = await client.patch(f"/api/admin/queues/{quote(name)}", json=body)
    assert response.status == 200, await response.text()


async def save_limits(page: Page, name: str = "default", status: int = 200) -> Any:
    """Click Save in the limits dialog; the PATCH's response (asserting its status)."""
    async with page.expect_response(is_patch(f"/api/admin/queues/{quote(name)}")) as info:
        await page.locator(f"{LIMITS} #l-save").click()
    response = await info.value
    assert response.status == status, await response.text()
    return response


async def test_queue_limits_are_set_from_the_dashboard_and_shown(client: Any, watched: Watched) -> None:
    page = watched.page
    await create_job(client, name="Waits for a worker", type="noop")  # no worker: the queue is listed
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect(limits_of(page)).to_have_text("no limits")
    dialog = page.locator(LIMITS)

    # By keyboard: the queue's Limits button opens the dialog on its first field; Enter saves.
    edit = queue_item(page).locator('button[data-qact="limits"]')
    await edit.focus()
    await page.keyboard.press("Enter")
    await expect(dialog).to_be_visible()
    await expect(page.locator("#limits-queue")).to_have_text("default")
    await expect(page.locator("#l-rate-max")).to_be_focused()
    await page.keyboard.type("5")
    await page.keyboard.press("Tab")
    await page.keyboard.type("1")  # in any window of 1 s (the unit it offers)
    await page.fill("#l-conc", "3")
    await page.fill("#l-keep-completed-count", "1000")
    await page.fill("#l-keep-failed-age", "7")  # days
    async with page.expect_response(is_patch("/api/admin/queues/default")) as info:
        await page.keyboard.press("Enter")
    response = await info.value
    assert response.status == 200, await response.text()
    wanted = {
        "rateLimit": {"max": 5, "perMs": 1000},
        "concurrency": 3,
        "retention": {"completed": {"maxCount": 1000}, "failed": {"maxAgeMs": 7 * DAY_MS}},
    }
    assert response.request.post_data_json == wanted
    await expect(dialog).to_be_hidden()
    await expect(edit).to_be_focused()  # back where the user was
    await expect(limits_of(page)).to_have_text("≤ 5 per 1 s · max 3 active · keeps 1,000 completed / 7 d failed")
    await expect(limits_of(page)).to_have_attribute("title", re.compile(r"^Rate limit: at most 5 jobs start in any 1 s\."))
    assert (await listed_queue(client, "default"))["settings"] == wanted

    # Opened again: the fields hold the limits, each span in its unit. Only what changed is sent.
    await edit.click()
    await expect(page.locator("#l-rate-max")).to_have_value("5")
    await expect(page.locator("#l-rate-per")).to_have_value("1")
    await expect(page.locator("#l-rate-unit")).to_have_value("1000")
    await expect(page.locator("#l-conc")).to_have_value("3")
    await expect(page.locator("#l-keep-completed-count")).to_have_value("1000")
    await expect(page.locator("#l-keep-failed-age")).to_have_value("7")
    await expect(page.locator("#l-keep-failed-unit")).to_have_value(str(DAY_MS))
    await page.fill("#l-rate-max", "")
    await page.fill("#l-rate-per", "")
    await page.select_option("#l-keep-completed-unit", "3600000")
    await page.fill("#l-keep-completed-age", "1.5")  # hours
    response = await save_limits(page)
    assert response.request.post_data_json == {
        "rateLimit": None,
        "retention": {"completed": {"maxCount": 1000, "maxAgeMs": 5_400_000}, "failed": {"maxAgeMs": 7 * DAY_MS}},
    }
    await expect(dialog).to_be_hidden()
    await expect(limits_of(page)).to_have_text("max 3 active · keeps 1,000 completed ≤ 90 min / 7 d failed")
    assert (await listed_queue(client, "default"))["settings"]["rateLimit"] is None

    # Changed elsewhere (curl): the `queue` event shows it at once, before any poll.
    await patch_queue(client, "default", {"concurrency": None, "retention": None})
    await expect(limits_of(page)).to_have_text("no limits", timeout=ADMIN_POLL_S * 500)

    # Escape closes the dialog unsaved, and focus goes back to the button.
    await edit.click()
    await page.fill("#l-conc", "9")
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(edit).to_be_focused()
    await expect(limits_of(page)).to_have_text("no limits")
    assert (await listed_queue(client, "default"))["settings"]["concurrency"] is None
    watched.assert_clean()


async def test_queue_limits_dialog_shows_the_server_message_next_to_its_field(client: Any, watched: Watched) -> None:
    page = watched.page
    await create_job(client, name="Waits for a worker", type="noop")
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await queue_item(page).locator('button[data-qact="limits"]').click()
    dialog = page.locator(LIMITS)

    async def refused(field_id: str, error_id: str) -> None:
        """Save; the 400's message shows in `error_id`, and `field_id` is marked and focused."""
        response = await save_limits(page, status=400)
        message = (await response.json())["error"]["message"]
        await expect(page.locator(f"#{error_id}")).to_have_text(message)
        await expect(page.locator(f"#{field_id}")).to_have_attribute("aria-invalid", "true")
        await expect(page.locator(f"#{field_id}")).to_be_focused()
        await expect(page.locator(f"{LIMITS} .lf-error:visible")).to_have_count(1)  # only there
        await expect(dialog).to_be_visible()  # nothing lost: the user corrects and saves again

    await page.fill("#l-conc", "0")
    await refused("l-conc", "l-conc-error")
    await expect(page.locator("#l-conc-error")).to_contain_text("concurrency")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-limits-error.png", animations="disabled")
    # A rate with no window: the server names the rate limit as a whole; the empty field is marked.
    await page.fill("#l-conc", "2")
    await page.fill("#l-rate-max", "10")
    await refused("l-rate-per", "l-rate-error")
    # Half a millisecond: named rateLimit.perMs.
    await page.select_option("#l-rate-unit", "1")
    await page.fill("#l-rate-per", "0.5")
    await refused("l-rate-per", "l-rate-error")
    await expect(page.locator("#l-rate-error")).to_contain_text("rateLimit.perMs")
    # A retention age of a fraction of a millisecond: next to that status's row.
    await page.fill("#l-rate-per", "250")
    await page.select_option("#l-keep-cancelled-unit", "1000")
    await page.fill("#l-keep-cancelled-age", "0")
    await refused("l-keep-cancelled-age", "l-keep-cancelled-error")
    await expect(page.locator("#l-keep-cancelled-error")).to_contain_text("retention.cancelled.maxAgeMs")

    await page.fill("#l-keep-cancelled-age", "")
    response = await save_limits(page)
    assert response.request.post_data_json == {"rateLimit": {"max": 10, "perMs": 250}, "concurrency": 2}
    await expect(dialog).to_be_hidden()
    await expect(limits_of(page)).to_have_text("≤ 10 per 250 ms · max 2 active")
    await expect(page.locator("#toasts .toast")).to_have_count(0)  # the messages were in the dialog
    # The browser itself logs the failed requests; anything else would be the page's fault.
    watched.console_errors = [e for e in watched.console_errors if "status of 400" not in e]
    watched.assert_clean()


async def test_queue_panel_shows_when_its_limits_hold_jobs_back(
    client: Any, start_worker: Any, watched: Watched
) -> None:
    page = watched.page
    await patch_queue(client, "held", {"concurrency": 1})
    await patch_queue(client, "throttled", {"rateLimit": {"max": 1, "perMs": 60_000}})
    await start_worker(queues=("held", "throttled"))
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect(limits_of(page, "held")).to_have_text("max 1 active")
    await expect(limits_of(page, "throttled")).to_have_text("≤ 1 per 1 min")
    await expect(held_chip(page, "held")).to_be_hidden()  # limits, but nothing waits

    # Concurrency 1: the first job runs, the second waits though the worker has free slots.
    first = await create_job(client, name="Crawl one", type="block", queue="held")
    second = await create_job(client, name="Crawl two", type="block", queue="held")
    await expect(row_of(page, first["id"]).locator(".badge")).to_have_text("active")
    await expect(row_of(page, second["id"]).locator(".badge")).to_have_text("waiting")
    chip = held_chip(page, "held")
    await expect(chip).to_have_text("held back: concurrency")
    await expect(chip).to_have_attribute("title", re.compile(r"concurrency limit \(1\)"))
    assert (await listed_queue(client, "held"))["heldBack"] == {"by": "concurrency", "untilMs": None}

    # One start a minute: the second job waits, and the chip counts down to when it may start.
    await create_job(client, name="Ping one", type="noop", queue="throttled")
    await create_job(client, name="Ping two", type="noop", queue="throttled")
    countdown = held_chip(page, "throttled")
    await expect(countdown).to_have_text(re.compile(r"^held back: rate limit · \d+ s$"))
    shown = await countdown.text_content()
    assert shown is not None and 30 <= int(re.findall(r"\d+", shown)[0]) <= 60, shown
    await expect(countdown).not_to_have_text(shown)  # live: it ticks without a reload
    assert int(re.findall(r"\d+", await countdown.text_content() or "")[0]) < int(re.findall(r"\d+", shown)[0])
    assert (await listed_queue(client, "throttled"))["heldBack"]["by"] == "rateLimit"
    ARTIFACTS.mkdir(exist_ok=True)
    await page.mouse.move(0, 0)
    await page.screenshot(path=ARTIFACTS / "dashboard-held-back.png", animations="disabled")

    # The concurrency limit lifted from the dashboard: the chip goes at once, and the second job starts.
    await queue_item(page, "held").locator('button[data-qact="limits"]').click()
    await page.fill("#l-conc", "")
    response = await save_limits(page, "held")
    assert response.request.post_data_json == {"concurrency": None}
    await expect(chip).to_be_hidden()
    await expect(row_of(page, second["id"]).locator(".badge")).to_have_text("active")
    # The rate limit lifted elsewhere: its `queue` event takes the countdown away.
    await patch_queue(client, "throttled", {"rateLimit": None})
    await expect(countdown).to_be_hidden(timeout=ADMIN_POLL_S * 500)
    for job in (first, second):  # quick worker stop
        assert (await client.post(f"/api/jobs/{job['id']}/cancel", json={})).status == 200
    watched.assert_clean()


# Every control of the limits dialog that reaches past it or past the screen's edge.
OUTSIDE_THE_DIALOG = """() => {
  const dialog = document.querySelector('#limits-dialog').getBoundingClientRect();
  return [...document.querySelectorAll('#limits-dialog :is(input, select, button, .badge, .lf-error, legend, h2)')]
    .filter((node) => node.getClientRects().length)
    .filter((node) => {
      const r = node.getBoundingClientRect();
      return r.left < Math.max(dialog.left, 0) - 0.5 || r.right > Math.min(dialog.right, innerWidth) + 0.5;
    })
    .map((node) => `${node.tagName.toLowerCase()}#${node.id} ${node.textContent.slice(0, 30)}`);
}"""


async def test_phone_queue_limits_and_their_dialog_fit(client: Any, start_worker: Any, watched: Watched) -> None:
    page = watched.page
    await page.set_viewport_size(PHONE)
    rule = {"maxCount": 1_000_000, "maxAgeMs": 30 * DAY_MS}
    await patch_queue(
        client,
        LONG_QUEUE,
        {
            "rateLimit": {"max": 1, "perMs": 3_600_000},
            "concurrency": 100_000,
            "retention": {status: rule for status in ("completed", "failed", "cancelled")},
        },
    )
    await start_worker(queues=(LONG_QUEUE,))
    for i in range(2):  # the first starts; the rate limit holds the second back for an hour
        await create_job(client, name=f"Hourly sync {i}", type="noop", queue=LONG_QUEUE)
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect(held_chip(page, LONG_QUEUE)).to_have_text(re.compile(r"^held back: rate limit · \d+ min \d+ s$"))
    await expect(limits_of(page, LONG_QUEUE)).to_contain_text("≤ 1 per 1 h · max 100,000 active · keeps 1,000,000")
    await settled(page)
    await no_sideways_scroll(page)
    assert await page.evaluate(OUTSIDE_ITS_CARD, PANEL_PARTS) == []
    edit = queue_item(page, LONG_QUEUE).locator('button[data-qact="limits"]')
    box = await edit.bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"], box

    await edit.click()
    dialog = page.locator(LIMITS)
    await expect(dialog).to_be_visible()
    await expect(page.locator("#limits-queue")).to_have_text(LONG_QUEUE)
    await expect(page.locator("#l-keep-cancelled-count")).to_have_value("1000000")
    await page.fill("#l-conc", "0")  # a server message in the dialog, too, stays within it
    await save_limits(page, LONG_QUEUE, status=400)
    await expect(page.locator("#l-conc-error")).to_be_visible()
    await settled(page)
    await no_sideways_scroll(page)
    assert await page.evaluate(OUTSIDE_THE_DIALOG) == []
    assert await dialog.evaluate("d => d.scrollWidth <= d.clientWidth")
    for control in ("#l-save", "#l-cancel", "#l-keep-cancelled-unit"):  # all in reach, by scrolling the dialog
        await page.locator(control).scroll_into_view_if_needed()
        await expect(page.locator(control)).to_be_in_viewport(ratio=1)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-phone-limits.png", animations="disabled")
    await page.locator("#l-cancel").click()
    await expect(dialog).to_be_hidden()
    watched.console_errors = [e for e in watched.console_errors if "status of 400" not in e]
    watched.assert_clean()


async def test_detail_view_shows_the_unique_key(client: Any, watched: Watched) -> None:
    page = watched.page
    key = "invoice:<b>2024-06</b>"  # text, never markup
    keyed = await create_job(client, name="Monthly invoice", type="noop", uniqueKey=key)
    assert keyed["uniqueKey"] == key
    plain = await create_job(client, name="No key", type="noop")
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await row_of(page, keyed["id"]).locator(".c-name button").click()
    await expect(page.locator("#d-name")).to_have_text("Monthly invoice")
    await expect(detail_field(page, "Unique key")).to_have_text(key)
    await expect(detail_field(page, "Unique key")).to_be_visible()
    assert await page.evaluate("document.querySelectorAll('#d-fields b').length") == 0
    await row_of(page, plain["id"]).locator(".c-name button").click()
    await expect(page.locator("#d-name")).to_have_text("No key")
    await expect(detail_field(page, "Queue")).to_have_text("default")
    await expect(detail_field(page, "Unique key")).to_be_hidden()  # a job without one has no such field
    watched.assert_clean()


# -- flows and schedules -----------------------------------------------------------------------------
def kid_of(page: Page, job_id: str) -> Locator:
    return page.locator(f'#d-children > li[data-id="{job_id}"]')


def schedule_row(page: Page, schedule_id: str) -> Locator:
    return page.locator(f'#schedule-list > .srow[data-id="{schedule_id}"]')


async def children_of(client: Any, job_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/jobs/{job_id}/children")
    assert response.status == 200, await response.text()
    return (await response.json())["jobs"]


async def listed_schedules(client: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/schedules")
    assert response.status == 200, await response.text()
    return (await response.json())["schedules"]


async def create_schedule(client: Any, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/schedules", json=body)
    assert response.status == 201, await response.text()
    return await response.json()


async def test_flow_children_show_live_in_the_parent_detail_and_link_back(
    client: Any, start_worker: Any, watched: Watched
) -> None:
    page = watched.page
    children_requests: list[str] = []
    page.on("request", lambda r: children_requests.append(r.url) if r.url.split("?")[0].endswith("/children") else None)
    parent = await create_job(client, name="Build the weekly report", type="collect", children=[
        {"name": "Fetch sales", "type": "echo", "data": {"n": 1}},
        {"name": "Fetch costs", "type": "echo", "data": {"n": 2}},
        {"name": "Render charts", "type": "block", "onFailure": "ignore"},
    ])  # fmt: skip
    assert parent["status"] == "waiting-children"
    kids = await children_of(client, parent["id"])
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    list_loads = len(watched.list_requests)

    # The parent's row: its own status, and its children's progress where the action goes.
    parent_row = row_of(page, parent["id"])
    await expect(parent_row.locator(".badge")).to_have_text("waiting-children")
    await expect(parent_row.locator(".c-action")).to_have_text("children: 0 of 3 done")
    assert await parent_row.locator(".c-status").evaluate("c => c.scrollWidth <= c.clientWidth")  # shown whole
    waiting_badge = page.locator('#filter button[data-status="waiting-children"]')
    light = await parent_row.locator(".badge").evaluate("b => getComputedStyle(b).color")
    assert light != await row_of(page, kids[0]["id"]).locator(".badge").evaluate("b => getComputedStyle(b).color")
    await parent_row.locator(".c-name button").click()
    await expect(page.locator("#d-status")).to_have_text("waiting-children")
    await expect(page.locator("#d-action")).to_have_text("Waiting for its children: 0 of 3 done")
    await expect(page.locator("#d-kids-text")).to_have_text("0 of 3 done")
    await expect(page.locator("#d-children-count")).to_have_text("3")
    await expect(page.locator("#d-children > li .link")).to_have_text(["Fetch sales", "Fetch costs", "Render charts"])
    await expect(page.locator("#d-children > li .badge")).to_have_text(["waiting"] * 3)
    await expect(page.locator("#d-parent")).to_be_hidden()
    await expect(page.locator("#d-kids-more")).to_be_hidden()
    assert len(children_requests) == 1

    # A worker runs the children: their entries and the counts follow the stream, with no reload.
    await start_worker()
    for kid in kids[:2]:
        await expect(kid_of(page, kid["id"]).locator(".badge")).to_have_text("completed")
        await expect(kid_of(page, kid["id"]).locator(".pct")).to_have_text("100%")
    blocker = kid_of(page, kids[2]["id"])
    await expect(blocker.locator(".badge")).to_have_text("active")
    await expect(blocker.locator(".pct")).to_have_text("1%")
    await expect(page.locator("#d-kids-text")).to_have_text("2 of 3 done")
    await expect(page.locator("#d-status")).to_have_text("waiting-children")
    assert len(children_requests) == 1, children_requests  # live from events, not by fetching the list again
    ARTIFACTS.mkdir(exist_ok=True)
    await page.mouse.move(0, 0)
    await page.screenshot(path=ARTIFACTS / "dashboard-flow.png", animations="disabled")
    await page.emulate_media(color_scheme="dark")
    await page.screenshot(path=ARTIFACTS / "dashboard-flow-dark.png", animations="disabled")
    await page.emulate_media(color_scheme="light")

    # A child opens from its entry and links back to its parent; it is cancelled from its own view.
    await blocker.locator(".link").click()
    await expect(page.locator("#d-name")).to_have_text("Render charts")
    await expect(page.locator("#d-parent-link")).to_have_text("Build the weekly report")
    await expect(page.locator("#d-children-section")).to_be_hidden()
    await page.locator('#d-actions button[data-act="cancel"]').click()
    await expect(page.locator("#d-status")).to_have_text("cancelled")
    await page.locator("#d-parent-link").click()
    await expect(page.locator("#d-name")).to_have_text("Build the weekly report")
    # That child was optional ("ignore"): the parent runs and completes with the others' results.
    await expect(page.locator("#d-status")).to_have_text("completed")
    done = await (await client.get(f"/api/jobs/{parent['id']}")).json()
    assert done["children"] == {"total": 3, "completed": 2, "failed": 0, "cancelled": 1, "pending": 0}
    await expect(page.locator("#d-kids-text")).to_have_text("3 of 3 done, 1 cancelled")
    await expect(kid_of(page, kids[2]["id"]).locator(".badge")).to_have_text("cancelled")
    await expect(page.locator("#d-result")).to_contain_text(kids[0]["id"])
    await expect(parent_row.locator(".badge")).to_have_text("completed")

    # Esc closes the view and gives focus back to the row that opened it first.
    await page.keyboard.press("Escape")
    await expect(page.locator("#detail")).to_be_hidden()
    await expect(parent_row.locator(".c-name button")).to_be_focused()

    # The status has its own filter chip, and its own colours in the dark theme too.
    await page.emulate_media(color_scheme="dark")
    await waiting_badge.click()
    await expect(page.locator("#total")).to_have_text("0 waiting-children")
    dark = await waiting_badge.evaluate("b => getComputedStyle(b, '::before').backgroundColor")
    await page.emulate_media(color_scheme="light")
    assert dark != await waiting_badge.evaluate("b => getComputedStyle(b, '::before').backgroundColor")
    assert watched.list_requests[list_loads:] == [str(client.make_url("/api/jobs?limit=200&status=waiting-children"))]
    watched.assert_clean()


async def test_schedules_panel_creates_pauses_triggers_and_deletes(client: Any, watched: Watched) -> None:
    page = watched.page
    await create_schedule(client, id="heartbeat", everyMs=60_000, job={"name": "Ping", "type": "noop"})
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    heartbeat = schedule_row(page, "heartbeat")
    await expect(heartbeat.locator(".s-timetable")).to_have_text("every 1 min")
    await expect(heartbeat.locator(".s-job .s-sub")).to_have_text("noop · default")
    await expect(heartbeat.locator(".s-last")).to_have_text("never")
    countdown = heartbeat.locator(".s-next")
    await expect(countdown).to_have_text(re.compile(r"^in \d+ s$"))
    await expect(countdown).not_to_have_text(await countdown.text_content() or "")  # it counts down, live

    # The form, by keyboard: it opens focused on its first field, with the browser's time zone.
    await page.locator("#s-new").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#schedule-form")).to_be_visible()
    await expect(page.locator("#s-id")).to_be_focused()
    zone = await page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
    await expect(page.locator("#s-tz")).to_have_value(zone)
    await page.keyboard.type("nightly-digest")
    await page.fill("#s-cron", "0 3 * * *")
    await page.fill("#s-name", "Nightly digest")
    await page.fill("#s-type", "echo")
    await page.fill("#s-queue", "emails")
    await page.fill("#s-data", '{"to": "team"}')
    async with page.expect_response(is_post("/api/schedules")) as info:
        await page.press("#s-data", "Enter")
    response = await info.value
    assert response.status == 201, await response.text()
    assert response.request.post_data_json == {
        "id": "nightly-digest",
        "cron": "0 3 * * *",
        "timezone": zone,
        "job": {"name": "Nightly digest", "type": "echo", "queue": "emails", "data": {"to": "team"}},
    }
    [created] = [s for s in await listed_schedules(client) if s["id"] == "nightly-digest"]
    assert created["paused"] is False and created["job"]["data"] == {"to": "team"}
    await expect(page.locator("#schedule-form")).to_be_hidden()
    await expect(page.locator("#s-new")).to_be_focused()
    row = schedule_row(page, "nightly-digest")
    await expect(page.locator("#schedule-list > .srow")).to_have_count(2)
    assert await page.locator("#schedule-list > .srow").evaluate_all("rows => rows.map((r) => r.dataset.id)") == [
        "heartbeat",
        "nightly-digest",
    ]
    await expect(row.locator(".s-timetable")).to_have_text(f"0 3 * * * · {zone}")
    await expect(row.locator(".s-jobname")).to_have_text("Nightly digest")
    await expect(row.locator(".s-job .s-sub")).to_have_text("echo · emails")
    await expect(row.locator(".s-next")).to_have_text(re.compile(r"^in \d+ (h \d+ )?min( \d+ s)?$"))
    await expect(row.locator(".q-state")).to_have_text("active")
    await expect(page.locator("#schedules-summary")).to_have_text("2 schedules")

    # Pause, then resume.
    async with page.expect_response(is_post("/api/schedules/nightly-digest/pause")) as info:
        await row.locator('button[data-sact="pause"]').click()
    assert (await info.value).status == 200
    await expect(row.locator(".q-state")).to_have_text("paused")
    await expect(row.locator(".s-next")).to_have_text("paused")
    await expect(page.locator("#schedules-summary")).to_have_text("2 schedules · 1 paused")
    assert [s["paused"] for s in await listed_schedules(client) if s["id"] == "nightly-digest"] == [True]
    async with page.expect_response(is_post("/api/schedules/nightly-digest/resume")) as info:
        await row.locator('button[data-sact="resume"]').click()
    assert (await info.value).status == 200
    await expect(row.locator(".q-state")).to_have_text("active")
    await expect(row.locator(".s-next")).to_have_text(re.compile(r"^in "))
    assert [s["paused"] for s in await listed_schedules(client) if s["id"] == "nightly-digest"] == [False]

    # Trigger: a job of the schedule appears, and its detail view names the schedule.
    async with page.expect_response(is_post("/api/schedules/nightly-digest/trigger")) as info:
        await row.locator('button[data-sact="trigger"]').click()
    response = await info.value
    assert response.status == 201
    job = await response.json()
    assert job["scheduleId"] == "nightly-digest" and job["name"] == "Nightly digest" and job["queue"] == "emails"
    await expect(row_of(page, job["id"]).locator(".badge")).to_have_text("waiting")
    await row_of(page, job["id"]).locator(".c-name button").click()
    await expect(detail_field(page, "Schedule")).to_have_text("nightly-digest")
    await page.click("#d-close")

    # Delete: the first click arms, the second deletes; the job it created stays.
    delete = row.locator('button[data-sact="delete"]')
    await delete.click()
    await expect(delete).to_have_text("Confirm")
    assert len(await listed_schedules(client)) == 2
    async with page.expect_response(
        lambda r: r.request.method == "DELETE" and r.url.endswith("/api/schedules/nightly-digest")
    ) as info:
        await delete.click()
    assert (await info.value).status == 204
    await expect(row).to_have_count(0)
    assert [s["id"] for s in await listed_schedules(client)] == ["heartbeat"]
    await expect(page.locator("#schedules-summary")).to_have_text("1 schedule")
    await expect(row_of(page, job["id"])).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.locator("#schedules-card").screenshot(path=ARTIFACTS / "dashboard-schedules.png", animations="disabled")
    watched.assert_clean()


async def test_schedule_form_shows_the_api_message_next_to_its_field(client: Any, watched: Watched) -> None:
    page = watched.page
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect(page.locator("#schedules-empty")).to_contain_text("No schedules")
    await page.click("#s-new")
    await page.fill("#s-cron", "61 * * * *")
    await page.fill("#s-name", "Bad timing")

    async def submit() -> dict[str, Any]:
        async with page.expect_response(is_post("/api/schedules")) as info:
            await page.click("#s-save")
        response = await info.value
        assert response.status == 400, await response.text()
        return (await response.json())["error"]

    error = await submit()
    assert error["field"] == "cron"
    message = page.locator("#s-cron-error")
    await expect(message).to_have_text(error["message"])
    await expect(page.locator("#s-cron")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#s-cron")).to_be_focused()
    cron_box, message_box = await page.locator("#s-cron").bounding_box(), await message.bounding_box()
    assert cron_box and message_box
    assert 0 <= message_box["y"] - (cron_box["y"] + cron_box["height"]) < 12, (cron_box, message_box)  # right under it
    assert abs(message_box["x"] - cron_box["x"]) < 2
    await page.keyboard.press("End")
    await page.keyboard.press("Backspace")  # correcting the field clears its mark
    await expect(message).to_be_hidden()
    await expect(page.locator("#s-cron")).not_to_have_attribute("aria-invalid", "true")

    # The time zone's and the interval's messages go by their fields too.
    await page.fill("#s-cron", "*/5 * * * *")
    await page.fill("#s-tz", "Mars/Olympus_Mons")
    error = await submit()
    assert error["field"] == "timezone"
    await expect(page.locator("#s-tz-error")).to_have_text(error["message"])
    ARTIFACTS.mkdir(exist_ok=True)
    await page.locator("#schedules-card").screenshot(path=ARTIFACTS / "dashboard-schedule-form.png", animations="disabled")
    await page.select_option("#s-kind", "every")
    await expect(page.locator("#s-tz")).to_be_hidden()
    await page.fill("#s-every", "0.5")
    error = await submit()
    assert error["field"] == "everyMs"
    await expect(page.locator("#s-every-error")).to_have_text(error["message"])
    await page.fill("#s-name", "")
    await page.fill("#s-every", "30")
    error = await submit()
    assert error["field"] == "job.name"
    await expect(page.locator("#s-name-error")).to_have_text(error["message"])
    await expect(page.locator("#s-name")).to_be_focused()

    # Data that is not JSON is said at once, by its field, without asking the server.
    posts = len(watched.list_requests)
    await page.fill("#s-name", "Every half minute")
    await page.fill("#s-data", "{not json")
    await page.click("#s-save")
    await expect(page.locator("#s-data-error")).to_contain_text("not valid JSON")
    assert await listed_schedules(client) == []
    await page.fill("#s-data", "")
    async with page.expect_response(is_post("/api/schedules")) as info:
        await page.click("#s-save")
    assert (await info.value).status == 201
    [schedule] = await listed_schedules(client)
    assert schedule["everyMs"] == 30_000 and schedule["cron"] is None and schedule["job"] == {"name": "Every half minute"}
    await expect(schedule_row(page, schedule["id"]).locator(".s-timetable")).to_have_text("every 30 s")
    assert len(watched.list_requests) == posts
    watched.console_errors = [e for e in watched.console_errors if "status of 400" not in e]
    watched.assert_clean()


async def test_a_parent_with_many_children_lists_them_a_page_at_a_time(client: Any, watched: Watched) -> None:
    page = watched.page
    parent = await create_job(client, name="Fan out", type="collect", children=[
        {"name": f"Part {i:02d}", "type": "noop"} for i in range(62)
    ])  # fmt: skip
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await row_of(page, parent["id"]).locator(".c-name button").click()
    entries = page.locator("#d-children > li")
    await expect(entries).to_have_count(50)
    await expect(entries.first.locator(".link")).to_have_text("Part 00")
    await expect(page.locator("#d-kids-more-text")).to_have_text("Showing 50 of 62: 12 more")
    more = page.locator("#d-kids-more-btn")
    await expect(more).to_have_text("Show 12 more")
    await more.focus()
    async with page.expect_response(lambda r: "/children?limit=50&offset=50" in r.url) as info:
        await page.keyboard.press("Enter")
    assert (await info.value).status == 200
    await expect(entries).to_have_count(62)
    await expect(entries.last.locator(".link")).to_have_text("Part 61")
    await expect(entries.nth(50).locator(".link")).to_be_focused()  # the first entry it brought
    await expect(page.locator("#d-kids-more")).to_be_hidden()
    await expect(page.locator("#d-kids-text")).to_have_text("0 of 62 done")
    watched.assert_clean()


# Each part of a child's entry in the detail view lies inside the view.
OUTSIDE_THE_DETAIL = """() => {
  const panel = document.querySelector('#detail').getBoundingClientRect();
  return [...document.querySelectorAll('#detail .kids li > *, #detail .kids-summary > *, #d-parent > *')]
    .filter((node) => node.getClientRects().length)
    .filter((node) => { const r = node.getBoundingClientRect(); return r.left < panel.left - 0.5 || r.right > Math.min(panel.right, innerWidth) + 0.5; })
    .map((node) => `${node.tagName.toLowerCase()}.${node.className} ${node.textContent.slice(0, 30)}`);
}"""


async def test_phone_schedules_panel_and_flow_detail_fit(client: Any, watched: Watched) -> None:
    page = watched.page
    await page.set_viewport_size(PHONE)
    long_id = "nightly-" + "x" * 32  # the longest id a schedule may have: 40 characters
    long_name = "Send the weekly digest to every subscriber of every list: " + "newsletter-" * 4
    await create_schedule(
        client,
        id=long_id,
        cron="30 2 * * 1-5",
        timezone="America/Argentina/Buenos_Aires",
        job={"name": long_name, "type": "noop", "queue": LONG_QUEUE},
    )
    await create_schedule(client, id="ping", everyMs=60_000, paused=True, job={"name": XSS_NAME, "type": "noop"})
    parent = await create_job(client, name=long_name, type="collect", children=[
        {"name": f"Render page {i}: " + "section-" * 8, "type": "noop"} for i in range(2)
    ] + [{"name": XSS_NAME, "type": "noop"}])  # fmt: skip
    kids = await children_of(client, parent["id"])
    await page.goto(str(client.make_url("/")))
    await expect_live(page)
    await expect(schedule_row(page, long_id).locator(".s-timetable")).to_have_text(
        "30 2 * * 1-5 · America/Argentina/Buenos_Aires"
    )
    await expect(schedule_row(page, "ping").locator(".q-state")).to_have_text("paused")
    await expect(schedule_row(page, "ping").locator(".s-jobname")).to_have_text(XSS_NAME)  # text, never markup
    await page.click("#s-new")
    await page.fill("#s-cron", "not a cron")
    await page.fill("#s-name", "x")
    async with page.expect_response(is_post("/api/schedules")) as info:
        await page.click("#s-save")
    assert (await info.value).status == 400
    await expect(page.locator("#s-cron-error")).to_be_visible()
    await settled(page)
    await no_sideways_scroll(page)
    assert await page.evaluate(OUTSIDE_ITS_CARD, PANEL_PARTS) == []
    for button in await schedule_row(page, long_id).locator("button:visible").all():  # a finger's size, in reach
        box = await button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] and box["height"] >= 32, box
    await page.locator("#schedules-card").scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.locator("#schedules-card").screenshot(path=ARTIFACTS / "dashboard-phone-schedules.png", animations="disabled")

    # The parent's detail view with its children, and a child's with the link back.
    await row_of(page, parent["id"]).locator(".c-name button").click()
    await expect(page.locator("#d-children > li")).to_have_count(3)
    await expect(kid_of(page, kids[2]["id"]).locator(".link")).to_have_text(XSS_NAME)
    assert await page.evaluate("document.images.length") == 0
    await settled(page)
    await no_sideways_scroll(page)
    assert await page.evaluate(OUTSIDE_THE_DETAIL) == []
    await page.screenshot(path=ARTIFACTS / "dashboard-phone-children.png", animations="disabled")
    await kid_of(page, kids[0]["id"]).locator(".link").click()
    await expect(page.locator("#d-parent-link")).to_have_text(long_name)
    await settled(page)
    await no_sideways_scroll(page)
    assert await page.evaluate(OUTSIDE_THE_DETAIL) == []
    watched.console_errors = [e for e in watched.console_errors if "status of 400" not in e]
    watched.assert_clean()
