"""The demo source: a deterministic synthetic A-share market, offline, for quickstart, tests and benchmarks.

The same (stocks, seed) gives the same rows for a day on every machine, whatever range it is
fetched in: each day's numbers come from Python's Mersenne Twister seeded by (seed, date)
(its byte stream is specified, so it is the same everywhere), prices are worked out in
integer cents, and pre_close is the previous weekday's close computed the same way. A slow
per-stock price wave plus daily noise keeps the series plausible. It is never real data.
`day_delay_s` simulates upstream latency; `fail_dates` makes those days' fetch fail.

It is also the benchmarks' source, so generation is kept cheap (about 2 µs a row): the
random numbers of a day come from one `randbytes` call, per-stock constants are computed
once, and the closes of the last few days are cached (a day's closes are the next day's
pre_closes).
"""

from __future__ import annotations

import datetime as dt
import random
import struct
from collections.abc import Iterator, Sequence

from ..config import DemoConfig
from .base import DayFailure, Row, ShouldStop, StockInfo

_BOARDS = (("600", "sh", 0.30), ("601", "sh", 0.08), ("603", "sh", 0.10), ("688", "sh", 0.10),
           ("000", "sz", 0.10), ("002", "sz", 0.17), ("300", "sz", 0.15))
_PERIOD = 120  # days of the slow price wave: a triangle between 0.75x and 1.25x a stock's base price
_WAVE = tuple(1.0 + 0.25 * ((k - 30) if k < 60 else (90 - k)) / 30 for k in range(_PERIOD))
_NOISE = 0.04 / 65536  # a 16-bit random number -> a daily close noise in [-2 %, +2 %)
_CLOSE_CACHE_DAYS = 4


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


class DemoSource:
    name = "demo"
    window_days = 5  # lazily generated: a window only lets the read-ahead run a day ahead

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.codes = demo_codes(config.stocks)
        base = random.Random(config.seed)
        self._base_cents = [base.uniform(300.0, 8000.0) for _ in self.codes]
        self._float_shares = [base.randint(50, 5000) * 1_000_000 for _ in self.codes]
        self._wave_offset = [base.randrange(_PERIOD) for _ in self.codes]
        self._fail = {dt.date.fromisoformat(d) for d in config.fail_dates}
        self._close_cache: dict[dt.date, list[int]] = {}
        self._stocks = [StockInfo(code, f"DEMO{code}", "sh" if code.startswith("6") else "sz") for code in self.codes]

    def fetch_window(self, days: Sequence[dt.date], should_stop: ShouldStop) -> Iterator[tuple[dt.date, list[Row] | DayFailure]]:
        for day in days:
            if self.config.day_delay_s and _wait(self.config.day_delay_s, should_stop):
                return
            if should_stop():
                return
            if day in self._fail:
                yield day, DayFailure(f"demo source: fetch of {day} failed (listed in source.demo.fail_dates)")
                continue
            yield day, self.rows_for(day)

    def rows_for(self, day: dt.date) -> list[Row]:
        """The day's bars, one per stock, in code order (integer cents, so no rounding surprises)."""
        closes = self._closes(day)
        pre_closes = self._closes(_previous_weekday(day))
        r = _random16(self.config.seed, day, "bar", 5 * len(self.codes))
        rows: list[Row] = []
        append = rows.append
        for code, c, p, shares, a, b, d, e, f in zip(self.codes, closes, pre_closes, self._float_shares,
                                                     r[0::5], r[1::5], r[2::5], r[3::5], r[4::5]):
            spread = c * a // 1_638_400  # up to 4 % of the close (c and p differ by < 8 %, so low stays > 0)
            if c < p:
                low, high = c - (spread * b >> 16), p + (spread * d >> 16)
            else:
                low, high = p - (spread * b >> 16), c + (spread * d >> 16)
            volume = shares * (2000 + (f * 48000 >> 16)) // 100_000_000 * 100  # 0.2 %..5 % of the float, whole lots
            append((code, (low + ((high - low) * e >> 16)) / 100, high / 100, low / 100, c / 100, p / 100, volume,
                    volume * (low + high) // 2 / 100, volume * 1_000_000 // shares / 10_000,
                    ((c - p) * 2_000_000 // p + 1) // 2 / 10_000))
        return rows

    def _closes(self, day: dt.date) -> list[int]:
        """Every stock's close in cents on `day` (any day, trading or not: pre_close needs weekdays)."""
        cached = self._close_cache.get(day)
        if cached is not None:
            return cached
        ordinal, wave = day.toordinal(), _WAVE
        noise = _random16(self.config.seed, day, "close", len(self.codes))
        closes = [max(50, int(base * wave[(ordinal + offset) % _PERIOD] * (0.98 + n * _NOISE) + 0.5))
                  for base, offset, n in zip(self._base_cents, self._wave_offset, noise)]
        if len(self._close_cache) >= _CLOSE_CACHE_DAYS:
            self._close_cache.pop(next(iter(self._close_cache)))
        self._close_cache[day] = closes
        return closes

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        return None

    def stock_list(self) -> list[StockInfo] | None:
        return self._stocks  # the same object every run, so sync.py saves it only once per process

    def requests_for(self, days: Sequence[dt.date]) -> int:
        return len(days)

    def close(self) -> None:
        pass


def _random16(seed: int, day: dt.date, salt: str, count: int) -> tuple[int, ...]:
    """`count` random integers in [0, 65536) for (seed, day, salt), the same on every platform."""
    data = random.Random(f"{seed}:{day.isoformat()}:{salt}").randbytes(2 * count)
    return struct.unpack(f"<{count}H", data)


def _previous_weekday(day: dt.date) -> dt.date:
    day -= dt.timedelta(days=1)
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return day


def _wait(seconds: float, should_stop: ShouldStop) -> bool:
    """Sleep up to `seconds` in short steps; True if a stop was requested meanwhile."""
    import time

    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if should_stop():
            return True
        time.sleep(min(left, 0.05))
    return should_stop()
