"""Fallback sources in process, offline, on a real PostgreSQL: a csv primary with the demo as its fallback,
a by_stock primary missing stocks, both sources down, a fallback that keeps failing, and provenance.

The real-service shapes (baostock banned mid-range, Tushare filling; a fallback in other units) are in
test_fallback_upstreams.py; kill -9 during a fallback day in a real daemon in test_fallback_daemon.py.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fakesource import StockSource
from structlog.testing import capture_logs
from test_syncflow import q
from test_syncflow import sync as run_in_process

from syncd.config import CsvConfig, DemoConfig
from syncd.control.runstate import RunState
from syncd.db import connection, migrations
from syncd.protocol import Task
from syncd.record import RunRecord
from syncd.sources.base import COLUMNS, Source
from syncd.sources.csvdir import CsvSource
from syncd.sources.demo import DemoSource
from syncd.telemetry.observer import Observer

WEEK = (dt.date(2025, 9, 8), dt.date(2025, 9, 12))
DAYS = [WEEK[0] + dt.timedelta(days=i) for i in range(5)]
STOCKS = 30
CODES = DemoSource(DemoConfig(stocks=STOCKS)).codes


@pytest.fixture
def dsn(database: str) -> str:
    with connection.connect(database) as conn:
        migrations.migrate(conn)
    return database


class Counted(Observer):
    """The observer calls a run made about fallbacks."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []
        self.days: list[str] = []

    def fallback_asked(self, source: str, outcome: str) -> None:
        self.asked.append((source, outcome))

    def fallback_day(self, source: str) -> None:
        self.days.append(source)


def sync(dsn: str, source: Source, fallbacks: Sequence[Source], **kwargs: Any) -> RunRecord:
    return run_in_process(dsn, source, *WEEK, fallbacks=fallbacks, **kwargs)


def provenance(dsn: str) -> dict[dt.date, tuple[Any, ...]]:
    """Per day: status, rows, source, fallback_stocks, and its bar_sources entries as {code: source}."""
    days = q(dsn, "SELECT date, status, rows, source, fallback_stocks FROM sync_days ORDER BY date")
    entries: dict[dt.date, dict[str, str]] = {}
    for day, code, source in q(dsn, "SELECT trade_date, code, source FROM bar_sources"):
        entries.setdefault(day, {})[code] = source
    return {day: (status, rows, source, fallback, entries.get(day, {})) for day, status, rows, source, fallback in days}


def bars(dsn: str, day: dt.date) -> list[tuple[Any, ...]]:
    return q(dsn, "SELECT code, open, high, low, close, pre_close, volume, amount, turnover, pct_change "
                  "FROM daily_bars WHERE trade_date = %s ORDER BY code", day)


def csv_days(folder: Path, demo: DemoSource, days: Sequence[dt.date]) -> CsvSource:
    """A csv folder holding the demo market's rows for `days` (every other weekday has no file)."""
    for day in days:
        with (folder / f"{day}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(row[:len(COLUMNS)] for row in demo.rows_for(day))
    return CsvSource(CsvConfig(path=str(folder)))


def demo(**settings: Any) -> DemoSource:
    return DemoSource(DemoConfig(**{"stocks": STOCKS, "seed": 7, **settings}))


def test_a_csv_primary_with_the_demo_as_fallback_fills_exactly_the_failed_days(dsn, tmp_path):
    market = demo()
    primary = csv_days(tmp_path, market, [DAYS[0], DAYS[2], DAYS[4]])  # no file on days 1 and 3
    counted = Counted()
    with capture_logs() as logs:
        run = sync(dsn, primary, [demo()], observer=counted)
    assert (run.status, run.days_done, run.days_failed, run.rows) == ("succeeded", 5, 0, 5 * STOCKS)
    found = provenance(dsn)
    for day in DAYS:
        by_fallback = day in (DAYS[1], DAYS[3])
        assert found[day] == ("success", STOCKS, "demo" if by_fallback else "csv", STOCKS if by_fallback else 0, {}), day
        assert bars(dsn, day) == sorted(row[:len(COLUMNS)] for row in market.rows_for(day))
    asked = [(e["date"], e["source"], e["outcome"], e["asked"]) for e in logs if e["event"] == "day_fallback"]
    assert asked == [(DAYS[1].isoformat(), "demo", "filled", "day"), (DAYS[3].isoformat(), "demo", "filled", "day")]
    assert all("no file for trading day" in e["primary_error"] for e in logs if e["event"] == "day_fallback")  # why it was asked
    assert counted.asked == [("demo", "filled")] * 2 and counted.days == ["demo"] * 2
    synced = {e["date"]: e for e in logs if e["event"] == "day_synced"}
    assert synced[DAYS[1].isoformat()]["source"] == "demo" and "source" not in synced[DAYS[0].isoformat()]


def test_both_sources_down_fail_the_day_once_with_both_reasons(dsn, tmp_path):
    primary = csv_days(tmp_path, demo(), [d for d in DAYS if d != DAYS[2]])
    with capture_logs() as logs:
        run = sync(dsn, primary, [demo(fail_dates=[DAYS[2].isoformat()])])
    assert (run.status, run.days_done, run.days_failed) == ("partial", 5, 1)
    status, rows, error = q(dsn, "SELECT status, rows, error FROM sync_days WHERE date = %s", DAYS[2])[0]
    assert (status, rows) == ("failed", 0)
    assert f"no file for trading day {DAYS[2]}" in error  # the primary's reason
    assert f"fallback demo: demo source: fetch of {DAYS[2]} failed" in error  # and the fallback's
    assert [e["date"] for e in logs if e["event"] == "day_failed"] == [DAYS[2].isoformat()]  # failed once
    assert q(dsn, "SELECT count(*) FROM daily_bars WHERE trade_date = %s", DAYS[2]) == [(0,)]


def test_a_by_stock_primary_missing_stocks_gets_them_from_the_fallback_in_the_same_write(dsn):
    failing = CODES[3:5]
    primary = StockSource(stocks=STOCKS, seed=7, fail_codes=failing)
    counted = Counted()
    run = sync(dsn, primary, [demo()], observer=counted)
    assert (run.status, run.days_failed, run.rows) == ("succeeded", 0, 5 * STOCKS)
    for day in DAYS:
        assert provenance(dsn)[day] == ("success", STOCKS, "fakestock", 2, dict.fromkeys(failing, "demo"))
        assert bars(dsn, day) == sorted(row[:len(COLUMNS)] for row in primary.rows_for(day))  # the same market's numbers
    assert q(dsn, "SELECT count(*) FROM sync_day_missing") == [(0,)]
    assert counted.days == ["demo"] * 5

    # The next sync by the primary alone (its stocks answer again) takes the day back, entries and all.
    run = sync(dsn, StockSource(stocks=STOCKS, seed=7), [])
    assert run.status == "succeeded"
    assert {day: found[2:] for day, found in provenance(dsn).items()} == dict.fromkeys(DAYS, ("fakestock", 0, {}))


def test_stocks_the_fallback_does_not_have_stay_missing_and_the_day_incomplete(dsn):
    filled, still = CODES[3], CODES[4]
    primary = StockSource(stocks=STOCKS, seed=7, fail_codes=[filled, still])
    fallback = StockSource(stocks=STOCKS, seed=7, fail_codes=[still])
    fallback.name = "other"  # a by_stock fallback: asked for the missing stocks of each day
    run = sync(dsn, primary, [fallback])
    assert (run.status, run.days_failed) == ("partial", 5)
    for day in DAYS:
        status, rows, source, fallback_stocks, entries = provenance(dsn)[day]
        assert (status, rows, source, fallback_stocks, entries) == ("incomplete", STOCKS - 1, "fakestock", 1, {filled: "other"})
        error = q(dsn, "SELECT error FROM sync_days WHERE date = %s", day)[0][0]
        assert f"1 of {STOCKS} listed stocks missing" in error and still in error and "fallback other" not in error
    assert fallback.fetches == [[filled, still]] * 5  # each day: the two it missed, one request each


def test_a_fallback_that_fails_days_in_a_row_is_not_asked_again_in_the_run(dsn, tmp_path):
    primary = csv_days(tmp_path, demo(), [])  # no file at all
    counted = Counted()
    run = sync(dsn, primary, [demo(fail_dates=[d.isoformat() for d in DAYS])], observer=counted)
    assert (run.status, run.days_failed) == ("failed", 5)
    assert counted.asked == [("demo", "failed")] * 3 + [("demo", "skipped")] * 2
    error = q(dsn, "SELECT error FROM sync_days WHERE date = %s", DAYS[4])[0][0]
    assert "fallback demo: not asked: it failed 3 days in a row in this run" in error


def test_the_status_names_the_fallback_being_asked(dsn, tmp_path):
    primary = csv_days(tmp_path, demo(), [DAYS[0]])
    state = RunState()
    seen: list[str | None] = []

    class Watching(DemoSource):
        def fetch_days(self, days, should_stop):
            snapshot = state.snapshot().current
            assert snapshot is not None
            seen.append(snapshot.task(dt.UTC).fallback_source)
            yield from super().fetch_days(days, should_stop)

    sync(dsn, primary, [Watching(DemoConfig(stocks=STOCKS, seed=7))], state=state)
    assert seen == ["demo"] * 4
    assert Task.__struct_fields__[-1] == "fallback_source"


def test_the_missing_data_job_patches_an_incomplete_day_from_the_fallback(dsn):
    failing = CODES[3:5]
    run = sync(dsn, StockSource(stocks=STOCKS, seed=7, fail_codes=failing), [])  # no fallback yet: incomplete days
    assert (run.status, run.days_failed) == ("partial", 5)
    q(dsn, "UPDATE daily_bars SET close = 777 WHERE code = %s", CODES[9])  # a row the patch must leave alone

    still = StockSource(stocks=STOCKS, seed=7, fail_codes=failing)  # the primary fails them again
    run = sync(dsn, still, [demo()], task_type="scheduler_missing", days=DAYS)
    assert (run.status, run.days_failed, run.rows) == ("succeeded", 0, 5 * 2)
    assert still.fetches == [failing]  # the primary was asked for the missing stocks only
    for day in DAYS:
        assert provenance(dsn)[day] == ("success", STOCKS, "fakestock", 2, dict.fromkeys(failing, "demo"))
        assert q(dsn, "SELECT close FROM daily_bars WHERE trade_date = %s AND code = %s", day, CODES[9]) == [(777,)]
    assert q(dsn, "SELECT count(*) FROM sync_day_missing") == [(0,)]
