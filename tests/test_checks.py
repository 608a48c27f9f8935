"""The checks of a written day on a real PostgreSQL: each rule, the boards' limits, and the 1 % unit guard."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from dbrows import migrated_with_run, sane_bar

from syncd.db import daywrite, reference
from syncd.db.daywrite import DayWrite
from syncd.sources.base import Row, StockInfo

RUN = "run-checks"


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:
    with migrated_with_run(database, RUN) as connection:
        yield connection


bar = sane_bar


def findings(conn: psycopg.Connection[Any], day: dt.date) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for code, check in conn.execute("SELECT code, check_name FROM bar_findings WHERE trade_date = %s", (day,)).fetchall():
        found.setdefault(code, set()).add(check)
    return found


def filler(count: int) -> list[Row]:
    return [bar(f"605{i:03d}") for i in range(count)]


def test_each_rule_flags_its_row_and_sane_rows_pass(conn):
    day = dt.date(2025, 3, 4)
    daywrite.write_day(conn, DayWrite(dt.date(2025, 3, 3), RUN), [bar("600100"), bar("000100"), *filler(150)])  # they were listed before
    rows = [bar("600100", pct=50.0),                                     # a 50 % jump on the main board
            bar("000100", high=9.0),                                     # high below low (and the prices outside it)
            bar("600101", volume=-5),
            bar("600102", amount=10000 * 10.05 * 100),                   # amount in the wrong unit
            bar("600103", pct_change=3.0),                               # pct_change disagrees with close / pre_close
            bar("600104", volume=0, amount=0.0),                         # no trades: the unit guard does not judge it
            *filler(150)]
    written = daywrite.write_day(conn, DayWrite(day, RUN), rows)
    found = findings(conn, day)
    assert found == {"600100": {"price_limit"}, "000100": {"price_order"}, "600101": {"volume"}, "600102": {"unit"},
                     "600103": {"pct_change"}}
    assert written.anomalies == 5 and written.status == "success"  # findings never block a write by themselves
    detail = conn.execute("SELECT detail FROM bar_findings WHERE code = '600100'").fetchone()[0]
    assert "main board" in detail and "+10%" in detail


@pytest.mark.parametrize(("code", "day", "pct", "flagged"), [
    ("688001", dt.date(2025, 3, 4), 19.9, False),   # STAR +/-20 %
    ("688001", dt.date(2025, 3, 4), 21.0, True),
    ("300001", dt.date(2025, 3, 4), 19.9, False),   # ChiNext +/-20 % since 2020-08-24
    ("300001", dt.date(2019, 3, 5), 15.0, True),    # ... +/-10 % before
    ("830001", dt.date(2025, 3, 4), 29.9, False),   # BSE +/-30 %
    ("830001", dt.date(2025, 3, 4), -31.0, True),
    ("600001", dt.date(2025, 3, 4), 10.4, False),   # within the 0.5-point tolerance
    ("600001", dt.date(2025, 3, 4), -10.6, True),
])
def test_board_limits(conn, code, day, pct, flagged):
    previous = day - dt.timedelta(days=1)
    daywrite.write_day(conn, DayWrite(previous, RUN), [bar(code), *filler(100)])
    daywrite.write_day(conn, DayWrite(day, RUN), [bar(code, pct=pct), *filler(100)])
    assert ("price_limit" in findings(conn, day).get(code, set())) is flagged


def test_st_by_the_name_that_day_until_main_boards_moved_st_to_ten_percent(conn):
    reference.save_stocks(conn, [StockInfo("600500", "*ST 示例", "sh")], seen_on=dt.date(2025, 3, 4))
    reference.save_stocks(conn, [StockInfo("600500", "*ST 示例", "sh")], seen_on=dt.date(2026, 7, 7))
    for day in (dt.date(2025, 3, 3), dt.date(2025, 3, 4), dt.date(2025, 3, 5), dt.date(2026, 7, 6), dt.date(2026, 7, 7)):
        daywrite.write_day(conn, DayWrite(day, RUN), [bar("600500", pct=8.0), *filler(100)])
    flagged = {day for day in (dt.date(2025, 3, 4), dt.date(2025, 3, 5), dt.date(2026, 7, 6), dt.date(2026, 7, 7))
               if "price_limit" in findings(conn, day).get("600500", set())}
    assert flagged == {dt.date(2025, 3, 4), dt.date(2025, 3, 5)}  # ST known on both (the name did not change between)
    assert "ST" in conn.execute("SELECT detail FROM bar_findings WHERE code = '600500' LIMIT 1").fetchone()[0]


def test_st_unknown_on_a_day_is_judged_by_the_board(conn):
    reference.save_stocks(conn, [StockInfo("600501", "*ST 示例", "sh")], seen_on=dt.date(2025, 6, 2))
    daywrite.write_day(conn, DayWrite(dt.date(2025, 3, 3), RUN), [bar("600501"), *filler(100)])
    daywrite.write_day(conn, DayWrite(dt.date(2025, 3, 4), RUN), [bar("600501", pct=8.0), *filler(100)])
    assert findings(conn, dt.date(2025, 3, 4)) == {}


@pytest.mark.parametrize(("code", "first", "sessions", "pct", "flagged"), [
    ("688010", dt.date(2025, 3, 3), 4, 150.0, False),   # STAR: no limit for five sessions
    ("688010", dt.date(2025, 3, 3), 5, 25.0, True),
    ("603010", dt.date(2025, 3, 3), 0, 200.0, False),   # main board, listed after 2023-04-10: five free sessions
    ("603010", dt.date(2016, 3, 1), 0, 43.0, False),    # earlier main-board first days: +44 % / -36 %
    ("603010", dt.date(2016, 3, 1), 0, 50.0, True),
    ("603010", dt.date(2016, 3, 1), 1, 15.0, True),
    ("830010", dt.date(2025, 3, 3), 0, 90.0, False),    # BSE: no limit on the first day only
    ("830010", dt.date(2025, 3, 3), 1, 35.0, True),
])
def test_first_days_after_a_listing(conn, code, first, sessions, pct, flagged):
    days = [first + dt.timedelta(days=i) for i in range(sessions + 1)]
    daywrite.write_day(conn, DayWrite(first - dt.timedelta(days=1), RUN), filler(100))  # the stock appears after the first day written
    for day in days[:-1]:
        daywrite.write_day(conn, DayWrite(day, RUN), [bar(code), *filler(100)])
    daywrite.write_day(conn, DayWrite(days[-1], RUN), [bar(code, pct=pct), *filler(100)])
    assert ("price_limit" in findings(conn, days[-1]).get(code, set())) is flagged


def test_a_known_listing_date_wins_over_the_first_day_seen(conn):
    reference.save_stocks(conn, [StockInfo("688020", "示例", "sh", listing_date=dt.date(2020, 1, 2))])
    daywrite.write_day(conn, DayWrite(dt.date(2025, 3, 4), RUN), [bar("688020", pct=40.0), *filler(100)])  # first row stored, not its listing
    assert findings(conn, dt.date(2025, 3, 4)) == {"688020": {"price_limit"}}


def test_more_than_one_percent_failing_the_unit_guard_fails_the_day_and_changes_nothing(conn):
    day = dt.date(2025, 3, 4)
    daywrite.write_day(conn, DayWrite(day, RUN), filler(200))
    lots = [bar(f"605{i:03d}", volume=100) for i in range(3)]  # volume in lots: amount / volume 100x the price
    with pytest.raises(daywrite.DayRejected, match="unit guard: 3 of 200 rows"):
        daywrite.write_day(conn, DayWrite(day, RUN), [*lots, *filler(200)[3:]])
    assert conn.execute("SELECT count(*), min(volume) FROM daily_bars WHERE trade_date = %s", (day,)).fetchone() == (200, 10000)
    assert conn.execute("SELECT status, anomalies FROM sync_days WHERE date = %s", (day,)).fetchone() == ("success", 0)
    written = daywrite.write_day(conn, DayWrite(day, RUN), [*lots[:2], *filler(200)[2:]])  # 1 %: written, and reported
    assert written.anomalies == 2 and set(findings(conn, day)) == {"605000", "605001"}


def test_a_day_with_nothing_fetched_is_refused(conn):
    day = dt.date(2025, 3, 4)
    daywrite.write_day(conn, DayWrite(day, RUN), filler(10))
    with pytest.raises(daywrite.DayRejected, match="nothing fetched"):
        daywrite.write_day(conn, DayWrite(day, RUN, missing={"600000"}), [])
    assert conn.execute("SELECT count(*) FROM daily_bars WHERE trade_date = %s", (day,)).fetchone() == (10,)


def test_a_jump_on_the_first_day_the_table_holds_is_judged_by_the_board(conn):
    day = dt.date(2025, 3, 4)  # nothing stored before: the stocks were trading already, as far as anyone knows
    daywrite.write_day(conn, DayWrite(day, RUN), [bar("600100", pct=50.0), *filler(100)])
    assert findings(conn, day) == {"600100": {"price_limit"}}
