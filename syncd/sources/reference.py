"""A source as a reconciliation's other opinion: what asking it costs, and the source built for one job.

`plan(config, name, days, stocks)` says, before anything is built or asked, what reconciling
`days` stored trading days (and `stocks` stocks, for a source that answers by stock) against
the source `name` costs: each source class knows its own calls (`reference_plan`, from its
`[source.NAME]` table). `Reference` is that source built for one reconciliation through
`load_source` in reference mode (bars and factors only: no listings, no optional datasets),
or, for a source whose fetches run in a child process (the demo), a FetchProcess of its own,
so the daemon still never loads numpy. It counts the requests it made: a remote source's own
count (every attempt, logins included), and for csv and the demo, which ask nothing upstream,
one a day answered. A Reference belongs to the reconcile thread that built it (a fetch process
dies with the thread that started it) and is closed after its one job.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable, Iterator, Sequence

from ..config import SOURCE_NAMES, SourceConfig, SourceName
from . import load_source
from .base import DayStream, ReferencePlan, ShouldStop, Source, StockBars, StockFailure
from .fetchproc import FetchProcess

_CLASSES = {"demo": ("demo", "DemoSource"), "csv": ("csvdir", "CsvSource"), "akshare": ("akshare", "AkshareSource"),
            "baostock": ("baostock", "BaostockSource"), "tushare": ("tushare", "TushareSource")}
assert tuple(_CLASSES) == SOURCE_NAMES


def plan(config: SourceConfig, name: SourceName, days: int, stocks: int) -> ReferencePlan:
    """The request plan of reconciling `days` days (`stocks` stocks) against `name`; nothing is built or asked."""
    module, cls = _CLASSES[name]
    source_class = getattr(importlib.import_module(f"{__package__}.{module}"), cls)
    result: ReferencePlan = source_class.reference_plan(getattr(config, name), days, stocks)
    return result


class Reference:
    """The source `name`, built from its `[source.NAME]` table for one reconciliation."""

    def __init__(self, config: SourceConfig, name: SourceName, on_event: Callable[..., None] | None = None) -> None:
        named = config.of(name)
        self.name = name
        self.source: Source = load_source(named, reference=True)
        self._process = FetchProcess(named, on_event) if self.source.fetches_in_child else None
        self._answered = 0

    @property
    def requests(self) -> int:
        """Requests made so far: the source's own count, else one a day answered (csv, the demo)."""
        made = self.source.requests_made
        return int(made) if made is not None else self._answered

    def fetch_days(self, days: Sequence[dt.date], should_stop: ShouldStop) -> DayStream:
        stream = self._process.fetch_days(days, should_stop) if self._process else self.source.fetch_days(days, should_stop)
        for item in stream:
            self._answered += 1
            yield item

    def fetch_stocks(self, first: dt.date, last: dt.date, codes: Sequence[str],
                     should_stop: ShouldStop) -> Iterator[StockBars | StockFailure]:
        return self.source.fetch_stocks(first, last, should_stop, codes)

    def close(self) -> None:
        if self._process is not None:
            self._process.close()
        self.source.close()
