"""Adjustment factors and reference prices through the write path, on a real PostgreSQL.

The demo market's own factors are the oracle: a source that gives only the exchange's
pre_close (baostock, Tushare, csv) must end with the same factors by derivation, and a
source that gives only a factor series (akshare) with the same pre_close and pct_change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from syncd.config import DemoConfig
from syncd.db import connection, days, daywrite, migrations, reference, runs
from syncd.db.daywrite import DayWrite
from syncd.record import RunRecord
from syncd.sources.base import Row, StockInfo
from syncd.sources.demo import DemoSource

RUN = "run-factors"
JULY = [dt.date(2025, 7, 1) + dt.timedelta(days=i) for i in range(31)]


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:
    with connection.connect(database) as opened:
        migrations.migrate(opened)
        runs.insert_run(opened, RunRecord(run_id=RUN, task_type="manual", requested_by="test",
                                               start_date=JULY[0], end_date=JULY[-1], host="h", pid=1))
        yield opened


@pytest.fixture(scope="module")
def demo() -> DemoSource:
    return DemoSource(DemoConfig(stocks=120, seed=5))


def trading(days: list[dt.date], demo: DemoSource) -> list[dt.date]:
    return [d for d in days if demo._calendar.is_trading_day(d)]


def without(rows: list[Row], *fields: int) -> list[Row]:
    """The rows with the given fields blanked, as a source that lacks them hands them over."""
    return [tuple(None if i in fields else v for i, v in enumerate(row)) for row in rows]  # type: ignore[misc]


def stored(conn: psycopg.Connection[Any], day: dt.date, column: str) -> dict[str, Any]:
    return dict(conn.execute(f"SELECT code, {column} FROM daily_bars WHERE trade_date = %s", (day,)).fetchall())


def test_factors_derived_from_pre_close_equal_the_sources_own_series(conn, demo):
    days = trading(JULY, demo)
    daywrite.write_day(conn, DayWrite(days[0], RUN), demo.rows_for(days[0]))  # the series gives the first day's factors
    for day in days[1:]:
        daywrite.write_day(conn, DayWrite(day, RUN), without(demo.rows_for(day), 10))  # then pre_close only, as baostock
    steps = 0
    for day in days[1:]:
        expected = {row[0]: row[10] for row in demo.rows_for(day)}
        derived = stored(conn, day, "adj_factor")
        assert derived == pytest.approx(expected, rel=1e-9)
        steps += sum(derived[c] != stored(conn, demo.previous_trading_day(day), "adj_factor")[c] for c in derived)
    assert steps > 10  # ex-dates in July moved some factors, and the derivation followed them


def test_pre_close_and_pct_change_derived_from_a_factor_series(conn, demo):
    days = trading(JULY, demo)
    daywrite.write_day(conn, DayWrite(days[0], RUN), demo.rows_for(days[0]))
    for day in days[1:]:
        daywrite.write_day(conn, DayWrite(day, RUN), without(demo.rows_for(day), 5, 9))  # no pre_close, no pct: akshare's hist
    ex_days = 0
    for day in days[1:]:
        rows = {row[0]: row for row in demo.rows_for(day)}
        pre, pct = stored(conn, day, "pre_close"), stored(conn, day, "pct_change")
        assert pre == {code: row[5] for code, row in rows.items()}  # to the cent
        assert pct == pytest.approx({code: row[9] for code, row in rows.items()}, abs=1.5e-4)
        previous = stored(conn, demo.previous_trading_day(day), "close")
        ex_days += sum(pre[code] != previous[code] for code in pre)
    assert ex_days > 10  # on ex-dates the derived reference price is not the previous close


def test_a_gap_leaves_the_factor_null_and_a_suspension_does_not(conn, demo):
    first, second, third, fourth = trading(JULY, demo)[:4]
    daywrite.write_day(conn, DayWrite(first, RUN), demo.rows_for(first))
    suspended = demo.codes[0]
    daywrite.write_day(conn, DayWrite(second, RUN), [r for r in demo.rows_for(second) if r[0] != suspended])
    third_rows = without(demo.rows_for(third), 10)
    third_rows = [r if r[0] != suspended else (*r[:5], demo.rows_for(first)[0][4], *r[6:]) for r in third_rows]
    daywrite.write_day(conn, DayWrite(third, RUN), third_rows)
    factors = stored(conn, third, "adj_factor")
    assert factors[suspended] == pytest.approx(demo.rows_for(first)[0][10])  # chained to its last session before
    assert None not in factors.values()
    daywrite.write_day(conn, DayWrite(dt.date(2025, 7, 30), RUN), without(demo.rows_for(dt.date(2025, 7, 30)), 10))
    assert set(stored(conn, dt.date(2025, 7, 30), "adj_factor").values()) == {None}  # days before it were never written
    assert fourth < dt.date(2025, 7, 30)


def test_a_new_listing_starts_at_one_and_the_first_day_written_cannot_say(conn, demo):
    first, second = trading(JULY, demo)[:2]
    newcomer = demo.codes[-1]
    daywrite.write_day(conn, DayWrite(first, RUN), without([r for r in demo.rows_for(first) if r[0] != newcomer], 10))
    assert set(stored(conn, first, "adj_factor").values()) == {None}
    daywrite.write_day(conn, DayWrite(second, RUN), without(demo.rows_for(second), 10))
    factors = stored(conn, second, "adj_factor")
    assert factors[newcomer] == 1.0  # absent from a written session, then here: its listing day
    assert factors[demo.codes[0]] is None  # chained to a NULL factor


def test_a_known_listing_date_starts_at_one_even_on_the_first_day_written(conn, demo):
    day = trading(JULY, demo)[0]
    reference.save_stocks(conn, [StockInfo(demo.codes[3], "NEW", "sh", listing_date=day),
                             StockInfo(demo.codes[4], "OLD", "sh", listing_date=dt.date(2001, 1, 1))])
    daywrite.write_day(conn, DayWrite(day, RUN), without(demo.rows_for(day), 10))
    factors = stored(conn, day, "adj_factor")
    assert factors[demo.codes[3]] == 1.0 and factors[demo.codes[4]] is None


def test_a_stock_missing_from_an_incomplete_day_breaks_its_chain_until_fetched(conn, demo):
    first, second, third = trading(JULY, demo)[:3]
    lost, kept = demo.codes[1], demo.codes[2]
    daywrite.write_day(conn, DayWrite(first, RUN), demo.rows_for(first))
    daywrite.write_day(conn, DayWrite(second, RUN), [r for r in demo.rows_for(second) if r[0] != lost])  # kept has a stored row
    rows = [r for r in demo.rows_for(second) if r[0] not in (lost, kept)]
    written = daywrite.write_day(conn, DayWrite(second, RUN, expected=120, missing={lost, kept}), rows)
    assert (written.status, written.rows, written.fetched) == ("incomplete", 119, 118)
    closes = stored(conn, second, "close")
    assert lost not in closes and closes[kept] == demo.rows_for(second)[2][4]  # a failed request deletes nothing
    daywrite.write_day(conn, DayWrite(third, RUN), without(demo.rows_for(third), 10))
    factors = stored(conn, third, "adj_factor")
    assert factors[lost] is None  # its session on the second day is unknown
    assert factors[kept] == pytest.approx(demo.rows_for(third)[2][10])  # its stored row still chains
    assert factors[demo.codes[0]] == pytest.approx(demo.rows_for(third)[0][10])
    assert days.missing_codes(conn, second) == sorted([lost, kept])


def test_a_resync_picks_up_a_factor_changed_upstream(conn, demo):
    day = trading(JULY, demo)[0]
    daywrite.write_day(conn, DayWrite(day, RUN), demo.rows_for(day))
    restated = [(*row[:10], row[10] * 1.5) for row in demo.rows_for(day)]
    daywrite.write_day(conn, DayWrite(day, RUN), restated)
    assert stored(conn, day, "adj_factor") == pytest.approx({row[0]: row[10] for row in restated})
