"""Benchmark 4, idle: what a syncd that has nothing to do costs, in CPU seconds, wake-ups and memory.

The daemon runs as in production (schedule enabled, both jobs set 12 hours away so none
fires during the measurement, demo source of 5,300 stocks, JSON logs) and is left alone for
`seconds` after a short settling pause. CPU is utime + stime of all its threads from
/proc/PID/stat (10 ms ticks), wake-ups are its threads' context switches, memory is VmRSS.
"""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from typing import Any

from .harness import (
    Postgres,
    Syncd,
    context_switches,
    cpu_seconds,
    emit,
    note,
    print_table,
    proc_status_kb,
    syncd_config,
)

SETTLE_S = 2.0
ZONE = "Asia/Shanghai"


def run(pg: Postgres, seconds: float) -> dict[str, Any]:
    note(f"idle: a scheduled daemon left alone for {seconds:g} s")
    away = dt.datetime.now(zoneinfo.ZoneInfo(ZONE)) + dt.timedelta(hours=12)
    schedule = {"enabled": True, "timezone": ZONE, "daily_at": away.strftime("%H:%M"),
                "missing_at": (away + dt.timedelta(minutes=30)).strftime("%H:%M"), "catch_up_on_start": False}
    with pg.database() as dsn, Syncd(syncd_config(dsn, schedule=schedule)) as daemon:
        time.sleep(SETTLE_S)
        cpu0, switches0, t0 = cpu_seconds(daemon.pid), context_switches(daemon.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, switches1, t1 = cpu_seconds(daemon.pid), context_switches(daemon.pid), time.monotonic()
        rss_kb, threads = proc_status_kb(daemon.pid, "VmRSS"), proc_status_kb(daemon.pid, "Threads")
        answers = daemon.client().ping().pid == daemon.pid
    elapsed = t1 - t0
    cpu = cpu1 - cpu0
    print_table(f"Idle syncd over {elapsed:.0f} s", ("measure", "value"),
                [("CPU seconds (utime + stime)", round(cpu, 2)), ("CPU % of one core", round(cpu / elapsed * 100, 3)),
                 ("context switches per second (all threads)", round((switches1 - switches0) / elapsed, 2)),
                 ("RSS MB", round(rss_kb / 1024, 1)), ("threads", threads), ("still answers ping", answers)])
    result = {"seconds": round(elapsed, 1), "cpu_seconds": round(cpu, 3), "cpu_fraction": round(cpu / elapsed, 5),
              "wakeups_per_s": round((switches1 - switches0) / elapsed, 2), "rss_mb": round(rss_kb / 1024, 1),
              "goal_cpu_about_0": cpu / elapsed <= 0.001}
    return emit("idle", result)
