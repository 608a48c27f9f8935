"""TushareSource against a local server answering Tushare's documented HTTP API for tests/market.py.

POST {"api_name", "token", "params", "fields"} -> {"code", "msg", "data": {"fields", "items"}}:
units (vol in lots, amount in thousands of yuan), the optional datasets and their fallbacks,
Tushare's error codes, quotas, and servers that stall, close or answer garbage.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from market import DAYS, EX_DATE, Market
from structlog.testing import capture_logs
from upstreams import FakeTime, HttpUpstream, Reply, tushare_route

from syncd.config import SourceConfig, TushareConfig
from syncd.sources import load_source
from syncd.sources.base import DayBatch, DayFailure, SourceRejected, SourceUnavailable
from syncd.sources.tushare import TushareSource

TOKEN = "good-token"


def never() -> bool:
    return False


@pytest.fixture
def market() -> Market:
    return Market()


@pytest.fixture
def upstream(market: Market) -> Iterator[HttpUpstream]:
    server = HttpUpstream(tushare_route(market))
    yield server
    server.stop()


def make(upstream: HttpUpstream, time_: FakeTime | None = None, **settings: Any) -> TushareSource:
    config = TushareConfig(**{"token": TOKEN, "url": upstream.url, "requests_per_minute": 60_000, **settings})
    return TushareSource(config, **(time_ or FakeTime()).timing())


def by_code(batch: DayBatch) -> dict[str, tuple[Any, ...]]:
    assert isinstance(batch.rows, list)
    return {row[0]: row for row in batch.rows}


def days_of(source: TushareSource, days: list[dt.date]) -> dict[dt.date, DayBatch | DayFailure]:
    try:
        return dict(source.fetch_days(days, never))
    finally:
        source.close()


def test_one_request_per_dataset_per_day_converted_to_the_contract_units(upstream: HttpUpstream, market: Market) -> None:
    source = make(upstream)
    assert source.plan(DAYS) == "by_day"
    results = days_of(source, DAYS)
    batch = results[EX_DATE]
    assert isinstance(batch, DayBatch)
    row = by_code(batch)["600000"]
    bar = market.bar("600000", EX_DATE)
    assert bar is not None
    # code, open, high, low, close, pre_close, volume (shares), amount (yuan), turnover, pct_change, adj_factor
    assert row == ("600000", bar.open, bar.high, bar.low, bar.close, bar.pre_close, bar.volume,
                   pytest.approx(bar.amount, abs=0.01), bar.turnover, bar.pct, market.factor("600000", EX_DATE))
    assert row[5] == round(bar.raw_prev - 0.50, 2)  # the ex-date: the exchange's pre_close, not the previous close
    star = by_code(batch)["688981"]
    assert star[6] == market.bar("688981", EX_DATE).volume  # type: ignore[union-attr]  # lots x 100 on STAR too
    per_day = {api: upstream.count(lambda r, api=api: r.json()["api_name"] == api) for api in ("daily", "adj_factor", "daily_basic")}
    assert per_day == {"daily": len(DAYS), "adj_factor": len(DAYS), "daily_basic": len(DAYS)}
    assert upstream.count(lambda r: r.json()["api_name"] == "stock_basic") == 3  # listed, delisted, paused: once a run


def test_expected_counts_listings_delistings_and_suspensions(upstream: HttpUpstream, market: Market) -> None:
    results = days_of(make(upstream), DAYS)
    suspended_day, listing_day, delisted_day = dt.date(2024, 1, 8), dt.date(2024, 1, 9), dt.date(2024, 1, 8)
    batch = results[suspended_day]
    assert isinstance(batch, DayBatch)
    assert "000004" not in by_code(batch) and not batch.missing  # suspended: expected, not missing
    assert batch.expected == len(market.listed_on(suspended_day))
    assert "600289" in by_code(results[dt.date(2024, 1, 5)])  # type: ignore[arg-type]
    assert "600289" not in by_code(results[delisted_day])  # type: ignore[arg-type]
    new = by_code(results[listing_day])["301589"]  # type: ignore[arg-type]
    assert new[5] == 20.00  # the issue price is the listing day's reference price
    assert results[listing_day].expected == results[dt.date(2024, 1, 5)].expected  # type: ignore[union-attr]  # one in, one out


def test_an_optional_dataset_without_permission_falls_back_and_is_logged_once_per_run(market: Market) -> None:
    server = HttpUpstream(tushare_route(market, refuse=("adj_factor", "daily_basic")))
    try:
        with capture_logs() as logs:
            results = days_of(make(server), DAYS[:4])
        for batch in results.values():
            assert isinstance(batch, DayBatch)
            assert all(row[8] is None and row[10] is None for row in batch.rows)  # turnover, adj_factor NULL
            assert all(row[5] is not None for row in batch.rows)  # pre_close stays: the factor follows from it
        refused = [entry for entry in logs if entry["event"] == "source_dataset_unavailable"]
        assert sorted(entry["dataset"] for entry in refused) == ["adj_factor", "daily_basic"]
        assert server.count(lambda r: r.json()["api_name"] == "adj_factor") == 1  # not asked again this run
    finally:
        server.stop()


@pytest.mark.parametrize("refused", [(), ("daily",)])
def test_a_bad_token_or_no_permission_for_daily_fails_the_run_without_showing_the_token(market: Market, refused: tuple[str, ...]) -> None:
    server = HttpUpstream(tushare_route(market, refuse=refused, token="another" if not refused else TOKEN))
    try:
        source = make(server)
        with capture_logs() as logs, pytest.raises(SourceRejected) as caught:
            days_of(source, DAYS[:2])
        message = str(caught.value)
        assert ("TOKEN" in message) if not refused else ("没有访问该接口的权限" in message)
        assert TOKEN not in message and TOKEN not in repr(source) and TOKEN not in repr(logs)
        assert server.count(lambda r: r.json()["api_name"] == "daily") == 1  # never retried
    finally:
        server.stop()


def test_the_token_comes_from_the_environment_and_is_required() -> None:
    with pytest.raises(SourceUnavailable, match="SYNCD_TUSHARE_TOKEN"):
        TushareSource(TushareConfig(), environ={})
    source = TushareSource(TushareConfig(), environ={"SYNCD_TUSHARE_TOKEN": "from-env"})
    assert "from-env" not in repr(source) and "from-env" not in repr(TushareConfig(token="from-env"))
    source.close()


def test_a_per_minute_quota_pauses_every_request_then_retries(market: Market) -> None:
    calls = {"n": 0}
    route = tushare_route(market)

    def quota_once(request: Any) -> Reply:
        if request.json()["api_name"] == "daily" and calls["n"] == 0:
            calls["n"] += 1
            return Reply({"code": 40203, "msg": "抱歉，您每分钟最多访问该接口500次，权限的具体详情访问：https://tushare.pro/document/1?doc_id=108。"})
        return route(request)

    server, clock = HttpUpstream(quota_once), FakeTime()
    try:
        results = days_of(make(server, clock), DAYS[:1])
        assert isinstance(results[DAYS[0]], DayBatch)
        assert sum(clock.slept) >= 60  # a minute's pause, not a failed day
    finally:
        server.stop()


def test_a_day_not_published_yet_fails_alone(market: Market) -> None:
    empty = Market(days=DAYS)
    empty.bars = {code: [bar for bar in bars if bar.day != DAYS[-1]] for code, bars in market.bars.items()}
    server = HttpUpstream(tushare_route(empty))
    try:
        results = days_of(make(server), DAYS[-2:])
        assert isinstance(results[DAYS[-2]], DayBatch)
        failure = results[DAYS[-1]]
        assert isinstance(failure, DayFailure) and "no bars" in failure.error
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["stall", "close", "half_close", "garbage", "403", "empty"])
def test_a_misbehaving_upstream_fails_the_days_in_bounded_time_and_stops_asking(upstream: HttpUpstream, mode: str) -> None:
    source = make(upstream, request_timeout_s=0.5, call_deadline_s=1.0, request_retries=1, give_up_after=2)
    source.listed_on(DAYS[0])  # the stock list first, then every data request misbehaves
    upstream.misbehave(mode, when=lambda r: r.json()["api_name"] == "daily")
    started = time.monotonic()
    results = days_of(source, DAYS)
    elapsed = time.monotonic() - started
    assert all(isinstance(result, DayFailure) for result in results.values())
    assert sum("not asked" in result.error for result in results.values()) == len(DAYS) - 2  # type: ignore[union-attr]
    attempts = 1 if mode in ("403", "empty") else 2  # a ban is not retried: the source pauses instead
    assert upstream.count(lambda r: r.json()["api_name"] == "daily") == 2 * attempts  # 2 days x attempts
    assert elapsed < 2 * 2 * 1.0 + 10  # the bound: days x attempts x deadline (+ process restarts)


def test_the_calendar_comes_from_trade_cal_and_says_none_beyond_it(upstream: HttpUpstream) -> None:
    source = make(upstream)
    try:
        assert source.trading_days(dt.date(2024, 1, 1), dt.date(2024, 1, 7)) == DAYS[:4]
        assert source.trading_days(dt.date(2024, 1, 1), dt.date(2025, 6, 1)) is None
    finally:
        source.close()


def test_load_source_builds_tushare_from_config(upstream: HttpUpstream) -> None:
    source = load_source(SourceConfig(name="tushare", tushare=TushareConfig(token=TOKEN, url=upstream.url)))
    assert isinstance(source, TushareSource)
    source.close()
