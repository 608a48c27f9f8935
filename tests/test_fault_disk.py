"""Fault suite, disk: PostgreSQL's disk fills up in the middle of a day's COPY.

A private PostgreSQL (netlab.PgServer) keeps its data directory, or its WAL, on a small tmpfs,
shrunk to leave less room than a few days need once the daemon is up:
- data full: the COPY fails with "could not extend file ... No space left on device" and rolls
  back; PostgreSQL stays up; the days fail with that error and the run ends `partial` or `failed`;
- WAL full: PostgreSQL cannot write its WAL, PANICs and restarts or stops itself; the run ends
  `failed`, `partial` or `interrupted`.
Either way no day is half-written (each holds its complete rows or none), the daemon answers
`status` throughout, and once the space is given back (the tmpfs grown, PostgreSQL started again
if it stopped) the scheduled missing-data job syncs exactly the days that are missing.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import zoneinfo
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import wait_until
from netlab import PgServer, Tmpfs, unavailable_reason
from test_fault_data import StatusPoller, expected_aggregates, stored_aggregates

from syncd.calendar import TradingCalendar

pytestmark = pytest.mark.fault

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
STOCKS = 3000          # a day: ~0.5 MB of table and index, ~0.6 MB of WAL
LOOKBACK_DAYS = 14
FAULT_PHASE_S = 25     # the missing-data job fires this long after the daemon starts: time to fill and free the disk
TMPFS_MB = 256


@pytest.fixture(params=["data", "wal"])
def full_disk(request: pytest.FixtureRequest) -> Any:
    """(where, the server, its tmpfs): a private PostgreSQL whose data directory or WAL is on a tmpfs."""
    reason = unavailable_reason(network=False)
    if reason is not None:
        pytest.skip(f"cannot fill a private PostgreSQL's disk here: {reason}")
    where = request.param
    disk = Tmpfs(TMPFS_MB)
    folder = Path(tempfile.mkdtemp(prefix="sdpgd-", dir="/tmp"))
    try:
        if where == "data":  # the data directory on the tmpfs, the WAL beside it on the ordinary disk
            server = PgServer(folder, pgdata=disk.path / "data", waldir=folder)
        else:  # 1 MB WAL segments: a new one is needed every day or two of writes
            server = PgServer(folder, waldir=disk.path, initdb_args=("--wal-segsize=1",))
        server.start()
        yield where, server, disk
    finally:
        disk.resize(TMPFS_MB)
        if "server" in locals():
            server.stop("immediate")
        disk.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_full_disk_fails_days_whole_and_the_missing_data_job_heals_them(syncd_factory, full_disk):
    where, server, disk = full_disk
    started = dt.datetime.now(SHANGHAI).replace(microsecond=0)
    missing_at = started + dt.timedelta(seconds=FAULT_PHASE_S)
    today = started.date()
    if (missing_at + dt.timedelta(seconds=60)).date() != today:
        pytest.skip("too close to midnight in Shanghai for a same-day missing-data job")
    start = today - dt.timedelta(days=LOOKBACK_DAYS - 1)
    days = TradingCalendar().trading_days(start, today)
    assert len(days) >= 6

    dbname = server.create_database()
    dsn = server.local_dsn(dbname)
    daemon = syncd_factory({
        "database": {"dsn": dsn},
        "source": {"demo": {"stocks": STOCKS, "seed": 21, "day_delay_s": 0.05}},
        "sync": {"retries": 1, "retry_backoff_s": 0.2},
        "schedule": {"enabled": True, "catch_up_on_start": False, "missing_lookback_days": LOOKBACK_DAYS,
                     "missing_at": missing_at.strftime("%H:%M:%S"),
                     "daily_at": (missing_at - dt.timedelta(hours=1)).strftime("%H:%M:%S")}})
    client = daemon.client()
    leave_kb = 2048 if where == "data" else 3072
    disk.resize_to_used_plus(leave_kb)  # a few days' room, then the disk is full

    poller = StatusPoller(daemon)
    poller.start()
    try:
        run = client.start(start.isoformat(), today.isoformat())
        ended = daemon.wait_idle(timeout=120).last_run
        log = server.log_text()
        assert "No space left on device" in log, log[-3000:]
        disk.resize(TMPFS_MB)  # the operator frees space
        if not server.running():  # a WAL that cannot be written stops PostgreSQL
            server.start()
        fault_phase_s = (dt.datetime.now(SHANGHAI) - started).total_seconds()
        assert fault_phase_s < FAULT_PHASE_S - 2, f"the fault phase took {fault_phase_s:.0f} s: too slow to test the job"
    finally:
        poller.halt.set()
        poller.join(5)
    assert poller.unanswered == 0 and poller.answers, f"{poller.unanswered} status requests unanswered"
    assert ended.run_id == run.run_id and ended.status in ("failed", "partial", "interrupted"), ended

    expected = expected_aggregates(21, STOCKS, days)
    stored = stored_aggregates(dsn)
    assert all(stored[d] == expected[d] for d in stored), "a day holds other than its complete rows"
    assert len(stored) < len(days), "the disk never filled"
    assert ended.error, ended
    if where == "data":  # PostgreSQL stayed up: the run's end and the days' errors name the cause
        assert ended.status in ("failed", "partial") and ended.days_failed == len(days) - len(stored)
        errors = {d.error for d in client.days(start.isoformat(), today.isoformat()) if d.status == "failed"}
        assert errors and all("No space left on device" in e for e in errors), errors

    healed = wait_until(lambda: (s := client.status()).state == "idle" and s.last_run.task_type == "scheduler_missing"
                        and s.last_run, timeout=FAULT_PHASE_S + 60, interval=0.2, what="the missing-data run")
    assert healed.status == "succeeded" and healed.trading_days == len(days) - len(stored), healed
    assert stored_aggregates(dsn) == expected
    statuses = {d.date: d.status for d in client.days(start.isoformat(), today.isoformat())}
    assert all(statuses[d.isoformat()] == "success" for d in days)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM sync_runs WHERE status = 'running'").fetchone() == (0,)
    print(f"\ndisk full ({where}): run {ended.status}, {len(stored)} of {len(days)} days written whole before it "
          f"filled, the rest empty; healed by {healed.run_id} ({healed.trading_days} days)")
