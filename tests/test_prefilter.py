"""Encoded days on a real PostgreSQL: the pre-filter never hides a finding, and a re-sync changes only what changed.

A day handed over as a binary COPY payload (syncd/sources/copypayload.py) carries the codes of the rows the
checks could flag (syncd/sources/prefilter.py), and the write path runs the SQL checks on those alone; a
re-sync of a day that holds rows replaces only the rows that differ (daywrite._merge). Both
must leave the database exactly as the plain path (every row judged, DELETE + COPY) would.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from dbrows import migrated_with_run, sane_bar

from syncd.db import daywrite, reference
from syncd.db.daywrite import DayWrite
from syncd.sources import copypayload, prefilter
from syncd.sources.base import Row, StockInfo

RUN = "run-prefilter"
DAY = dt.date(2025, 3, 4)


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:
    with migrated_with_run(database, RUN) as connection:
        yield connection


bar = sane_bar


def filler(count: int) -> list[Row]:
    return [bar(f"605{i:03d}") for i in range(count)]


def edge_rows() -> list[Row]:
    """Rows on and just past each rule's edge, and the fields the rules cannot judge."""
    sane = bar("600000")
    low, high = sane[3], sane[2]
    t = max(0.01, (high - low) / 100)
    return [
        bar("600001", open=low), bar("600002", close=high),                   # on the edge of price order: pass
        bar("600003", open=low - 1e-9), bar("600004", close=high + 1e-9),     # just past it
        bar("600005", low=12.0),                                              # low above high
        bar("600006", volume=-1), bar("600007", volume=0, amount=5.0),        # negative volume; no trades
        bar("600008", amount=10000 * (low - t)), bar("600009", amount=10000 * (low - t) - 1e-6),   # unit edge
        bar("600010", amount=10000 * (high + t)), bar("600011", amount=10000 * (high + t) + 1e-6),
        bar("600012", pct_change=1.02), bar("600013", pct_change=1.0201), bar("600014", pct_change=0.98),  # 0.02 points
        bar("600015", pct=5.5), bar("600016", pct=5.51), bar("600017", pct=-9.9), bar("600018", pct=10.6),
        bar("300019", pct=19.9), bar("688020", pct=21.0), bar("830021", pct=31.0), bar("600022", pct=44.5),
        bar("600023", pre_close=0.0), bar("600024", pre_close=None), bar("600025", pct_change=None),
        bar("600026", amount=None), bar("600027", volume=None), bar("600028", open=None, high=None),
        bar("600029", open=float("nan")), bar("600030", low=float("nan")), bar("600031", close=float("inf")),
        bar("600032", pre=100.0, pct=5.51),                                   # over an ST stock's 5 % + 0.5 (ST below)
        sane,
    ]


def random_rows(rng: random.Random, count: int) -> list[Row]:
    """Rows from sane to broken: prices and volumes perturbed by random amounts, some far, most not at all."""
    rows = []
    for i in range(count):
        changes: dict[str, Any] = {}
        pre, pct = rng.uniform(1, 200), rng.choice([rng.uniform(-3, 3), rng.uniform(-25, 25)])
        row = bar(f"{rng.choice(['600', '000', '300', '688', '830'])}{400 + i:03d}", pre=pre, pct=pct)
        for position, name in ((1, "open"), (2, "high"), (3, "low"), (4, "close"), (7, "amount"), (9, "pct_change")):
            if rng.random() < (0.003 if name == "amount" else 0.04):  # the unit guard fails a day over 1 %
                changes[name] = row[position] * rng.choice([1 + 1e-12, 1 - 1e-12, 1.001, 0.999, 1.5, 0.5, 100])
        if rng.random() < 0.01:
            changes["volume"] = rng.choice([-100, 0, 1])
        rows.append(bar(row[0], pre=pre, pct=pct, **changes))
    return rows


def flagged(conn: psycopg.Connection[Any], day: dt.date) -> set[tuple[str, str]]:
    return set(conn.execute("SELECT code, check_name FROM bar_findings WHERE trade_date = %s", (day,)).fetchall())


def test_every_row_a_check_flags_is_a_suspect_and_sane_rows_are_not(conn):
    rng = random.Random(20250304)
    reference.save_stocks(conn, [StockInfo("600032", "*ST 示例", "sh")], seen_on=DAY)
    for offset, rows in enumerate([edge_rows() + filler(300), random_rows(rng, 600) + filler(900), random_rows(rng, 600) + filler(900)]):
        day = DAY + dt.timedelta(days=offset)
        daywrite.write_day(conn, DayWrite(day, RUN), rows)  # Row tuples: every row judged in SQL
        found = {code for code, _ in flagged(conn, day)}
        suspects = copypayload.encode_rows(day, rows).suspects
        assert suspects is not None and found <= suspects, sorted(found - suspects)
        assert found, "the rows were meant to hold findings"
        assert len(suspects) <= len(found) + len(rows) // 3  # the sane majority is cleared


def test_a_payload_is_judged_as_its_rows_are(conn):
    rows = [*edge_rows(), *random_rows(random.Random(7), 300), *filler(300)]
    rows = [row for row in rows if None not in row]  # a payload carries final rows (no derivation)
    encoded = copypayload.encode_rows(DAY, rows)
    assert encoded.suspects is not None and len(encoded.suspects) < len(rows)
    first = daywrite.write_day(conn, DayWrite(DAY, RUN), encoded)  # a first write: COPY, only the suspects judged
    by_payload = flagged(conn, DAY)
    daywrite.write_day(conn, DayWrite(DAY, RUN), rows)  # the same rows as Row tuples: DELETE + COPY, every row judged
    by_rows = flagged(conn, DAY)
    again = daywrite.write_day(conn, DayWrite(DAY, RUN), encoded)  # and as a payload once more: the re-sync's merge
    assert by_rows and by_payload == by_rows == flagged(conn, DAY)
    assert first.anomalies == again.anomalies == len(by_rows)


def test_a_resync_rewrites_only_the_rows_that_changed(conn):
    rows = [bar(f"600{i:03d}", pct=i / 10) for i in range(100)]
    daywrite.write_day(conn, DayWrite(DAY, RUN), copypayload.encode_rows(DAY, rows))
    before = dict(conn.execute("SELECT code, ctid::text FROM daily_bars WHERE trade_date = %s", (DAY,)).fetchall())
    changed = [*rows[:10], bar("600010", pct=3.3), *rows[11:98], bar("601999")]  # one changed, two gone, one new
    written = daywrite.write_day(conn, DayWrite(DAY, RUN), copypayload.encode_rows(DAY, changed))
    stored = conn.execute(f"SELECT {', '.join(daywrite.BAR_COLUMNS[1:])} FROM daily_bars WHERE trade_date = %s ORDER BY code",
                          (DAY,)).fetchall()
    assert stored == sorted(changed) and written.rows == len(changed) == 99
    after = dict(conn.execute("SELECT code, ctid::text FROM daily_bars WHERE trade_date = %s", (DAY,)).fetchall())
    unchanged = {row[0] for row in rows[:10] + rows[11:98]}
    assert all(after[code] == before[code] for code in unchanged)  # not rewritten
    assert after["600010"] != before["600010"]
    assert conn.execute("SELECT rows, status FROM sync_days WHERE date = %s", (DAY,)).fetchone() == (99, "success")


def test_a_payload_with_a_code_twice_is_refused_whole_on_a_first_write_and_on_a_resync(conn):
    rows = [bar(f"600{i:03d}") for i in range(20)]
    twice = copypayload.encode_rows(DAY, [*rows, rows[3]])
    with pytest.raises(psycopg.errors.UniqueViolation):
        daywrite.write_day(conn, DayWrite(DAY, RUN), twice)
    assert conn.execute("SELECT count(*) FROM daily_bars").fetchone() == (0,)
    daywrite.write_day(conn, DayWrite(DAY, RUN), copypayload.encode_rows(DAY, rows))
    with pytest.raises(psycopg.errors.UniqueViolation):
        daywrite.write_day(conn, DayWrite(DAY, RUN), twice)
    assert conn.execute("SELECT count(*) FROM daily_bars WHERE trade_date = %s", (DAY,)).fetchone() == (20,)


def test_a_payload_stores_what_the_rows_would(conn):
    rows = [bar("605999", turnover=None, volume=None), *edge_rows(), *filler(200)]
    rows = [row for row in rows if row[5] is not None and row[9] is not None]  # none to derive
    later = DAY + dt.timedelta(days=1)
    daywrite.write_day(conn, DayWrite(DAY, RUN), rows)
    daywrite.write_day(conn, DayWrite(later, RUN), copypayload.encode_rows(later, rows))
    select = f"SELECT {', '.join(daywrite.BAR_COLUMNS[1:])} FROM daily_bars WHERE trade_date = %s ORDER BY code"
    by_rows, by_payload = (conn.execute(select, (day,)).fetchall() for day in (DAY, later))
    assert str(by_payload) == str(by_rows)  # str: NaN is not equal to itself
    assert {"nan", "inf", "None"} <= set(str(by_rows).replace("(", " ").replace(")", " ").replace(",", " ").split())


def test_the_prefilter_reads_numpy_columns_as_the_sql_reads_the_rows():
    columns = {name: np.array([10.0, 10.0]) for name in prefilter.FIELDS}
    columns["volume"] = np.array([100, 100])
    columns["amount"] = np.array([1000.0, 1000.0])
    columns["pct_change"] = np.array([0.0, 6.0])  # the second moved far enough for a limit to matter
    assert prefilter.suspects(columns).tolist() == [False, True]
