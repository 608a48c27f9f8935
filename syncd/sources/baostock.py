"""The baostock source: daily A-share bars (Shanghai and Shenzhen) through the optional baostock library.

Owns the mapping of baostock's string records onto Row tuples in the contract's units, the
fetch plan and the library's one session. Plan: with baostock >= 0.9.3 and unadjusted prices
(adjustflag "3"), one `query_daily_history_k_AStock(date)` per trading day brings the whole
market (window_days is then 1; a day answering for under 90% of the listed stocks is
incomplete and fails); otherwise one `query_history_k_data_plus` per stock per
window (window_days trading days, regrouped by day here, memory bounded by the window) over
the stocks listed during the window (`query_stock_basic`, fetched at most once a day).

The library keeps one global socket and is not thread-safe: the source logs in lazily once,
serialises every call (login, queries, paging, logout) with one lock, paces them with a
requests-per-second limiter, re-logs in after a failed call and logs out in close(). Use one
BaostockSource per process.

Failure policy: a request that still fails after its retries raises SourceError from
`fetch_window` (sync.py retries the window with backoff). A day is a DayFailure only when
baostock has no bar of any stock for it (not published yet: baostock publishes a day's bars
in the evening, or not a trading day) or its whole-market answer is incomplete. Suspended stocks (tradestatus 0) and records without
prices have no row; empty fields become None. `should_stop` is checked before every request.
The library is imported when the source is built; a missing extra raises SourceUnavailable.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..config import BaostockConfig
from .base import SHANGHAI, DayFailure, Row, ShouldStop, SourceError, StockInfo, import_extra, shanghai_now
from .ratelimit import DailyCache, RateLimiter, call_with_retries

# volume is in shares, amount in yuan, turn and pctChg in percent: no conversion needed.
HISTORY_FIELDS = "date,code,open,high,low,close,preclose,volume,amount,turn,tradestatus,pctChg"
MARKET_DAILY = "query_daily_history_k_AStock"  # baostock >= 0.9.3
MIN_COVERAGE = 0.9  # a whole-market day answering for fewer of the listed stocks is incomplete
# A-share stocks: Shanghai 60xxxx/68xxxx, Shenzhen 00xxxx/30xxxx (no indexes, B-shares, funds).
_A_SHARE = re.compile(r"(?:sh\.6[08]|sz\.(?:00|30))\d{4}")

Record = dict[str, str]
DayResults = Iterator[tuple[dt.date, list[Row] | DayFailure]]


@dataclass(frozen=True)
class Listing:
    """One query_stock_basic stock: `code` in baostock form ("sh.600000")."""

    code: str
    name: str
    ipo: dt.date | None
    out: dt.date | None
    listed: bool

    def trades_within(self, first: dt.date, last: dt.date) -> bool:
        return self.ipo is not None and self.ipo <= last and (self.out is None or self.out >= first)


def number(text: str | None) -> float | None:
    """'9.43' -> 9.43; '' / None / junk / NaN -> None."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def integer(text: str | None) -> int | None:
    value = number(text)
    return None if value is None else int(round(value))


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
    return day, (code[3:], open_price, number(record.get("high")), number(record.get("low")), close,
                 number(record.get("preclose")), integer(record.get("volume")), number(record.get("amount")),
                 number(record.get("turn")), number(record.get("pctChg")))


def bars_by_day(records: list[Record], wanted: set[dt.date]) -> dict[dt.date, list[Row]]:
    by_day: dict[dt.date, list[Row]] = {day: [] for day in wanted}
    for record in records:
        item = bar(record)
        if item is not None and item[0] in by_day:
            by_day[item[0]].append(item[1])
    return by_day


def listing(record: Record) -> Listing | None:
    """A query_stock_basic record -> Listing if it is an A-share stock (type 1)."""
    code = record.get("code", "")
    if record.get("type") != "1" or not _A_SHARE.fullmatch(code):
        return None
    return Listing(code=code, name=record.get("code_name", "").strip(), ipo=day_of(record.get("ipoDate")),
                   out=day_of(record.get("outDate")), listed=record.get("status") == "1")


def read_result(result: Any, what: str) -> list[Record]:
    """Drain a baostock ResultData (next() pages on its own) into dicts keyed by its fields."""
    if result is None:
        raise SourceError(f"{what}: the library returned no result (bad arguments?)")
    records: list[Record] = []
    while result.error_code == "0" and result.next():
        records.append(dict(zip(result.fields, result.get_row_data(), strict=True)))
    if result.error_code != "0":
        raise SourceError(f"{what}: error {result.error_code}: {result.error_msg}")
    return records



class BaostockSource:
    """Daily bars from baostock; see the module docstring for the plan, session and failures."""

    name = "baostock"

    def __init__(self, config: BaostockConfig, *, library: ModuleType | None = None,
                 clock: Callable[[], dt.datetime] | None = None, sleep: Callable[[float], None] = time.sleep,
                 limiter: RateLimiter | None = None) -> None:
        self._bs = library if library is not None else import_extra("baostock")
        self._config = config
        self.market_daily = config.market_daily and config.adjustflag == "3" and hasattr(self._bs, MARKET_DAILY)
        self.window_days = 1 if self.market_daily else config.window_days
        self._now = clock or shanghai_now
        self._sleep = sleep
        self._limiter = limiter or RateLimiter(config.requests_per_second, sleep=sleep)
        self._lock = threading.Lock()  # one library call at a time, login and logout included
        self._logged_in = False
        self._listings: DailyCache[list[Listing]] = DailyCache(self._today)

    def fetch_window(self, days: Sequence[dt.date], should_stop: ShouldStop) -> DayResults:
        if not days:
            return
        if self.market_daily:
            yield from self._fetch_market_daily(days, should_stop)
        else:
            yield from self._fetch_per_stock(days, should_stop)

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        """Open days from query_trade_dates; None if its calendar does not reach both ends."""
        records = self._query("query_trade_dates", start_date=start.isoformat(), end_date=end.isoformat())
        is_open = {day: record.get("is_trading_day") == "1"
                   for record in records if (day := day_of(record.get("calendar_date"))) is not None}
        if start not in is_open or end not in is_open:
            return None
        return sorted(day for day, open_ in is_open.items() if open_ and start <= day <= end)

    def stock_list(self) -> list[StockInfo]:
        """Listed A-shares from query_stock_basic (fetched once a day); SourceError if it cannot be fetched."""
        return [StockInfo(code=item.code[3:], name=item.name, exchange=item.code[:2])
                for item in self._all_listings() if item.listed]

    def requests_for(self, days: Sequence[dt.date]) -> int:
        """One per day (market-daily) or one per stock listed in each window (per-stock), plus the stock list."""
        if not days:
            return 0
        if self.market_daily:
            return len(days) + 1
        windows = [days[i:i + self.window_days] for i in range(0, len(days), self.window_days)]
        return 1 + sum(len(self._codes_within(min(window), max(window))) for window in windows)

    def close(self) -> None:
        with self._lock:
            if not self._logged_in:
                return
            try:
                self._bs.logout()
            finally:
                self._logged_in = False

    def _today(self) -> dt.date:
        return self._now().astimezone(SHANGHAI).date()

    def _fetch_market_daily(self, days: Sequence[dt.date], should_stop: ShouldStop) -> DayResults:
        for day in days:
            if should_stop():
                return
            listed = len(self._codes_within(day, day))
            records = self._query(MARKET_DAILY, day.isoformat())
            yield day, _market_day_result(day, records, listed)

    def _fetch_per_stock(self, days: Sequence[dt.date], should_stop: ShouldStop) -> DayResults:
        first, last = min(days), max(days)
        by_day: dict[dt.date, list[Row]] = {day: [] for day in days}
        for code in self._codes_within(first, last):
            if should_stop():
                return
            records = self._query("query_history_k_data_plus", code, HISTORY_FIELDS, start_date=first.isoformat(),
                                  end_date=last.isoformat(), frequency="d", adjustflag=self._config.adjustflag)
            for day, rows in bars_by_day(records, set(days)).items():
                by_day[day].extend(rows)
        for day in days:
            yield day, _day_result(day, by_day[day])

    def _codes_within(self, first: dt.date, last: dt.date) -> list[str]:
        return [item.code for item in self._all_listings() if item.trades_within(first, last)]

    def _all_listings(self) -> list[Listing]:
        return self._listings.get(self._fetch_listings)

    def _fetch_listings(self) -> list[Listing]:
        found = [item for record in self._query("query_stock_basic") if (item := listing(record)) is not None]
        if not found:
            raise SourceError("baostock query_stock_basic returned no A-share stocks")
        return sorted(found, key=lambda item: item.code)

    def _query(self, method: str, *args: str, **kwargs: str) -> list[Record]:
        """One library call under the session lock, paced and retried; SourceError when it keeps failing."""
        shown = [arg for arg in args if arg != HISTORY_FIELDS] + [f"{key}={value}" for key, value in kwargs.items()]
        what = f"baostock {method}({', '.join(shown)})"
        with self._lock:
            return call_with_retries(lambda: self._query_once(method, args, kwargs, what), what=what,
                                     attempts=self._config.request_retries + 1,
                                     backoff_s=self._config.request_retry_backoff_s, sleep=self._sleep)

    def _query_once(self, method: str, args: tuple[str, ...], kwargs: dict[str, str], what: str) -> list[Record]:
        succeeded = False
        try:
            self._limiter.acquire()
            self._login()
            records = read_result(getattr(self._bs, method)(*args, **kwargs), what)
            succeeded = True
            return records
        finally:
            if not succeeded:
                self._logged_in = False  # the session may be gone: log in afresh on the next attempt

    def _login(self) -> None:
        if self._logged_in:
            return
        result = self._bs.login()
        if result is None or result.error_code != "0":
            detail = "no reply" if result is None else f"error {result.error_code}: {result.error_msg}"
            raise SourceError(f"baostock login: {detail}")
        self._set_socket_timeout()
        self._logged_in = True

    def _set_socket_timeout(self) -> None:
        """baostock's socket has no timeout, so a silent server would hang the worker forever."""
        context = getattr(getattr(self._bs, "common", None), "context", None)
        sock = getattr(context, "default_socket", None)
        if sock is not None and hasattr(sock, "settimeout"):
            sock.settimeout(self._config.request_timeout_s)


def _market_day_result(day: dt.date, records: list[Record], listed: int) -> list[Row] | DayFailure:
    """A whole-market answer is used only if it covers most stocks listed that day."""
    answered = {record["code"] for record in records
                if _A_SHARE.fullmatch(record.get("code", "")) and day_of(record.get("date")) == day}
    if answered and len(answered) < MIN_COVERAGE * listed:
        return DayFailure(f"baostock answered for {len(answered)} of the {listed} stocks listed on {day}: "
                          "incomplete, try again later")
    return _day_result(day, bars_by_day(records, {day})[day])


def _day_result(day: dt.date, rows: list[Row]) -> list[Row] | DayFailure:
    if not rows:
        return DayFailure(f"baostock has no bars for {day} (published in the evening of the day; or not a trading day)")
    return rows
