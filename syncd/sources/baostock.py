"""The baostock source: daily A-share bars (Shanghai and Shenzhen) through the baostock extra.

Owns the fetch plan and the mapping of baostock's string records onto rows in the contract's
units (volume in shares, amount in yuan, turn and pctChg in percent, preclose the exchange's
reference price: nothing to convert; adj_factor is left to the data layer, which derives it
from preclose). baostock runs only in a child process (isolation.py, baostock_calls.py) whose
socket times out, treats an empty read as a closed connection, and whose session is one
login: the child ends after any failure, at the end of every fetch and after a minute idle,
so every run, and every retry after an error, logs in afresh.

- by_day (baostock >= 0.9.3): one `query_daily_history_k_AStock(date)` per trading day, the
  whole market. It is undocumented: when it answers nothing for a day the calendar says
  traded, or answers for under 90% of the stocks listed that day (`query_stock_basic`'s
  listing and delisting dates), the stocks it left out are asked one by one for that day
  (`query_history_k_data_plus`); if the first 20 of them have no bar either, the day is not
  published yet and fails.
- by_stock (older baostock): each stock listed within the range once, for the whole range.

Suspended days (tradestatus 0) and records without prices have no row; empty fields are NULL.

As a reconciliation's reference (`reference=True`, reference.py) it asks no listings: by_day
takes the whole-market answer as it is (one query a day), by_stock asks the given codes (one
a stock); each session adds a login and a logout message (`reference_plan`). It knows the
Shanghai and Shenzhen A-shares only (`REFERENCE_COVERAGE`).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ..config import BaostockConfig
from ..logs import Event, get_logger
from .base import (
    DayBatch,
    DayFailure,
    DayStream,
    Plan,
    ReferencePlan,
    Row,
    ShouldStop,
    Source,
    SourceError,
    StockBars,
    StockFailure,
    StockInfo,
    require_extra,
)
from .isolation import CallCancelled, LibraryProcess, UpstreamFailure
from .ratelimit import Memo, Politeness, Upstream
from .stockplan import Listing, ask_each, ask_each_day, count_listed, number

HISTORY_FIELDS = "date,code,open,high,low,close,preclose,volume,amount,turn,tradestatus,pctChg"
MARKET_DAILY = "query_daily_history_k_AStock"  # baostock >= 0.9.3
MIN_COVERAGE = 0.9        # a whole-market answer for fewer of the listed stocks is completed stock by stock
UNPUBLISHED_PROBE = 20    # stocks asked with no bar at all: the day is not published yet
SESSION_IDLE_S = 60.0     # a session idle this long is ended before the next call (a fresh login)
LISTING_MAX_AGE_S = 3600.0
_A_SHARE = re.compile(r"(?:sh\.6[08]|sz\.(?:00|30))\d{4}")  # no indexes, B-shares, funds; no Beijing
REFERENCE_COVERAGE = "^(6[08]|00|30)[0-9]{4}$"  # the plain codes _A_SHARE admits (a reconciliation compares only these)

Record = dict[str, str]


def day_of(text: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat((text or "")[:10])
    except ValueError:
        return None


def bar(record: Record) -> tuple[dt.date, Row] | None:
    """One daily-k record -> (day, Row); None for non-A-shares, suspended days and missing prices."""
    code, day = record.get("code", ""), day_of(record.get("date"))
    open_price, close = number(record.get("open")), number(record.get("close"))
    if (not _A_SHARE.fullmatch(code) or day is None or record.get("tradestatus") == "0"
            or open_price is None or close is None):
        return None
    volume = number(record.get("volume"))
    return day, (code[3:], open_price, number(record.get("high")), number(record.get("low")), close,
                 number(record.get("preclose")), None if volume is None else int(round(volume)),
                 number(record.get("amount")), number(record.get("turn")), number(record.get("pctChg")), None)


def listing(record: Record) -> Listing | None:
    """A query_stock_basic record -> Listing if it is an A-share stock (type 1)."""
    code = record.get("code", "")
    if record.get("type") != "1" or not _A_SHARE.fullmatch(code):
        return None
    return Listing(code=code[3:], name=record.get("code_name", "").strip() or code[3:], exchange=code[:2],
                   listed=day_of(record.get("ipoDate")), delisted=day_of(record.get("outDate")))


def baostock_code(code: str) -> str:
    return ("sh." if code.startswith("6") else "sz.") + code


def records(answer: tuple[list[str], list[list[str]]]) -> list[Record]:
    fields, rows = answer
    return [dict(zip(fields, row)) for row in rows]


def has_market_daily() -> bool:
    try:
        version = tuple(int(part) for part in importlib.metadata.version("baostock").split(".")[:3])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return version >= (0, 9, 3)


class BaostockSource(Source):
    """Daily bars from baostock; see the module docstring for the plans, the session and failures."""

    name = "baostock"

    def __init__(self, config: BaostockConfig, *, market_daily: bool | None = None, reference: bool = False,
                 **timing: Any) -> None:
        require_extra("baostock")
        self._config = config
        self._reference = reference  # a reconciliation's other opinion: bars only, no listings
        self._sessions = 0  # logins and logouts sent (each a message to the server, like a query)
        self.market_daily = config.market_daily and (has_market_daily() if market_daily is None else market_daily)
        self._closing = threading.Event()
        self._log = get_logger(source=self.name)
        politeness = Politeness(requests_per_second=config.requests_per_second, jitter=config.jitter,
                                attempts=config.request_retries + 1, backoff_s=config.request_retry_backoff_s)
        self._upstream = Upstream("baostock", politeness, on_pause=self._paused, **timing)
        self._process = LibraryProcess("syncd.sources.baostock_calls",
                                       {"request_timeout_s": config.request_timeout_s, "server": config.server},
                                       label="baostock")
        self._listings: Memo[list[Listing]] = Memo(LISTING_MAX_AGE_S)
        if config.adjustflag != "3":
            self._log.warning(Event.SOURCE_SETTING_IGNORED, key="source.baostock.adjustflag", value=config.adjustflag,
                              reason="stored prices are raw; adjusted prices are the daily_bars_qfq/hfq views")

    # --- the fetch interface ----------------------------------------------------------------
    def plan(self, days: Sequence[dt.date]) -> Plan:
        return "by_day" if self.market_daily else "by_stock"

    @classmethod
    def reference_plan(cls, config: BaostockConfig, days: int, stocks: int) -> ReferencePlan:
        if config.market_daily and has_market_daily():
            return ReferencePlan("by_day", days + 2, f"1 query a day for {days} days, a login and a logout",
                                 REFERENCE_COVERAGE)
        return ReferencePlan("by_stock", stocks + 2, f"1 query a stock for {stocks} stocks, a login and a logout",
                             REFERENCE_COVERAGE)

    @property
    def requests_made(self) -> int:
        return self._upstream.calls + self._sessions

    def fetch_days(self, days: Sequence[dt.date], should_stop: ShouldStop) -> DayStream:
        stop = self._stopper(should_stop)
        try:
            yield from ask_each_day(days, lambda day: self._market_day(day, stop), self._config.give_up_after, stop)
        finally:
            self._end_session()

    def fetch_stocks(self, first: dt.date, last: dt.date, should_stop: ShouldStop,
                     codes: Sequence[str] | None = None) -> Iterator[StockBars | StockFailure]:
        stop = self._stopper(should_stop)
        try:
            wanted = sorted(set(codes)) if codes is not None else [
                item.code for item in self._all_listings(stop) if item.trades_within(first, last)]

            def ask(_: None, code: str, stopping: ShouldStop) -> StockBars:
                return StockBars(code, self._history(code, first, last, stopping))

            yield from ask_each(wanted, [None], ask, stop, give_up_after=self._config.give_up_after)
        except CallCancelled:
            return
        finally:
            self._end_session()

    def listed_on(self, day: dt.date) -> int | None:
        return count_listed(self._all_listings(self._closing.is_set), day)

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        """Open days from query_trade_dates; None if its calendar does not reach both ends."""
        answer = self._query("query_trade_dates", start_date=start.isoformat(), end_date=end.isoformat(),
                             stop=self._closing.is_set)
        is_open = {day: record.get("is_trading_day") == "1"
                   for record in records(answer) if (day := day_of(record.get("calendar_date"))) is not None}
        if start not in is_open or end not in is_open:
            return None
        return sorted(day for day, open_ in is_open.items() if open_ and start <= day <= end)

    def stock_list(self) -> list[StockInfo]:
        """Listed A-shares from query_stock_basic, asked afresh (one run, one fresh list)."""
        self._listings.forget()
        return [item.info() for item in self._all_listings(self._closing.is_set) if item.delisted is None]

    def close(self) -> None:
        self._closing.set()
        self._process.close()

    # --- plans ------------------------------------------------------------------------------
    def _market_day(self, day: dt.date, stop: ShouldStop) -> DayBatch | DayFailure:
        if self._reference:
            return self._market_day_as_is(day, stop)
        listings = self._all_listings(stop)
        listed = {item.code for item in listings if item.listed_on(day)}
        rows: dict[str, Row] = {}
        answered: set[str] = set()
        for record in records(self._query(MARKET_DAILY, day.isoformat(), stop=stop)):
            if _A_SHARE.fullmatch(record.get("code", "")) and day_of(record.get("date")) == day:
                answered.add(record["code"][3:])
                if (item := bar(record)) is not None:
                    rows[item[1][0]] = item[1]
        if len(answered & listed) >= MIN_COVERAGE * len(listed) and rows:
            return DayBatch(rows=list(rows.values()), expected=len(listed))
        absent = sorted(listed - answered)
        self._log.info(Event.SOURCE_FALLBACK, date=day.isoformat(), answered=len(answered), listed=len(listed),
                       asking=len(absent))
        return self._by_stock_day(day, absent, rows, len(listed), stop)

    def _market_day_as_is(self, day: dt.date, stop: ShouldStop) -> DayBatch | DayFailure:
        """The whole-market answer alone (a reconciliation compares what it says, absences included)."""
        rows = [item[1] for record in records(self._query(MARKET_DAILY, day.isoformat(), stop=stop))
                if day_of(record.get("date")) == day and (item := bar(record)) is not None]
        return DayBatch(rows=rows) if rows else DayFailure(f"baostock has no bars for {day} (its whole-market answer was empty)")

    def _by_stock_day(self, day: dt.date, codes: list[str], rows: dict[str, Row], listed: int,
                      stop: ShouldStop) -> DayBatch | DayFailure:
        missing: set[str] = set()
        asked_without_bar = 0

        def ask(_: None, code: str, stopping: ShouldStop) -> StockBars:
            return StockBars(code, self._history(code, day, day, stopping))

        for answer in ask_each(codes, [None], ask, stop, give_up_after=self._config.give_up_after):
            if isinstance(answer, StockFailure):
                missing.add(answer.code)
                continue
            for _, row in answer.bars:
                rows[row[0]] = row
            asked_without_bar += not answer.bars
            if not rows and asked_without_bar >= UNPUBLISHED_PROBE:
                return DayFailure(f"baostock has no bars for {day} yet (the whole-market answer was empty and "
                                  f"{asked_without_bar} stocks asked one by one had none): published in the evening")
        if stop():
            raise CallCancelled("cancelled")
        if not rows:
            return DayFailure(f"baostock has no bars for {day}" + (f" ({len(missing)} stocks failed)" if missing else ""))
        return DayBatch(rows=list(rows.values()), expected=listed, missing=frozenset(missing))

    def _history(self, code: str, first: dt.date, last: dt.date, stop: ShouldStop) -> list[tuple[dt.date, Row]]:
        answer = self._query("query_history_k_data_plus", baostock_code(code), HISTORY_FIELDS,
                             start_date=first.isoformat(), end_date=last.isoformat(), frequency="d", adjustflag="3",
                             stop=stop)
        return [item for record in records(answer) if (item := bar(record)) is not None and first <= item[0] <= last]

    def _all_listings(self, stop: ShouldStop) -> list[Listing]:
        return self._listings.get(lambda: self._fetch_listings(stop))

    def _fetch_listings(self, stop: ShouldStop) -> list[Listing]:
        found = [item for record in records(self._query("query_stock_basic", stop=stop))
                 if (item := listing(record)) is not None]
        if not found:
            raise SourceError("baostock query_stock_basic returned no A-share stocks")
        return sorted(found, key=lambda item: item.code)

    # --- the session ------------------------------------------------------------------------
    def _query(self, method: str, *args: str, stop: ShouldStop, **kwargs: str) -> tuple[list[str], list[list[str]]]:
        """One library call, paced and retried; the session ends after any failure (a fresh login next)."""
        shown = [arg for arg in args if arg != HISTORY_FIELDS] + [f"{key}={value}" for key, value in kwargs.items()
                                                                  if key not in ("frequency", "adjustflag")]
        what = f"baostock {method}({', '.join(shown)})"

        def once() -> tuple[list[str], list[list[str]]]:
            if self._process.alive and self._process.idle_s > SESSION_IDLE_S:
                self._process.discard()
            if not self._process.alive:
                self._sessions += 1  # the new process logs in first
            try:
                return self._process.call("query", method, args, kwargs, deadline_s=self._config.call_deadline_s,
                                          what=what, should_stop=stop)
            except UpstreamFailure:
                self._process.discard()
                raise

        return self._upstream.ask(once, what, stop)

    def _end_session(self) -> None:
        if not self._process.alive:
            return
        self._sessions += 1
        try:
            self._process.call("logout", deadline_s=5.0, what="baostock logout")
        except (UpstreamFailure, CallCancelled):
            pass
        finally:
            self._process.discard()

    def _paused(self, seconds: float, reason: str) -> None:
        self._log.warning(Event.SOURCE_PAUSED, seconds=seconds, reason=reason)

    def _stopper(self, should_stop: ShouldStop) -> ShouldStop:
        return lambda: self._closing.is_set() or should_stop()
