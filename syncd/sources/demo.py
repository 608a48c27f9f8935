"""The demo source: a deterministic synthetic A-share market, offline, for quickstart, tests and benchmarks.

The same (stocks, seed) gives the same rows for a day on every machine, whatever range it is
fetched in: each day's numbers are the raw output of a PCG64 generator seeded by (seed, date,
purpose) (a specified bit stream, the same everywhere), prices are worked out in integer
cents, and pre_close is the previous weekday's close computed the same way. A slow per-stock
price wave plus daily noise keeps the series plausible. It is never real data.
`day_delay_s` simulates upstream latency; `fail_dates` makes those days' fetch fail and
`timeout_dates` makes it raise TimeoutError (a library's request timeout); with `fail_times`
> 0 each listed day fails only its first `fail_times` fetches (a flaky upstream). A failed
fetch changes nothing about the rows a later fetch of that day returns.

It is also the benchmarks' source, so a day is generated with numpy, column by column, and
handed over already encoded in PostgreSQL's binary COPY format (EncodedRows): about 1 ms for
5,300 rows instead of ~20 ms of Python per-row work, which would otherwise dominate the load
path. `rows_for` gives the same day as Row tuples (tests, CSV export).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Sequence

import numpy as np

from ..config import DemoConfig
from .base import DayFailure, EncodedRows, Row, ShouldStop, StockInfo

_BOARDS = (("600", "sh", 0.30), ("601", "sh", 0.08), ("603", "sh", 0.10), ("688", "sh", 0.10),
           ("000", "sz", 0.10), ("002", "sz", 0.17), ("300", "sz", 0.15))
_PERIOD = 120  # days of the slow price wave: a triangle between 0.75x and 1.25x a stock's base price
_WAVE = np.array([1.0 + 0.25 * ((k - 30) if k < 60 else (90 - k)) / 30 for k in range(_PERIOD)])
_CLOSE_CACHE_DAYS = 4
_PG_EPOCH = dt.date(2000, 1, 1).toordinal()
_CLOSE, _BAR = 1, 2  # purposes of a day's random streams

# One daily_bars row in binary COPY format: field count, then (length, value) per column, big-endian.

_RECORD = np.dtype([("fields", ">i2"), ("date_len", ">i4"), ("date", ">i4"), ("code_len", ">i4"), ("code", "S6")]
                   + [(f"{name}_{part}", kind) for name in ("open", "high", "low", "close", "pre_close")
                      for part, kind in (("len", ">i4"), ("v", ">f8"))]
                   + [("volume_len", ">i4"), ("volume_v", ">i8")]
                   + [(f"{name}_{part}", kind) for name in ("amount", "turnover", "pct_change")
                      for part, kind in (("len", ">i4"), ("v", ">f8"))])
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"


def demo_codes(count: int) -> list[str]:
    """`count` distinct six-digit codes spread over the real boards' prefixes."""
    codes: list[str] = []
    for prefix, _, share in _BOARDS:
        codes += [f"{prefix}{i:03d}" for i in range(min(1000, max(1, round(count * share))))]
    i = 0
    while len(codes) < count:  # top up past the board shares (and past 1000 a board) deterministically
        codes.append(f"{8 + i // 100000:01d}{i % 100000:05d}")
        i += 1
    return sorted(codes[:count])


def _random16(seed: int, day: dt.date, purpose: int, count: int) -> np.ndarray:
    """`count` integers in [0, 65536) for (seed, day, purpose): PCG64's raw stream, identical everywhere."""
    bits = np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFF, day.toordinal(), purpose]))
    return (bits.random_raw(count) & 0xFFFF).astype(np.int64)


class DemoSource:
    name = "demo"
    window_days = 5  # lazily generated: a window only lets the read-ahead run a day ahead

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.codes = demo_codes(config.stocks)
        n = len(self.codes)
        constants = np.random.Generator(np.random.PCG64(np.random.SeedSequence([config.seed & 0xFFFFFFFF, 0, 0])))
        self._base_cents = constants.uniform(300.0, 8000.0, n)
        self._float_shares = constants.integers(50, 5001, n, dtype=np.int64) * 1_000_000
        self._wave_offset = constants.integers(0, _PERIOD, n, dtype=np.int64)
        self._code_bytes = np.array([c.encode() for c in self.codes], dtype="S6")
        self._fail = {dt.date.fromisoformat(d) for d in config.fail_dates}
        self._timeout = {dt.date.fromisoformat(d) for d in config.timeout_dates}
        self._faults_seen: dict[dt.date, int] = {}  # fetches of a listed day that failed so far (fail_times)
        self._close_cache: dict[dt.date, np.ndarray] = {}
        self._stocks = [StockInfo(code, f"DEMO{code}", "sh" if code.startswith("6") else "sz") for code in self.codes]

    def fetch_window(self, days: Sequence[dt.date], should_stop: ShouldStop) -> Iterator[tuple[dt.date, EncodedRows | DayFailure]]:
        for day in days:
            if self.config.day_delay_s and _wait(self.config.day_delay_s, should_stop):
                return
            if should_stop():
                return
            if self._faulty_now(day):
                if day in self._timeout:
                    raise TimeoutError(f"demo source: fetch of {day} timed out (listed in source.demo.timeout_dates)")
                yield day, DayFailure(f"demo source: fetch of {day} failed (listed in source.demo.fail_dates)")
                continue
            yield day, self.encoded(day)

    def _faulty_now(self, day: dt.date) -> bool:
        """Whether this fetch of `day` fails: always for a listed day, or its first `fail_times` fetches."""
        if day not in self._fail and day not in self._timeout:
            return False
        if self.config.fail_times == 0:
            return True
        seen = self._faults_seen.get(day, 0)
        if seen >= self.config.fail_times:
            return False
        self._faults_seen[day] = seen + 1
        return True

    def columns(self, day: dt.date) -> dict[str, np.ndarray]:
        """The day's bars as columns, one entry per stock in code order (prices from integer cents)."""
        close = self._closes(day)
        pre = self._closes(_previous_weekday(day))
        a, b, d, e, f = _random16(self.config.seed, day, _BAR, 5 * len(self.codes)).reshape(5, -1)
        spread = close * a // 1_638_400  # up to 4 % of the close (close and pre_close differ by < 8 %)
        low = np.minimum(close, pre) - (spread * b >> 16)
        high = np.maximum(close, pre) + (spread * d >> 16)
        shares = self._float_shares
        volume = shares * (2000 + (f * 48000 >> 16)) // 100_000_000 * 100  # 0.2 %..5 % of the float, whole lots
        return {
            "open": (low + ((high - low) * e >> 16)) / 100, "high": high / 100, "low": low / 100,
            "close": close / 100, "pre_close": pre / 100, "volume": volume,
            "amount": volume * (low + high) // 2 / 100, "turnover": volume * 1_000_000 // shares / 10_000,
            "pct_change": ((close - pre) * 2_000_000 // pre + 1) // 2 / 10_000,
        }

    def encoded(self, day: dt.date) -> EncodedRows:
        """The day as one binary COPY payload for daily_bars (no NULLs in the demo market)."""
        columns = self.columns(day)
        records = np.empty(len(self.codes), dtype=_RECORD)
        records["fields"] = 11
        records["date_len"], records["date"] = 4, day.toordinal() - _PG_EPOCH
        records["code_len"], records["code"] = 6, self._code_bytes
        for name, values in columns.items():
            records[f"{name}_len"], records[f"{name}_v"] = 8, values
        return EncodedRows(_COPY_HEADER + records.tobytes() + _COPY_TRAILER, len(records))

    def rows_for(self, day: dt.date) -> list[Row]:
        """The same day as Row tuples."""
        columns = self.columns(day)
        lists = [columns[name].tolist() for name in ("open", "high", "low", "close", "pre_close", "volume",
                                                     "amount", "turnover", "pct_change")]
        return [(code, *values) for code, *values in zip(self.codes, *lists)]  # type: ignore[misc]

    def _closes(self, day: dt.date) -> np.ndarray:
        """Every stock's close in cents on `day` (any day, trading or not: pre_close needs weekdays)."""
        cached = self._close_cache.get(day)
        if cached is not None:
            return cached
        noise = _random16(self.config.seed, day, _CLOSE, len(self.codes))
        wave = _WAVE[(day.toordinal() + self._wave_offset) % _PERIOD]
        closes = np.maximum(50, (self._base_cents * wave * (0.98 + noise * (0.04 / 65536)) + 0.5).astype(np.int64))
        if len(self._close_cache) >= _CLOSE_CACHE_DAYS:
            self._close_cache.pop(next(iter(self._close_cache)))
        self._close_cache[day] = closes
        return closes

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        return None

    def stock_list(self) -> list[StockInfo] | None:
        return self._stocks  # the same object every run, so sync.py saves it only once per process

    def close(self) -> None:
        pass


def _previous_weekday(day: dt.date) -> dt.date:
    day -= dt.timedelta(days=1)
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return day


def _wait(seconds: float, should_stop: ShouldStop) -> bool:
    """Sleep up to `seconds` in short steps; True if a stop was requested meanwhile."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if should_stop():
            return True
        time.sleep(min(left, 0.05))
    return should_stop()
