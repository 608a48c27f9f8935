"""Data sources: where daily bars come from. `load_source` picks one by config name.

Each source module imports its third-party library lazily, so importing any of them (and
this package) works without the optional extras installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import DayFailure, Row, Source, SourceError, SourceUnavailable

if TYPE_CHECKING:
    from ..config import SourceConfig


def load_source(config: SourceConfig, *, reference: bool = False) -> Source:
    """Build the configured source; raise SourceUnavailable with the pip command if its extra is missing.

    `reference`: built as a reconciliation's other opinion (reference.py): the remote sources then ask
    for bars (and factors) only, never for listings or optional datasets."""
    match config.name:
        case "demo":
            from .demo import DemoSource

            return DemoSource(config.demo)
        case "csv":
            from .csvdir import CsvSource

            return CsvSource(config.csv)
        case "akshare":
            from .akshare import AkshareSource

            return AkshareSource(config.akshare, reference=reference)
        case "baostock":
            from .baostock import BaostockSource

            return BaostockSource(config.baostock, reference=reference)
        case "tushare":
            from .tushare import TushareSource

            return TushareSource(config.tushare, reference=reference)
    raise SourceUnavailable(f"unknown source {config.name!r}")


__all__ = ["DayFailure", "Row", "Source", "SourceError", "SourceUnavailable", "load_source"]
