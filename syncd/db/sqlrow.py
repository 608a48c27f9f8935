"""Typed reads of one row: statements that always return exactly one row (an aggregate, a function
call) still come back from psycopg as `Row | None`; these say so once instead of at every caller."""

from __future__ import annotations

from typing import Any

import psycopg


def one(cursor: psycopg.Cursor[Any]) -> Any:
    """The cursor's next row, which the statement guarantees exists."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("a statement that always returns a row returned none")
    return row


def scalar(cursor: psycopg.Cursor[Any]) -> Any:
    """The first column of the cursor's one row."""
    return one(cursor)[0]
