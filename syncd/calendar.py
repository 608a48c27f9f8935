"""Which calendar days are trading days on the Shanghai/Shenzhen exchanges, and which no calendar can say.

Every day is one of three kinds (`DayKind`): `trading`, `closed`, or `unconfirmed`. The
calendars, most authoritative first: open/closed days a source published (its own calendar,
stored in the trade_calendar table and handed in as `overrides`); weekends, always closed;
the chinese_calendar package's published holidays, within its years (its horizon, through
2026 in the version syncd is built with); and past that horizon, the source's own word for a
weekday (`confirms`: the demo's synthetic weekdays, a csv day's file). A weekday that none of
them covers is `unconfirmed`: it is neither synced nor failed, it stays `pending` with
`beyond_horizon_reason()`, and it is logged (`calendar_beyond_horizon`) once a day. Nothing
here treats an unconfirmed day as trading. This module reads no database itself.

One TradingCalendar is shared by two threads: the worker `update`s it with a source's
calendar (at the start of a run, and ahead of the schedule while idle) while the control loop
asks it (admission, the schedule, `days`, `check`). Its state is guarded by one lock, held
only for dictionary operations; `confirms` must be quick (no network: the csv source stats a
file).
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum

import chinese_calendar

Warn = Callable[[str, dict[str, object]], None]
Confirms = Callable[[dt.date], bool]

# How far back last_confirmed_trading_day looks (the longest closure, Spring Festival, is ~10 days).
CONFIRMED_LOOKBACK_DAYS = 400


class DayKind(StrEnum):
    TRADING = "trading"
    CLOSED = "closed"
    UNCONFIRMED = "unconfirmed"  # a weekday past the packaged calendar that no calendar confirms


def calendar_days(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    # By offset, never past `end`: stepping a day beyond 9999-12-31 raises OverflowError.
    for offset in range((end - start).days + 1):
        yield start + dt.timedelta(days=offset)


@functools.cache
def builtin_horizon() -> tuple[int, int]:
    """First and last year chinese_calendar knows holidays for."""
    years = sorted({d.year for d in chinese_calendar.holidays})
    return years[0], years[-1]


@functools.cache
def _closed_weekdays() -> frozenset[dt.date]:
    """The weekdays chinese_calendar.is_holiday calls holidays: its `holidays` that are not make-up `workdays`.
    (Its is_holiday itself scans every holiday for the years it covers on each call: ~25 us, thousands of
    times for a long range's `days` or admission; this set answers the same in a lookup.)"""
    return frozenset(day for day in chinese_calendar.holidays if day not in chinese_calendar.workdays)


def beyond_horizon_reason(day: dt.date) -> str:
    """Why `day` is not synced: the words an operator sees in the day's `error` and in `check`."""
    first, last = builtin_horizon()
    return (f"{day.isoformat()} is outside the packaged holiday calendar (chinese_calendar covers {first}-{last}) "
            "and no calendar confirms it as a trading day: upgrade chinese_calendar "
            "(pip install -U chinese_calendar), or use a source that knows the exchange calendar "
            "(akshare, baostock or tushare); the day stays pending until then")


class TradingCalendar:
    """Answers what kind of day a date is; `overrides` maps date -> open? from a source's own calendar."""

    def __init__(self, overrides: Mapping[dt.date, bool] | None = None, warn: Warn | None = None,
                 confirms: Confirms | None = None, today: Callable[[], dt.date] | None = None) -> None:
        self._lock = threading.Lock()
        self._overrides = dict(overrides or {})
        self._first_year, self._last_year = builtin_horizon()
        self._warn = warn
        self._confirms = confirms
        self._today = today or dt.date.today
        self._warned_on: dt.date | None = None

    def update(self, overrides: Mapping[dt.date, bool]) -> None:
        with self._lock:
            self._overrides.update(overrides)

    @property
    def horizon(self) -> dt.date:
        """The last day the packaged holiday calendar covers."""
        return dt.date(self._last_year, 12, 31)

    def kind(self, day: dt.date) -> DayKind:
        with self._lock:
            known = self._overrides.get(day)
        if known is not None:
            return DayKind.TRADING if known else DayKind.CLOSED
        if day.weekday() >= 5:
            return DayKind.CLOSED
        if self._first_year <= day.year <= self._last_year:
            return DayKind.CLOSED if day in _closed_weekdays() else DayKind.TRADING  # = chinese_calendar.is_holiday(day)
        if self._confirms is not None and self._confirms(day):
            return DayKind.TRADING
        self._warn_beyond_horizon(day)
        return DayKind.UNCONFIRMED

    def closed_reason(self, day: dt.date) -> str | None:
        """Why a closed day does not trade, in the words `days` shows: a weekend, a holiday (its name, from
        chinese_calendar), or a source's calendar that does not list it; None for a day that is not closed."""
        if self.kind(day) is not DayKind.CLOSED:
            return None
        if day.weekday() >= 5:
            return "weekend"
        if day in _closed_weekdays():
            name = chinese_calendar.get_holiday_detail(day)[1]
            return f"holiday ({name})" if name else "holiday"
        return "not listed as a trading day by the source's calendar"

    def is_trading_day(self, day: dt.date) -> bool:
        """True only for a day some calendar confirms as trading (an unconfirmed day is not)."""
        return self.kind(day) is DayKind.TRADING

    def is_confirmed(self, day: dt.date) -> bool:
        """Whether some calendar says whether `day` trades (False: a weekday past the horizon nobody covers)."""
        return self.kind(day) is not DayKind.UNCONFIRMED

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date]:
        return [d for d in calendar_days(start, end) if self.is_trading_day(d)]

    def unconfirmed_days(self, start: dt.date, end: dt.date) -> list[dt.date]:
        return [d for d in calendar_days(start, end) if self.kind(d) is DayKind.UNCONFIRMED]

    def last_confirmed_trading_day(self, on_or_before: dt.date, lookback_days: int = CONFIRMED_LOOKBACK_DAYS) -> dt.date | None:
        """The latest day on or before `on_or_before` that a calendar confirms as trading (None within the lookback)."""
        for back in range(lookback_days + 1):
            day = on_or_before - dt.timedelta(days=back)
            if self.is_trading_day(day):
                return day
        return None

    def _warn_beyond_horizon(self, day: dt.date) -> None:
        """One `calendar_beyond_horizon` a (wall-clock) day, naming the first unconfirmed date asked about."""
        today = self._today()
        with self._lock:
            if self._warn is None or self._warned_on == today:
                return
            self._warned_on = today
        self._warn("calendar_beyond_horizon",
                   {"date": day.isoformat(), "known_until": self.horizon.isoformat(), "reason": beyond_horizon_reason(day)})
