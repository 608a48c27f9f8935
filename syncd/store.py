"""Everything syncd reads from and writes to PostgreSQL, as plain functions over a connection.

This module owns the SQL: versioned migrations, the atomic per-day replace (DELETE + binary
COPY + sync_days/sync_runs bookkeeping in one transaction), run and day records, crash
recovery, the advisory lock that makes the database the arbiter between hosts, and the reads
behind `history` and `days`. Connections are autocommit; every multi-statement change runs
in an explicit transaction. It knows nothing about sockets, threads or sources.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from .protocol import Day
from .record import RunRecord
from .sources.base import EncodedRows, Row, StockInfo

# Advisory lock keys derived from the target table: (space << 32) | oid of daily_bars, so daemons
# writing the same daily_bars exclude each other and ones writing another schema's do not.
RUN_LOCK_SPACE = 0x53594E43  # "SYNC": one sync at a time on this daily_bars, across every daemon
WRITE_FENCE_SPACE = 0x53594E46  # held by each day's write transaction: one day write at a time
_TARGET_OID = "'daily_bars'::regclass::oid"
_RUN_LOCK_KEY = f"(({RUN_LOCK_SPACE}::bigint << 32) | {_TARGET_OID}::bigint)"
_WRITE_FENCE_KEY = f"(({WRITE_FENCE_SPACE}::bigint << 32) | {_TARGET_OID}::bigint)"
MIGRATION_LOCK_KEY = 0x53594E4345

BAR_COLUMNS = ("trade_date", "code", "open", "high", "low", "close", "pre_close", "volume", "amount", "turnover", "pct_change")
BAR_TYPES = ("date", "text", "float8", "float8", "float8", "float8", "float8", "int8", "float8", "float8", "float8")
COPY_BARS = f"COPY daily_bars ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

MIGRATIONS: list[tuple[int, str, str]] = [
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
]

COMPAT_VIEW = """
    CREATE OR REPLACE VIEW daily_stock_data AS
    SELECT b.code AS stock_code, s.name AS stock_name, b.trade_date,
           b.open AS open_price, b.close AS close_price, b.high AS high_price, b.low AS low_price,
           b.volume::numeric / 100 AS volume, b.amount, b.pct_change AS change_pct,
           b.close - b.pre_close AS change_amount, b.turnover AS turnover_rate,
           (b.high - b.low) / NULLIF(b.pre_close, 0) * 100 AS amplitude
    FROM daily_bars b LEFT JOIN stocks s USING (code)
"""


class StoreError(Exception):
    """A schema or data problem an operator must fix (not a lost connection)."""


# The server drops a session whose client host vanished within ~25 s instead of the kernel's
# two hours, so the run lock of a dead host frees in time (ignored on unix sockets).
SESSION_KEEPALIVES = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}


def connect(dsn: str, timeout_s: float = 10.0, application_name: str = "syncd", **settings: str) -> psycopg.Connection[Any]:
    """An autocommit connection; `settings` become session parameters (statement_timeout...), added
    to any `options` the DSN itself carries (such as a search_path), never replacing them."""
    own = psycopg.conninfo.conninfo_to_dict(dsn).get("options")
    options = " ".join([*([str(own)] if own else []), *(f"-c {k}={v}" for k, v in settings.items())])
    return psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(timeout_s)),
                           application_name=application_name, options=options or None)


def migrate(conn: psycopg.Connection[Any], compat_view: bool = False) -> int:
    """Apply missing migrations (serialised across daemons); return the schema version."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS syncd_migrations (version integer PRIMARY KEY, "
                     "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        current = conn.execute("SELECT coalesce(max(version), 0) FROM syncd_migrations").fetchone()[0]
        for version, description, sql in MIGRATIONS:
            if version > current:
                conn.execute(sql)
                conn.execute("INSERT INTO syncd_migrations (version, description) VALUES (%s, %s)", (version, description))
                current = version
        if compat_view:
            _ensure_compat_view(conn)
    return current


def _ensure_compat_view(conn: psycopg.Connection[Any]) -> None:
    kind = conn.execute("SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('daily_stock_data')").fetchone()
    if kind is not None and kind[0] != "v":
        raise StoreError("database.compat_view: a table named daily_stock_data already exists; "
                         "rename it (or set compat_view = false) so syncd can create the view")
    conn.execute(COMPAT_VIEW)


# --- the per-day write path -------------------------------------------------------------

def replace_day(conn: psycopg.Connection[Any], day: dt.date, rows: Iterable[Row] | EncodedRows, run_id: str,
                fence: Callable[[psycopg.Connection[Any]], None] | None = None) -> int:
    """Atomically replace `day`'s bars with `rows` and record the day as synced; return the row count.
    `fence`, called first inside the transaction, may raise to stop the write (the run lock check)."""
    with conn.transaction(), conn.cursor() as cur:
        if fence is not None:
            fence(conn)
        cur.execute("DELETE FROM daily_bars WHERE trade_date = %s", (day,))
        count = 0
        with cur.copy(COPY_BARS) as copy:
            if isinstance(rows, EncodedRows):
                copy.write(rows.payload)
                count = rows.count
            else:
                copy.set_types(BAR_TYPES)
                for row in rows:
                    copy.write_row((day, *row))
                    count += 1
        cur.execute(
            "INSERT INTO sync_days (date, status, rows, run_id, error, prev_status, updated_at) "
            "VALUES (%s, 'success', %s, %s, NULL, NULL, now()) ON CONFLICT (date) DO UPDATE SET "
            "status = 'success', rows = EXCLUDED.rows, run_id = EXCLUDED.run_id, error = NULL, "
            "prev_status = NULL, updated_at = now()", (day, count, run_id))
        cur.execute("UPDATE sync_runs SET days_done = days_done + 1, rows = rows + %s WHERE run_id = %s", (count, run_id))
    return count


def fail_day(conn: psycopg.Connection[Any], day: dt.date, run_id: str, error: str) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO sync_days (date, status, rows, run_id, error, updated_at) VALUES (%s, 'failed', 0, %s, %s, now()) "
            "ON CONFLICT (date) DO UPDATE SET status = 'failed', run_id = EXCLUDED.run_id, error = EXCLUDED.error, "
            "prev_status = NULL, updated_at = now()", (day, run_id, error))
        conn.execute("UPDATE sync_runs SET days_done = days_done + 1, days_failed = days_failed + 1 WHERE run_id = %s", (run_id,))


def plan_days(conn: psycopg.Connection[Any], run_id: str, trading: Sequence[dt.date], closed: Sequence[dt.date]) -> None:
    """Record closed days as skipped and never-seen trading days as pending."""
    with conn.transaction(), conn.cursor() as cur:
        if closed:
            cur.executemany(
                "INSERT INTO sync_days (date, status, rows, run_id, updated_at) VALUES (%s, 'skipped', 0, %s, now()) "
                "ON CONFLICT (date) DO UPDATE SET status = 'skipped', rows = 0, run_id = EXCLUDED.run_id, error = NULL, updated_at = now()",
                [(d, run_id) for d in closed])
        if trading:
            cur.executemany(
                "INSERT INTO sync_days (date, status, rows, run_id, updated_at) VALUES (%s, 'pending', 0, %s, now()) "
                "ON CONFLICT (date) DO NOTHING", [(d, run_id) for d in trading])


def mark_syncing(conn: psycopg.Connection[Any], days: Sequence[dt.date], run_id: str) -> None:
    """Mark the days of a window as being synced, remembering each one's status to restore on cancel."""
    conn.execute(
        "UPDATE sync_days SET prev_status = CASE WHEN status = 'syncing' THEN prev_status ELSE status END, "
        "status = 'syncing', run_id = %s, updated_at = now() WHERE date = ANY(%s)", (run_id, list(days)))


def unmark_syncing(conn: psycopg.Connection[Any], run_id: str) -> None:
    """After a cancel: days this run had marked syncing get their previous status back."""
    conn.execute(
        "UPDATE sync_days SET status = coalesce(prev_status, 'pending'), prev_status = NULL, updated_at = now() "
        "WHERE status = 'syncing' AND run_id = %s", (run_id,))


# --- runs --------------------------------------------------------------------------------

def insert_run(conn: psycopg.Connection[Any], run: RunRecord) -> dt.datetime:
    """Record a new run as running; its started_at is the database's clock (as every finished_at is), returned."""
    return conn.execute(
        "INSERT INTO sync_runs (run_id, task_type, requested_by, request_id, status, start_date, end_date, total_days, "
        "trading_days, started_at, host, pid) VALUES (%s, %s, %s, %s, 'running', %s, %s, %s, %s, now(), %s, %s) "
        "RETURNING started_at",
        (run.run_id, run.task_type, run.requested_by, run.request_id, run.start_date, run.end_date, run.total_days,
         run.trading_days, run.host, run.pid)).fetchone()[0]


def finish_run(conn: psycopg.Connection[Any], run_id: str, status: str, error: str | None) -> RunRecord | None:
    """Record a run's end. A row leaves `running` once: one already marked (interrupted) stays as it is."""
    runs = _fetch_runs(conn, "UPDATE sync_runs SET status = %s, error = %s, finished_at = now() "
                             "WHERE run_id = %s AND status = 'running' RETURNING *", (status, error, run_id))
    return runs[0] if runs else next(iter(_fetch_runs(conn, "SELECT * FROM sync_runs WHERE run_id = %s", (run_id,))), None)


def recover_orphans(conn: psycopg.Connection[Any]) -> list[str]:
    """Runs left `running` become interrupted and their syncing days failed. Call only holding the run lock:
    then no run is alive anywhere, so a `running` row belongs to a daemon that died under it."""
    with conn.transaction():
        dead = [r[0] for r in conn.execute(
            "UPDATE sync_runs SET status = 'interrupted', finished_at = now(), "
            "error = 'the daemon stopped during the run (killed, crashed or cut off from the database)' "
            "WHERE status = 'running' RETURNING run_id").fetchall()]
        if dead:
            conn.execute("UPDATE sync_days SET status = 'failed', prev_status = NULL, updated_at = now(), "
                         "error = 'interrupted: the daemon stopped while this day was syncing' "
                         "WHERE status = 'syncing' AND run_id = ANY(%s)", (dead,))
    return dead


def try_run_lock(conn: psycopg.Connection[Any]) -> bool:
    return bool(conn.execute(f"SELECT pg_try_advisory_lock({_RUN_LOCK_KEY})").fetchone()[0])


def release_run_lock(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"SELECT pg_advisory_unlock({_RUN_LOCK_KEY})")


# pg_locks shows a bigint advisory key as classid (high 32 bits), objid (low 32 bits), objsubid 1.
_RUN_LOCK_ROW = ("l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.database = "
                 "(SELECT oid FROM pg_database WHERE datname = current_database()) "
                 f"AND l.classid = {RUN_LOCK_SPACE} AND l.objid = {_TARGET_OID}")


SessionId = tuple[int, dt.datetime]  # (backend pid, backend start): a pid alone may be reused after a restart


def session_id(conn: psycopg.Connection[Any]) -> SessionId:
    row = conn.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()
    return (row[0], row[1])


def hold_write_fence(conn: psycopg.Connection[Any]) -> None:
    """In a day's write transaction: no other day write (of a later run) can begin until this one has ended."""
    conn.execute(f"SELECT pg_advisory_xact_lock({_WRITE_FENCE_KEY})")


def run_lock_holder(conn: psycopg.Connection[Any]) -> SessionId | None:
    """The session holding the run lock, if any (its backend_start is NULL to a role that may not see it)."""
    row = conn.execute(f"SELECT l.pid, a.backend_start FROM pg_locks l LEFT JOIN pg_stat_activity a USING (pid) "
                       f"WHERE {_RUN_LOCK_ROW}").fetchone()
    return (row[0], row[1]) if row else None


def run_lock_holder_name(conn: psycopg.Connection[Any]) -> str | None:
    """The application_name of the session holding the run lock (syncd-lock pid=N host=H), if any."""
    row = conn.execute(f"SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                       f"WHERE {_RUN_LOCK_ROW}").fetchone()
    return row[0] if row else None


def run_status(conn: psycopg.Connection[Any], run_id: str) -> str | None:
    row = conn.execute("SELECT status FROM sync_runs WHERE run_id = %s", (run_id,)).fetchone()
    return row[0] if row else None


def set_trading_days(conn: psycopg.Connection[Any], run_id: str, trading_days: int) -> None:
    conn.execute("UPDATE sync_runs SET trading_days = %s WHERE run_id = %s", (trading_days, run_id))


def running_run(conn: psycopg.Connection[Any]) -> RunRecord | None:
    """The newest run recorded as running (the holder of the run lock, possibly on another host)."""
    runs = _fetch_runs(conn, "SELECT * FROM sync_runs WHERE status = 'running' ORDER BY seq DESC LIMIT 1", ())
    return runs[0] if runs else None


def history(conn: psycopg.Connection[Any], limit: int) -> list[RunRecord]:
    return _fetch_runs(conn, "SELECT * FROM sync_runs ORDER BY seq DESC LIMIT %s", (limit,))


def _fetch_runs(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...]) -> list[RunRecord]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [_run_from_row(r) for r in cur.execute(sql, params).fetchall()]


def _run_from_row(r: dict[str, Any]) -> RunRecord:
    return RunRecord(
        run_id=r["run_id"], task_type=r["task_type"], requested_by=r["requested_by"], request_id=r["request_id"],
        status=r["status"], start_date=r["start_date"], end_date=r["end_date"], trading_days=r["trading_days"],
        days_done=r["days_done"], days_failed=r["days_failed"], rows=r["rows"], started_at=r["started_at"],
        finished_at=r["finished_at"], error=r["error"], host=r["host"], pid=r["pid"])


def days(conn: psycopg.Connection[Any], start: dt.date, end: dt.date) -> list[Day]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT date, status, rows, run_id, error FROM sync_days WHERE date BETWEEN %s AND %s ORDER BY date",
                           (start, end)).fetchall()
    return [Day(date=r["date"].isoformat(), status=r["status"], rows=r["rows"], run_id=r["run_id"], error=r["error"]) for r in rows]


def day_statuses(conn: psycopg.Connection[Any], start: dt.date, end: dt.date) -> dict[dt.date, str]:
    rows = conn.execute("SELECT date, status FROM sync_days WHERE date BETWEEN %s AND %s", (start, end)).fetchall()
    return dict(rows)


# --- calendar and stock list from a source ----------------------------------------------------

def save_calendar(conn: psycopg.Connection[Any], start: dt.date, end: dt.date, open_days: Sequence[dt.date], source: str) -> None:
    """Store a source's authoritative calendar for [start, end]: every day open or closed."""
    open_set = set(open_days)
    values = [(start + dt.timedelta(days=i), (start + dt.timedelta(days=i)) in open_set, source)
              for i in range((end - start).days + 1)]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany("INSERT INTO trade_calendar (date, is_open, source) VALUES (%s, %s, %s) ON CONFLICT (date) "
                        "DO UPDATE SET is_open = EXCLUDED.is_open, source = EXCLUDED.source, updated_at = now()", values)


def load_calendar(conn: psycopg.Connection[Any]) -> dict[dt.date, bool]:
    return dict(conn.execute("SELECT date, is_open FROM trade_calendar").fetchall())


def save_stocks(conn: psycopg.Connection[Any], stocks: Sequence[StockInfo]) -> None:
    """Upsert the stock list: COPY into a temporary table, then one INSERT ... ON CONFLICT."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE incoming_stocks (code text, name text, exchange text) ON COMMIT DROP")
        with cur.copy("COPY incoming_stocks (code, name, exchange) FROM STDIN") as copy:
            for stock in stocks:
                copy.write_row((stock.code, stock.name, stock.exchange))
        cur.execute("INSERT INTO stocks (code, name, exchange) SELECT DISTINCT ON (code) code, name, exchange "
                    "FROM incoming_stocks ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, "
                    "exchange = EXCLUDED.exchange, updated_at = now()")


# --- health and metrics reads (health.py's facts; small, indexed or on small tables) -------------

def day_status(conn: psycopg.Connection[Any], day: dt.date) -> str | None:
    """The recorded status of one day (None: never planned)."""
    row = conn.execute("SELECT status FROM sync_days WHERE date = %s", (day,)).fetchone()
    return row[0] if row else None


def last_scheduled_run(conn: psycopg.Connection[Any], task_types: Sequence[str]) -> RunRecord | None:
    """The newest run of the built-in schedule (any status)."""
    runs = _fetch_runs(conn, "SELECT * FROM sync_runs WHERE task_type = ANY(%s) ORDER BY seq DESC LIMIT 1", (list(task_types),))
    return runs[0] if runs else None


def latest_success_day(conn: psycopg.Connection[Any]) -> dt.date | None:
    """The newest day recorded `success`."""
    return conn.execute("SELECT max(date) FROM sync_days WHERE status = 'success'").fetchone()[0]


def last_success_times(conn: psycopg.Connection[Any]) -> dict[str, dt.datetime]:
    """task_type -> when its newest `succeeded` run finished."""
    return dict(conn.execute("SELECT task_type, max(finished_at) FROM sync_runs WHERE status = 'succeeded' "
                             "AND finished_at IS NOT NULL GROUP BY task_type").fetchall())


def runs_by_id(conn: psycopg.Connection[Any], run_ids: Sequence[str]) -> list[RunRecord]:
    return _fetch_runs(conn, "SELECT * FROM sync_runs WHERE run_id = ANY(%s) ORDER BY seq", (list(run_ids),))
