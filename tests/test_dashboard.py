"""The dashboard in a real headless Chromium, driven by Playwright, against the real server, Redis and worker.

Uses the system Chromium (env CHROMIUM_PATH, else /usr/bin/chromium or /usr/bin/chromium-browser); never
downloads one. Without a browser the tests skip, unless JOBLINE_REQUIRE_BROWSER=1, which makes them fail.
Screenshots go to test-artifacts/ at the repository root.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

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


async def test_dashboard_opened_from_disk_uses_the_api_parameter(client: Any, watched: Watched) -> None:
    page = watched.page
    api = str(client.make_url("/")).rstrip("/")
    before = await create_job(client, name="Made before the page opened", type="noop")  # no worker: waits

    await page.goto(f"{DASHBOARD_FILE.as_uri()}?api={quote(api, safe='')}")
    await expect_live(page)
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
