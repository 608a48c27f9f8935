"""China's exchange calendar: weekends and published holidays closed; past the horizon only what a calendar confirms."""

import datetime as dt

from syncd.calendar import DayKind, TradingCalendar, builtin_horizon, calendar_days


def test_calendar_knows_national_day_2025():
    calendar = TradingCalendar()
    assert len(calendar.trading_days(dt.date(2025, 9, 1), dt.date(2025, 10, 31))) == 39
    assert not any(calendar.is_trading_day(dt.date(2025, 10, d)) for d in range(1, 9))


def test_calendar_weekend_makeup_workdays_are_not_trading_days():
    assert not TradingCalendar().is_trading_day(dt.date(2025, 10, 11))  # a Saturday worked in lieu; exchanges closed


def test_past_the_horizon_a_weekday_no_calendar_confirms_is_not_a_trading_day_and_is_warned_once_a_day():
    warnings = []
    today = [dt.date(2027, 1, 4)]
    calendar = TradingCalendar(warn=lambda event, fields: warnings.append((event, fields)), today=lambda: today[0])
    year = builtin_horizon()[1] + 1
    january = (dt.date(year, 1, 1), dt.date(year, 1, 31))
    assert calendar.trading_days(*january) == []
    weekdays = [d for d in calendar_days(*january) if d.weekday() < 5]
    assert calendar.unconfirmed_days(*january) == weekdays
    assert calendar.kind(dt.date(year, 1, 2)) is DayKind.CLOSED  # a Saturday is closed whatever the horizon
    assert not calendar.is_confirmed(dt.date(year, 1, 1)) and calendar.is_confirmed(dt.date(year, 1, 2))
    calendar.trading_days(dt.date(year, 2, 1), dt.date(year, 2, 28))
    assert [w[0] for w in warnings] == ["calendar_beyond_horizon"]
    assert "upgrade chinese_calendar" in warnings[0][1]["reason"] and warnings[0][1]["known_until"] == f"{year - 1}-12-31"
    today[0] += dt.timedelta(days=1)
    calendar.is_trading_day(dt.date(year, 1, 5))
    assert [w[0] for w in warnings] == ["calendar_beyond_horizon"] * 2  # once a day


def test_past_the_horizon_the_sources_own_word_confirms_a_weekday():
    year = builtin_horizon()[1] + 1
    files = {dt.date(year, 1, 4)}
    calendar = TradingCalendar(confirms=files.__contains__)
    assert calendar.kind(dt.date(year, 1, 4)) is DayKind.TRADING
    assert calendar.kind(dt.date(year, 1, 1)) is DayKind.UNCONFIRMED  # New Year's Day: no file
    within = dt.date(2025, 10, 1)  # National Day: the packaged calendar decides within its years, files or not
    assert TradingCalendar(confirms=lambda day: True).kind(within) is DayKind.CLOSED


def test_last_confirmed_trading_day_skips_unconfirmed_and_closed_days():
    year = builtin_horizon()[1]
    calendar = TradingCalendar()
    last = calendar.last_confirmed_trading_day(dt.date(year + 1, 1, 6))
    assert last is not None and last.year == year and calendar.is_trading_day(last)
    assert not calendar.trading_days(last + dt.timedelta(days=1), dt.date(year + 1, 1, 6))
    calendar.update({dt.date(year + 1, 1, 4): True, dt.date(year + 1, 1, 1): False})
    assert calendar.last_confirmed_trading_day(dt.date(year + 1, 1, 6)) == dt.date(year + 1, 1, 4)
    assert calendar.last_confirmed_trading_day(dt.date(year + 1, 1, 3)) == last
    assert calendar.horizon == dt.date(year, 12, 31)


def test_calendar_source_overrides_win_past_the_horizon():
    year = builtin_horizon()[1] + 1
    holiday = dt.date(year, 1, 1)
    calendar = TradingCalendar({holiday: False})
    assert not calendar.is_trading_day(holiday)


def test_the_calendar_answers_as_chinese_calendar_does_on_every_day_of_its_horizon():
    import chinese_calendar

    calendar = TradingCalendar()
    first, last = builtin_horizon()
    day = dt.date(first, 1, 1)
    while day <= dt.date(last, 12, 31):
        expected = DayKind.CLOSED if day.weekday() >= 5 or chinese_calendar.is_holiday(day) else DayKind.TRADING
        assert calendar.kind(day) is expected, day
        day += dt.timedelta(days=1)
