"""Reconciliation in SQL, where the rows are: a second source's answer staged, compared with daily_bars, findings stored.

This module owns `reconcile_stage` (what the other source said for one reconciliation's days,
keyed by its reconcile_id; unlogged, like sync_stage) and the statement that compares it with
the stored rows and stores what differs in bar_findings, with `source` naming the other
source (docs/sources.md, "Reading reconciliation findings"). A reconciliation replaces the
findings of its own source on the days and stocks it compared; another source's stay (one
finding a stock, day and check: the latest disagreement found).

- `source_mismatch`: a stock both sources traded that day (a row with volume above 0) whose
  open, high, low, close or pre_close differ to the cent; whose volume differs by more than
  VOLUME_SHARE of the larger and VOLUME_SHARES, or amount by more than AMOUNT_SHARE and
  AMOUNT_YUAN (both already in shares and yuan: each source converts its units); or, where the
  other source gives factors of its own, whose adj_factor step from the stock's previous
  trading day differs by more than FACTOR_SHARE (a stored row without a factor: the step its
  pre_close implies, previous close / pre_close). One finding a stock and day, naming each
  field that differs with both values and the other source.
- `source_missing`: traded in one source, absent from (or suspended, volume 0, in) the other.

Not compared: a stock whose request failed on either side (sync_day_missing; the other
source's failures, staged as `failed`), stocks outside `codes` (a sample, or the stocks a
by-stock source answered) and outside the other source's `coverage`. A stock suspended in
both is no finding. The store runs in one transaction holding the day-write fence
(runlock.py), so no day write interleaves with it; a day written later loses these findings
with its rows (daywrite.py clears a written day's findings). It knows nothing of threads or
sources' libraries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from ..sources.base import EncodedRows, Row
from . import checks, runlock
from .daywrite import BAR_COLUMNS, BAR_TYPES
from .sqlrow import scalar

SOURCE_MISMATCH, SOURCE_MISSING = "source_mismatch", "source_missing"
SOURCE_CHECKS = (SOURCE_MISMATCH, SOURCE_MISSING)
VOLUME_SHARE, VOLUME_SHARES = 0.01, 100     # volumes agree within 1 % of the larger, or a lot
AMOUNT_SHARE, AMOUNT_YUAN = 0.01, 1000.0    # amounts within 1 %, or 1,000 yuan
FACTOR_SHARE = 0.002                        # factor steps within 0.2 % (factors are published to 3-4 digits)
STEP_LOOKBACK_DAYS = 400                    # a stock's previous stored day is looked for this far back
STALE_STAGE = "1 day"                       # staged rows of a reconciliation that never ended go after this

_INCOMING = "reconcile_incoming"
_CREATE_INCOMING = (f"CREATE TEMPORARY TABLE {_INCOMING} (trade_date date, code text, open float8, high float8, "
                    "low float8, close float8, pre_close float8, volume int8, amount float8, turnover float8, "
                    "pct_change float8, adj_factor float8) ON COMMIT DROP")
_STAGE_FROM_INCOMING = (f"INSERT INTO reconcile_stage (reconcile_id, {', '.join(BAR_COLUMNS)}) "
                        f"SELECT DISTINCT ON (code, trade_date) %s, {', '.join(BAR_COLUMNS)} FROM {_INCOMING} "
                        "ORDER BY code, trade_date ON CONFLICT DO NOTHING")


def clear(conn: psycopg.Connection[Any], reconcile_id: str) -> None:
    """Drop the reconciliation's staged rows, and any left by one that never ended (a daemon that died)."""
    conn.execute(f"DELETE FROM reconcile_stage WHERE reconcile_id = %s OR staged_at < now() - interval '{STALE_STAGE}'",
                 (reconcile_id,))


def stage_day(conn: psycopg.Connection[Any], reconcile_id: str, day: dt.date, rows: Sequence[Row] | EncodedRows,
              failed: Iterable[str] = ()) -> int:
    """Stage the other source's rows of `day` (and the codes whose request failed there); return the rows staged."""
    if isinstance(rows, EncodedRows):
        payload = rows.payload

        def load(cur: psycopg.Cursor[Any]) -> None:
            with cur.copy(f"COPY {_INCOMING} ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(payload)
        count = rows.count
    else:
        listed = list(rows)

        def load(cur: psycopg.Cursor[Any]) -> None:
            _copy_rows(cur, ((day, *row) for row in listed))
        count = len(listed)
    return _stage(conn, reconcile_id, load, [(day, code) for code in failed], count)


def stage_stocks(conn: psycopg.Connection[Any], reconcile_id: str, bars: Sequence[tuple[dt.date, Row]],
                 failed: Iterable[tuple[dt.date, str]] = ()) -> int:
    """Stage (day, row) pairs of any days and stocks (a by-stock source's answers); return how many."""
    return _stage(conn, reconcile_id, lambda cur: _copy_rows(cur, ((day, *row) for day, row in bars)), list(failed),
                  len(bars))


def _stage(conn: psycopg.Connection[Any], reconcile_id: str, load: Any, failed: list[tuple[dt.date, str]], count: int) -> int:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_CREATE_INCOMING)
        load(cur)
        cur.execute(_STAGE_FROM_INCOMING, (reconcile_id,))
        if failed:
            cur.executemany("INSERT INTO reconcile_stage (reconcile_id, trade_date, code, failed) VALUES (%s, %s, %s, true) "
                            "ON CONFLICT DO NOTHING", [(reconcile_id, day, code) for day, code in failed])
    return count


def _copy_rows(cur: psycopg.Cursor[Any], rows: Iterable[Sequence[Any]]) -> None:
    with cur.copy(f"COPY {_INCOMING} ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(BAR_TYPES)
        for row in rows:
            copy.write_row(row if len(row) == len(BAR_COLUMNS) else (*row, None))


def _scope(alias: str, codes: Sequence[str] | None, coverage: str | None) -> str:
    """The condition on `alias`.code that keeps a comparison to the stocks it judges."""
    return (f" AND {alias}.code = ANY(%(codes)s)" if codes is not None else "") + \
           (f" AND {alias}.code ~ %(coverage)s" if coverage is not None else "")


def _differs(field: str) -> tuple[str, str]:
    """A price field: (condition, detail) of its disagreement to the cent."""
    return (f"round(p.s_{field} * 100) <> round(p.r_{field} * 100)",
            f"format('{field} %%s %%s vs %%s in %%s', round(p.s_{field}::numeric, 2), p.stored, round(p.r_{field}::numeric, 2), "
            "%(source)s::text)")


_MISMATCHES = [_differs(field) for field in ("open", "high", "low", "close", "pre_close")] + [
    (f"abs(p.s_volume - p.r_volume) > greatest({VOLUME_SHARES}, {VOLUME_SHARE} * greatest(p.s_volume, p.r_volume))",
     "format('volume %%s %%s vs %%s in %%s (x%%s)', p.s_volume, p.stored, p.r_volume, %(source)s::text, "
     "round(p.r_volume::numeric / NULLIF(p.s_volume, 0), 4))"),
    (f"abs(p.s_amount - p.r_amount) > greatest({AMOUNT_YUAN}, {AMOUNT_SHARE} * greatest(p.s_amount, p.r_amount))",
     "format('amount %%s %%s vs %%s in %%s (x%%s)', round(p.s_amount::numeric, 2), p.stored, round(p.r_amount::numeric, 2), "
     "%(source)s::text, round((p.r_amount / NULLIF(p.s_amount, 0))::numeric, 4))"),
    (f"p.s_prev = p.r_prev AND abs(p.s_step / NULLIF(p.r_step, 0) - 1) > {FACTOR_SHARE}",
     "format('adj_factor step since %%s %%s %%s vs %%s in %%s', p.s_prev, round(p.s_step::numeric, 6), p.stored, "
     "round(p.r_step::numeric, 6), %(source)s::text)"),
]
_MISMATCH_DETAIL = "concat_ws('; ', " + ", ".join(f"CASE WHEN {c} THEN {d} END" for c, d in _MISMATCHES) + ")"
_MISSING_DETAIL = """CASE
    WHEN p.s_traded AND NOT p.r_has THEN format('in %%s, absent from %%s', p.stored_in, %(source)s::text)
    WHEN p.s_traded THEN format('traded in %%s (volume %%s), suspended (volume 0) in %%s', p.stored_in, p.s_volume,
                                %(source)s::text)
    WHEN NOT p.s_has THEN format('in %%s, absent from %%s', %(source)s::text, p.stored_in)
    ELSE format('traded in %%s (volume %%s), suspended (volume 0) in %%s', %(source)s::text, p.r_volume, p.stored_in) END"""


def _compare_sql(codes: Sequence[str] | None, coverage: str | None) -> str:
    fields = ("open", "high", "low", "close", "pre_close", "volume", "amount")
    return f"""
WITH s AS (
    SELECT b.trade_date, b.code, {', '.join(f'b.{f}' for f in fields)}, b.adj_factor
    FROM daily_bars b
    WHERE b.trade_date = ANY(%(days)s){_scope('b', codes, coverage)}
      AND NOT EXISTS (SELECT 1 FROM sync_day_missing m WHERE m.date = b.trade_date AND m.code = b.code)
),
r AS (
    SELECT r.* FROM reconcile_stage r
    WHERE r.reconcile_id = %(id)s AND r.trade_date = ANY(%(days)s){_scope('r', codes, coverage)}
),
pairs AS (
    SELECT coalesce(s.trade_date, r.trade_date) AS trade_date, coalesce(s.code, r.code) AS code,
           s.code IS NOT NULL AS s_has, r.code IS NOT NULL AS r_has,
           s.code IS NOT NULL AND coalesce(s.volume, 1) > 0 AS s_traded,
           r.code IS NOT NULL AND coalesce(r.volume, 1) > 0 AS r_traded,
           {', '.join(f's.{f} AS s_{f}, r.{f} AS r_{f}' for f in fields)},
           s.adj_factor AS s_factor, r.adj_factor AS r_factor
    FROM s FULL JOIN r ON r.trade_date = s.trade_date AND r.code = s.code
    WHERE r.failed IS NOT TRUE  -- the other source's request for the stock failed that day: not compared
),
named AS (  -- the stored side is named with the source that wrote it, where the day's record knows (provenance)
    SELECT pairs.*, coalesce('daily_bars (' || coalesce(bs.source, d.source) || ')', 'daily_bars') AS stored_in,
           coalesce('stored (' || coalesce(bs.source, d.source) || ')', 'stored') AS stored
    FROM pairs
    LEFT JOIN sync_days d ON d.date = pairs.trade_date
    LEFT JOIN bar_sources bs ON bs.trade_date = pairs.trade_date AND bs.code = pairs.code
),
p AS (  -- each stock's factor step from its previous trading day, on both sides, where the other source has factors
        -- (a stored row without a factor: the step its pre_close implies, previous close / pre_close)
    SELECT pairs.*, sp.trade_date AS s_prev, rp.trade_date AS r_prev,
           coalesce(pairs.s_factor / NULLIF(sp.adj_factor, 0), sp.close / NULLIF(pairs.s_pre_close, 0)) AS s_step,
           pairs.r_factor / NULLIF(rp.adj_factor, 0) AS r_step
    FROM named pairs
    LEFT JOIN LATERAL (SELECT q.trade_date, q.adj_factor, q.close FROM daily_bars q
                       WHERE pairs.r_factor IS NOT NULL AND pairs.s_traded AND pairs.r_traded AND q.code = pairs.code
                         AND q.trade_date < pairs.trade_date AND q.trade_date >= pairs.trade_date - {STEP_LOOKBACK_DAYS}
                       ORDER BY q.trade_date DESC LIMIT 1) sp ON true
    LEFT JOIN LATERAL (SELECT q.trade_date, q.adj_factor FROM reconcile_stage q
                       WHERE pairs.r_factor IS NOT NULL AND pairs.s_traded AND pairs.r_traded
                         AND q.reconcile_id = %(id)s AND q.code = pairs.code AND q.trade_date < pairs.trade_date
                         AND NOT q.failed
                       ORDER BY q.trade_date DESC LIMIT 1) rp ON true
),
verdicts AS (
    SELECT p.trade_date, p.code,
           CASE WHEN p.s_traded <> p.r_traded THEN '{SOURCE_MISSING}' WHEN p.s_traded THEN '{SOURCE_MISMATCH}' END AS check_name,
           CASE WHEN p.s_traded <> p.r_traded THEN {_MISSING_DETAIL}
                WHEN p.s_traded THEN nullif({_MISMATCH_DETAIL}, '') END AS detail
    FROM p
)
INSERT INTO bar_findings (trade_date, code, check_name, detail, source)
SELECT trade_date, code, check_name, detail, %(source)s::text FROM verdicts WHERE detail IS NOT NULL
ON CONFLICT (trade_date, code, check_name) DO UPDATE SET detail = EXCLUDED.detail, source = EXCLUDED.source
RETURNING check_name"""


def compare(conn: psycopg.Connection[Any], reconcile_id: str, source: str, days: Sequence[dt.date],
            codes: Sequence[str] | None = None, coverage: str | None = None) -> list[str]:
    """Compare the staged answer of `days` with the stored rows and replace the findings against `source` of those
    days (and `codes`) with the verdict; return each new finding's check. One transaction under the day-write fence:
    days written by an earlier version are checked first (their sanity findings), and each day's `anomalies`
    counts all its findings after."""
    params = {"id": reconcile_id, "source": source, "days": list(days), "codes": list(codes or ()), "coverage": coverage}
    with conn.transaction():
        conn.execute("SET LOCAL jit = off")
        runlock.hold_write_fence(conn)
        unchecked = [r[0] for r in conn.execute("SELECT date FROM sync_days WHERE date = ANY(%s) AND rows > 0 "
                                                "AND checked_at IS NULL", (list(days),))]
        for day in unchecked:
            checks.record_findings(conn, day)
        conn.execute(f"DELETE FROM bar_findings f WHERE f.trade_date = ANY(%(days)s) AND f.check_name = ANY(%(checks)s) "
                     f"AND f.source = %(source)s{_scope('f', codes, coverage)}", {**params, "checks": list(SOURCE_CHECKS)})
        found = [row[0] for row in conn.execute(_compare_sql(codes, coverage), params)]
        conn.execute("UPDATE sync_days d SET anomalies = (SELECT count(*) FROM bar_findings f WHERE f.trade_date = d.date), "
                     "checked_at = coalesce(checked_at, now()) WHERE d.date = ANY(%s)", (list(days),))
    return found


def stored_days(conn: psycopg.Connection[Any], start: dt.date, end: dt.date) -> list[dt.date]:
    """The days of [start, end] holding rows (success or incomplete): what a reconciliation compares."""
    return [r[0] for r in conn.execute("SELECT date FROM sync_days WHERE date BETWEEN %s AND %s AND rows > 0 "
                                       "AND status IN ('success', 'incomplete') ORDER BY date", (start, end))]


def count_codes(conn: psycopg.Connection[Any], days: Sequence[dt.date], coverage: str | None = None) -> int:
    """How many stocks are stored on any of `days` (those `coverage` admits): a by-stock source's request count."""
    where = " AND code ~ %(coverage)s" if coverage is not None else ""
    return int(scalar(conn.execute(f"SELECT count(DISTINCT code) FROM daily_bars WHERE trade_date = ANY(%(days)s){where}",
                                   {"days": list(days), "coverage": coverage})))


def stored_codes(conn: psycopg.Connection[Any], days: Sequence[dt.date], coverage: str | None = None,
                 sample: int | None = None) -> list[str]:
    """The stocks stored on any of `days` (those `coverage` admits), in code order; `sample`: that many at random."""
    where = " AND code ~ %(coverage)s" if coverage is not None else ""
    sql = f"SELECT DISTINCT code FROM daily_bars WHERE trade_date = ANY(%(days)s){where}"
    if sample is not None:
        sql = f"SELECT code FROM ({sql}) c ORDER BY random() LIMIT %(sample)s"
    found = conn.execute(sql, {"days": list(days), "coverage": coverage, "sample": sample}).fetchall()
    return sorted(r[0] for r in found)
