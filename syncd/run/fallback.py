"""Fallback sources: asked, in order, for what the primary source could not give a day.

`[source] fallback` names other configured sources (docs/configuration.md). When the primary
fails a day (after its retries) or leaves stocks missing, the run's `DayWriter` (outcomes.py)
asks `Fallbacks` before it writes or fails the day: for the whole day (`fill_day`) or for the
missing stocks (`fill_stocks`). Each fallback in turn is asked for what is still wanted, by its
own plan for that one day (a by_day source: the day's answer, of which only the wanted stocks
are kept; a by_stock source: those stocks' requests for that day). What they give joins the
day's write, so the day is still written whole, in one transaction, or not at all.

Rules (docs/sources.md, "Primary and fallback"):
- a stock is filled only by a row: a fallback's silence about a stock (it does not cover that
  board, say) never counts as a suspension, the stock stays missing;
- a fallback's rows are judged by the unit rule before they join anything: more than 1 % of
  them failing refuses them all (its units or mapping differ from the primary's);
- a fallback paces itself (its own rate limit, retries and ban pauses, in the source); one that
  fails `FAILURES_IN_A_ROW` days in a row is not asked again in this run;
- while one is asked, the run's status names it (`fallback_source`); each ask is logged
  (`day_fallback`) and counted (metrics), with its outcome.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..control.runstate import RunState
from ..db.checks import fails_unit, unit_guard_share_error
from ..logs import Event
from ..sources.base import DayFailure, DayRows, EncodedRows, Row, ShouldStop, Source, StockFailure, listed_on
from ..telemetry.observer import NULL_OBSERVER, Observer

FAILURES_IN_A_ROW = 3  # days a fallback failed in a row before it is not asked again in this run


@dataclass
class Filled:
    """What the fallbacks gave for one day.

    `rows`: the rows they gave, by code (only wanted stocks). `sources`: code -> the fallback that
    gave it. `source`/`expected`: for a whole day, the fallback that gave it and its listing count.
    `missing`: the stocks still wanted. `reasons`: why each fallback asked gave nothing, or not all."""

    rows: dict[str, Row] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    expected: int | None = None
    missing: frozenset[str] = frozenset()
    reasons: list[str] = field(default_factory=list)

    def why(self) -> str:
        return "; ".join(self.reasons)


@dataclass(frozen=True)
class _Answer:
    rows: dict[str, Row]
    expected: int | None
    missing: frozenset[str]
    error: str | None = None  # one failed request's error, for a partial answer


class Fallbacks:
    """A run's fallback sources, in order, with their failures in a row (see the module docstring)."""

    def __init__(self, sources: Sequence[Source], state: RunState, log: Any, observer: Observer = NULL_OBSERVER) -> None:
        self.sources = list(sources)
        self.state = state
        self.log = log
        self.observer = observer
        self._failed_in_a_row: dict[str, int] = {}
        self._last_error: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.sources)

    def fill_day(self, day: dt.date, should_stop: ShouldStop, primary_error: str | None = None) -> Filled:
        """The whole day: the first fallback that gives rows gives the day; later ones fill its missing stocks.
        `primary_error`, why the primary failed it, goes into each ask's log line (a day a fallback fills keeps
        no error of its own)."""
        return self._fill(day, None, should_stop, primary_error)

    def fill_stocks(self, day: dt.date, codes: Iterable[str], should_stop: ShouldStop) -> Filled:
        """The day's rows of `codes` (stocks the primary missed)."""
        return self._fill(day, frozenset(codes), should_stop)

    def _fill(self, day: dt.date, codes: frozenset[str] | None, should_stop: ShouldStop,
              primary_error: str | None = None) -> Filled:
        filled = Filled(missing=codes or frozenset())
        context = {"primary_error": primary_error} if primary_error is not None else {}
        wanted: set[str] | None = None if codes is None else set(codes)
        for source in self.sources:
            if should_stop() or (wanted is not None and not wanted):
                break
            name = source.name
            asked = "day" if wanted is None else len(wanted)
            if self._failed_in_a_row.get(name, 0) >= FAILURES_IN_A_ROW:
                self._note(filled, context, day, name, asked, "skipped", f"not asked: it failed {FAILURES_IN_A_ROW} days in a row "
                                                              f"in this run ({self._last_error.get(name)})")
                continue
            self.state.asking_fallback(name)
            try:
                answer = _ask(source, day, wanted, should_stop)
            except Exception as exc:  # a fallback's failure is this day's reason, never the run's end
                answer = f"{type(exc).__name__}: {exc}"
            finally:
                self.state.asking_fallback(None)
            if should_stop():
                break
            if isinstance(answer, str):
                self._failed_in_a_row[name] = self._failed_in_a_row.get(name, 0) + 1
                self._last_error[name] = answer
                self._note(filled, context, day, name, asked, "failed", answer)
                continue
            self._failed_in_a_row[name] = 0
            got = answer.rows if wanted is None else {code: row for code, row in answer.rows.items() if code in wanted}
            if not got:
                self._note(filled, context, day, name, asked, "empty", answer.error or
                           ("no rows for the day" if wanted is None else f"no rows for the {len(wanted)} stocks asked"))
                continue
            failing = sum(fails_unit(row) for row in got.values())
            refused = unit_guard_share_error(failing, len(got), f"{name}'s answer for {day}")
            if refused is not None:
                self._note(filled, context, day, name, asked, "refused", refused)
                continue
            if wanted is None:  # this fallback gives the day; the next ones may fill what it missed
                filled.source, filled.expected = name, answer.expected
                wanted = set(answer.missing - got.keys())
            else:
                filled.sources.update(dict.fromkeys(got, name))
                wanted -= got.keys()
            filled.rows.update(got)
            filled.missing = frozenset(wanted)
            outcome = "partial" if wanted else "filled"
            self._note(filled, context, day, name, asked, outcome, answer.error if wanted else None, rows=len(got))
        return filled

    def _note(self, filled: Filled, context: dict[str, str], day: dt.date, name: str, asked: int | str, outcome: str,
              error: str | None, rows: int = 0) -> None:
        """Log and count one ask; a reason for the day's record when it gave nothing."""
        if error is not None and outcome != "partial":
            filled.reasons.append(f"fallback {name}: {error}")
        self.observer.fallback_asked(name, outcome)
        level = self.log.info if outcome in ("filled", "partial") else self.log.warning
        level(Event.DAY_FALLBACK, date=day.isoformat(), source=name, asked=asked, outcome=outcome, rows=rows, error=error,
              **context)


def _ask(source: Source, day: dt.date, wanted: set[str] | None, should_stop: ShouldStop) -> _Answer | str:
    """One fallback's answer for `day` (only `wanted` stocks where given), or why it gave none."""
    if source.plan([day]) == "by_stock":
        rows: dict[str, Row] = {}
        failures: dict[str, str] = {}
        for item in source.fetch_stocks(day, day, should_stop, sorted(wanted) if wanted is not None else None):
            if isinstance(item, StockFailure):
                failures[item.code] = item.error
                continue
            rows.update((row[0], row) for bar_day, row in item.bars if bar_day == day)
        if not rows and failures:
            code, error = next(iter(failures.items()))
            return f"{len(failures)} stocks' requests failed ({code}: {error})"
        expected = listed_on(source, day) if wanted is None else None
        return _Answer(rows, expected, frozenset(failures), next(iter(failures.values()), None))
    stream = source.fetch_days([day], should_stop)
    try:
        for answered, result in stream:
            if answered != day:
                continue
            if isinstance(result, DayFailure):
                return result.error
            return _Answer(by_code(result.rows), result.expected, result.missing)
    finally:
        stream.close()
    return "it gave no answer for the day"


def by_code(rows: DayRows) -> dict[str, Row]:
    """A day's rows (Row tuples or a payload) by code."""
    if isinstance(rows, EncodedRows):
        from ..sources.copypayload import decode_rows  # numpy: only where a payload is merged (a demo's day)

        return {row[0]: row for row in decode_rows(rows)}
    return {row[0]: row for row in rows}


def merged(primary: DayRows, filled: Mapping[str, Row]) -> list[Row]:
    """The primary's rows of a day with the fallbacks' rows of the stocks it missed (which it has no row for)."""
    rows = by_code(primary)
    rows.update({code: row for code, row in filled.items() if code not in rows})
    return list(rows.values())
