"""A database made by the previous schema (migrations 1 and 2, its compat view) opens with every row, day
and run intact, gains adj_factor (NULL until re-synced), and its days are checked by `verify` on demand."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from dbrows import OLD_COMPAT_VIEW

from syncd.calendar import TradingCalendar
from syncd.config import DemoConfig
from syncd.control import verify
from syncd.db import compaction, connection, days, daywrite, migrations, runlock, runs
from syncd.db.daywrite import DayWrite
from syncd.record import RunRecord
from syncd.sources.demo import DemoSource

DAYS = [dt.date(2025, 10, 9), dt.date(2025, 10, 10)]


def make_old_database(conn: psycopg.Connection) -> None:
    """The schema and data exactly as the previous syncd left them (its migrations are still MIGRATIONS[:2])."""
    conn.execute("CREATE TABLE syncd_migrations (version integer PRIMARY KEY, description text NOT NULL, "
                 "applied_at timestamptz NOT NULL DEFAULT now())")
    for version, description, sql in migrations.MIGRATIONS[:2]:
        conn.execute(sql)
        conn.execute("INSERT INTO syncd_migrations (version, description) VALUES (%s, %s)", (version, description))
    conn.execute(OLD_COMPAT_VIEW)
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
    with connection.connect(database) as conn:
        make_old_database(conn)
        before = snapshot(conn)
        assert migrations.migrate(conn, compat_view=True) == migrations.LATEST
        assert snapshot(conn) == before
        assert conn.execute("SELECT count(*), count(adj_factor) FROM daily_bars").fetchone() == (200, 0)  # NULL until re-synced
        assert conn.execute("SELECT count(*) FROM daily_bars_qfq WHERE close IS NULL").fetchone() == (200,)
        assert conn.execute("SELECT bool_and(written_at = updated_at) FROM sync_days").fetchone() == (True,)
        assert [(d.expected, d.missing) for d in days.days(conn, DAYS[0], DAYS[-1])] == [(None, 0), (None, 0)]
        # provenance (migrations 10, 11): days written before it are of unknown source, with no per-stock entries
        assert [(d.source, d.fallback_stocks) for d in days.days(conn, DAYS[0], DAYS[-1])] == [(None, 0), (None, 0)]
        assert conn.execute("SELECT count(*) FROM bar_sources").fetchone() == (0,)
        assert conn.execute("SELECT volume FROM daily_stock_data WHERE stock_code = '600000' LIMIT 1").fetchone()[0] > 0
        assert migrations.migrate(conn, compat_view=True) == migrations.LATEST  # a second start changes nothing
        assert snapshot(conn) == before


def test_days_written_before_the_checks_existed_are_checked_by_verify(database):
    with connection.connect(database) as conn:
        make_old_database(conn)
        migrations.migrate(conn)
        days = verify.verify_days(conn, DAYS[0], DAYS[-1], TradingCalendar().is_trading_day)
        assert [(d.date, d.checked, d.anomalies) for d in days] == [("2025-10-09", True, 0), ("2025-10-10", True, 1)]
        assert (days[1].findings[0].stock, days[1].findings[0].check) == ("600001", "price_order")


def test_verify_leaves_what_its_budget_cannot_check_for_the_next_request(database):
    with connection.connect(database) as conn:
        make_old_database(conn)
        migrations.migrate(conn)
        ticks = iter([0.0, 0.0, 10.0, 10.0])  # the budget runs out after the first day
        days = verify.verify_days(conn, DAYS[0], DAYS[-1], TradingCalendar().is_trading_day, clock=lambda: next(ticks))
        assert [d.checked for d in days] == [True, False]
        days = verify.verify_days(conn, DAYS[0], DAYS[-1], TradingCalendar().is_trading_day)
        assert [d.checked for d in days] == [True, True] and days[1].anomalies == 1


# --- migration 5: daily_bars partitioned by year (syncd/db/partitions.py) ----------------------------------------

def make_v4_database(conn: psycopg.Connection, reader_role: str) -> None:
    """A database as the version before the yearly partitions left it: migrations 1-4, rows in two years,
    its views (the compat view included), and a role granted SELECT on daily_bars."""
    conn.execute("CREATE TABLE syncd_migrations (version integer PRIMARY KEY, description text NOT NULL, "
                 "applied_at timestamptz NOT NULL DEFAULT now())")
    for version, description, sql in migrations.MIGRATIONS[:4]:
        conn.execute(sql)
        conn.execute("INSERT INTO syncd_migrations (version, description) VALUES (%s, %s)", (version, description))
    from syncd.db import views

    views.ensure_compat_view(conn, "qfq")
    demo = DemoSource(DemoConfig(stocks=50, seed=3))
    for day in (dt.date(2024, 12, 31), dt.date(2025, 1, 2)):
        with conn.cursor().copy(f"COPY daily_bars ({', '.join(daywrite.BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(demo.encoded(day).payload)
        conn.execute("INSERT INTO sync_days (date, status, rows, run_id) VALUES (%s, 'success', 50, 'old-run')", (day,))
    conn.execute(f"GRANT SELECT ON daily_bars TO {reader_role}")
    conn.execute("COMMENT ON TABLE daily_bars IS 'bars, one a stock a day'")


@pytest.fixture
def reader_role(database: str):
    name = f"reader_{psycopg.conninfo.conninfo_to_dict(database)['dbname']}"  # roles are the cluster's: one per database
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name}")
    yield name
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {name}")
        conn.execute(f"DROP ROLE {name}")


def bars(conn: psycopg.Connection) -> list:
    return conn.execute(f"SELECT {', '.join(daywrite.BAR_COLUMNS)} FROM daily_bars ORDER BY 1, 2").fetchall()


def test_daily_bars_becomes_partitioned_by_year_with_every_row_grant_and_view_kept(database, reader_role):
    with connection.connect(database) as conn:
        make_v4_database(conn, reader_role)
        before, compat_before = bars(conn), conn.execute("SELECT * FROM daily_stock_data ORDER BY 1, 3").fetchall()
        assert migrations.migrate(conn, compat_view=True, compat_adjust="qfq") == migrations.LATEST
        assert bars(conn) == before and len(before) == 100
        assert conn.execute("SELECT * FROM daily_stock_data ORDER BY 1, 3").fetchall() == compat_before
        assert conn.execute("SELECT count(*) FROM daily_bars_qfq WHERE close IS NOT NULL").fetchone() == (100,)
        partitions = conn.execute("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                                  "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'daily_bars'::regclass "
                                  "ORDER BY 1").fetchall()
        assert [name for name, _ in partitions] == ["daily_bars_y2024", "daily_bars_y2025"]
        assert "FROM ('2025-01-01') TO ('2026-01-01')" in partitions[1][1]
        assert conn.execute("SELECT count(*) FROM daily_bars_y2025").fetchone() == (50,)
        assert conn.execute("SELECT has_table_privilege(%s, 'daily_bars', 'SELECT')", (reader_role,)).fetchone() == (True,)
        assert conn.execute("SELECT obj_description('daily_bars'::regclass, 'pg_class')").fetchone() == ("bars, one a stock a day",)
        indexes = {name for (name,) in conn.execute("SELECT indexrelid::regclass::text FROM pg_index "
                                                    "WHERE indrelid = 'daily_bars_y2025'::regclass").fetchall()}
        assert indexes == {"daily_bars_y2025_pkey", "daily_bars_y2025_code_date"}
        assert runlock.try_run_lock(conn) and runlock.run_lock_holder(conn) == runlock.session_id(conn)  # keyed by the new oid
        runlock.release_run_lock(conn)
        # A later year gets its partition when its first day is written; the rows read back as written.
        runs.insert_run(conn, RunRecord(run_id="r5", task_type="manual", requested_by="t", start_date=dt.date(2026, 1, 5),
                                         end_date=dt.date(2026, 1, 5), host="h", pid=1))
        day = dt.date(2026, 1, 5)
        daywrite.write_day(conn, DayWrite(day, "r5"), DemoSource(DemoConfig(stocks=50, seed=3)).encoded(day))
        assert conn.execute("SELECT count(*) FROM daily_bars_y2026").fetchone() == (50,)
        assert migrations.migrate(conn, compat_view=True, compat_adjust="qfq") == migrations.LATEST  # a second start: nothing


def test_an_object_of_the_users_on_daily_bars_stops_the_migration_and_nothing_changes(database, reader_role):
    with connection.connect(database) as conn:
        make_v4_database(conn, reader_role)
        conn.execute("CREATE VIEW my_report AS SELECT code, max(close) AS high FROM daily_bars GROUP BY code")
        before = bars(conn)
        with pytest.raises(migrations.StoreError, match="my_report") as raised:
            migrations.migrate(conn)
        assert "Drop them, start syncd once" in str(raised.value)
        assert conn.execute("SELECT relkind FROM pg_class WHERE oid = 'daily_bars'::regclass").fetchone() == ("r",)
        assert conn.execute("SELECT max(version) FROM syncd_migrations").fetchone() == (4,)
        assert bars(conn) == before and conn.execute("SELECT count(*) FROM my_report").fetchone() == (50,)
        conn.execute("DROP VIEW my_report")
        assert migrations.migrate(conn) == migrations.LATEST and bars(conn) == before


def test_a_migration_numbered_below_one_already_applied_is_applied_too(database, monkeypatch):
    """Numbers are handed out ahead to parallel work: a database at 11 still gets a 7 (here a 0) that lands later."""
    with connection.connect(database) as conn:
        migrations.migrate(conn)
        late = (0, "a migration numbered below every applied one", "CREATE TABLE late_arrival (x integer)")
        monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, late])
        assert migrations.migrate(conn) == migrations.LATEST
        assert conn.execute("SELECT count(*) FROM late_arrival").fetchone() == (0,)
        assert conn.execute("SELECT description FROM syncd_migrations WHERE version = 0").fetchone() == (late[1],)
        assert migrations.migrate(conn) == migrations.LATEST  # once only



# --- migration 7: the covering code index becomes a plain one per partition --------------------------

PREVIOUS_COVERING = f"(code, trade_date) INCLUDE ({', '.join(daywrite.BAR_COLUMNS[2:])})"


def make_v6_database(conn: psycopg.Connection, reader_role: str) -> None:
    """A database as the release before migration 7 left it: migrations 1-6, daily_bars partitioned by year
    with the covering index on the parent and on each partition (that release's ensure_year, literally), rows in
    two years written by a run, grants on the table and on a partition, the compat view."""
    make_v4_database(conn, reader_role)  # migrations 1-4, rows in 2024 and 2025
    for version, description, sql in migrations.MIGRATIONS[4:6]:
        sql(conn) if callable(sql) else conn.execute(sql)
        conn.execute("INSERT INTO syncd_migrations (version, description) VALUES (%s, %s)", (version, description))
    conn.execute("DROP INDEX daily_bars_y2024_code_date, daily_bars_y2025_code_date")  # this release's plain ones
    conn.execute(f"CREATE INDEX daily_bars_code_date ON daily_bars {PREVIOUS_COVERING}")  # the parent's, and each year's
    for child, table in conn.execute("SELECT i.inhrelid::regclass::text, x.indrelid::regclass::text FROM pg_inherits i "
                                     "JOIN pg_index x ON x.indexrelid = i.inhrelid "
                                     "WHERE i.inhparent = 'daily_bars_code_date'::regclass").fetchall():
        conn.execute(f"ALTER INDEX {child} RENAME TO {table}_code_date")  # as that release named them
    conn.execute("CREATE TABLE daily_bars_y2026 (LIKE daily_bars)")  # that release's ensure_year for a later year
    conn.execute("ALTER TABLE daily_bars_y2026 ADD CONSTRAINT daily_bars_y2026_pkey PRIMARY KEY (trade_date, code)")
    conn.execute(f"CREATE INDEX daily_bars_y2026_code_date ON daily_bars_y2026 {PREVIOUS_COVERING}")
    conn.execute("ALTER TABLE daily_bars ATTACH PARTITION daily_bars_y2026 FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
    day = dt.date(2026, 1, 5)
    with conn.cursor().copy(f"COPY daily_bars ({', '.join(daywrite.BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(DemoSource(DemoConfig(stocks=50, seed=3)).encoded(day).payload)
    conn.execute("INSERT INTO sync_days (date, status, rows, run_id) VALUES (%s, 'success', 50, 'old-run')", (day,))
    conn.execute(f"GRANT SELECT ON daily_bars_y2025 TO {reader_role}")


def index_defs(conn: psycopg.Connection, table: str) -> dict[str, str]:
    return dict(conn.execute("SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
                             "WHERE indrelid = %s::regclass", (table,)).fetchall())


def test_the_covering_index_becomes_a_plain_one_on_each_partition_with_every_row_kept(database, reader_role):
    with connection.connect(database) as conn:
        make_v6_database(conn, reader_role)
        assert "INCLUDE" in index_defs(conn, "daily_bars")["daily_bars_code_date"]
        before, compat_before = bars(conn), conn.execute("SELECT * FROM daily_stock_data ORDER BY 1, 3").fetchall()
        assert len(before) == 150
        assert migrations.migrate(conn, compat_view=True, compat_adjust="qfq") == migrations.LATEST
        assert bars(conn) == before
        assert conn.execute("SELECT * FROM daily_stock_data ORDER BY 1, 3").fetchall() == compat_before
        assert set(index_defs(conn, "daily_bars")) == {"daily_bars_pkey"}
        for year in (2024, 2025, 2026):
            defs = index_defs(conn, f"daily_bars_y{year}")
            assert set(defs) == {f"daily_bars_y{year}_pkey", f"daily_bars_y{year}_code_date"}
            assert defs[f"daily_bars_y{year}_code_date"].endswith("USING btree (code, trade_date)")
        assert conn.execute("SELECT has_table_privilege(%s, 'daily_bars_y2025', 'SELECT')", (reader_role,)).fetchone() == (True,)
        # the years written by that release are closed: compaction rewrites them, every row and grant kept
        assert compaction.pending(conn, 2026) == [2025, 2024]
        for year in compaction.pending(conn, 2026):
            assert compaction.compact(conn, year) is not None
        assert bars(conn) == before
        assert conn.execute("SELECT has_table_privilege(%s, 'daily_bars_y2025', 'SELECT')", (reader_role,)).fetchone() == (True,)
        runs.insert_run(conn, RunRecord(run_id="r7", task_type="manual", requested_by="t", start_date=dt.date(2025, 1, 2),
                                         end_date=dt.date(2025, 1, 2), host="h", pid=1))
        day = dt.date(2025, 1, 2)  # a re-sync of a day in a compacted year
        daywrite.write_day(conn, DayWrite(day, "r7"), DemoSource(DemoConfig(stocks=50, seed=4)).encoded(day))
        assert conn.execute("SELECT count(*) FROM daily_bars WHERE trade_date = %s", (day,)).fetchone() == (50,)
        assert migrations.migrate(conn, compat_view=True, compat_adjust="qfq") == migrations.LATEST  # nothing more
