"""Benchmark 5, upstream requests per synced day: each source's fetch plan against one request per stock per day.

For a 20-trading-day range of 5,300 stocks, each source's `requests_for(days)` gives the
requests its plan makes. akshare and baostock run against in-memory stand-ins of their
libraries (passed through the sources' `library=` argument: nothing leaves the machine,
and neither library needs to be installed), and their `fetch_window` is then really run
over the range with every library call counted, so the plan is checked against what the
code does. The naive plan is one request per stock per day (106,000 here).
"""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from syncd.config import AkshareConfig, BaostockConfig, CsvConfig, DemoConfig

from .harness import STOCKS, emit, note, print_table, trading_days

FIRST_DAY = dt.date(2024, 3, 1)
DAYS = 20
EVENING = dt.datetime(2024, 6, 3, 20, 0, tzinfo=ZoneInfo("Asia/Shanghai"))  # every day of the range has closed


def market_codes(count: int = STOCKS) -> list[str]:
    """`count` plausible A-share codes (Shanghai 60/68, Shenzhen 00/30), plain six digits."""
    codes = ([f"{600000 + i}" for i in range(1700)] + [f"{688000 + i}" for i in range(600)]
             + [f"{1 + i:06d}" for i in range(1500)] + [f"{300001 + i}" for i in range(1500)])
    return codes[:count]


class Calls:
    """Counts library calls by name, from any thread."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def total(self, *excluded: str) -> int:
        return sum(n for name, n in self.counts.items() if name not in excluded)


class Frame:
    """The little of a pandas DataFrame the akshare source reads: columns, [name].tolist(), len()."""

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self._data = columns
        self.columns = list(columns)

    def __getitem__(self, name: str) -> Any:
        values = self._data[name]
        return type("Column", (), {"tolist": lambda self: list(values)})()

    def __len__(self) -> int:
        return len(next(iter(self._data.values()), []))


class FakeAkshare:
    def __init__(self, codes: list[str], open_days: list[dt.date]) -> None:
        self.codes, self.open_days, self.calls = codes, open_days, Calls()

    def stock_info_a_code_name(self) -> Frame:
        self.calls.add("stock_info_a_code_name")
        return Frame({"code": list(self.codes), "name": [f"S{c}" for c in self.codes]})

    def stock_zh_a_hist(self, symbol: str, period: str, start_date: str, end_date: str, adjust: str, timeout: float) -> Frame:
        self.calls.add("stock_zh_a_hist")
        first, last = dt.datetime.strptime(start_date, "%Y%m%d").date(), dt.datetime.strptime(end_date, "%Y%m%d").date()
        days = [d for d in self.open_days if first <= d <= last]
        return Frame({"日期": days, "开盘": [10.0] * len(days), "最高": [10.5] * len(days), "最低": [9.5] * len(days),
                      "收盘": [10.2] * len(days), "涨跌额": [0.2] * len(days), "成交量": [1000] * len(days),
                      "成交额": [1.02e6] * len(days), "换手率": [0.5] * len(days), "涨跌幅": [2.0] * len(days)})

    def stock_zh_a_spot_em(self) -> Frame:
        self.calls.add("stock_zh_a_spot_em")
        raise NotImplementedError("not used for a past range")


class Result:
    """A baostock ResultData: error_code, fields, next(), get_row_data()."""

    def __init__(self, fields: list[str], rows: list[list[str]]) -> None:
        self.error_code, self.error_msg, self.fields = "0", "success", fields
        self._rows, self._i = rows, -1

    def next(self) -> bool:
        self._i += 1
        return self._i < len(self._rows)

    def get_row_data(self) -> list[str]:
        return self._rows[self._i]


class FakeBaostock:
    K_FIELDS = ("date", "code", "open", "high", "low", "close", "preclose", "volume", "amount", "turn", "tradestatus", "pctChg")

    def __init__(self, codes: list[str], open_days: list[dt.date]) -> None:
        self.codes = [("sh." if c.startswith("6") else "sz.") + c for c in codes]
        self.open_days, self.calls = open_days, Calls()

    def login(self) -> Result:
        self.calls.add("login")
        return Result([], [])

    def logout(self) -> Result:
        self.calls.add("logout")
        return Result([], [])

    def query_stock_basic(self) -> Result:
        self.calls.add("query_stock_basic")
        return Result(["code", "code_name", "ipoDate", "outDate", "type", "status"],
                      [[c, f"S{c}", "2000-01-01", "", "1", "1"] for c in self.codes])

    def query_history_k_data_plus(self, code: str, fields: str, start_date: str, end_date: str, frequency: str,
                                  adjustflag: str) -> Result:
        self.calls.add("query_history_k_data_plus")
        first, last = dt.date.fromisoformat(start_date), dt.date.fromisoformat(end_date)
        return Result(list(self.K_FIELDS), [self._bar(d, code) for d in self.open_days if first <= d <= last])

    def _bar(self, day: dt.date, code: str) -> list[str]:
        return [day.isoformat(), code, "10", "10.5", "9.5", "10.2", "10", "100000", "1020000", "0.5", "1", "2.0"]


class FakeBaostockMarketDaily(FakeBaostock):
    def query_daily_history_k_AStock(self, date: str) -> Result:
        self.calls.add("query_daily_history_k_AStock")
        day = dt.date.fromisoformat(date)
        return Result(list(self.K_FIELDS), [self._bar(day, code) for code in self.codes])


class NoLimit:
    def acquire(self) -> float:
        return 0.0


def run() -> dict[str, Any]:
    days = trading_days(FIRST_DAY, FIRST_DAY + dt.timedelta(days=60))[:DAYS]
    codes = market_codes()
    naive = len(codes) * len(days)
    note(f"fetch plans: {len(days)} trading days {days[0]}..{days[-1]} x {len(codes)} stocks")
    plans = [_demo(days), _csv(days)] + _akshare(days, codes) + _baostock(days, codes)
    rows = [(name, planned, "-" if counted is None else counted, planned / len(days), naive / planned, remark)
            for name, planned, counted, remark in plans]
    rows.append(("naive: one request per stock per day", naive, "-", naive / len(days), 1.0, ""))
    print_table(f"Upstream requests for {len(days)} trading days of {len(codes)} stocks",
                ("source plan", "requests_for", "calls counted", "per day", "fewer than naive (x)", "note"), rows)
    result: dict[str, Any] = {"days": len(days), "stocks": len(codes), "naive_requests": naive,
                              "requests_per_day": {}, "naive_vs_plan": {}}
    for name, planned, counted, _ in plans:
        key = name.split(" ")[0] + ("" if "(" not in name else "_" + name.split("(")[1].rstrip(")").replace(" ", "_"))
        result["requests_per_day"][key] = round(planned / len(days), 2)
        result["naive_vs_plan"][key] = round(naive / planned, 1)
        if counted is not None and counted != planned:
            result.setdefault("plan_mismatch", {})[key] = {"requests_for": planned, "counted": counted}
    result["plans_match_counted_calls"] = "plan_mismatch" not in result
    return emit("fetchplan", result)


def _demo(days: list[dt.date]) -> tuple[str, int, int | None, str]:
    from syncd.sources.demo import DemoSource

    return "demo", DemoSource(DemoConfig(stocks=STOCKS)).requests_for(days), None, "synthetic, offline"


def _csv(days: list[dt.date]) -> tuple[str, int, int | None, str]:
    from syncd.sources.csvdir import CsvSource

    with tempfile.TemporaryDirectory() as folder:
        return "csv", CsvSource(CsvConfig(path=str(Path(folder)))).requests_for(days), None, "one file read per day"


def _akshare(days: list[dt.date], codes: list[str]) -> list[tuple[str, int, int | None, str]]:
    try:
        from syncd.sources.akshare import AkshareSource
    except ImportError as exc:
        return [("akshare", 0, None, f"skipped: {exc}")]
    out: list[tuple[str, int, int | None, str]] = []
    default = AkshareConfig().window_days
    for window in (default, 5):
        counted_by: list[FakeAkshare] = []

        def build(window: int = window, counted_by: list[FakeAkshare] = counted_by) -> Any:
            fake = FakeAkshare(codes, days)
            counted_by.append(fake)
            return AkshareSource(AkshareConfig(window_days=window), library=fake,  # type: ignore[arg-type]
                                 clock=lambda: EVENING, sleep=lambda s: None, limiter=NoLimit())

        planned = build().requests_for(days)
        _drain(build(), days)  # a fresh source: its stock list is fetched inside the run, as requests_for counts it
        out.append((f"akshare (window {window} days)", planned, counted_by[-1].calls.total(),
                    "stock_zh_a_hist per stock per window + the stock list" + (" (default)" if window == default else "")))
    return out


def _baostock(days: list[dt.date], codes: list[str]) -> list[tuple[str, int, int | None, str]]:
    try:
        from syncd.sources.baostock import BaostockSource
    except ImportError as exc:
        return [("baostock", 0, None, f"skipped: {exc}")]
    out: list[tuple[str, int, int | None, str]] = []
    for label, library, remark in (("baostock (market daily)", FakeBaostockMarketDaily, "baostock >= 0.9.3, unadjusted (default)"),
                                   ("baostock (per stock)", FakeBaostock, "older baostock or adjusted prices, window 60")):
        def build(fake: FakeBaostock) -> Any:
            return BaostockSource(BaostockConfig(), library=fake,  # type: ignore[arg-type]
                                  clock=lambda: EVENING, sleep=lambda s: None, limiter=NoLimit())

        planned = build(library(codes, days)).requests_for(days)
        fake = library(codes, days)
        source = build(fake)  # a fresh source: its stock list is fetched inside the run, as requests_for counts it
        _drain(source, days)
        source.close()
        counted = fake.calls.total("login", "logout")
        out.append((label, planned, counted, remark))
    return out


def _drain(source: Any, days: list[dt.date]) -> None:
    """Run the source's fetch plan over `days` the way sync.py does: window by window."""
    window = max(1, source.window_days)
    for i in range(0, len(days), window):
        for day, result in source.fetch_window(days[i:i + window], lambda: False):
            if not isinstance(result, list) or not result:
                raise RuntimeError(f"{source.name}: {day} gave {result!r}")
