"""BaostockSource through the real baostock library, its socket pointed at a local server (`server`).

The server speaks baostock's framed TCP protocol (login, calendar, stock basics, per-stock
and whole-market k-data; compressed where the library expects it) for tests/market.py's
market, or misbehaves: closes the connection, half-closes it, stalls, answers garbage.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from market import DAYS, EX_DATE, Market
from structlog.testing import capture_logs
from upstreams import BaostockServer, FakeTime

from syncd.config import BaostockConfig
from syncd.sources import baostock as baostock_module
from syncd.sources.baostock import BaostockSource
from syncd.sources.base import DayBatch, DayFailure, SourceError, StockBars

pytest.importorskip("baostock")
SH_SZ = 15  # the market's Shanghai and Shenzhen stocks (baostock has no Beijing)


def never() -> bool:
    return False


@pytest.fixture
def market() -> Market:
    return Market()


@pytest.fixture
def server(market: Market) -> Iterator[BaostockServer]:
    upstream = BaostockServer(market)
    yield upstream
    upstream.stop()


@pytest.fixture
def make(server: BaostockServer) -> Iterator[Any]:
    made: list[BaostockSource] = []

    def build(upstream: BaostockServer | None = None, *, market_daily: bool = True, **settings: Any) -> BaostockSource:
        target = upstream or server
        config = BaostockConfig(**{"server": target.address, "requests_per_second": 10_000, "jitter": 0, **settings})
        source = BaostockSource(config, market_daily=market_daily, **FakeTime().timing())
        made.append(source)
        return source

    yield build
    for source in made:
        source.close()


def rows_of(result: DayBatch | DayFailure) -> dict[str, tuple[Any, ...]]:
    assert isinstance(result, DayBatch), result
    return {row[0]: row for row in result.rows}  # type: ignore[union-attr]


def test_one_whole_market_request_per_day_with_the_exchanges_pre_close(make: Any, server: BaostockServer, market: Market) -> None:
    source = make()
    assert source.plan(DAYS) == "by_day"
    results = dict(source.fetch_days(DAYS, never))
    assert server.count(lambda a: a.kind == "98") == len(DAYS)
    row = rows_of(results[EX_DATE])["600000"]
    bar = market.bar("600000", EX_DATE)
    assert bar is not None
    assert row == ("600000", bar.open, bar.high, bar.low, bar.close, bar.pre_close, bar.volume, bar.amount,
                   bar.turnover, bar.pct, None)  # volume already in shares; adj_factor follows from pre_close
    assert rows_of(results[EX_DATE])["688981"][6] == market.bar("688981", EX_DATE).volume  # type: ignore[union-attr]


def test_suspended_new_and_delisted_stocks(make: Any, market: Market) -> None:
    results = dict(make().fetch_days(DAYS, never))
    suspended = results[dt.date(2024, 1, 8)]
    assert "000004" not in rows_of(suspended) and not suspended.missing  # type: ignore[union-attr]  # tradestatus 0
    assert suspended.expected == len(market.listed_on(dt.date(2024, 1, 8), ("sh", "sz")))  # type: ignore[union-attr]
    assert rows_of(results[dt.date(2024, 1, 9)])["301589"][5] == 20.00
    assert "600289" in rows_of(results[dt.date(2024, 1, 5)]) and "600289" not in rows_of(results[dt.date(2024, 1, 8)])


def test_an_empty_whole_market_answer_for_a_traded_day_falls_back_to_asking_by_stock(make: Any, market: Market) -> None:
    upstream = BaostockServer(market, market_daily_empty={EX_DATE})
    try:
        with capture_logs() as logs:
            results = dict(make(upstream).fetch_days([EX_DATE], never))
        assert rows_of(results[EX_DATE]) == rows_of(dict(make().fetch_days([EX_DATE], never))[EX_DATE])
        assert upstream.count(lambda a: a.kind == "95") == len(market.listed_on(EX_DATE, ("sh", "sz")))
        assert any(entry["event"] == "source_fallback" for entry in logs)
    finally:
        upstream.stop()


def test_a_day_not_published_yet_fails_after_the_fallback_finds_nothing(make: Any, market: Market) -> None:
    day = dt.date(2024, 1, 15)
    market.days.append(day)  # a trading day in the calendar with no bars anywhere yet
    upstream = BaostockServer(market, market_daily_empty={day})
    try:
        [(_, result)] = list(make(upstream).fetch_days([day], never))
        assert isinstance(result, DayFailure) and "no bars" in result.error
    finally:
        upstream.stop()


def test_every_run_logs_in_afresh_and_logs_out_at_its_end(make: Any, server: BaostockServer) -> None:
    source = make()
    list(source.fetch_days(DAYS[:2], never))
    list(source.fetch_days(DAYS[2:4], never))
    assert server.logins == 2
    assert server.count(lambda a: a.kind == "02") == 2


def test_a_session_idle_too_long_logs_in_again(make: Any, server: BaostockServer, monkeypatch: pytest.MonkeyPatch) -> None:
    source = make()
    source.listed_on(DAYS[0])
    monkeypatch.setattr(baostock_module, "SESSION_IDLE_S", 0.0)
    source.trading_days(DAYS[0], DAYS[-1])
    assert server.logins == 2


@pytest.mark.parametrize("mode", ["close", "half_close"])
def test_a_closed_connection_is_an_error_not_a_spin_and_the_retry_logs_in_again(make: Any, server: BaostockServer,
                                                                              mode: str) -> None:
    """Before: send_msg looped on the empty read at 100% CPU and the socket timeout never fired."""
    source = make(request_timeout_s=30.0, call_deadline_s=30.0)
    server.misbehave(mode, when=lambda a: a.kind == "98", times=1)
    started = time.monotonic()
    results = dict(source.fetch_days(DAYS[:1], never))
    assert time.monotonic() - started < 10  # noticed at once, not at a timeout
    assert isinstance(results[DAYS[0]], DayBatch)
    assert server.logins == 2  # the retry opened a new session


def test_a_stalled_login_fails_in_bounded_time(make: Any, server: BaostockServer) -> None:
    """Before: login() connected and read before the adapter set any timeout."""
    server.misbehave("stall", when=lambda a: a.kind == "00")
    source = make(request_timeout_s=0.5, call_deadline_s=2.0, request_retries=1)
    started = time.monotonic()
    with pytest.raises(SourceError, match="login"):
        source.trading_days(DAYS[0], DAYS[-1])
    assert time.monotonic() - started < 2 * 2.0 + 10


@pytest.mark.parametrize("mode", ["stall", "garbage", "close"])
def test_a_wedged_upstream_fails_the_days_in_bounded_time_and_stops_asking(make: Any, server: BaostockServer, mode: str) -> None:
    source = make(request_timeout_s=0.5, call_deadline_s=2.0, request_retries=1, give_up_after=2)
    source.listed_on(DAYS[0])
    server.misbehave(mode, when=lambda a: a.kind == "98")
    started = time.monotonic()
    results = dict(source.fetch_days(DAYS, never))
    assert all(isinstance(result, DayFailure) for result in results.values())
    assert sum("not asked" in result.error for result in results.values()) == len(DAYS) - 2  # type: ignore[union-attr]
    assert server.count(lambda a: a.kind == "98") == 2 * 2
    assert time.monotonic() - started < 2 * 2 * 2.0 + 15


def test_by_stock_asks_each_stock_once_for_the_whole_range(make: Any, server: BaostockServer, market: Market) -> None:
    source = make(market_daily=False)
    assert source.plan(DAYS) == "by_stock"
    answers = {answer.code: answer for answer in source.fetch_stocks(DAYS[0], DAYS[-1], never)}
    assert set(answers) == {s.code for s in market.stocks if s.exchange != "bj"}
    assert server.count(lambda a: a.kind == "95") == SH_SZ
    ex_day = dict(answers["600000"].bars)[EX_DATE]  # type: ignore[union-attr]
    assert ex_day[5] == market.bar("600000", EX_DATE).pre_close  # type: ignore[union-attr]
    assert all(isinstance(answer, StockBars) for answer in answers.values())


def test_trading_days_and_listings(make: Any, market: Market) -> None:
    source = make()
    assert source.trading_days(dt.date(2024, 1, 1), dt.date(2024, 1, 7)) == DAYS[:4]
    assert {stock.code for stock in source.stock_list()} == {s.code for s in market.stocks
                                                             if s.exchange != "bj" and not s.delisted}
    assert source.listed_on(dt.date(2024, 1, 5)) == len(market.listed_on(dt.date(2024, 1, 5), ("sh", "sz")))
