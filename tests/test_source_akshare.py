"""AkshareSource through the real akshare library, its HTTP intercepted at the transport by `relay`.

akshare runs unmodified in the source's child process; every request it makes (Eastmoney,
Sina, the three exchanges) goes to a local server that answers tests/market.py's market in
each service's documented shape, or misbehaves the way those services do.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from market import DAYS, EX_DATE, Market, Stock
from structlog.testing import capture_logs
from upstreams import FakeTime, HttpUpstream, akshare_route, is_hist

from syncd.config import AkshareConfig
from syncd.sources.akshare import AkshareSource
from syncd.sources.base import SHANGHAI, DayBatch, DayFailure, StockBars, StockFailure

pytest.importorskip("akshare")
FIRST, LAST = DAYS[0], DAYS[-1]
AFTER_CLOSE = dt.datetime(2024, 1, 9, 16, 0, tzinfo=SHANGHAI)


def never() -> bool:
    return False


@pytest.fixture
def market() -> Market:
    return Market()


@pytest.fixture
def upstream(market: Market) -> Iterator[HttpUpstream]:
    server = HttpUpstream(akshare_route(market, snapshot_day=AFTER_CLOSE.date()))
    yield server
    server.stop()


@pytest.fixture
def make(upstream: HttpUpstream) -> Iterator[Any]:
    made: list[AkshareSource] = []

    def build(now: dt.datetime = AFTER_CLOSE, time_: FakeTime | None = None, **settings: Any) -> AkshareSource:
        config = AkshareConfig(**{"relay": upstream.url, "requests_per_second": 10_000, "jitter": 0, **settings})
        source = AkshareSource(config, now=lambda: now, **(time_ or FakeTime()).timing())
        made.append(source)
        return source

    yield build
    for source in made:
        source.close()


def stocks_of(source: AkshareSource, codes: list[str] | None = None) -> dict[str, StockBars | StockFailure]:
    return {answer.code: answer for answer in source.fetch_stocks(FIRST, LAST, never, codes)}


def bars(answer: StockBars | StockFailure) -> dict[dt.date, tuple[Any, ...]]:
    assert isinstance(answer, StockBars), answer
    return dict(answer.bars)


def test_each_stock_is_asked_once_for_the_whole_range_with_its_factor_series(make: Any, upstream: HttpUpstream, market: Market) -> None:
    source = make()
    answers = stocks_of(source)
    assert set(answers) == {stock.code for stock in market.stocks}  # the delisted 600289 included
    assert upstream.count(is_hist()) == len(market.stocks)
    assert upstream.count(lambda r: r.path.endswith("/hfq.js")) == len(market.stocks)
    assert {r.query["fqt"] for r in upstream.requests if is_hist()(r)} == {"0"}  # raw prices, always
    assert {(r.query["beg"], r.query["end"]) for r in upstream.requests if is_hist()(r)} == {("20240102", "20240112")}


def test_the_ex_date_gets_the_exchanges_pre_close_and_the_factor_steps(make: Any, market: Market) -> None:
    rows = bars(stocks_of(make(), ["600000"])["600000"])
    bar, before = market.bar("600000", EX_DATE), market.bar("600000", dt.date(2024, 1, 3))
    assert bar is not None and before is not None
    code, open_, high, low, close, pre_close, volume, amount, turnover, pct, factor = rows[EX_DATE]
    assert (open_, high, low, close, volume, amount) == (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.amount)
    assert pre_close == bar.pre_close == round(before.close - 0.50, 2)  # not Eastmoney's close - 涨跌额 (the old close)
    assert pct == round((bar.close - bar.pre_close) / bar.pre_close * 100, 2)
    assert rows[dt.date(2024, 1, 3)][10] == 1.0  # base 1.0 before the first step
    assert factor == pytest.approx(market.factor("600000", EX_DATE))
    assert rows[dt.date(2024, 1, 5)][5] == bar.close  # the day after: the previous close again


def test_star_suspended_new_listing_and_delisted_stocks(make: Any, market: Market) -> None:
    answers = stocks_of(make(), ["688981", "000004", "301589", "600289", "830799"])
    star = bars(answers["688981"])[EX_DATE]
    assert star[6] == market.bar("688981", EX_DATE).volume  # type: ignore[union-attr]  # shares, from lots
    assert star[7] / star[6] == pytest.approx((star[1] + star[4]) / 2)  # amount / volume is a price of the day
    suspended = bars(answers["000004"])
    assert dt.date(2024, 1, 8) not in suspended and dt.date(2024, 1, 10) in suspended
    assert suspended[dt.date(2024, 1, 10)][5] == suspended[dt.date(2024, 1, 5)][4]  # pre_close bridges the suspension
    listing = bars(answers["301589"])
    assert min(listing) == dt.date(2024, 1, 9) and listing[dt.date(2024, 1, 9)][5] == 20.00  # the issue price
    assert max(bars(answers["600289"])) == dt.date(2024, 1, 5)
    assert bars(answers["830799"])  # Beijing


def test_listed_on_counts_by_listing_and_delisting_dates(make: Any, market: Market) -> None:
    source = make()
    for day in (dt.date(2024, 1, 5), dt.date(2024, 1, 8), dt.date(2024, 1, 9)):
        assert source.listed_on(day) == len(market.listed_on(day))


def test_the_stock_list_is_fresh_for_every_run_in_the_same_process(make: Any, market: Market) -> None:
    """Before: only the outer stock_info_a_code_name cache was cleared; the exchange lists kept theirs."""
    source = make()
    first = {stock.code: stock.name for stock in source.stock_list()}
    market.stocks.append(Stock("603999", "读者传媒", dt.date(2024, 1, 9), 6.0, 576_000_000))
    market.stocks[:] = [Stock(s.code, "ST" + s.name, s.listed, s.base, s.float_shares) if s.code == "000004" else s
                        for s in market.stocks]
    second = {stock.code: stock.name for stock in source.stock_list()}
    assert "603999" not in first and second["603999"] == "读者传媒"
    assert second["000004"] == "ST国华网安"
    assert source._processes[0].starts == 1  # the same library process: its caches were cleared, not dropped


def test_adjust_does_not_change_stored_prices(make: Any, upstream: HttpUpstream) -> None:
    with capture_logs() as logs:
        adjusted = stocks_of(make(adjust="qfq"), ["600000"])
    assert bars(adjusted["600000"]) == bars(stocks_of(make(), ["600000"])["600000"])
    assert {r.query["fqt"] for r in upstream.requests if is_hist()(r)} == {"0"}
    assert any(entry["event"] == "source_setting_ignored" for entry in logs)


@pytest.mark.parametrize("mode", ["403", "456", "empty"])
def test_a_banned_stock_fails_alone_after_its_retries_and_the_source_pauses(make: Any, upstream: HttpUpstream, mode: str) -> None:
    upstream.misbehave(mode, when=is_hist("000004"))
    clock = FakeTime()
    with capture_logs() as logs:
        answers = stocks_of(make(time_=clock))
    failure = answers["000004"]
    assert isinstance(failure, StockFailure) and "000004" in failure.error
    assert all(isinstance(answer, StockBars) for code, answer in answers.items() if code != "000004")
    assert upstream.count(is_hist("000004")) == 1  # a ban is not retried at once: it would only deepen it
    assert upstream.count(is_hist()) == len(answers)
    pauses = [entry["seconds"] for entry in logs if entry["event"] == "source_paused"]
    assert pauses == [60.0]  # every thread waits before its next request
    assert clock.now >= 60.0


def test_bans_in_a_row_pause_longer_each_time_up_to_the_limit(make: Any, upstream: HttpUpstream) -> None:
    upstream.misbehave("403", when=is_hist())
    with capture_logs() as logs:
        answers = stocks_of(make(time_=FakeTime(), give_up_after=6))
    pauses = [entry["seconds"] for entry in logs if entry["event"] == "source_paused"]
    assert pauses == [60.0, 120.0, 240.0, 300.0, 300.0, 300.0]
    assert sum(isinstance(answer, StockFailure) and "not asked" in answer.error for answer in answers.values()) == 16 - 6


def test_a_dropped_connection_is_retried_and_keeps_what_was_fetched(make: Any, upstream: HttpUpstream) -> None:
    upstream.misbehave("close", when=is_hist("600000"), times=1)
    answers = stocks_of(make())
    assert all(isinstance(answer, StockBars) for answer in answers.values())
    assert upstream.count(is_hist("600000")) == 2


@pytest.mark.parametrize("mode", ["stall", "half_close", "garbage"])
def test_a_wedged_upstream_costs_a_bounded_time_then_the_rest_is_not_asked(make: Any, upstream: HttpUpstream, mode: str) -> None:
    source = make(request_timeout_s=0.5, call_deadline_s=2.0, request_retries=1, give_up_after=2)
    source.listed_on(FIRST)  # the lists answer; then every history request misbehaves
    upstream.misbehave(mode, when=is_hist())
    started = time.monotonic()
    answers = stocks_of(source)
    elapsed = time.monotonic() - started
    assert all(isinstance(answer, StockFailure) for answer in answers.values()) and len(answers) == 16
    assert sum("not asked" in answer.error for answer in answers.values()) == 14  # type: ignore[union-attr]
    assert upstream.count(is_hist()) == 2 * 2  # give_up_after x attempts
    assert elapsed < 2 * 2 * 2.0 + 15  # give_up_after x attempts x call deadline (+ process restarts)


def test_the_exchange_lists_have_a_timeout_though_akshare_passes_none(make: Any, upstream: HttpUpstream) -> None:
    upstream.misbehave("stall", when=lambda r: r.host == "query.sse.com.cn")
    source = make(request_timeout_s=0.5, call_deadline_s=30.0, request_retries=0)
    started = time.monotonic()
    with pytest.raises(Exception, match="stock list sh"):
        source.stock_list()
    assert time.monotonic() - started < 15  # the transport's timeout, well before the call's deadline


def test_the_snapshot_stands_for_today_after_the_close_on_a_confirmed_day(make: Any, upstream: HttpUpstream, market: Market) -> None:
    source = make()
    today = AFTER_CLOSE.date()
    assert source.plan([today]) == "by_day"
    [(day, batch)] = list(source.fetch_days([today], never))
    assert isinstance(batch, DayBatch) and not batch.missing
    rows = {row[0]: row for row in batch.rows}  # type: ignore[union-attr]
    bar = market.bar("600000", today)
    assert bar is not None
    assert rows["600000"] == ("600000", bar.open, bar.high, bar.low, bar.close, bar.pre_close, bar.volume,
                              bar.amount, round(bar.turnover, 2), bar.pct, None)
    assert "000004" not in rows  # suspended: in the snapshot, unpriced
    assert batch.expected == len(market.listed_on(today))


@pytest.mark.parametrize("now, calendar, reason", [
    (dt.datetime(2024, 1, 9, 15, 0, tzinfo=SHANGHAI), None, "has not closed"),
    (dt.datetime(2024, 1, 13, 20, 0, tzinfo=SHANGHAI), None, "does not confirm"),  # a Saturday
    (dt.datetime(2027, 1, 4, 20, 0, tzinfo=SHANGHAI), None, "does not confirm"),  # past every calendar
])
def test_the_snapshot_is_refused_unless_closed_and_confirmed(make: Any, upstream: HttpUpstream, now: dt.datetime,
                                                             calendar: Any, reason: str) -> None:
    source = make(now=now)
    assert source.plan([now.date()]) == "by_stock"
    [(_, result)] = list(source.fetch_days([now.date()], never))
    assert isinstance(result, DayFailure) and reason in result.error
    assert upstream.count(lambda r: r.path == "/api/qt/clist/get") == 0


def test_the_snapshot_is_refused_when_the_calendar_cannot_be_fetched(make: Any, upstream: HttpUpstream) -> None:
    upstream.misbehave("403", when=lambda r: r.path.endswith("klc_td_sh.txt"))
    [(_, result)] = list(make(request_retries=0).fetch_days([AFTER_CLOSE.date()], never))
    assert isinstance(result, DayFailure) and "cannot confirm" in result.error


def test_a_stock_absent_from_the_snapshot_is_missing(make: Any, market: Market, upstream: HttpUpstream) -> None:
    source = make()
    source.listed_on(FIRST)
    market.stocks[:] = [stock for stock in market.stocks if stock.code != "300750"]  # gone from Eastmoney's answer only
    [(_, batch)] = list(source.fetch_days([AFTER_CLOSE.date()], never))
    assert isinstance(batch, DayBatch) and batch.missing == frozenset({"300750"})


def test_trading_days_from_sinas_calendar(make: Any) -> None:
    source = make()
    assert source.trading_days(dt.date(2024, 1, 1), dt.date(2024, 1, 7)) == DAYS[:4]
    assert source.trading_days(dt.date(2024, 1, 1), dt.date(2024, 2, 1)) is None  # beyond what it knows
