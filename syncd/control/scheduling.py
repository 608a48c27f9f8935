"""The built-in schedule: a daily sync of today and a missing-data backfill, owned by the control loop.

This module owns one `schedule.Scheduler` instance (never the library's module-level default),
the two jobs, and how their next run times are reported. A job only *asks* for a run through
the same path as a client's start, so a job that finds the daemon busy is refused like anyone
else and logged as `schedule_skipped_busy`; the next missing-data run heals what it skipped.
Job exceptions are logged, never raised into the loop.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable, Sequence
from typing import Any

import schedule

from ..calendar import DayKind, beyond_horizon_reason
from ..config import ScheduleConfig
from ..logs import Event, get_logger
from ..protocol import ScheduledJob, Task
from .admission import Busy

DAILY, MISSING = "scheduler_daily", "scheduler_missing"


# start(task_type, days) -> run_id; raises Busy (or another exception, logged)
StartRun = Callable[[str, Sequence[dt.date]], str]
DayKindOf = Callable[[dt.date], DayKind]
MissingDays = Callable[[dt.date, dt.date], list[dt.date]]


class DailySchedule:
    def __init__(self, config: ScheduleConfig, start_run: StartRun, day_kind: DayKindOf,
                 missing_days: MissingDays, now: Callable[[], dt.datetime] | None = None) -> None:
        self.config = config
        self.zone = zoneinfo.ZoneInfo(config.timezone)
        self._start_run = start_run
        self._day_kind = day_kind
        self._missing_days = missing_days
        self._now = now or (lambda: dt.datetime.now(self.zone))
        self._log = get_logger()
        self.scheduler = schedule.Scheduler()
        if config.enabled:
            self.scheduler.every().day.at(config.daily_at, config.timezone).do(self._guarded, DAILY, self.run_daily).tag(DAILY)
            self.scheduler.every().day.at(config.missing_at, config.timezone).do(self._guarded, MISSING, self.run_missing).tag(MISSING)

    def idle_seconds(self) -> float | None:
        """Seconds until the next job is due (0 when overdue), None with no jobs."""
        idle = self.scheduler.idle_seconds
        return None if idle is None else max(0.0, idle)

    def run_pending(self) -> None:
        self.scheduler.run_pending()

    def jobs(self) -> list[ScheduledJob]:
        entries = []
        for job in sorted(self.scheduler.jobs, key=lambda j: j.next_run or dt.datetime.max):
            tag = str(next(iter(job.tags), "job"))
            next_run = job.next_run.astimezone(self.zone).isoformat(timespec="seconds") if job.next_run else None
            entries.append(ScheduledJob(job=tag, next_run=next_run))
        return entries

    def catch_up(self) -> None:
        """Run the missing-data job now (after start-up), if configured."""
        if self.config.enabled and self.config.catch_up_on_start:
            self._guarded(MISSING, self.run_missing, reason="catch_up_on_start")

    # --- the jobs --------------------------------------------------------------------------
    def run_daily(self) -> None:
        """Sync today if a calendar confirms it as a trading day; an unconfirmed weekday starts no run (it stays pending)."""
        today = self._now().astimezone(self.zone).date()
        kind = self._day_kind(today)
        if kind is DayKind.UNCONFIRMED:
            self._log.warning(Event.SCHEDULE_NOT_TRADING_DAY, job=DAILY, date=today.isoformat(), reason="unconfirmed",
                              detail=beyond_horizon_reason(today))
            return
        if kind is DayKind.CLOSED:
            why = "weekend" if today.weekday() >= 5 else "exchange holiday"
            self._log.info(Event.SCHEDULE_NOT_TRADING_DAY, job=DAILY, date=today.isoformat(), reason=why)
            return
        self._request(DAILY, [today])

    def run_missing(self) -> None:
        today = self._now().astimezone(self.zone).date()
        start = today - dt.timedelta(days=self.config.missing_lookback_days - 1)
        days = self._missing_days(start, today)
        if not days:
            self._log.info(Event.SCHEDULE_NOTHING_MISSING, job=MISSING, start_date=start.isoformat(), end_date=today.isoformat())
            return
        self._request(MISSING, days)

    def _request(self, job: str, days: Sequence[dt.date]) -> None:
        try:
            run_id = self._start_run(job, days)
        except Busy as busy:
            self._log.warning(Event.SCHEDULE_SKIPPED_BUSY, job=job, current_task=_task_summary(busy.task))
            return
        self._log.info(Event.SCHEDULE_RUN_STARTED, job=job, run_id=run_id, task_type=job, days=len(days),
                       start_date=min(days).isoformat(), end_date=max(days).isoformat())

    def _guarded(self, job: str, action: Callable[[], None], reason: str = "scheduled") -> None:
        self._log.info(Event.SCHEDULE_FIRED, job=job, reason=reason)
        try:
            action()
        except Exception as exc:  # a job's failure must never take the control loop down
            self._log.exception(Event.SCHEDULE_JOB_FAILED, job=job, reason=reason, error=str(exc))


def _task_summary(task: Task | None) -> dict[str, Any] | None:
    if task is None:
        return None
    return {"run_id": task.run_id, "task_type": task.task_type, "start_date": task.start_date,
            "end_date": task.end_date, "start_time": task.start_time, "progress": task.progress}
