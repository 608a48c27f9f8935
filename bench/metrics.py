"""Benchmark: what Prometheus scrapes cost the control plane while a sync runs.

One daemon with `[metrics] listen`, a full-market sync at full speed, and 20 client
processes each calling `status` every 50 ms (bench/control.py's paced load), timing each
call. Meanwhile a scraper runs through one-second windows in the cycle no scrape / one
scrape (1 scrape/s: Prometheus' usual interval is 15-60 s, so this is the goal's stress) / no
scrape / ten scrapes (10/s: headroom). Each call is attributed to the window it started in
(CLOCK_MONOTONIC is shared by the processes; a call in a no-scrape window while a scrape is
still in flight is dropped), so the arms interleave every second and the drift of a shared
machine (other work, the sync's own phases) falls on all of them alike. Reported per arm:
status latency, the p99 difference to the no-scrape arm with a 90% bootstrap interval
(resampling whole windows), the calls that started while a scrape was in flight (the only
ones a scrape could delay: their share and latency), the scrape's own duration and size, the
sync's rows/s. Goal: at
one scrape a second, status p99 moves by at most 1 ms.
"""

from __future__ import annotations

import bisect
import datetime as dt
import random
import socket
import statistics
import threading
import time
import urllib.request
from typing import Any

from syncctl import SyncClient, SyncdError

from .control import CLIENTS, PACED_PERIOD_S, _wait_idle, _wait_rows
from .harness import Postgres, Syncd, client_processes, emit, note, percentile, print_table, syncd_config

SYNC_RANGE = (dt.date(1992, 6, 1), dt.date(2024, 12, 31))  # ~32 years, under sync.max_days: outlasts a round
NO_SCRAPE, ONE, TEN = "no scrape", "1 scrape/s", "10 scrapes/s"
ARMS = ((NO_SCRAPE, None), (ONE, 1.0), (TEN, 0.1))
CYCLE = ((NO_SCRAPE, None), (ONE, 1.0), (NO_SCRAPE, None), (TEN, 0.1))  # the windows' order, repeated
WINDOW_S = 1.0        # one window per arm turn: the arms interleave every second
BOOTSTRAP = 1000      # resamples of the windows for the confidence interval of the p99 difference
GOAL_P99_DELTA_MS = 1.0

Sample = tuple[float, float]  # (monotonic start, ms)


def run(pg: Postgres, requests: int, rounds: int) -> dict[str, Any]:
    calls = requests * 4  # per client per round: 4x control's, so each arm gets thousands of calls
    note(f"metrics: {rounds} rounds x {CLIENTS} clients x {calls} status calls; windows of {WINDOW_S:g} s cycle "
         f"{' / '.join(arm for arm, _ in CYCLE)}, during a full-speed sync")
    port = _free_port()
    windows: dict[str, list[list[float]]] = {arm: [] for arm, _ in ARMS}
    scrapes: dict[str, list[tuple[float, int]]] = {arm: [] for arm, _ in ARMS}
    rows_per_s: dict[str, list[float]] = {arm: [] for arm, _ in ARMS}
    overlapping: dict[str, list[float]] = {arm: [] for arm, _ in ARMS}  # calls made while a scrape was in flight
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
            attributed, during = scraper.attribute(samples)
            for arm, lists in attributed.items():
                windows[arm] += lists
                overlapping[arm] += during[arm]
            for arm, _ in ARMS:
                scrapes[arm] += scraper.scrapes[arm]
                rows_per_s[arm] += scraper.rows_per_s[arm]
            errors += failed + scraper.errors
        client.cancel()
        _wait_idle(client)
    return _report(windows, overlapping, scrapes, rows_per_s, errors, rounds, calls)


class Scraper:
    """Cycles the windows on a thread, scraping /metrics at each arm's period; records windows and scrapes."""

    def __init__(self, port: int, client: SyncClient) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.client = client
        self.windows: list[tuple[float, float, str]] = []
        self.in_flight: list[tuple[float, float]] = []  # each scrape's (start, end), monotonic
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
            arm, period = CYCLE[turn % len(CYCLE)]
            turn += 1
            begin = time.monotonic()
            end, next_at = begin + WINDOW_S, begin
            rows_before = self._rows() if turn % 10 == 0 else None  # a status call now and then, not every window
            while not self._stop.is_set() and (now := time.monotonic()) < end:
                if period is not None and now >= next_at:
                    self._scrape(arm)
                    next_at += period
                wake = min(end, next_at) if period is not None else end
                self._stop.wait(max(0.0, wake - time.monotonic()))
            finished = time.monotonic()
            self.windows.append((begin, finished, arm))
            if rows_before is not None:
                self.rows_per_s[arm].append((self._rows() - rows_before) / (time.monotonic() - begin))

    def _scrape(self, arm: str) -> None:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                size = len(response.read())
        except OSError:
            self.errors += 1
            return
        finished = time.monotonic()
        self.in_flight.append((started, finished))
        self.scrapes[arm].append(((finished - started) * 1000, size))

    def _rows(self) -> int:
        task = self.client.status().current_task
        return task.rows if task else 0

    def attribute(self, samples: list[Sample]) -> tuple[dict[str, list[list[float]]], dict[str, list[float]]]:
        """Each call's latency under the window it started in (one list per window), and, per scraping arm, the
        calls that started while a scrape was in flight. A call in a no-scrape window while a scrape that began
        earlier is still in flight is dropped."""
        out: dict[str, list[list[float]]] = {arm: [] for arm, _ in ARMS}
        during: dict[str, list[float]] = {arm: [] for arm, _ in ARMS}
        per_window: list[list[float]] = [[] for _ in self.windows]
        starts = [w[0] for w in self.windows]
        scrapes = sorted(self.in_flight)
        scrape_starts = [a for a, _ in scrapes]
        for started, ms in samples:
            i = bisect.bisect_right(starts, started) - 1
            if i < 0 or started >= self.windows[i][1]:
                continue
            j = bisect.bisect_right(scrape_starts, started) - 1
            scraping = j >= 0 and started < scrapes[j][1]
            arm = self.windows[i][2]
            if scraping and arm == NO_SCRAPE:
                continue
            if scraping:
                during[arm].append(ms)
            per_window[i].append(ms)
        for (_, _, arm), values in zip(self.windows, per_window):
            if values:
                out[arm].append(values)
        return out, during


def _burst(endpoint: str, clients: int, calls: int) -> tuple[list[Sample], int]:
    """The paced status clients, each its own process; their (start, ms) samples and the count of failed calls."""
    ctx = client_processes()
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


def _report(windows: dict[str, list[list[float]]], overlapping: dict[str, list[float]],
            scrapes: dict[str, list[tuple[float, int]]], rows_per_s: dict[str, list[float]], errors: int, rounds: int,
            calls: int) -> dict[str, Any]:
    pooled = {arm: [ms for window in lists for ms in window] for arm, lists in windows.items()}
    rng = random.Random(1)

    def p99(values: list[float]) -> float:
        return percentile(values, 99)

    def interval(arm: str) -> tuple[float, float]:
        """90% bootstrap interval of p99(arm) - p99(no scrape), resampling whole windows of each arm."""
        deltas = []
        for _ in range(BOOTSTRAP):
            picked = [ms for w in rng.choices(windows[arm], k=len(windows[arm])) for ms in w]
            base = [ms for w in rng.choices(windows[NO_SCRAPE], k=len(windows[NO_SCRAPE])) for ms in w]
            deltas.append(p99(picked) - p99(base))
        deltas.sort()
        return deltas[int(0.05 * BOOTSTRAP)], deltas[int(0.95 * BOOTSTRAP) - 1]

    rows, intervals = [], {}
    for arm, _ in ARMS:
        ms, scrape_ms = pooled[arm], [s[0] for s in scrapes[arm]]
        delta = p99(ms) - p99(pooled[NO_SCRAPE])
        low, high = intervals[arm] = interval(arm) if arm != NO_SCRAPE else (0.0, 0.0)
        rows.append((arm, len(windows[arm]), len(ms), round(percentile(ms, 50), 2), round(percentile(ms, 90), 2),
                     round(p99(ms), 2), round(max(ms), 2), f"{delta:+.2f}", f"{low:+.2f}..{high:+.2f}",
                     len(scrape_ms), round(percentile(scrape_ms, 50), 2) if scrape_ms else "-",
                     round(percentile(scrape_ms, 99), 2) if scrape_ms else "-",
                     scrapes[arm][-1][1] if scrapes[arm] else "-",
                     round(statistics.mean(rows_per_s[arm])) if rows_per_s[arm] else "-"))
    print_table(f"status latency (ms) during a full-speed sync, {CLIENTS} clients each every {PACED_PERIOD_S * 1000:.0f} ms, "
                f"{WINDOW_S:g} s windows interleaved over {rounds} rounds (errors: {errors})",
                ("arm", "windows", "n", "p50", "p90", "p99", "max", "p99 vs no scrape", "90% interval", "scrapes",
                 "scrape p50 ms", "scrape p99 ms", "bytes", "sync rows/s"), rows)
    during = [(f"{arm}: calls while a scrape is in flight", len(ms), f"{len(ms) / len(pooled[arm]):.2%}",
               round(percentile(ms, 50), 2), round(percentile(ms, 90), 2), round(p99(ms), 2), round(max(ms), 2))
              for arm, ms in overlapping.items() if ms]
    print_table("the calls a scrape could delay: those that started while it was in flight (ms)",
                ("calls", "n", "share of the arm", "p50", "p90", "p99", "max"), during)
    delta_one = p99(pooled[ONE]) - p99(pooled[NO_SCRAPE])
    result = {
        "rounds": rounds, "clients": CLIENTS, "calls_per_client_per_round": calls, "window_s": WINDOW_S, "errors": errors,
        "status_p99_ms": {arm: round(p99(pooled[arm]), 2) for arm, _ in ARMS},
        "p99_delta_ms_1_per_s": round(delta_one, 2),
        "p99_delta_ms_1_per_s_interval90": [round(v, 2) for v in intervals[ONE]],
        "p99_delta_ms_10_per_s": round(p99(pooled[TEN]) - p99(pooled[NO_SCRAPE]), 2),
        "p99_delta_ms_10_per_s_interval90": [round(v, 2) for v in intervals[TEN]],
        "scrape_ms_p50": round(percentile([s[0] for s in scrapes[ONE]], 50), 2) if scrapes[ONE] else None,
        "share_of_calls_during_a_scrape_1_per_s": round(len(overlapping[ONE]) / len(pooled[ONE]), 4),
        "during_a_scrape_p50_ms_1_per_s": round(percentile(overlapping[ONE], 50), 2) if overlapping[ONE] else None,
        "goal_p99_delta_1ms": delta_one <= GOAL_P99_DELTA_MS and errors == 0,
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
