"""The views over daily_bars: adjusted prices, and the existing product's daily_stock_data.

This module owns their SQL (docs/data.md). `daily_bars_hfq` and `daily_bars_qfq` have the
columns of daily_bars with open/high/low/close/pre_close adjusted (NULL where adj_factor is
NULL): hfq = raw x adj_factor; qfq = raw x adj_factor / the stock's latest non-NULL
adj_factor, looked up at read time (once per stock, `_LATEST_FACTOR`), so nothing stored
goes stale at an ex-date (the ratio first: on the latest day it is exactly 1, and so qfq = raw). They are created by a migration (migrations.MIGRATIONS).

`daily_stock_data` (database.compat_view) has the original table's columns, types,
precision and scale (numeric(10,2) prices, bigint volume in lots, numeric(20,2) amount,
varchar(10) code, varchar(50) name that is never NULL), with raw or read-time qfq prices
(database.compat_adjust). One stock's rows are read through the code index despite stock_code's
length cast (`_CODE`). When its shape must change, it is dropped and created again, but
never under objects of the user's that depend on it: those stop the start with their names.
"""

from __future__ import annotations

from typing import Any

import psycopg

_PRICES = ("open", "high", "low", "close", "pre_close")
_OTHERS = "b.volume, b.amount, b.turnover, b.pct_change, b.adj_factor"
# The stock's latest non-NULL factor (`latest.factor`), looked up once per stock: through the stock list (a
# filter on b.code reaches stocks too, so one stock's series asks once), and row by row only for a code the
# list lacks. On daily_bars partitioned by year PostgreSQL does not memoize a lookup keyed by b.code (it did
# on one table): row by row it cost 2,400 index probes for a 10-year series (bench/readers.py). A row
# whose own factor is NULL needs none (its adjusted prices are NULL, or raw in the compat view), which
# also keeps stocks written before adj_factor existed from scanning their whole history for each row.
_LATEST_FACTOR = """LEFT JOIN (stocks ls LEFT JOIN LATERAL (SELECT x.adj_factor AS factor FROM daily_bars x
                   WHERE x.code = ls.code AND x.adj_factor IS NOT NULL ORDER BY x.trade_date DESC LIMIT 1) lf ON true)
                   ON ls.code = b.code
    CROSS JOIN LATERAL (SELECT CASE WHEN b.adj_factor IS NULL THEN NULL WHEN ls.code IS NOT NULL THEN lf.factor
                   ELSE (SELECT x.adj_factor FROM daily_bars x WHERE x.code = b.code AND x.adj_factor IS NOT NULL
                         ORDER BY x.trade_date DESC LIMIT 1) END AS factor) latest"""

ADJUSTED_VIEWS = f"""
    CREATE OR REPLACE VIEW daily_bars_hfq AS
    SELECT b.trade_date, b.code, {', '.join(f'b.{p} * b.adj_factor AS {p}' for p in _PRICES)}, {_OTHERS}
    FROM daily_bars b;
    CREATE OR REPLACE VIEW daily_bars_qfq AS
    SELECT b.trade_date, b.code, {', '.join(f'b.{p} * (b.adj_factor / latest.factor) AS {p}' for p in _PRICES)}, {_OTHERS}
    FROM daily_bars b {_LATEST_FACTOR};
"""


class CompatViewError(Exception):
    """daily_stock_data cannot be kept as configured; the message says why and what to do."""


# Where the cheap path of `_numeric` is exact: below this magnitude, cents this far from a half. The 15-digit
# value is within 0.5e-14 * |x| of x, so |x| < 1e8 errs by < 1e-5 cents and |x| < 1e11 (amounts) by < 0.01.
_QUICK = {10: (100_000_000, 0.4999), 20: (100_000_000_000, 0.49)}


def _numeric(expr: str, precision: int) -> str:
    """`expr` (float8) as numeric(precision, 2), NULL when it does not fit (a garbage row must not break every query).

    The value is what `expr::numeric` rounded to cents gives (float8 to numeric goes through 15 significant
    digits, then round half away from zero), computed the cheap way where that is provably the same (`_QUICK`):
    for |x| < 1e8 whose cents count x * 100 is not within 1e-4 of a half, the 15-digit value is within 1e-5 of it
    (5e-6 of decimal rounding, an ulp of float), and for |x| < 1e11 (amounts) not within 0.01 of a half, within
    0.0062; so both round to the same whole number of cents, built as int8 * 0.01 instead of through printf (each printf'd conversion cost ~1 us, nine a row in the compat view:
    most of its time). Values near a half cent, and larger ones, take the exact path. tests/test_compat.py
    compares both paths on a million values, half cents and their neighbours among them."""
    bound = 10 ** (precision - 2) - 1
    below, margin = _QUICK[precision]
    cents = f"(({expr}) * 100)"
    exact = f"({expr})::numeric"
    quick = f"round({cents})::int8::numeric * 0.01"
    near_whole = f"abs({expr}) < {below} AND abs({cents} - round({cents})) < {margin}"
    return f"(CASE WHEN abs({expr}) < {bound} THEN CASE WHEN {near_whole} THEN {quick} ELSE {exact} END END)::numeric({precision},2)"


def _numeric_exact(expr: str, precision: int) -> str:
    """The definition `_numeric` keeps to (tests/test_compat.py compares them)."""
    bound = 10 ** (precision - 2) - 1
    return f"(CASE WHEN abs({expr}) < {bound} THEN ({expr})::numeric END)::numeric({precision},2)"


# stock_code must be varchar(10) (the original's type) over daily_bars.code text, and the length cast
# varchar(code, 10) hides the code index: `b.code::varchar(10) = '600000'` filters every row of the range.
# So the cast is a relation of its own, one row per bar (OFFSET 0 keeps PostgreSQL from folding it back into
# an expression), tied to the bar by `c.stock_code::text = b.code` (the view's WHERE): an equality between two
# relations, which PostgreSQL keeps as an equivalence class. A filter `stock_code = '600000'` joins that class,
# and PostgreSQL derives `b.code = '600000'`, an index condition on each year's partition with b's row estimate
# intact (the cast's own filter sits on c's one row, not on b). A code longer than 10 characters could not be
# stored in the original table and is not shown (A-share codes have six).
_CODE = "CROSS JOIN LATERAL (SELECT b.code::varchar(10) AS stock_code OFFSET 0) c"
# Shares to lots, rounded half away from zero as round(volume / 100.0) does, in integer arithmetic (a numeric
# division per row cost as much as the rest of the row's volume handling).
_LOTS = "CASE WHEN b.volume >= 0 THEN (b.volume + 50) / 100 ELSE -((50 - b.volume) / 100) END"


def compat_view_sql(adjust: str) -> str:
    """The daily_stock_data view; `adjust` "qfq" scales prices by adj_factor / the latest factor (raw where NULL)."""
    scale = "coalesce(b.adj_factor / latest.factor, 1)" if adjust == "qfq" else "1"
    join = _LATEST_FACTOR if adjust == "qfq" else ""
    price = {p: f"b.{p} * k.scale" for p in _PRICES}
    return f"""
    SELECT c.stock_code,
           coalesce(s.name, b.code)::varchar(50) AS stock_name,
           b.trade_date,
           {_numeric(price['open'], 10)} AS open_price,
           {_numeric(price['close'], 10)} AS close_price,
           {_numeric(price['high'], 10)} AS high_price,
           {_numeric(price['low'], 10)} AS low_price,
           {_LOTS} AS volume,
           {_numeric('b.amount', 20)} AS amount,
           {_numeric('b.pct_change', 10)} AS change_pct,
           {_numeric(f"({price['close']}) - ({price['pre_close']})", 10)} AS change_amount,
           {_numeric('b.turnover', 10)} AS turnover_rate,
           {_numeric('(b.high - b.low) / NULLIF(b.pre_close, 0) * 100', 10)} AS amplitude,
           d.written_at AS created_at,
           d.written_at AS updated_at
    FROM daily_bars b
    {_CODE}
    LEFT JOIN stocks s ON s.code = b.code
    LEFT JOIN sync_days d ON d.date = b.trade_date
    {join}
    CROSS JOIN LATERAL (SELECT {scale} AS scale OFFSET 0) k  -- once a row (each price refers to it several times)
    WHERE c.stock_code::text = b.code"""


# The view's columns as format_type() shows them: a view whose columns differ must be dropped and created again.
COMPAT_COLUMNS = [
    ("stock_code", "character varying(10)"), ("stock_name", "character varying(50)"), ("trade_date", "date"),
    *[(name, "numeric(10,2)") for name in ("open_price", "close_price", "high_price", "low_price")],
    ("volume", "bigint"), ("amount", "numeric(20,2)"),
    *[(name, "numeric(10,2)") for name in ("change_pct", "change_amount", "turnover_rate", "amplitude")],
    ("created_at", "timestamp with time zone"), ("updated_at", "timestamp with time zone"),
]


def ensure_compat_view(conn: psycopg.Connection[Any], adjust: str) -> None:
    """Create or update daily_stock_data (inside the caller's migration transaction)."""
    kind = conn.execute("SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('daily_stock_data')").fetchone()
    body = compat_view_sql(adjust)
    if kind is None:
        conn.execute(f"CREATE VIEW daily_stock_data AS {body}")
        return
    if kind[0] != "v":
        raise CompatViewError("database.compat_view: a table named daily_stock_data already exists; "
                              "rename it (or set compat_view = false) so syncd can create the view")
    if view_columns(conn) == COMPAT_COLUMNS:
        conn.execute(f"CREATE OR REPLACE VIEW daily_stock_data AS {body}")  # same shape: dependents keep working
        return
    dependents = dependents_of(conn)
    if dependents:
        raise CompatViewError(
            "database.compat_view: the view daily_stock_data must be recreated with the original table's column types, "
            f"but these objects depend on it: {', '.join(dependents)}. Drop them (and create them again once syncd has "
            "started), or set database.compat_view = false; syncd never drops objects of yours (no CASCADE)")
    conn.execute("DROP VIEW daily_stock_data")
    conn.execute(f"CREATE VIEW daily_stock_data AS {body}")


def view_columns(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(name, kind) for name, kind in conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'daily_stock_data'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum").fetchall()]


def dependents_of(conn: psycopg.Connection[Any]) -> list[str]:
    """Objects that depend on daily_stock_data (views, materialized views, functions...), named for the operator."""
    rows = conn.execute("""
        SELECT DISTINCT coalesce(r.ev_class::regclass::text, pg_describe_object(d.classid, d.objid, d.objsubid))
        FROM pg_depend d
        LEFT JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
        WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = 'daily_stock_data'::regclass AND d.deptype = 'n'
          AND r.ev_class IS DISTINCT FROM 'daily_stock_data'::regclass
        ORDER BY 1""").fetchall()
    return [row[0] for row in rows]
