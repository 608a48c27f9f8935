"""Data sources: where daily bars come from. `load_source` picks one by config name.

Each source module imports its third-party library lazily, so importing any of them (and
this package) works without the optional extras installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from .base import DayFailure, Row, Source, SourceError, SourceUnavailable, require_extra

if TYPE_CHECKING:
    from ..config import SourceConfig, SourceName


# The library each remote source runs (checked installed without importing it), and the extra that brings it.
_LIBRARIES = {"akshare": ("akshare", "akshare"), "baostock": ("baostock", "baostock"), "tushare": ("requests", "tushare")}


def check_source(config: SourceConfig, environ: Mapping[str, str]) -> None:
    """What building the configured source and its fallbacks would refuse (an extra missing, Tushare's token
    unset), without building them: no child process, no import of a library (`syncd --check-config`)."""
    _check_one(config, environ)
    for position, name in enumerate(config.fallback):
        try:
            _check_one(config.of(name), environ)
        except SourceUnavailable as exc:
            raise SourceUnavailable(f"source.fallback[{position}]: {exc}") from None


def _check_one(config: SourceConfig, environ: Mapping[str, str]) -> None:
    if config.name in _LIBRARIES:
        require_extra(*_LIBRARIES[config.name])
    if config.name == "tushare":
        from .tushare import token_of

        token_of(config.tushare, environ)


def check_against(config: SourceConfig, against: SourceName | Literal[""], environ: Mapping[str, str]) -> None:
    """`check_source` for the source named by verify.against (built from its own [source.NAME] table)."""
    if not against:
        return
    try:
        check_source(config.of(against), environ)
    except SourceUnavailable as exc:
        raise SourceUnavailable(f"verify.against: {exc}") from None


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


__all__ = ["DayFailure", "Row", "Source", "SourceError", "SourceUnavailable", "check_against", "check_source", "load_source"]
