"""The interface every data source implements, and the row shape it yields.

A source turns a window of trading days into daily_bars rows, one batch per day, already in
the contract's units (prices and amount in yuan, volume in shares, turnover and pct_change in
percent). It never touches the database: sync.py owns writing. A day that cannot be fetched
is yielded as a DayFailure (the run goes on); an exception from `fetch_window` means the
whole window failed and sync.py retries it with backoff.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")  # the exchanges' clock

# (code, open, high, low, close, pre_close, volume, amount, turnover, pct_change)
# code is the 6-digit A-share code ("600000"); numeric fields may be None (missing upstream).
Row = tuple[str, float | None, float | None, float | None, float | None, float | None,
            int | None, float | None, float | None, float | None]

COLUMNS = ("code", "open", "high", "low", "close", "pre_close", "volume", "amount", "turnover", "pct_change")


class SourceError(Exception):
    """A fetch that failed; the message names what failed (file and line, URL, code)."""


class SourceUnavailable(Exception):
    """The configured source cannot be used at all (missing extra, bad settings)."""


@dataclass(frozen=True)
class DayFailure:
    """A day the source could not produce; `error` is shown to operators as the day's error."""

    error: str


@dataclass(frozen=True)
class EncodedRows:
    """A day's rows already in PostgreSQL's binary COPY format for daily_bars' columns
    (trade_date, code, open, ..., pct_change): header, tuples, trailer. A source that builds
    its rows column-wise (numpy) hands them over this way and skips per-row encoding."""

    payload: bytes
    count: int


@dataclass(frozen=True)
class StockInfo:
    code: str
    name: str
    exchange: str  # "sh" | "sz" | "bj"


ShouldStop = Callable[[], bool]
DayRows = list[Row] | EncodedRows


class Source(Protocol):
    """What sync.py needs from a source."""

    name: str
    # How many trading days one fetch_window call should cover: 1 for per-day sources, more
    # for per-stock history APIs (one request per stock per window instead of per day).
    window_days: int

    def fetch_window(self, days: Sequence[dt.date], should_stop: ShouldStop) -> Iterator[tuple[dt.date, DayRows | DayFailure]]:
        """Yield (day, rows-or-failure) for each day in `days`, in order, each exactly once.

        `should_stop` returns True once the run is cancelled: check it between requests
        and return early (yielding nothing more) when it does.
        """
        ...

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        """The exchange's open days in [start, end] if this source knows them authoritatively, else None."""
        ...

    def stock_list(self) -> list[StockInfo] | None:
        """All A-share stocks with names if the source knows them, else None."""
        ...

    def requests_for(self, days: Sequence[dt.date]) -> int:
        """Upstream requests the fetch plan makes for these trading days (for benchmarks/README)."""
        ...

    def close(self) -> None:
        ...


def shanghai_now() -> dt.datetime:
    return dt.datetime.now(SHANGHAI)


def import_extra(module: str) -> ModuleType:
    """Import a source's optional library, or raise SourceUnavailable with the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SourceUnavailable(
            f"source '{module}' needs the {module} extra: pip install 'syncd[{module}]' ({type(exc).__name__}: {exc})") from None
