"""Request handling for the control loop: one decoded request in, one reply Struct out.

This module owns the meaning of each op (ping/start/status/cancel/history/days) and the one
place a run is admitted: `admit`, used by clients' starts and by scheduled jobs alike. It is
called only from the control loop's thread, one request at a time, which is what makes
"is a run active? then reject, else hand over" atomic. `status` reads only memory. The
database is touched for the run lock and the new run's row (start, on the run's own lock
session: see runlock.py), and for history and days on the control connection, always with a
short statement timeout so a slow database cannot wedge the loop.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import time
import zoneinfo
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from . import __version__, store
from .calendar import TradingCalendar, calendar_days
from .config import Config, scrub
from .logs import get_logger
from .protocol import (
    AnyRequest, BusyReply, Cancel, CancelReply, DaemonInfo, Day, Days, DaysReply, ErrorReply, History,
    HistoryReply, Ping, PingReply, RequestError, Run, ScheduledJob, Start, StartReply, Status, StatusReply,
    Task, check_range, decode_request,
)
from .runlock import RunLock, lock_application_name, recover_orphans
from .runstate import RunState
from .scheduling import Busy
from .sync import SyncJob

LOCK_ATTEMPTS, LOCK_RETRY_S = 4, 0.025  # at most ~75 ms in the rare finishing-holder case
HOST = socket.gethostname()


class ControlDb:
    """The control loop's own connection for reads (history, days, a holder's run). Reopened once when lost."""

    def __init__(self, dsn: str, config: Config) -> None:
        self.dsn = dsn
        self._config = config
        self._conn: psycopg.Connection[Any] | None = None

    def call(self, action: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        for attempt in (1, 2):
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = store.connect(self.dsn, self.connect_timeout_s,
                                               statement_timeout="5000", TimeZone=self._config.schedule.timezone)
                return action(self._conn)
            except psycopg.OperationalError as exc:
                self.close()
                if attempt == 2:
                    raise self.unavailable(exc) from None
        return None

    @property
    def connect_timeout_s(self) -> float:
        return min(5.0, self._config.database.connect_timeout_s)

    def unavailable(self, exc: Exception) -> RequestError:
        return RequestError("database_unavailable", f"database unreachable: {scrub(str(exc).strip(), self.dsn)}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Control:
    def __init__(self, config: Config, state: RunState, submit: Callable[[SyncJob, RunLock], None], db: ControlDb,
                 calendar: TradingCalendar, schedule_jobs: Callable[[], list[ScheduledJob]], database_kind: str) -> None:
        self.config = config
        self.state = state
        self.submit = submit
        self.db = db
        self.calendar = calendar
        self.schedule_jobs = schedule_jobs
        self.database_kind = database_kind
        self.started = time.monotonic()
        self.zone = zoneinfo.ZoneInfo(config.schedule.timezone)
        self._last_request_id: tuple[str, Task] | None = None
        self._log = get_logger()

    def handle(self, frame: bytes) -> Any:
        try:
            request = decode_request(frame)
            return self.dispatch(request)
        except RequestError as exc:
            self._log.info("request_refused", code=exc.code, message=exc.message)
            return exc.reply()
        except Exception as exc:  # never a traceback on the wire: one log event here, a code there
            self._log.exception("request_failed", error=str(exc))
            return ErrorReply(code="internal", message=f"internal error: {type(exc).__name__}")

    def dispatch(self, request: AnyRequest) -> Any:
        match request:
            case Ping():
                return PingReply(version=__version__, pid=os.getpid(), uptime_s=self.uptime())
            case Start():
                return self.start(request)
            case Status():
                return self.status()
            case Cancel():
                return self.cancel(request)
            case History():
                return HistoryReply(runs=self.history(request.limit))
            case Days():
                return DaysReply(days=self.days(request.start_date, request.end_date))
        raise RequestError("bad_request", f"unsupported request {type(request).__name__}")

    def uptime(self) -> float:
        return round(time.monotonic() - self.started, 3)

    # --- start ---------------------------------------------------------------------------
    def start(self, request: Start) -> StartReply | BusyReply:
        check_range(request.start_date, request.end_date, self.config.sync.max_days)
        if request.request_id and self._last_request_id and self._last_request_id[0] == request.request_id:
            return StartReply(run_id=self._last_request_id[1].run_id, task=self._current_or(self._last_request_id[1]))
        try:
            task = self.admit(request.task_type, request.start_date, request.end_date,
                              requested_by=request.requested_by, request_id=request.request_id)
        except Busy as busy:
            assert busy.task is not None
            self._log.warning("sync_rejected", task_type=request.task_type, requested_by=request.requested_by,
                              current_run_id=busy.task.run_id, current_task_type=busy.task.task_type)
            return BusyReply(message=busy_message(busy.task), current_task=busy.task)
        return StartReply(run_id=task.run_id, task=task)

    def start_scheduled(self, task_type: str, days: Sequence[dt.date]) -> str:
        """The scheduler's way in: same admission, same refusal."""
        task = self.admit(task_type, min(days), max(days), requested_by="schedule", only_days=tuple(days))
        return task.run_id

    def admit(self, task_type: str, start: dt.date, end: dt.date, *, requested_by: str,
              request_id: str | None = None, only_days: tuple[dt.date, ...] | None = None) -> Task:
        """Hand a run to the worker if nothing runs here or on any daemon sharing the database; else raise Busy."""
        _, current, _ = self.state.snapshot()
        if current is not None:
            raise Busy(current)
        lock = self._take_run_lock()
        try:
            task = self._record_new_run(lock, task_type, start, end, requested_by, request_id, only_days)
        except BaseException:
            lock.release()
            raise
        self.state.begin(task)
        self.submit(SyncJob(run_id=task.run_id, task_type=task_type, requested_by=requested_by, request_id=request_id,
                            start_date=start, end_date=end, total_days=task.total_days, start_time=task.start_time,
                            days=only_days), lock)
        if request_id:
            self._last_request_id = (request_id, task)
        get_logger(run_id=task.run_id, task_type=task_type).info(
            "sync_lock_acquired", start_date=task.start_date, end_date=task.end_date, requested_by=requested_by)
        return task

    def _take_run_lock(self) -> RunLock:
        """The database run lock on a new session, or Busy with the holder's task from sync_runs."""
        for attempt in range(LOCK_ATTEMPTS):
            try:
                lock = RunLock.try_take(self.db.dsn, self.db.connect_timeout_s)
            except psycopg.OperationalError as exc:
                raise self.db.unavailable(exc) from None
            if lock is not None:
                return lock
            if self.db.call(store.run_lock_holder_name) != lock_application_name():
                holder = self.db.call(store.running_run)
                if holder is not None:
                    raise Busy(task_from_run(holder))
            # Our own worker's idle check holds it for a moment, or the holder is between its
            # row and its lock: either lets go within milliseconds.
            time.sleep(LOCK_RETRY_S)
        raise Busy(task_from_lock_holder(self.db.call(store.run_lock_holder_name)))

    def _record_new_run(self, lock: RunLock, task_type: str, start: dt.date, end: dt.date, requested_by: str,
                        request_id: str | None, only_days: tuple[dt.date, ...] | None) -> Task:
        """Under the lock: mark runs orphaned by dead daemons interrupted, then insert this run's row."""
        days = only_days if only_days is not None else tuple(calendar_days(start, end))
        task = Task(run_id=new_run_id(), task_type=task_type, requested_by=requested_by, start_time="",
                    start_date=start.isoformat(), end_date=end.isoformat(), total_days=(end - start).days + 1,
                    trading_days=sum(map(self.calendar.is_trading_day, days)), request_id=request_id,
                    host=HOST, pid=os.getpid())
        try:
            for run_id in store.recover_orphaned_runs(lock.conn):
                self._log.warning("run_interrupted", run_id=run_id, found_by="run_lock")
            started = store.insert_run(lock.conn, run_from_task(task), request_id)
        except psycopg.OperationalError as exc:
            raise self.db.unavailable(exc) from None
        task.start_time = started.astimezone(self.zone).isoformat(timespec="seconds")
        return task

    # --- runs orphaned by a dead daemon ------------------------------------------------------------
    def recover_orphans(self) -> bool:
        """If the run lock is free, no run is alive anywhere: mark runs left `running` interrupted. True if any."""
        try:
            return bool(recover_orphans(self.db.dsn, self.db.connect_timeout_s, found_by="history"))
        except psycopg.OperationalError as exc:
            raise self.db.unavailable(exc) from None

    def _current_run_id(self) -> str | None:
        _, task, _ = self.state.snapshot()
        return task.run_id if task else None

    def _current_or(self, task: Task) -> Task:
        _, current, _ = self.state.snapshot()
        return current if current is not None and current.run_id == task.run_id else task

    # --- status, cancel, days --------------------------------------------------------------
    def status(self) -> StatusReply:
        state, task, last = self.state.snapshot()
        return StatusReply(state=state, current_task=task, last_run=last, schedule=self.schedule_jobs(),
                           daemon=DaemonInfo(version=__version__, pid=os.getpid(), uptime_s=self.uptime(),
                                             endpoint=self.config.daemon.endpoint, source=self.config.source.name,
                                             database=self.database_kind))

    def cancel(self, request: Cancel) -> CancelReply:
        _, task, _ = self.state.snapshot()
        if task is None:
            raise RequestError("not_running", "no sync is running" + self._elsewhere())
        if request.run_id is not None and request.run_id != task.run_id:
            raise RequestError("not_running", f"run {request.run_id} is not running (the current run is {task.run_id})")
        self.state.request_cancel()
        get_logger(run_id=task.run_id, task_type=task.task_type).info("cancel_requested")
        return CancelReply(run_id=task.run_id, state="cancelling")

    def _elsewhere(self) -> str:
        """For a refused cancel on a standby: where the run is, so the operator cancels it there."""
        try:
            run = self.db.call(store.running_run)
        except RequestError:
            return ""
        if run is None:
            return ""
        return f" on this daemon; run {run.run_id} is running on {run.host} (pid {run.pid}): cancel it there"

    def history(self, limit: int) -> list[Run]:
        runs = self.db.call(lambda c: store.history(c, limit))
        if any(r.status == "running" and r.run_id != self._current_run_id() for r in runs) and self.recover_orphans():
            runs = self.db.call(lambda c: store.history(c, limit))
        return runs

    def days(self, start: dt.date, end: dt.date) -> list[Day]:
        """Recorded days, with never-planned days filled in from the calendar (pending or skipped)."""
        check_range(start, end, self.config.sync.max_days)
        found = self.db.call(lambda c: store.days(c, start, end))
        if any(d.status == "syncing" and d.run_id != self._current_run_id() for d in found) and self.recover_orphans():
            found = self.db.call(lambda c: store.days(c, start, end))
        recorded = {d.date: d for d in found}
        out = []
        for day in calendar_days(start, end):
            key = day.isoformat()
            out.append(recorded.get(key) or Day(date=key, status="pending" if self.calendar.is_trading_day(day) else "skipped",
                                                rows=0, run_id=None, error=None))
        return out

    def missing_days(self, start: dt.date, end: dt.date) -> list[dt.date]:
        statuses = self.db.call(lambda c: store.day_statuses(c, start, end))
        return [d for d in calendar_days(start, end) if self.calendar.is_trading_day(d) and statuses.get(d) != "success"]


def busy_message(task: Task) -> str:
    where = f" on {task.host} (pid {task.pid})" if task.host else ""
    return (f"a sync is already running{where}: {task.task_type} {task.run_id} ({task.start_date}..{task.end_date}), "
            "try again when it has finished")


def new_run_id() -> str:
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def task_from_run(run: Run) -> Task:
    return Task(run_id=run.run_id, task_type=run.task_type, requested_by=run.requested_by, start_time=run.started_at,
                start_date=run.start_date, end_date=run.end_date, total_days=run.total_days, trading_days=run.trading_days,
                days_done=run.days_done, days_failed=run.days_failed, rows=run.rows,
                progress=round(run.days_done / run.trading_days, 4) if run.trading_days else 0.0,
                host=run.host, pid=run.pid)


def run_from_task(task: Task) -> Run:
    return Run(run_id=task.run_id, task_type=task.task_type, requested_by=task.requested_by, status="running",
               start_date=task.start_date, end_date=task.end_date, total_days=task.total_days,
               trading_days=task.trading_days, days_done=0, days_failed=0, rows=0, started_at=task.start_time,
               finished_at=None, error=None, host=task.host or HOST, pid=task.pid or os.getpid())


def task_from_lock_holder(application_name: str | None) -> Task:
    """The little known of a holder whose run row is not (or no longer) `running`: its session's name."""
    fields = dict(part.split("=", 1) for part in (application_name or "").split()[1:] if "=" in part)
    pid = fields.get("pid", "")
    return Task(run_id="unknown", task_type="unknown", requested_by="another daemon", start_time="", start_date="",
                end_date="", total_days=0, host=fields.get("host"), pid=int(pid) if pid.isdigit() else None)
