"""Cancel stops, on real daemons: after a cancel (the wire's, or SIGTERM) is accepted no further day is written.

For each source (demo, csv, and a by_stock source implementing the protocol, tests/fakesource.py)
the writer is held at a day's write: the test holds daily_bars in SHARE mode, so the day's write
transaction is open (past the run lock's fence) and waiting while the fast source has filled the
read-ahead (or the stage). The cancel arrives then; once released, that day rolls back and no
later day is written, whatever was fetched ahead.
"""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import BASE_CONFIG, SyncdProcess, merge, wait_until
from daemons import SpecialSyncd

from syncd.config import DemoConfig
from syncd.sources.demo import DemoSource

TWO_DAYS = ("2025-10-09", "2025-10-10")
LONG = ("2025-09-01", "2025-10-31")  # 39 trading days
STOCKS = 300


@pytest.fixture
def daemon_on(database: str, short_tmp: Path) -> Iterator[Callable[[str], SyncdProcess]]:
    """daemon_on("demo" | "csv" | "by_stock") -> a started syncd on that source, fast (no delays)."""
    made: list[SyncdProcess] = []

    def start(kind: str) -> SyncdProcess:
        folder = short_tmp / kind
        folder.mkdir()
        config = merge(BASE_CONFIG, {"database": {"dsn": database}, "source": {"demo": {"stocks": STOCKS}}})
        if kind == "csv":
            write_csv_days(folder / "data", LONG)
            config = merge(config, {"source": {"name": "csv", "csv": {"path": "data"}}})
        if kind == "by_stock":
            process: SyncdProcess = SpecialSyncd(folder, config, fake_source={"stocks": STOCKS})
        else:
            process = SyncdProcess(folder, config)
        made.append(process)
        return process.start()

    yield start
    for process in made:
        process.stop()


def write_csv_days(folder: Path, span: tuple[str, str]) -> None:
    folder.mkdir()
    source = DemoSource(DemoConfig(stocks=STOCKS))
    day, last = dt.date.fromisoformat(span[0]), dt.date.fromisoformat(span[1])
    while day <= last:
        if day.weekday() < 5:
            lines = ["code,open,high,low,close,pre_close,volume,amount,turnover,pct_change"]
            lines += [",".join(str(v) for v in row[:10]) for row in source.rows_for(day)]  # no adj_factor in csv
            (folder / f"{day}.csv").write_text("\n".join(lines) + "\n")
        day += dt.timedelta(days=1)


@contextmanager
def day_writes_held(dsn: str) -> Iterator[None]:
    """Hold daily_bars against writes (SHARE mode): a day's write transaction opens, passes the run lock's
    fence, then waits at its DELETE. (Holding the write fence itself would not do: a run admitted while
    some session holds it takes that session for a stray write of a run that lost the lock, and ends it.)"""
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            conn.execute("LOCK TABLE daily_bars IN SHARE MODE")
            yield


def a_write_is_waiting(dsn: str) -> bool:
    rows = query(dsn, "SELECT count(*) FROM pg_locks WHERE relation = 'daily_bars'::regclass AND NOT granted")
    return rows[0][0] > 0


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def written_days(dsn: str) -> list[dt.date]:
    return [d for (d,) in query(dsn, "SELECT DISTINCT trade_date FROM daily_bars ORDER BY 1")]


def recorded_run(dsn: str, run_id: str) -> tuple[str, int, int, int]:
    return query(dsn, "SELECT status, days_done, trading_days, rows FROM sync_runs WHERE run_id = %s", run_id)[0]


@pytest.mark.parametrize("kind", ["demo", "csv", "by_stock"])
def test_a_two_day_web_batch_cancelled_before_its_first_day_finished_writes_nothing(daemon_on, database, kind):
    daemon = daemon_on(kind)
    client = daemon.client()
    with day_writes_held(database):
        run = client.start(*TWO_DAYS, task_type="web_batch", requested_by="web:test")
        wait_until(lambda: a_write_is_waiting(database), what="the first day's write to wait at the fence")
        assert client.cancel(run.run_id).state == "cancelling"
    last = daemon.wait_idle().last_run
    assert (last.run_id, last.status, last.days_done, last.rows) == (run.run_id, "cancelled", 0, 0)
    assert recorded_run(database, run.run_id) == ("cancelled", 0, 2, 0)
    assert written_days(database) == []
    assert {d.status for d in client.days(*TWO_DAYS)} == {"pending"}
    assert query(database, "SELECT count(*) FROM sync_stage") == [(0,)]


@pytest.mark.parametrize("kind", ["demo", "csv", "by_stock"])
def test_sigterm_during_a_days_write_rolls_it_back_and_the_daemon_exits_cancelled(daemon_on, database, kind):
    daemon = daemon_on(kind)
    with day_writes_held(database):
        run = daemon.client().start(*TWO_DAYS, task_type="web_batch")
        wait_until(lambda: a_write_is_waiting(database), what="the first day's write to wait at the fence")
        daemon.proc.send_signal(signal.SIGTERM)
        stopping = wait_until(lambda: daemon.events("daemon_stopping"), what="the daemon to accept SIGTERM")[0]
        assert stopping["cancelled_run"] == run.run_id
    assert daemon.proc.wait(timeout=10) == 0
    assert recorded_run(database, run.run_id) == ("cancelled", 0, 2, 0)
    assert written_days(database) == []


@pytest.mark.parametrize("kind", ["demo", "by_stock"])
def test_a_cancel_mid_run_commits_no_day_after_it_with_the_read_ahead_full(daemon_on, database, kind):
    daemon = daemon_on(kind)
    client = daemon.client()
    run = client.start(*LONG)
    wait_until(lambda: (t := client.status().current_task) is not None and t.days_done >= 3, what="three days written")
    with day_writes_held(database):
        wait_until(lambda: a_write_is_waiting(database), what="a day's write to wait at the fence")
        done = written_days(database)  # the writer is held: nothing commits meanwhile
        client.cancel()
    last = daemon.wait_idle().last_run
    assert last.status == "cancelled" and last.days_done == len(done) < 39
    assert written_days(database) == done  # the held day rolled back; nothing later was written
    assert recorded_run(database, run.run_id)[:2] == ("cancelled", len(done))
    statuses = {d.date: d.status for d in client.days(*LONG)}
    assert sorted(dt.date.fromisoformat(d) for d, s in statuses.items() if s == "success") == done
    assert "syncing" not in statuses.values()
