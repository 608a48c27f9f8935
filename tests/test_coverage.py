"""Coverage through the sync: a day with stocks whose request failed is written `incomplete` with what was
fetched plus their stored rows, counts in days_failed and makes the run `partial`; nothing fetched is `failed`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

from syncd.calendar import TradingCalendar
from syncd.config import Config, DemoConfig, SyncConfig
from syncd.control.runstate import RunState
from syncd.db import connection, days, migrations, runs
from syncd.record import RunRecord
from syncd.run.syncer import Syncer
from syncd.sources.base import DayBatch, DayFailure, ShouldStop
from syncd.sources.demo import DemoSource

DAYS = [dt.date(2025, 10, 9), dt.date(2025, 10, 10)]


class FlakySource(DemoSource):
    """The demo market, except that `lost` stocks' requests fail on the days given (a by_day DayBatch)."""

    def __init__(self, lost: dict[dt.date, set[str]]) -> None:
        super().__init__(DemoConfig(stocks=100, seed=4))
        self.lost = lost

    def fetch_days(self, days: Sequence[dt.date], should_stop: ShouldStop) -> Iterator[tuple[dt.date, DayBatch | DayFailure]]:
        for day in days:
            missing = self.lost.get(day, set())
            rows = [row for row in self.rows_for(day) if row[0] not in missing]
            yield day, DayBatch(rows=rows, expected=len(self.codes), missing=frozenset(missing))


def run_sync(dsn: str, source: FlakySource, run_id: str) -> RunRecord:
    config = Config(sync=SyncConfig(retries=0, retry_backoff_s=0))
    run = RunRecord(run_id=run_id, task_type="manual", requested_by="test", start_date=DAYS[0], end_date=DAYS[-1],
                    host="h", pid=1)
    with connection.connect(dsn) as conn:
        migrations.migrate(conn)
        runs.insert_run(conn, run)
    state = RunState()
    state.begin(run)
    syncer = Syncer(config, dsn, source, TradingCalendar())
    try:
        return syncer.run(run, state)
    finally:
        syncer.close()


def test_missing_stocks_make_the_day_incomplete_keep_their_rows_and_the_run_partial(database):
    assert run_sync(database, FlakySource({}), "r1").status == "succeeded"
    source = FlakySource({DAYS[1]: {"600000", "000000"}})
    run = run_sync(database, source, "r2")
    assert (run.status, run.days_done, run.days_failed, run.rows) == ("partial", 2, 1, 198)
    with connection.connect(database) as conn:
        by_date = {d.date: d for d in days.days(conn, DAYS[0], DAYS[-1])}
        assert (by_date["2025-10-10"].status, by_date["2025-10-10"].rows, by_date["2025-10-10"].expected,
                by_date["2025-10-10"].missing) == ("incomplete", 100, 100, 2)
        assert by_date["2025-10-09"].status == "success" and by_date["2025-10-09"].expected == 100
        assert conn.execute("SELECT count(*) FROM daily_bars WHERE trade_date = %s", (DAYS[1],)).fetchone() == (100,)
        assert days.missing_codes(conn, DAYS[1]) == ["000000", "600000"]
    assert run_sync(database, FlakySource({}), "r3").status == "succeeded"  # fetched again: complete
    with connection.connect(database) as conn:
        assert days.days(conn, DAYS[1], DAYS[1])[0].status == "success" and days.missing_codes(conn, DAYS[1]) == []


def test_a_day_with_nothing_fetched_fails_and_a_run_with_no_day_written_fails(database):
    everyone = set(DemoSource(DemoConfig(stocks=100, seed=4)).codes)
    run = run_sync(database, FlakySource({day: everyone for day in DAYS}), "r1")
    assert (run.status, run.days_failed) == ("failed", 2)
    with connection.connect(database) as conn:
        recorded = days.days(conn, DAYS[0], DAYS[-1])
        assert [d.status for d in recorded] == ["failed", "failed"] and "requests failed" in recorded[0].error
