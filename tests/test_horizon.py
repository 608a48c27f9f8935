"""Past the packaged calendar's horizon, on real daemons whose clock libfaketime moved to 2027.

chinese_calendar ends with 2026. At 2027-01-01 20:00 Asia/Shanghai (New Year's Day, a market
holiday) the daily job fires: a weekday that no calendar confirms starts no run and is not
failed; it reads `pending` with the reason, logged as `calendar_beyond_horizon`. A source's own
calendar (fetched by the idle worker ahead of the job) says it is closed; a csv day's file or
the demo's synthetic weekdays (by contract) confirm a weekday. Each test first checks that the
daemon's clock really moved (its schedule and its log say 2027).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_CONFIG, merge, query, wait_until
from daemons import SpecialSyncd, faketime_available

from syncd.config import DemoConfig
from syncd.sources.demo import DemoSource

pytestmark = pytest.mark.skipif(not faketime_available(), reason="needs Debian's faketime (libfaketime): apt-get install faketime")

NEW_YEAR = dt.date(2027, 1, 1)
MONDAY = dt.date(2027, 1, 4)
STOCKS = 50
FAKE_START = "19:59:54"  # the daemons' clock starts here: 6 s to start up before the daily job
DAILY_AT = "20:00:00"
REASON = "upgrade chinese_calendar"


@pytest.fixture
def daemon_at(database: str, short_tmp: Path) -> Iterator[Callable[..., SpecialSyncd]]:
    """daemon_at(day, source={...}, fake_source=None) -> a started syncd whose clock reads `day`, just before 20:00 Shanghai."""
    made: list[SpecialSyncd] = []

    def start(day: dt.date, source: dict[str, Any] | None = None, fake_source: dict[str, Any] | None = None,
              **more: dict[str, Any]) -> SpecialSyncd:
        folder = short_tmp / f"d{len(made)}"
        folder.mkdir()
        config = merge(BASE_CONFIG, {
            "database": {"dsn": database}, "source": merge({"demo": {"stocks": STOCKS}}, source or {}),
            "schedule": {"enabled": True, "catch_up_on_start": False, "daily_at": DAILY_AT, "missing_at": "03:00"},
            **more})
        process = SpecialSyncd(folder, config, fake_source=fake_source, faketime=f"{day} {FAKE_START}")
        made.append(process)
        process.start()
        assert_clock_moved(process, day)
        return process

    yield start
    for process in made:
        process.stop()


def assert_clock_moved(daemon: SpecialSyncd, day: dt.date) -> None:
    jobs = {j.job: j.next_run for j in daemon.client().status().schedule}
    assert jobs["scheduler_daily"] == f"{day}T{DAILY_AT}+08:00", f"{jobs} (did start-up take over 6 s?)"
    started = dt.datetime.fromisoformat(daemon.events("daemon_started")[0]["timestamp"].replace("Z", "+00:00"))
    fake_start = dt.datetime.fromisoformat(f"{day}T{FAKE_START}+08:00")
    assert fake_start <= started < fake_start + dt.timedelta(seconds=6), started


def write_csv(folder: Path, *days: dt.date) -> None:
    folder.mkdir(exist_ok=True)
    demo = DemoSource(DemoConfig(stocks=STOCKS))
    for day in days:
        lines = ["code,open,high,low,close,pre_close,volume,amount,turnover,pct_change"]
        lines += [",".join(str(v) for v in row[:10]) for row in demo.rows_for(day)]  # the csv header has no adj_factor
        (folder / f"{day}.csv").write_text("\n".join(lines) + "\n")


def daily_job_outcome(daemon: SpecialSyncd) -> dict[str, Any]:
    """The daily job's note when it started no run (schedule_not_trading_day), waited for."""
    wait_until(lambda: daemon.events("schedule_fired"), timeout=15, what="the daily job to fire")
    found = wait_until(lambda: daemon.events("schedule_not_trading_day"), what="the daily job's decision")[0]
    print(daemon.log_text()[:3000])
    return found


def the_day(daemon: SpecialSyncd, day: dt.date) -> Any:
    [record] = daemon.client().days(day.isoformat(), day.isoformat())
    return record


# --- csv: a day's file is its calendar --------------------------------------------------------

def test_csv_on_new_years_day_2027_starts_no_run_and_the_day_stays_pending_with_the_reason(daemon_at, database, short_tmp):
    write_csv(short_tmp / "data", dt.date(2026, 12, 31))
    daemon = daemon_at(NEW_YEAR, source={"name": "csv", "csv": {"path": str(short_tmp / "data")}})
    decision = daily_job_outcome(daemon)
    assert decision["reason"] == "unconfirmed" and REASON in decision["detail"]
    warned = daemon.events("calendar_beyond_horizon")
    assert warned and warned[0]["date"] == "2027-01-01" and REASON in warned[0]["reason"]
    assert daemon.client().history() == []  # no run: nothing synced, nothing failed
    assert query(database, "SELECT count(*) FROM sync_days WHERE date = %s", NEW_YEAR) == [(0,)]
    day = the_day(daemon, NEW_YEAR)
    assert day.status == "pending" and REASON in day.error


def test_check_past_the_horizon_is_unhealthy_with_the_reason_and_names_the_last_confirmed_day(daemon_at, short_tmp):
    write_csv(short_tmp / "data", dt.date(2026, 12, 31))
    daemon = daemon_at(NEW_YEAR, source={"name": "csv", "csv": {"path": str(short_tmp / "data")}},
                       alert={"late_after": "19:00"})  # so 2027-01-01 counts as completed at 20:00
    verdict = daemon.client().check()
    assert not verdict.healthy and "2027-01-01" in verdict.reason and "calendar" in verdict.reason
    assert verdict.latest_completed_trading_day == "2026-12-31"  # the last day a calendar confirms


def test_csv_past_the_horizon_syncs_the_days_that_have_files_and_fails_none(daemon_at, database, short_tmp):
    write_csv(short_tmp / "data", dt.date(2026, 12, 30), dt.date(2026, 12, 31), MONDAY)
    daemon = daemon_at(MONDAY, source={"name": "csv", "csv": {"path": str(short_tmp / "data")}})
    client = daemon.client()
    scheduled = wait_until(lambda: (s := client.status()).state == "idle" and s.last_run, timeout=20, what="the daily run")
    assert (scheduled.task_type, scheduled.start_date, scheduled.status) == ("scheduler_daily", "2027-01-04", "succeeded")

    run = client.start("2026-12-30", "2027-01-04")
    assert run.task.trading_days == 3  # 12-30, 12-31 and 01-04; New Year's Day is left out
    last = daemon.wait_idle().last_run
    assert (last.status, last.days_done, last.days_failed, last.rows) == ("succeeded", 3, 0, 3 * STOCKS)
    statuses = {d.date: d.status for d in client.days("2026-12-30", "2027-01-04")}
    assert statuses == {"2026-12-30": "success", "2026-12-31": "success", "2027-01-01": "pending",
                        "2027-01-02": "skipped", "2027-01-03": "skipped", "2027-01-04": "success"}
    assert REASON in the_day(daemon, NEW_YEAR).error


# --- a source with a calendar of its own --------------------------------------------------------

def test_a_source_calendar_fetched_ahead_of_the_daily_job_says_new_years_day_is_closed(daemon_at, database):
    daemon = daemon_at(NEW_YEAR, fake_source={"stocks": STOCKS, "closed": ["2027-01-01"]})
    decision = daily_job_outcome(daemon)
    assert decision["reason"] == "exchange holiday"
    assert daemon.client().history() == []
    assert the_day(daemon, NEW_YEAR).status == "skipped"
    assert query(database, "SELECT is_open, source FROM trade_calendar WHERE date = %s", NEW_YEAR) == [(False, "fakestock")]


def test_a_source_calendar_confirms_the_first_trading_day_of_2027_and_the_daily_job_syncs_it(daemon_at, database):
    daemon = daemon_at(MONDAY, fake_source={"stocks": STOCKS, "closed": ["2027-01-01"]})
    client = daemon.client()
    run = wait_until(lambda: (s := client.status()).state == "idle" and s.last_run, timeout=20, what="the daily run")
    assert (run.task_type, run.start_date, run.status, run.rows) == ("scheduler_daily", "2027-01-04", "succeeded", STOCKS)
    assert the_day(daemon, MONDAY).status == "success"


# --- demo: its synthetic weekdays are its calendar (by contract) ----------------------------------

def test_demo_confirms_its_own_weekdays_so_its_daily_job_syncs_new_years_day_as_synthetic_data(daemon_at, database):
    daemon = daemon_at(NEW_YEAR)
    client = daemon.client()
    run = wait_until(lambda: (s := client.status()).state == "idle" and s.last_run, timeout=20, what="the daily run")
    assert (run.task_type, run.start_date, run.status, run.rows) == ("scheduler_daily", "2027-01-01", "succeeded", STOCKS)
    assert not daemon.events("calendar_beyond_horizon")  # every weekday is confirmed: nothing is unknown
    saturday = the_day(daemon, dt.date(2027, 1, 2))
    assert (saturday.status, saturday.error) == ("skipped", None)
