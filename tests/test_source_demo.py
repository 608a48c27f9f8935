"""The demo source: deterministic per (stocks, seed, day), whatever order or range days are fetched in."""

import datetime as dt
import struct

from syncd.config import DemoConfig
from syncd.sources.base import DayFailure, EncodedRows
from syncd.sources.demo import DemoSource

DAYS = [dt.date(2025, 10, 9) + dt.timedelta(days=i) for i in range(10)]


def test_demo_rows_do_not_depend_on_the_order_days_are_fetched_in():
    forwards = {day: DemoSource(DemoConfig(stocks=300)).rows_for(day) for day in DAYS}
    source = DemoSource(DemoConfig(stocks=300))
    backwards = {day: source.rows_for(day) for day in reversed(DAYS)}
    assert forwards == backwards


def test_demo_pre_close_is_the_previous_weekdays_close_and_bars_are_consistent():
    source = DemoSource(DemoConfig(stocks=300, seed=3))
    thursday, friday = source.rows_for(dt.date(2025, 10, 9)), source.rows_for(dt.date(2025, 10, 10))
    assert [r[5] for r in friday] == [r[4] for r in thursday]
    for code, open_, high, low, close, pre, volume, amount, turnover, pct in friday:
        assert len(code) == 6 and low <= min(open_, close) and max(open_, close) <= high
        assert volume % 100 == 0 and amount > 0 and 0 < turnover < 10
        assert abs(pct - (close - pre) / pre * 100) < 0.001


def test_demo_encoded_day_is_binary_copy_of_the_same_rows():
    source = DemoSource(DemoConfig(stocks=50, seed=9))
    day = dt.date(2025, 10, 9)
    encoded = source.encoded(day)
    assert isinstance(encoded, EncodedRows) and encoded.count == 50
    assert encoded.payload.startswith(b"PGCOPY\n\xff\r\n\x00") and encoded.payload.endswith(b"\xff\xff")
    first = encoded.payload[19:]
    fields, = struct.unpack(">h", first[:2])
    assert fields == 11
    code_len, code = struct.unpack(">i6s", first[2 + 8:2 + 8 + 10])
    assert (code_len, code.decode()) == (6, source.rows_for(day)[0][0])


def test_demo_seed_changes_the_market_and_fail_dates_fail():
    day = dt.date(2025, 10, 9)
    assert DemoSource(DemoConfig(stocks=20, seed=1)).rows_for(day) != DemoSource(DemoConfig(stocks=20, seed=2)).rows_for(day)
    source = DemoSource(DemoConfig(stocks=20, fail_dates=["2025-10-09"]))
    [(got_day, result)] = list(source.fetch_days([day], lambda: False))
    assert got_day == day and isinstance(result, DayFailure) and "2025-10-09" in result.error
