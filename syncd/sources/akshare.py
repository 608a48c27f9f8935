"""The akshare source: daily A-share bars from Eastmoney (and Sina's factors) through the akshare extra.

Owns the fetch plan and the mapping of akshare's answers onto rows in the contract's units.
akshare itself runs only in child processes (isolation.py, akshare_calls.py): every call has
a deadline and a killed call costs a process, never the worker; the processes end with each fetch.

- by_stock (any range, the default): each stock once per run for the whole range:
  `stock_zh_a_hist` (raw prices; 成交量 in lots) plus Sina's hfq factor series
  (`stock_zh_a_daily(adjust="hfq-factor")`, one request per stock per run) for adj_factor
  (base 1.0 on the first trading day) and the exchange's pre_close, derived as previous
  close x previous factor / today's factor to the cent (Eastmoney's 涨跌额 is against the
  previous raw close, wrong on ex-dates; pct_change is recomputed there).
- by_day: only today, after the close (15:30), when Sina's calendar confirms today traded:
  one `stock_zh_a_spot_em` snapshot (about 55 pages of 100); its 昨收 is the exchange's
  pre_close. A listed stock absent from the snapshot (suspended ones are in it, unpriced)
  is `missing`. Any other day asked by_day is refused (a DayFailure naming the reason).

The stock list (Shanghai main board and STAR, Shenzhen, Beijing, and the two exchanges'
delisted lists, with listing and delisting dates) is fetched fresh by `stock_list()` and at
most an hour old otherwise. Requests are paced by one `Upstream` (polite defaults: one
request a second with jitter, one thread, a pause after ban-like answers), each stock
retried on its own; a stock that still fails is a StockFailure and its neighbours keep their rows.

As a reconciliation's reference (`reference=True`, reference.py) it plans by_stock always and
asks no lists: the given codes only, `stock_zh_a_hist` and the factors for each (`reference_plan`).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ..config import AkshareConfig
from ..logs import Event, get_logger
from .base import (
    SHANGHAI,
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
    shanghai_now,
)
from .isolation import CallCancelled, LibraryProcess, UpstreamFailure
from .ratelimit import Memo, Politeness, Upstream
from .stockplan import FactorSeries, Listing, ask_each, count_listed, derived_pre_close, exchange_of, number, shares

MARKET_CLOSE = dt.time(15, 30)  # STAR/ChiNext after-hours fixed-price trading ends 15:30
LISTING_MAX_AGE_S = 3600.0
CALENDAR_MAX_AGE_S = 6 * 3600.0
LISTS = ("sh", "star", "sz", "bj", "sh_delisted", "sz_delisted")
PAGED_CALL_FACTOR = 5  # the snapshot and the BJ list page through many HTTP requests in one call


def day_of(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def sina_symbol(code: str) -> str:
    return exchange_of(code) + code


def hist_bars(code: str, rows: Sequence[Sequence[Any]], factors: FactorSeries, first: dt.date,
              last: dt.date) -> list[tuple[dt.date, Row]]:
    """akshare_calls.hist rows (日期 开盘 收盘 最高 最低 成交量 成交额 涨跌幅 涨跌额 换手率) -> (day, Row)."""
    bars: list[tuple[dt.date, Row]] = []
    previous: tuple[dt.date, float] | None = None
    for raw_day, open_, close, high, low, lots, amount, pct, change, turnover in sorted(rows, key=lambda r: str(r[0])):
        day, open_price, close_price = day_of(raw_day), number(open_), number(close)
        if day is None or open_price is None or close_price is None:
            continue  # no trade that day
        change_amount = number(change)
        previous_close: float | None
        if previous is not None:
            previous_close, previous_factor = previous[1], factors.on(previous[0])
        else:  # the range's first bar: Eastmoney's change is against the previous raw close
            previous_close = None if change_amount is None else round(close_price - change_amount, 2)
            previous_factor = factors.on(day - dt.timedelta(days=1))
        factor = factors.on(day)
        pre_close = derived_pre_close(previous_close, previous_factor, factor)
        pct_change = number(pct)
        if pre_close is not None and previous_close is not None and pre_close != previous_close:
            pct_change = round((close_price - pre_close) / pre_close * 100, 2)  # an ex-date
        previous = (day, close_price)
        if first <= day <= last:
            amount_yuan, low_price, high_price = number(amount), number(low), number(high)
            bars.append((day, (code, open_price, high_price, low_price, close_price, pre_close,
                               shares(number(lots), amount_yuan, low_price, high_price, lots=True), amount_yuan,
                               number(turnover), pct_change, factor)))
    return bars


def snapshot_rows(rows: Sequence[Sequence[Any]]) -> tuple[list[Row], set[str]]:
    """akshare_calls.snapshot rows -> (Rows of the stocks that traded, every code in the answer)."""
    out: list[Row] = []
    seen: set[str] = set()
    for raw_code, _name, open_, high, low, close, pre_close, lots, amount, turnover, pct in rows:
        code = str(raw_code).strip().zfill(6)
        if not code.isdigit() or len(code) != 6:
            continue
        seen.add(code)
        open_price, close_price = number(open_), number(close)
        if open_price is None or close_price is None:
            continue  # suspended: listed in the snapshot without prices
        amount_yuan, low_price, high_price = number(amount), number(low), number(high)
        out.append((code, open_price, high_price, low_price, close_price, number(pre_close),
                    shares(number(lots), amount_yuan, low_price, high_price, lots=True), amount_yuan,
                    number(turnover), number(pct), None))
    return out, seen


def listings_from(which: str, rows: Sequence[Sequence[Any]]) -> list[Listing]:
    exchange = {"sh": "sh", "star": "sh", "sh_delisted": "sh", "sz": "sz", "sz_delisted": "sz", "bj": "bj"}[which]
    return [Listing(code=str(code), name=str(name or code).strip(), exchange=exchange, listed=day_of(listed),
                    delisted=day_of(delisted) if delisted else None)
            for code, name, listed, delisted in rows if str(code).isdigit()]


class AkshareSource(Source):
    """Daily bars from akshare; see the module docstring for the plans, calls and failures."""

    name = "akshare"

    def __init__(self, config: AkshareConfig, *, now: Any = None, reference: bool = False, **timing: Any) -> None:
        require_extra("akshare")
        self._config = config
        self._reference = reference  # a reconciliation's other opinion: the given stocks, no lists
        self._now = now or shanghai_now
        self._closing = threading.Event()
        politeness = Politeness(requests_per_second=config.requests_per_second, jitter=config.jitter,
                                attempts=config.request_retries + 1, backoff_s=config.request_retry_backoff_s,
                                ban_pause_s=config.ban_pause_s, ban_pause_max_s=config.ban_pause_max_s)
        self._upstream = Upstream("akshare", politeness, on_pause=self._paused, **timing)
        options = {"relay": config.relay, "request_timeout_s": config.request_timeout_s}
        self._processes = [LibraryProcess("syncd.sources.akshare_calls", options, label=f"akshare[{i}]")
                           for i in range(config.concurrency)]
        self._listings: Memo[list[Listing]] = Memo(LISTING_MAX_AGE_S)
        self._calendar: Memo[list[dt.date]] = Memo(CALENDAR_MAX_AGE_S)
        self._log = get_logger(source=self.name)
        if config.adjust:
            self._log.warning(Event.SOURCE_SETTING_IGNORED, key="source.akshare.adjust", value=config.adjust,
                              reason="stored prices are raw; adjusted prices are the daily_bars_qfq/hfq views")

    # --- the fetch interface ----------------------------------------------------------------
    def plan(self, days: Sequence[dt.date]) -> Plan:
        if self._reference:
            return "by_stock"
        return "by_day" if self._snapshot_refusal(list(days)) is None else "by_stock"

    @classmethod
    def reference_plan(cls, config: AkshareConfig, days: int, stocks: int) -> ReferencePlan:
        each = 2 if config.factors else 1
        calls = "stock_zh_a_hist and its hfq factors" if config.factors else "stock_zh_a_hist"
        return ReferencePlan("by_stock", each * stocks, f"{each} request(s) a stock ({calls}) for {stocks} stocks, at most")

    @property
    def requests_made(self) -> int:
        return self._upstream.calls

    def fetch_days(self, days: Sequence[dt.date], should_stop: ShouldStop) -> DayStream:
        stop = self._stopper(should_stop)
        try:
            for day in days:
                if stop():
                    return
                refusal = self._snapshot_refusal([day])
                if refusal is not None:
                    yield day, DayFailure(refusal)
                    continue
                try:
                    yield day, self._snapshot(day, stop)
                except CallCancelled:
                    return
                except SourceError as exc:
                    yield day, DayFailure(str(exc))
        finally:
            self._end_processes()

    def fetch_stocks(self, first: dt.date, last: dt.date, should_stop: ShouldStop,
                     codes: Sequence[str] | None = None) -> Iterator[StockBars | StockFailure]:
        stop = self._stopper(should_stop)
        try:
            listings = [] if self._reference and codes is not None else self._all_listings(stop)
        except CallCancelled:
            return
        wanted = ([item.code for item in listings if item.trades_within(first, last)] if codes is None
                  else sorted(set(codes)))
        listed = {item.code: item.listed for item in listings}
        no_factors: list[str] = []

        def ask(process: LibraryProcess, code: str, stopping: ShouldStop) -> StockBars:
            return self._stock(process, code, first, last, listed.get(code), stopping, no_factors)

        try:
            yield from ask_each(wanted, self._processes, ask, stop, give_up_after=self._config.give_up_after)
        finally:
            if no_factors:  # once per fetch: adj_factor and pre_close stay NULL for these stocks' rows
                self._log.warning(Event.SOURCE_FACTORS_UNAVAILABLE, stocks=len(no_factors), first=no_factors[0])
            self._end_processes()

    def listed_on(self, day: dt.date) -> int | None:
        return count_listed(self._all_listings(self._closing.is_set), day)

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        """Open days from Sina's calendar (fetched at most every 6 hours); None beyond its reach."""
        calendar = self._calendar.get(lambda: self._fetch_calendar(self._closing.is_set))
        if not calendar or start < calendar[0] or end > calendar[-1]:
            return None
        return [day for day in calendar if start <= day <= end]

    def stock_list(self) -> list[StockInfo]:
        """The stocks listed today, with names, asked afresh (one run, one fresh list)."""
        self._listings.forget()
        today = self._today()
        return [item.info() for item in self._all_listings(self._closing.is_set) if item.listed_on(today)]

    def close(self) -> None:
        self._closing.set()
        self._end_processes()

    def _end_processes(self) -> None:
        """After a fetch: no idle library process (memory, a session) waits for the next run."""
        for process in self._processes:
            process.close()

    # --- the calls ------------------------------------------------------------------------
    def _call(self, process: LibraryProcess, function: str, *args: Any, what: str, stop: ShouldStop,
              paged: bool = False) -> Any:
        deadline = self._config.call_deadline_s * (PAGED_CALL_FACTOR if paged else 1)
        return self._upstream.ask(
            lambda: process.call(function, *args, deadline_s=deadline, what=f"akshare {what}", should_stop=stop),
            f"akshare {what}", stop)

    def _stock(self, process: LibraryProcess, code: str, first: dt.date, last: dt.date, listed: dt.date | None,
               stop: ShouldStop, no_factors: list[str]) -> StockBars:
        rows = self._call(process, "hist", code, f"{first:%Y%m%d}", f"{last:%Y%m%d}",
                          what=f"stock_zh_a_hist({code}, {first}..{last})", stop=stop)
        factors = FactorSeries([])
        if rows and self._config.factors:
            try:
                steps = self._call(process, "hfq_factors", sina_symbol(code), what=f"hfq factors of {code}", stop=stop)
                factors = FactorSeries([(day, value) for raw_day, raw in steps
                                        if (day := day_of(raw_day)) and (value := number(raw))], listed)
            except UpstreamFailure:  # rejected or unavailable: retrying cannot help, nor can this run
                raise
            except SourceError as exc:  # the bars stay usable; this stock's adj_factor and pre_close are NULL
                no_factors.append(f"{code}: {exc}")
        return StockBars(code, hist_bars(code, rows, factors, first, last))

    def _snapshot(self, day: dt.date, stop: ShouldStop) -> DayBatch | DayFailure:
        listings = self._all_listings(stop)
        rows, seen = snapshot_rows(self._call(self._processes[0], "snapshot", what="stock_zh_a_spot_em()",
                                              stop=stop, paged=True))
        if not rows:
            return DayFailure(f"akshare's snapshot for {day} has no priced stock")
        listed = {item.code for item in listings if item.listed_on(day)}
        return DayBatch(rows=rows, expected=len(listed), missing=frozenset(listed - seen))

    def _all_listings(self, stop: ShouldStop) -> list[Listing]:
        return self._listings.get(lambda: self._fetch_listings(stop))

    def _fetch_listings(self, stop: ShouldStop) -> list[Listing]:
        found: dict[str, Listing] = {}
        for which in LISTS:
            rows = self._call(self._processes[0], "listing", which, what=f"stock list {which}", stop=stop, paged=True)
            if not rows and not which.endswith("delisted"):
                raise SourceError(f"akshare stock list {which}: the exchange listed no stocks")
            for item in listings_from(which, rows):
                found.setdefault(item.code, item)  # a listed stock wins over an old delisting of its code
        return sorted(found.values(), key=lambda item: item.code)

    def _fetch_calendar(self, stop: ShouldStop) -> list[dt.date]:
        days = self._call(self._processes[0], "calendar", what="tool_trade_date_hist_sina()", stop=stop)
        return sorted({day for raw in days if (day := day_of(raw)) is not None})

    # --- time -----------------------------------------------------------------------------
    def _today(self) -> dt.date:
        return self._now().astimezone(SHANGHAI).date()

    def _snapshot_refusal(self, days: list[dt.date]) -> str | None:
        """Why the snapshot cannot stand for `days` (None: it can)."""
        if not self._config.snapshot_today:
            return "akshare gives past days by stock only (snapshot_today = false)"
        now = self._now().astimezone(SHANGHAI)
        if days != [now.date()]:
            return "akshare's snapshot carries no date: it stands only for today, after the close"
        if now.time() < MARKET_CLOSE:
            return f"the {now.date()} session has not closed yet ({MARKET_CLOSE:%H:%M} Asia/Shanghai): sync it after the close"
        try:
            open_days = self.trading_days(now.date(), now.date())
        except SourceError as exc:
            return f"cannot confirm that {now.date()} is a trading day (Sina's calendar: {exc})"
        if not open_days:
            return f"Sina's calendar does not confirm {now.date()} as a trading day: no snapshot stored for it"
        return None

    def _paused(self, seconds: float, reason: str) -> None:
        self._log.warning(Event.SOURCE_PAUSED, seconds=seconds, reason=reason)

    def _stopper(self, should_stop: ShouldStop) -> ShouldStop:
        return lambda: self._closing.is_set() or should_stop()
