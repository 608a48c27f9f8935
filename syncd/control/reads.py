"""The control loop's own database connection: reads for `history`, `days` and a lock holder's run.

Owned by the control loop's thread. Every statement runs under a short statement timeout so a
slow database cannot wedge the loop; a lost connection is reopened once, and a database that
stays unreachable becomes a `database_unavailable` error reply (the password never in it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from ..calendar import calendar_days
from ..config import Config, scrub
from ..db import connection, days
from ..protocol import ErrorCode, RequestError

T = TypeVar("T")
STATEMENT_TIMEOUT_MS = "5000"


class ControlDb:
    def __init__(self, dsn: str, config: Config, lock_dsn: str | None = None) -> None:
        self.dsn = dsn
        self.lock_dsn = lock_dsn or dsn  # the run lock's own connection (database.lock_dsn)
        self._config = config
        self._conn: psycopg.Connection[Any] | None = None

    def call(self, action: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`action` on the connection (reopened once if lost), or RequestError(database_unavailable)."""
        for attempt in (1, 2):
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = connection.connect(self.dsn, self.connect_timeout_s, statement_timeout=STATEMENT_TIMEOUT_MS,
                                               TimeZone=self._config.schedule.timezone)
                return action(self._conn)
            except psycopg.OperationalError as exc:
                self.close()
                if attempt == 2:
                    raise self.unavailable(exc) from None
        raise AssertionError("unreachable")

    @property
    def connect_timeout_s(self) -> float:
        return min(5.0, self._config.database.connect_timeout_s)

    def unavailable(self, exc: Exception) -> RequestError:
        return RequestError(ErrorCode.DATABASE_UNAVAILABLE, f"database unreachable: {scrub(str(exc).strip(), self.dsn, self.lock_dsn)}")

    def missing_days(self, start: dt.date, end: dt.date, is_trading_day: Callable[[dt.date], bool]) -> list[dt.date]:
        """Trading days in [start, end] not recorded `success` (the missing-data job's list)."""
        statuses = self.call(lambda c: days.day_statuses(c, start, end))
        return [d for d in calendar_days(start, end) if is_trading_day(d) and statuses.get(d) != "success"]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
