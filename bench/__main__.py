"""`python -m bench [--quick] [--only NAMES] [...]`: run the benchmarks and print their tables and JSON lines.

Run from the repository root with the project's Python (syncd importable). The default run has
a budget of 20 minutes on a 2-core machine, `--quick` (smoke use) one of 3 minutes: the
summary says whether the run stayed within it (`budget_s`, `within_budget`; judged for a
whole run at the default sizes) and each benchmark's seconds (`seconds_by_bench`).
The last line is one JSON object with the machine and every benchmark's ratios and goals.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from . import control, fallback, fetchplan, idle, load, metrics, readers, reconcile, scale
from .harness import Postgres, machine_info

BENCHES = ("load", "control", "metrics", "scale", "readers", "idle", "fetchplan", "reconcile", "fallback")
# The run's time limits (issue 23): the whole run with the default sizes, and with --quick.
BUDGET_S = {"full": 1200, "quick": 180}
# fetch_stocks / fetch_long_stocks: the by-day sources' requests are per day whatever the market's size, akshare's
# by_stock ones two a stock (and its snapshot one page a hundred stocks), so 300 and 50 stocks show what 5,300 would.
FULL = {"days": 60, "rounds": 3, "requests": 100, "years": 20, "idle_seconds": 40.0, "poll_seconds": 30.0,
        "reader_seconds": 20.0, "backfill_days": 750, "fetch_stocks": 300, "fetch_long_stocks": 50,
        "fetch_years": (0, 1, 20), "reconcile_days": 20, "fallback_days": 24}
# A smoke run under 3 minutes: one year is the small history the readers (compat view) and bytes a bar are measured
# on; one round of each alternation; the 20-year request counts are left out (minutes even on a small market).
QUICK = {"days": 10, "rounds": 1, "requests": 40, "years": 1, "idle_seconds": 5.0, "poll_seconds": 5.0,
         "reader_seconds": 3.0, "backfill_days": 30, "fetch_stocks": 50, "fetch_long_stocks": 50,
         "fetch_years": (0, 1), "reconcile_days": 3, "fallback_days": 3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="syncd benchmarks: tables and JSON lines of ratios.")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run (under 3 minutes)")
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--days", type=int, help=f"load: trading days synced (default {FULL['days']}, quick {QUICK['days']})")
    parser.add_argument("--rounds", type=int, help=f"load, metrics: alternating rounds (default {FULL['rounds']}, quick {QUICK['rounds']})")
    parser.add_argument("--requests", type=int, help=f"control, metrics: requests per client (default {FULL['requests']}, quick {QUICK['requests']})")
    parser.add_argument("--years", type=int, help=f"scale, readers: years backfilled from 2005 (default {FULL['years']}, quick {QUICK['years']})")
    parser.add_argument("--reader-seconds", type=float, help=f"readers: seconds measured idle (default {FULL['reader_seconds']:g}, "
                        f"quick {QUICK['reader_seconds']:g})")
    parser.add_argument("--backfill-days", type=int, help=f"readers: trading days backfilled while they read (default "
                        f"{FULL['backfill_days']}, quick {QUICK['backfill_days']})")
    parser.add_argument("--poll-seconds", type=float, help=f"control: seconds the one polling client runs during the sync "
                        f"(default {FULL['poll_seconds']:g}, quick {QUICK['poll_seconds']:g})")
    parser.add_argument("--idle-seconds", type=float, help=f"idle: seconds measured (default {FULL['idle_seconds']:g}, quick {QUICK['idle_seconds']:g})")
    parser.add_argument("--fetch-stocks", type=int, help=f"fetchplan: stocks for a day and a year (default {FULL['fetch_stocks']}, quick {QUICK['fetch_stocks']})")
    parser.add_argument("--fetch-long-stocks", type=int, help=f"fetchplan: stocks for 20 years (default {FULL['fetch_long_stocks']}, quick {QUICK['fetch_long_stocks']})")
    parser.add_argument("--fallback-days", type=int, help=f"fallback: one-day runs per daemon (default {FULL['fallback_days']}, "
                        f"quick {QUICK['fallback_days']})")
    parser.add_argument("--json-out", metavar="FILE", help="also write the final JSON object to FILE")
    args = parser.parse_args(argv)
    sizes = {**(QUICK if args.quick else FULL), **{k: v for k, v in vars(args).items() if k in FULL and v is not None}}
    chosen = [name.strip() for name in args.only.split(",")] if args.only else list(BENCHES)
    unknown = [name for name in chosen if name not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    started = time.monotonic()
    seconds: dict[str, int] = {}
    with Postgres() as pg:
        machine = machine_info(pg)
        print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), flush=True)
        summary: dict[str, Any] = {"bench": "summary", "machine": machine, "sizes": sizes}
        kept: dict[str, Any] = {}
        for name in chosen:
            if name == "readers" and "readers" in kept:
                summary[name] = kept["readers"]  # measured on the scale benchmark's database (below)
                continue
            began = time.monotonic()
            summary[name] = _run(name, pg, sizes, chosen, kept)
            seconds[name] = round(time.monotonic() - began)
            print(f"  ({name}: {seconds[name]} s)", flush=True)
    summary["seconds"] = round(time.monotonic() - started)
    summary["seconds_by_bench"] = seconds  # readers' are inside scale's when both run
    summary.update(_budget(summary["seconds"], args.quick, whole=chosen == list(BENCHES) and sizes == (QUICK if args.quick else FULL)))
    summary["goals"] = {f"{name}.{key[5:]}": value for name in chosen for key, value in summary[name].items()
                        if key.startswith("goal_")}
    line = json.dumps(summary)
    print(line, flush=True)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as out:
            out.write(line + "\n")
    return 0


def _budget(seconds: int, quick: bool, whole: bool) -> dict[str, Any]:
    """Whether the run stayed within its time limit; judged only for a whole run at the default sizes."""
    budget = BUDGET_S["quick" if quick else "full"]
    if not whole:
        print(f"run: {seconds} s (a partial or resized run: its budget is not judged)", flush=True)
        return {"budget_s": None, "within_budget": None}
    print(f"run: {seconds} s of a {budget} s budget ({'within' if seconds <= budget else 'OVER'})", flush=True)
    return {"budget_s": budget, "within_budget": seconds <= budget}


def _run(name: str, pg: Postgres, sizes: dict[str, Any], chosen: list[str], kept: dict[str, Any]) -> dict[str, Any]:
    print(f"\n== {name} ==", flush=True)
    match name:
        case "load":
            return load.run(pg, sizes["days"], sizes["rounds"])
        case "control":
            return control.run(pg, sizes["requests"], poll_seconds=sizes["poll_seconds"])
        case "metrics":
            return metrics.run(pg, sizes["requests"], sizes["rounds"])
        case "scale":
            if "readers" not in chosen:
                return scale.run(pg, sizes["years"])

            def readers_on(dsn: str) -> None:  # the readers measured on the long backfill's database, before it goes
                print("\n== readers ==", flush=True)
                kept["readers"] = readers.run(pg, sizes["years"], sizes["reader_seconds"], sizes["backfill_days"], dsn=dsn)

            return scale.run(pg, sizes["years"], keep=readers_on)
        case "readers":
            return readers.run(pg, sizes["years"], sizes["reader_seconds"], sizes["backfill_days"])
        case "idle":
            return idle.run(pg, sizes["idle_seconds"])
        case "fetchplan":
            return fetchplan.run(sizes["fetch_stocks"], sizes["fetch_long_stocks"], sizes["fetch_years"])
        case "reconcile":
            return reconcile.run(pg, sizes["reconcile_days"], sizes["fetch_stocks"])
        case "fallback":
            return fallback.run(pg, sizes["fallback_days"], sizes["rounds"])
    raise ValueError(name)


if __name__ == "__main__":
    sys.exit(main())
