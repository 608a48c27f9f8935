"""`check`: the daemon's freshness verdict (syncd/telemetry/freshness.py), on the wire, in syncctl (exit 0/5/1) and at GET /check."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import zoneinfo

import pytest

from syncd.calendar import TradingCalendar
from syncd.record import RunRecord
from syncd.telemetry.freshness import CompletedDay, DayKind, FreshnessJudge

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
LATE_AFTER = dt.time(22, 0)
# 2025-10-17 is a Friday; 2025-10-01..08 the National Day holiday; 2025-09-30 a Tuesday that trades.


def at(day: str, clock: str) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time.fromisoformat(clock), SHANGHAI)


def judge(kind: dict[str, DayKind] | None = None) -> FreshnessJudge:
    calendar = TradingCalendar()
    if kind is None:
        return FreshnessJudge(calendar, SHANGHAI, LATE_AFTER)
    return FreshnessJudge(calendar, SHANGHAI, LATE_AFTER,
                       kind=lambda d: kind.get(d.isoformat(), "trading" if calendar.is_trading_day(d) else "closed"))


def scheduled(status: str, task_type: str = "scheduler_daily", error: str | None = None) -> RunRecord:
    return RunRecord(run_id="20251017-200000-abcdef", task_type=task_type, requested_by="schedule",
                     start_date=dt.date(2025, 10, 17), end_date=dt.date(2025, 10, 17), host="h", pid=1, status=status,
                     error=error)


# --- which day is the latest completed trading day ----------------------------------------------

@pytest.mark.parametrize("now, expected", [
    (at("2025-10-17", "22:00"), "2025-10-17"),   # late_after reached: today counts
    (at("2025-10-17", "21:59:59"), "2025-10-16"),  # not yet: yesterday's trading day
    (at("2025-10-18", "12:00"), "2025-10-17"),   # Saturday: Friday
    (at("2025-10-20", "09:00"), "2025-10-17"),   # Monday morning: Friday
    (at("2025-10-09", "10:00"), "2025-09-30"),   # after the National Day holiday: the last day before it
    (at("2025-10-17", "14:30").astimezone(dt.UTC), "2025-10-16"),  # any zone in, judged in Shanghai
])
def test_a_trading_day_completes_at_late_after_in_the_schedule_zone(now: dt.datetime, expected: str) -> None:
    assert judge().latest_completed(now) == CompletedDay(dt.date.fromisoformat(expected))


def test_completed_weekdays_no_calendar_confirms_are_reported_and_the_last_confirmed_day_kept() -> None:
    kind: dict[str, DayKind] = {"2027-01-04": "unconfirmed", "2027-01-05": "unconfirmed", "2027-01-01": "unconfirmed",
                                "2026-12-31": "trading"}
    completed = judge(kind).latest_completed(at("2027-01-05", "23:00"))
    assert completed.day == dt.date(2026, 12, 31)
    assert completed.unconfirmed == (dt.date(2027, 1, 5), dt.date(2027, 1, 4), dt.date(2027, 1, 1))


# --- the verdict --------------------------------------------------------------------------------

DAY = CompletedDay(dt.date(2025, 10, 17))


def test_a_synced_day_with_no_scheduled_run_yet_is_healthy() -> None:
    verdict = judge().judge(DAY, "success", None)
    assert verdict.healthy and not verdict.late
    assert "2025-10-17" in verdict.reason and "no scheduled run yet" in verdict.reason


@pytest.mark.parametrize("status", [None, "pending", "failed", "incomplete", "syncing"])
def test_a_completed_day_not_synced_is_unhealthy_and_late(status: str | None) -> None:
    verdict = judge().judge(DAY, status, scheduled("succeeded"))
    assert not verdict.healthy and verdict.late
    assert verdict.day_status == (status or "pending")
    assert f"2025-10-17, the latest completed trading day, is {status or 'pending'}" in verdict.reason


@pytest.mark.parametrize("status", ["failed", "interrupted"])
@pytest.mark.parametrize("task_type", ["scheduler_daily", "scheduler_missing"])
def test_a_last_scheduled_run_that_failed_makes_it_unhealthy_even_with_the_day_synced(status: str, task_type: str) -> None:
    verdict = judge().judge(DAY, "success", scheduled(status, task_type, error="upstream down"))
    assert not verdict.healthy
    assert not verdict.late  # the failure is the failed alert's; the data is there
    assert f"ended {status}: upstream down" in verdict.reason and task_type in verdict.reason


@pytest.mark.parametrize("status", ["succeeded", "partial", "cancelled", "running"])
def test_other_ends_of_the_last_scheduled_run_leave_the_verdict_to_the_day(status: str) -> None:
    assert judge().judge(DAY, "success", scheduled(status)).healthy
    assert not judge().judge(DAY, "failed", scheduled(status)).healthy


def test_an_unconfirmed_day_makes_it_unhealthy_with_the_reason_and_the_last_confirmed_day() -> None:
    completed = CompletedDay(dt.date(2026, 12, 31), (dt.date(2027, 1, 4),))
    verdict = judge().judge(completed, "success", None)
    assert not verdict.healthy and verdict.late
    assert "2027-01-04 is past the packaged trading calendar" in verdict.reason
    assert "chinese_calendar" in verdict.reason and "akshare, baostock" in verdict.reason


# --- the daemon ---------------------------------------------------------------------------------

def syncctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncctl.cli", *args], capture_output=True, text=True, timeout=60)


def latest_completed_now(late_after: str = "00:00") -> dt.date:
    day = FreshnessJudge(TradingCalendar(), SHANGHAI, dt.time.fromisoformat(late_after)).latest_completed(
        dt.datetime.now(SHANGHAI)).day
    assert day is not None
    return day


CHECK_CONFIG = {"alert": {"late_after": "00:00"}}  # today counts as soon as it is a trading day


def test_check_on_a_fresh_database_is_unhealthy_exit_5_naming_the_day(syncd_factory) -> None:
    daemon = syncd_factory(CHECK_CONFIG)
    day = latest_completed_now()
    result = syncctl("--endpoint", daemon.endpoint, "check")
    assert result.returncode == 5, result.stderr
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith(f"unhealthy: {day}, the latest completed trading day, is pending")


def test_check_after_syncing_the_latest_completed_day_is_healthy_exit_0(syncd_factory) -> None:
    daemon = syncd_factory(CHECK_CONFIG)
    day = latest_completed_now()
    client = daemon.client()
    client.start(day, day)
    daemon.wait_idle()
    reply = client.check()
    assert reply.healthy and reply.latest_completed_trading_day == day.isoformat() and reply.day_status == "success"
    assert reply.last_scheduled_run is None
    result = syncctl("--endpoint", daemon.endpoint, "check", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["healthy"] is True


def test_check_is_unhealthy_when_the_last_scheduled_run_failed(syncd_factory) -> None:
    day = latest_completed_now()
    daemon = syncd_factory({**CHECK_CONFIG, "source": {"demo": {"fail_dates": [day.isoformat()]}}})
    client = daemon.client()
    run_id = client.start(day, day, task_type="scheduler_daily").run_id
    daemon.wait_idle()
    reply = client.check()
    assert not reply.healthy
    assert reply.last_scheduled_run is not None and reply.last_scheduled_run.run_id == run_id
    assert reply.last_scheduled_run.status == "failed"
    assert f"the last scheduled run {run_id} (scheduler_daily" in reply.reason
    # a later manual run that fixes the day does not hide the scheduled failure; the next scheduled success does
    daemon.reconfigure({"source": {"demo": {"fail_dates": []}}})
    daemon.stop()
    daemon.start()
    client.start(day, day, task_type="scheduler_missing")
    daemon.wait_idle()
    assert client.check().healthy


def test_check_with_the_database_down_is_unhealthy_naming_it(syncd_factory, database) -> None:
    import psycopg

    daemon = syncd_factory(CHECK_CONFIG)
    name = psycopg.conninfo.conninfo_to_dict(database)["dbname"]
    admin = psycopg.conninfo.make_conninfo(database, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    try:
        reply = daemon.client(timeout=15).check()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
    assert not reply.healthy and "database unreachable" in reply.reason


def test_syncctl_check_without_a_daemon_exits_1(short_tmp) -> None:
    result = syncctl("--endpoint", f"ipc://{short_tmp}/nobody.sock", "--timeout", "0.5", "check")
    assert result.returncode == 1


def test_web_check_is_200_when_healthy_and_503_when_not_with_the_same_body(syncd_factory) -> None:
    pytest.importorskip("fastapi", reason="the web extra is not installed")
    from fastapi.testclient import TestClient

    from syncctl.web import PREFIX, create_app

    daemon = syncd_factory(CHECK_CONFIG)
    http = TestClient(create_app(daemon.endpoint))
    unhealthy = http.get(f"{PREFIX}/check")
    assert unhealthy.status_code == 503
    assert unhealthy.json()["healthy"] is False and unhealthy.json()["status"] == "ok"
    day = latest_completed_now()
    daemon.client().start(day, day)
    daemon.wait_idle()
    healthy = http.get(f"{PREFIX}/check")
    assert healthy.status_code == 200
    assert healthy.json() == daemon.client().request({"op": "check"})


def test_web_check_with_the_daemon_down_is_503() -> None:
    pytest.importorskip("fastapi", reason="the web extra is not installed")
    from fastapi.testclient import TestClient

    from syncctl.web import PREFIX, create_app

    http = TestClient(create_app("ipc:///tmp/syncd-check-test-nobody.sock", timeout=0.3))
    response = http.get(f"{PREFIX}/check")
    assert response.status_code == 503 and response.json()["code"] == "unreachable"
