"""syncd's write path alone, in process: how much of a daemon's day is the write itself.

`write_only` writes each day as the worker does (daywrite.write_day with its `syncing` mark, the
run lock's fence on a lock session of its own, the demo's encoded payload, one connection),
timing only the writes: the payloads are built before each day's clock starts.
"""

from __future__ import annotations

import datetime as dt
import time

import psycopg

from syncd.config import DemoConfig
from syncd.db import connection, daywrite, migrations, runlock
from syncd.db.daywrite import DayWrite
from syncd.sources.demo import DemoSource

from .harness import SEED, STOCKS

RUN_ID = "bench-pipeline"


def prepare(dsn: str) -> None:
    """Schema by syncd's migrations, plus the sync_runs row a day write updates."""
    with connection.connect(dsn) as conn:
        migrations.migrate(conn)
        conn.execute("INSERT INTO sync_runs (run_id, task_type, status, start_date, end_date, total_days, started_at, "
                     "host, pid) VALUES (%s, 'manual', 'running', '2000-01-01', '2000-01-01', 1, now(), 'bench', 0)",
                     (RUN_ID,))


def write_only(dsn: str, days: list[dt.date]) -> float:
    """Only daywrite.write_day is timed; each day's payload is built before its clock starts (each day records
    its source and checks the run lock's fence, as the worker's do)."""
    source = DemoSource(DemoConfig(stocks=STOCKS, seed=SEED))
    spent = 0.0
    lock = runlock.RunLock.try_take(dsn, 10.0)
    if lock is None:
        raise RuntimeError("the run lock is held by another session")
    fence = runlock.RunFence(lock, RUN_ID)
    try:
        with connection.connect(dsn) as conn:
            conn.execute("INSERT INTO sync_days (date, status, rows, run_id) SELECT unnest(%s::date[]), 'pending', 0, %s",
                         (days, RUN_ID))
            for day in days:
                payload = source.encoded(day)
                started = time.perf_counter()
                daywrite.write_day(conn, DayWrite(day, RUN_ID, mark_syncing=True, source=source.name, fence=fence), payload)
                spent += time.perf_counter() - started
    finally:
        lock.release()
    return spent


def check(dsn: str, expected: int) -> None:
    with psycopg.connect(dsn) as conn:
        count = conn.execute("SELECT count(*) FROM daily_bars").fetchone()[0]
    if count != expected:
        raise RuntimeError(f"pipeline loaded {count} rows, expected {expected}")
