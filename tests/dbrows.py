"""Rows and databases the data-layer tests build by hand: a sane bar, a migrated database with
one run to write under, and the compatibility view an earlier syncd kept; round trips counted."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from syncd.db import connection, migrations, runs
from syncd.record import RunRecord
from syncd.sources.base import Row


def round_trips(conn: psycopg.Connection[Any], action: Callable[[psycopg.Connection[Any]], object]) -> int:
    """Round trips `action` took on `conn`: the ReadyForQuery messages in libpq's protocol trace."""
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        try:
            action(conn)
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        return trace.read().count("ReadyForQuery")


@contextmanager
def migrated_with_run(database: str, run_id: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to `database`, migrated, with a running run `run_id` to write days under."""
    with connection.connect(database) as opened:
        migrations.migrate(opened)
        runs.insert_run(opened, RunRecord(run_id=run_id, task_type="manual", requested_by="test",
                                               start_date=dt.date(2015, 1, 1), end_date=dt.date(2026, 12, 31), host="h", pid=1))
        yield opened


def sane_bar(code: str, pre: float = 10.0, pct: float = 1.0, **changes: Any) -> Row:
    """A sane row moving `pct` percent from `pre` (amount / volume inside [low, high])."""
    close = round(pre * (1 + pct / 100), 2)
    low, high = min(pre, close) - 0.05, max(pre, close) + 0.05
    row = {"code": code, "open": pre, "high": high, "low": low, "close": close, "pre_close": pre, "volume": 10000,
           "amount": 10000 * (low + high) / 2, "turnover": 1.0, "pct_change": round((close - pre) / pre * 100, 4),
           "adj_factor": 1.0} | changes
    return tuple(row.values())  # type: ignore[return-value]


# The view an earlier syncd kept (numeric volume, float prices): a database made by it must migrate.
OLD_COMPAT_VIEW = """
    CREATE OR REPLACE VIEW daily_stock_data AS
    SELECT b.code AS stock_code, s.name AS stock_name, b.trade_date,
           b.open AS open_price, b.close AS close_price, b.high AS high_price, b.low AS low_price,
           b.volume::numeric / 100 AS volume, b.amount, b.pct_change AS change_pct,
           b.close - b.pre_close AS change_amount, b.turnover AS turnover_rate,
           (b.high - b.low) / NULLIF(b.pre_close, 0) * 100 AS amplitude
    FROM daily_bars b LEFT JOIN stocks s USING (code)
"""
