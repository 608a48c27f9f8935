"""The demo source: deterministic per (stocks, seed, day), whatever order or range days are fetched in."""

import datetime as dt
import struct

import pytest

from syncd.config import DemoConfig
from syncd.sources.base import DayFailure, EncodedRows
from syncd.sources.demo import DemoSource

DAYS = [dt.date(2025, 10, 9) + dt.timedelta(days=i) for i in range(10)]


def test_demo_rows_do_not_depend_on_the_order_days_are_fetched_in():
    forwards = {day: DemoSource(DemoConfig(stocks=300)).rows_for(day) for day in DAYS}
    source = DemoSource(DemoConfig(stocks=300))
    backwards = {day: source.rows_for(day) for day in reversed(DAYS)}
    assert forwards == backwards


def test_demo_pre_close_is_the_previous_trading_days_close_across_a_holiday_and_bars_are_consistent():
    source = DemoSource(DemoConfig(stocks=300, seed=3))
    before_holiday, after_holiday = source.rows_for(dt.date(2025, 9, 30)), source.rows_for(dt.date(2025, 10, 9))
    assert source.previous_trading_day(dt.date(2025, 10, 9)) == dt.date(2025, 9, 30)  # National Day week closed
    assert [r[5] for r in after_holiday] == [r[4] for r in before_holiday]
    for code, open_, high, low, close, pre, volume, amount, turnover, pct, factor in after_holiday:
        assert len(code) == 6 and low <= min(open_, close) and max(open_, close) <= high
        assert volume % 100 == 0 and low <= amount / volume <= high and 0 < turnover < 10
        assert abs(pct - (close - pre) / pre * 100) < 0.001 and abs(pct) < 9.5 and factor >= 1.0


def test_demo_ex_dates_set_pre_close_below_the_previous_close_and_step_the_factor():
    source = DemoSource(DemoConfig(stocks=300, seed=3))
    ex_dates = source.ex_dates(2025)
    assert 100 < len(ex_dates) < 200  # about half the stocks, each once, in June or July
    assert all(dt.date(2025, 6, 1) <= day <= dt.date(2025, 7, 31) for day in ex_dates.values())
    index = {code: i for i, code in enumerate(source.codes)}
    for code, day in list(ex_dates.items())[:20]:
        before = source.rows_for(source.previous_trading_day(day))[index[code]]
        on, after = source.rows_for(day)[index[code]], source.rows_for(day + dt.timedelta(days=1))[index[code]]
        assert on[5] < before[4]  # the exchange's reference price, after the dividend
        assert on[10] == pytest.approx(before[10] * before[4] / on[5], rel=1e-12)  # f = f_prev x prev_close / pre_close
        if source.previous_trading_day(day + dt.timedelta(days=1)) == day:
            assert after[5] == on[4] and after[10] == on[10]  # an ordinary day after it


def test_demo_without_corporate_actions_has_factor_one_and_pre_close_the_previous_close():
    source = DemoSource(DemoConfig(stocks=100, seed=3, corporate_actions=False))
    for day in (dt.date(2025, 7, 1), dt.date(2025, 7, 2)):
        rows, previous = source.rows_for(day), source.rows_for(source.previous_trading_day(day))
        assert {r[10] for r in rows} == {1.0} and [r[5] for r in rows] == [r[4] for r in previous]
    assert source.ex_dates(2025) == {}


def test_demo_encoded_day_is_binary_copy_of_the_same_rows():
    source = DemoSource(DemoConfig(stocks=50, seed=9))
    day = dt.date(2025, 10, 9)
    encoded = source.encoded(day)
    assert isinstance(encoded, EncodedRows) and encoded.count == 50
    assert encoded.payload.startswith(b"PGCOPY\n\xff\r\n\x00") and encoded.payload.endswith(b"\xff\xff")
    first = encoded.payload[19:]
    fields, = struct.unpack(">h", first[:2])
    assert fields == 12
    code_len, code = struct.unpack(">i6s", first[2 + 8:2 + 8 + 10])
    assert (code_len, code.decode()) == (6, source.rows_for(day)[0][0])


def test_demo_seed_changes_the_market_and_fail_dates_fail():
    day = dt.date(2025, 10, 9)
    assert DemoSource(DemoConfig(stocks=20, seed=1)).rows_for(day) != DemoSource(DemoConfig(stocks=20, seed=2)).rows_for(day)
    source = DemoSource(DemoConfig(stocks=20, fail_dates=["2025-10-09"]))
    [(got_day, result)] = list(source.fetch_days([day], lambda: False))
    assert got_day == day and isinstance(result, DayFailure) and "2025-10-09" in result.error


def test_the_demo_market_trades_what_the_real_a_share_market_does_in_a_day():
    """About 1-2 trillion yuan and some 10^10-10^11 shares a day (the real market's order in 2025), at 0.2-5 %
    of each stock's float; the prices are the demo's as ever (the same draw: only the floats changed)."""
    from syncd.sources.demo import demo_codes
    from syncd.sources.demomarket import DemoMarket

    market = DemoMarket(1, demo_codes(5300), corporate_actions=True)
    for day in (dt.date(2015, 6, 1), dt.date(2025, 10, 9)):
        columns = market.columns(day)
        assert 1.0e12 <= columns["amount"].sum() <= 2.0e12, (day, columns["amount"].sum())
        assert 2.0e10 <= columns["volume"].sum() <= 2.0e11, (day, columns["volume"].sum())
        assert 0.2 <= columns["turnover"].min() and columns["turnover"].max() <= 5.0
        assert (columns["volume"] % 100 == 0).all()  # whole lots
    assert market.columns(dt.date(2025, 10, 9))["close"][:3].tolist() == [32.81, 64.42, 11.92]
