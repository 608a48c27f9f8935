"""The by_day plan: a run's trading days fetched in order, one answer per day, each written in its own transaction.

The source's `fetch_days` runs on the read-ahead thread (readahead.py), one day ahead of the
writer, so fetching day N+1 overlaps writing day N and memory holds about two days; or, for
a source that runs in the fetch process (sources/fetchproc.py), in that child, which works ahead of
the writer by itself. The
cancel flag is checked before every day taken from the read-ahead (and inside its write, see
outcomes.py): a day fetched ahead is dropped, never written, after a cancel.

Failures, in passes: a day the source could not produce (DayFailure, or a batch with no rows)
waits for the next pass; an exception out of the fetch is charged to the first day not yet
answered, and the fetch resumes after it, unless it keeps failing without answering a day
(`FETCH_FAILURES_IN_A_ROW` times), which ends the pass for all the days left (the upstream
is down: no point asking day after day). Each later pass, after an exponential backoff, asks
again for the days still unwritten, in order; after the last one they are recorded failed
with their last error. A batch that names missing stocks is written `incomplete` at once:
per-stock retries are the source's job, and the missing-data job asks for the day again.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..logs import Event
from ..sources.base import DayBatch, DayFailure, DayStream, EncodedRows, ShouldStop
from .outcomes import DayRejected, DayWriter
from .readahead import read_ahead

FETCH_FAILURES_IN_A_ROW = 3
LOGGED_DAYS = 50  # a retry's log line names at most this many days (and counts them all)
NO_DATA = "the source returned no data for this day"
Backoff = Callable[[int], float]  # attempt (1, 2, ...) -> seconds to wait before it


class DayFetcher(Protocol):
    """What the by_day plan asks of a source: its fetch_days (a source's own, or the fetch process's)."""

    @property
    def reads_ahead(self) -> bool:
        """True when fetch_days already works ahead of its consumer (no read-ahead thread on top)."""
        ...

    def fetch_days(self, days: Sequence[dt.date], should_stop: ShouldStop) -> DayStream:
        ...


def sync_by_day(source: DayFetcher, days: Sequence[dt.date], writer: DayWriter, attempts: int, backoff: Backoff,
                log: Any, fatal: tuple[type[BaseException], ...]) -> None:
    """Fetch and write `days` (in order); `fatal` exceptions (lost run lock, database down) end the run."""
    pending = list(days)
    errors: dict[dt.date, str] = {}
    for attempt in range(attempts):
        if attempt:
            log.info(Event.FETCH_RETRY, days=[d.isoformat() for d in pending[:LOGGED_DAYS]], count=len(pending),
                     attempt=attempt + 1)
            if writer.state.wait_cancel(backoff(attempt)):
                return
        pending = _one_pass(source, pending, errors, writer, log, attempt, fatal)
        if not pending or writer.cancelled:
            break
    for day in pending:
        writer.fail(day, errors.get(day, NO_DATA))


def _one_pass(source: DayFetcher, days: Sequence[dt.date], errors: dict[dt.date, str], writer: DayWriter, log: Any,
              attempt: int, fatal: tuple[type[BaseException], ...]) -> list[dt.date]:
    """One pass over `days`; return those not written (to ask again), their reasons in `errors`."""
    left = deque(days)
    unwritten: list[dt.date] = []
    failures_in_a_row = 0
    while left and not writer.cancelled:
        answered = False
        stream = source.fetch_days(list(left), lambda: writer.cancelled)
        if not source.reads_ahead:  # the fetch process works ahead on its own
            stream = read_ahead(stream)
        try:
            for day, result in stream:
                if writer.cancelled:
                    return unwritten
                while left and left[0] < day:  # passed over by the source
                    unwritten.append(left.popleft())
                if not left or left[0] != day:
                    continue  # not asked for, or answered twice: ignored
                left.popleft()
                answered, failures_in_a_row = True, 0
                problem = _problem(result)
                if problem is None:
                    problem = _write(writer, day, result)  # type: ignore[arg-type]
                if problem is not None:
                    errors[day] = problem
                    unwritten.append(day)
                else:
                    errors.pop(day, None)
            unwritten.extend(left)  # the source ended without these
            left.clear()
        except fatal:
            raise
        except Exception as exc:  # the fetch failed: charge it to the day it was producing
            failures_in_a_row = 1 if answered else failures_in_a_row + 1
            error = f"{type(exc).__name__}: {exc}"
            if not left:  # after the last day was answered: nothing left to charge it to
                log.warning(Event.FETCH_FAILED, attempt=attempt + 1, error=error)
                break
            day = left.popleft()
            errors[day] = error
            unwritten.append(day)
            log.warning(Event.FETCH_FAILED, date=day.isoformat(), attempt=attempt + 1, error=error)
            if failures_in_a_row >= FETCH_FAILURES_IN_A_ROW:
                for rest in left:
                    errors.setdefault(rest, error)
                unwritten.extend(left)
                left.clear()
        finally:
            stream.close()  # ends the source's fetch (and its helpers) now
    return sorted(unwritten)


def _problem(result: DayBatch | DayFailure) -> str | None:
    """Why a day's answer cannot be written, or None."""
    if isinstance(result, DayFailure):
        return result.error
    count = result.rows.count if isinstance(result.rows, EncodedRows) else len(result.rows)
    if count == 0:
        failed = f"; {len(result.missing)} stocks' requests failed" if result.missing else ""
        return f"the source returned no rows for this day{failed}"
    return None


def _write(writer: DayWriter, day: dt.date, batch: DayBatch) -> str | None:
    """Write a day's batch; the reason it could not be written, or None (written, or stopped by a cancel)."""
    try:
        writer.write(day, batch.rows, expected=batch.expected, missing=batch.missing)
    except DayRejected as exc:
        return str(exc)
    return None
