"""The interface every data source implements, and the shapes of what it hands to the sync.

A source turns trading days into daily_bars rows in the contract's units (prices and amount
in yuan, volume in shares, turnover and pct_change in percent; pre_close the exchange's
reference price for the day, 前收盘). It never touches the database: sync.py owns writing,
staging and bookkeeping. Every upstream call a source makes has a deadline.

Two fetch plans, chosen by the source for each run (`plan(days)`):

- "by_day" (`fetch_days`): one answer per trading day, in order: a whole-market endpoint
  (Tushare `daily`, baostock `query_daily_history_k_AStock`, akshare's snapshot for today),
  a file a day (csv), or a generated day (demo). Each day comes as a `DayBatch` (the rows,
  how many stocks the source says were listed that day, and which stocks' requests failed)
  or a `DayFailure` (nothing usable for that day).
- "by_stock" (`fetch_stocks`): one request per stock for the whole range (akshare
  `stock_zh_a_hist`, baostock `query_history_k_data_plus`), each stock asked once per run,
  whatever the range's length. Each stock comes as `StockBars` (its rows, by day; a day with
  no row is a suspension) or `StockFailure` (its request failed after the source's own
  retries). sync.py stages what arrives and writes each day from the stage; a day's
  `expected` comes from `listed_on(day)` and its `missing` from the failed stocks listed on
  it. `codes` narrows a fetch to some stocks (the missing-data job re-asks only those).

`should_stop` returns True once the run is cancelled: a source checks it between requests
and returns early (yielding nothing more) when it does. An exception out of a fetch means
the whole fetch failed (sync.py retries with backoff); per-day and per-stock failures are
values, so one bad stock never throws away what was fetched.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")  # the exchanges' clock

# (code, open, high, low, close, pre_close, volume, amount, turnover, pct_change)
# code is the 6-digit A-share code ("600000"); numeric fields may be None (missing upstream).
Row = tuple[str, float | None, float | None, float | None, float | None, float | None,
            int | None, float | None, float | None, float | None]

COLUMNS = ("code", "open", "high", "low", "close", "pre_close", "volume", "amount", "turnover", "pct_change")

Plan = Literal["by_day", "by_stock"]


class SourceError(Exception):
    """A fetch that failed; the message names what failed (file and line, URL, code)."""


class SourceUnavailable(Exception):
    """The configured source cannot be used at all (missing extra, bad settings)."""


class SourceRejected(SourceError):
    """Upstream refused us for good (a bad token, no permission for a required dataset): retrying
    cannot help; the run fails with this message, which names the reason (never the token)."""


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
class DayBatch:
    """One trading day from a by_day source.

    `expected`: stocks the source reports as listed that day (None where it cannot say, e.g.
    csv). `missing`: codes whose request failed after the retries (their stored rows stay;
    the day is then `incomplete` and the missing-data job asks again). A stock listed but
    absent from `rows` and not in `missing` was suspended that day."""

    rows: list[Row] | EncodedRows
    expected: int | None = None
    missing: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class StockBars:
    """One stock's answer for the run's range from a by_stock source: its rows by day."""

    code: str
    bars: list[tuple[dt.date, Row]]


@dataclass(frozen=True)
class StockFailure:
    """A stock whose request failed after the source's retries; `error` names the request."""

    code: str
    error: str


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

    def close(self) -> None:
        ...


class PlannedSource(Protocol):
    """The fetch interface sync.py moves to (see the module docstring); `fetch_window` above goes then."""

    name: str

    def plan(self, days: Sequence[dt.date]) -> Plan:
        """How this run's trading days are best fetched."""
        ...

    def fetch_days(self, days: Sequence[dt.date], should_stop: ShouldStop) -> Iterator[tuple[dt.date, DayBatch | DayFailure]]:
        """by_day: yield (day, batch-or-failure) for each day in `days`, in order, each exactly once."""
        ...

    def fetch_stocks(self, first: dt.date, last: dt.date, should_stop: ShouldStop,
                     codes: Sequence[str] | None = None) -> Iterator[StockBars | StockFailure]:
        """by_stock: one request per stock listed within [first, last] (or per code of `codes`), each once."""
        ...

    def listed_on(self, day: dt.date) -> int | None:
        """How many stocks were listed on `day`, by the source's own list (None where it cannot say)."""
        ...

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        """The exchange's open days in [start, end] if this source knows them authoritatively, else None."""
        ...

    def stock_list(self) -> list[StockInfo] | None:
        """All A-share stocks with names if the source knows them (fresh for each run), else None."""
        ...

    def close(self) -> None:
        ...


def shanghai_now() -> dt.datetime:
    return dt.datetime.now(SHANGHAI)


def require_extra(module: str, extra: str | None = None) -> None:
    """Check that a source's optional library is installed, without importing it in this process
    (it runs in child processes: isolation.py); SourceUnavailable with the pip command if not."""
    if importlib.util.find_spec(module) is None:
        extra = extra or module
        raise SourceUnavailable(f"source '{extra}' needs the {extra} extra: pip install 'syncd[{extra}]'")


def import_extra(module: str) -> ModuleType:
    """Import a source's optional library, or raise SourceUnavailable with the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SourceUnavailable(
            f"source '{module}' needs the {module} extra: pip install 'syncd[{module}]' ({type(exc).__name__}: {exc})") from None
