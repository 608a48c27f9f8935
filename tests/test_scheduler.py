"""The built-in schedule: fires on time in Asia/Shanghai whatever the host's zone, skips when busy, heals gaps."""

import datetime as dt
import zoneinfo

import pytest
import structlog
from conftest import wait_until

from syncd.calendar import DayKind, TradingCalendar
from syncd.config import ScheduleConfig
from syncd.control.scheduling import Busy, DailySchedule

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")


def demo_calendar() -> TradingCalendar:
    """The calendar a demo daemon plans by (past the packaged calendar, the demo confirms its weekdays)."""
    return TradingCalendar(confirms=lambda day: day.weekday() < 5)


def _in_shanghai(seconds_ahead: int) -> tuple[str, dt.datetime]:
    at = (dt.datetime.now(SHANGHAI) + dt.timedelta(seconds=seconds_ahead)).replace(microsecond=0)
    return at.strftime("%H:%M:%S"), at


def _schedule(**overrides):
    return {"schedule": {"enabled": True, "catch_up_on_start": False, "daily_at": "03:00", "missing_at": "03:30", **overrides}}


def test_daily_job_fires_on_time_in_shanghai_on_a_utc_host(syncd_factory):
    daily_at, target = _in_shanghai(4)
    if target.date() != (target - dt.timedelta(seconds=8)).date():
        pytest.skip("too close to midnight in Shanghai for a same-day schedule")
    daemon = syncd_factory(_schedule(daily_at=daily_at), env={"TZ": "UTC"})
    jobs = {j.job: j.next_run for j in daemon.client().status().schedule}
    assert jobs["scheduler_daily"] == target.isoformat()
    assert jobs["scheduler_daily"].endswith("+08:00")
    fired = wait_until(lambda: daemon.events("schedule_fired"), timeout=15, what="schedule_fired")[0]
    fired_at = dt.datetime.fromisoformat(fired["timestamp"].replace("Z", "+00:00"))
    assert fired["job"] == "scheduler_daily"
    assert dt.timedelta(0) <= fired_at - target < dt.timedelta(seconds=2)
    if demo_calendar().is_trading_day(target.date()):
        status = daemon.wait_idle()
        assert status.last_run.task_type == "scheduler_daily"
        assert status.last_run.start_date == status.last_run.end_date == target.date().isoformat()
    else:
        assert wait_until(lambda: daemon.events("schedule_not_trading_day"), what="not-a-trading-day note")


def test_job_that_fires_during_a_run_is_skipped_and_logged(syncd_factory):
    missing_at, _ = _in_shanghai(4)
    daemon = syncd_factory({**_schedule(missing_at=missing_at), "source": {"demo": {"day_delay_s": 0.3}}})
    run = daemon.client().start("2025-09-01", "2025-10-31", task_type="web_batch")
    skipped = wait_until(lambda: daemon.events("schedule_skipped_busy"), timeout=15, what="schedule_skipped_busy")[0]
    assert skipped["job"] == "scheduler_missing"
    assert skipped["current_task"]["run_id"] == run.run_id
    assert skipped["current_task"]["task_type"] == "web_batch"
    assert daemon.client().status().current_task.run_id == run.run_id


def test_catch_up_on_start_heals_days_missed_while_down(syncd_factory):
    config = {"schedule": {"enabled": True, "catch_up_on_start": False, "missing_lookback_days": 10}}
    daemon = syncd_factory(config)
    today = dt.datetime.now(SHANGHAI).date()
    start = today - dt.timedelta(days=9)
    calendar = demo_calendar()
    trading = [d.isoformat() for d in calendar.trading_days(start, today)]
    if len(trading) < 2:
        pytest.skip("fewer than two trading days in the lookback window")
    daemon.client().start(trading[0], trading[0])  # one day synced before "downtime"
    daemon.wait_idle()
    daemon.stop()
    daemon.config["schedule"]["catch_up_on_start"] = True
    from conftest import toml_dumps
    daemon.config_path.write_text(toml_dumps(daemon.config))
    daemon.start()
    status = daemon.wait_idle()
    assert status.last_run.task_type == "scheduler_missing"
    assert status.last_run.trading_days == len(trading) - 1
    days = {d.date: d.status for d in daemon.client().days(start.isoformat(), today.isoformat())}
    assert all(days[d] == "success" for d in trading)


def test_status_lists_each_job_with_its_next_run(syncd_factory):
    daemon = syncd_factory(_schedule(daily_at="20:00", missing_at="21:00:30"))
    jobs = {j.job: j.next_run for j in daemon.client().status().schedule}
    assert set(jobs) == {"scheduler_daily", "scheduler_missing"}
    assert jobs["scheduler_daily"].endswith("T20:00:00+08:00")
    assert jobs["scheduler_missing"].endswith("T21:00:30+08:00")


def test_daily_job_syncs_today_only_on_trading_days():
    started = []
    def start(job, days):
        started.append((job, list(days)))
        return "run-1"
    for today, expected in [(dt.date(2025, 10, 9), True), (dt.date(2025, 10, 11), False), (dt.date(2025, 10, 1), False)]:
        started.clear()
        now = dt.datetime.combine(today, dt.time(20, 0), SHANGHAI)
        schedule = DailySchedule(ScheduleConfig(), start, TradingCalendar().kind, lambda a, b: [], now=lambda now=now: now)
        schedule.run_daily()
        assert bool(started) == expected, today
        if expected:
            assert started == [("scheduler_daily", [today])]


def test_daily_job_starts_no_run_for_a_weekday_no_calendar_confirms_and_says_why():
    started = []
    now = dt.datetime(2027, 1, 4, 20, 0, tzinfo=SHANGHAI)  # a Monday past the packaged calendar
    with structlog.testing.capture_logs() as logs:
        DailySchedule(ScheduleConfig(), lambda job, days: started.append(days) or "r", TradingCalendar().kind,
                      lambda a, b: [], now=lambda: now).run_daily()
    assert started == []
    [note] = [e for e in logs if e["event"] == "schedule_not_trading_day"]
    assert note["reason"] == "unconfirmed" and "upgrade chinese_calendar" in note["detail"]
    confirmed = TradingCalendar({dt.date(2027, 1, 4): True})  # a source's calendar says it trades
    DailySchedule(ScheduleConfig(), lambda job, days: started.append(days) or "r", confirmed.kind,
                  lambda a, b: [], now=lambda: now).run_daily()
    assert started == [[dt.date(2027, 1, 4)]]


def test_missing_job_asks_for_exactly_the_unsynced_trading_days():
    now = dt.datetime(2025, 10, 13, 21, 0, tzinfo=SHANGHAI)
    asked = []
    schedule = DailySchedule(ScheduleConfig(missing_lookback_days=7), lambda job, days: asked.append(list(days)) or "r",
                             TradingCalendar().kind, lambda a, b: [dt.date(2025, 10, 9), dt.date(2025, 10, 13)],
                             now=lambda: now)
    schedule.run_missing()
    assert asked == [[dt.date(2025, 10, 9), dt.date(2025, 10, 13)]]


def test_a_busy_refusal_is_not_an_error():
    def busy(job, days):
        raise Busy(None)
    now = dt.datetime(2025, 10, 9, 20, 0, tzinfo=SHANGHAI)
    DailySchedule(ScheduleConfig(), busy, lambda d: DayKind.TRADING, lambda a, b: [], now=lambda: now).run_daily()


def test_disabled_schedule_has_no_jobs_and_never_wakes():
    schedule = DailySchedule(ScheduleConfig(enabled=False), lambda j, d: "r", lambda d: DayKind.TRADING, lambda a, b: [])
    assert schedule.jobs() == [] and schedule.idle_seconds() is None
