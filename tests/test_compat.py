"""daily_stock_data, the existing product's table as a view: its types column by column (information_schema),
its values, qfq prices at read time, and how it is changed when a migration must (never under the user's objects)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from dbrows import OLD_COMPAT_VIEW

from syncd.db import connection, daywrite, migrations, partitions, reference, runs, views
from syncd.db.daywrite import DayWrite
from syncd.record import RunRecord
from syncd.sources.base import StockInfo

RUN = "run-compat"
# The original table (wenbit/StockGuru stockguru-web/database/daily_stock_data_schema.sql), id aside.
ORIGINAL = [
    ("stock_code", "character varying", 10, None, None), ("stock_name", "character varying", 50, None, None),
    ("trade_date", "date", None, None, None),
    *[(c, "numeric", None, 10, 2) for c in ("open_price", "close_price", "high_price", "low_price")],
    ("volume", "bigint", None, 64, 0), ("amount", "numeric", None, 20, 2),
    *[(c, "numeric", None, 10, 2) for c in ("change_pct", "change_amount", "turnover_rate", "amplitude")],
    ("created_at", "timestamp with time zone", None, None, None), ("updated_at", "timestamp with time zone", None, None, None),
]


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:
    with connection.connect(database) as opened:
        migrations.migrate(opened)
        runs.insert_run(opened, RunRecord(run_id=RUN, task_type="manual", requested_by="test",
                                               start_date=dt.date(2025, 7, 1), end_date=dt.date(2025, 7, 3), host="h", pid=1))
        yield opened


def write_market(conn: psycopg.Connection[Any]) -> None:
    """Two days of three stocks: 600000 goes ex-dividend on the second (factor 1 -> 1.25), 000001 has no
    factor known, 300001 has no name."""
    reference.save_stocks(conn, [StockInfo("600000", "浦发银行", "sh"), StockInfo("000001", "平安银行", "sz")])
    daywrite.write_day(conn, DayWrite(dt.date(2025, 7, 1), RUN), [
        ("600000", 10.0, 10.6, 9.9, 10.5, 10.0, 412345, 4_300_000.0, 0.5, 5.0, 1.0),
        ("000001", 12.0, 12.2, 11.9, 12.1, 12.0, 100000, 1_205_000.0, 0.2, 0.8333, None),
        ("300001", 20.0, 20.5, 19.5, 20.04, 20.0, 250, 5000.0, 0.1, 0.2, 1.0)])
    daywrite.write_day(conn, DayWrite(dt.date(2025, 7, 2), RUN), [
        ("600000", 8.4, 8.6, 8.3, 8.44, 8.4, 500000, 4_240_000.0, 0.6, 0.4762, 1.25),
        ("000001", 12.1, 12.3, 12.0, 12.2, 12.1, 100000, 1_215_000.0, 0.2, 0.8264, None),
        ("300001", 20.0, 20.5, 19.5, 20.04, 20.04, 300, 6000.0, 0.1, 0.0, 1.0)])


def test_columns_have_the_original_types_precision_and_scale(conn):
    views.ensure_compat_view(conn, "none")
    columns = conn.execute(
        "SELECT column_name, data_type, character_maximum_length, numeric_precision, numeric_scale "
        "FROM information_schema.columns WHERE table_name = 'daily_stock_data' ORDER BY ordinal_position").fetchall()
    assert columns == ORIGINAL


@pytest.mark.parametrize("adjust", ["none", "qfq"])
def test_one_stocks_rows_are_read_through_the_code_index_with_the_original_types(conn, adjust):
    """`WHERE stock_code = ...` (the product's stock page) is an index condition on each year's partition, not a
    filter over the years' rows, and information_schema still shows the original types."""
    conn.execute("INSERT INTO stocks (code, name) SELECT lpad(c::text, 6, '0'), 'S' || c FROM generate_series(1, 300) c")
    for year in (2023, 2024):
        partitions.ensure_year(conn, year)
    conn.execute("""
        INSERT INTO daily_bars (trade_date, code, open, high, low, close, pre_close, volume, amount, turnover, pct_change,
                                adj_factor)
        SELECT d::date, lpad(c::text, 6, '0'), 10, 11, 9, 10, 10, 1000, 10000, 1, 0, 1 + extract(year FROM d) / 100
        FROM generate_series('2023-01-01'::date, '2024-12-31', '1 day') d, generate_series(1, 300) c
        WHERE extract(isodow FROM d) < 6 ORDER BY 1, 2""")
    conn.execute("ANALYZE daily_bars")
    views.ensure_compat_view(conn, adjust)
    for read in ("SELECT * FROM daily_stock_data WHERE stock_code = '000042' ORDER BY trade_date",
                 "SELECT * FROM daily_stock_data WHERE stock_code = '000042' ORDER BY trade_date DESC LIMIT 60"):
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {read}").fetchall())
        assert " on daily_bars_y" in plan and "Seq Scan on daily_bars" not in plan, plan
        assert "Index Cond: (code = '000042'::text)" in plan, plan
        assert "((code)::character varying(10))" not in plan, plan  # the cast filters c's one row, never the bars
    rows = conn.execute("SELECT stock_code, trade_date FROM daily_stock_data WHERE stock_code = '000042'").fetchall()
    assert len(rows) == 522 and {code for code, _ in rows} == {"000042"}  # two years of weekdays
    columns = conn.execute(
        "SELECT column_name, data_type, character_maximum_length, numeric_precision, numeric_scale "
        "FROM information_schema.columns WHERE table_name = 'daily_stock_data' ORDER BY ordinal_position").fetchall()
    assert columns == ORIGINAL


def test_created_at_is_read_from_an_index_that_carries_written_at(conn):
    """A stock's series joins sync_days for created_at/updated_at: migration 13's index covers it (an index-only
    merge instead of a heap fetch a day, ~10% of a whole-series read: docs/performance.md)."""
    definition = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'sync_days_written_at'").fetchone()
    assert definition is not None and definition[0].endswith("ON public.sync_days USING btree (date) INCLUDE (written_at)")


def test_values_rounded_as_the_original_stored_them(conn):
    write_market(conn)
    views.ensure_compat_view(conn, "none")
    rows = {r[0]: r for r in conn.execute(
        "SELECT stock_code, stock_name, volume, amount, close_price, change_pct, change_amount, amplitude, created_at, "
        "updated_at FROM daily_stock_data WHERE trade_date = '2025-07-01'").fetchall()}
    code, name, volume, amount, close, pct, change, amplitude, created, updated = rows["600000"]
    assert (name, volume, amount, close, pct, change, amplitude) == (
        "浦发银行", 4123, Decimal("4300000.00"), Decimal("10.50"), Decimal("5.00"), Decimal("0.50"), Decimal("7.00"))
    assert rows["300001"][1] == "300001"  # no name known: the code stands in, never NULL
    assert rows["300001"][2] == 3 and rows["300001"][6] == Decimal("0.04")  # 250 shares: 2.5 lots rounds to 3
    written = conn.execute("SELECT written_at FROM sync_days WHERE date = '2025-07-01'").fetchone()[0]
    assert created == updated == written


def test_qfq_shows_read_time_forward_adjusted_prices_and_raw_where_no_factor(conn):
    write_market(conn)
    views.ensure_compat_view(conn, "qfq")
    prices = {(r[0], r[1].isoformat()): r[2:] for r in conn.execute(
        "SELECT stock_code, trade_date, close_price, open_price, change_amount FROM daily_stock_data").fetchall()}
    assert prices["600000", "2025-07-02"] == (Decimal("8.44"), Decimal("8.40"), Decimal("0.04"))  # latest day: raw
    assert prices["600000", "2025-07-01"] == (Decimal("8.40"), Decimal("8.00"), Decimal("0.40"))  # x 1 / 1.25
    assert prices["000001", "2025-07-01"][0] == Decimal("12.10")  # adj_factor NULL: raw, never NULL
    daywrite.write_day(conn, DayWrite(dt.date(2025, 7, 3), RUN), [("600000", 8.5, 8.6, 8.3, 8.5, 8.44, 1000, 8500.0, 0.1, 0.71, 2.5)])
    later = conn.execute("SELECT close_price FROM daily_stock_data WHERE stock_code = '600000' AND trade_date = '2025-07-01'")
    assert later.fetchone()[0] == Decimal("4.20")  # another ex-date: nothing stored went stale, the view moved


def test_a_view_left_by_an_earlier_version_is_dropped_and_recreated_with_the_original_types(conn):
    write_market(conn)
    conn.execute(OLD_COMPAT_VIEW)
    migrations.migrate(conn, compat_view=True)
    assert views.view_columns(conn) == views.COMPAT_COLUMNS
    assert conn.execute("SELECT volume FROM daily_stock_data WHERE stock_code = '600000' ORDER BY trade_date").fetchall() == [
        (4123,), (5000,)]


def test_objects_of_the_users_that_depend_on_the_view_stop_the_migration_by_name(conn):
    conn.execute(OLD_COMPAT_VIEW)
    conn.execute("CREATE VIEW my_screen AS SELECT stock_code FROM daily_stock_data WHERE change_pct > 5")
    with pytest.raises(migrations.StoreError, match="my_screen") as refused:
        migrations.migrate(conn, compat_view=True)
    assert "CASCADE" in str(refused.value)
    assert conn.execute("SELECT count(*) FROM my_screen").fetchone() == (0,)  # nothing of theirs was touched
    assert views.view_columns(conn)[7] == ("volume", "numeric")


def test_changing_compat_adjust_keeps_dependent_views_working(conn):
    write_market(conn)
    migrations.migrate(conn, compat_view=True)
    conn.execute("CREATE VIEW my_screen AS SELECT stock_code, close_price FROM daily_stock_data")
    migrations.migrate(conn, compat_view=True, compat_adjust="qfq")  # same shape: replaced in place
    assert conn.execute("SELECT close_price FROM my_screen WHERE stock_code = '600000' "
                        "ORDER BY close_price LIMIT 1").fetchone() == (Decimal("8.40"),)


def test_a_table_named_daily_stock_data_is_never_replaced(conn):
    conn.execute("CREATE TABLE daily_stock_data (id bigserial)")
    with pytest.raises(migrations.StoreError, match="a table named daily_stock_data already exists"):
        migrations.migrate(conn, compat_view=True)


def test_lots_are_rounded_half_away_from_zero_as_round_volume_over_100_does(conn):
    volumes = [-251, -250, -249, -50, -49, 0, 49, 50, 150, 250, 251, 412345, 10**15 + 50]
    rows = conn.execute(f"SELECT {views._LOTS}, round(b.volume / 100.0)::bigint FROM unnest(%s::bigint[]) AS b(volume)",
                        (volumes,)).fetchall()
    assert all(mine == expected for mine, expected in rows), rows


@pytest.mark.parametrize("precision", [10, 20])
def test_the_quick_cents_are_the_exact_conversions_cents_on_a_million_values(conn, precision):
    """views._numeric takes a cheaper path than float8::numeric where it provably rounds the same: the values
    here stress it (random magnitudes, every half cent of a range and its neighbours a few ulps away, sums
    and quotients as the view computes them, garbage beyond the column's bound, NULL, NaN)."""
    values = """
        SELECT (random() * 2 - 1) * 10 ^ (random() * 16 - 3) FROM generate_series(1, 400000)
        UNION ALL SELECT round((random() * 10 ^ (random() * 6 + 6))::numeric, 2)::float8 FROM generate_series(1, 100000)
        UNION ALL SELECT m + k / 200.0::float8 FROM unnest(ARRAY[1e8, 1e9, 1e10, 1e11 - 1, 1e11, 1e12]::float8[]) m,
                                                     generate_series(-400, 400) k
        UNION ALL SELECT k / 200.0::float8 * (1 + d * 2.2e-16) FROM generate_series(-200000, 200000) k, generate_series(-3, 3) d
        UNION ALL SELECT (a / 100.0::float8) - (b / 100.0::float8) FROM generate_series(1, 300) a, generate_series(1, 300) b
        UNION ALL SELECT (a / 100.0::float8) / (b / 100.0::float8) * 100 FROM generate_series(900, 1100, 7) a, generate_series(1, 2000, 3) b
        UNION ALL SELECT unnest(ARRAY[NULL, 'NaN', 'Infinity', '-Infinity', 99999999.994, 99999999.995, 1e17, -0.005, 0.005,
                                      1.005, 2.675, 1e8 - 0.005, -1e8 + 0.005]::float8[])"""
    mismatches = conn.execute(
        f"SELECT x, {views._numeric('x', precision)}, {views._numeric_exact('x', precision)} FROM ({values}) v(x) "
        f"WHERE {views._numeric('x', precision)} IS DISTINCT FROM {views._numeric_exact('x', precision)} LIMIT 5").fetchall()
    assert mismatches == []
