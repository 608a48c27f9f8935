"""A day's rows as one binary COPY payload for daily_bars, built column-wise with numpy (`EncodedRows`).

The write path copies such a payload as it is (db/daywrite.py), with no Python per row: this
module owns the encoding (PostgreSQL's binary COPY format for daily_bars' columns, in
BAR_COLUMNS order) and attaches the pre-filter's verdict (prefilter.py: the codes of the
rows the checks need to judge). `encode_columns` takes numpy columns (the demo source builds
its days so); `encode_rows` takes Row tuples (None fields become NULL, a NaN stays NaN: the
same bytes psycopg would send for the rows). The rows must be
final: pre_close and adj_factor present where the write path would otherwise derive them
(`needs_derivation` says so). It runs where days are produced (a source's fetch process),
never on the control loop.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Mapping, Sequence
from typing import cast

import numpy as np

from . import prefilter
from .base import EncodedRows, Row

VALUE_COLUMNS = ("open", "high", "low", "close", "pre_close", "volume", "amount", "turnover", "pct_change", "adj_factor")
_FIELDS = 2 + len(VALUE_COLUMNS)  # trade_date, code, then the values
_PG_EPOCH = dt.date(2000, 1, 1).toordinal()
HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
_PRE_CLOSE, _PCT_CHANGE, _ADJ_FACTOR = 5, 9, 10  # Row positions the write path derives when None


def record_dtype(code_bytes: int) -> np.dtype:
    """One daily_bars row with no NULL: field count, then (length, value) per column, big-endian."""
    return np.dtype([("fields", ">i2"), ("date_len", ">i4"), ("date", ">i4"), ("code_len", ">i4"), ("code", f"S{code_bytes}")]
                    + [(f"{name}_{part}", kind) for name in VALUE_COLUMNS
                       for part, kind in (("len", ">i4"), ("v", ">i8" if name == "volume" else ">f8"))])


def encode_columns(day: dt.date, codes: np.ndarray, columns: Mapping[str, np.ndarray],
                   nulls: Mapping[str, np.ndarray] | None = None) -> EncodedRows:
    """The day's rows from columns (one entry per stock, `codes` an array of equal-length ASCII bytes).
    `nulls`: per column, a mask of the rows where it is NULL (a NaN value is written as NaN, as psycopg would)."""
    dtype = record_dtype(codes.dtype.itemsize)
    payload = bytearray(len(HEADER) + dtype.itemsize * len(codes) + len(TRAILER))  # the records are built in place
    payload[:len(HEADER)], payload[-len(TRAILER):] = HEADER, TRAILER
    records = np.frombuffer(payload, dtype=dtype, count=len(codes), offset=len(HEADER))
    records["fields"] = _FIELDS
    records["date_len"], records["date"] = 4, day.toordinal() - _PG_EPOCH
    records["code_len"], records["code"] = codes.dtype.itemsize, codes
    for name in VALUE_COLUMNS:
        values = np.asarray(columns[name])
        if nulls is not None and name in nulls:
            values = np.where(nulls[name], 0, values)
        records[f"{name}_len"], records[f"{name}_v"] = 8, values
    null_rows = np.zeros(len(codes), dtype=bool)
    for mask in (nulls or {}).values():
        null_rows |= mask
    if null_rows.any():
        payload = bytearray(HEADER + _with_nulls(records, nulls or {}, null_rows) + TRAILER)
    judged = dict(columns)
    for name, mask in (nulls or {}).items():  # the pre-filter reads a NULL as NaN: not judged there, judged here
        if mask.any():
            judged[name] = np.where(mask, np.nan, np.asarray(columns[name], dtype=np.float64))
    suspects = frozenset(codes[prefilter.suspects(judged)].astype(str).tolist())
    return EncodedRows(payload, len(codes), suspects)


def _with_nulls(records: np.ndarray, nulls: Mapping[str, np.ndarray], null_rows: np.ndarray) -> bytes:
    """The rows holding a NULL re-encoded field by field (a NULL field is its length, -1, with no value)."""
    size = records.dtype.itemsize
    flat = records.tobytes()
    fields = records.dtype.fields
    assert fields is not None
    head = fields["open_len"][1]  # bytes before the first value column
    parts: list[bytes] = []
    for i in range(len(records)):
        row = flat[i * size:(i + 1) * size]
        if not null_rows[i]:
            parts.append(row)
            continue
        out = [row[:head]]
        for name in VALUE_COLUMNS:
            start = fields[f"{name}_len"][1]
            out.append(struct.pack(">i", -1) if name in nulls and nulls[name][i] else row[start:start + 12])
        parts.append(b"".join(out))
    return b"".join(parts)


def encode_rows(day: dt.date, rows: Sequence[Row]) -> EncodedRows:
    """The day's Row tuples (11 fields; a 10-field row lacks adj_factor) as one payload; None is NULL."""
    if not rows:
        return EncodedRows(HEADER + TRAILER, 0, frozenset())
    if len({len(row[0]) for row in rows}) > 1:
        raise ValueError("encode_rows: codes of different lengths (A-share codes are six digits)")
    codes = np.array([row[0].encode() for row in rows])
    columns: dict[str, np.ndarray] = {}
    nulls: dict[str, np.ndarray] = {}
    for position, name in enumerate(VALUE_COLUMNS, start=1):
        values = [row[position] if position < len(row) else None for row in rows]
        missing = np.array([v is None for v in values])
        kind = np.int64 if name == "volume" else np.float64
        columns[name] = np.array([0 if v is None else v for v in values], dtype=kind)
        if missing.any():
            nulls[name] = missing
    return encode_columns(day, codes, columns, nulls)


def decode_rows(encoded: EncodedRows) -> list[Row]:
    """The payload's rows back as Row tuples (NULL is None): the inverse of `encode_rows`, for the rare day whose
    payload must be merged with other rows (a fallback's stocks: run/fallback.py)."""
    data, at = memoryview(encoded.payload), len(HEADER)
    rows: list[Row] = []
    for _ in range(encoded.count):
        (fields,) = struct.unpack_from(">h", data, at)
        at += 2
        values: list[object] = []
        for position in range(fields):
            (length,) = struct.unpack_from(">i", data, at)
            at += 4
            if length < 0:
                values.append(None)
                continue
            raw = data[at:at + length]
            at += length
            if position == 1:
                values.append(bytes(raw).decode())
            elif position > 1:  # position 0 is the day itself
                values.append(struct.unpack(">q" if VALUE_COLUMNS[position - 2] == "volume" else ">d", raw)[0])
        rows.append(cast(Row, tuple(values)))  # a Row's fields in a Row's order
    return rows


def needs_derivation(rows: Sequence[Row]) -> bool:
    """Whether the write path would derive something for these rows (then they go as rows, not a payload)."""
    return any(len(row) <= _ADJ_FACTOR or row[_PRE_CLOSE] is None or row[_PCT_CHANGE] is None or row[_ADJ_FACTOR] is None
               for row in rows)
