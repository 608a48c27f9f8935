"""The demo source: a deterministic synthetic A-share market, offline, for quickstart, tests and benchmarks.

The same (stocks, seed, corporate_actions) gives the same rows for a day on every machine,
whatever range it is fetched in: each day's numbers are the raw output of a PCG64 generator
seeded by (seed, date, purpose) (a specified bit stream, the same everywhere), prices are
worked out in integer cents, and the trading days are China's exchange calendar as the
packaged chinese_calendar knows it (weekdays past its horizon). A slow per-stock price wave
plus daily noise gives each stock a smooth "value" series; that series is the backward-
adjusted (hfq) price, and the raw price is value / adj_factor, in cents.

Corporate actions (`corporate_actions = true`, the default): from 2005 on, each year about
half the stocks go ex-dividend on one trading day of June or July (a cash dividend of 0.5-3 %
of the previous close, sometimes with bonus shares). On that day pre_close is the exchange's
reference price, (previous close - cash) / (1 + bonus ratio) rounded to the cent, not the
previous close, and adj_factor steps by previous close / pre_close (the contract's rule). On
every other day pre_close is the previous trading day's close and the factor is unchanged;
before a stock's first ex-date it is 1.0. With corporate actions off, adj_factor is 1.0
everywhere and pre_close always the previous trading day's close.

`day_delay_s` simulates upstream latency; `fail_dates` makes those days' fetch fail and
`timeout_dates` makes it raise TimeoutError (a library's request timeout); with `fail_times`
> 0 each listed day fails only its first `fail_times` fetches (a flaky upstream). A failed
fetch changes nothing about the rows a later fetch of that day returns.

It is also the benchmarks' source, so a day is generated with numpy, column by column
(demomarket.py, loaded on first use), and handed over already encoded in PostgreSQL's binary
COPY format (EncodedRows, copypayload.py): about 2 ms for 5,300 rows instead of ~20 ms of Python
per-row work. In the daemon its fetches run in the fetch process (`fetches_in_child`,
fetchproc.py), so the daemon itself never loads numpy. `rows_for` gives the same day as Row
tuples (tests, CSV export). It is never real data.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..calendar import TradingCalendar
from ..config import DemoConfig
from .base import DayBatch, DayFailure, DayStream, EncodedRows, Row, ShouldStop, Source, StockInfo
from .democalendar import previous_trading_day

_BOARDS = (("600", "sh", 0.30), ("601", "sh", 0.08), ("603", "sh", 0.10), ("688", "sh", 0.10),
           ("000", "sz", 0.10), ("002", "sz", 0.17), ("300", "sz", 0.15))

if TYPE_CHECKING:
    import numpy as np

    from .demomarket import DemoMarket


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


class DemoSource(Source):
    name = "demo"
    reference_unit = "one generated day"
    fetches_in_child = True  # the daemon runs fetch_days in its fetch process (fetchproc.py)

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.codes = demo_codes(config.stocks)
        self._market: DemoMarket | None = None
        self._fail = {dt.date.fromisoformat(d) for d in config.fail_dates}
        self._timeout = {dt.date.fromisoformat(d) for d in config.timeout_dates}
        self._faults_seen: dict[dt.date, int] = {}  # fetches of a listed day that failed so far (fail_times)
        # The packaged calendar, and past its horizon every weekday (confirms_trading_day): the same on every machine.
        self._calendar = TradingCalendar(confirms=self.confirms_trading_day)
        self._stocks = [StockInfo(code, f"DEMO{code}", "sh" if code.startswith("6") else "sz") for code in self.codes]

    def fetch_days(self, days: Sequence[dt.date], should_stop: ShouldStop) -> DayStream:
        """Each day generated lazily (the read-ahead then runs one day ahead of the writer), every stock listed."""
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
            yield day, DayBatch(self.encoded(day), expected=len(self.codes))

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

    # --- one day (demomarket.py makes the numbers) -------------------------------------------
    @property
    def market(self) -> DemoMarket:
        """The market's numbers, built on first use (importing numpy then, not before)."""
        if self._market is None:
            from .demomarket import DemoMarket

            self._market = DemoMarket(self.config.seed, self.codes, self.config.corporate_actions)
        return self._market

    def warm_up(self) -> None:
        """Build the market up to today, so a run's first day costs what every day does (the fetch process calls it)."""
        self.market.warm_up(dt.date.today())

    def columns(self, day: dt.date) -> dict[str, np.ndarray]:
        """The day's bars as columns, one entry per stock in code order (prices from integer cents)."""
        return self.market.columns(day)

    def encoded(self, day: dt.date) -> EncodedRows:
        """The day as one binary COPY payload for daily_bars (no NULLs in the demo market), its suspects marked."""
        return self.market.encoded(day)

    def rows_for(self, day: dt.date) -> list[Row]:
        """The same day as Row tuples."""
        return self.market.rows_for(day)

    def previous_trading_day(self, day: dt.date) -> dt.date:
        return previous_trading_day(day)

    def ex_dates(self, year: int) -> dict[str, dt.date]:
        """The stocks that go ex-dividend in `year`, with their ex-date (tests, docs)."""
        return self.market.ex_dates(year)

    # --- the rest of the source interface --------------------------------------------------
    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        return None

    def listed_on(self, day: dt.date) -> int | None:
        return len(self.codes)

    def confirms_trading_day(self, day: dt.date) -> bool:
        """Past the packaged calendar the demo market trades every weekday (it is synthetic: by contract)."""
        return day.weekday() < 5

    def stock_list(self) -> list[StockInfo] | None:
        return self._stocks  # the same object every run, so run/syncer.py saves it only once per process

    def close(self) -> None:
        pass


def _wait(seconds: float, should_stop: ShouldStop) -> bool:
    """Sleep up to `seconds` in short steps; True if a stop was requested meanwhile."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if should_stop():
            return True
        time.sleep(min(left, 0.05))
    return should_stop()
