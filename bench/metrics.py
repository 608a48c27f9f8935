"""Benchmark: what Prometheus scrapes cost the control plane while a sync runs.

One daemon with `[metrics] listen`, a full-market sync at full speed, and 20 client
processes each calling `status` every 50 ms (bench/control.py's paced load), timing each
call. Meanwhile a scraper cycles through windows of WINDOW_S seconds: no scraping, one
scrape a second (Prometheus' usual interval is 15-60 s: 1/s is the goal's stress), ten a
second (headroom). Each call is attributed to the window it started in (CLOCK_MONOTONIC is
shared by the processes), so the three arms are interleaved every few seconds and the slow
drift of a shared machine (other work, the sync's own phases) falls on all of them alike.
Reported per arm: status latency, the p99 difference to the no-scrape arm (pooled, and the
median over rounds), the scrape's own duration and size, the sync's rows/s. Goal: at one
scrape a second, status p99 moves by at most 1 ms.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import random
import socket
import statistics
import threading
import time
import urllib.request
from typing import Any

from syncctl import SyncClient, SyncdError

from .control import CLIENTS, PACED_PERIOD_S, _wait_idle, _wait_rows
from .harness import Postgres, Syncd, emit, note, percentile, print_table, syncd_config

SYNC_RANGE = (dt.date(1992, 6, 1), dt.date(2024, 12, 31))  # ~32 years, under sync.max_days: outlasts a round
ARMS = (("no scrape", None), ("1 scrape/s", 1.0), ("10 scrapes/s", 0.1))
WINDOW_S = 3.0     # each arm's window; the arms take turns
GUARD_S = 0.1      # calls starting this soon after a window began are not counted (a scrape may spill over)
GOAL_P99_DELTA_MS = 1.0

Sample = tuple[float, float]  # (monotonic start, ms)


def run(pg: Postgres, requests: int, rounds: int) -> dict[str, Any]:
    calls = requests * 4  # per client per round: 4x control's, so each arm gets thousands of calls
    note(f"metrics: {rounds} rounds x {CLIENTS} clients x {calls} status calls, the arms ({', '.join(a for a, _ in ARMS)}) "
         f"taking {WINDOW_S:g} s turns, during a full-speed sync")
    port = _free_port()
    per_round: list[dict[str, list[float]]] = []
    scrapes: dict[str, list[tuple[float, int]]] = {arm: [] for arm, _ in ARMS}
    rows_per_s: dict[str, list[float]] = {arm: [] for arm, _ in ARMS}
    errors = 0
    with pg.database() as dsn, Syncd(syncd_config(dsn, metrics={"listen": f"127.0.0.1:{port}"})) as daemon:
        client = daemon.client()
        for _ in range(rounds):
            while True:  # a round counts only if one sync ran through all of it
                run_id = _keep_syncing(client)
                with Scraper(port, client) as scraper:
                    samples, failed = _burst(daemon.endpoint, CLIENTS, calls)
                if _current_run(client) == run_id:
                    break
                note("the sync ended during the round; measuring it again")
            per_round.append(scraper.attribute(samples))
            for arm, _ in ARMS:
                scrapes[arm] += scraper.scrapes[arm]
                rows_per_s[arm] += scraper.rows_per_s[arm]
            errors += failed + scraper.errors
        client.cancel()
        _wait_idle(client)
    return _report(per_round, scrapes, rows_per_s, errors, rounds, calls)


class Scraper:
    """Cycles the arms' windows on a thread, scraping /metrics at each arm's period; records the windows."""

    def __init__(self, port: int, client: SyncClient) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.client = client
        self.windows: list[tuple[float, float, str]] = []
        self.scrapes: dict[str, list[tuple[float, int]]] = {arm: [] for arm, _ in ARMS}  # (ms, bytes)
        self.rows_per_s: dict[str, list[float]] = {arm: [] for arm, _ in ARMS}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        turn = 0
        while not self._stop.is_set():
            arm, period = ARMS[turn % len(ARMS)]
            turn += 1
            rows_before, begin = self._rows(), time.monotonic()
            end = begin + WINDOW_S
            next_at = begin
            while not self._stop.is_set() and (now := time.monotonic()) < end - 0.05:
                if period is not None and now >= next_at:
                    self._scrape(arm)
                    next_at += period
                wake = min(end - 0.05, next_at if period is not None else end)
                self._stop.wait(max(0.0, wake - time.monotonic()))
            finished = time.monotonic()
            self.windows.append((begin, finished, arm))
            self.rows_per_s[arm].append((self._rows() - rows_before) / (finished - begin))

    def _scrape(self, arm: str) -> None:
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                size = len(response.read())
        except OSError:
            self.errors += 1
            return
        self.scrapes[arm].append(((time.perf_counter() - started) * 1000, size))

    def _rows(self) -> int:
        task = self.client.status().current_task
        return task.rows if task else 0

    def attribute(self, samples: list[Sample]) -> dict[str, list[float]]:
        """Each call's latency under the arm whose window it started in (past the guard)."""
        out: dict[str, list[float]] = {arm: [] for arm, _ in ARMS}
        windows = sorted(self.windows)
        i = 0
        for started, ms in sorted(samples):
            while i < len(windows) and windows[i][1] <= started:
                i += 1
            if i < len(windows) and windows[i][0] + GUARD_S <= started:
                out[windows[i][2]].append(ms)
        return out


def _burst(endpoint: str, clients: int, calls: int) -> tuple[list[Sample], int]:
    """The paced status clients, each its own process; their (start, ms) samples and the count of failed calls."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(clients + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_client, args=(endpoint, calls, barrier, results), daemon=True) for _ in range(clients)]
    for proc in procs:
        proc.start()
    barrier.wait(timeout=120)
    samples: list[Sample] = []
    failed = 0
    for _ in procs:
        got, errors = results.get(timeout=900)
        samples += got
        failed += errors
    for proc in procs:
        proc.join(10)
    return samples, failed


def _client(endpoint: str, calls: int, barrier: Any, results: Any) -> None:
    client = SyncClient(endpoint, timeout=5.0)
    client.ping()
    out: list[Sample] = []
    errors = 0
    barrier.wait(timeout=120)
    begin = time.monotonic() + random.random() * PACED_PERIOD_S
    for i in range(calls):
        if (wait := begin + i * PACED_PERIOD_S - time.monotonic()) > 0:
            time.sleep(wait)
        started = time.monotonic()
        try:
            client.status()
        except SyncdError:
            errors += 1
            continue
        out.append((started, (time.monotonic() - started) * 1000))
    results.put((out, errors))


def _report(per_round: list[dict[str, list[float]]], scrapes: dict[str, list[tuple[float, int]]],
            rows_per_s: dict[str, list[float]], errors: int, rounds: int, calls: int) -> dict[str, Any]:
    base = ARMS[0][0]
    pooled = {arm: [ms for r in per_round for ms in r[arm]] for arm, _ in ARMS}

    def delta(arm: str) -> float:
        return percentile(pooled[arm], 99) - percentile(pooled[base], 99)

    def round_median(arm: str) -> float:
        return statistics.median(percentile(r[arm], 99) - percentile(r[base], 99) for r in per_round)

    rows = []
    for arm, _ in ARMS:
        ms, scrape_ms = pooled[arm], [s[0] for s in scrapes[arm]]
        rows.append((arm, len(ms), round(percentile(ms, 50), 2), round(percentile(ms, 90), 2),
                     round(percentile(ms, 99), 2), round(max(ms), 2), f"{delta(arm):+.2f}", f"{round_median(arm):+.2f}",
                     len(scrape_ms), round(percentile(scrape_ms, 50), 2) if scrape_ms else "-",
                     round(percentile(scrape_ms, 99), 2) if scrape_ms else "-",
                     scrapes[arm][-1][1] if scrapes[arm] else "-", round(statistics.mean(rows_per_s[arm]))))
    print_table(f"status latency (ms) during a full-speed sync, {CLIENTS} clients each every {PACED_PERIOD_S * 1000:.0f} ms, "
                f"arms interleaved in {WINDOW_S:g} s windows over {rounds} rounds (errors: {errors})",
                ("arm", "n", "p50", "p90", "p99", "max", "p99 vs no scrape", "median of rounds", "scrapes",
                 "scrape p50 ms", "scrape p99 ms", "bytes", "sync rows/s"), rows)
    one = ARMS[1][0]
    result = {
        "rounds": rounds, "clients": CLIENTS, "calls_per_client_per_round": calls, "window_s": WINDOW_S, "errors": errors,
        "status_p99_ms": {arm: round(percentile(pooled[arm], 99), 2) for arm, _ in ARMS},
        "p99_delta_ms_1_per_s": round(delta(one), 2),
        "p99_delta_ms_1_per_s_median_of_rounds": round(round_median(one), 2),
        "p99_delta_ms_10_per_s": round(delta(ARMS[2][0]), 2),
        "scrape_ms_p50": round(percentile([s[0] for s in scrapes[one]], 50), 2) if scrapes[one] else None,
        "sync_rate_1_per_s_vs_none": round(statistics.mean(rows_per_s[one]) / statistics.mean(rows_per_s[base]), 3),
        "goal_p99_delta_1ms": delta(one) <= GOAL_P99_DELTA_MS and errors == 0,
    }
    return emit("metrics", result)


def _keep_syncing(client: SyncClient) -> str:
    """The run_id of a full-speed sync under way: the current one, or a new one when the last has finished."""
    run_id = _current_run(client)
    if run_id is None:
        run_id = client.start(*SYNC_RANGE, requested_by="bench").run_id
        _wait_rows(client, 5 * 5300)
    return run_id


def _current_run(client: SyncClient) -> str | None:
    task = client.status().current_task
    return task.run_id if task else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
