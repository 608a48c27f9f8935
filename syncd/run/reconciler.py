"""The reconcile thread: stored days compared with a second source, one reconciliation at a time, off the control loop.

A reconciliation asks a source for seconds to minutes, so neither the control loop (which
must answer `status` at once) nor the worker (whose runs it would hold up) does it. This
module owns a thread of its own, its queue of jobs, its own database connection and the
`ReconcileBoard`, where each reconciliation's progress is published under a lock for the
control loop to read (control/reconcile.py admits the jobs and answers `verify`).

For each job it builds the other source for that job alone (sources/reference.py: reference
mode, from its `[source.NAME]` table) and asks it by the job's plan: by_day, the stored days
in order, each staged and compared as it arrives; by_stock, the job's stocks once each for
the whole range, staged as they arrive, then compared a day at a time (db/reconcile.py: a
short transaction under the day-write fence, so runs and reconciliations interleave safely).
What the source cannot give (a failed day, a failed stock) is listed in the job's errors and
not compared. The daemon's stop ends a job between requests (`cancelled`). It never writes
daily_bars or sync_runs: only bar_findings, sync_days' anomaly counts and its own stage.
"""

from __future__ import annotations

import datetime as dt
import functools
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg

from ..config import Config, SourceName
from ..db import connection, reconcile
from ..logs import Event, get_logger
from ..protocol import Reconciliation
from ..sources.base import DayFailure, EncodedRows, ReferencePlan, Row, StockFailure
from ..sources.reference import Reference
from ..telemetry.observer import NULL_OBSERVER, Observer

BOARD_KEEP = 16            # reconciliations the board remembers (a client polls one by its reconcile_id)
ERRORS_KEPT = 20           # errors listed in a reconciliation (all are counted in the log)
STAGE_BATCH_ROWS = 50_000  # a by_stock job's rows staged per COPY
STATEMENT_TIMEOUT_MS = "300000"
FINAL_STATES = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class ReconcileJob:
    reconcile_id: str
    against: SourceName
    days: list[dt.date]      # the stored days to compare
    plan: ReferencePlan
    sample: int | None       # that many stocks at random (the scheduled job); None: every stock
    requested_by: str


class ReconcileBoard:
    """Each reconciliation as last published (copies in, copies out), the newest BOARD_KEEP of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, Reconciliation] = OrderedDict()

    def put(self, item: Reconciliation) -> None:
        with self._lock:
            self._items[item.reconcile_id] = msgspec.structs.replace(item)
            self._items.move_to_end(item.reconcile_id)
            while len(self._items) > BOARD_KEEP:
                self._items.popitem(last=False)

    def update(self, reconcile_id: str, **changes: Any) -> None:
        with self._lock:
            if reconcile_id in self._items:
                self._items[reconcile_id] = msgspec.structs.replace(self._items[reconcile_id], **changes)

    def get(self, reconcile_id: str) -> Reconciliation | None:
        with self._lock:
            item = self._items.get(reconcile_id)
            return msgspec.structs.replace(item) if item is not None else None

    def find(self, test: Callable[[Reconciliation], bool]) -> Reconciliation | None:
        """The newest reconciliation `test` accepts."""
        with self._lock:
            for item in reversed(self._items.values()):
                if test(item):
                    return msgspec.structs.replace(item)
        return None

    def count(self, test: Callable[[Reconciliation], bool]) -> int:
        with self._lock:
            return sum(1 for item in self._items.values() if test(item))


class Reconciler:
    """The thread and its jobs; `submit` (control loop) returns at once, `on_change` wakes the control loop."""

    def __init__(self, config: Config, dsn: str, board: ReconcileBoard, on_change: Callable[[], None],
                 observer: Observer = NULL_OBSERVER) -> None:
        self.config = config
        self.dsn = dsn
        self.board = board
        self._on_change = on_change
        self._observer = observer
        self._jobs: queue.Queue[ReconcileJob | None] = queue.Queue()
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._loop, name="syncd-reconcile", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: ReconcileJob) -> None:
        """Queue `job` (its board entry, `queued`, is the caller's)."""
        self._jobs.put(job)

    def stop(self, timeout: float) -> bool:
        """End the job in flight between requests, drop the queued ones; True if the thread ended within `timeout`."""
        self._stop.set()
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _stopping(self) -> bool:
        return self._stop.is_set()

    def _loop(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                if self._stop.is_set():
                    self.board.update(job.reconcile_id, state="cancelled", error="the daemon stopped")
                    continue
                self._run(job)
                self._on_change()
        finally:
            self._close()

    # --- one job -------------------------------------------------------------------------------
    def _run(self, job: ReconcileJob) -> None:
        log = get_logger(reconcile_id=job.reconcile_id, against=job.against)
        started = time.monotonic()
        self.board.update(job.reconcile_id, state="running")
        log.info(Event.RECONCILE_STARTED, start_date=job.days[0].isoformat(), end_date=job.days[-1].isoformat(),
                 days=len(job.days), plan=job.plan.by, planned_requests=job.plan.requests, sample=job.sample,
                 requested_by=job.requested_by)
        progress = _Progress(job)
        reference: Reference | None = None
        state, error = "done", None
        try:
            reference = Reference(self.config.source, job.against,
                                  on_event=lambda event, **fields: log.info(Event(event), **fields))
            progress.reference = reference
            self._with_db(lambda c: reconcile.clear(c, job.reconcile_id))
            codes = None
            if job.plan.by == "by_stock" or job.sample is not None:
                codes = self._with_db(lambda c: reconcile.stored_codes(c, job.days, job.plan.coverage, job.sample))
                self.board.update(job.reconcile_id, stocks=len(codes))
            if job.plan.by == "by_day":
                self._by_day(job, reference, codes, progress)
            else:
                self._by_stock(job, reference, codes or [], progress)
            if self._stopping():
                state, error = "cancelled", "the daemon stopped"
        except Exception as exc:  # the job's boundary: a reconciliation always ends published
            state, error = "failed", f"{type(exc).__name__}: {exc}"
            log.warning(Event.RECONCILE_FAILED, error=error)
        finally:
            requests = reference.requests if reference is not None else 0
            if reference is not None:
                reference.close()
            try:
                self._with_db(lambda c: reconcile.clear(c, job.reconcile_id))
            except Exception:  # noqa: BLE001 - a stale stage is cleared by the next job
                pass
        self.board.update(job.reconcile_id, state=state, error=error, requests=requests, days_done=progress.days_done,
                          findings=sum(progress.by_check.values()), by_check=dict(progress.by_check),
                          errors=progress.errors[:ERRORS_KEPT])
        self._observer.reconcile_finished(job.against, dict(progress.by_check))
        log.info(Event.RECONCILE_FINISHED, state=state, error=error, requested_by=job.requested_by, requests=requests,
                 planned_requests=job.plan.requests,
                 days=len(job.days), days_done=progress.days_done, findings=sum(progress.by_check.values()),
                 **{check: n for check, n in progress.by_check.items()}, errors=len(progress.errors),
                 seconds=round(time.monotonic() - started, 3))

    def _by_day(self, job: ReconcileJob, reference: Reference, codes: list[str] | None, progress: _Progress) -> None:
        stream = reference.fetch_days(job.days, self._stopping)
        try:
            for day, result in stream:
                if self._stopping():
                    return
                if isinstance(result, DayFailure):
                    progress.error(f"{day}: {result.error}")
                else:
                    rows: list[Row] | EncodedRows = result.rows
                    self._with_db(functools.partial(reconcile.stage_day, reconcile_id=job.reconcile_id, day=day,
                                                    rows=rows, failed=result.missing))
                    self._compare(job, day, codes, progress)
                progress.days_done += 1
                self._publish(job, progress)
        finally:
            stream.close()

    def _by_stock(self, job: ReconcileJob, reference: Reference, codes: list[str], progress: _Progress) -> None:
        wanted = set(job.days)
        answered: list[str] = []
        buffer: list[tuple[dt.date, Row]] = []

        def flush() -> None:
            batch = list(buffer)
            buffer.clear()
            if batch:
                self._with_db(lambda c: reconcile.stage_stocks(c, job.reconcile_id, batch))

        stream = reference.fetch_stocks(job.days[0], job.days[-1], codes, self._stopping)
        try:
            for item in stream:
                if self._stopping():
                    return
                if isinstance(item, StockFailure):
                    progress.error(f"{item.code}: {item.error}")
                    continue
                answered.append(item.code)
                buffer.extend((day, row) for day, row in item.bars if day in wanted)
                if len(buffer) >= STAGE_BATCH_ROWS:
                    flush()
                self._publish(job, progress)
        finally:
            close = getattr(stream, "close", None)
            if callable(close):
                close()
        flush()
        for day in job.days:
            if self._stopping():
                return
            self._compare(job, day, answered, progress)
            progress.days_done += 1
            self._publish(job, progress)

    def _compare(self, job: ReconcileJob, day: dt.date, codes: list[str] | None, progress: _Progress) -> None:
        progress.found(self._with_db(functools.partial(reconcile.compare, reconcile_id=job.reconcile_id, source=job.against,
                                                       days=[day], codes=codes, coverage=job.plan.coverage)))

    def _publish(self, job: ReconcileJob, progress: _Progress) -> None:
        self.board.update(job.reconcile_id, days_done=progress.days_done, requests=progress.requests(),
                          findings=sum(progress.by_check.values()), by_check=dict(progress.by_check),
                          errors=progress.errors[:ERRORS_KEPT])

    # --- the connection ---------------------------------------------------------------------
    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connection.connect(self.dsn, self.config.database.connect_timeout_s, "syncd-reconcile",
                                            statement_timeout=STATEMENT_TIMEOUT_MS, TimeZone=self.config.schedule.timezone)
        return self._conn

    def _with_db(self, action: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """`action` on the thread's connection, once more on a new one if the connection was lost (a run's
        admission ends sessions holding the write fence: runlock.end_stray_writes). Each action is idempotent."""
        for attempt in (1, 2):
            try:
                return action(self._db())
            except psycopg.OperationalError:
                if attempt == 2 or (self._conn is not None and not self._conn.broken):
                    raise
                self._close()
        return None

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass


class _Progress:
    """One job's tallies, as the thread counts them."""

    def __init__(self, job: ReconcileJob) -> None:
        self.job = job
        self.reference: Reference | None = None
        self.days_done = 0
        self.by_check: Counter[str] = Counter()
        self.errors: list[str] = []

    def found(self, checks: list[str]) -> None:
        self.by_check.update(checks)

    def error(self, text: str) -> None:
        self.errors.append(text)

    def requests(self) -> int:
        return self.reference.requests if self.reference is not None else 0
