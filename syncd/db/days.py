"""Day records (`sync_days`), read: the reads behind `days`, freshness and the missing-data job.

Every write of a day's record is daywrite.py's; this module only reads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..protocol import Day
from .sqlrow import scalar

DAYS_SQL = ("SELECT date, status, rows, run_id, error, expected, missing, source, fallback_stocks "
            "FROM sync_days WHERE date BETWEEN %s AND %s ORDER BY date")  # (start, end)


def days(conn: psycopg.Connection[Any], start: dt.date, end: dt.date) -> list[Day]:
    with conn.cursor(row_factory=dict_row) as cur:
        return days_from_rows(cur.execute(DAYS_SQL, (start, end)).fetchall())


def days_from_rows(rows: Sequence[dict[str, Any]]) -> list[Day]:
    """Days from DAYS_SQL's rows read as dicts."""
    return [Day(date=r["date"].isoformat(), status=r["status"], rows=r["rows"], run_id=r["run_id"], error=r["error"],
                expected=r["expected"], missing=r["missing"], source=r["source"], fallback_stocks=r["fallback_stocks"])
            for r in rows]


def missing_codes(conn: psycopg.Connection[Any], day: dt.date) -> list[str]:
    """The stocks whose request failed when `day` was last written (an `incomplete` day's to fetch again)."""
    return [r[0] for r in conn.execute("SELECT code FROM sync_day_missing WHERE date = %s ORDER BY code", (day,)).fetchall()]


def day_statuses(conn: psycopg.Connection[Any], start: dt.date, end: dt.date) -> dict[dt.date, str]:
    rows = conn.execute("SELECT date, status FROM sync_days WHERE date BETWEEN %s AND %s", (start, end)).fetchall()
    return dict(rows)


def day_status(conn: psycopg.Connection[Any], day: dt.date) -> str | None:
    """The recorded status of one day (None: never planned)."""
    row = conn.execute("SELECT status FROM sync_days WHERE date = %s", (day,)).fetchone()
    return row[0] if row else None


def latest_success_day(conn: psycopg.Connection[Any]) -> dt.date | None:
    """The newest day recorded `success`."""
    return scalar(conn.execute("SELECT max(date) FROM sync_days WHERE status = 'success'"))


def missing_codes_by_day(conn: psycopg.Connection[Any], days: Sequence[dt.date]) -> dict[dt.date, list[str]]:
    """The incomplete days among `days` with the stocks each one misses."""
    rows = conn.execute("SELECT m.date, array_agg(m.code ORDER BY m.code) FROM sync_day_missing m JOIN sync_days d "
                        "USING (date) WHERE m.date = ANY(%s) AND d.status = 'incomplete' GROUP BY m.date",
                        (list(days),)).fetchall()
    return dict(rows)
