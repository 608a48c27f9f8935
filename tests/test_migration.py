"""A database made by the previous schema (migrations 1 and 2, its compat view) opens with every row, day
and run intact, gains adj_factor (NULL until re-synced), and its days are checked by `verify` on demand."""

from __future__ import annotations

import datetime as dt

import psycopg

from syncd import store, verify
from syncd.calendar import TradingCalendar
from syncd.config import DemoConfig
from syncd.sources.demo import DemoSource

OLD_VIEW = """
    CREATE OR REPLACE VIEW daily_stock_data AS
    SELECT b.code AS stock_code, s.name AS stock_name, b.trade_date,
           b.open AS open_price, b.close AS close_price, b.high AS high_price, b.low AS low_price,
           b.volume::numeric / 100 AS volume, b.amount, b.pct_change AS change_pct,
           b.close - b.pre_close AS change_amount, b.turnover AS turnover_rate,
           (b.high - b.low) / NULLIF(b.pre_close, 0) * 100 AS amplitude
    FROM daily_bars b LEFT JOIN stocks s USING (code)
"""
DAYS = [dt.date(2025, 10, 9), dt.date(2025, 10, 10)]


def make_old_database(conn: psycopg.Connection) -> None:
    """The schema and data exactly as the previous syncd left them (its migrations are still MIGRATIONS[:2])."""
    conn.execute("CREATE TABLE syncd_migrations (version integer PRIMARY KEY, description text NOT NULL, "
                 "applied_at timestamptz NOT NULL DEFAULT now())")
    for version, description, sql in store.MIGRATIONS[:2]:
        conn.execute(sql)
        conn.execute("INSERT INTO syncd_migrations (version, description) VALUES (%s, %s)", (version, description))
    conn.execute(OLD_VIEW)
    conn.execute("INSERT INTO stocks (code, name, exchange) VALUES ('600000', '浦发银行', 'sh')")
    conn.execute("INSERT INTO sync_runs (run_id, task_type, status, start_date, end_date, total_days, trading_days, "
                 "days_done, rows, started_at, finished_at, host, pid) VALUES ('old-run', 'manual', 'succeeded', "
                 "'2025-10-09', '2025-10-10', 2, 2, 2, 200, now(), now(), 'old-host', 42)")
    demo = DemoSource(DemoConfig(stocks=100, seed=2))
    with conn.cursor() as cur:
        for day in DAYS:
            with cur.copy("COPY daily_bars (trade_date, code, open, high, low, close, pre_close, volume, amount, turnover, "
                          "pct_change) FROM STDIN") as copy:
                for row in demo.rows_for(day):
                    copy.write_row((day, *row[:10]))
            cur.execute("INSERT INTO sync_days (date, status, rows, run_id) VALUES (%s, 'success', 100, 'old-run')", (day,))
    conn.execute("UPDATE daily_bars SET high = low - 1 WHERE code = '600001' AND trade_date = '2025-10-10'")  # a bad row


def snapshot(conn: psycopg.Connection) -> tuple[list, list, list, list]:
    return (conn.execute("SELECT trade_date, code, open, high, low, close, pre_close, volume, amount, turnover, pct_change "
                         "FROM daily_bars ORDER BY 1, 2").fetchall(),
            conn.execute("SELECT date, status, rows, run_id, error, updated_at FROM sync_days ORDER BY 1").fetchall(),
            conn.execute("SELECT run_id, status, rows, days_done, started_at, host, pid FROM sync_runs").fetchall(),
            conn.execute("SELECT code, name, exchange FROM stocks").fetchall())


def test_a_database_of_the_previous_schema_migrates_with_everything_intact(database):
    with store.connect(database) as conn:
        make_old_database(conn)
        before = snapshot(conn)
        assert store.migrate(conn, compat_view=True) == len(store.MIGRATIONS)
        assert snapshot(conn) == before
        assert conn.execute("SELECT count(*), count(adj_factor) FROM daily_bars").fetchone() == (200, 0)  # NULL until re-synced
        assert conn.execute("SELECT count(*) FROM daily_bars_qfq WHERE close IS NULL").fetchone() == (200,)
        assert conn.execute("SELECT bool_and(written_at = updated_at) FROM sync_days").fetchone() == (True,)
        assert [(d.expected, d.missing) for d in store.days(conn, DAYS[0], DAYS[-1])] == [(None, 0), (None, 0)]
        assert conn.execute("SELECT volume FROM daily_stock_data WHERE stock_code = '600000' LIMIT 1").fetchone()[0] > 0
        assert store.migrate(conn, compat_view=True) == len(store.MIGRATIONS)  # a second start changes nothing
        assert snapshot(conn) == before


def test_days_written_before_the_checks_existed_are_checked_by_verify(database):
    with store.connect(database) as conn:
        make_old_database(conn)
        store.migrate(conn)
        days = verify.verify_days(conn, DAYS[0], DAYS[-1], TradingCalendar().is_trading_day)
        assert [(d.date, d.checked, d.anomalies) for d in days] == [("2025-10-09", True, 0), ("2025-10-10", True, 1)]
        assert (days[1].findings[0].stock, days[1].findings[0].check) == ("600001", "price_order")


def test_verify_leaves_what_its_budget_cannot_check_for_the_next_request(database):
    with store.connect(database) as conn:
        make_old_database(conn)
        store.migrate(conn)
        ticks = iter([0.0, 0.0, 10.0, 10.0])  # the budget runs out after the first day
        days = verify.verify_days(conn, DAYS[0], DAYS[-1], TradingCalendar().is_trading_day, clock=lambda: next(ticks))
        assert [d.checked for d in days] == [True, False]
        days = verify.verify_days(conn, DAYS[0], DAYS[-1], TradingCalendar().is_trading_day)
        assert [d.checked for d in days] == [True, True] and days[1].anomalies == 1
