"""The fetch process (syncd/sources/fetchproc.py) with real daemons: owned by the worker, dies with the daemon, never writes.

The demo source's days are produced in a child of the daemon. These tests hold the child to
the rules it was allowed out of the worker thread under: it is the daemon's child and no one
else's, it holds no database connection or socket (only its two pipes), it is started again
when it dies (a run in flight loses at most a retry of the day it was producing), and it does
not outlive a daemon killed with SIGKILL.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from pathlib import Path

import pytest
from conftest import query, wait_until

from syncd.calendar import TradingCalendar

RANGE = (dt.date(2025, 9, 1), dt.date(2025, 9, 30))


def children(pid: int) -> list[int]:
    """The processes `pid` started, from any of its threads (the worker thread starts the fetch process)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def fetch_child(daemon) -> int:  # type: ignore[no-untyped-def]
    def found() -> int | None:
        kids = [p for p in children(daemon.pid) if "syncd.sources.fetchproc" in Path(f"/proc/{p}/cmdline").read_text()]
        return kids[0] if kids else None
    return wait_until(found, timeout=20, what="the daemon's fetch process")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_the_fetch_process_is_the_daemons_child_with_nothing_but_its_pipes(syncd_factory):
    daemon = syncd_factory()
    child = fetch_child(daemon)
    targets = [os.readlink(f"/proc/{child}/fd/{fd}") for fd in os.listdir(f"/proc/{child}/fd")]
    assert not [t for t in targets if t.startswith("socket:")], targets  # no database connection, no control socket
    assert len([t for t in targets if t.startswith("pipe:")]) >= 2
    environ = Path(f"/proc/{child}/environ").read_bytes().decode(errors="replace")
    assert "SYNCD_DSN" not in environ and "postgres" not in Path(f"/proc/{child}/cmdline").read_text()
    run = daemon.client().start(*RANGE)
    last = daemon.wait_idle().last_run
    assert last.run_id == run.run_id and last.status == "succeeded"
    assert last.days_done == len(TradingCalendar().trading_days(*RANGE))
    assert fetch_child(daemon) == child  # the same process served the run


def test_the_fetch_process_starts_before_the_database_is_made_ready(syncd_factory):
    """Its warm-up (numpy, the demo market's years) overlaps the database's preparation, so a run asked for as
    soon as the daemon answers does not wait for it; the worker then uses that same process."""
    daemon = syncd_factory()
    order = [e["event"] for e in daemon.events() if e.get("event") in ("fetch_process_started", "database_ready")]
    assert order == ["fetch_process_started", "database_ready"]
    started = daemon.events("fetch_process_started")[0]["pid"]
    assert fetch_child(daemon) == started


def test_a_fetch_process_killed_mid_run_is_replaced_and_the_run_completes(syncd_factory, database):
    daemon = syncd_factory({"source": {"demo": {"day_delay_s": 0.05}}, "sync": {"retries": 2, "retry_backoff_s": 0.0}})
    client = daemon.client()
    first = fetch_child(daemon)
    run = client.start(*RANGE)
    wait_until(lambda: client.status().current_task.days_done >= 3, what="three days written")
    os.kill(first, signal.SIGKILL)
    last = daemon.wait_idle().last_run
    days = TradingCalendar().trading_days(*RANGE)
    assert last.run_id == run.run_id and last.status == "succeeded", last
    assert query(database, "SELECT count(DISTINCT trade_date) FROM daily_bars") == [(len(days),)]
    assert [e["code"] for e in daemon.events("fetch_process_exited")] == [-signal.SIGKILL]
    assert len(daemon.events("fetch_process_started")) == 2
    assert fetch_child(daemon) != first


def test_the_fetch_process_does_not_outlive_a_killed_daemon(syncd_factory):
    daemon = syncd_factory({"source": {"demo": {"day_delay_s": 0.2}}})
    child = fetch_child(daemon)
    daemon.client().start(*RANGE)  # mid-fetch: the child is waiting out a day's delay
    wait_until(lambda: daemon.client().status().current_task.days_done >= 1, what="a day written")
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.proc.wait(10)
    wait_until(lambda: not alive(child), timeout=10, what="the fetch process to die with the daemon")


def test_a_cancel_reaches_the_fetch_process_while_it_waits(syncd_factory):
    daemon = syncd_factory({"source": {"demo": {"day_delay_s": 2.0}}})
    client = daemon.client()
    fetch_child(daemon)
    run = client.start(*RANGE)
    wait_until(lambda: client.status().current_task.days_done >= 1, timeout=30, what="a day written")
    client.cancel(run.run_id)
    last = daemon.wait_idle(timeout=5).last_run  # well within a day's delay: the child stopped waiting
    assert last.status == "cancelled"
    assert [e for e in daemon.events("fetch_process_exited")] == []  # stopped its stream, not killed


@pytest.mark.parametrize("fault", ["fail_dates", "timeout_dates"])
def test_a_days_failure_in_the_fetch_process_reads_as_the_sources_own(syncd_factory, fault):
    day = dt.date(2025, 9, 10)
    daemon = syncd_factory({"source": {"demo": {fault: [day.isoformat()]}}, "sync": {"retries": 0}})
    daemon.client().start(day, day)
    last = daemon.wait_idle().last_run
    assert last.status == "failed"
    error = next(d for d in daemon.client().days(day, day)).error
    expected = ("demo source: fetch of 2025-09-10 failed" if fault == "fail_dates"
                else "TimeoutError: demo source: fetch of 2025-09-10 timed out")
    assert expected in error, error
