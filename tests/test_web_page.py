"""The status page in headless Chromium, served by uvicorn, against a real syncd.

Chromium is Debian's (`apt-get install chromium`), driven by playwright's Python package
(never `playwright install`). Waits are playwright's own condition polling with a deadline.
Set SYNCD_WEB_SCREENSHOT=docs/status-page.png to refresh the README's screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install 'syncd[web]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")

from test_web import DEAD_ENDPOINT, serve

from syncctl.web import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BUSY = "已有同步任务正在运行，请等待当前任务完成后再试"
WAIT_MS = 30_000

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is absent: apt-get install -y chromium")
expect = sync_api.expect


@pytest.fixture
def page() -> Iterator[sync_api.Page]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
        finally:
            browser.close()


def progress(page: sync_api.Page) -> float:
    return float(page.get_attribute("#bar", "aria-valuenow") or 0)


def submit_range(page: sync_api.Page, start_date: str, end_date: str) -> None:
    page.fill("#start-date", start_date)
    page.fill("#end-date", end_date)
    page.click("#sync-submit")


def test_form_sync_moves_the_bar_and_a_second_start_shows_the_running_task(syncd_factory, page, tmp_path: Path):
    daemon = syncd_factory({"source": {"demo": {"day_delay_s": 0.4, "fail_dates": ["2025-09-24"]}}})
    client = daemon.client()
    client.start("2025-09-19", "2025-09-19", task_type="scheduler_daily", requested_by="schedule")
    daemon.wait_idle()
    client.start("2025-09-22", "2025-09-30", requested_by="ops@host")  # a partial run: 09-24 fails
    daemon.wait_idle()

    with serve(create_app(daemon.endpoint)) as base:
        page.goto(f"{base}/?month=2025-10")
        expect(page.locator("#conn")).to_have_class(re.compile(r"\bok\b"), timeout=WAIT_MS)
        expect(page.locator("#state-badge")).to_have_text("idle", timeout=WAIT_MS)

        submit_range(page, "2025-10-09", "2025-10-31")
        expect(page.locator("#form-result")).to_contain_text("Started run", timeout=WAIT_MS)
        run_id = client.status().current_task.run_id
        expect(page.locator("#cur-run")).to_have_text(run_id, timeout=WAIT_MS)
        page.wait_for_function("() => +document.getElementById('bar').getAttribute('aria-valuenow') > 0", timeout=WAIT_MS)
        first = progress(page)
        page.wait_for_function("(v) => +document.getElementById('bar').getAttribute('aria-valuenow') > v", arg=first,
                               timeout=WAIT_MS)
        assert progress(page) > first
        expect(page.locator("#cur-days")).to_contain_text(" / 17", timeout=WAIT_MS)

        submit_range(page, "2025-11-03", "2025-11-07")
        notice = page.locator("#form-result")
        expect(notice).to_have_class(re.compile(r"\bbusy\b"), timeout=WAIT_MS)
        expect(notice).to_contain_text(BUSY)
        expect(notice).to_contain_text("web_batch")
        expect(notice).to_contain_text("2025-10-09 → 2025-10-31")
        expect(notice).to_contain_text(run_id)

        expect(page.locator('.cell[data-date="2025-09-24"]')).to_have_attribute("data-status", "failed", timeout=WAIT_MS)
        expect(page.locator('.cell[data-date="2025-10-09"]')).to_have_attribute("data-status", "success", timeout=WAIT_MS)
        expect(page.locator('.cell[data-date="2025-10-11"]')).to_have_attribute("data-status", "skipped")
        expect(page.locator(f'#history tr[data-run="{run_id}"]')).to_contain_text("running", timeout=WAIT_MS)
        expect(page.locator("#history")).to_contain_text("partial", timeout=WAIT_MS)

        shot = tmp_path / "status-page.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("SYNCD_WEB_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["SYNCD_WEB_SCREENSHOT"])

        page.click("#cancel-btn")
        expect(page.locator("#state-badge")).to_have_text("idle", timeout=WAIT_MS)
        expect(page.locator(f'#history tr[data-run="{run_id}"]')).to_contain_text("cancelled", timeout=WAIT_MS)


def test_form_shows_why_a_range_is_invalid(syncd_factory, page):
    with serve(create_app(syncd_factory().endpoint)) as base:
        page.goto(base + "/")
        submit_range(page, "2025-10-10", "2025-10-01")
        notice = page.locator("#form-result")
        expect(notice).to_have_class(re.compile(r"\berror\b"), timeout=WAIT_MS)
        expect(notice).to_contain_text("is after end_date")


def test_page_says_when_syncd_is_unreachable(page):
    with serve(create_app(DEAD_ENDPOINT, timeout=0.5)) as base:
        page.goto(base + "/")
        expect(page.locator("#conn")).to_have_class(re.compile(r"\bdown\b"), timeout=WAIT_MS)
        expect(page.locator("#conn-text")).to_contain_text("syncd is not running at")
