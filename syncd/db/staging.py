"""The stage of per-stock fetches (`sync_stage`).

The by_stock plan asks each stock once for the run's whole range and stages what arrives here,
then writes each day from the stage in its own transaction. A staged bar is a Row's values after
the code (base.COLUMNS order) as one float8[], so the stage follows Row's columns as they are.
Only the run holding the run lock uses the stage; it is emptied when such a run begins and ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from typing import Any

import psycopg

from ..sources.base import COLUMNS, Row

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
