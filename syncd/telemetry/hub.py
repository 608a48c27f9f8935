"""Telemetry: the daemon's metrics, alerts and freshness poller, wired together, and the Observer they listen on.

The daemon builds one `Telemetry` from the config and passes it (as an `Observer`) to the
parts that report: the ops (requests served), admission and recovery (runs found
interrupted), the sync (days ended) and the worker's run wrapper (runs ended). Each report
is a counter add and, for alerting events, an enqueue: nothing here waits. It owns the
lifetimes: `bind` (the metrics port, before the database, so a port in use refuses the
start untouched; the alert sender), `start` (the state collector, the freshness poller), `close`.
Without `[metrics] listen` nothing is served and the poller does not poll; without
`[alert] webhook_url` nothing is sent.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from ..calendar import TradingCalendar
from ..config import Config
from ..control.runstate import RunState
from ..db.runlock import RunLock
from ..logs import Event, get_logger
from ..record import RunRecord
from ..run.worker import RunJob
from .alerts import Alerter
from .freshness import FreshnessJudge, parse_clock
from .metrics import DaemonCollector, Metrics, MetricsServer
from .observer import Observer
from .poller import FreshnessPoller


class CountsRequests(Protocol):
    """A source (sources/base.py's Source) or the fetch process that runs one: named, and handed a counter."""

    @property
    def name(self) -> str: ...

    def attach_request_counter(self, count: Callable[[str], None]) -> None: ...

FACTS_REFRESH_S = 15.0  # how stale the database-derived gauges may get (a run's end refreshes them at once)


class Telemetry(Observer):
    def __init__(self, config: Config) -> None:
        self.config = config
        self.zone = zoneinfo.ZoneInfo(config.schedule.timezone)
        self.metrics = Metrics()
        self.metrics.fallback_sources(config.source.fallback)
        self.alerter = (Alerter(config.alert, config.schedule.timezone) if config.alert.webhook_url else None)
        self.poller: FreshnessPoller | None = None
        self.server: MetricsServer | None = None
        self._log = get_logger()
        if config.verify.against:
            self.metrics.reconcile_source(config.verify.against)

    # --- lifetimes ------------------------------------------------------------------------
    def bind(self) -> None:
        """Listen on metrics.listen (ConfigError if it cannot); start the alert sender."""
        address = self.config.metrics.address
        if address is not None:
            self.server = self.metrics.serve(*address)
            self._log.info(Event.METRICS_LISTENING, url=f"http://{self.config.metrics.listen}/metrics")
        if self.alerter is not None:
            self.alerter.start()  # alerts raised during start-up recovery wait in its queue

    def start(self, dsn: str, state: RunState, calendar: TradingCalendar) -> None:
        """With the database ready: the state gauges and the freshness poller (when metrics or the late alert need it)."""
        judge = FreshnessJudge(calendar, self.zone, parse_clock(self.config.alert.late_after))
        wants_late = self.alerter is not None and self.alerter.wants_late
        if self.server is None and not wants_late:
            return
        self.poller = FreshnessPoller(dsn, judge, refresh_every_s=FACTS_REFRESH_S if self.server else None,
                               on_late=self.alerter.late if wants_late and self.alerter else None,
                               state_dir=self.config.daemon.state_dir, timezone=self.config.schedule.timezone)
        if self.server is not None:
            self.metrics.add_collector(DaemonCollector(state, self.poller.facts, self.poller.latest_completed, self.zone))
        self.poller.start()

    def close(self) -> None:
        """Stop what runs (idempotent): the freshness poller, the alert sender (after a short grace), the metrics server."""
        poller, alerter, server = self.poller, self.alerter, self.server
        self.poller = self.server = None
        self.alerter = None
        if poller is not None:
            poller.stop()
        if alerter is not None:
            alerter.stop()
        if server is not None:
            server.close()

    def attach_source(self, source: CountsRequests) -> None:
        """Hand the source (or the fetch process that runs it) its request counter (metrics.py)."""
        source.attach_request_counter(self.metrics.source_request_counter(source.name))

    def reporting(self, run_job: RunJob) -> RunJob:
        """`run_job` (the worker's), telling this observer of each run's end as recorded."""
        def run_and_report(job: RunRecord, state: RunState, lock: RunLock) -> RunRecord:
            finished = run_job(job, state, lock)
            self.run_finished(finished)
            return finished

        return run_and_report

    # --- Observer ---------------------------------------------------------------------------
    def request_served(self, op: str, status: str, seconds: float) -> None:
        self.metrics.request_served(op, status, seconds)

    def day_finished(self, status: str, rows: int, write_seconds: float | None) -> None:
        self.metrics.day_finished(status, rows, write_seconds)

    def fallback_asked(self, source: str, outcome: str) -> None:
        self.metrics.fallback_asked(source, outcome)

    def fallback_day(self, source: str) -> None:
        self.metrics.fallback_day(source)

    def run_finished(self, run: RunRecord) -> None:
        self.metrics.run_finished(run.task_type, run.status)
        if self.alerter is not None:
            self.alerter.run_finished(run)
        if self.poller is not None:
            self.poller.poke()

    def reconcile_finished(self, source: str, by_check: Mapping[str, int]) -> None:
        self.metrics.reconcile_finished(source, by_check)

    def runs_interrupted(self, runs: Sequence[RunRecord]) -> None:
        for run in runs:
            self.metrics.run_finished(run.task_type, "interrupted")
        if self.alerter is not None:
            self.alerter.runs_interrupted(runs)
        if self.poller is not None:
            self.poller.poke()
