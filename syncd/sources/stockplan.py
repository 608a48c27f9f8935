"""What the remote sources share: their stock lists, the by_stock and by_day loops, and row arithmetic.

Owns `Listing` (a stock with the listing and delisting dates its source knows), `ask_each`
(the by_stock plan: each stock asked once, on a few threads, every answer handed on as it
arrives, and a breaker that stops asking once `give_up_after` stocks in a row failed, so
a dead or banning upstream costs a bounded time instead of one timeout per stock),
`ask_each_day` (the by_day plan's loop with the same breaker over days), and the value,
unit and adjustment arithmetic every adapter applies to its rows (`number`, `shares`,
`derived_pre_close`). It never touches the database or a library.
"""

from __future__ import annotations

import datetime as dt
import math
import queue
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from .base import DayBatch, DayFailure, DayStream, ShouldStop, SourceError, SourceRejected, StockBars, StockFailure, StockInfo
from .isolation import CallCancelled, UpstreamFailure

W = TypeVar("W")
Answer = StockBars | StockFailure


@dataclass(frozen=True)
class Listing:
    """A stock as its source lists it; dates None where the source does not say."""

    code: str       # 6 digits
    name: str
    exchange: str   # "sh" | "sz" | "bj"
    listed: dt.date | None = None
    delisted: dt.date | None = None  # its first day off the exchange

    def listed_on(self, day: dt.date) -> bool:
        return (self.listed is None or self.listed <= day) and (self.delisted is None or day < self.delisted)

    def trades_within(self, first: dt.date, last: dt.date) -> bool:
        return (self.listed is None or self.listed <= last) and (self.delisted is None or self.delisted > first)

    def info(self) -> StockInfo:
        return StockInfo(code=self.code, name=self.name, exchange=self.exchange)


def exchange_of(code: str) -> str:
    """The exchange of a plain A-share code: 6xxxxx Shanghai, 0/3xxxxx Shenzhen, else Beijing."""
    if code.startswith("6"):
        return "sh"
    return "sz" if code.startswith(("0", "3")) else "bj"


def count_listed(listings: Sequence[Listing], day: dt.date) -> int:
    return sum(1 for item in listings if item.listed_on(day))


@dataclass
class _Breaker:
    give_up_after: int
    failed_in_a_row: int = 0
    last_error: str = ""
    tripped: bool = False

    def record(self, answer: Answer) -> None:
        if isinstance(answer, StockBars):
            self.failed_in_a_row = 0
            return
        self.failed_in_a_row += 1
        self.last_error = answer.error
        self.tripped = self.tripped or self.failed_in_a_row >= self.give_up_after


class _Loop(Generic[W]):
    """The threads of one ask_each call; the caller's thread reads `answers`."""

    def __init__(self, codes: Sequence[str], ask: Callable[[W, str, ShouldStop], StockBars],
                 should_stop: ShouldStop, give_up_after: int) -> None:
        self.todo: queue.SimpleQueue[str] = queue.SimpleQueue()
        for code in codes:
            self.todo.put(code)
        self.answers: queue.SimpleQueue[Answer | None] = queue.SimpleQueue()
        self.ask = ask
        self.should_stop = should_stop
        self.breaker = _Breaker(give_up_after)
        self.lock = threading.Lock()
        self.halt = threading.Event()

    def stopping(self) -> bool:
        return self.halt.is_set() or self.should_stop()

    def work(self, worker: W) -> None:
        try:
            while not self.stopping():
                try:
                    code = self.todo.get_nowait()
                except queue.Empty:
                    return
                answer = self._one(worker, code)
                if answer is None:
                    return
                with self.lock:
                    self.breaker.record(answer)
                    if self.breaker.tripped:
                        self.halt.set()
                self.answers.put(answer)
        finally:
            self.answers.put(None)

    def _one(self, worker: W, code: str) -> Answer | None:
        try:
            return self.ask(worker, code, self.stopping)
        except CallCancelled:
            return None
        except UpstreamFailure as exc:
            if exc.kind in ("rejected", "unavailable"):
                self.halt.set()
            return StockFailure(code, str(exc))
        except SourceError as exc:
            return StockFailure(code, str(exc))
        except Exception as exc:  # noqa: BLE001 - the loop boundary: an answer we could not map is this stock's failure
            return StockFailure(code, f"{type(exc).__name__}: {exc}")


def ask_each(codes: Sequence[str], workers: Sequence[W], ask: Callable[[W, str, ShouldStop], StockBars],
             should_stop: ShouldStop, *, give_up_after: int) -> Iterator[Answer]:
    """Ask each code once (`ask(worker, code, should_stop)`, one worker per thread); yield every answer.

    A failed ask is a StockFailure; once `give_up_after` asks in a row failed (or one was
    rejected for good), the codes not yet asked are StockFailures too, without a request.
    A cancel ends the iteration early, yielding nothing more.
    """
    loop: _Loop[W] = _Loop(codes, ask, should_stop, give_up_after)
    threads = [threading.Thread(target=loop.work, args=(worker,), name=f"stock-ask-{i}", daemon=True)
               for i, worker in enumerate(workers[:max(1, min(len(workers), len(codes)))])]
    for thread in threads:
        thread.start()
    try:
        running = len(threads)
        while running:
            answer = loop.answers.get()
            if answer is None:
                running -= 1
            elif not should_stop():
                yield answer
        if should_stop():
            return
        reason = (f"not asked: the {loop.breaker.failed_in_a_row} stocks before it failed in a row "
                  f"(last: {loop.breaker.last_error})")
        while True:
            try:
                yield StockFailure(loop.todo.get_nowait(), reason)
            except queue.Empty:
                return
    finally:
        loop.halt.set()
        for thread in threads:
            thread.join()


def number(value: object) -> float | None:
    """A finite float, or None for None, '', '-', NaN, infinities and anything else that is not a number."""
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def ask_each_day(days: Sequence[dt.date], ask: Callable[[dt.date], DayBatch | DayFailure], give_up_after: int,
                 stop: ShouldStop) -> DayStream:
    """The by_day plan of a remote source: each day asked in order, a failed request a DayFailure; once
    `give_up_after` days in a row failed, the rest are not asked (each a DayFailure saying why), so a dead
    upstream costs a bounded time. A refusal for good (SourceRejected) ends the run; a cancel ends the loop."""
    failed_in_a_row, last_error = 0, ""
    for day in days:
        if stop():
            return
        if failed_in_a_row >= give_up_after:
            yield day, DayFailure(f"not asked: the {failed_in_a_row} days before it failed (last: {last_error})")
            continue
        try:
            result = ask(day)
        except CallCancelled:
            return
        except SourceRejected:
            raise
        except SourceError as exc:
            result = DayFailure(str(exc))
        failed_in_a_row, last_error = (failed_in_a_row + 1, result.error) if isinstance(result, DayFailure) else (0, "")
        yield day, result


def shares(reported: float | None, amount: float | None, low: float | None, high: float | None,
           lots: bool) -> int | None:
    """Volume in shares from a volume reported in lots (`lots`) or shares, checked against the price.

    amount / volume must fall within [low, high] (a tolerance of 1% of the range, at least
    a cent): where the reported unit fails that and the other unit passes, the other is
    right (an upstream that reports one board in shares and the rest in lots).
    """
    if reported is None:
        return None
    primary, other = (reported * 100, reported) if lots else (reported, reported * 100)
    if primary > 0 and amount and low is not None and high is not None:
        slack = max(0.01, 0.01 * (high - low))
        if not low - slack <= amount / primary <= high + slack and low - slack <= amount / other <= high + slack:
            primary = other
    return int(round(primary))


class FactorSeries:
    """A backward-adjustment factor series: (date it takes effect, factor), base 1.0 on `base_day`."""

    def __init__(self, steps: Sequence[tuple[dt.date, float]], base_day: dt.date | None = None) -> None:
        ordered = sorted(steps)
        self._days = [day for day, _ in ordered]
        self._values = [value for _, value in ordered]
        base = self._raw(base_day) if base_day is not None else (self._values[0] if self._values else None)
        self._base = base if base and math.isfinite(base) and base > 0 else None

    def __bool__(self) -> bool:
        return self._base is not None

    def on(self, day: dt.date) -> float | None:
        """The factor in effect on `day`, relative to the base day (None for an empty series)."""
        raw = self._raw(day)
        return None if raw is None or self._base is None else raw / self._base

    def _raw(self, day: dt.date) -> float | None:
        if not self._values:
            return None
        index = bisect_right(self._days, day) - 1
        return self._values[max(index, 0)]  # before the first step: the first step's value


def derived_pre_close(previous_close: float | None, previous_factor: float | None,
                      factor: float | None) -> float | None:
    """The exchange's reference price from the previous close and the factors: rounded to the tick."""
    if previous_close is None or previous_factor is None or not factor:
        return None
    return round(previous_close * previous_factor / factor + 1e-9, 2)
