"""The sync loop on the fetch interface, in process on a real PostgreSQL: by_stock (each stock once,
staged, written day by day), incomplete days and the missing-data job's patches, the cancel rule
inside a day's write, and weekdays past the calendar's horizon that no calendar confirms.

Real daemons (cancel with the read-ahead full, faketime past the horizon) are in test_cancel.py
and test_horizon.py.
"""

from __future__ import annotations

import datetime as dt
import inspect
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import psycopg
import pytest
from fakesource import StockSource

from syncd.calendar import TradingCalendar
from syncd.config import Config, DemoConfig, SyncConfig
from syncd.control.runstate import RunState
from syncd.db import connection, daywrite, migrations, runs
from syncd.record import RunRecord
from syncd.run import bystock
from syncd.run.syncer import Syncer
from syncd.sources.base import DayBatch, DayFailure, ShouldStop, Source
from syncd.sources.demo import DemoSource
from syncd.telemetry.observer import Observer

SEPTEMBER = (dt.date(2025, 9, 1), dt.date(2025, 9, 30))  # 22 weekdays, no exchange holiday
WEEK = (dt.date(2025, 9, 8), dt.date(2025, 9, 12))
CONFIG = msgspec.structs.replace(Config(), sync=SyncConfig(retries=1, retry_backoff_s=0.0))


@pytest.fixture
def dsn(database: str) -> str:
    with connection.connect(database) as conn:
        migrations.migrate(conn)
    return database


def sync(dsn: str, source: Any, start: dt.date, end: dt.date, *, task_type: str = "manual",
         days: Sequence[dt.date] | None = None, calendar: TradingCalendar | None = None, lock: Any = None,
         state: RunState | None = None, fallbacks: Sequence[Any] = (), observer: Observer | None = None) -> RunRecord:
    """One run of `source` over [start, end] in process (the worker's Syncer), with `fallbacks` behind it."""
    run = RunRecord(run_id=f"run-{secrets.token_hex(4)}", task_type=task_type, requested_by="test", start_date=start,
                    end_date=end, host="test", pid=1, days=tuple(days) if days is not None else None)
    with connection.connect(dsn) as conn:
        run.started_at = runs.insert_run(conn, run)
    state = state or RunState()
    state.begin(run)
    syncer = Syncer(CONFIG, dsn, source, calendar or TradingCalendar(), observer=observer or Observer(), fallbacks=fallbacks)
    try:
        return syncer.run(run, state, lock)
    finally:
        syncer.close()
        state.end(None)


def q(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def day_record(dsn: str, day: dt.date) -> tuple[Any, ...]:
    return q(dsn, "SELECT status, rows, expected, missing, (SELECT array_agg(code ORDER BY code) FROM sync_day_missing m "
                  "WHERE m.date = d.date), error FROM sync_days d WHERE date = %s", day)[0]


def close_of(dsn: str, day: dt.date, code: str) -> float | None:
    rows = q(dsn, "SELECT close FROM daily_bars WHERE trade_date = %s AND code = %s", day, code)
    return rows[0][0] if rows else None


def weekdays(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1) if (start + dt.timedelta(days=i)).weekday() < 5]


# --- by_stock ------------------------------------------------------------------------------------

def test_by_stock_asks_each_stock_once_for_the_whole_range_and_writes_each_day_in_order(dsn):
    source = StockSource(stocks=30)
    run = sync(dsn, source, *SEPTEMBER)
    days = weekdays(*SEPTEMBER)
    assert (run.status, run.trading_days, run.days_done, run.rows) == ("succeeded", 22, 22, 22 * 30)
    assert sorted(code for code, _, _ in source.requests) == sorted(source.codes)  # one request per stock
    assert {(first, last) for _, first, last in source.requests} == {SEPTEMBER}
    written = q(dsn, "SELECT date FROM sync_days WHERE status = 'success' ORDER BY updated_at")
    assert [d for (d,) in written] == days  # one transaction a day, in day order
    assert all(day_record(dsn, d)[:5] == ("success", 30, 30, 0, None) for d in days)
    stored = q(dsn, "SELECT code, open, high, low, close, pre_close, volume, amount, turnover, pct_change, adj_factor "
                    "FROM daily_bars WHERE trade_date = %s ORDER BY code", days[5])
    assert stored == source.rows_for(days[5])
    assert q(dsn, "SELECT count(*) FROM sync_stage") == [(0,)]


def test_by_stock_stages_in_batches_and_survives_a_fetch_that_breaks_midway(dsn, monkeypatch):
    monkeypatch.setattr(bystock, "STAGE_BATCH_ROWS", 7)
    source = StockSource(stocks=20, raise_after=12)
    run = sync(dsn, source, *WEEK)
    assert (run.status, run.rows) == ("succeeded", 5 * 20)
    assert len(source.fetches) == 2  # the broken fetch, then the retry
    assert q(dsn, "SELECT count(DISTINCT code), count(*) FROM daily_bars") == [(20, 100)]


def test_failed_stocks_make_the_day_incomplete_keeping_their_stored_rows(dsn):
    source = StockSource(stocks=30)
    sync(dsn, source, *WEEK)
    first, failing, other = WEEK[0], source.codes[:2], source.codes[5]
    q(dsn, "UPDATE daily_bars SET close = 999 WHERE trade_date = %s AND code = ANY(%s)", first, failing)
    q(dsn, "UPDATE daily_bars SET close = 888 WHERE trade_date = %s AND code = %s", first, other)

    run = sync(dsn, StockSource(stocks=30, fail_codes=failing), *WEEK)
    assert (run.status, run.days_done, run.days_failed, run.rows) == ("partial", 5, 5, 5 * 28)  # rows it wrote
    status, rows, expected, missing, codes, error = day_record(dsn, first)
    assert (status, rows, expected, missing, codes) == ("incomplete", 30, 30, 2, sorted(failing))
    assert "2 of 30 listed stocks missing" in error and failing[0] in error and "HTTP 456" in error
    assert close_of(dsn, first, failing[0]) == 999  # a failed request never deletes (or rewrites) data
    assert close_of(dsn, first, other) == source.row(first, other)[4]  # fetched now: replaced


def test_the_missing_data_job_asks_only_for_the_missing_stocks_and_keeps_every_other_row(dsn):
    failing = StockSource(stocks=30).codes[:2]
    sync(dsn, StockSource(stocks=30, fail_codes=failing), *WEEK)
    days = weekdays(*WEEK)
    kept = StockSource(stocks=30).codes[7]
    q(dsn, "UPDATE daily_bars SET close = 777 WHERE code = %s", kept)  # a row the patch must leave alone

    again = StockSource(stocks=30, fail_codes=failing[1:])  # one of the two answers now
    run = sync(dsn, again, *WEEK, task_type="scheduler_missing", days=days)
    assert again.fetches == [sorted(failing)]  # only the missing stocks, each once
    assert (run.status, run.days_failed) == ("partial", 5)
    assert day_record(dsn, days[0])[:5] == ("incomplete", 29, 30, 1, failing[1:])  # 28 + the one that answered
    assert close_of(dsn, days[0], failing[0]) == again.row(days[0], failing[0])[4]
    assert close_of(dsn, days[0], kept) == 777

    healed = sync(dsn, StockSource(stocks=30), *WEEK, task_type="scheduler_missing", days=days)
    assert (healed.status, healed.days_failed, healed.rows) == ("succeeded", 0, 5)  # rows it wrote: the one stock a day
    assert all(day_record(dsn, d)[:5] == ("success", 30, 30, 0, None) for d in days)
    assert close_of(dsn, days[0], kept) == 777 and q(dsn, "SELECT count(*) FROM daily_bars") == [(150,)]


def test_a_day_for_which_nothing_was_fetched_fails_and_its_stored_rows_stay(dsn):
    source = StockSource(stocks=10)
    sync(dsn, source, *WEEK)
    run = sync(dsn, StockSource(stocks=10, fail_codes=source.codes), *WEEK)
    assert (run.status, run.days_failed, run.rows) == ("failed", 5, 0)
    status, rows, *_, error = day_record(dsn, WEEK[0])
    assert status == "failed" and "nothing fetched for this day: 10 stocks' requests failed" in error
    assert q(dsn, "SELECT count(*) FROM daily_bars") == [(50,)]


# --- by_day with missing stocks (a whole-market call that fell back to per-stock requests) -------

class MarketDays(Source):
    """by_day, each day one whole-market answer; `missing` stocks' per-stock requests fail on `partial_day`."""

    name = "marketdays"

    def __init__(self, missing: frozenset[str] = frozenset(), partial_day: dt.date | None = None) -> None:
        self.stocks = StockSource(stocks=12)
        self.missing, self.partial_day = missing, partial_day
        self.asked: list[list[dt.date]] = []

    def fetch_days(self, days: Sequence[dt.date], should_stop: ShouldStop) -> Iterator[tuple[dt.date, DayBatch | DayFailure]]:
        self.asked.append(list(days))
        for day in days:
            gone = self.missing if day == self.partial_day else frozenset()
            yield day, DayBatch([r for r in self.stocks.rows_for(day) if r[0] not in gone], expected=12, missing=gone)

    def trading_days(self, start: dt.date, end: dt.date) -> None:
        return None

    def stock_list(self) -> None:
        return None

    def close(self) -> None:
        pass


def test_a_by_day_batch_with_missing_stocks_is_written_incomplete_and_the_missing_job_asks_for_the_day(dsn):
    days = weekdays(*WEEK)
    gone = frozenset(StockSource(stocks=12).codes[:3])
    run = sync(dsn, MarketDays(gone, days[2]), *WEEK)
    assert (run.status, run.days_failed, run.rows) == ("partial", 1, 5 * 12 - 3)
    assert day_record(dsn, days[2])[:5] == ("incomplete", 9, 12, 3, sorted(gone))
    source = MarketDays()
    healed = sync(dsn, source, days[2], days[2], task_type="scheduler_missing", days=[days[2]])
    assert source.asked == [[days[2]]] and healed.status == "succeeded"
    assert day_record(dsn, days[2])[:5] == ("success", 12, 12, 0, None)


def test_rows_the_database_refuses_fail_that_day_only(dsn):
    days = weekdays(*WEEK)

    class Duplicated(MarketDays):
        def fetch_days(self, asked, should_stop):  # type: ignore[no-untyped-def]
            for day, batch in super().fetch_days(asked, should_stop):
                yield day, DayBatch(batch.rows + batch.rows[:1], expected=12) if day == days[1] else batch

    run = sync(dsn, Duplicated(), *WEEK)
    assert (run.status, run.days_done, run.days_failed, run.rows) == ("partial", 5, 1, 4 * 12)
    status, rows, *_, error = day_record(dsn, days[1])
    assert (status, rows) == ("failed", 0) and "writing the day failed: UniqueViolation" in error


# --- cancel inside a day's write -----------------------------------------------------------------

class CancelAtWrite:
    """Stands in for the run lock: its fence cancels the run inside the `at`-th day's write transaction
    (the run's bookkeeping writes pass the fence too: only the day writes, daywrite._write, count)."""

    def __init__(self, state: RunState, at: int) -> None:
        self.state, self.at, self.writes = state, at, 0

    def fence(self, conn: psycopg.Connection[Any], run_id: str) -> None:
        if not any(frame.function == "_write" and frame.filename.endswith("daywrite.py") for frame in inspect.stack()):
            return
        self.writes += 1
        if self.writes == self.at:
            self.state.request_cancel()

    def fence_probe(self) -> None:
        return None  # no session to compare with: the write path calls `fence` in full


class CountingDemo(DemoSource):
    def __init__(self) -> None:
        super().__init__(DemoConfig(stocks=40))
        self.produced: list[dt.date] = []

    def fetch_days(self, days: Sequence[dt.date], should_stop: ShouldStop) -> Iterator[tuple[dt.date, DayBatch | DayFailure]]:
        for day, result in super().fetch_days(days, should_stop):
            self.produced.append(day)
            yield day, result


def test_a_cancel_during_the_first_days_write_rolls_it_back_and_nothing_is_written(dsn):
    state = RunState()
    source = CountingDemo()
    run = sync(dsn, source, *WEEK[:1], WEEK[0] + dt.timedelta(days=1), lock=CancelAtWrite(state, 1), state=state)
    assert (run.status, run.days_done, run.rows) == ("cancelled", 0, 0)
    assert q(dsn, "SELECT count(*) FROM daily_bars") == [(0,)]
    assert {s for (s,) in q(dsn, "SELECT status FROM sync_days")} == {"pending"}
    assert len(source.produced) == 2  # the read-ahead held the second day: dropped, never written


def test_a_cancel_during_a_days_write_commits_no_later_day_though_the_read_ahead_is_full(dsn):
    state = RunState()
    source = CountingDemo()
    run = sync(dsn, source, *SEPTEMBER, lock=CancelAtWrite(state, 3), state=state)
    assert (run.status, run.days_done) == ("cancelled", 2)
    assert [d for (d,) in q(dsn, "SELECT DISTINCT trade_date FROM daily_bars ORDER BY 1")] == weekdays(*SEPTEMBER)[:2]
    assert len(source.produced) >= 3


def test_a_cancel_while_staging_writes_nothing_and_empties_the_stage(dsn):
    state = RunState()

    class CancelMidway(StockSource):
        def fetch_stocks(self, first, last, should_stop, codes=None):  # type: ignore[no-untyped-def]
            for n, item in enumerate(super().fetch_stocks(first, last, should_stop, codes)):
                if n == 5:
                    state.request_cancel()
                yield item

    source = CancelMidway(stocks=30)
    run = sync(dsn, source, *WEEK, state=state)
    assert (run.status, run.days_done) == ("cancelled", 0)
    assert len(source.requests) < 30
    assert q(dsn, "SELECT count(*) FROM daily_bars") == [(0,)] and q(dsn, "SELECT count(*) FROM sync_stage") == [(0,)]


def test_the_run_after_a_cancelled_one_plans_and_writes_every_day_again(dsn):
    state = RunState()
    cancelled = sync(dsn, CountingDemo(), *SEPTEMBER, lock=CancelAtWrite(state, 3), state=state)
    assert (cancelled.status, cancelled.days_done) == ("cancelled", 2)
    days = weekdays(*SEPTEMBER)
    assert q(dsn, "SELECT date, status FROM sync_days WHERE date = ANY(%s) AND status <> 'pending' ORDER BY date",
             days) == [(d, "success") for d in days[:2]]  # the third day, cancelled in its write: back to pending

    run = sync(dsn, CountingDemo(), *SEPTEMBER)
    assert (run.status, run.trading_days, run.days_done, run.rows) == ("succeeded", 22, 22, 22 * 40)
    assert q(dsn, "SELECT date, status, rows, run_id FROM sync_days WHERE status <> 'skipped' ORDER BY date") == [
        (d, "success", 40, run.run_id) for d in days]
    assert q(dsn, "SELECT trade_date, count(*) FROM daily_bars GROUP BY 1 ORDER BY 1") == [(d, 40) for d in days]


# --- the plan ------------------------------------------------------------------------------------

def test_the_plan_records_new_trading_days_pending_and_closed_days_skipped_keeping_what_days_hold(dsn):
    """daywrite.plan_days: one statement per kind of day. A trading day already recorded keeps its status
    and run; a closed day becomes skipped whatever it was (a source's calendar may close a day after the fact)."""
    done, failed, new, closed_done, closed_new = (dt.date(2025, 9, d) for d in (8, 9, 10, 11, 12))
    q(dsn, "INSERT INTO sync_days (date, status, rows, run_id, error) VALUES (%s, 'success', 5, 'old', NULL), "
           "(%s, 'failed', 0, 'old', 'no data'), (%s, 'failed', 0, 'old', 'no data')", done, failed, closed_done)
    with connection.connect(dsn) as conn:
        daywrite.plan_days(conn, "new-run", [done, failed, new, new], [closed_done, closed_new, closed_new])
    assert q(dsn, "SELECT date, status, rows, run_id, error FROM sync_days ORDER BY date") == [
        (done, "success", 5, "old", None), (failed, "failed", 0, "old", "no data"), (new, "pending", 0, "new-run", None),
        (closed_done, "skipped", 0, "new-run", None), (closed_new, "skipped", 0, "new-run", None)]


# --- past the calendar's horizon ----------------------------------------------------------------

NEW_YEAR = (dt.date(2027, 1, 1), dt.date(2027, 1, 8))  # Friday (a market holiday) .. the next Friday


def test_a_manual_range_past_the_horizon_leaves_unconfirmed_weekdays_pending_with_the_reason(dsn):
    q(dsn, "INSERT INTO sync_days (date, status, rows, error) VALUES (%s, 'failed', 0, 'no file')", NEW_YEAR[0])  # the old fallback's
    run = sync(dsn, DemoSource(DemoConfig(stocks=10)), *NEW_YEAR, calendar=TradingCalendar())  # nothing confirms
    assert (run.status, run.trading_days, run.days_done) == ("succeeded", 0, 0)
    records = dict(q(dsn, "SELECT date, status FROM sync_days"))
    assert {d for d, s in records.items() if s == "skipped"} == {dt.date(2027, 1, 2), dt.date(2027, 1, 3)}
    status, rows, *_, error = day_record(dsn, NEW_YEAR[0])
    assert (status, rows) == ("pending", 0) and "upgrade chinese_calendar" in error
    assert q(dsn, "SELECT count(*) FROM daily_bars") == [(0,)]


def test_past_the_horizon_a_sources_calendar_decides_and_is_stored(dsn):
    source = StockSource(stocks=10, closed=["2027-01-01"])
    run = sync(dsn, source, *NEW_YEAR)
    assert (run.status, run.trading_days, run.rows) == ("succeeded", 5, 50)
    assert day_record(dsn, NEW_YEAR[0])[0] == "skipped"
    assert q(dsn, "SELECT is_open, source FROM trade_calendar WHERE date = %s", NEW_YEAR[0]) == [(False, "fakestock")]


# --- the schema ---------------------------------------------------------------------------------------

def test_a_database_of_the_previous_schema_opens_with_its_days_intact(database):
    with connection.connect(database) as conn, conn.transaction():
        for _, _, sql in migrations.MIGRATIONS[:2]:
            conn.execute(sql)
        conn.execute("CREATE TABLE syncd_migrations (version integer PRIMARY KEY, description text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO syncd_migrations (version, description) VALUES (1, 'a'), (2, 'b')")
        conn.execute("INSERT INTO sync_days (date, status, rows, run_id) VALUES ('2025-09-01', 'success', 5300, 'old')")
    with connection.connect(database) as conn:
        assert migrations.migrate(conn) >= 3
    assert q(database, "SELECT status, rows, run_id, expected, missing FROM sync_days") == [
        ("success", 5300, "old", None, 0)]
    assert q(database, "SELECT relpersistence FROM pg_class WHERE relname = 'sync_stage'") == [("u",)]


def test_a_runs_error_names_the_first_failed_days_reason_and_how_many_days_share_it():
    from syncd.run.outcomes import Failures

    failures = Failures()
    assert failures.summary(3) is None
    for day in (dt.date(2025, 10, 9), dt.date(2025, 10, 10)):
        failures.add(day, f"ConnectionError: tushare daily trade_date={day:%Y%m%d}: name resolution failed", "failed")
    assert failures.summary(2) == ("2 of 2 trading days failed: ConnectionError: tushare daily trade_date=20251009: "
                                   "name resolution failed (2 days)")
    failures.add(dt.date(2025, 10, 13), "3 stocks missing (their requests failed): 000001, 000002, 600000", "incomplete")
    assert failures.summary(3) == ("3 of 3 trading days failed or incomplete: ConnectionError: tushare daily "
                                   "trade_date=20251009: name resolution failed (2 days; the other 1: `syncctl days`)")
