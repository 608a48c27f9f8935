"""Shared pieces of the benchmarks: PostgreSQL, fresh databases, real syncd processes, /proc readers, output.

PostgreSQL is $SYNCD_TEST_DSN when set (a role that may CREATE DATABASE), else one embedded
pgserver in a temporary folder for the whole bench run; every measurement gets a fresh
database, dropped afterwards. `Syncd` is a real `python -m syncd` process on its own short
temporary folder (ipc socket paths are limited to ~107 bytes), adapted from tests/conftest.py
without pytest. Output: aligned tables for people, one JSON line of ratios per benchmark.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from syncctl import SyncClient, SyncdUnreachable
from syncd.calendar import TradingCalendar
from syncd.config import resolve_endpoint, toml_dumps
from syncd.protocol import Run

REPO = Path(__file__).resolve().parent.parent
STOCKS = 5300
SEED = 1
PSQL = shutil.which("psql") or "/usr/bin/psql"


# --- PostgreSQL ---------------------------------------------------------------------------

class Postgres:
    """The server the benchmarks use; `database()` hands out fresh databases on it."""

    def __init__(self) -> None:
        self.admin_dsn = ""
        self._server: Any = None
        self._folder: str | None = None

    def __enter__(self) -> Postgres:
        if os.environ.get("SYNCD_TEST_DSN"):
            self.admin_dsn = os.environ["SYNCD_TEST_DSN"]
            return self
        import logging

        import pgserver

        logging.getLogger("pgserver").setLevel(logging.WARNING)
        self._folder = tempfile.mkdtemp(prefix="syncd-bench-pg-", dir="/tmp")
        self._server = pgserver.get_server(Path(self._folder), cleanup_mode="delete")
        self.admin_dsn = self._server.get_uri()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.cleanup()
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)

    @property
    def kind(self) -> str:
        return "external ($SYNCD_TEST_DSN)" if self._server is None else "embedded pgserver"

    def version(self) -> str:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh, empty database; its DSN. Dropped (connections and all) afterwards."""
        name = f"bench_{secrets.token_hex(5)}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        try:
            yield with_dbname(self.admin_dsn, name)
        finally:
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def with_dbname(dsn: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


# --- syncd processes ------------------------------------------------------------------------


def syncd_config(dsn: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """A full-market demo daemon on `dsn`, schedule off; `sections` replace whole sections."""
    config: dict[str, Any] = {
        "daemon": {"endpoint": "ipc://s.sock", "state_dir": "state"},
        "database": {"dsn": dsn},
        "source": {"name": "demo", "demo": {"stocks": STOCKS, "seed": SEED}},
        "schedule": {"enabled": False, "catch_up_on_start": False},
        "log": {"format": "json", "level": "info"},
    }
    config.update(sections)
    return config


class Syncd:
    """A real `python -m syncd` process on its own temporary folder; use as a context manager."""

    def __init__(self, config: dict[str, Any], switch_interval_s: float | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sdb-", dir="/tmp"))
        self.config_path = self.folder / "config.toml"
        self.config_path.write_text(toml_dumps(config))
        self.log_path = self.folder / "syncd.log"
        self.endpoint = resolve_endpoint(config["daemon"]["endpoint"], self.folder)
        # A what-if for the lead: the daemon with a shorter GIL switch interval (syncd itself is unchanged).
        self.launch = (["-m", "syncd"] if switch_interval_s is None else
                       ["-c", (f"import sys, runpy; sys.setswitchinterval({switch_interval_s!r}); "
                               "runpy.run_module('syncd', run_name='__main__', alter_sys=True)")])
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Syncd:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        env.pop("SYNCD_DSN", None)
        env.pop("SYNCD_ENDPOINT", None)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, *self.launch, "--config", str(self.config_path)],
                                         cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready(60.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self, timeout: float = 10.0) -> SyncClient:
        return SyncClient(self.endpoint, timeout=timeout)

    def _wait_ready(self, timeout: float) -> None:
        probe = self.client(timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"syncd exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                probe.ping()
                return
            except SyncdUnreachable:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"syncd did not answer ping within {timeout}s:\n{self.log_text()[-3000:]}") from None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == name:
                    out.append(event)
        return out

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_to_end(client: SyncClient, start: dt.date, end: dt.date, poll_s: float = 0.1,
               timeout: float = 3600.0, on_poll: Callable[[], None] | None = None) -> tuple[Run, float]:
    """Start a run and wait for it; (the run as recorded, seconds from the start request to its end).

    The end is the run's finished_at (database clock, same machine) when that is consistent
    with the polled end, so the poll interval does not blur short runs.
    """
    t0_wall, t0 = time.time(), time.perf_counter()
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
    finished = dt.datetime.fromisoformat(run.finished_at).timestamp() - t0_wall if run.finished_at else polled
    return run, finished if 0 < finished <= polled else polled


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
