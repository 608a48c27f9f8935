"""The schema's history: versioned migrations, applied once each, serialised across daemons.

A schema change is a new entry appended to `MIGRATIONS` (never an edit of an applied one), tested on
a database written by the previous release. The tables' physical layout is partitions.py's; the
views are views.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from . import partitions, views

MIGRATION_LOCK_KEY = 0x53594E4345


# A migration is SQL, or a function of the connection for one that must look at the database first.
MIGRATIONS: list[tuple[int, str, str | Callable[[psycopg.Connection[Any]], None]]] = [
    (1, "daily_bars, stocks, sync_runs, sync_days, trade_calendar", """
        CREATE TABLE IF NOT EXISTS daily_bars (
            trade_date date NOT NULL,
            code text NOT NULL,
            open double precision, high double precision, low double precision,
            close double precision, pre_close double precision,
            volume bigint, amount double precision,
            turnover double precision, pct_change double precision,
            PRIMARY KEY (trade_date, code)
        );
        CREATE TABLE IF NOT EXISTS stocks (
            code text PRIMARY KEY,
            name text,
            exchange text,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE IF NOT EXISTS sync_runs (
            run_id text PRIMARY KEY,
            task_type text NOT NULL,
            requested_by text NOT NULL DEFAULT '',
            request_id text,
            status text NOT NULL,
            start_date date NOT NULL,
            end_date date NOT NULL,
            total_days integer NOT NULL,
            trading_days integer NOT NULL DEFAULT 0,
            days_done integer NOT NULL DEFAULT 0,
            days_failed integer NOT NULL DEFAULT 0,
            rows bigint NOT NULL DEFAULT 0,
            started_at timestamptz NOT NULL,
            finished_at timestamptz,
            error text,
            host text NOT NULL,
            pid integer NOT NULL
        );
        CREATE INDEX IF NOT EXISTS sync_runs_started_at ON sync_runs (started_at DESC);
        CREATE INDEX IF NOT EXISTS sync_runs_running ON sync_runs (status) WHERE status = 'running';
        CREATE TABLE IF NOT EXISTS sync_days (
            date date PRIMARY KEY,
            status text NOT NULL,
            rows integer NOT NULL DEFAULT 0,
            run_id text,
            error text,
            prev_status text,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE IF NOT EXISTS trade_calendar (
            date date PRIMARY KEY,
            is_open boolean NOT NULL,
            source text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
    """),
    (2, "sync_runs.seq: insertion order (started_at has second precision)", """
        ALTER TABLE sync_runs ADD COLUMN IF NOT EXISTS seq bigint GENERATED ALWAYS AS IDENTITY;
        CREATE INDEX IF NOT EXISTS sync_runs_seq ON sync_runs (seq DESC);
    """),
    (3, "adj_factor, adjusted views, day coverage and findings, stock names and listing dates", f"""
        ALTER TABLE daily_bars ADD COLUMN IF NOT EXISTS adj_factor double precision;
        CREATE INDEX IF NOT EXISTS daily_bars_code_date ON daily_bars (code, trade_date);
        ALTER TABLE stocks ADD COLUMN IF NOT EXISTS listing_date date;
        CREATE TABLE IF NOT EXISTS stock_names (
            code text NOT NULL,
            name text NOT NULL,
            first_seen date NOT NULL,
            last_seen date NOT NULL,
            PRIMARY KEY (code, first_seen)
        );
        ALTER TABLE sync_days
            ADD COLUMN IF NOT EXISTS expected integer,
            ADD COLUMN IF NOT EXISTS missing integer NOT NULL DEFAULT 0,
            ADD COLUMN IF NOT EXISTS anomalies integer,
            ADD COLUMN IF NOT EXISTS checked_at timestamptz,
            ADD COLUMN IF NOT EXISTS written_at timestamptz;
        UPDATE sync_days SET written_at = updated_at WHERE rows > 0 AND written_at IS NULL;
        CREATE TABLE IF NOT EXISTS sync_day_missing (
            date date NOT NULL,
            code text NOT NULL,
            PRIMARY KEY (date, code)
        );
        CREATE TABLE IF NOT EXISTS bar_findings (
            trade_date date NOT NULL,
            code text NOT NULL,
            check_name text NOT NULL,
            detail text NOT NULL,
            PRIMARY KEY (trade_date, code, check_name)
        );
        {views.ADJUSTED_VIEWS}
    """),
    (4, "sync_stage: per-stock fetches staged by run (by_stock sources)", """
        CREATE UNLOGGED TABLE IF NOT EXISTS sync_stage (
            run_id text NOT NULL,
            trade_date date NOT NULL,
            code text NOT NULL,
            bar double precision[] NOT NULL,
            PRIMARY KEY (run_id, trade_date, code)
        );
    """),
    (5, "daily_bars partitioned by year; its (code, trade_date) index covers every column (partitions.py)", partitions.convert),
    (6, "daily_bars_qfq looks each stock's latest factor up once (views._LATEST_FACTOR)", views.ADJUSTED_VIEWS),
    (7, "daily_bars' covering code index becomes a plain (code, trade_date) one per partition (partitions.py)",
     partitions.narrow_code_index),
    (10, "sync_days.source and fallback_stocks: which source wrote each day, how many of its stocks a fallback gave", """
        ALTER TABLE sync_days
            ADD COLUMN IF NOT EXISTS source text,
            ADD COLUMN IF NOT EXISTS fallback_stocks integer NOT NULL DEFAULT 0;
    """),
    (11, "bar_sources: the stored bars whose source is not their day's (a fallback's stocks)", """
        CREATE TABLE IF NOT EXISTS bar_sources (
            trade_date date NOT NULL,
            code text NOT NULL,
            source text NOT NULL,
            PRIMARY KEY (trade_date, code)
        );
    """),
    (12, "reconciliation: reconcile_stage (a second source's answer), bar_findings.source (db/reconcile.py)", """
        CREATE UNLOGGED TABLE IF NOT EXISTS reconcile_stage (
            reconcile_id text NOT NULL,
            trade_date date NOT NULL,
            code text NOT NULL,
            open double precision, high double precision, low double precision, close double precision,
            pre_close double precision, volume bigint, amount double precision, turnover double precision,
            pct_change double precision, adj_factor double precision,
            failed boolean NOT NULL DEFAULT false,
            staged_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (reconcile_id, code, trade_date)
        );
        ALTER TABLE bar_findings ADD COLUMN IF NOT EXISTS source text;
    """),
    (13, "sync_days (date) INCLUDE (written_at): the compat view's created_at/updated_at by an index-only merge", """
        CREATE INDEX IF NOT EXISTS sync_days_written_at ON sync_days (date) INCLUDE (written_at);
    """),
]
# Versions are not contiguous (numbers are handed out ahead to parallel work): each one missing from
# syncd_migrations is applied, in order, whatever the highest applied version is.
LATEST = max(version for version, _, _ in MIGRATIONS)


def pending(conn: psycopg.Connection[Any]) -> list[int]:
    """The migrations this database has not had yet (all of them for a new one)."""
    if conn.execute("SELECT to_regclass('syncd_migrations')").fetchone() == (None,):
        return [version for version, _, _ in MIGRATIONS]
    applied = {row[0] for row in conn.execute("SELECT version FROM syncd_migrations").fetchall()}
    return [version for version, _, _ in MIGRATIONS if version not in applied]


class StoreError(Exception):
    """A schema or data problem an operator must fix (not a lost connection)."""


def migrate(conn: psycopg.Connection[Any], compat_view: bool = False, compat_adjust: str = "none") -> int:
    """Apply missing migrations (serialised across daemons); return the schema version. With `compat_view`,
    keep the daily_stock_data view (views.py) showing `compat_adjust` prices."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS syncd_migrations (version integer PRIMARY KEY, "
                     "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        applied = {row[0] for row in conn.execute("SELECT version FROM syncd_migrations").fetchall()}
        for version, description, sql in sorted(MIGRATIONS, key=lambda migration: migration[0]):
            if version not in applied:
                try:
                    sql(conn) if callable(sql) else conn.execute(sql)
                except partitions.LayoutError as exc:
                    raise StoreError(str(exc)) from None
                conn.execute("INSERT INTO syncd_migrations (version, description) VALUES (%s, %s)", (version, description))
                applied.add(version)
        if compat_view:
            try:
                views.ensure_compat_view(conn, compat_adjust)
            except views.CompatViewError as exc:
                raise StoreError(str(exc)) from None
    return max(applied)
