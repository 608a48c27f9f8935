"""The database reads of a batch's `history` and `days` requests, made together in one round trip.

The control loop receives every request that is waiting before it answers any (ops.Batch). Each
distinct `history` limit and `days` range among them is one statement; they leave together as one
query (connection.read_together) instead of a round trip each, and each request's reply is built
from its own statement's rows, exactly as a read of its own would be: the same SQL, run after every
request of the batch arrived. On a loaded machine each round trip is a wake-up of PostgreSQL's
backend that waits for a core, which the requests waiting behind the loop wait with
(docs/performance.md, "Control plane"). The database unreachable becomes every such request's own
`database_unavailable` reply; any other failure of the whole leaves each request to read on its
own (and fail with its own error). A batch that may change what reads show (a start, cancel or
verify answered ok) drops what it read ahead (ops.Batch).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ..db import connection, days, runs
from ..protocol import AnyRequest, Day, Days, History, RequestError, check_range
from ..record import RunRecord
from .reads import ControlDb


@dataclass(frozen=True)
class ReadAhead:
    """What a batch read ahead: each `history` limit's runs and each `days` range's recorded days, or the
    error every request of those gets."""

    runs: Mapping[int, list[RunRecord]] = field(default_factory=dict)
    days: Mapping[tuple[dt.date, dt.date], list[Day]] = field(default_factory=dict)
    failure: RequestError | None = None
    failed_runs: frozenset[int] = frozenset()
    failed_days: frozenset[tuple[dt.date, dt.date]] = frozenset()

    def history(self, limit: int) -> list[RunRecord] | None:
        """The runs read for `limit` (None: not read ahead); raises the batch's RequestError if it failed."""
        if limit in self.failed_runs:
            raise self._failed()
        return self.runs.get(limit)

    def recorded_days(self, start: dt.date, end: dt.date) -> list[Day] | None:
        """The recorded days read for [start, end] (None: not read ahead); raises the batch's RequestError."""
        if (start, end) in self.failed_days:
            raise self._failed()
        return self.days.get((start, end))

    def _failed(self) -> RequestError:
        assert self.failure is not None
        return RequestError(self.failure.code, self.failure.message)


NOTHING_AHEAD = ReadAhead()
# Rows read ahead at most (each read counted by its limit or its range's calendar days): every result of the
# one query is held until the batch is answered, so a batch of long ranges reads them one at a time, as before.
READ_AHEAD_ROWS = 20_000


def read_ahead(db: ControlDb, requests: Iterable[AnyRequest], max_days: int) -> ReadAhead:
    """Read, in one round trip, what the `history` and `days` among `requests` (decoded and validated) need,
    up to READ_AHEAD_ROWS. Fewer than two distinct reads: nothing (one read alone costs the same round trip in
    the op itself)."""
    limits: list[int] = []
    ranges: list[tuple[dt.date, dt.date]] = []
    budget = READ_AHEAD_ROWS
    for request in requests:
        try:
            rows = check_range(request.start_date, request.end_date, max_days) if isinstance(request, Days) else 0
        except RequestError:
            continue  # beyond sync.max_days: the op itself refuses it, with its own reply
        if isinstance(request, History) and request.limit not in limits and request.limit <= budget:
            limits.append(request.limit)
            budget -= request.limit
        elif isinstance(request, Days) and (request.start_date, request.end_date) not in ranges and rows <= budget:
            ranges.append((request.start_date, request.end_date))
            budget -= rows
    if len(limits) + len(ranges) < 2:
        return NOTHING_AHEAD
    statements: list[tuple[str, tuple[Any, ...]]] = [(runs.HISTORY_SQL, (limit,)) for limit in limits]
    statements += [(days.DAYS_SQL, span) for span in ranges]
    try:
        results = db.call(lambda conn: connection.read_together(conn, statements))
    except RequestError as exc:
        return ReadAhead(failure=exc, failed_runs=frozenset(limits), failed_days=frozenset(ranges))
    except psycopg.Error:
        return NOTHING_AHEAD
    return ReadAhead(runs={limit: runs.runs_from_rows(rows) for limit, rows in zip(limits, results)},
                     days={span: days.days_from_rows(rows) for span, rows in zip(ranges, results[len(limits):])})
