"""Benchmark 3, scale: a multi-year full-market backfill; rows/s year by year, and the memory of the daemon and its child.

A long run (`--years`, 20 by default: 2005-2024, about 4,860 trading days and 25.8M rows) goes
through a real syncd into a fresh database. Rows/s per year come from the daemon's own
`day_synced` log events (the time between consecutive events, credited to the year of the
later day), so the first year is compared with the last one as the table grows. Memory is the
peak RSS (VmHWM) of the syncd process and of the fetch process it owns (syncd/sources/fetchproc.py), read
just before the daemon stops, and their sum, the goal's measure (it counts the pages the two
share, the interpreter's own, twice); PSS (each shared page split between its users) is
sampled beside it. A one-year run on another fresh daemon says whether memory depends on the
range's length. With `keep`, the long run's database is handed to it before it is dropped
(bench/readers.py measures its readers on it).
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import storage
from .harness import (
    Postgres,
    Syncd,
    emit,
    note,
    print_table,
    proc_status_kb,
    run_to_end,
    syncd_config,
    trading_days,
)

FIRST_YEAR = 2005
RSS_GOAL_MB = 100


def run(pg: Postgres, years: int, keep: Callable[[str], Any] | None = None) -> dict[str, Any]:
    long_range = (dt.date(FIRST_YEAR, 1, 1), dt.date(FIRST_YEAR + years - 1, 12, 31))
    short_range = (dt.date(FIRST_YEAR, 1, 1), dt.date(FIRST_YEAR, 12, 31) if years > 1 else dt.date(FIRST_YEAR, 3, 31))
    note(f"scale: {long_range[0]}..{long_range[1]} ({len(trading_days(*long_range))} trading days), "
         f"then {short_range[0]}..{short_range[1]} for the memory comparison")
    long = _backfill(pg, *long_range, keep=keep, settle=True)
    short = _backfill(pg, *short_range)
    return _report(long, short, long_range, short_range)


def children(pid: int) -> list[int]:
    """The processes `pid` started, from any of its threads (the worker thread starts the fetch process)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def pss_kb(pid: int) -> int:
    """Proportional set size: resident pages, each shared one divided among the processes that map it."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _backfill(pg: Postgres, start: dt.date, end: dt.date, keep: Callable[[str], Any] | None = None,
              settle: bool = False) -> dict[str, Any]:
    """The run through a real daemon; with `settle`, the daemon then compacts the closed years, and what a stored
    bar costs is measured before and after (bench/storage.py)."""
    with pg.database() as dsn:
        with Syncd(syncd_config(dsn, compact=settle)) as daemon:
            client = daemon.client()
            rss_start = proc_status_kb(daemon.pid, "VmRSS")
            samples: list[tuple[str | None, int]] = []
            pss_peak = [0]
            last = [0.0]

            counters = storage.ServerCounters(dsn)

            def sample() -> None:  # about once a second: RSS tagged with the day being synced, PSS of both
                if time.monotonic() - last[0] >= 1.0:
                    last[0] = time.monotonic()
                    task = client.status().current_task
                    pids = [daemon.pid, *children(daemon.pid)]
                    samples.append((task.current_date if task else None, sum(proc_status_kb(p, "VmRSS") for p in pids)))
                    pss_peak[0] = max(pss_peak[0], sum(pss_kb(p) for p in pids))
                    counters.sample(int(task.current_date[:4]) if task and task.current_date else None)

            run, seconds = run_to_end(client, start, end, poll_s=0.2, on_poll=sample, dsn=dsn)
            counters.sample(None)
            server = counters.by_year()
            counters.close()
            peak = proc_status_kb(daemon.pid, "VmHWM")
            child_peak = sum(proc_status_kb(p, "VmHWM") for p in children(daemon.pid))
            events = daemon.events("day_synced")
            written = storage.bytes_per_bar(dsn, vacuum=False) if settle else None  # every year as written
            compacted = storage.settle(daemon, dsn) if settle else None
        stored = storage.bytes_per_bar(dsn) if settle else None
        if keep is not None:
            keep(dsn)
    per_year: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])  # year -> [rows, seconds]
    for before, after in itertools.pairwise(events):
        year = int(after["date"][:4])
        per_year[year][0] += after["rows"]
        per_year[year][1] += (dt.datetime.fromisoformat(after["timestamp"]) - dt.datetime.fromisoformat(before["timestamp"])).total_seconds()
    rss_by_year: dict[int, int] = {}
    for current, rss in samples:
        if current:
            rss_by_year[int(current[:4])] = max(rss_by_year.get(int(current[:4]), 0), rss)
    return {"rows": run.rows, "days": run.days_done, "seconds": seconds, "peak_kb": peak, "child_peak_kb": child_peak,
            "pss_peak_kb": pss_peak[0], "start_kb": rss_start, "written": written, "compaction": compacted, "stored": stored,
            "server": server,
            "per_year": {y: r / s for y, (r, s) in sorted(per_year.items()) if s > 0}, "rss_by_year": rss_by_year}


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


def _report(long: dict[str, Any], short: dict[str, Any], long_range: tuple[dt.date, dt.date],
            short_range: tuple[dt.date, dt.date]) -> dict[str, Any]:
    years = list(long["per_year"])
    server = long["server"]
    rows = [(str(y), long["per_year"][y], long["per_year"][y] / long["per_year"][years[0]],
             round(long["rss_by_year"].get(y, 0) / 1024, 1),
             *(server.get(y, {}).get(k, "") for k in ("hit_ratio", "blocks_read", "checkpoints", "buffers_backend",
                                                      "wal_mb", "wal_fpi", "autovacuums"))) for y in years]
    print_table(f"Backfill {long_range[0]}..{long_range[1]}: {long['rows']:,} rows, {long['days']} days in "
                f"{long['seconds']:.0f} s ({long['rows'] / long['seconds']:,.0f} rows/s overall); the server's counters "
                "while each year was written", ("year", "rows/s", "vs first year", "max RSS MB (daemon + child)",
                                                "cache hit ratio", "blocks read", "checkpoints", "buffers written by backends",
                                                "WAL MB", "full-page images", "autovacuums"), rows)
    print_table("Memory: peak RSS (VmHWM, read at the end of the run) of syncd and its fetch process; PSS sampled each second",
                ("run", "rows", "syncd at start MB", "syncd peak MB", "fetch process peak MB", "together MB", "PSS peak MB"),
                [(f"{r[0]}..{r[1]}", d["rows"], mb(d["start_kb"]), mb(d["peak_kb"]), mb(d["child_peak_kb"]),
                  mb(d["peak_kb"] + d["child_peak_kb"]), mb(d["pss_peak_kb"]))
                 for r, d in ((short_range, short), (long_range, long))])
    rates = list(long["per_year"].values())
    together = long["peak_kb"] + long["child_peak_kb"]
    result = {
        "years": len(years), "rows": long["rows"], "rows_per_s_overall": round(long["rows"] / long["seconds"]),
        "rows_per_s_by_year": {str(y): round(r) for y, r in long["per_year"].items()},
        "last_year_vs_first_year": round(rates[-1] / rates[0], 3) if len(rates) > 1 else None,  # one year (--quick)
        "slowest_year_vs_fastest_year": round(min(rates) / max(rates), 3) if len(rates) > 1 else None,
        "peak_rss_mb": mb(together), "peak_rss_syncd_mb": mb(long["peak_kb"]),
        "peak_rss_fetch_process_mb": mb(long["child_peak_kb"]), "peak_pss_mb": mb(long["pss_peak_kb"]),
        "short_run_peak_rss_mb": mb(short["peak_kb"] + short["child_peak_kb"]),
        "peak_rss_long_vs_short": round(together / (short["peak_kb"] + short["child_peak_kb"]), 3),
    }
    written, stored = long["written"], long["stored"]
    print_table("Disk per stored bar (pg_total_relation_size of daily_bars' partitions / rows, after VACUUM)",
                ("state", "bytes a bar", "heap bytes a bar", "bars", "GB"),
                [("as written (every year day-ordered, (code, trade_date))", written["bytes_per_bar"],
                  written["heap_bytes_per_bar"], written["bars"], round(written["bytes"] / 1e9, 2)),
                 (f"closed years compacted ({long['compaction']['years']} in {long['compaction']['seconds']} s)",
                  stored["bytes_per_bar"], stored["heap_bytes_per_bar"], stored["bars"], round(stored["bytes"] / 1e9, 2))])
    result["bytes_per_bar_as_written"] = written["bytes_per_bar"]
    result["bytes_per_bar"] = stored["bytes_per_bar"]
    result["bytes_per_bar_by_layout"] = stored["by_layout"]
    result["compaction"] = long["compaction"]
    result["server_by_year"] = {str(y): v for y, v in server.items()}
    if len(rates) > 1:
        result["goal_flat_rows_per_s"] = result["last_year_vs_first_year"] >= 0.9
    else:
        note("one year backfilled: no later year to compare the first with (goal_flat_rows_per_s not judged)")
    result["goal_bytes_per_bar_160"] = stored["bytes_per_bar"] <= 160
    result[f"goal_peak_rss_{RSS_GOAL_MB}mb"] = result["peak_rss_mb"] <= RSS_GOAL_MB
    result["goal_rss_independent_of_range"] = result["peak_rss_long_vs_short"] <= 1.1
    return emit("scale", result)
