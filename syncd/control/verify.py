"""The `verify` op's reading: each day's coverage and anomalies, checking first the days never checked.

This module owns what `verify` answers (docs/data.md, "Verify"): per calendar day its status,
rows, `expected` and `missing`, the `source` that wrote it, the number of findings and the first few of them. Days
written by this version were checked when written; a day written by an earlier version
(rows, but no checked_at) is checked here, one short transaction a day under the day-write
fence (skipped if a day write holds it), within a time budget so the control loop stays
responsive: what the budget leaves is reported `checked: false`, and asking again goes on.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import psycopg

from ..calendar import calendar_days
from ..db import checks, daywrite, runlock
from ..protocol import Finding, VerifiedDay

FINDINGS_SHOWN = 5     # findings listed per day (all are counted in `anomalies`)
CHECK_BUDGET_S = 1.5   # time one request may spend checking days written by an earlier version


def verify_days(conn: psycopg.Connection[Any], start: dt.date, end: dt.date, is_trading_day: Callable[[dt.date], bool],
                budget_s: float = CHECK_BUDGET_S, clock: Callable[[], float] = time.monotonic,
                reconciled_first: bool = False) -> list[VerifiedDay]:
    """Every calendar day of [start, end], judged; unrecorded days read as pending (trading) or skipped.
    `reconciled_first`: a reconciliation's findings (source_*) lead each day's first few."""
    deadline = clock() + budget_s
    for day in unchecked_days(conn, start, end):
        if clock() >= deadline:
            break
        check_day(conn, day)
    recorded = _recorded(conn, start, end)
    shown = _first_findings(conn, start, end, reconciled_first)
    days = []
    for day in calendar_days(start, end):
        found = recorded.get(day)
        if found is None:
            status = "pending" if is_trading_day(day) else "skipped"
            days.append(VerifiedDay(date=day.isoformat(), status=status, rows=0, expected=None, anomalies=0, findings=[]))
            continue
        status, rows, expected, missing, anomalies, checked_at, source, fallback_stocks = found
        days.append(VerifiedDay(date=day.isoformat(), status=status, rows=rows, expected=expected, missing=missing,
                                anomalies=anomalies or 0, findings=shown.get(day, []),
                                checked=checked_at is not None or rows == 0, source=source,
                                fallback_stocks=fallback_stocks))
    return days


def unchecked_days(conn: psycopg.Connection[Any], start: dt.date, end: dt.date) -> list[dt.date]:
    return [r[0] for r in conn.execute("SELECT date FROM sync_days WHERE date BETWEEN %s AND %s AND rows > 0 "
                                       "AND checked_at IS NULL ORDER BY date", (start, end)).fetchall()]


def check_day(conn: psycopg.Connection[Any], day: dt.date) -> bool:
    """Compute and store `day`'s findings unless a day write holds the fence now; True if it was checked."""
    with conn.transaction():
        if not runlock.try_write_fence(conn):
            return False
        conn.execute("SET LOCAL jit = off")
        if not daywrite.lock_for_check(conn, day):  # written (and checked) meanwhile
            return True
        daywrite.record_checked(conn, day, len(checks.record_findings(conn, day)))
    return True


def _recorded(conn: psycopg.Connection[Any], start: dt.date, end: dt.date) -> dict[dt.date, tuple[Any, ...]]:
    rows = conn.execute("SELECT date, status, rows, expected, missing, anomalies, checked_at, source, fallback_stocks "
                        "FROM sync_days WHERE date BETWEEN %s AND %s", (start, end)).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def _first_findings(conn: psycopg.Connection[Any], start: dt.date, end: dt.date,
                    reconciled_first: bool = False) -> dict[dt.date, list[Finding]]:
    order = "source IS NULL, code, check_name" if reconciled_first else "code, check_name"
    rows = conn.execute(
        "SELECT trade_date, code, check_name, detail, source FROM (SELECT f.*, row_number() OVER (PARTITION BY trade_date "
        f"ORDER BY {order}) AS n FROM bar_findings f WHERE trade_date BETWEEN %s AND %s) x "
        f"WHERE n <= {FINDINGS_SHOWN} ORDER BY trade_date, {order}", (start, end)).fetchall()
    shown: dict[dt.date, list[Finding]] = {}
    for day, code, check, detail, source in rows:
        shown.setdefault(day, []).append(Finding(stock=code, check=check, detail=detail, source=source))
    return shown
