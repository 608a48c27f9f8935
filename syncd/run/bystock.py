"""The by_stock plan: each stock asked once for the run's whole range, staged in PostgreSQL, then written day by day.

A per-stock history API answers any range in one request, so a run asks each stock once
(`fetch_stocks`), whatever its length: a 20-year backfill costs one request per stock, not
one per stock per window. What arrives is staged in the unlogged `sync_stage` table (db/staging.py)
in batches of `STAGE_BATCH_ROWS`, never held in memory; then each trading day is read back
from the stage and written in its own transaction (outcomes.py), in day order, so progress,
cancel and atomicity are those of the by_day plan. The cancel flag is checked before every
stock taken from the read-ahead and before every day taken from the stage.

A day's `expected` is the source's `listed_on(day)`; its `missing` are the stocks whose
request failed (per-stock retries are the source's; syncd cannot tell which of them were
listed that day, so each failed stock counts on every day of the range). A day with missing
stocks is written with what was fetched plus the stored rows of the missing ones and ends
`incomplete`; a day for which nothing was fetched is `failed` and not written. An exception
out of the fetch is retried with backoff (stocks already answered are not staged again);
if the retries run out, no day can be judged and every day fails with that error.

`patch` (the missing-data job on incomplete days): only the stocks each day misses are asked
for, and a day's write replaces only their rows, keeping every other stored row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..db import staging
from ..logs import Event
from ..sources.base import Row, Source, StockBars, StockFailure, listed_on
from .outcomes import DayRejected, DayWriter, WithDb, incomplete_note
from .readahead import read_ahead

STAGE_BATCH_ROWS = 50_000   # rows per COPY into the stage: bounds the memory a fetch holds
PROGRESS_EVERY_STOCKS = 500
Backoff = Callable[[int], float]


@dataclass
class Staged:
    """What the fetch answered: stocks whose request succeeded (their rows staged; none means
    suspended or not listed), stocks whose request failed, or an error that ended the whole fetch."""

    answered: set[str] = field(default_factory=set)
    failures: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    error: str | None = None


def sync_by_stock(source: Source, days: Sequence[dt.date], writer: DayWriter, with_db: WithDb[Any], attempts: int,
                  backoff: Backoff, log: Any, fatal: tuple[type[BaseException], ...],
                  patch: Mapping[dt.date, frozenset[str]] | None = None) -> None:
    """Fetch every stock once for `days` (only `patch`'s stocks when given), stage, then write each day in order."""
    codes = sorted(set().union(*patch.values())) if patch else None
    staged = _stage(source, days, codes, writer, with_db, attempts, backoff, log, fatal)
    if staged is None:
        return  # cancelled
    log.info(Event.STOCKS_STAGED, stocks=len(staged.answered), failed=len(staged.failures), rows=staged.rows,
             error=staged.error, done=True)
    for day in days:
        if writer.cancelled:
            return
        if patch is None:
            _write_day(source, day, staged, writer, with_db)
        else:
            _patch_day(source, day, patch[day], staged, writer, with_db)


# --- fetch into the stage ---------------------------------------------------------------------

def _stage(source: Source, days: Sequence[dt.date], codes: Sequence[str] | None, writer: DayWriter,
           with_db: WithDb[Any], attempts: int, backoff: Backoff, log: Any,
           fatal: tuple[type[BaseException], ...]) -> Staged | None:
    """Fetch and stage, retrying a fetch that raised; None if cancelled."""
    wanted = frozenset(days)
    staged = Staged()
    for attempt in range(attempts):
        if attempt:
            log.info(Event.FETCH_RETRY, stocks_done=len(staged.answered), attempt=attempt + 1)
            if writer.state.wait_cancel(backoff(attempt)):
                return None
        ask = None if codes is None else [c for c in codes if c not in staged.answered and c not in staged.failures]
        if ask == []:
            break
        try:
            stream = source.fetch_stocks(days[0], days[-1], lambda: writer.cancelled, ask)
            _stage_stream(stream, wanted, staged, writer, with_db, log)
            staged.error = None
            break
        except fatal:
            raise
        except Exception as exc:  # the whole fetch failed: ask again for what is not answered yet
            staged.error = f"{type(exc).__name__}: {exc}"
            log.warning(Event.FETCH_FAILED, stocks_done=len(staged.answered), attempt=attempt + 1, error=staged.error)
        if writer.cancelled:
            return None
    return None if writer.cancelled else staged


def _stage_stream(stream: Iterator[StockBars | StockFailure], wanted: Collection[dt.date], staged: Staged,
                  writer: DayWriter, with_db: WithDb[Any], log: Any) -> None:
    buffer: list[tuple[dt.date, Row]] = []
    buffered: set[str] = set()  # the stocks whose rows are in `buffer`

    def flush() -> None:
        batch, codes = list(buffer), set(buffered)
        buffer.clear()
        buffered.clear()
        if not batch or writer.cancelled:
            return
        try:
            staged.rows += with_db(lambda c: staging.stage_bars(c, writer.run.run_id, batch))
        except BaseException:
            staged.answered -= codes  # not staged: a retry asks for them again
            raise

    items = read_ahead(stream)
    try:
        for item in items:
            if writer.cancelled:
                return
            if item.code in staged.answered:
                continue  # asked again after a failed fetch
            if isinstance(item, StockFailure):
                staged.failures[item.code] = item.error
                continue
            staged.failures.pop(item.code, None)
            staged.answered.add(item.code)
            buffered.add(item.code)
            buffer.extend({day: row for day, row in item.bars if day in wanted}.items())  # one row a day
            if len(buffer) >= STAGE_BATCH_ROWS:
                flush()
            if len(staged.answered) % PROGRESS_EVERY_STOCKS == 0:
                log.info(Event.STOCKS_STAGED, stocks=len(staged.answered), failed=len(staged.failures),
                         rows=staged.rows + len(buffer))
    except Exception:
        try:
            flush()  # what was answered before the fetch broke stays answered: a retry skips it
        except Exception:
            pass  # those stocks are unanswered again (flush); the fetch's own error is the one to report
        raise
    finally:
        items.close()
    flush()


# --- write each day from the stage ------------------------------------------------------------

def _write_day(source: Source, day: dt.date, staged: Staged, writer: DayWriter, with_db: WithDb[Any]) -> None:
    if staged.error is not None:
        writer.fail(day, f"the fetch failed after its retries: {staged.error}")
        return
    rows = with_db(lambda c: staging.staged_rows(c, writer.run.run_id, day))
    if not rows:
        writer.fail(day, _nothing_fetched(staged))
        return
    missing = frozenset(staged.failures)
    try:
        writer.write(day, rows, expected=listed_on(source, day), missing=missing,
                     errors=staged.failures)
    except DayRejected as exc:
        writer.fail(day, str(exc))


def _patch_day(source: Source, day: dt.date, asked: frozenset[str], staged: Staged, writer: DayWriter,
               with_db: WithDb[Any]) -> None:
    """An incomplete day: replace the rows of the stocks it missed that answered now; keep every other row."""
    if staged.error is not None:
        writer.still_incomplete(day, asked, f"fetching its missing stocks again failed: {staged.error}")
        return
    failed_now = frozenset(asked & staged.failures.keys())
    answered = asked - failed_now
    expected = listed_on(source, day)
    if not answered:
        writer.still_incomplete(day, failed_now, incomplete_note(failed_now, expected, staged.failures), expected)
        return
    rows = with_db(lambda c: staging.staged_rows(c, writer.run.run_id, day, answered))
    try:
        writer.write(day, rows, expected=expected, missing=failed_now, replace_only=answered,
                     errors=staged.failures)
    except DayRejected as exc:
        writer.still_incomplete(day, asked, str(exc))


def _nothing_fetched(staged: Staged) -> str:
    if not staged.failures:
        return "the source returned no rows for this day"
    code, error = next(iter(staged.failures.items()))
    return f"nothing fetched for this day: {len(staged.failures)} stocks' requests failed ({code}: {error})"
