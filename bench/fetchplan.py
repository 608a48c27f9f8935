"""Benchmark 5, upstream requests: every source's real fetch plan against local servers, each request counted.

For a daily sync (one trading day), a one-year and a twenty-year backfill of a 5,300-stock
market, each remote source runs the way a sync drives it (its calendar and a fresh stock
list first, then `plan` and `fetch_days` or `fetch_stocks`, then `listed_on` for every day)
through its real library, against tests/upstreams.py's loopback servers, which count what
they are asked: HTTP requests for akshare (every page of a paged call, through its relay)
and Tushare; socket messages for baostock (login and logout included). Nothing is modelled:
the numbers are what arrived. demo and csv ask nothing upstream (one generated day or one
file per day). The market is tests/market.py's shapes over a lazily computed market, so a
twenty-year answer is generated per request, never held whole.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from syncd.config import AkshareConfig, BaostockConfig, TushareConfig
from syncd.sources.base import DayBatch, StockBars

from .harness import REPO, emit, note, print_table, trading_days

sys.path.insert(0, str(REPO / "tests"))
from market import Bar, Market, Stock  # noqa: E402  (the tests' market shapes and servers)
from upstreams import BaostockServer, HttpUpstream, akshare_route, tushare_route  # noqa: E402

LAST_DAY = dt.date(2024, 12, 31)
EVENING = dt.datetime(2024, 12, 31, 20, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
BOARDS = ((600000, 1700), (603000, 700), (688000, 580), (1, 600), (2001, 900), (300001, 1100), (301001, 200),
          (830001, 120), (920001, 100))  # first code and count per board, scaled to the market's size
SCENARIOS = (("daily sync", 0), ("1-year backfill", 1), ("20-year backfill", 20))


class LazyBars(Mapping[str, list[Bar]]):
    def __init__(self, market: LazyMarket) -> None:
        self.market = market

    def __getitem__(self, code: str) -> list[Bar]:
        return [bar for day in self.market.days if (bar := self.market.bar(code, day)) is not None]

    def __iter__(self) -> Iterator[str]:
        return iter(self.market.codes)

    def __len__(self) -> int:
        return len(self.market.codes)


class LazyMarket(Market):
    """tests/market.py's Market with every bar computed on demand from (code, day)."""

    def __init__(self, stocks: int, days: list[dt.date]) -> None:
        self.days = days
        self.stocks = market_stocks(stocks)
        self.codes = [stock.code for stock in self.stocks]
        self._by_code = {stock.code: stock for stock in self.stocks}
        self._index = {day: i for i, day in enumerate(days)}
        self.bars = LazyBars(self)  # type: ignore[assignment]

    def stock(self, code: str) -> Stock:
        return self._by_code[code]

    def _close(self, code: str, i: int) -> float:
        return round(5.0 + int(code) % 97 + 2.0 * math.sin(i / 17.0 + int(code) % 13), 2)

    def bar(self, code: str, day: dt.date) -> Bar | None:
        i = self._index.get(day)
        if i is None or self._by_code[code].delisted is not None:
            return None
        close, pre = self._close(code, i), self._close(code, i - 1)
        high, low = round(max(close, pre) * 1.01, 2), round(min(close, pre) * 0.99, 2)
        volume = 100 * (1000 + (int(code) + i) % 5000)
        return Bar(day, pre, high, low, close, pre, pre, volume, round(volume * (high + low) / 2, 2), 1.0,
                   round((close - pre) / pre * 100, 2))

    def listed_on(self, day: dt.date, exchanges: tuple[str, ...] = ("sh", "sz", "bj")) -> list[Stock]:
        return [stock for stock in self.stocks if stock.exchange in exchanges and stock.delisted is None]

    def factor(self, code: str, day: dt.date) -> float:
        return 1.0


def market_stocks(count: int) -> list[Stock]:
    """`count` listed stocks over the boards, and one delisted a board of Shanghai and Shenzhen (their lists exist)."""
    total = sum(n for _, n in BOARDS)
    listed = [Stock(f"{first + i:06d}", f"S{first + i:06d}", dt.date(1999, 1, 4), 10.0, 100_000_000)
              for first, n in BOARDS for i in range(max(1, round(n * count / total)))][:count]
    delisted = [Stock(code, f"D{code}", dt.date(1999, 1, 4), 10.0, 100_000_000, delisted=dt.date(2004, 1, 5))
                for code in ("602999", "001999")]
    return listed + delisted


def run(stocks: int = 5300, long_stocks: int = 300, years: tuple[int, ...] = (0, 1, 20)) -> dict[str, Any]:
    """Count each scenario of `years` (0: a daily sync); ranges over ten years use `long_stocks` stocks.

    A twenty-year run of every source on 5,300 stocks takes over an hour here (each answer is
    generated and parsed for real), so the long ranges default to a smaller market:
    `python -m bench --only fetchplan --fetch-long-stocks 5300` counts the full one.
    """
    calendar = trading_days(dt.date(LAST_DAY.year - max(years), 1, 1), LAST_DAY)
    note(f"fetch plans against local servers, ranges ending {LAST_DAY}")
    rows: list[tuple[Any, ...]] = []
    result: dict[str, Any] = {"stocks": stocks, "long_stocks": long_stocks, "requests": {}, "requests_per_day": {}}
    for label, span in SCENARIOS:
        if span not in years:
            continue
        size = long_stocks if span > 10 else stocks
        market = LazyMarket(size, calendar)
        days = [LAST_DAY] if span == 0 else [d for d in calendar if d.year > LAST_DAY.year - span]
        for source, counted, remark, seconds in _count_all(market, days):
            rows.append((source, label, size, len(days), counted, counted / len(days), seconds, remark))
            result["requests"][f"{source}.{span}y"] = counted
            result["requests_per_day"][f"{source}.{span}y"] = round(counted / len(days), 3)
    print_table("Upstream requests per source and range (counted at the local servers)",
                ("source", "range", "stocks", "trading days", "requests", "per day", "seconds", "note"), rows)
    result["goal_far_below_one_request_per_stock_per_day"] = all(
        counted < (long_stocks if key.endswith("20y") else stocks) * max(1, len(calendar)) / 10
        for key, counted in result["requests"].items())
    return emit("fetchplan", result)


def _count_all(market: LazyMarket, days: list[dt.date]) -> Iterator[tuple[str, int, str, float]]:
    yield "demo", 0, f"no upstream: {len(days)} days generated", 0.0
    yield "csv", 0, f"no upstream: {len(days)} files read", 0.0
    for name, count in (("akshare", _akshare), ("baostock", _baostock), ("tushare", _tushare)):
        started = time.monotonic()
        counted, remark = count(market, days)
        yield name, counted, remark, round(time.monotonic() - started, 1)


def _drive(source: Any, days: list[dt.date]) -> str:
    """What a sync asks of a source for `days`: calendar, fresh list, the plan's fetch, listed_on per day."""
    source.trading_days(days[0], days[-1])
    source.stock_list()
    plan = source.plan(days)
    if plan == "by_day":
        for day, batch in source.fetch_days(days, lambda: False):
            if not isinstance(batch, DayBatch):
                raise RuntimeError(f"{source.name}: {day}: {batch}")
    else:
        for answer in source.fetch_stocks(days[0], days[-1], lambda: False):
            if not isinstance(answer, StockBars):
                raise RuntimeError(f"{source.name}: {answer}")
    for day in days:
        source.listed_on(day)
    return plan


def _drive_and_stop(source: Any, server: Any, days: list[dt.date]) -> str:
    """`_drive` the source against its local server, then close both whatever happened."""
    try:
        return _drive(source, days)
    finally:
        source.close()
        server.stop()


def _akshare(market: LazyMarket, days: list[dt.date]) -> tuple[int, str]:
    from syncd.sources.akshare import AkshareSource

    server = HttpUpstream(akshare_route(market, snapshot_day=LAST_DAY, calendar=market.days))
    plan = _drive_and_stop(AkshareSource(AkshareConfig(relay=server.url, requests_per_second=10_000, jitter=0,
                                                        concurrency=2), now=lambda: EVENING), server, days)
    kinds = {"hist": lambda r: r.path.endswith("/kline/get"), "factors": lambda r: r.path.endswith("/hfq.js"),
             "snapshot pages": lambda r: r.path.endswith("/clist/get")}
    parts = ", ".join(f"{server.count(test)} {kind}" for kind, test in kinds.items() if server.count(test))
    return server.count(), f"{plan}: {parts}, the rest lists and calendar"


def _baostock(market: LazyMarket, days: list[dt.date]) -> tuple[int, str]:
    from syncd.sources.baostock import BaostockSource

    server = BaostockServer(market)
    plan = _drive_and_stop(BaostockSource(BaostockConfig(server=server.address, requests_per_second=10_000, jitter=0)),
                           server, days)
    return server.count(), f"{plan}: {server.count(lambda a: a.kind == '98')} whole-market, {server.logins} logins"


def _tushare(market: LazyMarket, days: list[dt.date]) -> tuple[int, str]:
    from syncd.sources.tushare import TushareSource

    server = HttpUpstream(tushare_route(market, calendar=market.days))
    plan = _drive_and_stop(TushareSource(TushareConfig(token="good-token", url=server.url, requests_per_minute=600_000)),
                           server, days)
    return server.count(), f"{plan}: daily + adj_factor + daily_basic a day; trade_cal, stock_basic x3 a run"
