"""The demo market's numbers: every stock's bars of a day, column by column, with numpy.

demo.py owns the demo source (its codes, stock list, calendar and faults, and the rules its
docstring states) and imports this module, never the other way round (the trading days both
need are democalendar.py's); this module owns how its numbers are made, and is imported only where
days are generated (the fetch process, tests), so a daemon whose fetches run in a child
never loads numpy for them. Every day comes from PCG64 streams seeded by (seed, date,
purpose), so it is the same whatever range or order days are asked in, on every machine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..calendar import calendar_days
from . import copypayload
from .base import EncodedRows, Row
from .democalendar import is_open, previous_trading_day

_PERIOD = 120  # days of the slow price wave: a triangle between 0.75x and 1.25x a stock's base price
_WAVE = np.array([1.0 + 0.25 * ((k - 30) if k < 60 else (90 - k)) / 30 for k in range(_PERIOD)])
_CLOSE_CACHE_DAYS = 4
_CLOSE, _BAR, _ACTION = 1, 2, 3  # purposes of the random streams (a day's, or a year's for _ACTION)
_FIRST_ACTION_YEAR = 2005
_BONUS_RATIOS = np.array([0.1, 0.2, 0.3, 0.5])
_INDEX_FROM = 1990  # the wave advances one step per trading day counted from this year's first day
_NO_EX_DATE = np.iinfo(np.int32).max

_FLOAT_CAP_MIN = 1_000_000_000        # yuan: a stock's float at its base price, from this...
_FLOAT_CAP_STEP = 19_000_000_000 // 4950  # ...up to 20 billion, in 4,951 steps

_ROW_COLUMNS = ("open", "high", "low", "close", "pre_close", "volume", "amount", "turnover", "pct_change", "adj_factor")


def _random16(seed: int, day: dt.date, purpose: int, count: int) -> np.ndarray:
    """`count` integers in [0, 65536) for (seed, day, purpose): PCG64's raw stream, identical everywhere."""
    bits = np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFF, day.toordinal(), purpose]))
    return (bits.random_raw(count) & 0xFFFF).astype(np.int64)


@dataclass(frozen=True)
class _YearActions:
    """One year's corporate actions, one entry per stock (in code order)."""

    ex_date: np.ndarray        # ordinal of the ex-date, or _NO_EX_DATE (int32: a warmed-up market holds 20 years of these)
    pre_close: np.ndarray      # the exchange's reference price on the ex-date, cents
    factor_before: np.ndarray  # adj_factor before the ex-date (the previous year's last: the same array, not a copy)
    factor_after: np.ndarray   # adj_factor from the ex-date on
    shares_before: np.ndarray  # float multiplier from bonus shares, before and after
    shares_after: np.ndarray


class DemoMarket:
    """The numbers of one demo market: `seed`, the stocks `codes` (in order), corporate actions on or off."""

    def __init__(self, seed: int, codes: Sequence[str], corporate_actions: bool) -> None:
        self.seed = seed
        self.codes = list(codes)
        self.corporate_actions = corporate_actions
        n = len(self.codes)
        constants = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFF, 0, 0])))
        self._base_cents = constants.uniform(300.0, 8000.0, n)
        # A float worth 1 to 20 billion yuan at the stock's base price (the same draw as ever, so prices do not move):
        # with 0.2 %..5 % of it traded a day, the market trades about 1.5 trillion yuan and 60 billion shares a day,
        # the real A-share market's order of magnitude in 2025 (docs/sources.md, "demo").
        float_cap_yuan = _FLOAT_CAP_MIN + (constants.integers(50, 5001, n, dtype=np.int64) - 50) * _FLOAT_CAP_STEP
        self._float_shares = (float_cap_yuan * 100 // self._base_cents.astype(np.int64)) // 100_000 * 100_000
        self._wave_offset = constants.integers(0, _PERIOD, n, dtype=np.int64)
        self._code_bytes = np.array([c.encode() for c in self.codes], dtype="S6")
        self._close_cache: dict[dt.date, np.ndarray] = {}
        self._years: dict[int, _YearActions] = {}
        self._year_index: dict[int, np.ndarray] = {}  # per year: trading days since _INDEX_FROM before each day

    def warm_up(self, until: dt.date) -> None:
        """Build what every day up to `until` needs (the years' corporate actions, the wave's day index) now."""
        self._year(until.year)
        self._trading_index(until)

    # --- one day -----------------------------------------------------------------------------
    def columns(self, day: dt.date) -> dict[str, np.ndarray]:
        """The day's bars as columns, one entry per stock in code order (prices from integer cents)."""
        close = self._raw_closes(day)
        pre = self._raw_closes(previous_trading_day(day))
        factor, shares = self._factors(day)
        year = self._year(day.year)
        if year is not None:
            pre = np.where(year.ex_date == day.toordinal(), year.pre_close, pre)
        a, b, d, e, f = _random16(self.seed, day, _BAR, 5 * len(self.codes)).reshape(5, -1)
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
        return copypayload.encode_columns(day, self._code_bytes, self.columns(day))

    def rows_for(self, day: dt.date) -> list[Row]:
        """The same day as Row tuples."""
        columns = self.columns(day)
        lists = [columns[name].tolist() for name in _ROW_COLUMNS]
        return [(code, *values) for code, *values in zip(self.codes, *lists)]

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
        noise, offset, base = _random16(self.seed, day, _CLOSE, len(self.codes)), self._wave_offset, self._base_cents
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
        for year in range(_INDEX_FROM, day.year + 1) if day.year not in self._year_index else ():
            if year not in self._year_index:
                start = int(self._year_index[year - 1][-1]) if year > _INDEX_FROM else 0
                first, last = dt.date(year, 1, 1), dt.date(year, 12, 31)
                opens = [is_open(first + dt.timedelta(days=i)) for i in range((last - first).days + 1)]
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
        if not self.corporate_actions or year < _FIRST_ACTION_YEAR:
            return None
        for each in range(_FIRST_ACTION_YEAR, year + 1):  # each year starts from the factors the last one left
            if each not in self._years:
                self._years[each] = self._build_year(each)
        return self._years[year]

    def _build_year(self, year: int) -> _YearActions:
        n = len(self.codes)
        before = self._years.get(year - 1)
        factor_before = before.factor_after if before else np.ones(n)  # never written to: shared, not copied
        shares_before = before.shares_after if before else factor_before
        window = [d for d in calendar_days(dt.date(year, 6, 1), dt.date(year, 7, 31)) if is_open(d)]
        acts, pick, cash, bonus = _random16(self.seed, dt.date(year, 1, 1), _ACTION, 4 * n).reshape(4, -1)
        acting = acts < 32768
        ex_index = pick % len(window)
        raw_prev = np.zeros(n, dtype=np.int64)
        for index in np.unique(ex_index[acting]):  # the previous close of each ex-date, a day at a time
            chosen = acting & (ex_index == index)
            previous = previous_trading_day(window[index])
            raw_prev[chosen] = np.maximum(1, (self._values(previous, chosen) / factor_before[chosen] + 0.5).astype(np.int64))
        dividend = (raw_prev * (50 + cash * 250 // 65536) + 5000) // 10000  # 0.5 %..3 % of the previous close, cents
        ratio = np.where(bonus < 3277, _BONUS_RATIOS[bonus % 4], 0.0)  # one action in twenty also issues bonus shares
        pre_close = np.maximum(1, ((raw_prev - dividend) / (1.0 + ratio) + 0.5).astype(np.int64))
        ordinals = np.array([d.toordinal() for d in window], dtype=np.int64)
        return _YearActions(
            ex_date=np.where(acting, ordinals[ex_index], _NO_EX_DATE).astype(np.int32),
            pre_close=pre_close.astype(np.int32),
            factor_before=factor_before,
            factor_after=np.where(acting, factor_before * raw_prev / pre_close, factor_before),
            shares_before=shares_before,
            shares_after=np.where(acting, shares_before * (1.0 + ratio), shares_before),
        )

