"""Reconciliation end to end: stored days compared with a second source, through real syncd processes.

On local servers speaking the services' documented shapes through the real libraries (a
Tushare primary, a baostock second opinion that disagrees in three known ways), and offline
(csv files as the primary, the demo market as the second opinion): exactly the planted
findings and no others over 20 trading days, the request count printed before the fetch
equal to what the server counted, a plan over verify.max_requests refused with the count,
the findings still shown by a later `verify`, the web route, and the scheduled sample.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from conftest import query, wait_until
from fastapi.testclient import TestClient
from market import EX_DATE, Bar, Market
from upstreams import BaostockServer, HttpUpstream, tushare_route

from syncctl.web import PREFIX, create_app
from syncd.calendar import TradingCalendar
from syncd.config import DemoConfig
from syncd.protocol import Verify
from syncd.sources.base import COLUMNS, Row
from syncd.sources.demo import DemoSource

D = dt.date
JANUARY = [d for d in (D(2024, 1, 1) + dt.timedelta(n) for n in range(31)) if TradingCalendar().is_trading_day(d)][:20]
TOKEN = "good-token"


def syncctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncctl.cli", "--config", str(config), "--timeout", "10", *args],
                          capture_output=True, text=True, timeout=120)


def findings(database: str) -> set[tuple[str, str, str]]:
    return {(day.isoformat(), code, check) for day, code, check in
            query(database, "SELECT trade_date, code, check_name FROM bar_findings")}


def retouch(market: Market, code: str, day: dt.date, change: Callable[[Bar], Bar | None]) -> None:
    """Change (or, returning None, drop) one stock's bar of one day in `market`."""
    bars = [change(bar) if bar.day == day else bar for bar in market.bars[code]]
    market.bars[code] = [bar for bar in bars if bar is not None]


def test_two_servers_that_disagree_three_ways_give_exactly_those_three_findings(syncd_factory, database):
    assert len(JANUARY) == 20 and JANUARY[-1] == D(2024, 1, 29)
    primary, other = Market(days=list(JANUARY)), Market(days=list(JANUARY))
    lots_day, absent_day = D(2024, 1, 10), D(2024, 1, 16)
    retouch(other, "000001", lots_day, lambda bar: dataclasses.replace(bar, volume=bar.volume // 100))  # lots as shares
    retouch(other, "600000", EX_DATE, lambda bar: dataclasses.replace(bar, pre_close=bar.raw_prev))  # the dividend ignored
    retouch(other, "300750", absent_day, lambda bar: None)  # not in baostock's answer that day
    tushare, baostock = HttpUpstream(tushare_route(primary, calendar=list(JANUARY))), BaostockServer(other)
    try:
        daemon = syncd_factory({
            "source": {"name": "tushare",
                       "tushare": {"token": TOKEN, "url": tushare.url, "requests_per_minute": 60_000},
                       "baostock": {"server": baostock.address, "requests_per_second": 1000, "jitter": 0}},
            "verify": {"max_requests": 30}})
        client = daemon.client(timeout=10)
        client.start(JANUARY[0], JANUARY[-1])
        assert daemon.wait_idle().last_run.status == "succeeded"
        assert findings(database) == set()  # the primary's days pass the sanity checks

        result = syncctl(daemon.config_path, "verify", "--from", "2024-01-02", "--to", "2024-01-29", "--against", "baostock")
        assert result.returncode == 5, result.stdout + result.stderr
        assert "22 requests planned (by_day: 1 query a day for 20 days, a login and a logout)" in result.stdout
        assert baostock.count() == 22, result.stdout  # as printed: 20 whole-market queries, one login, one logout
        assert "against baostock: done, 22 requests made" in result.stdout
        assert findings(database) == {("2024-01-10", "000001", "source_mismatch"), ("2024-01-04", "600000", "source_mismatch"),
                                      ("2024-01-16", "300750", "source_missing")}
        details = dict(((code, check), (detail, source)) for code, check, detail, source in
                       query(database, "SELECT code, check_name, detail, source FROM bar_findings"))
        volume = primary.bar("000001", lots_day).volume
        assert details[("000001", "source_mismatch")] == (f"volume {volume} stored (tushare) vs {volume // 100} in baostock (x0.0100)",
                                                          "baostock")
        ex = primary.bar("600000", EX_DATE)
        assert details[("600000", "source_mismatch")][0] == f"pre_close {ex.pre_close:.2f} stored (tushare) vs {ex.raw_prev:.2f} in baostock"
        assert details[("300750", "source_missing")][0] == "in daily_bars (tushare), absent from baostock"
        assert query(database, "SELECT count(*) FROM reconcile_stage") == [(0,)]  # the stage is emptied after

        # later, without --against: the findings are the days' anomalies
        result = syncctl(daemon.config_path, "verify", "--from", "2024-01-02", "--to", "2024-01-29", "--json")
        assert result.returncode == 5
        days = {day["date"]: day for day in json.loads(result.stdout)["days"]}
        assert days["2024-01-16"]["anomalies"] == 1 and days["2024-01-16"]["findings"] == [
            {"stock": "300750", "check": "source_missing", "detail": "in daily_bars (tushare), absent from baostock",
             "source": "baostock"}]
        assert sum(day["anomalies"] for day in days.values()) == 3

        # a plan over verify.max_requests is refused before anything is fetched, naming the count
        asked = tushare.count()
        result = syncctl(daemon.config_path, "verify", "--from", "2024-01-02", "--to", "2024-01-29", "--against", "tushare")
        assert result.returncode == 2 and "needs 40 requests" in result.stderr  # the code: --json and the exit status
        assert "verify.max_requests = 30" in result.stderr and tushare.count() == asked
        result = syncctl(daemon.config_path, "verify", "--from", "2024-01-02", "--to", "2024-01-29", "--against", "tushare",
                         "--json")
        assert result.returncode == 2 and json.loads(result.stdout)["code"] == "invalid_range"

        # one day against a by-day source: two requests (daily and adj_factor); a clean answer leaves baostock's findings
        reply = client.reconcile("2024-01-10", "2024-01-10", "tushare")
        assert tushare.count() - asked == 2 and reply.requests == 2 and reply.against == "tushare"
        assert reply.reconciliation.state == "done" and reply.reconciliation.findings == 0
        assert len(findings(database)) == 3
        started = [e for e in daemon.events("reconcile_started") if e["against"] == "baostock"]
        finished = [e for e in daemon.events("reconcile_finished") if e["against"] == "baostock"]
        assert len(started) == len(finished) == 1 and finished[0]["requests"] == 22 and finished[0]["findings"] == 3
    finally:
        tushare.stop()
        baostock.stop()


# --- offline: csv files as the primary, the demo market as the second opinion ----------------------

DEMO = {"stocks": 60, "seed": 7}


def csv_line(row: Row) -> str:
    return ",".join("" if value is None else str(value) for value in row[:len(COLUMNS)])


def write_days(folder: Path, rows_by_day: dict[dt.date, list[Row]]) -> None:
    for day, rows in rows_by_day.items():
        (folder / f"{day}.csv").write_text("\n".join([",".join(COLUMNS), *map(csv_line, rows)]) + "\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_csv_days_against_the_demo_give_exactly_the_planted_findings(syncd_factory, short_tmp, database):
    demo = DemoSource(DemoConfig(**DEMO))
    june = [d for d in (D(2024, 6, 3) + dt.timedelta(n) for n in range(40)) if TradingCalendar().is_trading_day(d)][:20]
    ex_code, ex_day = next((code, day) for code, day in sorted(demo.ex_dates(2024).items()) if june[2] <= day <= june[-1])
    rows = {day: demo.rows_for(day) for day in june}
    lots_code, lots_day = next(code for code in demo.codes if code != ex_code), june[5]
    gone_code, gone_day = next(code for code in demo.codes if code not in (ex_code, lots_code)), june[8]

    def edit(day: dt.date, code: str, change: Callable[[Row], Row]) -> None:
        rows[day] = [change(row) if row[0] == code else row for row in rows[day]]

    # volume and amount a hundredth (both in lots and hundreds: the sanity checks cannot see it)
    edit(lots_day, lots_code, lambda r: (*r[:6], r[6] // 100, round(r[7] / 100, 2), *r[8:]))
    # the ex-date's reference price as the previous close (the dividend ignored), pct_change to match
    previous_close = next(r[4] for r in rows[june[june.index(ex_day) - 1]] if r[0] == ex_code)
    edit(ex_day, ex_code, lambda r: (*r[:5], previous_close, *r[6:9], round((r[4] / previous_close - 1) * 100, 4), None))
    rows[gone_day] = [row for row in rows[gone_day] if row[0] != gone_code]
    data = short_tmp / "data"
    data.mkdir()
    write_days(data, rows)
    port = free_port()
    daemon = syncd_factory({"source": {"name": "csv", "csv": {"path": str(data)}, "demo": DEMO},
                            "verify": {"against": "demo", "sample": 5}, "metrics": {"listen": f"127.0.0.1:{port}"}})
    client = daemon.client(timeout=10)
    client.start(june[0], june[-1])
    assert daemon.wait_idle().last_run.status == "succeeded"
    assert findings(database) == set()

    planned = client.reconcile(june[0], june[-1], "demo", plan_only=True).reconciliation
    assert (planned.state, planned.plan, planned.planned_requests, planned.days) == ("planned", "by_day", 20, 20)
    reply = client.reconcile(june[0], june[-1], "demo")
    assert reply.against == "demo" and reply.requests == 20 and reply.reconciliation.state == "done"
    assert findings(database) == {(lots_day.isoformat(), lots_code, "source_mismatch"),
                                  (ex_day.isoformat(), ex_code, "source_mismatch"),
                                  (gone_day.isoformat(), gone_code, "source_missing")}
    detail = dict(query(database, "SELECT code, detail FROM bar_findings"))
    assert detail[lots_code].startswith("volume ") and "(x100.0000)" in detail[lots_code] and "amount " in detail[lots_code]
    assert detail[ex_code].startswith(f"pre_close {previous_close:.2f} stored (csv) vs ") and "adj_factor step since" in detail[ex_code]
    assert detail[gone_code] == "in demo, absent from daily_bars (csv)"
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'syncd_reconcile_findings_total{check="source_mismatch",source="demo"} 2.0' in metrics
    assert 'syncd_reconcile_findings_total{check="source_missing",source="demo"} 1.0' in metrics

    # the web route: the same reconciliation, its reply as the daemon's
    http = TestClient(create_app(daemon.endpoint, timeout=10))
    answer = http.get(f"{PREFIX}/verify", params={"start_date": str(june[0]), "end_date": str(june[0]), "against": "demo"})
    assert answer.status_code == 200 and answer.json()["against"] == "demo" and answer.json()["requests"] == 1
    assert answer.json()["reconciliation"]["state"] == "done"
    refused = http.get(f"{PREFIX}/verify", params={"start_date": str(june[0]), "end_date": str(june[-1]), "against": "nope"})
    assert refused.status_code == 422 and "unknown source 'nope'" in refused.json()["message"]

    # a scheduled daily sync is followed by a sample of verify.sample stocks against verify.against
    quiet = june[1]
    client.start(quiet, quiet, task_type="scheduler_daily")
    daemon.wait_idle()
    done = wait_until(lambda: [e for e in daemon.events("reconcile_finished") if e["requested_by"] == "schedule"],
                      what="the scheduled sample")
    assert (done[0]["state"], done[0]["days"], done[0]["requests"], done[0]["planned_requests"]) == ("done", 1, 1, 1)
    started = [e for e in daemon.events("reconcile_started") if e["requested_by"] == "schedule"]
    assert len(started) == 1 and started[0]["sample"] == 5 and done[0]["findings"] == 0
    assert len(findings(database)) == 3


def test_a_long_reconciliation_never_holds_the_control_loop(syncd_factory, short_tmp):
    demo = DemoSource(DemoConfig(**DEMO))
    june = [d for d in (D(2024, 6, 3) + dt.timedelta(n) for n in range(40)) if TradingCalendar().is_trading_day(d)][:20]
    data = short_tmp / "data"
    data.mkdir()
    write_days(data, {day: demo.rows_for(day) for day in june})
    daemon = syncd_factory({"source": {"name": "csv", "csv": {"path": str(data)}, "demo": {**DEMO, "day_delay_s": 0.25}}})
    client = daemon.client(timeout=2)
    client.start(june[0], june[-1])
    assert daemon.wait_idle().last_run.status == "succeeded"

    first = client.call(Verify(start_date=june[0], end_date=june[-1], against="demo", wait_s=0.1)).reconciliation
    assert first.state in ("queued", "running") and first.days_done < 20  # ~5 s of upstream latency: not waited for
    again = client.call(Verify(start_date=june[0], end_date=june[-1], against="demo", wait_s=0)).reconciliation
    assert again.reconcile_id == first.reconcile_id  # the same request while it runs joins it
    assert client.status().state == "idle"  # answered within the client's 2 s while the reconcile thread fetches
    client.start(june[0], june[1])  # a run is admitted at once, and runs beside the reconciliation
    assert daemon.wait_idle().last_run.status == "succeeded"
    polled = client.call(Verify(start_date=june[0], end_date=june[-1], against="demo", reconcile_id=first.reconcile_id,
                                wait_s=0)).reconciliation
    assert polled.reconcile_id == first.reconcile_id and polled.state in ("running", "done")
    reply = client.reconcile(june[0], june[-1], "demo")  # joins it, and asks until it ends
    assert reply.reconciliation.reconcile_id == first.reconcile_id
    assert (reply.reconciliation.state, reply.requests, reply.reconciliation.findings) == ("done", 20, 0)

    # the daemon's stop ends a reconciliation between requests
    running = client.call(Verify(start_date=june[0], end_date=june[-1], against="demo", wait_s=0)).reconciliation
    assert running.state in ("queued", "running")
    assert daemon.stop() == 0
    ended = [e for e in daemon.events("reconcile_finished") if e["reconcile_id"] == running.reconcile_id]
    assert ended and ended[0]["state"] == "cancelled"


def test_against_a_by_stock_source_one_history_and_one_factor_series_a_stock(syncd_factory, database):
    """akshare as the second opinion: asked by stock (its history and its Sina factors), the plan's count exact,
    and a source that agrees (units converted, pre_close from factors) gives no finding."""
    from upstreams import akshare_route, is_hist

    days = JANUARY[:6]
    market = Market(days=list(days))
    tushare, akshare = HttpUpstream(tushare_route(market, calendar=list(days))), HttpUpstream(akshare_route(market))
    try:
        daemon = syncd_factory({
            "source": {"name": "tushare",
                       "tushare": {"token": TOKEN, "url": tushare.url, "requests_per_minute": 60_000},
                       "akshare": {"relay": akshare.url, "requests_per_second": 1000, "jitter": 0}}})
        client = daemon.client(timeout=10)
        client.start(days[0], days[-1])
        assert daemon.wait_idle().last_run.status == "succeeded"
        stocks = query(database, "SELECT count(DISTINCT code) FROM daily_bars")[0][0]
        planned = client.reconcile(days[0], days[-1], "akshare", plan_only=True).reconciliation
        assert (planned.plan, planned.stocks, planned.planned_requests) == ("by_stock", stocks, 2 * stocks)
        reply = client.reconcile(days[0], days[-1], "akshare")
        assert reply.reconciliation.state == "done" and reply.reconciliation.errors == []
        assert akshare.count() == reply.requests == 2 * stocks  # one history and one factor series a stock, no lists
        assert akshare.count(is_hist()) == stocks
        assert findings(database) == set()
    finally:
        tushare.stop()
        akshare.stop()
