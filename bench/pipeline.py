"""A what-if for the worker: fetch day N+1 while day N is written, measured in-process against the plain loop.

Both loops use the real DemoSource.rows_for and store.replace_day on one connection, as
syncd's worker does (bookkeeping rows included), without the daemon around them; and
`write_only` times replace_day alone (syncd's write path without its source). `serial`
is today's order (fetch a day, then write it); `prefetch` runs the fetches on one helper
thread behind a one-slot queue (at most three days of rows exist at once: one being
written, one waiting, one being generated). Generating
rows is pure Python, but the writer spends most of a day waiting on PostgreSQL with the GIL
released, so the two overlap. This is the design proposed for sync.py (see bench/README.md);
nothing in syncd uses it.
"""

from __future__ import annotations

import datetime as dt
import time

import psycopg

from syncd import store
from syncd.config import DemoConfig
from syncd.prefetch import read_ahead
from syncd.sources.demo import DemoSource

from .harness import SEED, STOCKS

RUN_ID = "bench-pipeline"


def prepare(dsn: str) -> None:
    """Schema by syncd's migrations, plus the sync_runs row replace_day updates."""
    with store.connect(dsn) as conn:
        store.migrate(conn)
        conn.execute("INSERT INTO sync_runs (run_id, task_type, status, start_date, end_date, total_days, started_at, "
                     "host, pid) VALUES (%s, 'manual', 'running', '2000-01-01', '2000-01-01', 1, now(), 'bench', 0)",
                     (RUN_ID,))


def write_only(dsn: str, days: list[dt.date]) -> float:
    """Only store.replace_day is timed; each day's rows are generated before its clock starts."""
    source = DemoSource(DemoConfig(stocks=STOCKS, seed=SEED))
    spent = 0.0
    with store.connect(dsn) as conn:
        for day in days:
            rows = source.rows_for(day)
            started = time.perf_counter()
            store.replace_day(conn, day, rows, RUN_ID)
            spent += time.perf_counter() - started
    return spent


def serial(dsn: str, days: list[dt.date]) -> float:
    source = DemoSource(DemoConfig(stocks=STOCKS, seed=SEED))
    with store.connect(dsn) as conn:
        started = time.perf_counter()
        for day in days:
            store.replace_day(conn, day, source.rows_for(day), RUN_ID)
        return time.perf_counter() - started


def prefetch(dsn: str, days: list[dt.date]) -> float:
    source = DemoSource(DemoConfig(stocks=STOCKS, seed=SEED))
    with store.connect(dsn) as conn:
        started = time.perf_counter()
        for day, rows in read_ahead((day, source.rows_for(day)) for day in days):
            store.replace_day(conn, day, rows, RUN_ID)
        return time.perf_counter() - started


def check(dsn: str, expected: int) -> None:
    with psycopg.connect(dsn) as conn:
        count = conn.execute("SELECT count(*) FROM daily_bars").fetchone()[0]
    if count != expected:
        raise RuntimeError(f"pipeline loaded {count} rows, expected {expected}")
