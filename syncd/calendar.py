"""Which calendar days are trading days on the Shanghai/Shenzhen exchanges.

Three layers, most authoritative first: open/closed days a source published (stored in the
trade_calendar table and handed in as `overrides`), the chinese_calendar package's published
holidays (weekends are always closed), and, past that package's horizon, plain weekdays with
one warning per calendar instance. This module reads no database itself.

One TradingCalendar is shared by two threads: the worker `update`s it with a source's
calendar at the start of a run while the control loop asks `is_trading_day` (admission, the
schedule, `days`). Its state is guarded by one lock, held only for dictionary operations.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator, Mapping

import chinese_calendar

Warn = Callable[[str, dict[str, object]], None]


def calendar_days(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    # By offset, never past `end`: stepping a day beyond 9999-12-31 raises OverflowError.
    for offset in range((end - start).days + 1):
        yield start + dt.timedelta(days=offset)


def builtin_horizon() -> tuple[int, int]:
    """First and last year chinese_calendar knows holidays for."""
    years = sorted({d.year for d in chinese_calendar.holidays})
    return years[0], years[-1]


class TradingCalendar:
    """Answers is_trading_day; `overrides` maps date -> open? from an authoritative source."""

    def __init__(self, overrides: Mapping[dt.date, bool] | None = None, warn: Warn | None = None) -> None:
        self._lock = threading.Lock()
        self._overrides = dict(overrides or {})
        self._first_year, self._last_year = builtin_horizon()
        self._warn = warn
        self._warned = False

    def update(self, overrides: Mapping[dt.date, bool]) -> None:
        with self._lock:
            self._overrides.update(overrides)

    def is_trading_day(self, day: dt.date) -> bool:
        with self._lock:
            known = self._overrides.get(day)
        if known is not None:
            return known
        if day.weekday() >= 5:
            return False
        if self._first_year <= day.year <= self._last_year:
            return not chinese_calendar.is_holiday(day)
        self._warn_beyond_horizon(day)
        return True

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date]:
        return [d for d in calendar_days(start, end) if self.is_trading_day(d)]

    def _warn_beyond_horizon(self, day: dt.date) -> None:
        with self._lock:
            if self._warned or self._warn is None:
                return
            self._warned = True
        self._warn(
            "calendar_beyond_horizon",
            {"date": day.isoformat(), "known_until": f"{self._last_year}-12-31",
             "fallback": "weekdays; a source with a trade calendar (akshare, baostock) overrides this"},
        )
