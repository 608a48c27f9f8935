"""The csv source: one file per trading day, DIR/YYYY-MM-DD.csv, in the contract's units.

Header `code,open,high,low,close,pre_close,volume,amount,turnover,pct_change` (any order).
Files are UTF-8 (a BOM tolerated) or, with `[source.csv] encoding`, GBK / GB18030 as Chinese
Excel and TDX export them; bytes that are not in the configured encoding fail the day with
the byte's offset and, where the file reads as the other family, the setting that fits. A trading day without its file, or a file with any bad row, becomes a
DayFailure naming the file and line; nothing of that day is loaded. Empty numeric cells are
missing values (NULL); code is required and unique within a file.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ..config import CsvConfig
from .base import COLUMNS, DayBatch, DayFailure, DayStream, Row, ShouldStop, Source, StockInfo

_INT_COLUMNS = {"volume"}


class CsvRowError(Exception):
    pass


class CsvSource(Source):
    name = "csv"
    reference_unit = "one file"

    def __init__(self, config: CsvConfig) -> None:
        self.root = Path(config.path)
        self.encoding = config.encoding

    def fetch_days(self, days: Sequence[dt.date], should_stop: ShouldStop) -> DayStream:
        """A file a day, read lazily (the read-ahead then runs one day ahead of the writer)."""
        for day in days:
            if should_stop():
                return
            rows = self.read_day(day)
            yield day, rows if isinstance(rows, DayFailure) else DayBatch(rows)

    def day_file(self, day: dt.date) -> Path:
        return self.root / f"{day.isoformat()}.csv"

    def confirms_trading_day(self, day: dt.date) -> bool:
        """Past the packaged calendar a day trades when its file is there (a holiday has none)."""
        return self.day_file(day).is_file()

    def read_day(self, day: dt.date) -> list[Row] | DayFailure:
        path = self.day_file(day)
        try:
            return _parse(path, io.StringIO(decode(path.read_bytes(), self.encoding), newline=""))
        except FileNotFoundError:
            return DayFailure(f"{path}: no file for trading day {day}")
        except UnicodeDecodeError as exc:
            return DayFailure(f"{path}: {describe_decode_error(exc, path.read_bytes(), self.encoding)}")
        except CsvRowError as exc:
            return DayFailure(str(exc))
        except (OSError, csv.Error) as exc:
            return DayFailure(f"{path}: cannot read: {exc}")

    def trading_days(self, start: dt.date, end: dt.date) -> list[dt.date] | None:
        return None

    def stock_list(self) -> list[StockInfo] | None:
        return None

    def close(self) -> None:
        pass


def decode(data: bytes, encoding: str) -> str:
    """The file's text: a UTF-8 BOM means UTF-8 whatever the setting; else the configured encoding."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data.decode("utf-8-sig")
    return data.decode(encoding)


def describe_decode_error(exc: UnicodeDecodeError, data: bytes, encoding: str) -> str:
    shown = {"utf-8": "UTF-8", "gbk": "GBK", "gb18030": "GB18030"}[encoding]
    message = f"not {shown} ({exc.reason} at byte {exc.start})"
    other = "gb18030" if encoding == "utf-8" else "utf-8"
    try:
        data.decode(other)
    except UnicodeDecodeError:
        return message
    hint = '"gbk" (or "gb18030")' if other == "gb18030" else '"utf-8"'
    return f"{message}; it reads as {other.upper()}: set [source.csv] encoding = {hint}"


def _parse(path: Path, handle: TextIO) -> list[Row]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        raise CsvRowError(f"{path} line 1: empty file, expected the header {','.join(COLUMNS)}")
    names = [h.strip() for h in header]
    if sorted(names) != sorted(COLUMNS):
        missing = [c for c in COLUMNS if c not in names]
        extra = [c for c in names if c not in COLUMNS]
        raise CsvRowError(f"{path} line 1: bad header (missing: {', '.join(missing) or '-'}; unexpected: {', '.join(extra) or '-'}); "
                          f"expected {','.join(COLUMNS)}")
    order = [names.index(c) for c in COLUMNS]
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for line_no, record in enumerate(reader, start=2):
        if not record or all(not cell.strip() for cell in record):
            continue
        if len(record) != len(COLUMNS):
            raise CsvRowError(f"{path} line {line_no}: expected {len(COLUMNS)} fields, got {len(record)}")
        cells = [record[i].strip() for i in order]
        code = cells[0]
        if not code:
            raise CsvRowError(f"{path} line {line_no}: code is empty")
        if code in seen:
            raise CsvRowError(f"{path} line {line_no}: code {code} already appears on line {seen[code]}")
        seen[code] = line_no
        values = [_number(path, line_no, name, cell) for name, cell in zip(COLUMNS[1:], cells[1:])]
        rows.append((code, *values, None))  # type: ignore[arg-type]  # adj_factor: derived from pre_close
    return rows


def _number(path: Path, line_no: int, column: str, cell: str) -> float | int | None:
    if cell == "":
        return None
    try:
        value = float(cell)
    except ValueError:
        raise CsvRowError(f"{path} line {line_no}: {column} {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise CsvRowError(f"{path} line {line_no}: {column} {cell!r} is not a finite number")
    if column in _INT_COLUMNS:
        if not value.is_integer():
            raise CsvRowError(f"{path} line {line_no}: {column} {cell!r} is not a whole number of shares")
        return int(value)
    return value
