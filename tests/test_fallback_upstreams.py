"""Fallback through the real libraries, against local servers speaking the services' documented shapes
(tests/upstreams.py, tests/market.py): baostock as the primary, banned mid-range and failing two stocks
on one day, with Tushare as its fallback; a fallback whose volumes come in other units; both down."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from market import DAYS, EX_DATE, Market
from test_syncflow import q
from test_syncflow import sync as run_in_process
from upstreams import BaostockAsk, BaostockServer, FakeTime, HttpUpstream, Reply, Request, tushare_route

from syncd.config import BaostockConfig, TushareConfig
from syncd.db import connection, migrations
from syncd.record import RunRecord
from syncd.sources.baostock import BaostockSource
from syncd.sources.tushare import TushareSource

pytest.importorskip("baostock")
BANNED_FROM = DAYS[6]           # 2024-01-10: every whole-market request of baostock from here on is cut off
GONE = {"000004", "600000"}     # on EX_DATE (whole-market answer empty) these stocks' own requests are cut off too
FALLBACK_DAYS = [EX_DATE, *DAYS[6:]]


@pytest.fixture
def dsn(database: str) -> str:
    with connection.connect(database) as conn:
        migrations.migrate(conn)
    return database


@pytest.fixture
def market() -> Market:
    return Market()


@pytest.fixture
def baostock(market: Market) -> Iterator[BaostockServer]:
    server = BaostockServer(market, market_daily_empty={EX_DATE})  # on EX_DATE the source asks stock by stock

    def banned(ask: BaostockAsk) -> bool:
        return ((ask.kind == "95" and ask.fields[4][3:] in GONE) or
                (ask.kind == "98" and dt.date.fromisoformat(ask.fields[2]) >= BANNED_FROM))

    server.misbehave("close", when=banned)
    yield server
    server.stop()


def tushare_server(market: Market, alter: Callable[[Request, Reply], Reply] | None = None) -> HttpUpstream:
    route = tushare_route(market)
    return HttpUpstream(route if alter is None else lambda request: alter(request, route(request)))


def sources(baostock: BaostockServer, tushare: HttpUpstream) -> tuple[BaostockSource, TushareSource]:
    primary = BaostockSource(BaostockConfig(server=baostock.address, requests_per_second=10_000, jitter=0, request_retries=0),
                             market_daily=True, **FakeTime().timing())
    fallback = TushareSource(TushareConfig(token="good-token", url=tushare.url, requests_per_minute=60_000, request_retries=0),
                             **FakeTime().timing())
    return primary, fallback


def sync(dsn: str, primary: Any, fallback: Any) -> RunRecord:
    try:
        return run_in_process(dsn, primary, DAYS[0], DAYS[-1], fallbacks=[fallback])
    finally:
        fallback.close()


def traded(market: Market, day: dt.date, *, beijing: bool = True) -> set[str]:
    """The stocks with a bar on `day` (baostock has no Beijing stocks)."""
    return {s.code for s in market.stocks if market.bar(s.code, day) is not None and (beijing or s.exchange != "bj")}


def dailies(tushare: HttpUpstream) -> list[str]:
    return [r.json()["params"]["trade_date"] for r in tushare.requests if r.json()["api_name"] == "daily"]


def test_the_primary_banned_mid_range_the_fallback_fills_exactly_the_missing_days_and_stocks(dsn, market, baostock):
    tushare = tushare_server(market)
    try:
        run = sync(dsn, *sources(baostock, tushare))
        asked = dailies(tushare)
    finally:
        tushare.stop()
    assert (run.status, run.days_done, run.days_failed) == ("succeeded", len(DAYS), 0)
    assert asked == [f"{day:%Y%m%d}" for day in FALLBACK_DAYS]  # exactly the days the primary could not give whole

    recorded = {day: rest for day, *rest in q(dsn, "SELECT date, status, rows, source, fallback_stocks, missing FROM sync_days")}
    entries = q(dsn, "SELECT trade_date, code, source FROM bar_sources ORDER BY 1, 2")
    stored = {day: {code for (code,) in q(dsn, "SELECT code FROM daily_bars WHERE trade_date = %s", day)} for day in DAYS}
    for day in DAYS:
        if day >= BANNED_FROM:  # the whole day from Tushare: Beijing's stock too
            assert recorded[day] == ["success", len(traded(market, day)), "tushare", len(traded(market, day)), 0]
            assert stored[day] == traded(market, day)
        elif day == EX_DATE:  # baostock's day, two of its stocks from Tushare, in the same write
            assert recorded[day] == ["success", len(traded(market, day, beijing=False)), "baostock", 2, 0]
            assert stored[day] == traded(market, day, beijing=False)
        else:
            assert recorded[day] == ["success", len(traded(market, day, beijing=False)), "baostock", 0, 0]
    assert entries == [(EX_DATE, code, "tushare") for code in sorted(GONE)]  # per-stock provenance: only where it differs

    bar = market.bar("600000", EX_DATE)
    assert bar is not None
    assert q(dsn, "SELECT close, pre_close, volume FROM daily_bars WHERE trade_date = %s AND code = '600000'", EX_DATE) == [
        (bar.close, bar.pre_close, bar.volume)]  # the ex-date's exchange pre_close, volume in shares
    # adj_factor: every source's is the contract's (cumulative, base 1.0 at listing): one series across the sources
    listed = q(dsn, "SELECT trade_date, adj_factor FROM daily_bars WHERE code = '301589' ORDER BY 1")
    assert listed == [(day, market.factor("301589", day)) for day in DAYS[5:]]  # listed 01-09 (baostock), then Tushare's
    assert q(dsn, "SELECT adj_factor FROM daily_bars WHERE code = '600000' AND trade_date = %s", EX_DATE) == [
        (market.factor("600000", EX_DATE),)]


def in_yuan(request: Request, reply: Reply) -> Reply:
    """Tushare's `daily` answering amount in yuan where it documents thousands of yuan: x1000 after the source's
    conversion (vol in shares where it documents lots the source itself would catch: stockplan.shares)."""
    if request.json()["api_name"] != "daily" or not isinstance(reply.body, dict) or not reply.body.get("data"):
        return reply
    data = reply.body["data"]
    column = data["fields"].index("amount")
    for item in data["items"]:
        item[column] = item[column] * 1000
    return reply


def test_a_fallback_in_other_units_is_refused_by_the_unit_rule_before_anything_is_written(dsn, market, baostock):
    tushare = tushare_server(market, in_yuan)
    try:
        run = sync(dsn, *sources(baostock, tushare))
    finally:
        tushare.stop()
    assert (run.status, run.days_failed) == ("partial", 1 + len(DAYS[6:]))
    for day in DAYS[6:]:  # whole days: failed, with both reasons, nothing of them written
        status, rows, error = q(dsn, "SELECT status, rows, error FROM sync_days WHERE date = %s", day)[0]
        assert (status, rows) == ("failed", 0)
        assert "fallback tushare: unit guard:" in error and "none of them was written" in error
        assert q(dsn, "SELECT count(*) FROM daily_bars WHERE trade_date = %s", day) == [(0,)]
    status, rows, source, fallback_stocks, error = q(
        dsn, "SELECT status, rows, source, fallback_stocks, error FROM sync_days WHERE date = %s", EX_DATE)[0]
    assert (status, source, fallback_stocks) == ("incomplete", "baostock", 0)  # the primary's rows alone, as without one
    assert rows == len(traded(market, EX_DATE, beijing=False)) - len(GONE)
    assert "2 of" in error and "fallback tushare: unit guard: 2 of 2 rows" in error
    assert q(dsn, "SELECT count(*) FROM bar_sources") == [(0,)]


def test_both_sources_down_fail_each_day_once_with_both_reasons(dsn, market, baostock):
    tushare = tushare_server(market)
    tushare.misbehave("close")
    try:
        run = sync(dsn, *sources(baostock, tushare))
    finally:
        tushare.stop()
    assert (run.status, run.days_done, run.days_failed) == ("partial", len(DAYS), 1 + len(DAYS[6:]))
    for day in DAYS[6:]:
        status, error = q(dsn, "SELECT status, error FROM sync_days WHERE date = %s", day)[0]
        assert status == "failed" and "baostock" in error and "fallback tushare:" in error
    assert q(dsn, "SELECT status FROM sync_days WHERE date = %s", EX_DATE) == [("incomplete",)]
