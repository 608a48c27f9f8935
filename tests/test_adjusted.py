"""Adjusted prices end to end: the demo market's corporate actions through a real syncd, the hfq/qfq views,
and the index that makes one stock's ten-year qfq series a few milliseconds (EXPLAIN)."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from conftest import query

from syncd.config import DemoConfig
from syncd.db import connection, migrations, partitions, reference
from syncd.sources.base import StockInfo
from syncd.sources.demo import DemoSource


def test_demo_corporate_actions_reach_the_table_and_the_views(syncd_factory, database):
    daemon = syncd_factory()  # demo, 200 stocks, seed 7, corporate_actions on by default
    daemon.client().start("2025-06-25", "2025-07-25")
    assert daemon.wait_idle().last_run.status == "succeeded"
    demo = DemoSource(DemoConfig(stocks=200, seed=7))
    ex_dates = {(code, day) for code, day in demo.ex_dates(2025).items() if dt.date(2025, 6, 26) <= day <= dt.date(2025, 7, 25)}
    assert len(ex_dates) > 30
    rows = query(database, """
        SELECT b.code, b.trade_date, b.pre_close, b.adj_factor, p.close, p.adj_factor
        FROM daily_bars b JOIN LATERAL (SELECT close, adj_factor FROM daily_bars x WHERE x.code = b.code
                                        AND x.trade_date < b.trade_date ORDER BY x.trade_date DESC LIMIT 1) p ON true""")
    for code, day, pre_close, factor, previous_close, previous_factor in rows:
        if (code, day) in ex_dates:
            assert pre_close < previous_close  # the exchange's reference price, not the previous close
            assert factor == pytest.approx(previous_factor * previous_close / pre_close, rel=1e-12)
        else:
            assert pre_close == previous_close and factor == previous_factor
    latest = query(database, "SELECT max(trade_date) FROM daily_bars")[0][0]
    assert query(database, "SELECT count(*) FROM daily_bars_qfq q JOIN daily_bars b USING (trade_date, code) "
                           "WHERE trade_date = %s AND q.close = b.close AND q.open = b.open", latest) == [(200,)]
    mismatches = query(database, """
        SELECT count(*) FROM daily_bars b JOIN daily_bars_hfq h USING (trade_date, code) JOIN daily_bars_qfq q USING (trade_date, code)
        JOIN LATERAL (SELECT adj_factor FROM daily_bars l WHERE l.code = b.code ORDER BY trade_date DESC LIMIT 1) l ON true
        WHERE abs(h.close - b.close * b.adj_factor) > 1e-9 OR abs(h.pre_close - b.pre_close * b.adj_factor) > 1e-9
           OR abs(q.low - b.low * b.adj_factor / l.adj_factor) > 1e-9""")
    assert mismatches == [(0,)]
    stepped = query(database, "SELECT count(DISTINCT code) FROM daily_bars_qfq WHERE close <> (SELECT close FROM daily_bars x "
                              "WHERE x.code = daily_bars_qfq.code AND x.trade_date = daily_bars_qfq.trade_date)")
    assert stepped[0][0] > 30  # before their ex-date, those stocks' qfq prices are below the raw ones


def test_adjusted_views_are_null_where_the_factor_is(database):
    with connection.connect(database) as conn:
        migrations.migrate(conn)
        partitions.ensure_year(conn, 2025)  # rows written by hand need their year's partition (syncd creates its own)
        conn.execute("INSERT INTO daily_bars (trade_date, code, close, pre_close, adj_factor) VALUES "
                     "('2025-07-01', '600000', 10, 10, NULL), ('2025-07-02', '600000', 11, 10, 2.0)")
        assert conn.execute("SELECT close FROM daily_bars_hfq ORDER BY trade_date").fetchall() == [(None,), (22.0,)]
        assert conn.execute("SELECT close FROM daily_bars_qfq ORDER BY trade_date").fetchall() == [(None,), (11.0,)]


def test_one_stocks_ten_year_qfq_series_reads_through_the_code_date_index(database):
    with psycopg.connect(database, autocommit=True) as conn:
        migrations.migrate(conn)
        for year in range(2015, 2025):
            partitions.ensure_year(conn, year)
        conn.execute("""
            INSERT INTO daily_bars (trade_date, code, open, high, low, close, pre_close, volume, amount, adj_factor)
            SELECT d::date, lpad(c::text, 6, '0'), 10, 11, 9, 10, 10, 100, 1000, 1 + extract(year FROM d) / 100
            FROM generate_series('2015-01-01'::date, '2024-12-31', '1 day') d, generate_series(1, 150) c
            WHERE extract(isodow FROM d) < 6 ORDER BY 1, 2""")
        conn.execute("ANALYZE daily_bars")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM daily_bars_qfq WHERE code = '000042' ORDER BY trade_date").fetchall())
    assert "code_date" in plan and "Seq Scan on daily_bars" not in plan, plan  # daily_bars_y<year>_code_date
    assert "rows=2609" in plan  # ten years of weekdays, one stock
    print(plan)  # the execution time is in the last line (a few ms; the benches measure it, tests never assert speed)


def test_qfq_is_the_same_for_a_stock_the_stock_list_lacks(database):
    """The latest factor comes through the stock list, and row by row for a code the list lacks: same prices."""
    with connection.connect(database) as conn:
        migrations.migrate(conn)
        partitions.ensure_year(conn, 2025)
        reference.save_stocks(conn, [StockInfo("600001", "listed", "sh")])
        for code in ("600001", "600002"):  # the same bars; only 600001 is in the stock list
            conn.execute("INSERT INTO daily_bars (trade_date, code, close, pre_close, adj_factor) VALUES "
                         "('2025-07-01', %(c)s, 10, 10, 1.0), ('2025-07-02', %(c)s, 9, 10, 1.5), "
                         "('2025-07-03', %(c)s, 9, 9, NULL)", {"c": code})
        rows = conn.execute("SELECT code, trade_date, close FROM daily_bars_qfq ORDER BY code, trade_date").fetchall()
        listed, unlisted = ([r[2] for r in rows if r[0] == code] for code in ("600001", "600002"))
        assert listed == unlisted == [10 * (1.0 / 1.5), 9.0, None]  # the views take the ratio first
