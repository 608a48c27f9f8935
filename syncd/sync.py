"""The one sync method: plan a date range into trading days, fetch them in windows, write each day atomically.

`Syncer.run(run, state, lock)` runs on the worker thread and only there. It owns the worker's
database connection (reopened when lost, the day retried), retries with backoff, per-day
failure handling (the run goes on and ends `partial`), cooperative cancel between days and
fetch batches, and the run's record in sync_runs (inserted by the control loop at admission).
Each day is written only while the run holds the run lock (`RunLock.fence`). Progress goes to the RunState; events to
the log with run_id and task_type bound.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import psycopg

from . import store
from .calendar import TradingCalendar, calendar_days
from .config import Config
from .logs import Event, get_logger
from .observer import NULL_OBSERVER, Observer
from .prefetch import read_ahead
from .record import RunRecord
from .runlock import RunLock, RunLockLost, recover_orphans
from .runstate import RunState
from .sources.base import DayFailure, DayRows, Source, SourceError


class DatabaseDown(Exception):
    """The database could not be reached after the configured retries."""


class Syncer:
    def __init__(self, config: Config, dsn: str, source: Source, calendar: TradingCalendar,
                 observer: Observer = NULL_OBSERVER) -> None:
        self.config = config
        self.observer = observer  # metrics and alerts: told of each day's end (telemetry.py)
        self.dsn = dsn
        self.source = source
        self.calendar = calendar
        self._conn: psycopg.Connection[Any] | None = None
        self._stocks_saved: object = None
        self._fence: Callable[[psycopg.Connection[Any]], None] | None = None

    # --- the run ---------------------------------------------------------------------------
    def run(self, run: RunRecord, state: RunState, lock: RunLock | None = None) -> RunRecord:
        log = get_logger(run_id=run.run_id, task_type=run.task_type)
        error: str | None = None
        self._fence = (lambda conn: lock.fence(conn, run.run_id)) if lock is not None else None
        try:
            trading = self._begin(run, state)
            failed = self._sync_days(run, trading, state, log)
            status = "cancelled" if state.cancel_requested else _outcome(len(trading), failed)
            if failed:
                error = f"{failed} of {len(trading)} trading days failed"
        except RunLockLost as exc:
            log.error(Event.RUN_LOCK_LOST, error=str(exc))
            status, error = "failed", str(exc)
        except Exception as exc:  # a run must always end recorded; the loop boundary is here
            log.exception(Event.RUN_ERROR, error=str(exc))
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        return self._finish(run, state, status, error, log)

    def _begin(self, run: RunRecord, state: RunState) -> list[dt.date]:
        conn = self._db()
        self._refresh_reference_data(conn, run)  # a source's calendar may change which days trade
        days = run.planned_days()
        trading = [d for d in days if self.calendar.is_trading_day(d)]
        closed = [d for d in days if not self.calendar.is_trading_day(d)]
        store.set_trading_days(conn, run.run_id, len(trading))
        store.plan_days(conn, run.run_id, trading, closed)
        state.planned(len(trading))
        return trading

    def _refresh_reference_data(self, conn: psycopg.Connection[Any], run: RunRecord) -> None:
        """Let a source with an authoritative calendar or stock list override the built-in ones."""
        try:
            self._refresh_calendar_and_stocks(conn, run)
        except SourceError as exc:  # the built-in calendar still plans the run; the list can wait a day
            get_logger(run_id=run.run_id, task_type=run.task_type).warning(Event.REFERENCE_DATA_UNAVAILABLE, error=str(exc))

    def _refresh_calendar_and_stocks(self, conn: psycopg.Connection[Any], run: RunRecord) -> None:
        open_days = self.source.trading_days(run.start_date, run.end_date)
        if open_days is not None:
            store.save_calendar(conn, run.start_date, run.end_date, open_days, self.source.name)
            open_set = set(open_days)
            self.calendar.update({d: d in open_set for d in calendar_days(run.start_date, run.end_date)})
        stocks = self.source.stock_list()
        if stocks is not None and stocks is not self._stocks_saved:
            store.save_stocks(conn, stocks)
            self._stocks_saved = stocks

    def _sync_days(self, run: RunRecord, trading: Sequence[dt.date], state: RunState, log: Any) -> int:
        failed = 0
        window = max(1, self.source.window_days)
        for i in range(0, len(trading), window):
            if state.cancel_requested:
                break
            failed += self._sync_window(run, trading[i:i + window], state, log)
        return failed

    def _sync_window(self, run: RunRecord, window: Sequence[dt.date], state: RunState, log: Any) -> int:
        """Fetch and write one window, retrying what failed; return how many days ended failed."""
        self._with_db(lambda c: store.mark_syncing(c, window, run.run_id))
        pending = list(window)
        errors: dict[dt.date, str] = {}
        for attempt in range(self.config.sync.retries + 1):
            if attempt and state.wait_cancel(self.config.sync.retry_backoff_s * 2 ** (attempt - 1)):
                break
            try:
                for day, result in read_ahead(self.source.fetch_window(list(pending), lambda: state.cancel_requested)):
                    state.day_started(day)
                    if isinstance(result, DayFailure):
                        errors[day] = result.error
                        continue
                    self._write_day(run, day, result, state, log)
                    pending.remove(day)
                    errors.pop(day, None)
            except (RunLockLost, DatabaseDown):
                raise
            except Exception as exc:  # a source's whole-window failure: retry the window
                log.warning(Event.FETCH_FAILED, days=len(pending), attempt=attempt + 1, error=str(exc))
                for day in pending:
                    errors.setdefault(day, f"{type(exc).__name__}: {exc}")
            if not pending or state.cancel_requested:
                break
            log.info(Event.FETCH_RETRY, days=[d.isoformat() for d in pending], attempt=attempt + 1)
        if state.cancel_requested:
            self._with_db(lambda c: store.unmark_syncing(c, run.run_id))
            return 0
        for day in pending:
            error = errors.get(day, "source returned no data for this day")
            self._with_db(lambda c, day=day, error=error: store.fail_day(c, day, run.run_id, error))
            state.day_finished(0, failed=True)
            self.observer.day_finished("failed", 0, None)
            log.warning(Event.DAY_FAILED, date=day.isoformat(), error=error)
        return len(pending)

    def _write_day(self, run: RunRecord, day: dt.date, rows: DayRows, state: RunState, log: Any) -> None:
        started = time.perf_counter()
        count = self._with_db(lambda c: store.replace_day(c, day, rows, run.run_id, self._fence))
        state.day_finished(count, failed=False)
        elapsed = time.perf_counter() - started
        self.observer.day_finished("success", count, elapsed)
        log.info(Event.DAY_SYNCED, date=day.isoformat(), rows=count, ms=round(elapsed * 1000, 1))

    def _finish(self, run: RunRecord, state: RunState, status: str, error: str | None, log: Any) -> RunRecord:
        try:
            self._with_db(lambda c: store.unmark_syncing(c, run.run_id))  # days left mid-window get their status back
            recorded = self._with_db(lambda c: store.finish_run(c, run.run_id, status, error))
        except Exception as exc:  # the database is gone: report the run from memory; restart recovery fixes the row
            log.error(Event.RUN_RECORD_FAILED, error=str(exc))
            recorded = None
        recorded = recorded or _run_from_memory(run, state, status, error)
        log.info(Event.RUN_FINISHED, status=status, error=error, trading_days=recorded.trading_days,
                 days_done=recorded.days_done, days_failed=recorded.days_failed, rows=recorded.rows)
        return recorded

    # --- between runs (the worker's idle housekeeping) --------------------------------------
    def recover_orphans(self) -> None:
        """A run recorded `running` while the run lock is free belongs to a dead daemon: mark it interrupted."""
        if store.running_run(self._db()) is not None:  # the cheap query first: a lock attempt only then
            recover_orphans(self.dsn, self.config.database.connect_timeout_s, found_by="idle check",
                            on_interrupted=self.observer.runs_interrupted)

    # --- the connection --------------------------------------------------------------------
    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = store.connect(self.dsn, self.config.database.connect_timeout_s,
                                       TimeZone=self.config.schedule.timezone)
        return self._conn

    def _with_db(self, action: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """Run `action` on the worker's connection; a lost connection is reopened and `action` retried."""
        attempts = self.config.sync.retries + 1
        for attempt in range(attempts):
            try:
                return action(self._db())
            except psycopg.OperationalError as exc:
                self.close()
                if attempt + 1 == attempts:
                    raise DatabaseDown(f"database unreachable after {attempts} attempts: {exc}") from None
                get_logger().warning(Event.DB_RECONNECT, attempt=attempt + 1, error=str(exc).strip())
                time.sleep(min(self.config.sync.retry_backoff_s * 2 ** attempt, 30.0))
        return None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None


def _run_from_memory(run: RunRecord, state: RunState, status: str, error: str | None) -> RunRecord:
    """The run's end as this daemon saw it, when the database could not record it."""
    seen = state.snapshot().current or run
    return msgspec.structs.replace(seen, status=status, error=error, current_date=None,
                                   finished_at=dt.datetime.now().astimezone())


def _outcome(trading_days: int, failed: int) -> str:
    if failed == 0:
        return "succeeded"
    return "failed" if failed == trading_days else "partial"
