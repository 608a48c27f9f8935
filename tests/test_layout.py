"""daily_bars' storage (db/partitions.py, db/compaction.py): what a closed year becomes, that every stored value
comes back exactly (the demo's and the upstreams' days, before and after compaction), that a compacted year still
takes a re-sync atomically, and that the rewrite never leaves half a swap behind."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import wait_until
from dbrows import migrated_with_run
from market import DAYS, Market
from upstreams import BaostockServer, FakeTime, HttpUpstream, tushare_route

from syncd.config import BaostockConfig, DemoConfig, TushareConfig
from syncd.db import compaction, daywrite, partitions
from syncd.db.daywrite import DayRejected, DayWrite
from syncd.sources.baostock import BaostockSource
from syncd.sources.base import DayBatch, Row
from syncd.sources.demo import DemoSource
from syncd.sources.tushare import TushareSource

RUN = "run-layout"
VALUES = ", ".join(daywrite.BAR_COLUMNS[1:])  # a Row's fields: code, open ... adj_factor


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:
    with migrated_with_run(database, RUN) as opened:
        yield opened


def stored(conn: psycopg.Connection[Any], day: dt.date) -> dict[str, tuple[Any, ...]]:
    return {row[0]: row for row in conn.execute(f"SELECT {VALUES} FROM daily_bars WHERE trade_date = %s", (day,))}


def same(given: Row, got: tuple[Any, ...]) -> bool:
    """Every field the source gave is stored exactly (floats compared bit for bit); None fields are the write path's."""
    return all(value is None or (value == kept and type(kept) is type(value) or isinstance(value, int) and kept == value)
               for value, kept in zip(given, got))


def fetched_days(source: Any, server: Any) -> dict[dt.date, list[Row]]:
    """Every day of DAYS the source answered with rows, then the source and its local server closed."""
    try:
        return {day: list(batch.rows) for day, batch in source.fetch_days(DAYS, lambda: False)
                if isinstance(batch, DayBatch) and isinstance(batch.rows, list)}
    finally:
        source.close()
        server.stop()


def tushare_days(market: Market) -> dict[dt.date, list[Row]]:
    server = HttpUpstream(tushare_route(market))
    return fetched_days(TushareSource(TushareConfig(token="good-token", url=server.url, requests_per_minute=60_000),
                                      **FakeTime().timing()), server)


def baostock_days(market: Market) -> dict[dt.date, list[Row]]:
    server = BaostockServer(market)
    return fetched_days(BaostockSource(BaostockConfig(server=server.address, requests_per_second=10_000, jitter=0),
                                       market_daily=True, **FakeTime().timing()), server)


def demo_days() -> dict[dt.date, list[Row]]:
    demo = DemoSource(DemoConfig(stocks=300, seed=11))
    return {day: demo.rows_for(day) for day in (dt.date(2024, 1, 2), dt.date(2024, 7, 1), dt.date(2024, 12, 31))}


@pytest.mark.parametrize("source", ["demo payload", "demo rows", "tushare", "baostock"])
def test_every_value_a_source_gave_reads_back_exactly_before_and_after_compaction(conn, source):
    if source.startswith("demo"):
        days = demo_days()
    else:
        days = (tushare_days if source == "tushare" else baostock_days)(Market())
    assert len(days) >= 3 and all(days.values())
    demo = DemoSource(DemoConfig(stocks=300, seed=11))
    for day, rows in sorted(days.items()):
        daywrite.write_day(conn, DayWrite(day, RUN), demo.encoded(day) if source == "demo payload" else rows)

    def check() -> None:
        for day, rows in days.items():
            kept = stored(conn, day)
            assert set(kept) == {row[0] for row in rows}
            wrong = [(row, kept[row[0]]) for row in rows if not same(row, kept[row[0]])]
            assert not wrong, wrong[:3]

    check()
    assert compaction.compact(conn, 2024) is not None and compaction.is_compacted(conn, 2024)
    check()


def write_demo_year(conn: psycopg.Connection[Any], year: int, days: int = 12, stocks: int = 120) -> list[dt.date]:
    demo = DemoSource(DemoConfig(stocks=stocks, seed=5))
    written = [day for day in (dt.date(year, 3, 1) + dt.timedelta(days=i) for i in range(days * 2)) if day.weekday() < 5][:days]
    for day in written:
        daywrite.write_day(conn, DayWrite(day, RUN), demo.encoded(day))
    return written


def indexes(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    return dict(conn.execute("SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
                             "WHERE indrelid = %s::regclass", (table,)).fetchall())


def test_a_year_being_written_has_a_plain_code_date_index_and_a_compacted_one_is_stored_by_stock(conn):
    write_demo_year(conn, 2024)
    assert set(indexes(conn, "daily_bars_y2024")) == {"daily_bars_y2024_pkey", "daily_bars_y2024_code_date"}
    assert "INCLUDE" not in indexes(conn, "daily_bars_y2024")["daily_bars_y2024_code_date"]
    assert indexes(conn, "daily_bars") == {"daily_bars_pkey": indexes(conn, "daily_bars")["daily_bars_pkey"]}
    before = conn.execute("SELECT * FROM daily_bars ORDER BY trade_date, code").fetchall()
    assert compaction.pending(conn, 2025) == [2024] and compaction.pending(conn, 2024) == []
    done = compaction.compact(conn, 2024)
    assert done is not None and done.rows == len(before) and done.bytes_after < done.bytes_before
    assert conn.execute("SELECT * FROM daily_bars ORDER BY trade_date, code").fetchall() == before
    after = indexes(conn, "daily_bars_y2024")
    assert set(after) == {"daily_bars_y2024_pkey", "daily_bars_y2024_code_date"}
    assert all("fillfactor='100'" in definition for definition in after.values()), after
    assert after["daily_bars_y2024_code_date"].endswith("(code, trade_date) WITH (fillfactor='100')")
    in_heap = [code for (code,) in conn.execute("SELECT code FROM daily_bars_y2024 ORDER BY ctid")]
    assert in_heap == sorted(in_heap)  # one stock's rows side by side
    assert conn.execute("SELECT to_regclass('daily_bars_y2024_compacting')").fetchone() == (None,)
    assert compaction.pending(conn, 2025) == []
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT * FROM daily_bars WHERE code = '600001'").fetchall())
    assert "daily_bars_y2024_code_date" in plan, plan


def test_a_compacted_year_takes_a_resync_atomically_and_is_compacted_again_once_a_tenth_changed(conn):
    days = write_demo_year(conn, 2024)
    compaction.compact(conn, 2024)
    day = days[3]
    rows = [(code, *values[:5], values[5] + 100, *values[6:]) for code, *values in stored(conn, day).values()]
    bad = [(code, o, h, lo, c, p, v, 1e12, *rest) for code, o, h, lo, c, p, v, _, *rest in rows]  # amount / volume off
    before = stored(conn, day)
    with pytest.raises(DayRejected, match="unit"):
        daywrite.write_day(conn, DayWrite(day, RUN), bad)  # the unit guard refuses the day: nothing of it is written
    assert stored(conn, day) == before
    daywrite.write_day(conn, DayWrite(day, RUN), rows)
    assert stored(conn, day) == {row[0]: tuple(row) for row in rows}
    assert compaction.pending(conn, 2025) == []  # 1 day of 12 rewritten: below a tenth
    for other in days[4:6]:
        daywrite.write_day(conn, DayWrite(other, RUN), [(code, *v[:5], v[5] + 1, *v[6:]) for code, *v in stored(conn, other).values()])
    conn.execute("SELECT pg_stat_force_next_flush()")  # the counters reach pg_stat_all_tables when flushed
    wait_until(lambda: compaction.pending(conn, 2025) == [2024], what="the rewritten rows counted")
    assert compaction.compact(conn, 2024) is not None and stored(conn, day) == {row[0]: tuple(row) for row in rows}


def test_a_reader_holding_daily_bars_defers_the_swap_and_nothing_changes(conn, database, monkeypatch):
    write_demo_year(conn, 2024, days=4, stocks=50)
    monkeypatch.setattr(compaction, "SWAP_LOCK_TIMEOUT_MS", 50)
    monkeypatch.setattr(compaction, "SWAP_BACKOFF_S", 0.0)
    before = conn.execute("SELECT * FROM daily_bars ORDER BY trade_date, code").fetchall()
    with psycopg.connect(database) as reader:
        reader.execute("SELECT count(*) FROM daily_bars")  # its transaction stays open, holding daily_bars
        with pytest.raises(compaction.SwapDeferred):
            compaction.compact(conn, 2024)
        reader.rollback()
    assert not compaction.is_compacted(conn, 2024)
    assert set(indexes(conn, "daily_bars_y2024")) == {"daily_bars_y2024_pkey", "daily_bars_y2024_code_date"}
    assert conn.execute("SELECT to_regclass('daily_bars_y2024_compacting')").fetchone() == (None,)
    assert conn.execute("SELECT * FROM daily_bars ORDER BY trade_date, code").fetchall() == before
    assert compaction.compact(conn, 2024) is not None  # the next turn


def test_a_year_closes_once_the_missing_data_jobs_lookback_has_passed_it():
    assert compaction.closed_before(dt.date(2026, 1, 20), 30) == 2025  # late December may still be re-fetched
    assert compaction.closed_before(dt.date(2026, 2, 7), 30) == 2026
    assert compaction.closed_before(dt.date(2026, 12, 7), 30) == 2026


def test_a_partition_made_by_hand_gets_the_code_index_when_syncd_first_writes_its_year(conn):
    conn.execute("CREATE TABLE daily_bars_y2031 PARTITION OF daily_bars FOR VALUES FROM ('2031-01-01') TO ('2032-01-01')")
    assert set(indexes(conn, "daily_bars_y2031")) == {"daily_bars_y2031_pkey"}
    partitions.ensure_year(conn, 2031)
    assert set(indexes(conn, "daily_bars_y2031")) == {"daily_bars_y2031_pkey", "daily_bars_y2031_code_date"}


def test_the_idle_daemon_compacts_the_closed_years_it_wrote_and_every_value_stays(syncd_factory, database):
    daemon = syncd_factory()  # demo, 200 stocks, seed 7; the schedule's clock is today's: 2024 and 2025 are closed
    daemon.client().start("2024-12-23", "2025-01-08")
    assert daemon.wait_idle().last_run.status == "succeeded"
    events = wait_until(lambda: len(found := daemon.events("partition_compacted")) == 2 and found, timeout=90,
                        what="both years compacted")
    assert [e["year"] for e in events] == [2025, 2024]  # the newest first
    assert all(e["bytes_after"] < e["bytes_before"] for e in events)
    demo = DemoSource(DemoConfig(stocks=200, seed=7))
    with psycopg.connect(database) as conn:
        assert compaction.is_compacted(conn, 2024) and compaction.is_compacted(conn, 2025)
        days = [row[0] for row in conn.execute("SELECT date FROM sync_days WHERE status = 'success' ORDER BY 1")]
        assert len(days) == 12
        for day in days:
            kept = stored(conn, day)
            assert all(same(row, kept[row[0]]) for row in demo.rows_for(day)) and len(kept) == 200
