"""Benchmark 3, scale: a multi-year full-market backfill; rows/s year by year, and the daemon's peak memory.

A long run (`--years`, 10 by default: about 2,430 trading days, 12.9M rows) goes through a
real syncd into a fresh database. Rows/s per year come from the daemon's own `day_synced`
log events (the time between consecutive events, credited to the year of the later day),
so the first year is compared with the last one as the table grows. Peak RSS is VmHWM of
the syncd process read just before it stops; a one-year run on another fresh daemon gives
the comparison that says whether memory depends on the range's length.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections import defaultdict
from typing import Any

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

FIRST_YEAR = 2015


def run(pg: Postgres, years: int) -> dict[str, Any]:
    long_range = (dt.date(FIRST_YEAR, 1, 1), dt.date(FIRST_YEAR + years - 1, 12, 31))
    short_range = (dt.date(FIRST_YEAR, 1, 1), dt.date(FIRST_YEAR, 12, 31) if years > 1 else dt.date(FIRST_YEAR, 3, 31))
    note(f"scale: {long_range[0]}..{long_range[1]} ({len(trading_days(*long_range))} trading days), "
         f"then {short_range[0]}..{short_range[1]} for the memory comparison")
    long = _backfill(pg, *long_range)
    short = _backfill(pg, *short_range)
    return _report(long, short, long_range, short_range)


def _backfill(pg: Postgres, start: dt.date, end: dt.date) -> dict[str, Any]:
    with pg.database() as dsn, Syncd(syncd_config(dsn)) as daemon:
        client = daemon.client()
        rss_start = proc_status_kb(daemon.pid, "VmRSS")
        samples: list[tuple[str | None, int]] = []
        last = [0.0]

        def sample() -> None:  # RSS about once a second, tagged with the day being synced
            if time.monotonic() - last[0] >= 1.0:
                last[0] = time.monotonic()
                task = client.status().current_task
                samples.append((task.current_date if task else None, proc_status_kb(daemon.pid, "VmRSS")))

        run, seconds = run_to_end(client, start, end, poll_s=0.2, on_poll=sample, dsn=dsn)
        peak = proc_status_kb(daemon.pid, "VmHWM")
        events = daemon.events("day_synced")
    per_year: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])  # year -> [rows, seconds]
    for before, after in itertools.pairwise(events):
        year = int(after["date"][:4])
        per_year[year][0] += after["rows"]
        per_year[year][1] += (dt.datetime.fromisoformat(after["timestamp"]) - dt.datetime.fromisoformat(before["timestamp"])).total_seconds()
    rss_by_year: dict[int, int] = {}
    for current, rss in samples:
        if current:
            rss_by_year[int(current[:4])] = max(rss_by_year.get(int(current[:4]), 0), rss)
    return {"rows": run.rows, "days": run.days_done, "seconds": seconds, "peak_kb": peak, "start_kb": rss_start,
            "per_year": {y: r / s for y, (r, s) in sorted(per_year.items()) if s > 0}, "rss_by_year": rss_by_year}


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


def _report(long: dict[str, Any], short: dict[str, Any], long_range: tuple[dt.date, dt.date],
            short_range: tuple[dt.date, dt.date]) -> dict[str, Any]:
    years = list(long["per_year"])
    rows = [(str(y), long["per_year"][y], long["per_year"][y] / long["per_year"][years[0]],
             round(long["rss_by_year"].get(y, 0) / 1024, 1)) for y in years]
    print_table(f"Backfill {long_range[0]}..{long_range[1]}: {long['rows']:,} rows, {long['days']} days in "
                f"{long['seconds']:.0f} s ({long['rows'] / long['seconds']:,.0f} rows/s overall)",
                ("year", "rows/s", "vs first year", "max RSS MB"), rows)
    print_table("syncd memory (peak RSS = VmHWM, read at the end of the run)", ("run", "rows", "RSS at start MB", "peak RSS MB"),
                [(f"{short_range[0]}..{short_range[1]}", short["rows"], mb(short["start_kb"]), mb(short["peak_kb"])),
                 (f"{long_range[0]}..{long_range[1]}", long["rows"], mb(long["start_kb"]), mb(long["peak_kb"]))])
    rates = list(long["per_year"].values())
    result = {
        "years": len(years), "rows": long["rows"], "rows_per_s_overall": round(long["rows"] / long["seconds"]),
        "rows_per_s_by_year": {str(y): round(r) for y, r in long["per_year"].items()},
        "last_year_vs_first_year": round(rates[-1] / rates[0], 3),
        "slowest_year_vs_fastest_year": round(min(rates) / max(rates), 3),
        "peak_rss_mb": mb(long["peak_kb"]), "short_run_peak_rss_mb": mb(short["peak_kb"]),
        "peak_rss_long_vs_short": round(long["peak_kb"] / short["peak_kb"], 3),
    }
    result["goal_flat_rows_per_s"] = result["last_year_vs_first_year"] >= 0.9
    result["goal_peak_rss_200mb"] = result["peak_rss_mb"] <= 200
    result["goal_rss_independent_of_range"] = result["peak_rss_long_vs_short"] <= 1.1
    return emit("scale", result)
