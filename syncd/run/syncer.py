"""The one sync method: plan a run's range into trading days, fetch them by the source's plan, write each day atomically.

`Syncer.run(run, state, lock)` runs on the worker thread and only there. It plans the run
(trading days by the calendar; closed days `skipped`; weekdays no calendar confirms left out
and `pending` with the reason), asks the source for its plan and hands the days to it:
by_day (byday.py: a day at a time, read ahead) or by_stock (bystock.py: each stock once for
the whole range, staged in PostgreSQL, then written day by day). Either way each day is
written in its own transaction, in day order, only while the run holds the run lock
(`RunLock.fence`), and never after a cancel (outcomes.py); what the primary could not give a
day, the `[source] fallback` sources are asked for before the day is written (fallback.py),
and each day records the source that wrote it. It owns the worker's database
connection (reopened when lost, the statement retried), the retry policy, and the run's
record in sync_runs (inserted by the control loop at admission). Between runs it does the
worker's housekeeping: orphaned runs, the source's calendar fetched ahead of the schedule
past the packaged calendar's horizon, and closed years compacted (db/compaction.py). Progress goes to the RunState; events to the log with
run_id and task_type bound.
"""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import psycopg

from ..calendar import DayKind, TradingCalendar, beyond_horizon_reason, calendar_days
from ..config import Config
from ..control.runstate import RunState
from ..db import compaction, connection, days, daywrite, reference, runs, staging
from ..db.runlock import Orphans, RunFence, RunLock, RunLockLost
from ..logs import Event, get_logger
from ..record import RunRecord
from ..sources.base import Source, SourceError
from ..sources.fetchproc import FetchProcess
from ..telemetry.observer import NULL_OBSERVER, Observer
from .byday import sync_by_day
from .bystock import sync_by_stock
from .fallback import Fallbacks
from .outcomes import DatabaseDown, DayWriter

MISSING_JOB = "scheduler_missing"  # scheduling.MISSING: its by_stock runs ask only for the stocks a day misses
# While a recent weekday past the packaged calendar is unconfirmed, the idle worker asks the
# source's calendar about it at most this often (the schedule decides from what it knows).
CALENDAR_ASK_EVERY_S = 600.0
# Closed years needing compaction are looked for after each run and at most this often otherwise.
COMPACTION_CHECK_EVERY_S = 600.0


class Syncer:
    def __init__(self, config: Config, dsn: str, source: Source, calendar: TradingCalendar,
                 lock_dsn: str | None = None, observer: Observer = NULL_OBSERVER,
                 fetcher: FetchProcess | None = None, fallbacks: Sequence[Source] = ()) -> None:
        self.observer = observer  # metrics and alerts: told of each day's end (telemetry/hub.py)
        self.config = config
        self.dsn = dsn
        self.lock_dsn = lock_dsn or dsn  # the run lock's own connection (database.lock_dsn)
        self.source = source
        self.fallbacks = list(fallbacks)  # [source] fallback, in order (fallback.py)
        self.fetcher = fetcher  # the source's by_day fetches in a child process (sources/fetchproc.py), if it runs there
        self.calendar = calendar
        self.zone = zoneinfo.ZoneInfo(config.schedule.timezone)
        self._conn: psycopg.Connection[Any] | None = None
        self._stocks_saved: object = None
        self._calendar_asked_at: float | None = None
        self._compaction_checked_at: float | None = None  # None: look at the next idle tick (start-up, after a run)
        self._compaction_failed: set[int] = set()
        self._fence: daywrite.Fence | None = None  # the current run's lock fence, for its bookkeeping writes too
        self.orphans = Orphans(self.lock_dsn, config.database.connect_timeout_s, observer.runs_interrupted)

    # --- the run ---------------------------------------------------------------------------
    def run(self, run: RunRecord, state: RunState, lock: RunLock | None = None) -> RunRecord:
        log = get_logger(run_id=run.run_id, task_type=run.task_type)
        error: str | None = None
        fence = RunFence(lock, run.run_id) if lock is not None else None
        self._fence = fence
        writer = DayWriter(run, state, log, self._with_db, fence, self.calendar.is_trading_day, self.observer,
                           source=self.source.name, fallbacks=Fallbacks(self.fallbacks, state, log, self.observer))
        staged = False
        try:
            trading = self._begin(run, state, log)
            if trading:
                staged = self._sync(run, trading, writer, log)
            status = "cancelled" if state.cancel_requested else _outcome(writer)
            error = writer.failures.summary(len(trading))
        except RunLockLost as exc:
            log.error(Event.RUN_LOCK_LOST, error=str(exc))
            status, error = "failed", str(exc)
        except Exception as exc:  # a run must always end recorded; the loop boundary is here
            log.exception(Event.RUN_ERROR, error=str(exc))
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        self._compaction_checked_at = None  # the run may have closed a year or rewritten a compacted one
        return self._finish(run, state, status, error, log, staged)

    def _begin(self, run: RunRecord, state: RunState, log: Any) -> list[dt.date]:
        conn = self._db()
        self._refresh_reference_data(conn, run)  # a source's calendar may change which days trade
        kinds = {day: self.calendar.kind(day) for day in run.planned_days()}
        trading = [d for d, kind in kinds.items() if kind is DayKind.TRADING]
        closed = [d for d, kind in kinds.items() if kind is DayKind.CLOSED]
        unconfirmed = [d for d, kind in kinds.items() if kind is DayKind.UNCONFIRMED]
        runs.set_trading_days(conn, run.run_id, len(trading))
        daywrite.plan_days(conn, run.run_id, trading, closed, self._fence)
        if unconfirmed:
            daywrite.plan_unconfirmed(conn, run.run_id, unconfirmed, beyond_horizon_reason, self._fence)
            log.warning(Event.DAYS_UNCONFIRMED, days=len(unconfirmed), first=unconfirmed[0].isoformat(),
                        last=unconfirmed[-1].isoformat(), reason=beyond_horizon_reason(unconfirmed[0]))
        state.planned(len(trading))
        return trading

    def _refresh_reference_data(self, conn: psycopg.Connection[Any], run: RunRecord) -> None:
        """Let a source with an authoritative calendar or stock list override the built-in ones."""
        try:
            self._refresh_calendar(conn, run.start_date, run.end_date)
            stocks = self.source.stock_list()
            if stocks is not None and stocks is not self._stocks_saved:
                reference.save_stocks(conn, stocks, fence=self._fence)
                self._stocks_saved = stocks
        except SourceError as exc:  # the known calendars still plan the run; the list can wait a day
            get_logger(run_id=run.run_id, task_type=run.task_type).warning(Event.REFERENCE_DATA_UNAVAILABLE, error=str(exc))

    def _refresh_calendar(self, conn: psycopg.Connection[Any], start: dt.date, end: dt.date) -> None:
        open_days = self.source.trading_days(start, end)
        if open_days is not None:
            reference.save_calendar(conn, start, end, open_days, self.source.name, self._fence)
            open_set = set(open_days)
            self.calendar.update({d: d in open_set for d in calendar_days(start, end)})

    def _sync(self, run: RunRecord, trading: Sequence[dt.date], writer: DayWriter, log: Any) -> bool:
        """Fetch and write the run's trading days by the source's plan; True if the plan staged (by_stock)."""
        plan = self.source.plan(trading)
        attempts, fatal = self.config.sync.retries + 1, (RunLockLost, DatabaseDown)
        if plan == "by_stock":
            patch = self._patch(run, trading)
            log.info(Event.RUN_PLANNED, plan=plan, days=len(trading), stocks="missing only" if patch else "all")
            self._with_db(staging.clear_stage)  # what a dead run left behind
            sync_by_stock(self.source, trading, writer, self._with_db, attempts, self._backoff, log, fatal, patch)
            return True
        log.info(Event.RUN_PLANNED, plan=plan, days=len(trading))
        sync_by_day(self.fetcher or self.source, trading, writer, attempts, self._backoff, log, fatal)
        return False

    def _patch(self, run: RunRecord, trading: Sequence[dt.date]) -> dict[dt.date, frozenset[str]] | None:
        """For the missing-data job on incomplete days only: the stocks each day misses (else None: all stocks)."""
        if run.task_type != MISSING_JOB:
            return None
        missing = self._with_db(lambda c: days.missing_codes_by_day(c, trading))
        if not all(missing.get(day) for day in trading):
            return None
        return {day: frozenset(missing[day]) for day in trading}

    def _backoff(self, attempt: int) -> float:
        return self.config.sync.retry_backoff_s * 2 ** (attempt - 1)

    def _finish(self, run: RunRecord, state: RunState, status: str, error: str | None, log: Any, staged: bool) -> RunRecord:
        try:
            self._with_db(lambda c: daywrite.unmark_syncing(c, run.run_id))  # a day a cancel stopped gets its status back
            if staged:
                self._with_db(staging.clear_stage)
            recorded = self._with_db(lambda c: runs.finish_run(c, run.run_id, status, error))
        except Exception as exc:  # the database is gone: report the run from memory; orphan recovery fixes the row
            log.error(Event.RUN_RECORD_FAILED, error=str(exc))
            recorded = _run_from_memory(run, state, status, error, str(exc))
        recorded = recorded or _run_from_memory(run, state, status, error)
        log.info(Event.RUN_FINISHED, status=recorded.status, error=recorded.error, trading_days=recorded.trading_days,
                 days_done=recorded.days_done, days_failed=recorded.days_failed, rows=recorded.rows)
        return recorded

    # --- between runs (the worker's idle housekeeping) --------------------------------------
    def housekeeping(self, job_waiting: Callable[[], bool] = lambda: False) -> None:
        """The fetch process (started, or started again if it died), orphaned runs, (past the packaged
        calendar) the source's calendar ahead of the schedule, then closed years compacted until a job comes."""
        if self.fetcher is not None:
            self.fetcher.start()
        self.recover_orphans()
        self.confirm_recent_days()
        self.compact_closed_years(job_waiting)

    def compact_closed_years(self, job_waiting: Callable[[], bool] = lambda: False) -> None:
        """Rewrite closed years stored by stock (db/compaction.py), one partition at a time, while no job waits.
        A year that failed (an object of the user's on its partition, say) is not tried again until restart."""
        if not self.config.database.compact_closed_years:
            return
        now = time.monotonic()
        if self._compaction_checked_at is not None and now - self._compaction_checked_at < COMPACTION_CHECK_EVERY_S:
            return
        self._compaction_checked_at = now
        today = dt.datetime.now(self.zone).date()
        closed = compaction.closed_before(today, self.config.schedule.missing_lookback_days)
        for year in compaction.pending(self._db(), closed):
            if job_waiting():
                self._compaction_checked_at = None  # the rest after the job
                return
            if year in self._compaction_failed:
                continue
            try:
                done = compaction.compact(self._db(), year)
            except compaction.SwapDeferred as exc:
                get_logger().info(Event.PARTITION_COMPACTION_DEFERRED, year=year, reason=str(exc))
                self._compaction_checked_at = now - COMPACTION_CHECK_EVERY_S + 60  # again in a minute
                return
            except psycopg.Error as exc:
                if self._conn is None or self._conn.broken:
                    raise  # the database went away: the housekeeping's own warning, and again later
                self._compaction_failed.add(year)
                get_logger().warning(Event.PARTITION_COMPACTION_FAILED, year=year, error=str(exc).strip())
                continue
            if done is not None:
                get_logger().info(Event.PARTITION_COMPACTED, year=done.year, rows=done.rows, seconds=done.seconds,
                                  bytes_before=done.bytes_before, bytes_after=done.bytes_after)

    def recover_orphans(self) -> None:
        """A run recorded `running` while the run lock is free belongs to a dead daemon: mark it interrupted."""
        if runs.running_run(self._db()) is not None:  # the cheap query first: a lock attempt only then
            self.orphans.recover("idle check")

    def confirm_recent_days(self) -> None:
        """Ask the source's calendar about recent weekdays no calendar confirms (so the schedule knows them in time)."""
        today = dt.datetime.now(self.zone).date()
        start = today - dt.timedelta(days=self.config.schedule.missing_lookback_days - 1)
        if not self.calendar.unconfirmed_days(start, today):
            return
        now = time.monotonic()
        if self._calendar_asked_at is not None and now - self._calendar_asked_at < CALENDAR_ASK_EVERY_S:
            return
        self._calendar_asked_at = now
        try:
            self._refresh_calendar(self._db(), start, today)
        except SourceError as exc:
            get_logger().warning(Event.REFERENCE_DATA_UNAVAILABLE, error=str(exc), start_date=start.isoformat(),
                                 end_date=today.isoformat())

    # --- the connection --------------------------------------------------------------------
    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connection.connect(self.dsn, self.config.database.connect_timeout_s,
                                       TimeZone=self.config.schedule.timezone)
        return self._conn

    def _with_db(self, action: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """Run `action` on the worker's connection; a lost connection is reopened and `action` retried."""
        attempts = self.config.sync.retries + 1
        for attempt in range(attempts):
            try:
                return action(self._db())
            except psycopg.OperationalError as exc:
                if exc.pgresult is not None and self._conn is not None and not self._conn.broken:
                    raise  # the server answered a statement with an error (its disk full, say): not a lost connection
                self.close()
                if attempt + 1 == attempts:
                    raise DatabaseDown(f"database unreachable after {attempts} attempts: {exc}") from None
                get_logger().warning(Event.DB_RECONNECT, attempt=attempt + 1, error=str(exc).strip())
                time.sleep(min(self.config.sync.retry_backoff_s * 2 ** attempt, 30.0))
        return None

    def close(self) -> None:
        if self.fetcher is not None:
            self.fetcher.close()
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None


def _run_from_memory(run: RunRecord, state: RunState, status: str, error: str | None,
                     unrecorded: str | None = None) -> RunRecord:
    """The run's end as this daemon saw it. When the database could not record it (`unrecorded`), its row
    stays `running` until whoever next takes the run lock (a standby, or this daemon's idle check once
    the database answers again) marks it `interrupted`: reported so here too, never as what it was not."""
    seen = state.snapshot().current or run
    if unrecorded is not None:
        error = f"the run's end ({status}{': ' + error if error else ''}) could not be recorded: {unrecorded}"
        status = "interrupted"
    return msgspec.structs.replace(seen, status=status, error=error, current_date=None,
                                   finished_at=dt.datetime.now().astimezone())


def _outcome(writer: DayWriter) -> str:
    """succeeded: no day failed or incomplete; failed: some did and no day was written; partial: the rest."""
    if writer.failed == 0:
        return "succeeded"
    return "failed" if writer.written == 0 else "partial"
