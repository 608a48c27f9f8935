"""How one run's trading days end: written (complete or incomplete), failed, or left alone by a cancel.

A `DayWriter` belongs to one run on the worker thread. It owns the cancel rule for writes:
after a cancel is accepted no day is written. It checks the flag before a day starts, again
first thing inside the day's write transaction (with the run lock's fence) and once more just
before the commit; a cancel seen inside the transaction rolls the whole day back (`Cancelled`).
So after a cancel at most a day whose COMMIT was already on its way to PostgreSQL ends up
written, and it is complete. It also keeps the run's count of written and failed days (an
incomplete day counts as both), why they failed (`Failures`: the run's error) and logs each day's end (`day_synced`, `day_incomplete`,
`day_failed`). The SQL is db/daywrite.py's; what to fetch is the plans' (byday.py, bystock.py).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypeVar

import psycopg

from ..control.runstate import RunState
from ..db import daywrite
from ..db.daywrite import DayRejected
from ..db.runlock import RunFence, RunLockLost
from ..logs import Event
from ..record import RunRecord
from ..sources.base import EncodedRows, Row
from ..telemetry.observer import NULL_OBSERVER, Observer
from .fallback import Fallbacks, Filled, merged

T = TypeVar("T")
WithDb = Callable[[Callable[[psycopg.Connection[Any]], T]], T]
Fence = Callable[[psycopg.Connection[Any]], None]
MISSING_CODES_SHOWN = 10  # how many missing stocks a day's error names
REASON_SHOWN = 400  # characters of the first failed day's reason in the run's error


class DatabaseDown(Exception):
    """The database could not be reached after the configured retries."""


class Cancelled(Exception):
    """The run was cancelled: raised inside a day's write transaction so that the day rolls back."""


class DayWriter:
    def __init__(self, run: RunRecord, state: RunState, log: Any, with_db: WithDb[Any], lock_fence: RunFence | None,
                 is_trading_day: Callable[[dt.date], bool] | None = None, observer: Observer = NULL_OBSERVER,
                 source: str | None = None, fallbacks: Fallbacks | None = None) -> None:
        self.run = run
        self.is_trading_day = is_trading_day
        self.observer = observer  # metrics: told of each day's end
        self.state = state
        self.log = log
        self.source = source  # the primary source's name: each day's provenance
        self.fallbacks = fallbacks if fallbacks else None  # asked before a day is written incomplete or failed
        self._with_db = with_db
        self._lock_fence = lock_fence
        self._day_fence = _DayFence(self._fence, self._fence_probe)
        self.written = 0  # days whose rows were committed (incomplete ones included)
        self.failed = 0   # days that ended failed or incomplete
        self.failures = Failures()  # why: the run's error

    @property
    def cancelled(self) -> bool:
        return self.state.cancel_requested

    def write(self, day: dt.date, rows: Iterable[Row] | EncodedRows, *, expected: int | None = None,
              missing: Collection[str] = frozenset(), replace_only: Collection[str] | None = None,
              errors: Mapping[str, str] | None = None) -> bool:
        """Write `day` atomically; False if a cancel stopped it (nothing of it committed). `missing`: stocks
        whose request failed (their stored rows stay); the day is then incomplete, unless the fallbacks
        give them (their rows join this write). `replace_only`: a re-fetch of those stocks alone (every
        other stored row stays). Raises DayRejected when the day is refused (nothing fetched, the unit
        guard, or the database refusing the rows)."""
        if self.cancelled:
            return False
        filled = self._ask_fallbacks(day, missing) if missing else None
        if filled is not None and filled.rows:
            rows = merged(rows if isinstance(rows, EncodedRows) else list(rows), filled.rows)
            replace_only = None if replace_only is None else frozenset(replace_only) | filled.rows.keys()
            missing = filled.missing
        return self._write(day, rows, expected=expected, missing=missing, replace_only=replace_only, errors=errors,
                           source=self.source, filled=filled)

    def fail(self, day: dt.date, error: str) -> None:
        """Record `day` failed (nothing written; its stored rows stay) unless the run is cancelled, or the
        fallbacks give the day (then written as theirs, whole)."""
        if self.cancelled:
            return
        if self.fallbacks is not None:
            self.state.day_started(day)
            filled = self.fallbacks.fill_day(day, lambda: self.cancelled, error)
            if self.cancelled:
                return
            if filled.source is None:
                error = f"{error}; {filled.why()}" if filled.reasons else error
            else:
                try:
                    self._write(day, list(filled.rows.values()), expected=filled.expected, missing=filled.missing,
                                source=filled.source, filled=filled)
                    return
                except DayRejected as exc:
                    error = f"{error}; fallback {filled.source}: {exc}"
        self._with_db(lambda c: daywrite.fail_day(c, day, self.run.run_id, error, self._lock_fence))
        self._failed(day, error, "failed")

    def still_incomplete(self, day: dt.date, missing: Collection[str], error: str, expected: int | None = None) -> None:
        """An incomplete day whose missing stocks failed again: it keeps its rows and stays incomplete, unless the
        fallbacks give some of them (then written with them, the rest kept)."""
        if self.cancelled:
            return
        filled = self._ask_fallbacks(day, missing)
        if filled is not None and filled.rows:
            try:
                self._write(day, list(filled.rows.values()), expected=expected, missing=filled.missing,
                            replace_only=frozenset(filled.rows), source=self.source, filled=filled)
                return
            except DayRejected as exc:
                error = f"{error}; {exc}"
        elif filled is not None and filled.reasons:
            error = f"{error}; {filled.why()}"
        if self.cancelled:
            return
        self._with_db(lambda c: daywrite.keep_incomplete(c, day, self.run.run_id, missing, error, self._lock_fence))
        self._failed(day, error, "incomplete")

    def _ask_fallbacks(self, day: dt.date, missing: Collection[str]) -> Filled | None:
        if self.fallbacks is None or self.cancelled:
            return None
        self.state.day_started(day)
        return self.fallbacks.fill_stocks(day, missing, lambda: self.cancelled)

    def _write(self, day: dt.date, rows: Iterable[Row] | EncodedRows, *, expected: int | None, missing: Collection[str],
               source: str | None, filled: Filled | None, replace_only: Collection[str] | None = None,
               errors: Mapping[str, str] | None = None) -> bool:
        if self.cancelled:
            return False
        self.state.day_started(day)
        started = time.perf_counter()
        note = incomplete_note(missing, expected, errors or {}) if missing else None
        if note is not None and filled is not None and filled.reasons:
            note = f"{note}; {filled.why()}"
        from_fallbacks = {name for name in (filled.source, *filled.sources.values()) if name is not None} if filled else set()
        try:
            job = daywrite.DayWrite(day, self.run.run_id, expected=expected, missing=missing, replace_only=replace_only,
                                    error=note, fence=self._day_fence, before_commit=self._stop_if_cancelled,
                                    is_trading_day=self.is_trading_day, mark_syncing=True, source=source,
                                    bar_sources=filled.sources if filled is not None else {},
                                    fallback_stocks=len(filled.rows) if filled is not None else 0)
            written = self._with_db(lambda c: daywrite.write_day(c, job, rows))
        except Cancelled:
            return False
        except (RunLockLost, DatabaseDown, DayRejected):
            raise
        except Exception as exc:  # refused by the database (a constraint, its disk full: the server answered) or
            # by a check on the day's data: this day only. A lost connection arrives as DatabaseDown.
            raise DayRejected(f"writing the day failed: {type(exc).__name__}: {str(exc).strip()}") from exc
        incomplete = written.status == "incomplete"
        self.written += 1
        self.failed += int(incomplete)
        self.state.day_finished(written.fetched, failed=incomplete)
        elapsed = time.perf_counter() - started
        self.observer.day_finished(written.status, written.fetched, elapsed)
        for name in sorted(from_fallbacks):
            self.observer.fallback_day(name)
        ms = round(elapsed * 1000, 1)
        fallback = {"source": source, "fallback_stocks": len(filled.rows)} if from_fallbacks and filled is not None else {}
        if incomplete:
            self.failures.add(day, note or "incomplete", "incomplete")
            self.log.warning(Event.DAY_INCOMPLETE, date=day.isoformat(), rows=written.rows, expected=expected,
                             missing=len(missing), anomalies=written.anomalies, error=note, ms=ms, **fallback)
        else:
            self.log.info(Event.DAY_SYNCED, date=day.isoformat(), rows=written.rows, status=written.status,
                          expected=expected, anomalies=written.anomalies, ms=ms, **fallback)
        return True

    def _failed(self, day: dt.date, error: str, how: str) -> None:
        self.failed += 1
        self.failures.add(day, error, how)
        self.state.day_finished(0, failed=True)
        self.observer.day_finished("failed", 0, None)
        self.log.warning(Event.DAY_FAILED, date=day.isoformat(), error=error)

    def _fence(self, conn: psycopg.Connection[Any]) -> None:
        self._stop_if_cancelled()
        if self._lock_fence is not None:
            self._lock_fence(conn)

    def _fence_probe(self) -> daywrite.FenceProbe | None:
        """The run lock's fence as SQL for the day's first round trip (runlock.RunFence.probe), after the cancel check."""
        self._stop_if_cancelled()
        return self._lock_fence.probe() if self._lock_fence is not None else None

    def _stop_if_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled()


class Failures:
    """Why a run's days failed, for the run's error: the first failed day's reason and how many days share it
    (a day's own date in its reason does not make it another reason)."""

    def __init__(self) -> None:
        self.first: str | None = None
        self.sharing = 0  # days whose reason is the first one's
        self.days = 0
        self._key = ""
        self._kinds: set[str] = set()

    def add(self, day: dt.date, reason: str, kind: str) -> None:
        """`kind`: how the day ended, failed or incomplete."""
        key = reason.replace(day.isoformat(), "{day}").replace(day.strftime("%Y%m%d"), "{day}")
        if self.first is None:
            self.first, self._key = reason, key
        self.sharing += key == self._key
        self.days += 1
        self._kinds.add(kind)

    def summary(self, trading_days: int) -> str | None:
        """E.g. "2 of 2 trading days failed: <reason> (2 days)"; None when no day failed."""
        if self.first is None:
            return None
        ended = " or ".join(sorted(self._kinds))  # failed, incomplete, or "failed or incomplete"
        reason = self.first if len(self.first) <= REASON_SHOWN else self.first[:REASON_SHOWN - 1] + "…"
        others = "" if self.sharing == self.days else f"; the other {self.days - self.sharing}: `syncctl days`"
        return (f"{self.days} of {trading_days} trading days {ended}: {reason} "
                f"({self.sharing} day{'s' if self.sharing != 1 else ''}{others})")


class _DayFence:
    """A day write's fence: `fence(conn)` the full check, `probe()` its pipelined form (daywrite.write_day)."""

    def __init__(self, full: Fence, probe: Callable[[], daywrite.FenceProbe | None]) -> None:
        self._full = full
        self.probe = probe

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        self._full(conn)


def incomplete_note(missing: Collection[str], expected: int | None, errors: Mapping[str, str]) -> str:
    """A day's error when stocks are missing: how many, which (the first few), and why (one request's error)."""
    codes = sorted(missing)
    shown = ", ".join(codes[:MISSING_CODES_SHOWN]) + (f" and {len(codes) - MISSING_CODES_SHOWN} more" if len(codes) > MISSING_CODES_SHOWN else "")
    of = f" of {expected} listed" if expected is not None else ""
    why = next((f"; {code}: {errors[code]}" for code in codes if code in errors), "")
    return f"{len(codes)}{of} stocks missing (their requests failed): {shown}{why}"
