"""What a stored bar costs on disk, and waiting for a daemon to compact its closed years (syncd/db/compaction.py).

`settle` restarts the daemon (its worker compacts at start-up, rather than at its first idle
tick ten seconds after the run: a second instead of ten, nothing else changes) and waits, with
a deadline, until it has compacted every closed year of its database (its
`partition_compacted` events); it returns those events: how long each year took and its
bytes before and after. `bytes_per_bar` is the issue's measure: after VACUUM,
pg_total_relation_size of daily_bars' partitions (heap, indexes, free-space and visibility
maps) over their rows, in total and by year, with each year's layout (being written, or
compacted). Used by the scale and readers benchmarks; nothing here asserts.
"""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from typing import Any

import psycopg

from syncd.db import compaction
from testkit import SyncdProcess

from .harness import note

SETTLE_TIMEOUT_S = 900.0


def settle(daemon: SyncdProcess, dsn: str, timeout_s: float = SETTLE_TIMEOUT_S) -> dict[str, Any]:
    """Restart the daemon and wait for it to compact every closed year; its compaction events and their totals."""
    daemon.stop()
    daemon.start()  # the worker's housekeeping runs at start-up (syncd/run/worker.py), else 10 s after the run
    zone = zoneinfo.ZoneInfo(daemon.config.get("schedule", {}).get("timezone", "Asia/Shanghai"))
    lookback = daemon.config.get("schedule", {}).get("missing_lookback_days", 30)
    closed = compaction.closed_before(dt.datetime.now(zone).date(), lookback)
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            waiting = compaction.pending(conn, closed)
            compacted = {year for year in range(1990, closed) if compaction.is_compacted(conn, year)}
            events = daemon.events("partition_compacted")  # each logged just after its commit
            if not waiting and compacted <= {e["year"] for e in events}:
                break
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"closed years still not compacted after {timeout_s:.0f} s")
            time.sleep(1.0)
    seconds = sum(e["seconds"] for e in events)
    note(f"compaction: {len(events)} closed years in {seconds:.0f} s of the daemon's idle time "
         f"(waited {time.monotonic() - started:.0f} s)")
    return {"years": len(events), "seconds": round(seconds, 1),
            "seconds_per_year": round(seconds / len(events), 2) if events else None,
            "bytes_before": sum(e["bytes_before"] for e in events), "bytes_after": sum(e["bytes_after"] for e in events)}


def bytes_per_bar(dsn: str, vacuum: bool = True) -> dict[str, Any]:
    """pg_total_relation_size of daily_bars' partitions / their rows, after VACUUM (which counts each partition's
    rows exactly: it reads every page of a table it has not seen); by year and layout too. `vacuum=False` right
    after a backfill: the table has only ever been appended to, and the rows are the counts ANALYZE left."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE daily_bars" if vacuum else "ANALYZE daily_bars")
        rows = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid), greatest(c.reltuples, 0)::bigint, "
            f"{compaction.COMPACTED.format(table='c.oid', name='c.relname')} "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'daily_bars'::regclass ORDER BY c.relname").fetchall()
    total = sum(r[1] for r in rows)
    bars = sum(r[3] for r in rows)
    by_layout: dict[str, list[int]] = {"compacted": [0, 0], "being written": [0, 0]}
    for _, size, _, count, compacted in rows:
        entry = by_layout["compacted" if compacted else "being written"]
        entry[0] += size
        entry[1] += count
    return {"bars": bars, "bytes": total, "bytes_per_bar": round(total / bars, 1) if bars else None,
            "heap_bytes_per_bar": round(sum(r[2] for r in rows) / bars, 1) if bars else None,
            "by_layout": {k: round(v[0] / v[1], 1) for k, v in by_layout.items() if v[1]},
            "by_year": {name[-4:]: round(size / count, 1) for name, size, _, count, _ in rows if count}}


# What the server did while a backfill wrote each year: cache hits and reads, checkpoints and who wrote dirty
# buffers, WAL (and its full-page images), autovacuum runs, and the size of the year's code index (its depth).
_COUNTERS = """
SELECT (SELECT blks_hit FROM pg_stat_database WHERE datname = current_database()),
       (SELECT blks_read FROM pg_stat_database WHERE datname = current_database()),
       checkpoints_timed + checkpoints_req, checkpoints_req, buffers_checkpoint, buffers_clean, buffers_backend,
       (SELECT wal_bytes FROM pg_stat_wal), (SELECT wal_fpi FROM pg_stat_wal),
       (SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0) FROM pg_stat_all_tables
        WHERE relname LIKE 'daily_bars_y%%')
FROM pg_stat_bgwriter"""
COUNTER_NAMES = ("blks_hit", "blks_read", "checkpoints", "checkpoints_req", "buffers_checkpoint", "buffers_clean",
                 "buffers_backend", "wal_bytes", "wal_fpi", "autovacuums")


class ServerCounters:
    """Snapshots of the server's cumulative counters, tagged with the year being written; per-year deltas."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.first: dict[int, tuple[Any, ...]] = {}
        self.last: tuple[Any, ...] | None = None

    def sample(self, year: int | None) -> None:
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self.conn.execute(_COUNTERS).fetchone()
        assert row is not None
        self.last = tuple(float(v or 0) for v in row)
        if year is not None and year not in self.first:
            self.first[year] = self.last

    def by_year(self) -> dict[int, dict[str, float]]:
        """Each year's counters from its first sample to the next year's (the last sample for the last year)."""
        years = sorted(self.first)
        out: dict[int, dict[str, float]] = {}
        for year, after in zip(years, [*years[1:], None]):
            end = self.first[after] if after is not None else self.last
            if end is None:
                continue
            delta = dict(zip(COUNTER_NAMES, (b - a for a, b in zip(self.first[year], end))))
            reads = delta["blks_hit"] + delta["blks_read"]
            out[year] = {"hit_ratio": round(delta["blks_hit"] / reads, 4) if reads else 1.0,
                         "blocks_read": int(delta["blks_read"]), "checkpoints": int(delta["checkpoints"]),
                         "buffers_backend": int(delta["buffers_backend"]), "buffers_checkpoint": int(delta["buffers_checkpoint"]),
                         "wal_mb": round(delta["wal_bytes"] / 1e6), "wal_fpi": int(delta["wal_fpi"]),
                         "autovacuums": int(delta["autovacuums"])}
        return out

    def close(self) -> None:
        self.conn.close()
