"""What a stored bar costs on disk, and waiting for a daemon to compact its closed years (syncd/db/compaction.py).

`settle` waits, with a deadline, until the daemon has compacted every closed year of its
database (its `partition_compacted` events) and returns those events: how long each year
took and its bytes before and after. `bytes_per_bar` is the issue's measure: after VACUUM,
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
    """Wait for the daemon to compact every closed year; its compaction events and their totals."""
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


def bytes_per_bar(dsn: str) -> dict[str, Any]:
    """pg_total_relation_size of daily_bars' partitions / their rows, after VACUUM; by year and layout too."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE daily_bars")
        rows = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid), coalesce(n.bars, 0), "
            f"{compaction.COMPACTED.format(table='c.oid', name='c.relname')} "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "LEFT JOIN (SELECT tableoid, count(*) AS bars FROM daily_bars GROUP BY 1) n ON n.tableoid = c.oid "
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
