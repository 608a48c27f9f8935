"""One run, one record: `RunRecord` is what syncd knows about a run, from admission to its end.

The control loop creates it when it admits a run, the database stores it (sync_runs), the
worker's progress updates it inside RunState, and every wire shape is produced from it:
`task()` for the in-flight view (`start`, `status`, busy replies) and `run()` for the
recorded view (`history`, `last_run`). Dates are `datetime.date` and times aware datetimes
here; they become strings only at the wire, by one rule: ISO 8601 to the second, with the
offset of the schedule's time zone. A record is a value: whoever hands one to another
thread hands a copy (`copy()`).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import msgspec

from .calendar import calendar_days
from .protocol import Run, Task


class RunRecord(msgspec.Struct, kw_only=True):
    run_id: str
    task_type: str
    requested_by: str
    start_date: dt.date
    end_date: dt.date
    host: str
    pid: int
    request_id: str | None = None
    # Only these days (the missing-data job); None means every day of start_date..end_date.
    days: tuple[dt.date, ...] | None = None
    status: str = "running"
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    trading_days: int = 0
    days_done: int = 0
    days_failed: int = 0
    rows: int = 0
    current_date: dt.date | None = None
    error: str | None = None
    fallback_source: str | None = None  # the fallback source being asked right now (status), else None

    @property
    def total_days(self) -> int:
        """Calendar days in the range, as the original product counted them."""
        return (self.end_date - self.start_date).days + 1

    @property
    def progress(self) -> float:
        return round(self.days_done / self.trading_days, 4) if self.trading_days else 0.0

    def planned_days(self) -> list[dt.date]:
        """The calendar days this run covers, in order."""
        return sorted(self.days) if self.days is not None else list(calendar_days(self.start_date, self.end_date))

    def copy(self) -> RunRecord:
        return msgspec.structs.replace(self)

    def task(self, zone: dt.tzinfo, eta_s: float | None = None) -> Task:
        return Task(run_id=self.run_id, task_type=self.task_type, requested_by=self.requested_by,
                    start_time=wire_time(self.started_at, zone) or "", start_date=self.start_date.isoformat(),
                    end_date=self.end_date.isoformat(), total_days=self.total_days, trading_days=self.trading_days,
                    days_done=self.days_done, days_failed=self.days_failed, rows=self.rows,
                    current_date=self.current_date.isoformat() if self.current_date else None,
                    progress=self.progress, eta_s=eta_s, request_id=self.request_id, host=self.host, pid=self.pid,
                    fallback_source=self.fallback_source)

    def run(self, zone: dt.tzinfo) -> Run:
        return Run(run_id=self.run_id, task_type=self.task_type, requested_by=self.requested_by, status=self.status,
                   start_date=self.start_date.isoformat(), end_date=self.end_date.isoformat(),
                   total_days=self.total_days, trading_days=self.trading_days, days_done=self.days_done,
                   days_failed=self.days_failed, rows=self.rows, started_at=wire_time(self.started_at, zone) or "",
                   finished_at=wire_time(self.finished_at, zone), error=self.error, host=self.host, pid=self.pid)


def wire_time(moment: dt.datetime | None, zone: dt.tzinfo) -> str | None:
    """The wire's one time rule: ISO 8601 to the second with the zone's offset (None stays None)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a naive time is this host's local time
    return moment.astimezone(zone).isoformat(timespec="seconds")


def zone_of(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)
