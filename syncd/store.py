"""Everything syncd reads from and writes to PostgreSQL, as plain functions over a connection.

This module owns the SQL: versioned migrations, run and day records, crash recovery, the
advisory lock that makes the database the arbiter between hosts, the stock list and its
names, and the reads behind `history` and `days`. The per-day write (DELETE + binary COPY +
derivation + checks + bookkeeping in one transaction) is daywrite.py's, re-exported here; the
views are compat.py's. Connections are autocommit and work through a transaction pooler
(pooling.py); every multi-statement change runs in an explicit transaction. It knows nothing
about sockets, threads or sources.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from . import compat, layout, pooling
from .daywrite import (  # noqa: F401 - the write path's names, as callers know them from here
    BAR_COLUMNS,
    BAR_TYPES,
    COPY_BARS,
    STAGE_COLUMNS,
    DayRejected,
    FenceProbe,
    WrittenDay,
    mark_days_syncing,
    replace_day,
    write_day,
    write_staged_day,
)
from .protocol import Day
from .record import RunRecord
from .sources.base import COLUMNS, Row, StockInfo
from .sqlrow import one, scalar

# Advisory lock keys derived from the target table: (space << 32) | oid of daily_bars, so daemons
# writing the same daily_bars exclude each other and ones writing another schema's do not.
RUN_LOCK_SPACE = 0x53594E43  # "SYNC": one sync at a time on this daily_bars, across every daemon
WRITE_FENCE_SPACE = 0x53594E46  # held by each day's write transaction: one day write at a time
_TARGET_OID = "'daily_bars'::regclass::oid"
_RUN_LOCK_KEY = f"(({RUN_LOCK_SPACE}::bigint << 32) | {_TARGET_OID}::bigint)"
_WRITE_FENCE_KEY = f"(({WRITE_FENCE_SPACE}::bigint << 32) | {_TARGET_OID}::bigint)"
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
        {compat.ADJUSTED_VIEWS}
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
    (5, "daily_bars partitioned by year; its (code, trade_date) index covers every column (layout.py)", layout.convert),
    (6, "daily_bars_qfq looks each stock's latest factor up once (compat._LATEST_FACTOR)", compat.ADJUSTED_VIEWS),
]

# Called first inside a run's write transaction (RunLock.fence): raises to stop the write when the run
# no longer holds the run lock, and holds the write fence (hold_write_fence) until the transaction ends.
# Every multi-statement write of a run passes it, so a new holder can end (end_stray_writes) any write
# of a run that lost the lock, and no such write can block or outlast the new run's.
Fence = Callable[[psycopg.Connection[Any]], None]


class StoreError(Exception):
    """A schema or data problem an operator must fix (not a lost connection)."""


# Server side, on the run lock's session: the server drops the session of a host that vanished
# (cut off, powered off) 3-6 s after the last packet it got from it, instead of the kernel's two
# hours: probes after 2 s idle, then every 1 s; tcp_user_timeout bounds a reply it cannot deliver
# (and, once probing, when the session is dropped). Its run lock frees then, and a standby's start
# is admitted (docs/operations.md, "Active/standby"). Ignored on unix sockets.
SESSION_KEEPALIVES = {"tcp_keepalives_idle": "2", "tcp_keepalives_interval": "1", "tcp_keepalives_count": "3",
                      "tcp_user_timeout": "5000"}

# Client side, libpq's own parameters on every connection (unless the DSN sets them): a statement
# on a connection whose server is unreachable fails within ~6 s instead of waiting ~15 min for
# TCP to give up. A slow statement is not affected (the server's kernel keeps answering).
CLIENT_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "2", "keepalives_interval": "1", "keepalives_count": "3",
                     "tcp_user_timeout": "5000"}


def connect(dsn: str, timeout_s: float = 10.0, application_name: str = "syncd", *, session: bool = False,
            **settings: str) -> psycopg.Connection[Any]:
    """An autocommit connection that works through a transaction pooler (pooling.py): `settings`
    (statement_timeout...) and the DSN's own `options` (a search_path...) hold for every statement,
    applied inside each transaction; `session=True` (the run lock's connection) sets them once.
    libpq's keepalives (CLIENT_KEEPALIVES) are connection parameters, unless the DSN sets them."""
    return pooling.connect(dsn, timeout_s, application_name, settings, session=session, libpq=client_keepalives(dsn))


def client_keepalives(dsn: str) -> dict[str, str]:
    """CLIENT_KEEPALIVES, less any the DSN sets itself (an operator's own choice wins)."""
    own = psycopg.conninfo.conninfo_to_dict(dsn)
    return {key: value for key, value in CLIENT_KEEPALIVES.items() if key not in own}


def migrate(conn: psycopg.Connection[Any], compat_view: bool = False, compat_adjust: str = "none") -> int:
    """Apply missing migrations (serialised across daemons); return the schema version. With `compat_view`,
    keep the daily_stock_data view (compat.py) showing `compat_adjust` prices."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS syncd_migrations (version integer PRIMARY KEY, "
                     "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        current = scalar(conn.execute("SELECT coalesce(max(version), 0) FROM syncd_migrations"))
        for version, description, sql in MIGRATIONS:
            if version > current:
                try:
                    sql(conn) if callable(sql) else conn.execute(sql)
                except layout.LayoutError as exc:
                    raise StoreError(str(exc)) from None
                conn.execute("INSERT INTO syncd_migrations (version, description) VALUES (%s, %s)", (version, description))
                current = version
        if compat_view:
            try:
                compat.ensure_compat_view(conn, compat_adjust)
            except compat.CompatViewError as exc:
                raise StoreError(str(exc)) from None
    return current


# --- the per-day write path: daywrite.py (re-exported here) -------------------------------------

def fail_day(conn: psycopg.Connection[Any], day: dt.date, run_id: str, error: str,
             fence: Fence | None = None) -> None:
    with conn.transaction():
        if fence is not None:
            fence(conn)
        conn.execute(
            "INSERT INTO sync_days (date, status, rows, run_id, error, updated_at) VALUES (%s, 'failed', 0, %s, %s, now()) "
            "ON CONFLICT (date) DO UPDATE SET status = 'failed', run_id = EXCLUDED.run_id, error = EXCLUDED.error, "
            "prev_status = NULL, updated_at = now()", (day, run_id, error))
        conn.execute("UPDATE sync_runs SET days_done = days_done + 1, days_failed = days_failed + 1 WHERE run_id = %s", (run_id,))


def plan_days(conn: psycopg.Connection[Any], run_id: str, trading: Sequence[dt.date], closed: Sequence[dt.date],
              fence: Fence | None = None) -> None:
    """Record closed days as skipped and never-seen trading days as pending."""
    with conn.transaction(), conn.cursor() as cur:
        if fence is not None:
            fence(conn)
        if closed:
            cur.executemany(
                "INSERT INTO sync_days (date, status, rows, run_id, updated_at) VALUES (%s, 'skipped', 0, %s, now()) "
                "ON CONFLICT (date) DO UPDATE SET status = 'skipped', rows = 0, run_id = EXCLUDED.run_id, error = NULL, updated_at = now()",
                [(d, run_id) for d in closed])
        if trading:
            cur.executemany(
                "INSERT INTO sync_days (date, status, rows, run_id, updated_at) VALUES (%s, 'pending', 0, %s, now()) "
                "ON CONFLICT (date) DO NOTHING", [(d, run_id) for d in trading])


def mark_syncing(conn: psycopg.Connection[Any], days: Sequence[dt.date], run_id: str,
                 fence: Fence | None = None) -> None:
    """Mark the days of a window as being synced, remembering each one's status to restore on cancel.
    `fence` as in replace_day: a run that lost the run lock must not mark the next run's days."""
    mark_days_syncing(conn, days, run_id, fence)


def unmark_syncing(conn: psycopg.Connection[Any], run_id: str) -> None:
    """After a cancel: days this run had marked syncing get their previous status back. Not once the run's
    row has left `running`: whoever marked it interrupted has settled its days (recover_orphans)."""
    conn.execute(
        "UPDATE sync_days SET status = coalesce(prev_status, 'pending'), prev_status = NULL, updated_at = now() "
        "WHERE status = 'syncing' AND run_id = %s "
        "AND EXISTS (SELECT 1 FROM sync_runs WHERE run_id = %s AND status = 'running')", (run_id, run_id))


# --- runs --------------------------------------------------------------------------------

def insert_run(conn: psycopg.Connection[Any], run: RunRecord) -> dt.datetime:
    """Record a new run as running; its started_at is the database's clock (as every finished_at is), returned."""
    return scalar(conn.execute(
        "INSERT INTO sync_runs (run_id, task_type, requested_by, request_id, status, start_date, end_date, total_days, "
        "trading_days, started_at, host, pid) VALUES (%s, %s, %s, %s, 'running', %s, %s, %s, %s, now(), %s, %s) "
        "RETURNING started_at",
        (run.run_id, run.task_type, run.requested_by, run.request_id, run.start_date, run.end_date, run.total_days,
         run.trading_days, run.host, run.pid)))


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
    return bool(scalar(conn.execute(f"SELECT pg_try_advisory_lock({_RUN_LOCK_KEY})")))


def release_run_lock(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"SELECT pg_advisory_unlock({_RUN_LOCK_KEY})")


# pg_locks shows a bigint advisory key as classid (high 32 bits), objid (low 32 bits), objsubid 1.
def _advisory_lock_row(space: int) -> str:
    return ("l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) "
            f"AND l.classid = {space} AND l.objid = {_TARGET_OID}")


_RUN_LOCK_ROW = _advisory_lock_row(RUN_LOCK_SPACE)


SessionId = tuple[int, dt.datetime]  # (backend pid, backend start): a pid alone may be reused after a restart


def session_id(conn: psycopg.Connection[Any]) -> SessionId:
    row = one(conn.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"))
    return (row[0], row[1])


def try_write_fence(conn: psycopg.Connection[Any]) -> bool:
    """In a transaction: take the day-write fence if no day write holds it now (verify checking a day)."""
    return bool(scalar(conn.execute(f"SELECT pg_try_advisory_xact_lock({_WRITE_FENCE_KEY})")))


HOLD_WRITE_FENCE = f"SELECT pg_advisory_xact_lock({_WRITE_FENCE_KEY})"


def hold_write_fence(conn: psycopg.Connection[Any]) -> None:
    """In a day's write transaction: no other day write (of a later run) can begin until this one has ended."""
    conn.execute(HOLD_WRITE_FENCE)


def fence_probe(session: SessionId) -> FenceProbe:
    held = (f"EXISTS (SELECT 1 FROM pg_locks l LEFT JOIN pg_stat_activity a USING (pid) WHERE {_RUN_LOCK_ROW} "
            "AND l.pid = %s AND a.backend_start IS NOT DISTINCT FROM %s::timestamptz)")
    return FenceProbe(HOLD_WRITE_FENCE, held, session)


_WRITE_FENCE_ROW = _advisory_lock_row(WRITE_FENCE_SPACE)
STRAY_WRITE_WAIT_MS = 3000  # within the lock session's statement_timeout


def end_stray_writes(conn: psycopg.Connection[Any]) -> list[int]:
    """Call holding the run lock. A write transaction still holding the write fence then belongs to a run
    that lost the lock: typically a host cut off mid-write, whose server session lingers until TCP gives
    up on it, and could still commit if its link came back. End it (pg_terminate_backend, waiting for
    the session to exit), so no write of an earlier run commits after the caller's run began.
    Returns the ended sessions' pids. Raises InsufficientPrivilege when the role may not end them."""
    rows = conn.execute(f"SELECT l.pid, pg_terminate_backend(l.pid, {STRAY_WRITE_WAIT_MS}) FROM pg_locks l "
                        f"WHERE {_WRITE_FENCE_ROW} AND l.pid <> pg_backend_pid()").fetchall()
    return [pid for pid, _ in rows]


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
        rows = cur.execute("SELECT date, status, rows, run_id, error, expected, missing FROM sync_days "
                           "WHERE date BETWEEN %s AND %s ORDER BY date", (start, end)).fetchall()
    return [Day(date=r["date"].isoformat(), status=r["status"], rows=r["rows"], run_id=r["run_id"], error=r["error"],
                expected=r["expected"], missing=r["missing"]) for r in rows]


def missing_codes(conn: psycopg.Connection[Any], day: dt.date) -> list[str]:
    """The stocks whose request failed when `day` was last written (an `incomplete` day's to fetch again)."""
    return [r[0] for r in conn.execute("SELECT code FROM sync_day_missing WHERE date = %s ORDER BY code", (day,)).fetchall()]


def day_statuses(conn: psycopg.Connection[Any], start: dt.date, end: dt.date) -> dict[dt.date, str]:
    rows = conn.execute("SELECT date, status FROM sync_days WHERE date BETWEEN %s AND %s", (start, end)).fetchall()
    return dict(rows)


# --- calendar and stock list from a source ----------------------------------------------------

def save_calendar(conn: psycopg.Connection[Any], start: dt.date, end: dt.date, open_days: Sequence[dt.date], source: str,
                  fence: Fence | None = None) -> None:
    """Store a source's authoritative calendar for [start, end]: every day open or closed."""
    open_set = set(open_days)
    values = [(start + dt.timedelta(days=i), (start + dt.timedelta(days=i)) in open_set, source)
              for i in range((end - start).days + 1)]
    with conn.transaction(), conn.cursor() as cur:
        if fence is not None:
            fence(conn)
        cur.executemany("INSERT INTO trade_calendar (date, is_open, source) VALUES (%s, %s, %s) ON CONFLICT (date) "
                        "DO UPDATE SET is_open = EXCLUDED.is_open, source = EXCLUDED.source, updated_at = now()", values)


def load_calendar(conn: psycopg.Connection[Any]) -> dict[dt.date, bool]:
    return dict(conn.execute("SELECT date, is_open FROM trade_calendar").fetchall())


def save_stocks(conn: psycopg.Connection[Any], stocks: Sequence[StockInfo], seen_on: dt.date | None = None,
                fence: Fence | None = None) -> None:
    """Upsert the stock list: COPY into a temporary table, then one INSERT ... ON CONFLICT. Each name is also
    recorded as the stock's name on `seen_on` (default: today in the session's time zone) in stock_names,
    where the checks learn which days a stock carried ST (a known listing date is kept when a later list lacks it)."""
    with conn.transaction(), conn.cursor() as cur:
        if fence is not None:
            fence(conn)
        cur.execute("CREATE TEMPORARY TABLE incoming_stocks (code text, name text, exchange text, listing_date date) "
                    "ON COMMIT DROP")
        with cur.copy("COPY incoming_stocks (code, name, exchange, listing_date) FROM STDIN") as copy:
            for stock in stocks:
                copy.write_row((stock.code, stock.name, stock.exchange, stock.listing_date))
        cur.execute("INSERT INTO stocks (code, name, exchange, listing_date) "
                    "SELECT DISTINCT ON (code) code, name, exchange, listing_date FROM incoming_stocks "
                    "ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, exchange = EXCLUDED.exchange, "
                    "listing_date = coalesce(EXCLUDED.listing_date, stocks.listing_date), updated_at = now()")
        _record_names(cur, seen_on)


def _record_names(cur: psycopg.Cursor[Any], seen_on: dt.date | None) -> None:
    """Extend each stock's latest name record to `seen_on` when the name is unchanged, else start a new one."""
    cur.execute("CREATE TEMPORARY TABLE seen_names ON COMMIT DROP AS "
                "SELECT DISTINCT ON (i.code) i.code, i.name, coalesce(%s::date, current_date) AS seen, n.name AS last_name, "
                "n.first_seen, n.last_seen FROM incoming_stocks i LEFT JOIN LATERAL (SELECT * FROM stock_names x "
                "WHERE x.code = i.code ORDER BY x.first_seen DESC LIMIT 1) n ON true WHERE i.name IS NOT NULL", (seen_on,))
    cur.execute("UPDATE stock_names n SET last_seen = greatest(n.last_seen, s.seen) FROM seen_names s "
                "WHERE n.code = s.code AND n.first_seen = s.first_seen AND s.last_name = s.name")
    cur.execute("INSERT INTO stock_names (code, name, first_seen, last_seen) SELECT code, name, seen, seen FROM seen_names "
                "WHERE last_name IS DISTINCT FROM name "
                "ON CONFLICT (code, first_seen) DO UPDATE SET name = EXCLUDED.name")


# --- sync-flow: the stage of per-stock fetches, incomplete days, unconfirmed days ------------
# The by_stock plan asks each stock once for the run's whole range and stages what arrives here,
# then writes each day from the stage in its own transaction. A staged bar is a Row's values after
# the code (base.COLUMNS order) as one float8[], so the stage follows Row's columns as they are.
# Only the run holding the run lock uses the stage; it is emptied when such a run begins and ends.

STAGE_COPY = "COPY sync_stage (run_id, trade_date, code, bar) FROM STDIN (FORMAT BINARY)"
_VOLUME = COLUMNS.index("volume")


def clear_stage(conn: psycopg.Connection[Any]) -> None:
    conn.execute("TRUNCATE sync_stage")


def stage_bars(conn: psycopg.Connection[Any], run_id: str, bars: Iterable[tuple[dt.date, Row]]) -> int:
    """Append (day, row) pairs to the run's stage (one COPY); return how many."""
    count = 0
    with conn.transaction(), conn.cursor() as cur, cur.copy(STAGE_COPY) as copy:
        copy.set_types(["text", "date", "text", "float8[]"])
        for day, row in bars:
            copy.write_row((run_id, day, row[0], list(row[1:])))
            count += 1
    return count


def staged_rows(conn: psycopg.Connection[Any], run_id: str, day: dt.date, codes: Collection[str] | None = None) -> list[Row]:
    """The run's staged rows for `day` (only those of `codes` when given), as Row tuples in code order."""
    sql = "SELECT code, bar FROM sync_stage WHERE run_id = %s AND trade_date = %s"
    params: tuple[Any, ...] = (run_id, day)
    if codes is not None:
        sql, params = sql + " AND code = ANY(%s)", (*params, list(codes))
    rows = []
    for code, bar in conn.execute(sql + " ORDER BY code", params):
        values = list(bar)
        if values[_VOLUME - 1] is not None:
            values[_VOLUME - 1] = int(values[_VOLUME - 1])
        rows.append((code, *values))
    return rows


def keep_incomplete(conn: psycopg.Connection[Any], day: dt.date, run_id: str, missing: Collection[str], error: str,
                    fence: Fence | None = None) -> None:
    """A re-fetch of an incomplete day's missing stocks failed again: the day keeps its rows and stays incomplete."""
    with conn.transaction():
        if fence is not None:
            fence(conn)
        conn.execute("UPDATE sync_days SET status = 'incomplete', run_id = %s, error = %s, missing = %s, "
                     "prev_status = NULL, updated_at = now() WHERE date = %s", (run_id, error, len(missing), day))
        conn.execute("DELETE FROM sync_day_missing WHERE date = %s", (day,))
        conn.execute("INSERT INTO sync_day_missing (date, code) SELECT %s, unnest(%s::text[])", (day, sorted(missing)))
        conn.execute("UPDATE sync_runs SET days_done = days_done + 1, days_failed = days_failed + 1 WHERE run_id = %s", (run_id,))


def missing_codes_by_day(conn: psycopg.Connection[Any], days: Sequence[dt.date]) -> dict[dt.date, list[str]]:
    """The incomplete days among `days` with the stocks each one misses."""
    rows = conn.execute("SELECT m.date, array_agg(m.code ORDER BY m.code) FROM sync_day_missing m JOIN sync_days d "
                        "USING (date) WHERE m.date = ANY(%s) AND d.status = 'incomplete' GROUP BY m.date",
                        (list(days),)).fetchall()
    return dict(rows)


def plan_unconfirmed(conn: psycopg.Connection[Any], run_id: str, days: Sequence[dt.date], reason: Callable[[dt.date], str],
                     fence: Fence | None = None) -> None:
    """Weekdays no calendar confirms: recorded `pending` with the reason. A day that holds rows keeps its
    status; one that failed with nothing stored (an earlier version took every weekday past the horizon
    for a trading day) becomes pending too."""
    with conn.transaction(), conn.cursor() as cur:
        if fence is not None:
            fence(conn)
        cur.executemany(
            "INSERT INTO sync_days (date, status, rows, run_id, error, updated_at) VALUES (%s, 'pending', 0, %s, %s, now()) "
            "ON CONFLICT (date) DO UPDATE SET status = 'pending', error = EXCLUDED.error, run_id = EXCLUDED.run_id, "
            "updated_at = now() WHERE sync_days.status = 'pending' OR (sync_days.status = 'failed' AND sync_days.rows = 0)",
            [(d, run_id, reason(d)) for d in days])

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
    return scalar(conn.execute("SELECT max(date) FROM sync_days WHERE status = 'success'"))


def last_success_times(conn: psycopg.Connection[Any]) -> dict[str, dt.datetime]:
    """task_type -> when its newest `succeeded` run finished."""
    return dict(conn.execute("SELECT task_type, max(finished_at) FROM sync_runs WHERE status = 'succeeded' "
                             "AND finished_at IS NOT NULL GROUP BY task_type").fetchall())


def runs_by_id(conn: psycopg.Connection[Any], run_ids: Sequence[str]) -> list[RunRecord]:
    return _fetch_runs(conn, "SELECT * FROM sync_runs WHERE run_id = ANY(%s) ORDER BY seq", (list(run_ids),))
