"""The Tushare Pro source: the whole market for one date per request, over Tushare's HTTP API.

Owns the by_day plan and the mapping of Tushare's answers onto rows in the contract's units.
Per trading day: `daily(trade_date)` (required; vol in lots of 100 shares -> shares, amount
in thousands of yuan -> yuan, pre_close the exchange's reference price), `adj_factor
(trade_date)` (optional, 2,000 points: Tushare's cumulative backward factor, passed on as
adj_factor) and `daily_basic(trade_date)` (optional: turnover_rate, percent). Per run:
`trade_cal` (the calendar, SSE) and `stock_basic` for listed, delisted and paused stocks
with their listing and delisting dates (expected counts). Tushare answers with a
`code`/`msg`: a bad token or no permission for `daily` or `stock_basic` fails the run with
that reason (SourceRejected); no permission for an optional dataset is logged once per run
and its column falls back (adj_factor NULL, which the data layer derives from pre_close;
turnover NULL); a per-minute quota pauses every request for a minute.

As a reconciliation's reference (`reference=True`, reference.py) it asks only `daily` and
`adj_factor` a day: no listings, no turnover (two requests a day, `reference_plan`).

A thin client (tushare_calls.py: one POST) rather than the `tushare` package: the package
keeps the token in a file in the home folder (`set_token` writes ~/tk.csv), pulls in pandas,
lxml and more for what is one JSON request, and hides Tushare's error codes behind text
exceptions. The token comes from `[source.tushare] token` or $SYNCD_TUSHARE_TOKEN, travels
only in each request's body and is blanked out of every message.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..config import TushareConfig
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
    SourceRejected,
    SourceUnavailable,
    StockBars,
    StockFailure,
    StockInfo,
    require_extra,
)
from .isolation import LibraryProcess, UpstreamFailure
from .ratelimit import Memo, Politeness, Upstream
from .stockplan import Listing, ask_each_day, count_listed, number, shares

DEFAULT_URL = "http://api.tushare.pro"  # the endpoint Tushare documents for its HTTP API
TOKEN_ENV = "SYNCD_TUSHARE_TOKEN"
DAILY_FIELDS = "ts_code,trade_date,open,high,low,close,pre_close,pct_chg,vol,amount"
LISTING_MAX_AGE_S = 3600.0
EXCHANGES = {"SH": "sh", "SZ": "sz", "BJ": "bj"}
OPTIONAL = ("adj_factor", "daily_basic")


def day_of(value: Any) -> dt.date | None:
    try:
        return dt.datetime.strptime(str(value), "%Y%m%d").date()
    except ValueError:
        return None


def plain_code(ts_code: Any) -> tuple[str, str] | None:
    """'600000.SH' -> ('600000', 'sh'); None for anything else."""
    code, _, suffix = str(ts_code).partition(".")
    exchange = EXCHANGES.get(suffix.upper())
    return (code, exchange) if exchange and len(code) == 6 and code.isdigit() else None


def by_name(fields: list[str], items: list[list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(fields, item)) for item in items]


def daily_rows(answer: list[dict[str, Any]], factors: dict[str, float], turnover: dict[str, float]) -> list[Row]:
    rows: list[Row] = []
    for item in answer:
        parsed = plain_code(item.get("ts_code"))
        open_price, close = number(item.get("open")), number(item.get("close"))
        if parsed is None or open_price is None or close is None:
            continue
        code = parsed[0]
        thousands = number(item.get("amount"))
        amount = None if thousands is None else round(thousands * 1000, 2)
        low, high = number(item.get("low")), number(item.get("high"))
        rows.append((code, open_price, high, low, close, number(item.get("pre_close")),
                     shares(number(item.get("vol")), amount, low, high, lots=True), amount,
                     turnover.get(code), number(item.get("pct_chg")), factors.get(code)))
    return rows


def token_of(config: TushareConfig, environ: Mapping[str, str]) -> str:
    """The configured token, else $SYNCD_TUSHARE_TOKEN; SourceUnavailable when neither is set."""
    token = config.token or environ.get(TOKEN_ENV, "")
    if not token:
        raise SourceUnavailable(f"source 'tushare' needs a token: [source.tushare] token or ${TOKEN_ENV}")
    return token


class TushareSource(Source):
    """Daily bars from Tushare Pro; see the module docstring for the datasets and failures."""

    name = "tushare"

    def __init__(self, config: TushareConfig, *, environ: dict[str, str] | None = None, reference: bool = False,
                 **timing: Any) -> None:
        require_extra("requests", "tushare")
        self._reference = reference  # a reconciliation's other opinion: bars and factors only
        self._token = token_of(config, os.environ if environ is None else environ)
        self._config = config
        self._closing = threading.Event()
        self._log = get_logger(source=self.name)
        politeness = Politeness(requests_per_second=config.requests_per_minute / 60.0, jitter=0.2,
                                attempts=config.request_retries + 1, backoff_s=config.request_retry_backoff_s)
        self._upstream = Upstream("tushare", politeness, on_pause=self._paused, **timing)
        self._process = LibraryProcess("syncd.sources.tushare_calls",
                                       {"url": config.url or DEFAULT_URL, "request_timeout_s": config.request_timeout_s},
                                       label="tushare")
        self._listings: Memo[list[Listing]] = Memo(LISTING_MAX_AGE_S)
        self._refused: dict[str, str] = {}  # optional datasets refused in this run: name -> Tushare's reason

    def __repr__(self) -> str:
        return "TushareSource(token=***)"

    # --- the fetch interface ----------------------------------------------------------------
    def plan(self, days: Sequence[dt.date]) -> Plan:
        return "by_day"

    @classmethod
    def reference_plan(cls, config: TushareConfig, days: int, stocks: int) -> ReferencePlan:
        return ReferencePlan("by_day", 2 * days, f"2 requests a day (daily, adj_factor) for {days} days")

    @property
    def requests_made(self) -> int:
        return self._upstream.calls

    def fetch_days(self, days: Sequence[dt.date], should_stop: ShouldStop) -> DayStream:
        stop = self._stopper(should_stop)
        try:
            yield from ask_each_day(days, lambda day: self._day(day, stop), self._config.give_up_after, stop)
        finally:
            self._process.close()  # no idle process waits for the next run

    def fetch_stocks(self, first: dt.date, last: dt.date, should_stop: ShouldStop,
                     codes: Sequence[str] | None = None) -> Iterator[StockBars | StockFailure]:
        """Tushare is asked by day only (plan() never says by_stock)."""
        raise SourceError("the tushare source fetches by day; sync asked it by stock")

    def listed_on(self, day: dt.date) -> int | None:
        return count_listed(self._all_listings(self._closing.is_set), day)

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        """Open days from trade_cal (SSE); None where Tushare's calendar does not reach both ends."""
        answer = by_name(*self._query("trade_cal", {"exchange": "SSE", "start_date": f"{start:%Y%m%d}",
                                                    "end_date": f"{end:%Y%m%d}"}, "cal_date,is_open",
                                      stop=self._closing.is_set))
        is_open = {day: str(item.get("is_open")) == "1" for item in answer if (day := day_of(item.get("cal_date")))}
        if start not in is_open or end not in is_open:
            return None
        return sorted(day for day, open_ in is_open.items() if open_)

    def stock_list(self) -> list[StockInfo]:
        """Listed stocks (stock_basic, list_status L), asked afresh (one run, one fresh list)."""
        self._listings.forget()
        self._refused = {}  # a new run asks the optional datasets again
        return [item.info() for item in self._all_listings(self._closing.is_set) if item.delisted is None]

    def close(self) -> None:
        self._closing.set()
        self._process.close()

    # --- one day ------------------------------------------------------------------------------
    def _day(self, day: dt.date, stop: ShouldStop) -> DayBatch | DayFailure:
        params = {"trade_date": f"{day:%Y%m%d}"}
        daily = by_name(*self._query("daily", params, DAILY_FIELDS, stop=stop))
        if not daily:
            return DayFailure(f"Tushare has no bars for {day} yet (daily is published after the close, "
                              "usually by 17:00)")
        factors = self._optional("adj_factor", params, "ts_code,adj_factor", "adj_factor", stop)
        if self._reference:
            return DayBatch(rows=daily_rows(daily, factors, {}))
        turnover = self._optional("daily_basic", params, "ts_code,turnover_rate", "turnover_rate", stop)
        rows = daily_rows(daily, factors, turnover)
        return DayBatch(rows=rows, expected=count_listed(self._all_listings(stop), day))

    def _optional(self, dataset: str, params: dict[str, str], fields: str, column: str,
                  stop: ShouldStop) -> dict[str, float]:
        """An optional dataset by code; {} when the token may not read it (logged once per run)."""
        if dataset in self._refused:
            return {}
        try:
            answer = by_name(*self._query(dataset, params, fields, stop=stop))
        except SourceRejected as exc:
            self._refused[dataset] = str(exc)
            self._log.warning(Event.SOURCE_DATASET_UNAVAILABLE, dataset=dataset, error=str(exc),
                              fallback="adj_factor from pre_close" if dataset == "adj_factor" else "turnover NULL")
            return {}
        values: dict[str, float] = {}
        for item in answer:
            parsed, value = plain_code(item.get("ts_code")), number(item.get(column))
            if parsed is not None and value is not None:
                values[parsed[0]] = value
        return values

    def _all_listings(self, stop: ShouldStop) -> list[Listing]:
        return self._listings.get(lambda: self._fetch_listings(stop))

    def _fetch_listings(self, stop: ShouldStop) -> list[Listing]:
        found: dict[str, Listing] = {}
        for status in ("L", "D", "P"):
            answer = by_name(*self._query("stock_basic", {"list_status": status},
                                          "ts_code,name,list_date,delist_date", stop=stop))
            for item in answer:
                parsed = plain_code(item.get("ts_code"))
                if parsed is not None:
                    found.setdefault(parsed[0], Listing(code=parsed[0], name=str(item.get("name") or parsed[0]),
                                                        exchange=parsed[1], listed=day_of(item.get("list_date")),
                                                        delisted=day_of(item.get("delist_date"))))
        if not found:
            raise SourceError("Tushare stock_basic listed no stocks")
        return sorted(found.values(), key=lambda item: item.code)

    # --- the calls -------------------------------------------------------------------------
    def _query(self, api: str, params: dict[str, str], fields: str, *, stop: ShouldStop) -> tuple[list[str], list[list[Any]]]:
        what = f"tushare {api}({', '.join(f'{key}={value}' for key, value in params.items())})"
        try:
            return self._upstream.ask(
                lambda: self._process.call("query", api, self._token, params, fields,
                                           deadline_s=self._config.call_deadline_s, what=what, should_stop=stop),
                what, stop)
        except UpstreamFailure as exc:
            if exc.kind == "rejected":
                raise SourceRejected(str(exc)) from None
            raise

    def _paused(self, seconds: float, reason: str) -> None:
        self._log.warning(Event.SOURCE_PAUSED, seconds=seconds, reason=reason)

    def _stopper(self, should_stop: ShouldStop) -> ShouldStop:
        return lambda: self._closing.is_set() or should_stop()
