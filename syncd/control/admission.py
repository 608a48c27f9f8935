"""Admission: the one place a run is let in, for clients' starts and scheduled jobs alike.

`Admission.admit` runs on the control loop's thread only, one request at a time, which makes
"is a run active? then refuse, else hand over" atomic on this daemon. Across daemons sharing
the database, the run lock decides (db/runlock.py): admission takes it on a new session, marks
runs orphaned by dead daemons interrupted, records the new run (so its run_id is in
`history` before the start reply leaves), marks the RunState busy and hands the run and its
lock to the worker. A refusal is `Busy`, carrying the running task (this daemon's, or the
holder's as sync_runs records it). It also remembers request_ids, so a retried start returns
its own run instead of a second one or a busy about itself.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence

import psycopg

from ..calendar import TradingCalendar
from ..db import runlock, runs
from ..db.runlock import LockHolder, Orphans, RunLock
from ..logs import Event, get_logger
from ..protocol import Task
from ..record import RunRecord
from ..telemetry.observer import NULL_OBSERVER, Observer
from .reads import ControlDb
from .runstate import RunState

LOCK_ATTEMPTS, LOCK_RETRY_S = 4, 0.025  # at most ~75 ms in the rare finishing-holder case

Submit = Callable[[RunRecord, RunLock], None]


class Busy(Exception):
    """A run is active (here or on another daemon sharing the database); `task` is that run."""

    def __init__(self, task: Task) -> None:
        super().__init__("busy")
        self.task = task


class Admission:
    def __init__(self, state: RunState, submit: Submit, db: ControlDb, calendar: TradingCalendar,
                 zone: dt.tzinfo, observer: Observer = NULL_OBSERVER) -> None:
        self.state = state
        self.observer = observer
        self.submit = submit
        self.db = db
        self.calendar = calendar
        self.zone = zone
        self._last_request: tuple[str, RunRecord] | None = None  # the last start that had a request_id, and its run
        self.orphans = Orphans(db.lock_dsn, db.connect_timeout_s, observer.runs_interrupted)  # Ops recovers through it too
        self._log = get_logger()

    def admit(self, task_type: str, start: dt.date, end: dt.date, *, requested_by: str,
              request_id: str | None = None, only_days: tuple[dt.date, ...] | None = None) -> RunRecord:
        """Hand a new run to the worker and return (a copy of) its record; raise Busy if a run is active anywhere."""
        snapshot = self.state.snapshot()
        if snapshot.current is not None:
            raise Busy(snapshot.current.task(self.zone, snapshot.eta_s))
        lock = self._take_run_lock()
        try:
            run = self._record_new_run(lock, RunRecord(
                run_id=new_run_id(self.zone), task_type=task_type, requested_by=requested_by, start_date=start,
                end_date=end, request_id=request_id, days=only_days, host=socket.gethostname(), pid=os.getpid()))
        except BaseException:
            lock.release()
            raise
        self.state.begin(run)
        self.submit(run.copy(), lock)
        if request_id:
            self._last_request = (request_id, run.copy())
        get_logger(run_id=run.run_id, task_type=task_type).info(
            Event.SYNC_LOCK_ACQUIRED, start_date=start.isoformat(), end_date=end.isoformat(), requested_by=requested_by)
        return run

    def start_scheduled(self, task_type: str, days: Sequence[dt.date]) -> str:
        """The scheduler's way in: the same admission, the same refusal (Busy)."""
        return self.admit(task_type, min(days), max(days), requested_by="schedule", only_days=tuple(days)).run_id

    def repeat_of(self, request_id: str | None) -> RunRecord | None:
        """The run that the last start carrying this request_id began (fresher from RunState when it has it)."""
        if not request_id or self._last_request is None or self._last_request[0] != request_id:
            return None
        admitted = self._last_request[1]
        snapshot = self.state.snapshot()
        return next((run for run in (snapshot.current, snapshot.last) if run is not None and run.run_id == admitted.run_id),
                    admitted.copy())

    def _take_run_lock(self) -> RunLock:
        """The database run lock on a new session, or Busy with the holder's task from sync_runs."""
        holder_name: str | None = None
        for _ in range(LOCK_ATTEMPTS):
            try:
                lock = RunLock.try_take(self.db.lock_dsn, self.db.connect_timeout_s)
            except psycopg.OperationalError as exc:
                raise self.db.unavailable(exc) from None
            if lock is not None:
                return lock
            holder_name = self.db.call(runlock.run_lock_holder_name)
            if holder_name != LockHolder.me().application_name():
                holder = self.db.call(runs.running_run)
                if holder is not None:
                    raise Busy(holder.task(self.zone))
            # Our own worker's idle check holds it for a moment, or the holder is between its
            # row and its lock: either lets go within milliseconds.
            time.sleep(LOCK_RETRY_S)
        raise Busy(unknown_holder_task(LockHolder.parse(holder_name)))

    def _record_new_run(self, lock: RunLock, run: RunRecord) -> RunRecord:
        """Under the lock: end writes still open from a run that lost the lock, mark runs orphaned by dead
        daemons interrupted, then insert this run's row."""
        run.trading_days = sum(map(self.calendar.is_trading_day, run.planned_days()))
        try:
            self.orphans.recover("run_lock", lock)
            run.started_at = runs.insert_run(lock.conn, run)
        except psycopg.OperationalError as exc:
            raise self.db.unavailable(exc) from None
        return run


def new_run_id(zone: dt.tzinfo) -> str:
    """YYYYMMDD-HHMMSS in the schedule's time zone (the exchange's day), then 6 random hex digits."""
    return f"{dt.datetime.now(zone):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def unknown_holder_task(holder: LockHolder) -> Task:
    """The little known of a holder whose run row is not (or no longer) `running`: its session's name."""
    return Task(run_id="unknown", task_type="unknown", requested_by="another daemon", start_time="", start_date="",
                end_date="", total_days=0, host=holder.host, pid=holder.pid)
