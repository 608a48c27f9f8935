"""The interface every data source implements, and the shapes of what it hands to the sync.

A source turns trading days into daily_bars rows in the contract's units (prices and amount
in yuan, volume in shares, turnover and pct_change in percent; pre_close the exchange's
reference price for the day, 前收盘). It never touches the database: run/syncer.py owns writing,
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
  retries). run/syncer.py stages what arrives and writes each day from the stage; a day's
  `expected` comes from `listed_on(day)` and its `missing` from the failed stocks listed on
  it. `codes` narrows a fetch to some stocks (the missing-data job re-asks only those).

run/syncer.py only ever asks for days that a calendar confirmed as trading (calendar.py): a weekday
past the packaged holiday calendar that neither the source's own calendar (`trading_days`) nor
its `confirms_trading_day` covers is never fetched.

Capabilities are declared on `Source` with defaults (`fetches_in_child`, `reads_ahead`,
`confirms_trading_day`, `attach_request_counter`, `warm_up`), so every source has them and a
caller never probes for one. A source that answers with a dateless
whole-market snapshot must still refuse a day whose session has not closed (`session_closed`)
and a day other than the snapshot's own (a DayFailure saying why).

`should_stop` returns True once the run is cancelled: a source checks it between requests
and returns early (yielding nothing more) when it does. An exception out of a fetch means
the whole fetch failed (run/syncer.py retries with backoff); per-day and per-stock failures are
values, so one bad stock never throws away what was fetched.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")  # the exchanges' clock

# (code, open, high, low, close, pre_close, volume, amount, turnover, pct_change, adj_factor)
# code is the 6-digit A-share code ("600000"); numeric fields may be None (missing upstream).
# adj_factor is the source's own cumulative backward (hfq) factor where it has a factor series
# (base 1.0 on the stock's first trading day), else None: the write path then derives it from
# pre_close (docs/data.md, "Adjusted prices"). A source with a factor series and no exchange
# pre_close gives pre_close None and the write path derives that instead.
Row = tuple[str, float | None, float | None, float | None, float | None, float | None,
            int | None, float | None, float | None, float | None, float | None]

COLUMNS = ("code", "open", "high", "low", "close", "pre_close", "volume", "amount", "turnover", "pct_change")
ROW_FIELDS = (*COLUMNS, "adj_factor")  # a Row's fields; COLUMNS stays the csv header

Plan = Literal["by_day", "by_stock"]


@dataclass(frozen=True)
class ReferencePlan:
    """What reconciling stored days against a source costs, known before anything is fetched
    (reference.py; each source class answers `reference_plan(config, days, stocks)` from its config)."""

    by: Plan                     # by_day: one answer a day; by_stock: one a stock for the whole range
    requests: int                # what the source will send (its own retries of a failed request not counted)
    cost: str                    # how they add up, in words for the operator
    coverage: str | None = None  # a regular expression of the codes the source knows (None: every A-share)


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
    (trade_date, code, open, ..., pct_change, adj_factor): header, tuples, trailer. A source
    that builds its rows column-wise (numpy) hands them over this way and skips per-row
    encoding. They are written as they are: pre_close and adj_factor must already be final
    (the write path derives nothing for them). `suspects`, when given, must hold every row the
    checks could flag (prefilter.suspects computes it from the columns): the others are not judged."""

    payload: bytes | bytearray
    count: int
    # The codes of the rows that might fail a check (prefilter.py); None: not known, every row is judged.
    suspects: frozenset[str] | None = None


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
    listing_date: dt.date | None = None  # where the source knows it (the price-limit checks' first days)


ShouldStop = Callable[[], bool]
# What fetch_days yields, in day order. A generator, so the caller can close it early (a cancel, a
# pass ended by failures in a row) and the source's own cleanup runs at once.
DayStream = Generator[tuple[dt.date, "DayBatch | DayFailure"], None, None]
DayRows = list[Row] | EncodedRows


RequestCounter = Callable[[str], None]  # count(outcome): one upstream request ("ok", "timeout", "error", ...)


class Source:
    """The base of every source (see the module docstring): what run/syncer.py and the daemon ask of one.

    A subclass implements what its plan needs (`fetch_days` for by_day, `fetch_stocks` for by_stock)
    and overrides the capabilities it has; the defaults here are a by_day source's that knows no
    listing counts, no calendar and no names, makes no counted request and needs no warm-up."""

    name: str = "source"
    # The daemon runs this source's fetch_days in its fetch process (sources/fetchproc.py), not in the worker.
    fetches_in_child: bool = False
    # fetch_days already works ahead of its consumer (the fetch process): the by_day plan adds no read-ahead thread.
    reads_ahead: bool = False

    # What one reconciled day costs a source with no upstream (a file, a generated day); see reference_plan.
    reference_unit = "one day read"

    @classmethod
    def reference_plan(cls, config: Any, days: int, stocks: int) -> ReferencePlan:
        """The requests a reconciliation of `days` days and `stocks` stocks costs, from the source's config
        (sources/reference.py): by default one answer a day, counted as one request each (nothing goes upstream)."""
        return ReferencePlan("by_day", days, f"{cls.reference_unit} a day, no upstream, for {days} days")

    def plan(self, days: Sequence[dt.date]) -> Plan:
        """How this run's trading days are best fetched."""
        return "by_day"

    def fetch_days(self, days: Sequence[dt.date], should_stop: ShouldStop) -> DayStream:
        """by_day: yield (day, batch-or-failure) for each day in `days`, in order, each exactly once."""
        raise NotImplementedError(f"{type(self).__name__} fetches by stock only (its plan is never by_day)")

    def fetch_stocks(self, first: dt.date, last: dt.date, should_stop: ShouldStop,
                     codes: Sequence[str] | None = None) -> Iterator[StockBars | StockFailure]:
        """by_stock: one request per stock listed within [first, last] (or per code of `codes`), each once."""
        raise NotImplementedError(f"{type(self).__name__} fetches by day only (its plan is always by_day)")

    def listed_on(self, day: dt.date) -> int | None:
        """How many stocks were listed on `day`, by the source's own list (None where it cannot say)."""
        return None

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        """The exchange's open days in [start, end] if this source knows them authoritatively, else None."""
        return None

    def confirms_trading_day(self, day: dt.date) -> bool:
        """The source's own word for a weekday past the packaged calendar's horizon: True when the source
        itself vouches that `day` traded where no calendar covers it (the demo for its synthetic weekdays,
        csv for a day whose file exists). It must be quick (the control loop asks it) and never touch the
        network; a source with a calendar of its own answers through `trading_days` instead."""
        return False

    def stock_list(self) -> list[StockInfo] | None:
        """All A-share stocks with names if the source knows them (fresh for each run), else None."""
        return None

    @property
    def requests_made(self) -> int | None:
        """Upstream requests made so far, where the source counts them (None: it makes none; a reconciliation
        then counts one a day answered, sources/reference.py)."""
        return None

    def attach_request_counter(self, count: RequestCounter) -> None:
        """The metrics' counter of upstream requests (syncd_source_requests_total), handed over once; a source
        that makes upstream requests calls `count(outcome)` for each."""

    def warm_up(self) -> None:
        """Prepare before the first fetch (the fetch process calls it as it starts, off the worker's clock)."""

    def close(self) -> None:
        """Release what the source holds (library processes, files)."""


def listed_on(source: Source, day: dt.date) -> int | None:
    """The source's count of stocks listed on `day`; None when it cannot say (or its list failed)."""
    try:
        return source.listed_on(day)
    except Exception:  # the count is informative; a day is never lost over it
        return None


def session_closed(day: dt.date, now: dt.datetime | None = None, close: dt.time = dt.time(15, 0)) -> bool:
    """Whether `day`'s session has ended by `now` (Shanghai time): a dateless snapshot is only ever that day's after this."""
    now = (now or shanghai_now()).astimezone(SHANGHAI)
    return day < now.date() or (day == now.date() and now.time() >= close)


def shanghai_now() -> dt.datetime:
    return dt.datetime.now(SHANGHAI)


def require_extra(module: str, extra: str | None = None) -> None:
    """Check that a source's optional library is installed, without importing it in this process
    (it runs in child processes: isolation.py); SourceUnavailable with the pip command if not."""
    if importlib.util.find_spec(module) is None:
        extra = extra or module
        raise SourceUnavailable(f"source '{extra}' needs the {extra} extra: {install_line(extra)}")


def import_extra(module: str) -> ModuleType:
    """Import a source's optional library, or raise SourceUnavailable with the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SourceUnavailable(
            f"source '{module}' needs the {module} extra: {install_line(module)} ({type(exc).__name__}: {exc})") from None


def install_line(extra: str) -> str:
    """How to add an extra to the virtualenv syncd runs from (docs/sources.md): from the syncd checkout."""
    return f"in the syncd checkout, pip install -e '.[{extra}]' (docs/sources.md)"
