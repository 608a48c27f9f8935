"""Benchmark: what `[source] fallback` costs while it is not used, on real syncd processes, side by side.

A daily sync is a one-day run. Each round starts three real daemons, each on a fresh database
of its own: `without` (the demo source, 5,300 stocks, no fallback), `with_fallback` (the same,
with `fallback = ["csv"]`: configured, built at start, never asked because the demo never fails
a day) and `without_again` (the first once more: the machine's own noise between two
identical daemons). Then, day after day, each daemon syncs that day as a one-day run, the
three in rotating order, so the three runs of a day meet the same machine. A run's time is its
own record (finished_at - started_at: admission, planning, fetch, the day's write and its
bookkeeping). Each day gives two paired ratios, with_fallback / without and without_again /
without; the goal is that the median of the first stays within the noise the second shows
(its median's distance from 1, or 3%, whichever is larger).

Then the provenance's own cost in the write path, which every day pays whether a fallback is
configured or not (the day's `source`, and clearing its `bar_sources` entries): the worker's
write alone (daywrite.write_day as the worker calls it, full-market payloads built off the
clock), as it is and with those two statements taken out (a what-if: `_forget_bar_sources` and
`_record_bar_sources` made no-ops) and as it is again (the noise), three neighbouring days
written the three ways in rotating order; the ratios are medians of those triples' paired ratios.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from syncd.config import DemoConfig
from syncd.db import connection, daywrite
from syncd.db.daywrite import DayWrite
from syncd.sources.demo import DemoSource

from . import pipeline
from .harness import SEED, STOCKS, Postgres, Syncd, emit, first_trading_days, median, note, print_table, run_to_end, syncd_config

FIRST_DAY = dt.date(2024, 3, 1)
VARIANTS = ("without", "with_fallback", "without_again")
NOISE_FLOOR = 0.03


def run(pg: Postgres, days_count: int, rounds: int) -> dict[str, Any]:
    days = first_trading_days(FIRST_DAY, days_count)
    note(f"fallback: {len(days)} one-day runs ({days[0]}..{days[-1]}) on each of 3 daemons, interleaved, {rounds} rounds")
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="sdb-fallback-", dir="/tmp") as empty:
        for r in range(rounds):
            with ExitStack() as stack:
                daemons = {}
                for variant in VARIANTS:
                    dsn = stack.enter_context(pg.database())
                    daemon = stack.enter_context(Syncd(syncd_config(dsn, source=_source(variant, Path(empty)))))
                    daemons[variant] = (daemon.client(), dsn)
                for i, day in enumerate(days):
                    for variant in VARIANTS[(r + i) % 3:] + VARIANTS[:(r + i) % 3]:
                        client, dsn = daemons[variant]
                        seconds[variant].append(run_to_end(client, day, day, poll_s=0.02, dsn=dsn)[1])
            note(f"round {r + 1}: " + ", ".join(f"{v} {median(seconds[v][-len(days):]) * 1000:.1f} ms" for v in VARIANTS))
    ratios = {v: [mine / base for mine, base in zip(seconds[v], seconds["without"])] for v in VARIANTS[1:]}
    used, again = median(ratios["with_fallback"]), median(ratios["without_again"])
    noise = max(NOISE_FLOOR, abs(again - 1))
    print_table(f"A daily sync (one-day run, 5,300 stocks), a fallback configured but unused: {len(days)} days x {rounds} rounds",
                ("daemon", "ms per one-day run (median)", "min", "max", "paired ratio to without (median)"),
                [(v, median(seconds[v]) * 1000, min(seconds[v]) * 1000, max(seconds[v]) * 1000,
                  1.0 if v == "without" else median(ratios[v])) for v in VARIANTS])
    bookkeeping = _provenance_in_the_write(pg, days, rounds)
    print_table(f"The write path, {len(days)} full-market days x {rounds} rounds: provenance's bookkeeping",
                ("write path", "ms per day (median)", "ratio to without it (median of triples)"),
                [("as it is (source, bar_sources cleared)", median(bookkeeping["with"]) * 1000, median(bookkeeping["ratio"])),
                 ("what-if: without provenance's statements", median(bookkeeping["without"]) * 1000, 1.0),
                 ("as it is, again (the noise)", median(bookkeeping["with_again"]) * 1000, median(bookkeeping["ratio_again"]))])
    result = {"days": len(days), "rounds": rounds, "ms_without": round(median(seconds["without"]) * 1000, 1),
              "ms_with_fallback": round(median(seconds["with_fallback"]) * 1000, 1),
              "ratio_with_fallback": round(used, 3), "ratio_same_daemon_again": round(again, 3),
              "noise": round(noise, 3), "goal_unused_fallback_within_noise": abs(used - 1) <= noise,
              "write_ms_per_day": round(median(bookkeeping["with"]) * 1000, 1),
              "write_ratio_provenance": round(median(bookkeeping["ratio"]), 3),
              "write_ratio_provenance_again": round(median(bookkeeping["ratio_again"]), 3),
              "goal_provenance_within_noise": abs(median(bookkeeping["ratio"]) - 1)
              <= max(NOISE_FLOOR, abs(median(bookkeeping["ratio_again"]) - 1))}
    return emit("fallback", result)


def _source(variant: str, empty: Path) -> dict[str, Any]:
    source: dict[str, Any] = {"name": "demo", "demo": {"stocks": 5300, "seed": 1}}
    if variant == "with_fallback":
        source |= {"fallback": ["csv"], "csv": {"path": str(empty)}}
    return source


def _provenance_in_the_write(pg: Postgres, days: list[dt.date], rounds: int) -> dict[str, list[float]]:
    """Seconds per day of the write path with provenance's statements, without them, and with them again (the
    noise): on one database and connection per round, each three neighbouring days written the three ways in
    rotating order; each triple gives the paired ratios with / without and with_again / without."""
    found: dict[str, list[float]] = {"with": [], "without": [], "with_again": [], "ratio": [], "ratio_again": []}
    source = DemoSource(DemoConfig(stocks=STOCKS, seed=SEED))
    ways = ("with", "without", "with_again")
    for r in range(rounds):
        with pg.database() as dsn:
            pipeline.prepare(dsn)
            with connection.connect(dsn) as conn:
                conn.execute("INSERT INTO sync_days (date, status, rows, run_id) SELECT unnest(%s::date[]), 'pending', 0, %s",
                             (days, pipeline.RUN_ID))
                for i in range(0, len(days) - 2, 3):
                    took: dict[str, float] = {}
                    shift = (r + i // 3) % 3
                    for variant, day in zip(ways[shift:] + ways[:shift], days[i:i + 3]):
                        payload = source.encoded(day)
                        with _no_provenance() if variant == "without" else nullcontext():
                            started = time.perf_counter()
                            daywrite.write_day(conn, DayWrite(day, pipeline.RUN_ID, mark_syncing=True, source="demo"), payload)
                            took[variant] = time.perf_counter() - started
                    for variant, spent in took.items():
                        found[variant].append(spent)
                    found["ratio"].append(took["with"] / took["without"])
                    found["ratio_again"].append(took["with_again"] / took["without"])
    return found


@contextmanager
def _no_provenance() -> Iterator[None]:
    saved = daywrite._forget_bar_sources, daywrite._record_bar_sources
    daywrite._forget_bar_sources = lambda *args: None  # type: ignore[assignment]
    daywrite._record_bar_sources = lambda *args: None  # type: ignore[assignment]
    try:
        yield
    finally:
        daywrite._forget_bar_sources, daywrite._record_bar_sources = saved
