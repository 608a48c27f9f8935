"""Adjustment factors and reference prices a source did not give, derived when a day is written.

This module owns the contract's derivation rules (docs/data.md, "Adjusted prices"), applied
in SQL while a day's rows move into daily_bars (`INSERT ... SELECT` from a stage), inside
the day's write transaction:

- adj_factor from the exchange's pre_close: f = f_prev x prev_close / pre_close, where
  f_prev and prev_close are the stock's previous stored session;
- pre_close from a source's factor series: round(prev_close x f_prev / f, 2), and then
  pct_change against it (a source's own change may be against the previous raw close);
- 1.0 on a stock's listing day: its stocks.listing_date, or, where none is known, the first
  day it appears after a written session it was absent from;
- NULL where none of these can say.

"Previous stored session" is trusted only when nothing between it and the day is unknown:
every trading day in between was written (a stock absent from a written day was suspended)
and the stock was not among a day's missing stocks. `Chain` carries what the calendar says
about that; the SQL checks the rest. Nothing here reads the network or knows about runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from ..calendar import TradingCalendar

LOOKBACK_DAYS = 400  # how far back a day's chain is checked for gaps; a stock suspended longer gets NULL


@dataclass(frozen=True)
class Chain:
    """What the calendar and the written days say before `day`.

    `previous`: the previous trading day (None if none within the lookback). `floor`: rows on
    or before it cannot be chained to `day` (the latest trading day that was not written, or
    the lookback's start); rows after it can."""

    day: dt.date
    previous: dt.date | None
    floor: dt.date

    @property
    def previous_written(self) -> bool:
        return self.previous is not None and self.previous > self.floor


def chain_for(conn: psycopg.Connection[Any], day: dt.date, is_trading_day: Callable[[dt.date], bool] | None) -> Chain:
    """The chain before `day`, from the calendar (the packaged one when None) and sync_days' written days."""
    trading = is_trading_day or TradingCalendar().is_trading_day
    start = day - dt.timedelta(days=LOOKBACK_DAYS)
    written = {row[0] for row in conn.execute(
        "SELECT date FROM sync_days WHERE date >= %s AND date < %s AND rows > 0", (start, day)).fetchall()}
    previous: dt.date | None = None
    candidate = day - dt.timedelta(days=1)
    while candidate >= start:
        if trading(candidate):
            previous = previous or candidate
            if candidate not in written:
                return Chain(day, previous, candidate)
        candidate -= dt.timedelta(days=1)
    return Chain(day, previous, start - dt.timedelta(days=1))


# The stage's columns: (code, open, high, low, close, pre_close, volume, amount, turnover, pct_change, adj_factor).
# `prev`: the stock's latest row after the chain's floor, joined on the previous trading day first (one index
# range for the whole day) and looked up one by one only for stocks absent that day (suspended, new, missing).
_DERIVE = """
INSERT INTO daily_bars (trade_date, code, open, high, low, close, pre_close, volume, amount, turnover, pct_change, adj_factor)
SELECT %(day)s, s.code, s.open, s.high, s.low, s.close, d.pre_close, s.volume, s.amount, s.turnover,
       CASE WHEN s.pct_change IS NULL OR (s.pre_close IS NULL AND d.pre_close IS NOT NULL)
            THEN round(((s.close - d.pre_close) / NULLIF(d.pre_close, 0) * 100)::numeric, 4)::float8
            ELSE s.pct_change END,
       d.adj_factor
FROM ({stage}) s
LEFT JOIN daily_bars y ON y.trade_date = %(previous)s AND y.code = s.code AND %(previous_written)s
LEFT JOIN LATERAL (
    SELECT p.trade_date, p.close, p.adj_factor FROM daily_bars p
    WHERE y.code IS NULL AND p.code = s.code AND p.trade_date < %(day)s AND p.trade_date > %(floor)s
    ORDER BY p.trade_date DESC LIMIT 1) older ON true
CROSS JOIN LATERAL (SELECT coalesce(y.trade_date, older.trade_date) AS trade_date,
                           coalesce(y.close, older.close) AS close,
                           coalesce(y.adj_factor, older.adj_factor) AS adj_factor) p0
CROSS JOIN LATERAL (SELECT p0.trade_date IS NOT NULL AND p0.close > 0 AND NOT EXISTS (
                               SELECT 1 FROM sync_day_missing m
                               WHERE m.code = s.code AND m.date > p0.trade_date AND m.date < %(day)s) AS ok) chain
CROSS JOIN LATERAL (SELECT
    coalesce(s.pre_close,
             CASE WHEN chain.ok AND s.adj_factor > 0
                  THEN round((p0.close * p0.adj_factor / s.adj_factor)::numeric, 2)::float8 END) AS pre_close,
    coalesce(s.adj_factor,
             CASE WHEN chain.ok AND s.pre_close > 0 THEN p0.adj_factor * p0.close / s.pre_close END,
             CASE WHEN p0.trade_date IS NULL AND NOT EXISTS (
                           SELECT 1 FROM daily_bars e WHERE e.code = s.code AND e.trade_date < %(day)s)
                       AND coalesce((SELECT st.listing_date = %(day)s FROM stocks st WHERE st.code = s.code),
                                    %(previous_written)s AND NOT EXISTS (
                                        SELECT 1 FROM sync_day_missing m WHERE m.code = s.code AND m.date = %(previous)s))
                  THEN 1.0 END) AS adj_factor) d
"""


def insert_derived(conn: psycopg.Connection[Any], chain: Chain, stage_sql: str, params: dict[str, Any] | None = None) -> int:
    """Insert the rows `stage_sql` selects (the stage's columns, for chain.day) into daily_bars, deriving what
    is missing; return how many. `params` are the stage query's own named parameters."""
    sql = _DERIVE.format(stage=stage_sql)
    values = {**(params or {}), "day": chain.day, "previous": chain.previous, "floor": chain.floor,
              "previous_written": chain.previous_written}
    return conn.execute(sql, values).rowcount
