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

It is also the benchmarks' source, so a day is generated with numpy, column by column, and
handed over already encoded in PostgreSQL's binary COPY format (EncodedRows): about 1 ms for
5,300 rows instead of ~20 ms of Python per-row work. `rows_for` gives the same day as Row
tuples (tests, CSV export). It is never real data.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import chinese_calendar
import numpy as np

from .. import encoding
from ..calendar import TradingCalendar, calendar_days
from ..config import DemoConfig
from .base import DayBatch, DayFailure, DaySource, EncodedRows, Row, ShouldStop, StockInfo

_BOARDS = (("600", "sh", 0.30), ("601", "sh", 0.08), ("603", "sh", 0.10), ("688", "sh", 0.10),
           ("000", "sz", 0.10), ("002", "sz", 0.17), ("300", "sz", 0.15))
_PERIOD = 120  # days of the slow price wave: a triangle between 0.75x and 1.25x a stock's base price
_WAVE = np.array([1.0 + 0.25 * ((k - 30) if k < 60 else (90 - k)) / 30 for k in range(_PERIOD)])
_CLOSE_CACHE_DAYS = 4
_CLOSE, _BAR, _ACTION = 1, 2, 3  # purposes of the random streams (a day's, or a year's for _ACTION)
_FIRST_ACTION_YEAR = 2005
_BONUS_RATIOS = np.array([0.1, 0.2, 0.3, 0.5])
_INDEX_FROM = 1990  # the wave advances one step per trading day counted from this year's first day
_NO_EX_DATE = np.iinfo(np.int64).max

_ROW_COLUMNS = ("open", "high", "low", "close", "pre_close", "volume", "amount", "turnover", "pct_change", "adj_factor")


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


@dataclass(frozen=True)
class _YearActions:
    """One year's corporate actions, one entry per stock (in code order)."""

    ex_date: np.ndarray        # ordinal of the ex-date, or _NO_EX_DATE
    pre_close: np.ndarray      # the exchange's reference price on the ex-date, cents
    factor_before: np.ndarray  # adj_factor before the ex-date (the previous year's last)
    factor_after: np.ndarray   # adj_factor from the ex-date on
    shares_before: np.ndarray  # float multiplier from bonus shares, before and after
    shares_after: np.ndarray


class DemoSource(DaySource):
    name = "demo"

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
        self._years: dict[int, _YearActions] = {}
        self._year_index: dict[int, np.ndarray] = {}  # per year: trading days since _INDEX_FROM before each day
        # The packaged calendar, and past its horizon every weekday (confirms_trading_day): the same on every machine.
        self._calendar = TradingCalendar(confirms=self.confirms_trading_day)
        self._stocks = [StockInfo(code, f"DEMO{code}", "sh" if code.startswith("6") else "sz") for code in self.codes]

    def fetch_days(self, days: Sequence[dt.date], should_stop: ShouldStop) -> Iterator[tuple[dt.date, DayBatch | DayFailure]]:
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

    # --- one day -----------------------------------------------------------------------------
    def columns(self, day: dt.date) -> dict[str, np.ndarray]:
        """The day's bars as columns, one entry per stock in code order (prices from integer cents)."""
        close = self._raw_closes(day)
        pre = self._raw_closes(self.previous_trading_day(day))
        factor, shares = self._factors(day)
        year = self._year(day.year)
        if year is not None:
            pre = np.where(year.ex_date == day.toordinal(), year.pre_close, pre)
        a, b, d, e, f = _random16(self.config.seed, day, _BAR, 5 * len(self.codes)).reshape(5, -1)
        spread = close * a // 1_638_400  # up to 4 % of the close (close and pre_close differ by < 8 %)
        low = np.minimum(close, pre) - (spread * b >> 16)
        high = np.maximum(close, pre) + (spread * d >> 16)
        float_shares = (self._float_shares * shares).astype(np.int64)
        volume = float_shares * (2000 + (f * 48000 >> 16)) // 100_000_000 * 100  # 0.2 %..5 % of the float, whole lots
        return {
            "open": (low + ((high - low) * e >> 16)) / 100, "high": high / 100, "low": low / 100,
            "close": close / 100, "pre_close": pre / 100, "volume": volume,
            "amount": volume * (low + high) // 2 / 100, "turnover": volume * 1_000_000 // float_shares / 10_000,
            "pct_change": ((close - pre) * 2_000_000 // pre + 1) // 2 / 10_000,
            "adj_factor": factor,
        }

    def encoded(self, day: dt.date) -> EncodedRows:
        """The day as one binary COPY payload for daily_bars (no NULLs in the demo market), its suspects marked."""
        return encoding.encode_columns(day, self._code_bytes, self.columns(day))

    def rows_for(self, day: dt.date) -> list[Row]:
        """The same day as Row tuples."""
        columns = self.columns(day)
        lists = [columns[name].tolist() for name in _ROW_COLUMNS]
        return [(code, *values) for code, *values in zip(self.codes, *lists)]  # type: ignore[misc]

    def _is_open(self, day: dt.date) -> bool:
        """self._calendar.is_trading_day, in the few operations the demo's calendar needs: a weekday outside
        chinese_calendar's holidays (within its horizon they are its closures, past it the demo trades every
        weekday). Building the price waves asks it ~15,000 times at a run's first day."""
        return day.weekday() < 5 and day not in chinese_calendar.holidays

    def previous_trading_day(self, day: dt.date) -> dt.date:
        day -= dt.timedelta(days=1)
        while not self._is_open(day):
            day -= dt.timedelta(days=1)
        return day

    def ex_dates(self, year: int) -> dict[str, dt.date]:
        """The stocks that go ex-dividend in `year`, with their ex-date (tests, docs)."""
        actions = self._year(year)
        if actions is None:
            return {}
        return {code: dt.date.fromordinal(int(ordinal)) for code, ordinal in zip(self.codes, actions.ex_date)
                if ordinal != _NO_EX_DATE}

    # --- prices and factors ----------------------------------------------------------------
    def _values(self, day: dt.date, chosen: np.ndarray | None = None) -> np.ndarray:
        """Every stock's smooth value (its hfq price) in cents on `day`, trading or not (the `chosen` ones only)."""
        noise, offset, base = _random16(self.config.seed, day, _CLOSE, len(self.codes)), self._wave_offset, self._base_cents
        if chosen is not None:
            noise, offset, base = noise[chosen], offset[chosen], base[chosen]
        wave = _WAVE[(self._trading_index(day) + offset) % _PERIOD]
        return np.maximum(50, (base * wave * (0.98 + noise * (0.04 / 65536)) + 0.5).astype(np.int64))

    def _raw_closes(self, day: dt.date) -> np.ndarray:
        """Every stock's raw close in cents on `day`: value / adj_factor, rounded to the cent."""
        cached = self._close_cache.get(day)
        if cached is not None:
            return cached
        factor, _ = self._factors(day)
        closes = np.maximum(1, (self._values(day) / factor + 0.5).astype(np.int64))
        if len(self._close_cache) >= _CLOSE_CACHE_DAYS:
            self._close_cache.pop(next(iter(self._close_cache)))
        self._close_cache[day] = closes
        return closes

    def _trading_index(self, day: dt.date) -> int:
        """Trading days from _INDEX_FROM up to `day`: the wave moves a step per session, so a long holiday
        is no bigger a move than a night (calendar days before _INDEX_FROM count one each)."""
        if day.year < _INDEX_FROM:
            return day.toordinal() - dt.date(_INDEX_FROM, 1, 1).toordinal()
        for year in range(_INDEX_FROM, day.year + 1):
            if year not in self._year_index:
                start = int(self._year_index[year - 1][-1]) if year > _INDEX_FROM else 0
                first, last = dt.date(year, 1, 1), dt.date(year, 12, 31)
                opens = [self._is_open(first + dt.timedelta(days=i)) for i in range((last - first).days + 1)]
                self._year_index[year] = start + np.cumsum(np.array(opens, dtype=np.int64))
        return int(self._year_index[day.year][day.timetuple().tm_yday - 1])

    def _factors(self, day: dt.date) -> tuple[np.ndarray, np.ndarray]:
        """adj_factor and the bonus-share multiplier of every stock on `day`."""
        year = self._year(day.year)
        if year is None:
            ones = np.ones(len(self.codes))
            return ones, ones
        done = year.ex_date <= day.toordinal()
        return (np.where(done, year.factor_after, year.factor_before),
                np.where(done, year.shares_after, year.shares_before))

    def _year(self, year: int) -> _YearActions | None:
        """`year`'s corporate actions (None before they begin, or with them off); years build on each other."""
        if not self.config.corporate_actions or year < _FIRST_ACTION_YEAR:
            return None
        for each in range(_FIRST_ACTION_YEAR, year + 1):  # each year starts from the factors the last one left
            if each not in self._years:
                self._years[each] = self._build_year(each)
        return self._years[year]

    def _build_year(self, year: int) -> _YearActions:
        n = len(self.codes)
        before = self._years.get(year - 1)
        factor_before = before.factor_after.copy() if before else np.ones(n)
        shares_before = before.shares_after.copy() if before else np.ones(n)
        window = [d for d in calendar_days(dt.date(year, 6, 1), dt.date(year, 7, 31)) if self._is_open(d)]
        acts, pick, cash, bonus = _random16(self.config.seed, dt.date(year, 1, 1), _ACTION, 4 * n).reshape(4, -1)
        acting = acts < 32768
        ex_index = pick % len(window)
        raw_prev = np.zeros(n, dtype=np.int64)
        for index in np.unique(ex_index[acting]):  # the previous close of each ex-date, a day at a time
            chosen = acting & (ex_index == index)
            previous = self.previous_trading_day(window[index])
            raw_prev[chosen] = np.maximum(1, (self._values(previous, chosen) / factor_before[chosen] + 0.5).astype(np.int64))
        dividend = (raw_prev * (50 + cash * 250 // 65536) + 5000) // 10000  # 0.5 %..3 % of the previous close, cents
        ratio = np.where(bonus < 3277, _BONUS_RATIOS[bonus % 4], 0.0)  # one action in twenty also issues bonus shares
        pre_close = np.maximum(1, ((raw_prev - dividend) / (1.0 + ratio) + 0.5).astype(np.int64))
        ordinals = np.array([d.toordinal() for d in window], dtype=np.int64)
        return _YearActions(
            ex_date=np.where(acting, ordinals[ex_index], _NO_EX_DATE),
            pre_close=pre_close,
            factor_before=factor_before,
            factor_after=np.where(acting, factor_before * raw_prev / pre_close, factor_before),
            shares_before=shares_before,
            shares_after=np.where(acting, shares_before * (1.0 + ratio), shares_before),
        )

    # --- the rest of the source interface --------------------------------------------------
    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        return None

    def listed_on(self, day: dt.date) -> int | None:
        return len(self.codes)

    def confirms_trading_day(self, day: dt.date) -> bool:
        """Past the packaged calendar the demo market trades every weekday (it is synthetic: by contract)."""
        return day.weekday() < 5

    def stock_list(self) -> list[StockInfo] | None:
        return self._stocks  # the same object every run, so sync.py saves it only once per process

    def requests_for(self, days: Sequence[dt.date]) -> int:
        return len(days)

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
