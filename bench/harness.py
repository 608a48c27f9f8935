"""Shared pieces of the benchmarks: PostgreSQL, fresh databases, real syncd processes, /proc readers, output.

PostgreSQL is $SYNCD_TEST_DSN when set (a role that may CREATE DATABASE), else one embedded
pgserver in a temporary folder for the whole bench run; every measurement gets a fresh
database, dropped afterwards. `Syncd` is a real `python -m syncd` process on its own short
temporary folder: both come from `testkit/`, which the tests use too. Output: aligned tables
for people, one JSON line of ratios per benchmark.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psycopg

from syncctl import SyncClient
from syncd.calendar import TradingCalendar
from syncd.protocol import Run
from testkit import PostgresServer, SyncdProcess

REPO = Path(__file__).resolve().parent.parent
STOCKS = 5300
SEED = 1
PSQL = shutil.which("psql") or "/usr/bin/psql"


# --- PostgreSQL and syncd processes (testkit/, shared with the tests) ------------------------


class Postgres(PostgresServer):
    """The server the benchmarks use; `database()` hands out fresh databases on it."""

    def __init__(self) -> None:
        super().__init__(prefix="syncd-bench-pg-")

    def database(self) -> AbstractContextManager[str]:
        return self.fresh_database(prefix="bench_")


def syncd_config(dsn: str, compact: bool = False, **sections: dict[str, Any]) -> dict[str, Any]:
    """A full-market demo daemon on `dsn`, schedule off; `sections` replace whole sections. Closed years are
    compacted only with `compact` (the scale and readers benchmarks): elsewhere the table keeps the layout the
    \\copy baselines load, and no rewrite runs in the background of what is measured."""
    config: dict[str, Any] = {
        "daemon": {"endpoint": "ipc://s.sock", "state_dir": "state"},
        "database": {"dsn": dsn, "compact_closed_years": compact},
        "source": {"name": "demo", "demo": {"stocks": STOCKS, "seed": SEED}},
        "schedule": {"enabled": False, "catch_up_on_start": False},
        "log": {"format": "json", "level": "info"},
    }
    config.update(sections)
    return config


def Syncd(config: dict[str, Any], switch_interval_s: float | None = None) -> AbstractContextManager[SyncdProcess]:  # noqa: N802 - reads as the class it stands for
    """A started real daemon in a temporary folder; `switch_interval_s` is a what-if: the daemon
    with another GIL switch interval (syncd itself unchanged)."""
    launch = None if switch_interval_s is None else [
        "-c", (f"import sys, runpy; sys.setswitchinterval({switch_interval_s!r}); "
               "runpy.run_module('syncd', run_name='__main__', alter_sys=True)")]
    return SyncdProcess.in_temp_folder(config, launch=launch)


def client_processes() -> multiprocessing.context.ForkServerContext:
    """The multiprocessing context for the benchmarks' client processes (bench/control.py, bench/metrics.py): each
    client is a process of its own, forked from one server process that imported the benchmark modules once
    ("forkserver", the modules preloaded). Under "spawn" each of 20 clients imported them again, 0.4 s of CPU
    apiece: 10-15 s a burst on a shared 2-core machine, all of it before the clock started, for nothing."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bench.control", "bench.metrics"])
    return context


def run_to_end(client: SyncClient, start: dt.date, end: dt.date, poll_s: float = 0.1,
               timeout: float = 3600.0, on_poll: Callable[[], None] | None = None,
               dsn: str | None = None) -> tuple[Run, float]:
    """Start a run and wait for it; (the run as recorded, its duration in seconds).

    With `dsn`, the duration is the run's own record, finished_at - started_at (the database's clock,
    microseconds: from admission to the run's end); else from the start request to the poll that saw
    it end (the wire's times have second precision, too coarse for a run of a few seconds).
    """
    t0 = time.perf_counter()
    run_id = client.start(start, end, requested_by="bench").run_id
    deadline = t0 + timeout
    while True:
        status = client.status()
        if status.state == "idle" and status.last_run is not None and status.last_run.run_id == run_id:
            polled = time.perf_counter() - t0
            run = status.last_run
            break
        if time.perf_counter() > deadline:
            raise RuntimeError(f"run {run_id} did not finish within {timeout}s")
        if on_poll is not None:
            on_poll()
        time.sleep(poll_s)
    if run.status != "succeeded":
        raise RuntimeError(f"run {run_id} ended {run.status}: {run.error}")
    if dsn is None:
        return run, polled
    with psycopg.connect(dsn) as conn:
        seconds = conn.execute("SELECT extract(epoch FROM finished_at - started_at)::float8 FROM sync_runs WHERE run_id = %s",
                               (run_id,)).fetchone()[0]
    return run, seconds


def trading_days(start: dt.date, end: dt.date) -> list[dt.date]:
    """The trading days syncd itself plans for [start, end] (built-in calendar, demo source)."""
    return TradingCalendar().trading_days(start, end)


def first_trading_days(start: dt.date, count: int) -> list[dt.date]:
    days = trading_days(start, start + dt.timedelta(days=count * 2 + 30))
    return days[:count]


# --- /proc --------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status: VmRSS (now), VmHWM (peak RSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def scheduled_seconds(pid: int) -> tuple[float, float] | None:
    """A process's seconds on a CPU and seconds waiting for one (runnable, not running: the machine's
    contention), from /proc/PID/schedstat; None when it is gone or the kernel keeps no such counters."""
    try:
        on_cpu, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return None
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of all threads: how often the process woke up."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total


# --- the machine and the output -------------------------------------------------------------------

def machine_info(pg: Postgres) -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = proc_meminfo_kb("MemTotal")
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": model, "ram_gib": round(mem_kb / 1024 / 1024, 1),
            "postgresql": pg.version(), "database": pg.kind, "python": platform.python_version(),
            "psycopg": psycopg.__version__, "psql": psql_version()}


def proc_meminfo_kb(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def psql_version() -> str:
    try:
        return subprocess.run([PSQL, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "missing"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns of numbers right-aligned; the first column and a last `note` column left-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    left = {0} | ({len(headers) - 1} if headers[-1] == "note" else set())

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    print(f"\n{title}")
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def emit(bench: str, result: dict[str, Any]) -> dict[str, Any]:
    """Print the benchmark's one JSON line (ratios and the goals they are judged by)."""
    line = {"bench": bench, **result}
    print(json.dumps(line, sort_keys=False), flush=True)
    return line


def note(text: str) -> None:
    print(f"  {text}", flush=True)
