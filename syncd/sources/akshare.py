"""The akshare source: daily A-share bars from Eastmoney through the optional akshare library.

Owns the mapping of akshare's frames onto Row tuples in the contract's units and the fetch
plan. A window of trading days costs one `stock_zh_a_hist` request per stock (all days at
once, regrouped by day here, memory bounded by the window) plus one `stock_info_a_code_name`
a day; a window of only today, after the close (15:30), costs one `stock_zh_a_spot_em`
snapshot for the whole market. Requests run on `concurrency` threads behind one shared
`requests_per_second` limiter, each with a few retries of its own.

Failure policy: a request that still fails after its retries raises SourceError from
`fetch_window` (the window is incomplete; sync.py retries the whole window with backoff).
A day is yielded as DayFailure only when it cannot be produced at all: its session has not
closed yet, or upstream has no bar of any stock for it. Suspended stocks have no row.
`should_stop` is checked before every request (also on the worker threads).

akshare is imported when the source is built, never at module import; a missing extra raises
SourceUnavailable with the pip command. This module never touches the database.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from types import ModuleType
from typing import Any

from ..config import AkshareConfig
from .base import SHANGHAI, DayFailure, Row, ShouldStop, SourceError, StockInfo, import_extra, shanghai_now
from .ratelimit import DailyCache, RateLimiter, call_with_retries

MARKET_CLOSE = dt.time(15, 30)  # STAR/ChiNext after-hours fixed-price trading ends 15:30
# stock_zh_a_hist: 成交量 in lots of 100 shares; 涨跌额 = close - pre_close.
HIST_COLUMNS = ("日期", "开盘", "最高", "最低", "收盘", "涨跌额", "成交量", "成交额", "换手率", "涨跌幅")
# stock_zh_a_spot_em: 成交量 in lots; 昨收 is pre_close; 最新价 is the close after 15:00.
SPOT_COLUMNS = ("代码", "今开", "最高", "最低", "最新价", "昨收", "成交量", "成交额", "换手率", "涨跌幅")
_CODE = re.compile(r"(?:(?:sh|sz|bj)\.?)?(\d{6})(?:\.(?:sh|sz|bj))?", re.IGNORECASE)

Clock = Callable[[], dt.datetime]
DayResults = Iterator[tuple[dt.date, list[Row] | DayFailure]]


def plain_code(raw: object) -> str | None:
    """'600000', 'sh600000', 'sh.600000', '600000.SH' or 600000 -> '600000'; None if not a code."""
    text = str(raw).strip()
    if text.isdigit() and len(text) < 6:
        text = text.zfill(6)
    match = _CODE.fullmatch(text)
    return match.group(1) if match else None


def exchange_of(code: str) -> str:
    """The exchange of a plain A-share code: 6xxxxx Shanghai, 0/3xxxxx Shenzhen, else Beijing."""
    if code.startswith("6"):
        return "sh"
    return "sz" if code.startswith(("0", "3")) else "bj"


def number(value: object) -> float | None:
    """A finite float, or None for NaN, None, pandas NA, '-' and other non-numbers."""
    if value is None or isinstance(value, str) and not value.strip():
        return None
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def shares_from_lots(value: object) -> int | None:
    lots = number(value)
    return None if lots is None else int(round(lots * 100))


def as_date(value: object) -> dt.date | None:
    """datetime.date, datetime, pandas Timestamp or 'YYYY-MM-DD' -> date (None if unreadable)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _columns(frame: Any, names: Sequence[str], what: str) -> list[list[Any]]:
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise SourceError(f"akshare {what}: response lacks column(s) {', '.join(missing)} (akshare output changed?)")
    return [frame[name].tolist() for name in names]


def hist_rows(code: str, frame: Any, wanted: set[dt.date]) -> list[tuple[dt.date, Row]]:
    """One stock's stock_zh_a_hist frame -> (day, Row) for the wanted days that traded."""
    if frame is None or len(frame) == 0:  # akshare returns an empty frame for no data
        return []
    out: list[tuple[dt.date, Row]] = []
    for day_value, open_, high, low, close, change, lots, amount, turnover, pct in zip(
            *_columns(frame, HIST_COLUMNS, f"stock_zh_a_hist({code})"), strict=True):
        day, open_price, close_price = as_date(day_value), number(open_), number(close)
        if day not in wanted or open_price is None or close_price is None:
            continue  # outside the window, or no trade that day
        change_amount = number(change)
        pre_close = None if change_amount is None else round(close_price - change_amount, 4)
        out.append((day, (code, open_price, number(high), number(low), close_price, pre_close,
                          shares_from_lots(lots), number(amount), number(turnover), number(pct))))
    return out


def spot_rows(frame: Any) -> list[Row]:
    """The stock_zh_a_spot_em snapshot -> Rows of the stocks that traded (suspended have no price)."""
    rows: list[Row] = []
    for raw_code, open_, high, low, close, pre_close, lots, amount, turnover, pct in zip(
            *_columns(frame, SPOT_COLUMNS, "stock_zh_a_spot_em()"), strict=True):
        code, open_price, close_price = plain_code(raw_code), number(open_), number(close)
        if code is None or open_price is None or close_price is None:
            continue
        rows.append((code, open_price, number(high), number(low), close_price, number(pre_close),
                     shares_from_lots(lots), number(amount), number(turnover), number(pct)))
    return rows



class AkshareSource:
    """Daily bars from akshare; see the module docstring for the fetch plan and failure policy."""

    name = "akshare"

    def __init__(self, config: AkshareConfig, *, library: ModuleType | None = None, clock: Clock | None = None,
                 sleep: Callable[[float], None] = time.sleep, limiter: RateLimiter | None = None) -> None:
        self._ak = library if library is not None else import_extra("akshare")
        self._config = config
        self.window_days = config.window_days
        self._now = clock or shanghai_now
        self._sleep = sleep
        self._limiter = limiter or RateLimiter(config.requests_per_second, sleep=sleep)
        self._stocks: DailyCache[list[StockInfo]] = DailyCache(self._today)
        self._calendar: DailyCache[list[dt.date]] = DailyCache(self._today)

    def fetch_window(self, days: Sequence[dt.date], should_stop: ShouldStop) -> DayResults:
        closed = [day for day in days if self._session_closed(day)]
        by_day = self._fetch(closed, should_stop) if closed else {}
        if by_day is None:
            return  # cancelled
        for day in days:
            if should_stop():
                return
            yield day, self._day_result(day, by_day)

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        """Open days from Sina's calendar (fetched once a day); SourceError if it cannot be fetched."""
        calendar = self._calendar.get(self._fetch_calendar)
        if not calendar or start < calendar[0] or end > calendar[-1]:
            return None
        return calendar[bisect_left(calendar, start):bisect_right(calendar, end)]

    def stock_list(self) -> list[StockInfo]:
        """Today's listed A-shares (fetched once a day); SourceError if the list cannot be fetched."""
        return self._stocks.get(self._fetch_stock_list)

    def requests_for(self, days: Sequence[dt.date]) -> int:
        """Snapshot: 1. Otherwise one request per stock per window, plus the day's stock list."""
        if not days:
            return 0
        if self._snapshot_applies(list(days)):
            return 1
        windows = math.ceil(len(days) / self.window_days)
        return windows * len(self.stock_list()) + 1

    def close(self) -> None:
        """Nothing to release: akshare keeps no session."""

    def _today(self) -> dt.date:
        return self._now().astimezone(SHANGHAI).date()

    def _session_closed(self, day: dt.date) -> bool:
        now = self._now().astimezone(SHANGHAI)
        return day < now.date() or (day == now.date() and now.time() >= MARKET_CLOSE)

    def _snapshot_applies(self, days: list[dt.date]) -> bool:
        return self._config.snapshot_today and days == [self._today()] and self._session_closed(days[0])

    def _fetch(self, days: list[dt.date], should_stop: ShouldStop) -> dict[dt.date, list[Row]] | None:
        if self._snapshot_applies(days):
            if should_stop():
                return None
            frame = self._request(self._ak.stock_zh_a_spot_em, "stock_zh_a_spot_em()")
            return {days[0]: spot_rows(frame)}
        return self._fetch_histories(days, should_stop)

    def _day_result(self, day: dt.date, by_day: dict[dt.date, list[Row]]) -> list[Row] | DayFailure:
        if not self._session_closed(day):
            return DayFailure(f"the {day} session has not closed yet ({MARKET_CLOSE:%H:%M} Asia/Shanghai): "
                              "sync it after the close")
        rows = by_day.get(day)
        if not rows:
            return DayFailure(f"akshare returned no bars for {day} (not published yet, or not a trading day)")
        return rows

    def _fetch_histories(self, days: list[dt.date], should_stop: ShouldStop) -> dict[dt.date, list[Row]] | None:
        """One stock_zh_a_hist per stock for the whole window, on `concurrency` threads."""
        if should_stop():
            return None
        codes = [stock.code for stock in self.stock_list()]
        wanted, first, last = set(days), min(days), max(days)
        stop = threading.Event()
        by_day: dict[dt.date, list[Row]] = {day: [] for day in days}
        with ThreadPoolExecutor(max_workers=self._config.concurrency, thread_name_prefix="akshare") as pool:
            futures = [pool.submit(self._fetch_one, code, first, last, wanted, should_stop, stop) for code in codes]
            finished = False
            try:
                for future in as_completed(futures):
                    for day, row in future.result() or ():
                        by_day[day].append(row)
                finished = True
            finally:
                if not finished:  # a request failed for good: the other workers skip theirs
                    stop.set()
                    _cancel(futures)
        return None if stop.is_set() else by_day

    def _fetch_one(self, code: str, first: dt.date, last: dt.date, wanted: set[dt.date],
                   should_stop: ShouldStop, stop: threading.Event) -> list[tuple[dt.date, Row]] | None:
        if stop.is_set() or should_stop():
            stop.set()
            return None
        frame = self._request(
            lambda: self._ak.stock_zh_a_hist(
                symbol=code, period="daily", start_date=first.strftime("%Y%m%d"), end_date=last.strftime("%Y%m%d"),
                adjust=self._config.adjust, timeout=self._config.request_timeout_s),
            f"stock_zh_a_hist({code}, {first}..{last})")
        return hist_rows(code, frame, wanted)

    def _request(self, call: Callable[[], Any], what: str) -> Any:
        def attempt() -> Any:
            self._limiter.acquire()
            return call()

        return call_with_retries(attempt, what=f"akshare {what}", attempts=self._config.request_retries + 1,
                                 backoff_s=self._config.request_retry_backoff_s, sleep=self._sleep)

    def _fetch_stock_list(self) -> list[StockInfo]:
        function = self._ak.stock_info_a_code_name
        clear = getattr(function, "cache_clear", None)  # akshare memoises it for the process's life
        if callable(clear):
            clear()
        frame = self._request(function, "stock_info_a_code_name()")
        stocks: dict[str, StockInfo] = {}
        for raw_code, name in zip(*_columns(frame, ("code", "name"), "stock_info_a_code_name()"), strict=True):
            code = plain_code(raw_code)
            if code is not None:
                stocks[code] = StockInfo(code=code, name=str(name).strip(), exchange=exchange_of(code))
        if not stocks:
            raise SourceError("akshare stock_info_a_code_name() returned no stocks")
        return sorted(stocks.values(), key=lambda stock: stock.code)

    def _fetch_calendar(self) -> list[dt.date]:
        frame = self._request(self._ak.tool_trade_date_hist_sina, "tool_trade_date_hist_sina()")
        (values,) = _columns(frame, ("trade_date",), "tool_trade_date_hist_sina()")
        return sorted({day for day in map(as_date, values) if day is not None})


def _cancel(futures: list[Future[Any]]) -> None:
    for future in futures:
        future.cancel()
