"""A by_stock source for tests, a Source subclass; and a syncd that runs on it.

`StockSource` answers like a per-stock history API with a calendar of its own: one
`fetch_stocks` request per stock for the whole range (each recorded in `requests`, and
appended to `requests_log` when set, so a test can count them across a daemon process), the
demo market's numbers (the same rows the demo source gives), `fail_codes` answered with
StockFailure, an exchange calendar (weekdays minus `closed`) and its own stock list.

Run as a script (`python tests/fakesource.py --config PATH`), it is `syncd` with this source
in place of the configured one, its settings read from $SYNCD_FAKE_SOURCE (JSON of
`StockSource`'s keyword arguments): the way to test the by_stock plan in a real daemon
without touching the product's source list.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from syncd.config import DemoConfig
from syncd.sources.base import Plan, Row, ShouldStop, Source, StockBars, StockFailure, StockInfo
from syncd.sources.demo import DemoSource


class StockSource(Source):
    name = "fakestock"

    def __init__(self, stocks: int = 50, seed: int = 3, fail_codes: Sequence[str] = (), closed: Sequence[str] = (),
                 stock_delay_s: float = 0.0, requests_log: str | None = None, plan: Plan = "by_stock",
                 raise_after: int | None = None) -> None:
        self.demo = DemoSource(DemoConfig(stocks=stocks, seed=seed))
        self.codes = list(self.demo.codes)
        self.fail_codes = set(fail_codes)
        self.closed = {dt.date.fromisoformat(d) for d in closed}
        self.stock_delay_s = stock_delay_s
        self.requests_log = Path(requests_log) if requests_log else None
        self._plan = plan
        self.raise_after = raise_after  # raise once after this many answers (a fetch that breaks)
        self.requests: list[tuple[str, dt.date, dt.date]] = []
        self.fetches: list[list[str] | None] = []
        self._days: dict[dt.date, dict[str, Row]] = {}

    # --- the protocol ---------------------------------------------------------------------
    def plan(self, days: Sequence[dt.date]) -> Plan:
        return self._plan

    def fetch_days(self, days: Sequence[dt.date], should_stop: ShouldStop) -> Iterator[Any]:
        raise NotImplementedError("by_stock only")

    def fetch_stocks(self, first: dt.date, last: dt.date, should_stop: ShouldStop,
                     codes: Sequence[str] | None = None) -> Iterator[StockBars | StockFailure]:
        self.fetches.append(None if codes is None else list(codes))
        open_days = self.trading_days(first, last)
        for n, code in enumerate(self.codes if codes is None else codes):
            if should_stop():
                return
            if self.raise_after is not None and n == self.raise_after:
                self.raise_after = None
                raise ConnectionError("fake upstream closed the connection")
            if self.stock_delay_s:
                time.sleep(self.stock_delay_s)
            self._record(code, first, last)
            if code in self.fail_codes:
                yield StockFailure(code, f"fake: request for {code} failed after 3 attempts (HTTP 456)")
                continue
            yield StockBars(code, [(day, self.row(day, code)) for day in open_days])

    def listed_on(self, day: dt.date) -> int | None:
        return len(self.codes)

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)
                if (start + dt.timedelta(days=i)).weekday() < 5 and start + dt.timedelta(days=i) not in self.closed]

    def stock_list(self) -> list[StockInfo] | None:
        return [StockInfo(code, f"FAKE{code}", "sh" if code.startswith("6") else "sz") for code in self.codes]

    def close(self) -> None:
        pass

    # --- helpers --------------------------------------------------------------------------
    def row(self, day: dt.date, code: str) -> Row:
        if day not in self._days:
            self._days[day] = {row[0]: row for row in self.demo.rows_for(day)}
        return self._days[day][code]

    def rows_for(self, day: dt.date) -> list[Row]:
        return [self.row(day, code) for code in self.codes]

    def _record(self, code: str, first: dt.date, last: dt.date) -> None:
        self.requests.append((code, first, last))
        if self.requests_log is not None:
            with self.requests_log.open("a") as log:
                log.write(f"{code} {first} {last}\n")


def main() -> int:
    import syncd.daemon
    from syncd.__main__ import main as syncd_main

    settings = json.loads(os.environ.get("SYNCD_FAKE_SOURCE", "{}"))
    syncd.daemon.load_source = lambda config: StockSource(**settings)  # type: ignore[assignment]
    return syncd_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
