"""Closed years stored by stock: a year's partition rewritten once nothing in the normal course writes it again.

A year being written keeps its rows in day order (a day's cross-section in a few pages)
with a `(code, trade_date)` index (partitions.py): a stock's year is 243 rows on 243 heap
pages. Once the year is closed (`closed_before`: its last day is older than the
missing-data job's lookback, with a week to spare), `compact` rewrites it: a sorted copy
(ORDER BY code, trade_date) with the primary key and the same `(code, trade_date)` index,
built on sorted rows and packed full (fillfactor 100, which marks a compacted year), swapped
in for the old partition. A stock's year is then ~4 heap pages, and a stored bar ~183 bytes
instead of ~192 (docs/performance.md, "The layout"). A day's cross-section of a compacted
year reads one row from each stock's pages instead (slower; measured there).

Online: the copy reads the old partition under a SHARE lock (readers go on; a write into
that year waits for it), then the swap (DETACH, DROP, rename, ATTACH: milliseconds) takes
daily_bars' ACCESS EXCLUSIVE lock with a short lock_timeout, retried a few times, so a
long reader makes the compaction wait for its next turn rather than the readers wait for
the compaction. All in one transaction: a crash or a lost connection leaves the old
partition as it was. A compacted year that is written again (a re-sync, a late
correction: each day still atomic) stays correct and indexed; once a tenth of its rows
have been replaced it is compacted again (`pending`).

The worker compacts while idle (run/syncer.py, `database.compact_closed_years`);
`compact` may be called by anyone holding a connection.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from . import partitions
from .sqlrow import scalar

MARGIN_DAYS = 7           # after the missing-data job's lookback has passed a year's last day
REWRITTEN_SHARE = 0.1     # a compacted year whose replaced rows exceed this share is compacted again
SWAP_LOCK_TIMEOUT_MS = 1000
SWAP_ATTEMPTS = 3
SWAP_BACKOFF_S = 0.5
# The copy's sort and the index builds in memory (a year is ~160 MB of rows); no statement_timeout of the DSN's.
_SETTINGS = {"work_mem": "256MB", "maintenance_work_mem": "256MB", "statement_timeout": "0", "lock_timeout": "10s"}


@dataclass(frozen=True)
class Compacted:
    year: int
    rows: int
    seconds: float
    bytes_before: int   # the partition with its indexes (pg_total_relation_size)
    bytes_after: int


class SwapDeferred(Exception):
    """Readers (or a writer) held daily_bars through every attempt: nothing changed, try again later."""


def closed_before(today: dt.date, lookback_days: int) -> int:
    """The first year not closed: years before it are written again only by a re-sync someone asks for."""
    return (today - dt.timedelta(days=lookback_days + MARGIN_DAYS)).year


# A compacted partition: its primary key and code index packed full (an index built on the year being written
# keeps btree's default 90, for the days still to come).
COMPACTED = """(SELECT count(*) = 2 FROM pg_index x JOIN pg_class ix ON ix.oid = x.indexrelid
                WHERE x.indrelid = {table} AND ix.relname IN ({name} || '_pkey', {name} || '_code_date')
                AND 'fillfactor=100' = ANY(ix.reloptions))"""


def is_compacted(conn: psycopg.Connection[Any], year: int) -> bool:
    name = partitions.partition_name(year)
    return bool(scalar(conn.execute(f"SELECT to_regclass(%(n)s) IS NOT NULL AND "
                                    f"{COMPACTED.format(table='to_regclass(%(n)s)', name='%(n)s')}", {"n": name})))


def pending(conn: psycopg.Connection[Any], closed_before_year: int) -> list[int]:
    """Closed years whose partition is not compacted, or was rewritten by a tenth since (newest first)."""
    rows = conn.execute(
        f"SELECT c.relname, {COMPACTED.format(table='c.oid', name='c.relname')}, "
        "coalesce(s.n_tup_del + s.n_tup_upd, 0), greatest(c.reltuples, 0) "  # reltuples: set by the compaction's ANALYZE
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid "
        "WHERE i.inhparent = 'daily_bars'::regclass AND c.relname ~ '^daily_bars_y[0-9]{4}$' ORDER BY c.relname DESC").fetchall()
    return [int(name[-4:]) for name, compacted, replaced, live in rows
            if int(name[-4:]) < closed_before_year and (not compacted or replaced > REWRITTEN_SHARE * live)]


def compact(conn: psycopg.Connection[Any], year: int) -> Compacted | None:
    """Rewrite `year`'s partition stored by stock (above); None if it has none. Raises SwapDeferred when
    daily_bars stayed busy through every attempt at the swap (nothing changed)."""
    name = partitions.partition_name(year)
    new = f"{name}_compacting"
    started = time.monotonic()
    with conn.transaction():
        for setting, value in _SETTINGS.items():
            conn.execute("SELECT set_config(%s, %s, true)", (setting, value))
        found = conn.execute("SELECT relnamespace::regnamespace::text, pg_total_relation_size(oid) FROM pg_class "
                             "WHERE oid = to_regclass(%s)", (name,)).fetchone()
        if found is None:
            return None
        schema, bytes_before = found
        old = f"{schema}.{name}"
        conn.execute(f"LOCK TABLE {old} IN SHARE MODE")  # no write into the year until the swap; readers go on
        columns = ", ".join(row[0] for row in conn.execute(
            "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = 'daily_bars'::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum").fetchall())
        conn.execute(f"CREATE TABLE {schema}.{new} (LIKE daily_bars)")
        rows = conn.execute(f"INSERT INTO {schema}.{new} ({columns}) SELECT {columns} FROM {old} "
                            "ORDER BY code, trade_date").rowcount
        first, after = dt.date(year, 1, 1), dt.date(year + 1, 1, 1)
        conn.execute(f"ALTER TABLE {schema}.{new} ADD CONSTRAINT {new}_year "
                     f"CHECK (trade_date >= '{first}' AND trade_date < '{after}')")
        conn.execute(f"ALTER TABLE {schema}.{new} ADD CONSTRAINT {new}_pkey PRIMARY KEY (trade_date, code) "
                     "WITH (fillfactor = 100)")
        conn.execute(f"CREATE INDEX {new}_code_date ON {schema}.{new} {partitions.CODE_INDEX} WITH (fillfactor = 100)")
        partitions.carry_over(conn, old, f"{schema}.{new}")
        conn.execute(f"ANALYZE {schema}.{new}")
        _lock_for_swap(conn)
        conn.execute(f"ALTER TABLE daily_bars DETACH PARTITION {old}")
        conn.execute(f"DROP TABLE {old}")
        conn.execute(f"ALTER TABLE {schema}.{new} RENAME TO {name}")
        for suffix in ("year", "pkey"):
            conn.execute(f"ALTER TABLE {old} RENAME CONSTRAINT {new}_{suffix} TO {name}_{suffix}")
        conn.execute(f"ALTER INDEX {schema}.{new}_code_date RENAME TO {name}_code_date")
        conn.execute(f"ALTER TABLE daily_bars ATTACH PARTITION {old} FOR VALUES FROM ('{first}') TO ('{after}')")
        bytes_after = scalar(conn.execute(f"SELECT pg_total_relation_size('{old}'::regclass)"))
    return Compacted(year, rows, round(time.monotonic() - started, 2), bytes_before, bytes_after)


def _lock_for_swap(conn: psycopg.Connection[Any]) -> None:
    """daily_bars' ACCESS EXCLUSIVE lock, waiting at most SWAP_LOCK_TIMEOUT_MS a time (readers queue behind a
    waiting request), a few times; SwapDeferred if readers or a writer kept it every time."""
    for attempt in range(SWAP_ATTEMPTS):
        try:
            with conn.transaction():  # a savepoint: a timed-out attempt leaves the copy in place
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{SWAP_LOCK_TIMEOUT_MS}ms",))
                conn.execute("LOCK TABLE ONLY daily_bars IN ACCESS EXCLUSIVE MODE")
            return
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
            if attempt + 1 < SWAP_ATTEMPTS:
                time.sleep(SWAP_BACKOFF_S * (attempt + 1))
    raise SwapDeferred(f"daily_bars stayed busy for {SWAP_ATTEMPTS} attempts of {SWAP_LOCK_TIMEOUT_MS} ms")

