"""Benchmark 4, readers: the product's queries on a long history, alone and while a backfill writes.

The readers: "top 100 by pct_change on a day" (a random day); one stock's series over the last
10 years (a random stock; fewer years when the data is shorter) raw from daily_bars, through
daily_bars_qfq and through the compat view daily_stock_data (qfq prices); one stock's whole
series through daily_bars_qfq and through the compat view, qfq and raw (the raw one is the
same view's SQL with compat_adjust = "none", beside it), and its last 4 years both ways (the
issue's 4-year history, by partition pruning); and one stock's last 60 days (the
K-line read) through daily_bars_qfq and the compat view. Each reader has its own connection;
one thread takes them in turn, in a shuffled order each round, so no two readers overlap
(each figure comes from a run of its own, and the compat view is compared with
daily_bars_qfq side by side). Each query is timed from send to the last row received (not the
client's parsing of the values), so what is measured is the database's answer. Two phases on
the same database: idle, then while a real syncd backfills years before the data's first (new
partitions, the same indexes, the same machine).

The database is the scale benchmark's 20-year backfill when both run (bench/__main__.py hands
it over, its closed years compacted), else one this benchmark backfills itself (and waits for
the daemon to compact). Goals: one stock's 10-year qfq series within 10 ms (p50 idle); the
whole series and 4 years through the compat view within 2x daily_bars_qfq's (p50, qfq and raw); the last
60 days through the compat view within 5 ms (p50); every reader's p99 during the backfill
within 2x its idle p99.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from syncd.calendar import calendar_days
from syncd.db import connection, migrations, views
from syncd.sources.demo import demo_codes
from syncd.sources.democalendar import is_open

from . import storage
from .harness import STOCKS, Postgres, Syncd, emit, note, percentile, print_table, run_to_end, syncd_config, trading_days

SERIES_YEARS = 10
RAW_COMPAT = "bench_compat_raw"  # daily_stock_data's SQL with compat_adjust = "none", beside the qfq one
READERS: dict[str, str] = {
    "top 100 by pct_change on a day": "SELECT code, pct_change FROM daily_bars WHERE trade_date = %(day)s "
                                      "ORDER BY pct_change DESC LIMIT 100",
    "10 years, raw": "SELECT * FROM daily_bars WHERE code = %(code)s AND trade_date BETWEEN %(first)s AND %(last)s "
                     "ORDER BY trade_date",
    "10 years, qfq view": "SELECT * FROM daily_bars_qfq WHERE code = %(code)s AND trade_date BETWEEN %(first)s AND %(last)s "
                          "ORDER BY trade_date",
    "10 years, compat view": "SELECT * FROM daily_stock_data WHERE stock_code = %(code)s "
                             "AND trade_date BETWEEN %(first)s AND %(last)s ORDER BY trade_date",
    "whole series, qfq view": "SELECT * FROM daily_bars_qfq WHERE code = %(code)s ORDER BY trade_date",
    "whole series, compat view": "SELECT * FROM daily_stock_data WHERE stock_code = %(code)s ORDER BY trade_date",
    "whole series, compat view raw": f"SELECT * FROM {RAW_COMPAT} WHERE stock_code = %(code)s ORDER BY trade_date",
    "last 4 years, qfq view": "SELECT * FROM daily_bars_qfq WHERE code = %(code)s AND trade_date >= %(four)s ORDER BY trade_date",
    "last 4 years, compat view": "SELECT * FROM daily_stock_data WHERE stock_code = %(code)s AND trade_date >= %(four)s "
                                 "ORDER BY trade_date",
    "last 60 days, qfq view": "SELECT * FROM daily_bars_qfq WHERE code = %(code)s ORDER BY trade_date DESC LIMIT 60",
    "last 60 days, compat view": "SELECT * FROM daily_stock_data WHERE stock_code = %(code)s "
                                 "ORDER BY trade_date DESC LIMIT 60",
}
QFQ = "10 years, qfq view"
SERIES, COMPAT_SERIES, RAW_SERIES = "whole series, qfq view", "whole series, compat view", "whole series, compat view raw"
FOUR, COMPAT_FOUR = "last 4 years, qfq view", "last 4 years, compat view"  # the 4-year database, by pruning
LAST_60 = "last 60 days, compat view"


def run(pg: Postgres, years: int, seconds: float, backfill_days: int, dsn: str | None = None) -> dict[str, Any]:
    """Readers on `dsn` (a database the scale benchmark filled), or on one filled here with `years` from 2005."""
    if dsn is not None:
        return _measure(dsn, seconds, backfill_days)
    first = dt.date(2005, 1, 1)
    note(f"readers: backfilling {first.year}..{first.year + years - 1} to read from")
    with pg.database() as own, Syncd(syncd_config(own, compact=True)) as daemon:
        run_to_end(daemon.client(), first, dt.date(first.year + years - 1, 12, 31), poll_s=0.2)
        compacted = storage.settle(daemon, own)
        daemon.stop()
        stored = storage.bytes_per_bar(own)
        return {**_measure(own, seconds, backfill_days), "compaction": compacted, "storage": stored}


def _measure(dsn: str, seconds: float, backfill_days: int) -> dict[str, Any]:
    with connection.connect(dsn) as conn:
        migrations.migrate(conn, compat_view=True, compat_adjust="qfq")
        first, last = conn.execute("SELECT min(trade_date), max(trade_date) FROM daily_bars").fetchone()
        rows = conn.execute("SELECT count(*) FROM daily_bars").fetchone()[0]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE OR REPLACE VIEW {RAW_COMPAT} AS {views.compat_view_sql('none')}")
        conn.execute("VACUUM ANALYZE daily_bars")  # what autovacuum does to a table at rest (index-only reads need it)
    series = (max(first, dt.date(last.year - SERIES_YEARS + 1, 1, 1)), last)
    # The demo trades every weekday outside chinese_calendar's holidays, before its horizon (2004) too.
    backfill = [d for d in calendar_days(first - dt.timedelta(days=backfill_days * 2), first - dt.timedelta(days=1))
                if is_open(d)][-backfill_days:]
    note(f"readers: {rows:,} rows {first}..{last}; series {series[0]}..{series[1]}; {seconds:g} s idle, then during a "
         f"backfill of {len(backfill)} days {backfill[0]}..{backfill[-1]}")
    days = trading_days(first, last)
    idle = _readers(dsn, days, series, lambda stop: stop.wait(seconds))
    with Syncd(syncd_config(dsn, database={"dsn": dsn, "compat_view": True, "compat_adjust": "qfq",
                                           "compact_closed_years": False})) as daemon:
        client = daemon.client()

        def backfilling(stop: threading.Event) -> None:
            run_to_end(client, backfill[0], backfill[-1], poll_s=0.2)

        during = _readers(dsn, days, series, backfilling)
    return _report(idle, during, rows, first, last, series)


def _readers(dsn: str, days: list[dt.date], series: tuple[dt.date, dt.date],
             phase: Callable[[threading.Event], Any]) -> dict[str, list[float]]:
    """The readers in turn on one thread (each its own connection), back to back, while `phase` runs; ms."""
    stop = threading.Event()
    out: dict[str, list[float]] = {name: [] for name in READERS}
    codes = demo_codes(STOCKS)
    four = dt.date(series[1].year - 3, 1, 1)

    def reader() -> None:
        rng = random.Random(1)
        conns = {name: psycopg.connect(dsn, autocommit=True) for name in READERS}
        try:
            for name, conn in conns.items():
                conn.execute("SET jit = off")  # as syncd's own sessions: compiling these short queries costs more
                conn.execute(READERS[name], {"day": days[0], "code": codes[0], "first": series[0], "last": series[1],
                                             "four": four})
            order = list(READERS)
            while not stop.is_set():
                rng.shuffle(order)
                for name in order:
                    params = {"day": rng.choice(days), "code": rng.choice(codes), "first": series[0], "last": series[1],
                              "four": four}
                    started = time.perf_counter()
                    conns[name].execute(READERS[name], params)  # rows received, not parsed: the database's answer
                    out[name].append((time.perf_counter() - started) * 1000)
        finally:
            for conn in conns.values():
                conn.close()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        phase(stop)
    finally:
        stop.set()
        thread.join(120)
    return out


def _stats(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "p50": round(percentile(samples, 50), 2), "p99": round(percentile(samples, 99), 2),
            "max": round(max(samples), 2)}


def _report(idle: dict[str, list[float]], during: dict[str, list[float]], rows: int, first: dt.date, last: dt.date,
            series: tuple[dt.date, dt.date]) -> dict[str, Any]:
    table = []
    ratios: dict[str, float] = {}
    for name in READERS:
        a, b = _stats(idle[name]), _stats(during[name])
        ratios[name] = round(b["p99"] / a["p99"], 2)
        table.append((name, a["n"], a["p50"], a["p99"], b["n"], b["p50"], b["p99"], ratios[name]))
    print_table(f"Readers on {rows:,} rows ({first}..{last}), series {series[0]}..{series[1]}: latency in ms, idle and "
                "during a backfill", ("reader", "n idle", "p50", "p99", "n during", "p50", "p99", "p99 during / idle"), table)
    result: dict[str, Any] = {
        "rows": rows, "series_years": series[1].year - series[0].year + 1,
        "idle_ms": {name: _stats(idle[name]) for name in READERS},
        "during_backfill_ms": {name: _stats(during[name]) for name in READERS},
        "p99_during_vs_idle": ratios,
    }
    idle_p50 = {name: result["idle_ms"][name]["p50"] for name in READERS}
    result["compat_series_vs_qfq"] = round(idle_p50[COMPAT_SERIES] / idle_p50[SERIES], 2)
    result["compat_raw_series_vs_qfq"] = round(idle_p50[RAW_SERIES] / idle_p50[SERIES], 2)
    result["compat_4_years_vs_qfq"] = round(idle_p50[COMPAT_FOUR] / idle_p50[FOUR], 2)
    result["compat_last_60_days_ms"] = idle_p50[LAST_60]
    result["goal_qfq_series_10ms"] = idle_p50[QFQ] <= 10.0
    result["goal_compat_series_2x_qfq"] = max(result["compat_series_vs_qfq"], result["compat_raw_series_vs_qfq"],
                                              result["compat_4_years_vs_qfq"]) <= 2.0
    result["goal_compat_last_60_days_5ms"] = idle_p50[LAST_60] <= 5.0
    result["goal_p99_during_backfill_2x"] = all(ratio <= 2.0 for ratio in ratios.values())
    return emit("readers", result)
