"""The demo market's trading days, for the demo source (demo.py) and its numbers (demomarket.py) alike.

Its own module so that the two import it and never each other: demo.py (imported by the
daemon, no numpy) loads demomarket.py (numpy) on first use, and demomarket.py needs only these
days from the demo.
"""

from __future__ import annotations

import datetime as dt

import chinese_calendar


def is_open(day: dt.date) -> bool:
    """The demo's trading days: TradingCalendar(confirms=DemoSource.confirms_trading_day).is_trading_day, in the
    few operations it comes to (a weekday outside chinese_calendar's holidays: within its horizon they are its
    closures, past it the demo trades every weekday). Building the price waves asks it ~15,000 times."""
    return day.weekday() < 5 and day not in chinese_calendar.holidays


def previous_trading_day(day: dt.date) -> dt.date:
    day -= dt.timedelta(days=1)
    while not is_open(day):
        day -= dt.timedelta(days=1)
    return day
