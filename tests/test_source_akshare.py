"""AkshareSource against a fake akshare module that serves recorded frames (no network, no akshare).

The frames in tests/fixtures/akshare/ were produced by the real akshare parsing code
(record.py there), so columns and dtypes are akshare's; only the library is replaced, at
its import boundary (the `library=` argument).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from syncd.config import AkshareConfig, SourceConfig
from syncd.sources import load_source
from syncd.sources.akshare import SHANGHAI, AkshareSource, plain_code
from syncd.sources.base import DayFailure, SourceError, SourceUnavailable, StockInfo
from syncd.sources.ratelimit import RateLimiter, call_with_retries

FIXTURES = Path(__file__).parent / "fixtures" / "akshare"
WINDOW = [dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4), dt.date(2024, 1, 5)]
CODES = ["000001", "000004", "300750", "600000", "600289", "688981", "830799"]


def frame_from(spec: dict[str, Any]) -> pd.DataFrame:
    """Rebuild a recorded frame with its recorded dtypes ("date" = object column of datetime.date)."""
    frame = pd.DataFrame(spec["records"], columns=spec["columns"])
    for column, dtype in spec["dtypes"].items():
        if dtype == "date":
            frame[column] = pd.Series([dt.date.fromisoformat(v) for v in frame[column]], dtype=object)
        else:
            frame[column] = frame[column].astype(dtype)
    return frame


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


class CodeNameFunction:
    """stock_info_a_code_name, including the lru_cache's cache_clear akshare gives it."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame, self.calls, self.clears = frame, 0, 0

    def __call__(self) -> pd.DataFrame:
        self.calls += 1
        return self.frame.copy()

    def cache_clear(self) -> None:
        self.clears += 1


class FakeAkshare:
    """The four akshare functions the source uses, serving fixtures and recording calls."""

    def __init__(self, *, fail: dict[str, int] | None = None, delay_s: float = 0.0) -> None:
        self.hist_frames = {code: frame_from(spec) for code, spec in load("stock_zh_a_hist")["frames"].items()}
        self.stock_info_a_code_name = CodeNameFunction(frame_from(load("stock_info_a_code_name")))
        self.fail = dict(fail or {})
        self.delay_s = delay_s
        self.hist_calls: list[dict[str, Any]] = []
        self.spot_calls = 0
        self.calendar_calls = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def stock_zh_a_hist(self, symbol: str = "000001", period: str = "daily", start_date: str = "19700101",
                        end_date: str = "20500101", adjust: str = "", timeout: float | None = None) -> pd.DataFrame:
        with self._lock:
            self.hist_calls.append({"symbol": symbol, "period": period, "start_date": start_date,
                                    "end_date": end_date, "adjust": adjust, "timeout": timeout})
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            failing = self.fail.get(symbol, 0) > 0
            if failing:
                self.fail[symbol] -= 1
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if failing:
                raise ConnectionError(f"Remote end closed connection without response ({symbol})")
            return self.hist_frames[symbol].copy()
        finally:
            with self._lock:
                self.active -= 1

    def stock_zh_a_spot_em(self) -> pd.DataFrame:
        self.spot_calls += 1
        return frame_from(load("stock_zh_a_spot_em"))

    def tool_trade_date_hist_sina(self) -> pd.DataFrame:
        self.calendar_calls += 1
        return frame_from(load("tool_trade_date_hist_sina"))


class Clock:
    def __init__(self, when: dt.datetime) -> None:
        self.now = when

    def __call__(self) -> dt.datetime:
        return self.now


class CountingLimiter(RateLimiter):
    def __init__(self) -> None:
        super().__init__(1.0)
        self.count = 0
        self._count_lock = threading.Lock()

    def acquire(self) -> float:
        with self._count_lock:
            self.count += 1
        return 0.0


def evening(day: dt.date, hour: int = 20) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, 0), tzinfo=SHANGHAI)


def make(fake: FakeAkshare | None = None, *, when: dt.datetime | None = None, limiter: RateLimiter | None = None,
         sleeps: list[float] | None = None, **config: Any) -> tuple[AkshareSource, FakeAkshare]:
    fake = fake or FakeAkshare()
    sleep_log = sleeps if sleeps is not None else []
    source = AkshareSource(AkshareConfig(**config), library=fake, clock=Clock(when or evening(dt.date(2024, 1, 5))),  # type: ignore[arg-type]
                           sleep=sleep_log.append, limiter=limiter or CountingLimiter())
    return source, fake


def never() -> bool:
    return False


def by_code(rows: list[Any]) -> dict[str, tuple[Any, ...]]:
    return {row[0]: row for row in rows}


def test_akshare_rows_are_in_contract_units_volume_lots_times_100_and_pre_close_derived() -> None:
    source, _ = make()
    days = dict(source.fetch_window(WINDOW, never))
    row = by_code(days[dt.date(2024, 1, 2)])["600000"]
    # stock_zh_a_hist: 开盘 6.59 收盘 6.62 最高 6.67 最低 6.53 涨跌额 0.04 成交量 412345 手 成交额 272353872.5
    assert row == ("600000", 6.59, 6.67, 6.53, 6.62, 6.58, 41_234_500, 272353872.5, 0.14, 0.61)
    assert isinstance(row[6], int)
    assert by_code(days[dt.date(2024, 1, 3)])["600000"][5] == 6.62  # pre_close is the previous close


def test_akshare_window_is_one_request_per_stock_regrouped_by_day_in_order() -> None:
    source, fake = make()
    result = list(source.fetch_window(WINDOW, never))
    assert [day for day, _ in result] == WINDOW
    assert sorted(call["symbol"] for call in fake.hist_calls) == CODES
    assert {(c["start_date"], c["end_date"], c["period"], c["adjust"], c["timeout"]) for c in fake.hist_calls} == {
        ("20240102", "20240105", "daily", "", 30.0)}
    assert fake.stock_info_a_code_name.calls == 1
    assert source.requests_for(WINDOW) == len(fake.hist_calls) + 1 == 8


def test_akshare_request_count_for_20_days_of_5300_stocks_versus_per_day_baseline() -> None:
    fake = FakeAkshare()
    codes = [f"{n:06d}" for n in range(1, 5301)]
    fake.stock_info_a_code_name.frame = pd.DataFrame({"code": codes, "name": ["x"] * len(codes)})
    days = [dt.date(2024, 1, 2) + dt.timedelta(days=n) for n in range(20)]
    assert make(fake, window_days=60)[0].requests_for(days) == 5_301
    assert make(fake, window_days=20)[0].requests_for(days) == 5_301
    assert make(fake, window_days=5)[0].requests_for(days) == 4 * 5_300 + 1
    assert make(fake, window_days=1)[0].requests_for(days) == 106_000 + 1  # the per-stock-per-day baseline


def test_akshare_suspended_stocks_have_no_row_and_missing_values_become_none() -> None:
    source, _ = make()
    days = {day: by_code(rows) for day, rows in source.fetch_window(WINDOW, never)}  # type: ignore[arg-type]
    assert "000004" in days[dt.date(2024, 1, 3)] and "000004" not in days[dt.date(2024, 1, 4)]
    assert all("600289" not in rows for rows in days.values())  # empty frame: suspended all window
    assert days[dt.date(2024, 1, 3)]["830799"][8] is None  # 换手率 "-" -> NaN -> None
    assert all(len(rows) == 6 for day, rows in days.items() if day != dt.date(2024, 1, 4))


@pytest.mark.parametrize("raw", ["600000", "sh600000", "SH.600000", "600000.SH", 600000, " 600000 "])
def test_akshare_plain_code_accepts_every_upstream_format(raw: object) -> None:
    assert plain_code(raw) == "600000"
    assert plain_code(1) == "000001" and plain_code("000001.SZ") == "000001" and plain_code("abc") is None


def test_akshare_stock_list_has_names_and_exchanges() -> None:
    stocks = {s.code: s for s in make()[0].stock_list()}
    assert stocks["600000"] == StockInfo("600000", "浦发银行", "sh")
    assert (stocks["000001"].exchange, stocks["300750"].exchange, stocks["830799"].exchange) == ("sz", "sz", "bj")


def test_akshare_snapshot_serves_a_window_of_only_today_with_one_request() -> None:
    today = dt.date(2024, 1, 5)
    source, fake = make(when=evening(today, 16))
    assert source.requests_for([today]) == 1
    [(day, rows)] = list(source.fetch_window([today], never))
    assert day == today and fake.spot_calls == 1 and fake.hist_calls == []
    assert fake.stock_info_a_code_name.calls == 0
    rows_by_code = by_code(rows)  # type: ignore[arg-type]
    assert "600289" not in rows_by_code  # suspended: no price in the snapshot
    assert rows_by_code["000001"] == ("000001", 9.4, 9.57, 9.34, 9.51, 9.39, 115_882_200, 1102039722.0, 0.6, 1.28)


def test_akshare_snapshot_not_used_for_past_days_or_when_disabled() -> None:
    today = dt.date(2024, 1, 5)
    source, fake = make(when=evening(today, 16), snapshot_today=False)
    list(source.fetch_window([today], never))
    assert fake.spot_calls == 0 and len(fake.hist_calls) == len(CODES)


def test_akshare_today_before_the_close_is_a_day_failure_without_any_request() -> None:
    today = dt.date(2024, 1, 5)
    source, fake = make(when=evening(today, 10))
    [(day, result)] = list(source.fetch_window([today], never))
    assert isinstance(result, DayFailure) and "not closed" in result.error
    assert fake.spot_calls == 0 and fake.hist_calls == []


def test_akshare_day_without_any_bar_fails_alone() -> None:
    monday = dt.date(2024, 1, 8)
    source, _ = make(when=evening(monday))
    result = dict(source.fetch_window([dt.date(2024, 1, 5), monday], never))
    assert isinstance(result[monday], DayFailure) and "no bars" in result[monday].error
    assert isinstance(result[dt.date(2024, 1, 5)], list)


def test_akshare_request_is_retried_then_fails_the_window_with_source_error() -> None:
    sleeps: list[float] = []
    source, fake = make(FakeAkshare(fail={"000001": 99}), sleeps=sleeps, request_retries=2, request_retry_backoff_s=1.0)
    with pytest.raises(SourceError, match=r"stock_zh_a_hist\(000001.*3 attempts.*ConnectionError"):
        list(source.fetch_window(WINDOW, never))
    assert [c["symbol"] for c in fake.hist_calls].count("000001") == 3
    assert sleeps == [1.0, 2.0]


def test_akshare_transient_failure_is_absorbed_by_retries() -> None:
    source, _ = make(FakeAkshare(fail={"600000": 1}))
    days = dict(source.fetch_window(WINDOW, never))
    assert "600000" in by_code(days[dt.date(2024, 1, 2)])  # type: ignore[arg-type]


def test_akshare_changed_output_columns_raise_source_error_naming_them() -> None:
    fake = FakeAkshare()
    fake.hist_frames["600000"] = fake.hist_frames["600000"].rename(columns={"涨跌额": "change"})
    with pytest.raises(SourceError, match="涨跌额"):
        list(make(fake)[0].fetch_window(WINDOW, never))


def test_akshare_calendar_comes_from_sina_and_none_outside_its_range() -> None:
    source, fake = make()
    assert source.trading_days(dt.date(2024, 1, 1), dt.date(2024, 1, 7)) == WINDOW
    assert source.trading_days(dt.date(2024, 1, 1), dt.date(2024, 3, 1)) is None
    assert source.trading_days(dt.date(2023, 1, 1), dt.date(2024, 1, 3)) is None
    assert fake.calendar_calls == 1  # cached for the day


def test_akshare_stock_list_is_cached_and_refreshed_at_most_daily() -> None:
    source, fake = make()
    clock = source._now  # the injected Clock
    source.stock_list()
    source.stock_list()
    clock.now += dt.timedelta(hours=3)  # type: ignore[attr-defined]
    source.stock_list()
    assert fake.stock_info_a_code_name.calls == 1
    clock.now += dt.timedelta(days=1)  # type: ignore[attr-defined]
    source.stock_list()
    assert fake.stock_info_a_code_name.calls == 2
    assert fake.stock_info_a_code_name.clears == 2  # akshare's own lru_cache is bypassed


def test_akshare_should_stop_ends_the_window_early() -> None:
    source, fake = make(FakeAkshare(), concurrency=2)
    stop_after = 3

    def should_stop() -> bool:
        return len(fake.hist_calls) >= stop_after

    assert list(source.fetch_window(WINDOW, should_stop)) == []
    assert len(fake.hist_calls) <= stop_after + 2


def test_akshare_concurrency_is_bounded_and_every_request_passes_the_limiter() -> None:
    limiter = CountingLimiter()
    source, fake = make(FakeAkshare(delay_s=0.01), concurrency=2, limiter=limiter)
    list(source.fetch_window(WINDOW, never))
    assert fake.max_active <= 2
    assert limiter.count == len(fake.hist_calls) + fake.stock_info_a_code_name.calls


def test_akshare_rate_limiter_spaces_requests_by_one_over_rate() -> None:
    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    slots = [limiter.acquire() for _ in range(5)]
    assert slots == [100.0, 100.25, 100.5, 100.75, 101.0]
    assert waits == [0.25] * 4


def test_akshare_rate_limiter_is_thread_safe() -> None:
    limiter = RateLimiter(2000.0)
    slots: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            slot = limiter.acquire()
            with lock:
                slots.append(slot)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    slots.sort()
    assert len(slots) == 80
    assert min(b - a for a, b in zip(slots, slots[1:], strict=False)) >= limiter.interval * 0.999


def test_akshare_retry_helper_names_what_failed() -> None:
    def broken() -> None:
        raise KeyError("klines")

    with pytest.raises(SourceError, match=r"akshare x failed after 2 attempts: KeyError"):
        call_with_retries(broken, what="akshare x", attempts=2, backoff_s=0, sleep=lambda s: None)


def test_akshare_missing_extra_raises_source_unavailable_with_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "akshare", None)  # makes `import akshare` fail
    with pytest.raises(SourceUnavailable) as caught:
        load_source(SourceConfig(name="akshare"))
    message = str(caught.value)
    assert "pip install 'syncd[akshare]'" in message and "\n" not in message


def test_akshare_and_baostock_modules_import_without_their_libraries() -> None:
    code = ("import sys; sys.modules['akshare'] = None; sys.modules['baostock'] = None; "
            "import syncd.sources.akshare, syncd.sources.baostock; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
