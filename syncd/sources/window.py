"""The legacy `fetch_window` on top of the planned interface, until sync.py calls plan/fetch_* itself.

Owns one function, `fetch_window(source, days, should_stop)`: the old per-window answers
(day, rows or DayFailure) from a source that implements `plan`, `fetch_days` and
`fetch_stocks`. by_stock answers are regrouped by day in memory (a window's worth). Rows
are cut to the columns daily_bars has today (base.COLUMNS). A day with stocks whose
request failed is a DayFailure here, never written: the old write replaces the whole day
and would delete the stored rows of the stocks that failed. This module goes when sync.py
moves to the planned interface (staging by_stock answers in PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

from .base import COLUMNS, DayBatch, DayFailure, EncodedRows, Row, ShouldStop, StockBars, StockFailure


def _legacy(rows: list[Row]) -> list[Row]:
    width = len(COLUMNS)
    return [row[:width] for row in rows]  # type: ignore[misc]


def _day_result(day: dt.date, batch: DayBatch) -> Any:
    if batch.missing:
        sample = ", ".join(sorted(batch.missing)[:5])
        return DayFailure(f"{len(batch.missing)} stocks could not be fetched for {day} ({sample}...): "
                          "not written, so their stored rows stay")
    if isinstance(batch.rows, EncodedRows):
        return batch.rows
    return _legacy(batch.rows) if batch.rows else DayFailure(f"no bars for {day}")


def fetch_window(source: Any, days: Sequence[dt.date], should_stop: ShouldStop) -> Iterator[tuple[dt.date, Any]]:
    if not days:
        return
    if source.plan(days) == "by_day":
        for day, result in source.fetch_days(days, should_stop):
            yield day, result if isinstance(result, DayFailure) else _day_result(day, result)
        return
    first, last = min(days), max(days)
    by_day: dict[dt.date, list[Row]] = {day: [] for day in days}
    failed: set[str] = set()
    errors: list[str] = []
    for answer in source.fetch_stocks(first, last, should_stop):
        if isinstance(answer, StockFailure):
            failed.add(answer.code)
            errors.append(answer.error)
            continue
        assert isinstance(answer, StockBars)
        for day, row in answer.bars:
            if day in by_day:
                by_day[day].append(row)
    for day in days:
        if should_stop():
            return
        if failed:
            yield day, DayFailure(f"{len(failed)} stocks could not be fetched (first: {errors[0]}): "
                                  "the day is not written, so their stored rows stay")
        elif not by_day[day]:
            yield day, DayFailure(f"{source.name} has no bars for {day} (not published yet, or not a trading day)")
        else:
            yield day, _legacy(by_day[day])
