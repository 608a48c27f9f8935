"""Is the data fresh? The one judgement behind `check`, the `late` alert and the freshness metrics.

This module owns the rule (docs/operations.md, "Health check"): a trading day counts as
*completed* once its `alert.late_after` time (in the schedule's time zone) has passed; syncd
is healthy when the latest completed trading day is `success` and the last scheduled run
(`scheduler_daily` or `scheduler_missing`) did not end `failed` or `interrupted` (with no
scheduled run yet, the day alone decides). Past the packaged holiday calendar's horizon a
weekday that no calendar confirms is neither assumed open nor closed: it makes the judgement
unhealthy with that reason, and the latest completed trading day is the last confirmed one.
Pure logic over a calendar and what the caller read from the database; no I/O, no clock of its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..calendar import TradingCalendar, builtin_horizon
from ..record import RunRecord

SCHEDULED_TASK_TYPES = ("scheduler_daily", "scheduler_missing")
UNHEALTHY_RUN_STATUSES = ("failed", "interrupted")
LOOKBACK_DAYS = 400  # the longest exchange closure is ~10 days; past a year, nothing is "latest"

DayKind = Literal["trading", "closed", "unconfirmed"]


def day_kind(calendar: TradingCalendar, day: dt.date) -> DayKind:
    """Whether `day` trades, as far as a calendar can *confirm* it: the horizon rule's one plug-in point.

    Past the packaged holiday calendar's horizon (chinese_calendar ends with 2026) a weekday is a
    trading day only when a calendar confirms it (a source's trade calendar, a csv day's file,
    the demo's synthetic weekdays); otherwise it is "unconfirmed" (calendar.TradingCalendar.kind).
    Every user of this module (check, the late alert, the metrics) follows it.
    """
    return calendar.kind(day).value


@dataclass(frozen=True)
class CompletedDay:
    """The latest completed trading day a calendar confirms (None if none within LOOKBACK_DAYS), and the
    completed weekdays after it that no calendar confirms (newest first)."""

    day: dt.date | None
    unconfirmed: tuple[dt.date, ...] = ()


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    reason: str
    completed: CompletedDay = field(default_factory=lambda: CompletedDay(None))
    day_status: str | None = None

    @property
    def late(self) -> bool:
        """The `late` alert's condition: the data of the latest completed trading day is not there (or cannot be
        known to be due); a failed scheduled run alone is the `failed` alert's business."""
        return bool(self.completed.unconfirmed) or (self.completed.day is not None and self.day_status != "success")


class FreshnessJudge:
    """Judges freshness in `zone` with `late_after` as the moment a trading day counts as completed."""

    def __init__(self, calendar: TradingCalendar, zone: dt.tzinfo, late_after: dt.time,
                 kind: Callable[[dt.date], DayKind] | None = None) -> None:
        self.calendar = calendar
        self.zone = zone
        self.late_after = late_after
        self._kind = kind or (lambda day: day_kind(calendar, day))

    def latest_completed(self, now: dt.datetime) -> CompletedDay:
        """The latest trading day whose late_after moment is not after `now`."""
        local = now.astimezone(self.zone)
        day = local.date() if local.time().replace(tzinfo=None) >= self.late_after else local.date() - dt.timedelta(days=1)
        unconfirmed: list[dt.date] = []
        for _ in range(LOOKBACK_DAYS):
            kind = self._kind(day)
            if kind == "trading":
                return CompletedDay(day, tuple(unconfirmed))
            if kind == "unconfirmed":
                unconfirmed.append(day)
            day -= dt.timedelta(days=1)
        return CompletedDay(None, tuple(unconfirmed))

    def judge(self, completed: CompletedDay, day_status: str | None, last_scheduled: RunRecord | None) -> Verdict:
        """The verdict on what the caller read: the completed day's status (None: no record) and the newest
        scheduled run (None: none yet)."""
        status = (day_status or "pending") if completed.day is not None else None
        problems = []
        if completed.unconfirmed:
            problems.append(_unconfirmed_reason(completed.unconfirmed))
        if completed.day is None:
            problems.append(f"no trading day in the last {LOOKBACK_DAYS} days is confirmed by a calendar")
        elif status != "success":
            problems.append(f"{completed.day}, the latest completed trading day, is {status}{_DAY_HINT.get(status or '', '')}")
        if last_scheduled is not None and last_scheduled.status in UNHEALTHY_RUN_STATUSES:
            problems.append(f"the last scheduled run {last_scheduled.run_id} ({last_scheduled.task_type}, "
                            f"{last_scheduled.start_date}..{last_scheduled.end_date}) ended {last_scheduled.status}"
                            + (f": {last_scheduled.error}" if last_scheduled.error else ""))
        if problems:
            return Verdict(False, "; ".join(problems), completed, status)
        run = (f"; the last scheduled run {last_scheduled.run_id} ({last_scheduled.task_type}) "
               f"{'is running' if last_scheduled.status == 'running' else last_scheduled.status}" if last_scheduled
               else "; no scheduled run yet")
        return Verdict(True, f"{completed.day}, the latest completed trading day, is success{run}", completed, status)


_DAY_HINT = {
    "pending": " (not synced yet)",
    "syncing": " (a run is syncing it now)",
    "failed": " (its sync failed; `syncctl days` shows the error)",
    "incomplete": " (some stocks are missing; the missing-data job fetches them again)",
}


def _unconfirmed_reason(days: tuple[dt.date, ...]) -> str:
    last_year = builtin_horizon()[1]
    return (f"{days[0]} is past the packaged trading calendar (chinese_calendar knows holidays until {last_year}-12-31) "
            "and no calendar confirms whether it trades: upgrade chinese_calendar, or use a source that knows the "
            "exchange calendar (akshare, baostock)")


def parse_clock(value: str) -> dt.time:
    """"HH:MM" or "HH:MM:SS" (config-validated) as a time of day."""
    return dt.time.fromisoformat(value)


def midnight_epoch(day: dt.date, zone: dt.tzinfo) -> float:
    """Seconds since the epoch of `day`'s midnight in `zone` (how the metrics give a trade date)."""
    return dt.datetime.combine(day, dt.time(), zone).timestamp()
