"""China's exchange calendar: weekends and published holidays closed; weekdays past the horizon, warned once."""

import datetime as dt

from syncd.calendar import TradingCalendar, builtin_horizon


def test_calendar_knows_national_day_2025():
    calendar = TradingCalendar()
    assert len(calendar.trading_days(dt.date(2025, 9, 1), dt.date(2025, 10, 31))) == 39
    assert not any(calendar.is_trading_day(dt.date(2025, 10, d)) for d in range(1, 9))


def test_calendar_weekend_makeup_workdays_are_not_trading_days():
    assert not TradingCalendar().is_trading_day(dt.date(2025, 10, 11))  # a Saturday worked in lieu; exchanges closed


def test_calendar_falls_back_to_weekdays_past_its_horizon_and_warns_once():
    warnings = []
    calendar = TradingCalendar(warn=lambda event, fields: warnings.append((event, fields)))
    last_year = builtin_horizon()[1]
    january = calendar.trading_days(dt.date(last_year + 1, 1, 1), dt.date(last_year + 1, 1, 31))
    assert all(d.weekday() < 5 for d in january) and len(january) == sum(
        1 for i in range(31) if dt.date(last_year + 1, 1, 1 + i).weekday() < 5)
    calendar.trading_days(dt.date(last_year + 1, 2, 1), dt.date(last_year + 1, 2, 28))
    assert [w[0] for w in warnings] == ["calendar_beyond_horizon"]


def test_calendar_source_overrides_win_past_the_horizon():
    year = builtin_horizon()[1] + 1
    holiday = dt.date(year, 1, 1)
    calendar = TradingCalendar({holiday: False})
    assert not calendar.is_trading_day(holiday)
