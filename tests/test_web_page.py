"""The status page in headless Chromium, served by uvicorn, against a real syncd.

Chromium is Debian's (`apt-get install chromium`), driven by playwright's Python package
(never `playwright install`). Waits are playwright's own condition polling with a deadline.
Set SYNCD_WEB_SCREENSHOTS=docs to refresh docs/status-page.png and docs/status-page-narrow.png.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install -e '.[web]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")

import httpx
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from test_metrics import free_port
from test_web import DEAD_ENDPOINT, serve

from syncctl.web import configure, create_app, make_router

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BUSY_ZH = "已有同步任务正在运行，请等待当前任务完成后再试"
BUSY_EN = "A sync is already running"
WAIT_MS = 30_000
SLOW = {"source": {"demo": {"day_delay_s": 0.4}}}

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is absent: apt-get install -y chromium")
expect = sync_api.expect


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_page(browser) -> Iterator[Any]:
    """open_page(locale=..., width=...) -> a page in a fresh context (its own storage)."""
    contexts = []

    def make(locale: str = "en-US", width: int = 1280, height: int = 900) -> sync_api.Page:
        context = browser.new_context(viewport={"width": width, "height": height}, locale=locale)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(open_page) -> sync_api.Page:
    return open_page()


def progress(page: sync_api.Page) -> float:
    return float(page.get_attribute("#bar", "aria-valuenow") or 0)


def months(page: sync_api.Page) -> list[str]:
    return page.eval_on_selector_all(".month", "nodes => nodes.map(n => n.dataset.month)")


def expect_months(page: sync_api.Page, shown: list[str]) -> None:
    page.wait_for_function("(want) => [...document.querySelectorAll('.month')].map(n => n.dataset.month).join() === want",
                           arg=",".join(shown), timeout=WAIT_MS)


def submit_range(page: sync_api.Page, start_date: str, end_date: str) -> None:
    page.fill("#start-date", start_date)
    page.fill("#end-date", end_date)
    page.click("#sync-submit")


def save_screenshot(page: sync_api.Page, tmp_path: Path, name: str) -> None:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("SYNCD_WEB_SCREENSHOTS"):
        shutil.copyfile(shot, Path(os.environ["SYNCD_WEB_SCREENSHOTS"]) / name)


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
        expect(notice).to_contain_text(BUSY_EN)  # the page's language; the 409 body stays the seed's Chinese
        expect(notice).to_contain_text("web_batch")
        expect(notice).to_contain_text("2025-10-09 → 2025-10-31")
        expect(notice).to_contain_text(run_id)

        expect(page.locator('.cell[data-date="2025-09-24"]')).to_have_attribute("data-status", "failed", timeout=WAIT_MS)
        expect(page.locator('.cell[data-date="2025-10-09"]')).to_have_attribute("data-status", "success", timeout=WAIT_MS)
        expect(page.locator('.cell[data-date="2025-10-11"]')).to_have_attribute("data-status", "skipped")
        expect(page.locator(f'#history tr[data-run="{run_id}"]')).to_contain_text("running", timeout=WAIT_MS)
        expect(page.locator("#history")).to_contain_text("partial", timeout=WAIT_MS)
        assert months(page) == ["2025-09", "2025-10", "2025-11"]
        save_screenshot(page, tmp_path, "status-page.png")

        page.click("#cancel-btn")
        page.click("#cancel-yes")
        expect(page.locator("#cancel-result")).to_contain_text(f"cancelling {run_id}", timeout=WAIT_MS)
        expect(page.locator("#state-badge")).to_have_text("idle", timeout=WAIT_MS)
        expect(page.locator("#cancel-result")).to_have_text("")
        expect(notice).to_be_hidden()  # the busy notice was about a run that has ended
        expect(page.locator(f'#history tr[data-run="{run_id}"]')).to_contain_text("cancelled", timeout=WAIT_MS)


def test_calendar_follows_the_run_and_cancel_asks_first(syncd_factory, page):
    daemon = syncd_factory({"source": {"demo": {"day_delay_s": 0.5}}})
    with serve(create_app(daemon.endpoint)) as base:
        page.goto(base + "/")
        expect(page.locator("#state-badge")).to_have_text("idle", timeout=WAIT_MS)
        submit_range(page, "2025-08-01", "2025-10-31")
        expect(page.locator("#state-badge")).to_have_text("running", timeout=WAIT_MS)
        expect_months(page, ["2025-07", "2025-08", "2025-09"])  # the month of the day in flight, not the range's end
        expect_months(page, ["2025-08", "2025-09", "2025-10"])  # and on, as the run reaches September

        page.click("#cancel-btn")
        expect(page.locator("#cancel-confirm")).to_be_visible()
        expect(page.locator("#cancel-question")).to_contain_text(daemon.client().status().current_task.run_id)
        page.click("#cancel-no")
        expect(page.locator("#cancel-confirm")).to_be_hidden()
        assert daemon.client().status().state == "running"

        page.click("#cancel-btn")
        page.click("#cancel-yes")
        expect(page.locator("#cancel-result")).to_contain_text("cancelling", timeout=WAIT_MS)
        assert daemon.wait_idle().last_run.status == "cancelled"
        expect(page.locator("#state-badge")).to_have_text("idle", timeout=WAIT_MS)
        expect(page.locator("#cancel-result")).to_have_text("")
        expect_months(page, ["2025-08", "2025-09", "2025-10"])  # it stays where the run stopped


def test_idle_page_opens_on_the_latest_synced_month(syncd_factory, page):
    daemon = syncd_factory()
    daemon.client().start("2025-09-22", "2025-09-26")
    daemon.wait_idle()
    with serve(create_app(daemon.endpoint)) as base:
        page.goto(base + "/")
        expect_months(page, ["2025-07", "2025-08", "2025-09"])
        expect(page.locator('.cell[data-date="2025-09-22"]')).to_have_attribute("data-status", "success")
        page.click("#cal-next")
        expect_months(page, ["2025-08", "2025-09", "2025-10"])
        page.click("#cal-latest")
        expect_months(page, ["2025-07", "2025-08", "2025-09"])


def test_month_parameter_shows_that_month_in_the_middle(syncd_factory, page):
    with serve(create_app(syncd_factory().endpoint)) as base:
        page.goto(base + "/?month=2025-10")
        expect_months(page, ["2025-09", "2025-10", "2025-11"])
        expect(page.locator("#cal-label")).to_have_text("Sep 2025 – Nov 2025")


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
        expect(page.locator("#state-badge")).to_have_text("unreachable")
        expect(page.locator("#current-idle")).to_contain_text("syncd is not answering")
        expect(page.locator("#sync-submit")).to_be_disabled()


def test_page_notices_the_daemon_going_down_and_coming_back(syncd_factory, page):
    daemon = syncd_factory()
    with serve(create_app(daemon.endpoint, timeout=0.5)) as base:
        page.goto(base + "/")
        expect(page.locator("#state-badge")).to_have_text("idle", timeout=WAIT_MS)
        expect(page.locator("#sync-submit")).to_be_enabled()
        daemon.stop()
        expect(page.locator("#state-badge")).to_have_text("unreachable", timeout=WAIT_MS)
        expect(page.locator("#sync-submit")).to_be_disabled()
        daemon.start()
        expect(page.locator("#state-badge")).to_have_text("idle", timeout=WAIT_MS)
        expect(page.locator("#sync-submit")).to_be_enabled()


def test_at_390_px_nothing_is_clipped(syncd_factory, open_page, tmp_path: Path):
    daemon = syncd_factory(SLOW)
    client = daemon.client()
    client.start("2025-09-22", "2025-09-23", requested_by="ops@host")
    daemon.wait_idle()
    page = open_page(locale="zh-CN", width=390, height=844)
    with serve(create_app(daemon.endpoint)) as base:
        page.goto(base + "/")
        run_id = client.start("2025-09-24", "2025-10-31", requested_by="ops@host").run_id
        expect(page.locator("#cur-run")).to_have_text(run_id, timeout=WAIT_MS)
        expect(page.locator("#history tr[data-run]")).to_have_count(2, timeout=WAIT_MS)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # the page itself never scrolls sideways
        run = page.eval_on_selector("#cur-run", "n => [n.scrollWidth, n.clientWidth, n.getBoundingClientRect().right]")
        assert run[0] <= run[1] and run[2] <= 390, run  # the whole run id shows
        wrap = page.eval_on_selector("#history-wrap", "n => [n.scrollWidth, n.clientWidth, n.getBoundingClientRect().right]")
        assert wrap[0] > wrap[1] and wrap[2] <= 390, wrap  # the runs table scrolls inside its card
        save_screenshot(page, tmp_path, "status-page-narrow.png")
        last_column = page.locator("#history tr[data-run] td").last
        last_column.scroll_into_view_if_needed()
        expect(last_column).to_be_in_viewport()
        client.cancel()
        daemon.wait_idle()


def test_page_speaks_chinese_or_english_with_a_switch(syncd_factory, open_page):
    daemon = syncd_factory(SLOW)
    daemon.client().start("2025-09-01", "2025-10-31")
    page = open_page(locale="zh-CN")
    with serve(create_app(daemon.endpoint)) as base:
        page.goto(base + "/")
        expect(page.locator("html")).to_have_attribute("lang", "zh")
        expect(page.locator("#current-card h2")).to_have_text("当前同步")
        expect(page.locator("#state-badge")).to_have_text("运行中", timeout=WAIT_MS)
        submit_range(page, "2025-11-03", "2025-11-07")
        expect(page.locator("#form-result")).to_contain_text(BUSY_ZH, timeout=WAIT_MS)

        page.click("#lang-switch")
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.locator("#current-card h2")).to_have_text("Current sync")
        expect(page.locator("#state-badge")).to_have_text("running")
        expect(page.locator("#form-result")).to_contain_text(BUSY_EN)
        expect(page.locator("#form-result")).not_to_contain_text(BUSY_ZH)
        page.reload()
        expect(page.locator("#current-card h2")).to_have_text("Current sync")  # the switch's choice is kept
        daemon.client().cancel()
        daemon.wait_idle()


def test_favicon_and_no_missing_resources(syncd_factory, page):
    failures: list[str] = []
    page.on("response", lambda r: failures.append(f"{r.status} {r.url}") if r.status == 404 else None)
    with serve(create_app(syncd_factory().endpoint)) as base:
        page.goto(base + "/")
        expect(page.locator("#state-badge")).to_have_text("idle", timeout=WAIT_MS)
        expect(page.locator(".month")).to_have_count(3, timeout=WAIT_MS)
        assert page.locator('link[rel="icon"]').count() == 1
        icon = httpx.get(base + "/favicon.ico")
        assert icon.status_code == 200
    # /verify and /check are probed: an older web server answers 404 and the page does without them
    assert [f for f in failures if not re.search(r"/(verify|check)(\?|$)", f)] == []


def test_with_a_token_the_page_asks_for_it_once(syncd_factory, page):
    with serve(create_app(syncd_factory().endpoint, token="s3cret")) as base:
        page.goto(base + "/")
        expect(page.locator("#auth")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#sync-submit")).to_be_disabled()
        page.fill("#auth-token", "wrong")
        page.click("#auth-submit")
        expect(page.locator("#auth-error")).to_be_visible(timeout=WAIT_MS)
        page.fill("#auth-token", "s3cret")
        page.click("#auth-submit")
        expect(page.locator("#state-badge")).to_have_text("idle", timeout=WAIT_MS)
        expect(page.locator("#auth")).to_be_hidden()
        expect(page.locator("#sync-submit")).to_be_enabled()
        page.reload()  # kept for the tab's session
        expect(page.locator("#state-badge")).to_have_text("idle", timeout=WAIT_MS)
        expect(page.locator("#auth")).to_be_hidden()


# --- the data-trust and ops routes (`verify`, `check`): shown when there, done without when not -------------
def app_with_routes_in_front(endpoint: str, routes: dict[str, Any]) -> FastAPI:
    """syncd's router at /x, behind routes registered first (so they answer instead of the router's)."""
    app = FastAPI()
    configure(app, endpoint=endpoint)
    for path, answer in routes.items():
        app.add_api_route(f"/x{path}", answer, methods=["GET"])
    app.include_router(make_router(), prefix="/x")
    return app


VERIFIED_DAYS = [
    {"date": "2025-10-09", "status": "incomplete", "rows": 5290, "expected": 5300, "anomalies": 3,
     "findings": [{"stock": "600000", "check": "high_low", "detail": "high 9.80 < low 9.90"},
                  {"stock": "000001", "check": "price_limit", "detail": "pct_change 15.2 beyond ±10%"}]},
    {"date": "2025-10-10", "status": "success", "rows": 5300, "expected": 5300, "anomalies": 0, "findings": []},
]


def test_calendar_shows_incomplete_days_anomalies_and_the_check_verdict(syncd_factory, page):
    def days(start_date: str, end_date: str) -> dict[str, Any]:
        listed = {d["date"]: d for d in VERIFIED_DAYS}
        return {"status": "ok", "days": [{"date": d, "status": listed[d]["status"], "rows": listed[d]["rows"],
                                          "run_id": "r1", "error": None, "expected": 5300, "missing": 10,
                                          "source": "baostock", "fallback_stocks": 12 if d == "2025-10-09" else 0}
                                         for d in listed if start_date <= d <= end_date]}

    def verify(start_date: str, end_date: str) -> dict[str, Any]:
        return {"status": "ok", "days": [d for d in VERIFIED_DAYS if start_date <= d["date"] <= end_date]}

    verdict = {"status": "ok", "healthy": False, "reason": "2025-10-09 is incomplete",
               "latest_completed_trading_day": "2025-10-09", "day_status": "incomplete", "last_scheduled_run": None}
    app = app_with_routes_in_front(syncd_factory().endpoint, {"/days": days, "/verify": verify,
                                                              "/check": lambda: JSONResponse(verdict, 503)})
    with serve(app) as base:
        page.goto(base + "/x/page?month=2025-10")
        cell = page.locator('.cell[data-date="2025-10-09"]')
        expect(cell).to_have_attribute("data-status", "incomplete", timeout=WAIT_MS)
        expect(cell).to_have_attribute("data-anomalies", "3", timeout=WAIT_MS)
        expect(cell.locator(".mark")).to_have_text("3")
        tip = cell.get_attribute("title")
        assert "expected 5,300 stocks, 10 missing" in tip
        assert "source baostock, 12 stocks from a fallback" in tip  # provenance (docs/data.md)
        assert "source baostock" in page.locator('.cell[data-date="2025-10-10"]').get_attribute("title")
        assert "600000 high_low: high 9.80 < low 9.90" in tip and "000001 price_limit" in tip
        expect(page.locator('.cell[data-date="2025-10-10"] .mark')).to_have_count(0)
        expect(page.locator("#legend-anomalies")).to_be_visible()
        expect(page.locator('.month[data-month="2025-10"] h3')).to_contain_text("1 incomplete")
        box = page.locator("#check")
        expect(box).to_have_attribute("data-healthy", "false", timeout=WAIT_MS)
        expect(box).to_contain_text("latest completed trading day 2025-10-09: incomplete (some stocks are missing")
        expect(box).not_to_contain_text("2025-10-09 is incomplete")  # the daemon's reason says the same: not twice


def test_without_verify_and_check_the_page_does_quietly_without(syncd_factory, page):
    def absent() -> None:
        raise HTTPException(404, "Not Found")  # what a web server without these routes answers

    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/verify" in r.url else None)
    app = app_with_routes_in_front(syncd_factory().endpoint, {"/verify": absent, "/check": absent})
    with serve(app) as base:
        page.goto(base + "/x/page?month=2025-10")
        expect(page.locator('.cell[data-date="2025-10-11"]')).to_have_attribute("data-status", "skipped", timeout=WAIT_MS)
        page.wait_for_function("() => document.querySelector('#check').hidden", timeout=WAIT_MS)
        page.click("#cal-prev")
        expect_months(page, ["2025-08", "2025-09", "2025-10"])
        expect(page.locator('.cell[data-date="2025-08-01"]')).to_have_attribute("data-status", "pending", timeout=WAIT_MS)
        expect(page.locator("#legend-anomalies")).to_be_hidden()
        expect(page.locator(".mark:visible")).to_have_count(0)
        expect(page.locator("#months")).not_to_contain_text("unavailable")
    assert len(asked) == 1, asked  # asked once, then never again


def test_with_metrics_on_the_page_shows_where_to_scrape_and_an_example(syncd_factory, page):
    port = free_port()
    daemon = syncd_factory({"metrics": {"listen": f"127.0.0.1:{port}"}})
    with serve(create_app(daemon.endpoint)) as base:
        page.goto(base + "/")
        expect(page.locator("#metrics-url")).to_have_text(f"http://127.0.0.1:{port}/metrics", timeout=WAIT_MS)
        page.click("#metrics summary")
        expect(page.locator("#metrics-example")).to_contain_text("syncd_runs_total")


def test_without_metrics_the_page_shows_no_scrape(syncd_factory, page):
    with serve(create_app(syncd_factory().endpoint)) as base:
        page.goto(base + "/")
        expect(page.locator("#conn")).to_have_class(re.compile(r"\bok\b"), timeout=WAIT_MS)
        expect(page.locator("#metrics")).to_be_hidden()


def test_a_failed_run_says_why_in_the_current_card_and_recent_runs(syncd_factory, page):
    daemon = syncd_factory({"source": {"demo": {"fail_dates": ["2025-10-09", "2025-10-10"]}}})
    daemon.client().start("2025-10-09", "2025-10-10")
    run = daemon.wait_idle().last_run
    why = "2 of 2 trading days failed: demo source: fetch of 2025-10-09 failed (listed in source.demo.fail_dates) (2 days)"
    assert run.error == why
    with serve(create_app(daemon.endpoint)) as base:
        page.goto(base + "/")
        expect(page.locator("#current-idle")).to_contain_text(why, timeout=WAIT_MS)
        expect(page.locator(f'#history tr.run-error[data-run-error="{run.run_id}"]')).to_have_text(why, timeout=WAIT_MS)
        expect(page.locator(f'#history tr.run-error[data-run-error="{run.run_id}"]')).to_be_visible()


# --- one language at a time, one snapshot, the latest month with data -------------------------------------

# Text that is no word of either language: numbers, dates, times, run ids, units of the page's own table.
_NOT_WORDS = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}|\d{4}-\d{2}-\d{2}|\d{2}:\d{2}(:\d{2})?|[+-]\d{2}:\d{2}|UTC|syncd|"
                        r"Prometheus|https?://\S+|English|Web|SYNCD_[A-Z_]+|chinese_calendar|[\d.,%]+")

UNTRANSLATED_JS = """() => {
  const found = [];
  const raw = (node) => node.closest("[data-raw], code, pre, script, style, .cell");
  const judge = (text, where) => { if (/[A-Za-z]{2,}/.test(text)) found.push([where, text.trim()]); };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) if (!raw(n.parentElement)) judge(n.textContent, n.parentElement.id || n.parentElement.tagName);
  for (const node of document.querySelectorAll("[title], [placeholder], [aria-label]"))
    if (!raw(node)) for (const a of ["title", "placeholder", "aria-label"]) if (node.getAttribute(a)) judge(node.getAttribute(a), a);
  return found;
}"""


def untranslated(page: sync_api.Page) -> list[str]:
    """Strings of the page that are English in Chinese mode (the daemon's own words, marked data-raw, aside)."""
    return sorted({f"{where}: {text}" for where, text in page.evaluate(UNTRANSLATED_JS)
                   if re.search(r"[A-Za-z]{2,}", _NOT_WORDS.sub("", text))})


def test_in_chinese_every_string_of_the_page_is_chinese(syncd_factory, open_page, tmp_path: Path):
    daemon = syncd_factory({**SLOW, "source": {"demo": {"day_delay_s": 0.4, "fail_dates": ["2025-09-24"]}},
                            "metrics": {"listen": f"127.0.0.1:{free_port()}"}})
    client = daemon.client()
    client.start("2025-09-24", "2025-09-24", task_type="scheduler_daily", requested_by="schedule")  # failed: check unhealthy
    daemon.wait_idle()
    client.start("2025-09-22", "2025-09-23", requested_by="ops@host")
    daemon.wait_idle()
    page = open_page(locale="zh-CN")
    with serve(create_app(daemon.endpoint)) as base:
        page.goto(base + "/?month=2025-09")
        expect(page.locator("#check")).to_have_attribute("data-healthy", "false", timeout=WAIT_MS)
        expect(page.locator("#history tr.run-error")).to_have_count(1, timeout=WAIT_MS)
        expect(page.locator("#current-idle")).to_contain_text("上次运行", timeout=WAIT_MS)
        assert untranslated(page) == []
        box = page.locator("#check").inner_text()
        assert "需要处理" in box and box.count("最近完成的交易日") == 1 and box.count("上次定时运行") == 1, box
        submit_range(page, "2025-10-09", "2025-10-31")
        expect(page.locator("#cur-run")).not_to_have_text("–", timeout=WAIT_MS)
        page.wait_for_function("() => +document.getElementById('bar').getAttribute('aria-valuenow') > 0", timeout=WAIT_MS)
        assert untranslated(page) == []
        save_screenshot(page, tmp_path, "status-page-zh.png")
        client.cancel()
        daemon.wait_idle()


def test_needs_attention_says_each_thing_once(syncd_factory, page):
    daemon = syncd_factory({"source": {"demo": {"fail_dates": ["2025-09-24"]}}})
    daemon.client().start("2025-09-24", "2025-09-24", task_type="scheduler_daily", requested_by="schedule")
    run = daemon.wait_idle().last_run
    with serve(create_app(daemon.endpoint)) as base:
        page.goto(base + "/")
        box = page.locator("#check")
        expect(box).to_have_attribute("data-healthy", "false", timeout=WAIT_MS)
        text = box.inner_text()
        assert text.lower().count("latest completed trading day") == 1, text
        assert text.count(run.run_id) == 1 and text.count(run.error) == 1, text


def test_chinese_renders_characters_not_boxes(syncd_factory, open_page):
    """The page's fonts reach a CJK font where the system has one (CI installs fonts-noto-cjk): a Chinese
    character drawn in the page's font differs from the box drawn for a character no font has."""
    page = open_page(locale="zh-CN")
    with serve(create_app(syncd_factory().endpoint)) as base:
        page.goto(base + "/")
        expect(page.locator("#current-card h2")).to_have_text("当前同步", timeout=WAIT_MS)
        same = page.evaluate("""() => {
          const font = getComputedStyle(document.querySelector("h2")).fontFamily;
          const draw = (ch) => { const c = document.createElement("canvas"); c.width = c.height = 64;
            const g = c.getContext("2d"); g.font = "48px " + font; g.fillText(ch, 4, 52);
            return Array.from(g.getImageData(0, 0, 64, 64).data).join(); };
          return draw("同") === draw("\\u{10FFFD}");
        }""")
        assert not same, "Chinese characters render as boxes: install a CJK font (apt-get install fonts-noto-cjk)"


def test_latest_synced_opens_on_the_month_of_the_latest_day_with_data(syncd_factory, page, short_tmp: Path):
    """Days past the current month, synced (a csv calendar that lists 2027 days): the page opens there."""
    data = short_tmp / "csv"
    data.mkdir()
    for day in ("2027-03-01", "2027-03-02"):
        (data / f"{day}.csv").write_text("code,open,high,low,close,pre_close,volume,amount,turnover,pct_change\n"
                                         "600000,10.00,10.20,9.90,10.10,10.00,100000,1010000.00,0.5,1.0\n")
    daemon = syncd_factory({"source": {"name": "csv", "csv": {"path": str(data)}}})
    daemon.client().start("2027-03-01", "2027-03-05")
    daemon.wait_idle()
    with serve(create_app(daemon.endpoint)) as base:
        page.goto(base + "/")
        expect_months(page, ["2027-01", "2027-02", "2027-03"])
        expect(page.locator('.month[data-month="2027-03"] h3')).to_contain_text("2 synced")


def test_the_progress_card_and_the_recent_runs_row_read_one_snapshot(syncd_factory, page):
    daemon = syncd_factory({"source": {"demo": {"day_delay_s": 0.15}}})
    with serve(create_app(daemon.endpoint)) as base:
        page.goto(base + "/")
        expect(page.locator("#state-badge")).to_have_text("idle", timeout=WAIT_MS)
        run_id = daemon.client().start("2025-06-02", "2025-10-31").run_id
        expect(page.locator("#cur-run")).to_have_text(run_id, timeout=WAIT_MS)
        seen: list[str] = []
        for _ in range(6):  # the two read together, as a person sees them, each time the card moves on
            card, row = page.evaluate("""(id) => [document.getElementById("cur-days").textContent,
              (document.querySelector(`#history tr[data-run="${id}"] td:nth-child(5)`) || {}).textContent]""", run_id)
            assert row is None or card.replace(" ", "") == row.replace(" ", ""), (card, row)
            seen.append(card)
            page.wait_for_function("(was) => document.getElementById('cur-days').textContent !== was", arg=card,
                                   timeout=WAIT_MS)
        assert len(set(seen)) == len(seen)
        daemon.client().cancel()
        daemon.wait_idle()
