"""BaostockSource against a fake baostock module serving recorded responses (no network, no baostock).

The responses in tests/fixtures/baostock/ are what baostock's own ResultData exposes
(`fields`, rows of strings from `get_row_data()`), recorded by record.py there. The fake
replaces the library at its import boundary (the `library=` argument) and behaves like it:
queries fail with error 10001001 unless logged in, results are drained with next().
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from syncd.config import BaostockConfig, SourceConfig
from syncd.sources import load_source
from syncd.sources.base import DayFailure, SourceError, SourceUnavailable, StockInfo
from syncd.sources.baostock import SHANGHAI, BaostockSource
from syncd.sources.ratelimit import RateLimiter

FIXTURES = Path(__file__).parent / "fixtures" / "baostock"
WINDOW = [dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4), dt.date(2024, 1, 5)]
WINDOW_CODES = ["sh.600000", "sh.688981", "sz.000001", "sz.000004", "sz.300750", "sz.301589"]


def responses(name: str) -> dict[str, dict[str, Any]]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))["responses"]


class FakeResult:
    """The part of baostock's ResultData that clients use."""

    def __init__(self, fields: list[str] | None = None, rows: list[list[str]] | None = None,
                 error_code: str = "0", error_msg: str = "success") -> None:
        self.fields, self.data = fields or [], rows or []
        self.error_code, self.error_msg = error_code, error_msg
        self.cur_row_num = 0

    def next(self) -> bool:
        return self.cur_row_num < len(self.data)

    def get_row_data(self) -> list[str]:
        row = self.data[self.cur_row_num]
        self.cur_row_num += 1
        return row


class FakeSocket:
    def __init__(self) -> None:
        self.timeout: float | None = None

    def settimeout(self, value: float) -> None:
        self.timeout = value


class FakeBaostock:
    """baostock < 0.9.3: login/logout and the per-stock, basic and calendar queries."""

    def __init__(self, *, fail: dict[str, int] | None = None) -> None:
        self.history = responses("query_history_k_data_plus")
        self.basic = responses("query_stock_basic")[""]
        self.calendar = next(iter(responses("query_trade_dates").values()))
        self.fail = dict(fail or {})
        self.logged_in = False
        self.logins = self.logouts = 0
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.socket = FakeSocket()
        self.common = SimpleNamespace(context=SimpleNamespace(default_socket=self.socket))
        self.in_call = threading.Semaphore(1)
        self.overlapped = False

    def login(self) -> FakeResult:
        self.logins += 1
        self.logged_in = True
        return FakeResult(error_msg="login success!")

    def logout(self) -> FakeResult:
        self.logouts += 1
        self.logged_in = False
        return FakeResult(error_msg="logout success!")

    def _serve(self, method: str, key: str, args: tuple[Any, ...], fields: list[str], rows: list[list[str]]) -> FakeResult:
        if not self.in_call.acquire(blocking=False):
            self.overlapped = True
        try:
            self.calls.append((method, args))
            if not self.logged_in:
                return FakeResult(error_code="10001001", error_msg="用户未登录")
            if self.fail.get(key, 0) > 0:
                self.fail[key] -= 1
                self.logged_in = False  # as after a dropped socket
                return FakeResult(error_code="10002007", error_msg="网络接收错误。")
            threading.Event().wait(0.002)  # long enough for an unserialised caller to overlap
            return FakeResult(list(fields), [list(row) for row in rows])
        finally:
            self.in_call.release()

    def query_history_k_data_plus(self, code: str, fields: str, start_date: str | None = None, end_date: str | None = None,
                                  frequency: str = "d", adjustflag: str = "3") -> FakeResult:
        response = self.history.get(code, {"fields": fields.split(","), "rows": []})
        rows = [row for row in response["rows"] if (start_date or "") <= row[0] <= (end_date or "9999")]
        return self._serve("query_history_k_data_plus", code, (code, fields, start_date, end_date, frequency, adjustflag),
                           response["fields"], rows)

    def query_stock_basic(self, code: str = "", code_name: str = "") -> FakeResult:
        return self._serve("query_stock_basic", "basic", (code, code_name), self.basic["fields"], self.basic["rows"])

    def query_trade_dates(self, start_date: str | None = None, end_date: str | None = None) -> FakeResult:
        rows = [row for row in self.calendar["rows"] if (start_date or "") <= row[0] <= (end_date or "9999")]
        return self._serve("query_trade_dates", "calendar", (start_date, end_date), self.calendar["fields"], rows)

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)


class FakeBaostockWithMarketDaily(FakeBaostock):
    """baostock >= 0.9.3 adds query_daily_history_k_AStock(date)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.daily = responses("query_daily_history_k_AStock")

    def query_daily_history_k_AStock(self, date: str = "") -> FakeResult:
        response = self.daily.get(date, {"fields": self.daily["2024-01-02"]["fields"], "rows": []})
        return self._serve("query_daily_history_k_AStock", date, (date,), response["fields"], response["rows"])


class CountingLimiter(RateLimiter):
    def __init__(self) -> None:
        super().__init__(1.0)
        self.count = 0

    def acquire(self) -> float:
        self.count += 1
        return 0.0


class Clock:
    def __init__(self, when: dt.datetime) -> None:
        self.now = when

    def __call__(self) -> dt.datetime:
        return self.now


def make(fake: FakeBaostock | None = None, *, limiter: RateLimiter | None = None, sleeps: list[float] | None = None,
         **config: Any) -> tuple[BaostockSource, FakeBaostock]:
    fake = fake or FakeBaostock()
    clock = Clock(dt.datetime(2024, 1, 5, 20, 0, tzinfo=SHANGHAI))
    source = BaostockSource(BaostockConfig(**config), library=fake, clock=clock,  # type: ignore[arg-type]
                            sleep=(sleeps if sleeps is not None else []).append, limiter=limiter or CountingLimiter())
    return source, fake


def never() -> bool:
    return False


def by_code(rows: Any) -> dict[str, tuple[Any, ...]]:
    return {row[0]: row for row in rows}


def test_baostock_rows_are_in_contract_units_with_plain_codes() -> None:
    source, _ = make()
    days = dict(source.fetch_window(WINDOW, never))
    row = by_code(days[dt.date(2024, 1, 2)])["600000"]
    # sh.600000: open 6.5900 high 6.6700 low 6.5300 close 6.6200 preclose 6.5800 volume 41234500 (shares)
    assert row == ("600000", 6.59, 6.67, 6.53, 6.62, 6.58, 41_234_500, 272353872.5, 0.140482, 0.607903)
    assert isinstance(row[6], int)


def test_baostock_per_stock_window_is_one_request_per_stock_listed_in_the_window() -> None:
    source, fake = make()  # FakeBaostock has no query_daily_history_k_AStock: per-stock plan
    assert not source.market_daily and source.window_days == 60
    result = list(source.fetch_window(WINDOW, never))
    assert [day for day, _ in result] == WINDOW
    asked = [args for name, args in fake.calls if name == "query_history_k_data_plus"]
    assert sorted(args[0] for args in asked) == WINDOW_CODES  # no index, B-share, ETF, delisted or future listing
    assert {args[2:] for args in asked} == {("2024-01-02", "2024-01-05", "d", "3")}
    assert fake.count("query_stock_basic") == 1
    assert source.requests_for(WINDOW) == len(asked) + 1 == 7


def test_baostock_request_count_for_20_days_of_5300_stocks() -> None:
    fake = FakeBaostock()
    rows = [[f"sh.6{n:05d}", "x", "2000-01-01", "", "1", "1"] for n in range(5300)]
    fake.basic = {"fields": fake.basic["fields"], "rows": rows}
    days = [dt.date(2024, 1, 2) + dt.timedelta(days=n) for n in range(20)]
    assert make(fake, window_days=20)[0].requests_for(days) == 5_301
    assert make(fake, window_days=1)[0].requests_for(days) == 106_000 + 1
    assert make(FakeBaostockWithMarketDaily())[0].requests_for(days) == 21  # + query_stock_basic


def test_baostock_suspended_day_is_skipped_and_empty_fields_become_none() -> None:
    source, _ = make()
    days = {day: by_code(rows) for day, rows in source.fetch_window(WINDOW, never)}
    assert "000004" in days[dt.date(2024, 1, 3)] and "000004" not in days[dt.date(2024, 1, 4)]  # tradestatus 0
    first_day = days[dt.date(2024, 1, 4)]["301589"]
    assert first_day[9] is None and first_day[6] == 11_802_319  # pctChg "" on the listing day
    assert "301589" not in days[dt.date(2024, 1, 3)]


def test_baostock_market_daily_is_one_request_per_day_for_the_whole_market() -> None:
    source, fake = make(FakeBaostockWithMarketDaily())
    assert source.market_daily and source.window_days == 1
    days = {day: by_code(rows) for day, rows in source.fetch_window(WINDOW, never)}
    assert [name for name, _ in fake.calls] == ["query_stock_basic"] + ["query_daily_history_k_AStock"] * 4
    assert "000001" in days[dt.date(2024, 1, 2)] and "600000" in days[dt.date(2024, 1, 2)]
    assert all(len(code) == 6 for rows in days.values() for code in rows)
    assert days[dt.date(2024, 1, 2)]["000001"][0:2] == ("000001", 9.4)  # sz.000001 the bank, not sh.000001 the index
    assert "000004" not in days[dt.date(2024, 1, 4)]


def test_baostock_market_day_missing_many_listed_stocks_is_incomplete() -> None:
    fake = FakeBaostockWithMarketDaily()
    thin = fake.daily["2024-01-03"]
    fake.daily["2024-01-03"] = {"fields": thin["fields"], "rows": thin["rows"][:2]}  # 2 of 5 stocks
    days = dict(make(fake)[0].fetch_window(WINDOW, never))
    failure = days[dt.date(2024, 1, 3)]
    assert isinstance(failure, DayFailure) and "2 of the 5 stocks" in failure.error
    assert isinstance(days[dt.date(2024, 1, 2)], list)


def test_baostock_per_stock_plan_when_prices_are_adjusted_or_disabled() -> None:
    assert not make(FakeBaostockWithMarketDaily(), adjustflag="2")[0].market_daily
    assert not make(FakeBaostockWithMarketDaily(), market_daily=False)[0].market_daily


def test_baostock_day_without_any_bar_is_a_day_failure() -> None:
    source, _ = make(FakeBaostockWithMarketDaily())
    [(day, result)] = list(source.fetch_window([dt.date(2024, 1, 8)], never))
    assert isinstance(result, DayFailure) and "no bars for 2024-01-08" in result.error


def test_baostock_calendar_from_query_trade_dates_and_none_beyond_it() -> None:
    source, _ = make()
    assert source.trading_days(dt.date(2024, 1, 1), dt.date(2024, 1, 7)) == WINDOW
    assert source.trading_days(dt.date(2024, 1, 1), dt.date(2024, 3, 1)) is None


def test_baostock_stock_list_is_listed_a_shares_refreshed_at_most_daily() -> None:
    source, fake = make()
    stocks = {s.code: s for s in source.stock_list()}
    assert stocks["600000"] == StockInfo("600000", "浦发银行", "sh") and stocks["000001"].exchange == "sz"
    assert "600087" not in stocks and "900901" not in stocks and "510050" not in stocks  # delisted, B-share, ETF
    source.stock_list()
    assert fake.count("query_stock_basic") == 1
    source._now.now += dt.timedelta(days=1)  # type: ignore[attr-defined]
    source.stock_list()
    assert fake.count("query_stock_basic") == 2


def test_baostock_logs_in_once_lazily_and_out_on_close() -> None:
    source, fake = make()
    assert fake.logins == 0
    list(source.fetch_window(WINDOW, never))
    source.trading_days(dt.date(2024, 1, 1), dt.date(2024, 1, 7))
    assert fake.logins == 1
    assert fake.socket.timeout == 60.0  # baostock's socket gets a timeout
    source.close()
    source.close()
    assert fake.logouts == 1


def test_baostock_error_reply_is_retried_after_a_fresh_login() -> None:
    sleeps: list[float] = []
    source, fake = make(FakeBaostock(fail={"sz.000001": 1}), sleeps=sleeps)
    days = dict(source.fetch_window(WINDOW, never))
    assert "000001" in by_code(days[dt.date(2024, 1, 2)])
    assert fake.logins == 2 and sleeps == [1.0]


def test_baostock_request_failing_after_retries_raises_source_error() -> None:
    source, fake = make(FakeBaostock(fail={"sz.000001": 99}), request_retries=1)
    with pytest.raises(SourceError, match=r"query_history_k_data_plus\(sz\.000001.*2 attempts.*10002007"):
        list(source.fetch_window(WINDOW, never))
    assert fake.count("query_history_k_data_plus") >= 2


def test_baostock_calls_are_serialised_across_threads() -> None:
    source, fake = make(FakeBaostockWithMarketDaily())
    threads = [threading.Thread(target=target) for target in (
        lambda: list(source.fetch_window(WINDOW, never)),
        lambda: source.trading_days(dt.date(2024, 1, 1), dt.date(2024, 1, 7)),
        source.stock_list,
        lambda: source.trading_days(dt.date(2024, 1, 2), dt.date(2024, 1, 5)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(fake.calls) == 7 and fake.logins == 1
    assert not fake.overlapped


def test_baostock_every_request_passes_the_rate_limiter() -> None:
    limiter = CountingLimiter()
    source, fake = make(limiter=limiter)
    list(source.fetch_window(WINDOW, never))
    assert limiter.count == len(fake.calls) == 7


def test_baostock_should_stop_ends_the_window_early() -> None:
    source, fake = make()

    def should_stop() -> bool:
        return fake.count("query_history_k_data_plus") >= 2

    assert list(source.fetch_window(WINDOW, should_stop)) == []
    assert fake.count("query_history_k_data_plus") == 2


def test_baostock_missing_extra_raises_source_unavailable_with_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "baostock", None)
    with pytest.raises(SourceUnavailable) as caught:
        load_source(SourceConfig(name="baostock"))
    message = str(caught.value)
    assert "pip install 'syncd[baostock]'" in message and "\n" not in message
