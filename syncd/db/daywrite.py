"""Writing one trading day into daily_bars: atomic, derived, checked and recorded, in one transaction.

This module owns the per-day write path that sync.py calls once per day (store re-exports
it). In one transaction: the run's fence; the day's old rows go, except those of the stocks
whose request failed (`missing`: a failed request never deletes data); the new rows arrive
by binary COPY (directly when complete, through a stage when pre_close, adj_factor or
pct_change must be derived: factors.py); the checks run on the day's rows and their
findings are stored (checks.py); and the day is recorded: `success`, or `incomplete` when
stocks are missing, with `expected`, `missing`, its anomalies and when it was written, and
the run's counters move. A day is refused (DayRejected, nothing written) when nothing was
fetched or when the unit guard trips; the caller records it `failed` with that message.

`write_day` takes the rows (Row tuples or a source's EncodedRows); `write_staged_day` takes
a query over rows already in PostgreSQL (a by_stock source's staging table). Row tuples are
encoded per row here; EncodedRows are copied as they are (no per-row Python), their
`suspects` (prefilter.py) are the only rows the checks judge, and a re-sync of a day that
holds rows rewrites only the rows that differ (`_merge`). The transaction is driven by hand
(pooling.BatchedTransaction) so that it costs four round trips: BEGIN, settings, the fence's
probe and the day's old rows; the COPY; the checks; the bookkeeping with COMMIT.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from ..sources.base import EncodedRows, Row
from . import checks, factors, partitions
from .connection import BatchedTransaction
from .sqlrow import scalar

BAR_COLUMNS = ("trade_date", "code", "open", "high", "low", "close", "pre_close", "volume", "amount", "turnover",
               "pct_change", "adj_factor")
BAR_TYPES = ("date", "text", "float8", "float8", "float8", "float8", "float8", "int8", "float8", "float8", "float8", "float8")
COPY_BARS = f"COPY daily_bars ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
# SET LOCAL in each day's transaction: JIT-compiling these few-millisecond statements would take ~100 ms and more.
WRITE_SETTINGS = {"jit": "off"}
STAGE_COLUMNS = BAR_COLUMNS[1:]  # a Row's fields, in order: what a stage query must select
_STAGE = "incoming_bars"
_CREATE_STAGE = (f"CREATE TEMPORARY TABLE {_STAGE} (code text, open float8, high float8, low float8, close float8, "
                 "pre_close float8, volume int8, amount float8, turnover float8, pct_change float8, adj_factor float8) "
                 "ON COMMIT DROP")
_PRE_CLOSE, _PCT_CHANGE, _ADJ_FACTOR = 5, 9, 10  # Row positions the write path derives when None

Fence = Callable[[psycopg.Connection[Any]], None]
IsTradingDay = Callable[[dt.date], bool]


class DayRejected(Exception):
    """A day the write path refused to write; the message is the day's error (nothing was changed)."""


@dataclass(frozen=True)
class FenceProbe:
    """The run lock's fence as SQL that can share a pipeline with a day's first statements (daywrite.py):
    `take` holds the write fence (store.hold_write_fence); `held` is a boolean SQL expression, with `params`,
    true while the session `SessionId` still holds the run lock (store.run_lock_holder() == session). When
    `held` is false the caller runs the full fence (RunLock.fence), which re-takes the lock or raises."""

    take: str
    held: str
    params: tuple[Any, ...]


@dataclass(frozen=True)
class WrittenDay:
    rows: int                                  # rows the day holds now: fetched plus those kept for missing stocks
    fetched: int                               # rows written by this call
    status: Literal["success", "incomplete"]
    anomalies: int                             # findings of the checks on the day's rows


def _probe_of(fence: Fence | None) -> FenceProbe | None:
    """The fence's pipelined form, if it has one (the run's fence does; a plain callable such as
    store.hold_write_fence does not, and then the full check runs)."""
    probe = getattr(fence, "probe", None)
    return probe() if probe is not None else None


def replace_day(conn: psycopg.Connection[Any], day: dt.date, rows: Iterable[Row] | EncodedRows, run_id: str,
                fence: Fence | None = None) -> int:
    """A complete day (nothing missing, coverage unknown): `write_day`, returning the row count."""
    return write_day(conn, day, rows, run_id, fence=fence).rows


def write_day(conn: psycopg.Connection[Any], day: dt.date, rows: Iterable[Row] | EncodedRows, run_id: str, *,
              expected: int | None = None, missing: Collection[str] = (), fence: Fence | None = None,
              is_trading_day: IsTradingDay | None = None, replace_only: Collection[str] | None = None,
              before_commit: Callable[[], None] | None = None, error: str | None = None,
              mark_syncing: bool = False) -> WrittenDay:
    """Atomically replace `day`'s rows with `rows` (plus the stored rows of the `missing` stocks) and record it.

    `expected`: stocks the source says were listed (None: it cannot say). `missing`: codes whose request
    failed. `fence`, called first inside the transaction, may raise to stop the write (the run lock check);
    one with a `probe()` (FenceProbe or None) has its check sent with the day's first statements.
    `is_trading_day` tells factor derivation which days a gap would be (default: the packaged calendar).
    `replace_only`: a re-fetch of some stocks (an incomplete day's missing ones): only their stored rows
    go, every other stored row stays. `before_commit` is called last inside the transaction and may raise
    to roll the whole day back (a cancel). `error`: the day's recorded error (why it is incomplete).
    `mark_syncing`: first record the day `syncing` for `run_id`, in a transaction of its own that commits
    before the write begins (as store.mark_syncing; in the write's first round trip when the fence has a probe).
    Raises DayRejected when nothing was fetched or the unit guard trips."""
    _ensure_partition(conn, day)
    probe = _probe_of(fence)
    if mark_syncing and probe is None:
        mark_days_syncing(conn, [day], run_id, fence)
    mark_syncing = mark_syncing and probe is not None  # else done: the write's transaction goes next
    if isinstance(rows, EncodedRows):
        encoded = rows

        def load(cur: psycopg.Cursor[Any], chain: factors.Chain | None) -> int:
            with cur.copy(COPY_BARS) as copy:
                copy.write(encoded.payload)
            return encoded.count
        return _write(conn, day, run_id, load, derive=False, expected=expected, missing=missing, fence=fence,
                      is_trading_day=is_trading_day, replace_only=replace_only, before_commit=before_commit, error=error,
                      encoded=encoded, mark_syncing=mark_syncing, probe=probe)
    bars = [row if len(row) == len(STAGE_COLUMNS) else (*row, None) for row in rows]  # sources still on 10 fields
    fetched = {row[0] for row in bars}
    derive = any(row[_PRE_CLOSE] is None or row[_PCT_CHANGE] is None or row[_ADJ_FACTOR] is None for row in bars)

    def load_rows(cur: psycopg.Cursor[Any], chain: factors.Chain | None) -> int:
        if chain is None:
            _copy_rows(cur, COPY_BARS, BAR_TYPES, ((day, *row) for row in bars))
            return len(bars)
        cur.execute(_CREATE_STAGE)
        _copy_rows(cur, f"COPY {_STAGE} FROM STDIN (FORMAT BINARY)", BAR_TYPES[1:], bars)
        return factors.insert_derived(cur.connection, chain, f"SELECT {', '.join(STAGE_COLUMNS)} FROM {_STAGE}")
    return _write(conn, day, run_id, load_rows, derive=derive, expected=expected,
                  missing=[code for code in missing if code not in fetched], fence=fence, is_trading_day=is_trading_day,
                  replace_only=replace_only, before_commit=before_commit, error=error, mark_syncing=mark_syncing,
                  probe=probe)


def write_staged_day(conn: psycopg.Connection[Any], day: dt.date, stage_sql: str, params: dict[str, Any] | None,
                     run_id: str, *, expected: int | None = None, missing: Collection[str] = (),
                     fence: Fence | None = None, is_trading_day: IsTradingDay | None = None) -> WrittenDay:
    """`write_day` for rows already in PostgreSQL: `stage_sql` selects STAGE_COLUMNS (in order) of `day`'s rows,
    with its own named `params` (for example `SELECT code, open, ..., adj_factor FROM stage WHERE day = %(d)s`).
    Its codes must not include `missing` ones."""
    def load(cur: psycopg.Cursor[Any], chain: factors.Chain | None) -> int:
        assert chain is not None
        return factors.insert_derived(cur.connection, chain, stage_sql, params)
    return _write(conn, day, run_id, load, derive=True, expected=expected, missing=missing, fence=fence,
                  is_trading_day=is_trading_day, probe=_probe_of(fence))


def _ensure_partition(conn: psycopg.Connection[Any], day: dt.date) -> None:
    """The day's year partition exists before its transaction begins (partitions.py): asked once per year on a
    pooled connection, which remembers the answer (one query per day otherwise)."""
    known: set[int] | None = getattr(conn, "partition_years", None)
    if known is not None and day.year in known:
        return
    partitions.ensure_year(conn, day.year)
    if known is not None:
        known.add(day.year)


def _copy_rows(cur: psycopg.Cursor[Any], statement: str, types: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with cur.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _write(conn: psycopg.Connection[Any], day: dt.date, run_id: str,
           load: Callable[[psycopg.Cursor[Any], factors.Chain | None], int], *, derive: bool, expected: int | None,
           missing: Collection[str], fence: Fence | None, is_trading_day: IsTradingDay | None,
           replace_only: Collection[str] | None = None, before_commit: Callable[[], None] | None = None,
           error: str | None = None, encoded: EncodedRows | None = None, mark_syncing: bool = False,
           probe: FenceProbe | None = None) -> WrittenDay:
    """The day's transaction, in as few round trips as its data allows: BEGIN, settings, the fence and the
    day's old rows in one; the COPY; the checks (none when a payload's pre-filter cleared every row);
    the bookkeeping with COMMIT in one."""
    kept_codes = sorted(set(missing))
    whole_day = not kept_codes and replace_only is None
    merge = encoded is not None and whole_day  # a payload replacing a whole day: see _merge
    marked: psycopg.Cursor[Any] | None = None
    with BatchedTransaction(conn, WRITE_SETTINGS) as tx, conn.cursor() as cur:
        mark = BatchedTransaction(conn) if mark_syncing and probe is not None else None
        with conn.pipeline():
            if mark is not None and probe is not None:  # its own transaction, committed before the write's begins
                mark.begin()
                cur.execute(probe.take)
                marked = conn.cursor().execute(MARK_SYNCING + f" AND {probe.held}", (run_id, [day], *probe.params))
                mark.commit()
            tx.begin()
            if probe is not None:
                cur.execute(probe.take)
                held = conn.cursor().execute(f"SELECT {probe.held}", probe.params)
            elif fence is not None:
                fence(conn)
            if merge:
                present = conn.cursor().execute("SELECT EXISTS (SELECT 1 FROM daily_bars WHERE trade_date = %s)", (day,))
            elif replace_only is None:
                cur.execute("DELETE FROM daily_bars WHERE trade_date = %s AND NOT (code = ANY(%s))", (day, kept_codes))
            else:
                cur.execute("DELETE FROM daily_bars WHERE trade_date = %s AND code = ANY(%s)", (day, sorted(set(replace_only))))
            if not whole_day:
                kept_count = conn.cursor().execute("SELECT count(*) FROM daily_bars WHERE trade_date = %s", (day,))
        if probe is not None and not scalar(held):
            fence(conn)  # type: ignore[misc]  # the run lock's session is not the one we took it on: the full fence
        if marked is not None and marked.rowcount != 1:  # the full fence passed: mark it with the write, then
            cur.execute(MARK_SYNCING, (run_id, [day]))
        kept = scalar(kept_count) if not whole_day else 0
        if merge and scalar(present):
            assert encoded is not None
            fetched = _merge(conn, day, encoded)
        else:
            fetched = load(cur, factors.chain_for(conn, day, is_trading_day) if derive else None)
        if fetched == 0:
            raise DayRejected(f"nothing fetched for {day}" + (f" ({len(kept_codes)} stocks' requests failed)" if kept_codes else
                                                              " (the source returned no rows)"))
        # A pre-filter's verdict holds for the payload's rows only: a day that keeps stored rows is judged whole.
        judged = encoded.suspects if encoded is not None and whole_day else None
        found = checks.record_findings(conn, day, judged) if judged is None or judged else []
        if (guard := checks.unit_guard_error(day, found, fetched + kept)) is not None:
            raise DayRejected(guard)
        status: Literal["success", "incomplete"] = "incomplete" if kept_codes else "success"
        if before_commit is not None:
            before_commit()
        with conn.pipeline():
            if judged is not None and not judged:
                cur.execute(checks.CLEAR_FINDINGS, (day,))  # no suspect: the day's findings are none
            _record_day(cur, day, run_id, status, fetched + kept, expected, kept_codes, len(found),
                        error if status == "incomplete" else None)
            cur.execute("UPDATE sync_runs SET days_done = days_done + 1, days_failed = days_failed + %s, rows = rows + %s "
                        "WHERE run_id = %s", (int(status == "incomplete"), fetched, run_id))
            tx.commit()
    return WrittenDay(rows=fetched + kept, fetched=fetched, status=status, anomalies=len(found))


MARK_SYNCING = ("UPDATE sync_days SET prev_status = CASE WHEN status = 'syncing' THEN prev_status ELSE status END, "
                "status = 'syncing', run_id = %s, updated_at = now() WHERE date = ANY(%s)")


def mark_days_syncing(conn: psycopg.Connection[Any], days: Sequence[dt.date], run_id: str, fence: Fence | None = None) -> None:
    """Mark the days of a window as being synced, remembering each one's status to restore on cancel.
    `fence` as in write_day: a run that lost the run lock must not mark the next run's days. One round trip
    when the fence has a probe (the update then applies only while the run holds the lock; else the full
    fence runs, and the update with it)."""
    probe = _probe_of(fence)
    if probe is not None:
        with BatchedTransaction(conn) as tx, conn.pipeline():
            tx.begin()
            conn.execute(probe.take)
            marked = conn.execute(MARK_SYNCING + f" AND {probe.held}", (run_id, list(days), *probe.params))
            tx.commit()
        if marked.rowcount == len(set(days)):
            return
    with conn.transaction():  # the full fence: re-takes the run lock or raises (or days never planned: marked as found)
        if fence is not None:
            fence(conn)
        conn.execute(MARK_SYNCING, (run_id, list(days)))


# A re-sync of a day that holds rows: the payload lands in a session-local table, and only the rows that
# differ go: stored rows equal to the incoming ones stay as they are (no dead tuple, no index entry to
# add), so re-syncing unchanged days costs little more than reading them. The day ends holding exactly
# the payload's rows, as DELETE + COPY would leave it (duplicate codes in a payload still fail: the
# incoming table's primary key).
_INCOMING = "incoming_day"
_CREATE_INCOMING = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {_INCOMING} (trade_date date NOT NULL, code text NOT NULL, "
                    "open float8, high float8, low float8, close float8, pre_close float8, volume int8, amount float8, "
                    "turnover float8, pct_change float8, adj_factor float8, PRIMARY KEY (trade_date, code)) "
                    "ON COMMIT DELETE ROWS")
_VALUES = ", ".join(BAR_COLUMNS[2:])
_DROP_CHANGED = (f"DELETE FROM daily_bars b WHERE b.trade_date = %s AND NOT EXISTS (SELECT 1 FROM {_INCOMING} i "
                 f"WHERE i.trade_date = b.trade_date AND i.code = b.code AND ({', '.join('i.' + c for c in BAR_COLUMNS[2:])}) "
                 f"IS NOT DISTINCT FROM ({', '.join('b.' + c for c in BAR_COLUMNS[2:])}))")
_ADD_NEW = (f"INSERT INTO daily_bars ({', '.join(BAR_COLUMNS)}) SELECT {', '.join('i.' + c for c in BAR_COLUMNS)} "
            f"FROM {_INCOMING} i WHERE NOT EXISTS (SELECT 1 FROM daily_bars b WHERE b.trade_date = i.trade_date "
            "AND b.code = i.code)")


def _merge(conn: psycopg.Connection[Any], day: dt.date, encoded: EncodedRows) -> int:
    with conn.cursor() as cur:
        cur.execute(_CREATE_INCOMING)
        with cur.copy(f"COPY {_INCOMING} ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(encoded.payload)
        with conn.pipeline():
            cur.execute(_DROP_CHANGED, (day,))
            cur.execute(_ADD_NEW)
    return encoded.count


def _record_day(cur: psycopg.Cursor[Any], day: dt.date, run_id: str, status: str, rows: int, expected: int | None,
                missing: list[str], anomalies: int, error: str | None) -> None:
    cur.execute(
        "INSERT INTO sync_days (date, status, rows, run_id, error, prev_status, expected, missing, anomalies, checked_at, "
        "written_at, updated_at) VALUES (%s, %s, %s, %s, %s, NULL, %s, %s, %s, now(), now(), now()) "
        "ON CONFLICT (date) DO UPDATE SET status = EXCLUDED.status, rows = EXCLUDED.rows, run_id = EXCLUDED.run_id, "
        "error = EXCLUDED.error, prev_status = NULL, expected = EXCLUDED.expected, missing = EXCLUDED.missing, "
        "anomalies = EXCLUDED.anomalies, checked_at = now(), written_at = now(), updated_at = now()",
        (day, status, rows, run_id, error, expected, len(missing), anomalies))
    cur.execute("DELETE FROM sync_day_missing WHERE date = %s", (day,))
    if missing:
        cur.execute("INSERT INTO sync_day_missing (date, code) SELECT %s, unnest(%s::text[])", (day, missing))


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


def unmark_syncing(conn: psycopg.Connection[Any], run_id: str) -> None:
    """After a cancel: days this run had marked syncing get their previous status back. Not once the run's
    row has left `running`: whoever marked it interrupted has settled its days (recover_orphans)."""
    conn.execute(
        "UPDATE sync_days SET status = coalesce(prev_status, 'pending'), prev_status = NULL, updated_at = now() "
        "WHERE status = 'syncing' AND run_id = %s "
        "AND EXISTS (SELECT 1 FROM sync_runs WHERE run_id = %s AND status = 'running')", (run_id, run_id))


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


def fail_interrupted_days(conn: psycopg.Connection[Any], run_ids: Sequence[str]) -> None:
    """In recover_orphans' transaction: the days dead runs left `syncing` become failed."""
    conn.execute("UPDATE sync_days SET status = 'failed', prev_status = NULL, updated_at = now(), "
                 "error = 'interrupted: the daemon stopped while this day was syncing' "
                 "WHERE status = 'syncing' AND run_id = ANY(%s)", (list(run_ids),))
