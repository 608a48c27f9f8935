"""Prometheus metrics of the daemon: the counters its parts bump, a collector that reads its state at
scrape time, and the HTTP endpoint (`[metrics] listen`, docs/operations.md "Metrics").

Owns the metric names (the contract's `syncd_*` set) on a private CollectorRegistry (never the
library's global one). Counters and histograms are bumped by hub.py as the control loop
and the worker report (one lock-protected add each); everything that describes *state*
(up, run active, last success, latest synced and completed trade dates) is read only when
Prometheus scrapes, by `DaemonCollector`, from memory: the RunState's snapshot and the facts
the freshness poller (poller.py) cached from the database. A scrape never touches the database
or the control loop. The endpoint is prometheus_client's own threaded server, bound at start
(a port in use stops syncd with `metrics.listen` named).

Sources count their upstream requests through `source_request_counter(name)`: a callable
taking the outcome ("ok", "error", "timeout", "empty" ...; few distinct values, never a URL
or a code), which the daemon hands to a source that defines
`attach_request_counter(count: Callable[[str], None])` (hub.py, `attach_source`).
Fallback sources (run/fallback.py) are counted twice: each ask by outcome
(`syncd_fallback_asks_total{source,outcome}`) and each day written with their stocks
(`syncd_fallback_days_total{source}`).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..config import ConfigError
from ..control.runstate import RunState
from .freshness import midnight_epoch

# control-loop replies take ~0.1 ms idle and a few ms under load (bench/control.py); the database ops more
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# a full-market day (5,300 rows) writes in ~50-150 ms; a slow or remote database in seconds
DAY_WRITE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Series shown at 0 from the start: Prometheus' increase() cannot see a series' first step from nothing,
# so an alert on increase(syncd_runs_total{status="failed"}[...]) needs the 0 before the first failure.
SOURCE_OUTCOMES = ("ok", "error")
KNOWN_TASK_TYPES = ("manual", "web_batch", "scheduler_daily", "scheduler_missing")
RUN_STATUSES = ("succeeded", "partial", "failed", "cancelled", "interrupted")
DAY_STATUSES = ("success", "incomplete", "failed")
FALLBACK_OUTCOMES = ("filled", "partial", "failed")  # also: empty, refused (unit rule), skipped (failing in a row)
RECONCILE_CHECKS = ("source_mismatch", "source_missing")

RequestCounter = Callable[[str], None]


@dataclass(frozen=True)
class Facts:
    """What the metrics need from the database, as the freshness poller last read it."""

    latest_synced: dt.date | None          # the newest day recorded `success`
    last_success: dict[str, dt.datetime]   # task_type -> when its newest succeeded run finished
    read_at: float                         # time.time() of the read


class Metrics:
    """The daemon's metrics on their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter("syncd_runs", "Runs ended (seen by this daemon), by task type and final status",
                            ["task_type", "status"], registry=r)
        self.days = Counter("syncd_days", "Trading days ended by this daemon's runs, by status", ["status"], registry=r)
        self.rows = Counter("syncd_rows", "Rows written to daily_bars by this daemon", registry=r)
        self.requests = Counter("syncd_requests", "Control-socket requests answered, by op and reply status",
                                ["op", "status"], registry=r)
        self.request_duration = Histogram("syncd_request_duration_seconds", "Time to answer a control-socket request",
                                          ["op"], buckets=REQUEST_BUCKETS, registry=r)
        self.day_write_duration = Histogram("syncd_day_write_duration_seconds",
                                            "Time to write one trading day (its atomic replace)",
                                            buckets=DAY_WRITE_BUCKETS, registry=r)
        self.source_requests = Counter("syncd_source_requests", "Upstream requests of the data source, by outcome",
                                       ["source", "outcome"], registry=r)
        self.fallback_days = Counter("syncd_fallback_days", "Trading days written with stocks from a fallback source",
                                     ["source"], registry=r)
        self.fallback_asks = Counter("syncd_fallback_asks", "Fallback sources asked for a day's stocks, by outcome",
                                     ["source", "outcome"], registry=r)
        self.reconcile_findings = Counter("syncd_reconcile_findings",
                                          "Findings stored by reconciliations against a second source, by that source "
                                          "and check (source_mismatch, source_missing)", ["source", "check"], registry=r)
        self._served: dict[tuple[str, str], tuple[Counter, Histogram]] = {}  # (op, status) -> its counter and histogram
        for task_type in KNOWN_TASK_TYPES:
            for status in RUN_STATUSES:
                self.runs.labels(task_type, status)
        for status in DAY_STATUSES:
            self.days.labels(status)

    # --- what the daemon's parts report (each one counter add) -----------------------------
    def request_served(self, op: str, status: str, seconds: float) -> None:
        served = self._served.get((op, status))
        if served is None:  # labels() takes a lock and builds its key each time: 8 us a request, kept per (op, status)
            served = self._served[(op, status)] = (self.requests.labels(op, status), self.request_duration.labels(op))
        served[0].inc()
        served[1].observe(seconds)

    def day_finished(self, status: str, rows: int, write_seconds: float | None) -> None:
        self.days.labels(status).inc()
        if rows:
            self.rows.inc(rows)
        if write_seconds is not None:
            self.day_write_duration.observe(write_seconds)

    def fallback_sources(self, sources: Iterable[str]) -> None:
        """The configured fallbacks' series, shown at 0 from the start (for increase() in alert rules)."""
        for source in sources:
            self.fallback_days.labels(source)
            for outcome in FALLBACK_OUTCOMES:
                self.fallback_asks.labels(source, outcome)

    def fallback_asked(self, source: str, outcome: str) -> None:
        self.fallback_asks.labels(source, outcome).inc()

    def fallback_day(self, source: str) -> None:
        self.fallback_days.labels(source).inc()

    def run_finished(self, task_type: str, status: str) -> None:
        self.runs.labels(task_type, status).inc()

    def reconcile_finished(self, source: str, by_check: Mapping[str, int]) -> None:
        for check, count in by_check.items():
            self.reconcile_findings.labels(source, check).inc(count)

    def reconcile_source(self, source: str) -> None:
        """Show `source`'s finding counters at 0 from the start (verify.against), so increase() sees the first."""
        for check in RECONCILE_CHECKS:
            self.reconcile_findings.labels(source, check)

    def source_request_counter(self, source: str) -> RequestCounter:
        """A callable for `source` to count one upstream request with its outcome."""
        for outcome in SOURCE_OUTCOMES:
            self.source_requests.labels(source, outcome)

        def count(outcome: str) -> None:
            self.source_requests.labels(source, outcome).inc()

        return count

    # --- serving ---------------------------------------------------------------------------
    def serve(self, host: str, port: int) -> MetricsServer:
        """Serve /metrics on host:port (prometheus_client's threaded server); ConfigError if it cannot bind.

        Without the `_created` series (the library's process-wide switch; this is the daemon's
        process): a fifth less to render at each scrape, and nothing Prometheus needs."""
        disable_created_metrics()
        try:
            server, thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"metrics.listen: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        return MetricsServer(server, thread)

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)


class MetricsServer:
    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)


class DaemonCollector(Collector):
    """The state gauges, read at scrape time from memory only (RunState, cached facts, the calendar)."""

    def __init__(self, state: RunState, facts: Callable[[], Facts | None],
                 latest_completed: Callable[[], dt.date | None], zone: dt.tzinfo) -> None:
        self._state = state
        self._facts = facts
        self._latest_completed = latest_completed
        self._zone = zone

    def describe(self) -> Iterable[Metric]:
        return []  # names are fixed here; nothing to check against the registry's others

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("syncd_up", "1 while syncd serves (absent or 0 when it is down)", value=1)
        active = self._state.snapshot().current is not None
        yield GaugeMetricFamily("syncd_run_active", "1 while a run of this daemon is in flight", value=int(active))
        completed = self._latest_completed()
        if completed is not None:
            yield GaugeMetricFamily("syncd_latest_completed_trade_date_seconds",
                                    "The latest completed trading day (its alert.late_after has passed), as check "
                                    "judges it: midnight in schedule.timezone", value=midnight_epoch(completed, self._zone))
        facts = self._facts()
        if facts is None:
            return  # not read from the database yet: absent rather than a false 0
        synced = midnight_epoch(facts.latest_synced, self._zone) if facts.latest_synced else 0.0
        yield GaugeMetricFamily("syncd_latest_synced_trade_date_seconds",
                                "The newest trading day recorded success: midnight in schedule.timezone (0: none)",
                                value=synced)
        success = GaugeMetricFamily("syncd_last_success_timestamp_seconds",
                                    "When the newest succeeded run of each task type finished", labels=["task_type"])
        for task_type, finished in sorted(facts.last_success.items()):
            success.add_metric([task_type], finished.timestamp())
        yield success
        yield GaugeMetricFamily("syncd_database_facts_timestamp_seconds",
                                "When syncd_latest_synced_trade_date_seconds and syncd_last_success_timestamp_seconds were read "
                                "from the database", value=facts.read_at)
