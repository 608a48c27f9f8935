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
"""

from __future__ import annotations

import datetime as dt
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .harness import Postgres, Syncd, emit, first_trading_days, median, note, print_table, run_to_end, syncd_config

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
    result = {"days": len(days), "rounds": rounds, "ms_without": round(median(seconds["without"]) * 1000, 1),
              "ms_with_fallback": round(median(seconds["with_fallback"]) * 1000, 1),
              "ratio_with_fallback": round(used, 3), "ratio_same_daemon_again": round(again, 3),
              "noise": round(noise, 3), "goal_unused_fallback_within_noise": abs(used - 1) <= noise}
    return emit("fallback", result)


def _source(variant: str, empty: Path) -> dict[str, Any]:
    source: dict[str, Any] = {"name": "demo", "demo": {"stocks": 5300, "seed": 1}}
    if variant == "with_fallback":
        source |= {"fallback": ["csv"], "csv": {"path": str(empty)}}
    return source
