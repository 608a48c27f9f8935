"""Writing a trading day's record: its bars in daily_bars and its row in sync_days, each write in one transaction.

This module owns every write of `sync_days` (and `sync_day_missing`): a run's plan (`plan_days`,
`plan_unconfirmed`), the `syncing` mark and its undo after a cancel, a day written (`write_day`),
failed (`fail_day`) or left incomplete (`keep_incomplete`), a day checked later by `verify`
(`record_checked`), and the days a dead run left `syncing` (`fail_interrupted_days`). The
other db modules read them (days.py).

`write_day(conn, DayWrite(...), rows)` is the day's write (run/outcomes.py calls it once per
day). In one transaction: the run's fence; the day's old rows go, except those of the stocks
whose request failed (`missing`: a failed request never deletes data); the new rows arrive by
binary COPY (directly when complete, through a stage when pre_close, adj_factor or pct_change
must be derived: factors.py); the checks run on the day's rows and their findings are stored
(checks.py); and the day is recorded: `success`, or `incomplete` when stocks are missing, with
`expected`, `missing`, its anomalies and when it was written, and the run's counters move. A
day is refused (DayRejected, nothing written) when nothing was fetched or when the unit guard
trips; the caller records it `failed` with that message.

The rows are Row tuples or a source's EncodedRows (`_Payload` says how each loads). Row tuples
are encoded per row here; EncodedRows are copied as they are (no per-row Python), their
`suspects` (sources/prefilter.py) are the only rows the checks judge, and a re-sync of a day that holds
rows rewrites only the rows that differ (`_merge`). The transaction is driven by hand
(connection.BatchedTransaction) so that it costs four round trips, one per phase of `_write`:
`_open` (BEGIN, settings, the fence's probe and the day's old rows), `_load` (the COPY),
`_judge` (the checks) and `_record` (the bookkeeping with COMMIT).

Provenance: `DayWrite.source` is recorded as the day's `sync_days.source`, and each row from
another source (a fallback's, `bar_sources`) gets an entry in the `bar_sources` table, in the
same transaction (`_record_day`). To record more about a day, add a field to `DayWrite` and
write it in `_record_day`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import psycopg

from ..sources.base import EncodedRows, Row
from . import checks, factors, partitions
from .connection import BatchedTransaction, PoolSafeConnection
from .sqlrow import scalar

BAR_COLUMNS = ("trade_date", "code", "open", "high", "low", "close", "pre_close", "volume", "amount", "turnover",
               "pct_change", "adj_factor")
BAR_TYPES = ("date", "text", "float8", "float8", "float8", "float8", "float8", "int8", "float8", "float8", "float8", "float8")
COPY_BARS = f"COPY daily_bars ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
# SET LOCAL in each day's transaction: JIT-compiling these few-millisecond statements would take ~100 ms and more.
WRITE_SETTINGS = {"jit": "off"}
# SET LOCAL in the transaction of a `syncing` mark: its COMMIT does not wait for the WAL to reach the disk. The
# mark is seen by every session at once all the same; a server crash may forget it, which leaves the day as a
# crash just before the mark would (its previous status); and the day's own write, whose COMMIT waits, makes the
# mark durable with it (the WAL is written in order). One disk flush a day fewer.
MARK_SETTINGS = {"synchronous_commit": "off"}
STAGE_COLUMNS = BAR_COLUMNS[1:]  # a Row's fields, in order: what a stage query must select
_STAGE = "incoming_bars"
_CREATE_STAGE = (f"CREATE TEMPORARY TABLE {_STAGE} (code text, open float8, high float8, low float8, close float8, "
                 "pre_close float8, volume int8, amount float8, turnover float8, pct_change float8, adj_factor float8) "
                 "ON COMMIT DROP")
_PRE_CLOSE, _PCT_CHANGE, _ADJ_FACTOR = 5, 9, 10  # Row positions the write path derives when None

IsTradingDay = Callable[[dt.date], bool]
Cursor = psycopg.Cursor[Any]


class DayRejected(Exception):
    """A day the write path refused to write; the message is the day's error (nothing was changed)."""


@dataclass(frozen=True)
class FenceProbe:
    """The run lock's fence as SQL that can share a pipeline with a day's first statements: `take` holds
    the write fence (runlock.hold_write_fence); `held` is a boolean SQL expression, with `params`, true
    while the session `SessionId` still holds the run lock (runlock.run_lock_holder() == session). When
    `held` is false the caller runs the full fence (RunLock.fence), which re-takes the lock or raises."""

    take: str
    held: str
    params: tuple[Any, ...]


class Fence(Protocol):
    """The run lock's check inside a write's transaction (runlock.RunFence; run/outcomes.py adds the cancel
    check): called with the write's connection, the full check, which raises to stop the write; `probe()`,
    the same check as SQL for the day's first round trip, or None (then the full check runs)."""

    def __call__(self, conn: psycopg.Connection[Any], /) -> None: ...

    def probe(self) -> FenceProbe | None: ...


@dataclass(frozen=True)
class DayWrite:
    """What one day's write needs besides its rows: the day and its run, what the source said about it,
    and the run's hooks into the transaction."""

    day: dt.date
    run_id: str
    expected: int | None = None                  # stocks the source says were listed (None: it cannot say)
    missing: Collection[str] = ()                # codes whose request failed: their stored rows stay; the day is incomplete
    replace_only: Collection[str] | None = None  # a re-fetch of these stocks alone: only their stored rows go
    error: str | None = None                     # the day's recorded error when it ends incomplete
    fence: Fence | None = None                   # first inside the transaction, may raise (the run lock's check)
    before_commit: Callable[[], None] | None = None  # last inside the transaction, may raise to roll it back (a cancel)
    is_trading_day: IsTradingDay | None = None   # the days a gap in factor derivation would be (None: packaged calendar)
    mark_syncing: bool = False                   # first record the day `syncing` for run_id, committed on its own
    #                                              before the write begins (so it stays if the write rolls back)
    source: str | None = None                    # the source that wrote the day (sync_days.source)
    bar_sources: Mapping[str, str] = field(default_factory=dict)  # code -> source, for rows from another source (a fallback's)
    fallback_stocks: int = 0                     # of the rows, how many a fallback source gave


@dataclass(frozen=True)
class WrittenDay:
    rows: int                                  # rows the day holds now: fetched plus those kept for missing stocks
    fetched: int                               # rows written by this call
    status: Literal["success", "incomplete"]
    anomalies: int                             # findings of the checks on the day's rows


def write_day(conn: psycopg.Connection[Any], job: DayWrite, rows: Iterable[Row] | EncodedRows) -> WrittenDay:
    """Atomically replace `job.day`'s rows with `rows` (plus the stored rows of the `missing` stocks) and record
    the day. Raises DayRejected when nothing was fetched or the unit guard trips."""
    _ensure_partition(conn, job.day)
    probe = _probe_of(job.fence)
    if job.mark_syncing and probe is None and job.fence is not None:  # else the mark rides along (_open)
        mark_days_syncing(conn, [job.day], job.run_id, job.fence)
    return _write(conn, job, _payload(job.day, rows), probe)


def _probe_of(fence: Fence | None) -> FenceProbe | None:
    return fence.probe() if fence is not None else None


def _ensure_partition(conn: psycopg.Connection[Any], day: dt.date) -> None:
    """The day's year partition exists before its transaction begins (partitions.py): asked once per year on a
    pooled connection, which remembers the answer (one query per day otherwise)."""
    known = conn.partition_years if isinstance(conn, PoolSafeConnection) else None
    if known is not None and day.year in known:
        return
    partitions.ensure_year(conn, day.year)
    if known is not None:
        known.add(day.year)


# --- the rows ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Payload:
    """A day's new rows as its transaction loads them."""

    load: Callable[[Cursor, factors.Chain | None], int]  # COPY them (derived through `chain` when given): the count
    derive: bool = False                   # pre_close, pct_change or adj_factor must be derived (factors.py)
    encoded: EncodedRows | None = None     # a source's payload: merged into a day that holds rows; its suspects judged
    codes: frozenset[str] = field(default_factory=frozenset)  # the stocks present, where known (a missing one is not)


def _payload(day: dt.date, rows: Iterable[Row] | EncodedRows) -> _Payload:
    if isinstance(rows, EncodedRows):
        encoded = rows

        def copy_payload(cur: Cursor, chain: factors.Chain | None) -> int:
            with cur.copy(COPY_BARS) as copy:
                copy.write(encoded.payload)
            return encoded.count
        return _Payload(copy_payload, encoded=encoded)
    bars = [row if len(row) == len(STAGE_COLUMNS) else (*row, None) for row in rows]  # sources still on 10 fields

    def copy_rows(cur: Cursor, chain: factors.Chain | None) -> int:
        if chain is None:
            _copy_rows(cur, COPY_BARS, BAR_TYPES, ((day, *row) for row in bars))
            return len(bars)
        cur.execute(_CREATE_STAGE)
        _copy_rows(cur, f"COPY {_STAGE} FROM STDIN (FORMAT BINARY)", BAR_TYPES[1:], bars)
        return factors.insert_derived(cur.connection, chain, f"SELECT {', '.join(STAGE_COLUMNS)} FROM {_STAGE}")
    derive = any(row[_PRE_CLOSE] is None or row[_PCT_CHANGE] is None or row[_ADJ_FACTOR] is None for row in bars)
    return _Payload(copy_rows, derive=derive, codes=frozenset(row[0] for row in bars))


def _copy_rows(cur: Cursor, statement: str, types: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with cur.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


# --- the day's transaction -----------------------------------------------------------------------

@dataclass
class _Opened:
    """What the first round trip asked, read once the pipeline has synced."""

    held: Cursor | None = None        # the probe: does the run still hold its lock on the session it took it on?
    marked: Cursor | None = None      # the `syncing` mark sent with the probe (rowcount 0: the probe said no)
    present: Cursor | None = None     # a merge: does the day hold rows?
    kept_count: Cursor | None = None  # a partial replace: how many rows the day keeps


def _write(conn: psycopg.Connection[Any], job: DayWrite, payload: _Payload, probe: FenceProbe | None) -> WrittenDay:
    """The day's transaction, in as few round trips as its data allows: `_open`, `_load`, `_judge` (none when
    a payload's pre-filter cleared every row) and `_record` with the COMMIT."""
    kept_codes = sorted(set(job.missing) - payload.codes)
    whole_day = not kept_codes and job.replace_only is None
    merge = payload.encoded is not None and whole_day  # a payload replacing a whole day: see _merge
    with BatchedTransaction(conn, WRITE_SETTINGS) as tx, conn.cursor() as cur:
        opened = _open(conn, tx, cur, job, probe, kept_codes, merge)
        _confirm_fence(cur, job, opened)
        fetched = _load(cur, job, payload, merge=opened.present is not None and bool(scalar(opened.present)))
        if fetched == 0:
            raise DayRejected(f"nothing fetched for {job.day}" + (
                f" ({len(kept_codes)} stocks' requests failed)" if kept_codes else " (the source returned no rows)"))
        kept = scalar(opened.kept_count) if opened.kept_count is not None else 0
        # A pre-filter's verdict holds for the payload's rows only: a day that keeps stored rows is judged whole.
        judged = payload.encoded.suspects if payload.encoded is not None and whole_day else None
        anomalies = _judge(conn, job.day, judged, fetched + kept)
        if job.before_commit is not None:
            job.before_commit()
        written = WrittenDay(rows=fetched + kept, fetched=fetched, anomalies=anomalies,
                             status="incomplete" if kept_codes else "success")
        _record(tx, cur, job, written, kept_codes, clear_findings=judged is not None and not judged)
    return written


def _open(conn: psycopg.Connection[Any], tx: BatchedTransaction, cur: Cursor, job: DayWrite, probe: FenceProbe | None,
          kept_codes: list[str], merge: bool) -> _Opened:
    """Round trip 1: the `syncing` mark in a transaction of its own (when it rides along), BEGIN and the settings,
    the fence's probe (or the full fence when it has none), and the day's old rows: gone, or asked about."""
    opened = _Opened()
    rides_along = job.mark_syncing and (probe is not None or job.fence is None)  # no fence: nothing to check first
    mark = BatchedTransaction(conn, MARK_SETTINGS) if rides_along else None
    day = job.day
    with conn.pipeline():
        if mark is not None:  # committed before the write's transaction begins
            mark.begin()
            if probe is not None:
                cur.execute(probe.take)
            held, params = (f" AND {probe.held}", probe.params) if probe is not None else ("", ())
            opened.marked = conn.cursor().execute(MARK_SYNCING + held, (job.run_id, [day], *params))
            mark.commit()
        tx.begin()
        if probe is not None:
            cur.execute(probe.take)
            opened.held = conn.cursor().execute(f"SELECT {probe.held}", probe.params)
        elif job.fence is not None:
            job.fence(conn)
        if merge:
            opened.present = conn.cursor().execute("SELECT EXISTS (SELECT 1 FROM daily_bars WHERE trade_date = %s)", (day,))
        elif job.replace_only is None:
            cur.execute("DELETE FROM daily_bars WHERE trade_date = %s AND NOT (code = ANY(%s))", (day, kept_codes))
        else:
            cur.execute("DELETE FROM daily_bars WHERE trade_date = %s AND code = ANY(%s)", (day, sorted(set(job.replace_only))))
        if kept_codes or job.replace_only is not None:
            opened.kept_count = conn.cursor().execute("SELECT count(*) FROM daily_bars WHERE trade_date = %s", (day,))
    return opened


def _confirm_fence(cur: Cursor, job: DayWrite, opened: _Opened) -> None:
    """The probe said the run's lock is not held on the session it was taken on: the full fence (it re-takes the
    lock or raises); a `syncing` mark the probe held back is then made inside the write's transaction."""
    if opened.held is not None and not scalar(opened.held) and job.fence is not None:
        job.fence(cur.connection)
    if opened.held is not None and opened.marked is not None and opened.marked.rowcount != 1:
        cur.execute(MARK_SYNCING, (job.run_id, [job.day]))


def _load(cur: Cursor, job: DayWrite, payload: _Payload, *, merge: bool) -> int:
    """Round trip 2: the new rows (a merge into the day's stored rows, or a COPY); the count written."""
    if merge:
        assert payload.encoded is not None
        return _merge(cur.connection, job.day, payload.encoded)
    return payload.load(cur, factors.chain_for(cur.connection, job.day, job.is_trading_day) if payload.derive else None)


def _judge(conn: psycopg.Connection[Any], day: dt.date, judged: Collection[str] | None, rows: int) -> int:
    """Round trip 3: the checks on the day's rows (`judged` only, when given; none when it is empty), their
    findings stored; the unit guard refuses the day. The count of findings."""
    found = checks.record_findings(conn, day, judged) if judged is None or judged else []
    if (guard := checks.unit_guard_error(day, found, rows)) is not None:
        raise DayRejected(guard)
    return len(found)


def _record(tx: BatchedTransaction, cur: Cursor, job: DayWrite, written: WrittenDay, kept_codes: list[str], *,
            clear_findings: bool) -> None:
    """Round trip 4: the day's record, the run's counters, COMMIT."""
    with cur.connection.pipeline():
        if clear_findings:
            cur.execute(checks.CLEAR_FINDINGS, (job.day,))  # no suspect: the day's findings are none
        _record_day(cur, job, written, kept_codes)
        cur.execute("UPDATE sync_runs SET days_done = days_done + 1, days_failed = days_failed + %s, rows = rows + %s "
                    "WHERE run_id = %s", (int(written.status == "incomplete"), written.fetched, job.run_id))
        tx.commit()


def _record_day(cur: Cursor, job: DayWrite, written: WrittenDay, kept_codes: list[str]) -> None:
    error = job.error if written.status == "incomplete" else None
    patch = job.replace_only is not None  # a patch keeps the day's source (and adds to its fallback count)
    _forget_bar_sources(cur, job, kept_codes)
    cur.execute(
        "INSERT INTO sync_days (date, status, rows, run_id, error, prev_status, expected, missing, anomalies, checked_at, "
        "written_at, updated_at, source, fallback_stocks) VALUES (%s, %s, %s, %s, %s, NULL, %s, %s, %s, now(), now(), now(), "
        "%s, %s) ON CONFLICT (date) DO UPDATE SET status = EXCLUDED.status, rows = EXCLUDED.rows, run_id = EXCLUDED.run_id, "
        "error = EXCLUDED.error, prev_status = NULL, missing = EXCLUDED.missing, "
        "anomalies = EXCLUDED.anomalies, checked_at = now(), written_at = now(), updated_at = now(), "
        + (_PATCH_PROVENANCE if patch else _PROVENANCE),
        (job.day, written.status, written.rows, job.run_id, error, job.expected, len(kept_codes), written.anomalies,
         job.source, job.fallback_stocks))
    _record_bar_sources(cur, job)
    cur.execute("DELETE FROM sync_day_missing WHERE date = %s", (job.day,))
    if kept_codes:
        cur.execute("INSERT INTO sync_day_missing (date, code) SELECT %s, unnest(%s::text[])", (job.day, kept_codes))


_PROVENANCE = "expected = EXCLUDED.expected, source = EXCLUDED.source, fallback_stocks = EXCLUDED.fallback_stocks"
# A patch (some stocks re-fetched) keeps the day's source and listing count where the day has them.
_PATCH_PROVENANCE = ("source = coalesce(sync_days.source, EXCLUDED.source), expected = coalesce(EXCLUDED.expected, "
                     "sync_days.expected), fallback_stocks = sync_days.fallback_stocks + EXCLUDED.fallback_stocks")


# Per-stock provenance (docs/data.md, "Provenance"): a stored bar's source is its bar_sources entry where it has
# one, else its day's sync_days.source. Entries exist only for bars whose source is not their day's.
def _forget_bar_sources(cur: Cursor, job: DayWrite, kept_codes: list[str]) -> None:
    """Before the day's record changes: the entries of the rows this write replaces go; kept rows (of stocks
    missing now) written by the day's previous source keep it as an entry when the day's source changes."""
    if job.replace_only is not None:
        cur.execute("DELETE FROM bar_sources WHERE trade_date = %s AND code = ANY(%s)", (job.day, sorted(set(job.replace_only))))
        return
    if kept_codes:
        cur.execute("INSERT INTO bar_sources (trade_date, code, source) SELECT d.date, k.code, d.source FROM sync_days d, "
                    "unnest(%s::text[]) k(code) WHERE d.date = %s AND d.source IS DISTINCT FROM %s AND d.source IS NOT NULL "
                    "ON CONFLICT (trade_date, code) DO NOTHING", (kept_codes, job.day, job.source))
    cur.execute("DELETE FROM bar_sources WHERE trade_date = %s AND NOT (code = ANY(%s))", (job.day, kept_codes))


def _record_bar_sources(cur: Cursor, job: DayWrite) -> None:
    """After the day's record: an entry for each new row whose source is not the day's (as now recorded)."""
    sources = dict(job.bar_sources)
    if job.replace_only is not None and job.source is not None:  # a patch's own rows: the day's source may be another
        sources = {code: job.source for code in job.replace_only} | sources
    if not sources:
        return
    codes = sorted(sources)
    cur.execute("INSERT INTO bar_sources (trade_date, code, source) SELECT %s, c.code, c.source "
                "FROM unnest(%s::text[], %s::text[]) c(code, source) "
                "WHERE c.source IS DISTINCT FROM (SELECT source FROM sync_days WHERE date = %s) "
                "ON CONFLICT (trade_date, code) DO UPDATE SET source = EXCLUDED.source",
                (job.day, codes, [sources[code] for code in codes], job.day))


MARK_SYNCING = ("UPDATE sync_days SET prev_status = CASE WHEN status = 'syncing' THEN prev_status ELSE status END, "
                "status = 'syncing', run_id = %s, updated_at = now() WHERE date = ANY(%s)")


def mark_days_syncing(conn: psycopg.Connection[Any], days: Sequence[dt.date], run_id: str, fence: Fence | None = None) -> None:
    """Mark the days of a window as being synced, remembering each one's status to restore on cancel.
    `fence` as in write_day: a run that lost the run lock must not mark the next run's days. One round trip
    when the fence has a probe (the update then applies only while the run holds the lock; else the full
    fence runs, and the update with it)."""
    probe = _probe_of(fence)
    if probe is not None:
        with BatchedTransaction(conn, MARK_SETTINGS) as tx, conn.pipeline():
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
    with conn.transaction(), conn.cursor() as cur:  # one statement per kind of day, whatever the run's length
        if fence is not None:
            fence(conn)
        if closed:
            cur.execute(
                "INSERT INTO sync_days (date, status, rows, run_id, updated_at) SELECT d, 'skipped', 0, %s, now() "
                "FROM unnest(%s::date[]) d ON CONFLICT (date) DO UPDATE SET status = 'skipped', rows = 0, "
                "run_id = EXCLUDED.run_id, error = NULL, updated_at = now()", (run_id, sorted(set(closed))))
        if trading:
            cur.execute(
                "INSERT INTO sync_days (date, status, rows, run_id, updated_at) SELECT d, 'pending', 0, %s, now() "
                "FROM unnest(%s::date[]) d ON CONFLICT (date) DO NOTHING", (run_id, sorted(set(trading))))


def unmark_syncing(conn: psycopg.Connection[Any], run_id: str) -> None:
    """After a cancel: days this run had marked syncing get their previous status back. Not once the run's
    row has left `running`: whoever marked it interrupted has settled its days (runlock.Orphans)."""
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
    """In runs.mark_orphans' transaction: the days dead runs left `syncing` become failed."""
    conn.execute("UPDATE sync_days SET status = 'failed', prev_status = NULL, updated_at = now(), "
                 "error = 'interrupted: the daemon stopped while this day was syncing' "
                 "WHERE status = 'syncing' AND run_id = ANY(%s)", (list(run_ids),))


def lock_for_check(conn: psycopg.Connection[Any], day: dt.date) -> bool:
    """In a transaction of `verify`'s (control/verify.py): lock `day`'s record; False when there is none or it
    was checked meanwhile (written by a day write, which checks as it writes)."""
    row = conn.execute("SELECT checked_at FROM sync_days WHERE date = %s FOR UPDATE", (day,)).fetchone()
    return row is not None and row[0] is None


def record_checked(conn: psycopg.Connection[Any], day: dt.date, anomalies: int) -> None:
    """`verify` checked a day written by an earlier version: its count of findings, and when."""
    conn.execute("UPDATE sync_days SET anomalies = %s, checked_at = now() WHERE date = %s", (anomalies, day))
