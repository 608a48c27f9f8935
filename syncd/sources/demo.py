"""The demo source: a deterministic synthetic A-share market, offline, for quickstart, tests and benchmarks.

The same (stocks, seed) gives the same rows for a day on every machine, whatever range it is
fetched in: each day's prices come from a random generator seeded by (seed, date), and
pre_close is the previous weekday's close computed the same way. It is never real data.
`day_delay_s` simulates upstream latency; `fail_dates` makes those days' fetch fail.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator, Sequence

from ..config import DemoConfig
from .base import DayFailure, Row, ShouldStop, StockInfo

_BOARDS = (("600", "sh", 0.30), ("601", "sh", 0.08), ("603", "sh", 0.10), ("688", "sh", 0.10),
           ("000", "sz", 0.10), ("002", "sz", 0.17), ("300", "sz", 0.15))


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
    window_days = 1

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.codes = demo_codes(config.stocks)
        base = random.Random(config.seed)
        self._base_price = [round(base.uniform(3.0, 80.0), 2) for _ in self.codes]
        self._float_shares = [base.randint(50, 5000) * 1_000_000 for _ in self.codes]
        self._fail = {dt.date.fromisoformat(d) for d in config.fail_dates}

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
        closes = self._closes(day)
        pre_closes = self._closes(_previous_weekday(day))
        rng = random.Random(f"{self.config.seed}:{day.isoformat()}:bar")
        rows: list[Row] = []
        for code, close, pre, shares in zip(self.codes, closes, pre_closes, self._float_shares):
            spread = close * rng.uniform(0.0, 0.04)
            low = round(min(close, pre) - spread * rng.random(), 2)
            high = round(max(close, pre) + spread * rng.random(), 2)
            open_ = round(low + (high - low) * rng.random(), 2)
            volume = int(shares * rng.uniform(0.002, 0.05)) // 100 * 100
            amount = round(volume * (low + high) / 2, 2)
            rows.append((code, open_, high, low, close, pre, volume, amount,
                         round(volume / shares * 100, 4), round((close - pre) / pre * 100, 4)))
        return rows

    def _closes(self, day: dt.date) -> list[float]:
        rng = random.Random(f"{self.config.seed}:{day.isoformat()}:close")
        phase = day.toordinal() / 30.0
        return [round(max(0.5, base * (1.0 + 0.25 * _wave(phase + i)) * (1.0 + rng.uniform(-0.02, 0.02))), 2)
                for i, base in enumerate(self._base_price)]

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        return None

    def stock_list(self) -> list[StockInfo] | None:
        return [StockInfo(code, f"DEMO{code}", "sh" if code.startswith("6") else "sz") for code in self.codes]

    def requests_for(self, days: Sequence[dt.date]) -> int:
        return len(days)

    def close(self) -> None:
        pass


def _wave(x: float) -> float:
    # a cheap deterministic oscillation in [-1, 1] without math.sin per row
    frac = x % 4.0
    return frac - 1.0 if frac < 2.0 else 3.0 - frac


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
