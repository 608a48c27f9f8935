"""Fault suite, data side: whatever kills, stops, fails or restarts under a run, no day is ever half written.

Every case runs real `python -m syncd` processes on a real PostgreSQL. A day's content is
checked against what the demo source gives for it (row count, sum(volume) and the sum of
closes in cents, computed here from `syncd.sources.demo`), so "complete" means "exactly the
rows of one seed", not just "the right count".

- kill -9 at random instants of a re-sync: every day holds exactly its old or its new rows;
- SIGTERM mid-run: a prompt exit, the run `cancelled`, every day empty or complete;
- flaky and timing-out upstream days: retried within a run, and healed by the next
  missing-data run when they outlast a run's retries;
- PostgreSQL restarted under a run: the daemon reconnects, retries the day in flight, ends
  the run, and answers `status` throughout.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import random
import shutil
import subprocess
import tempfile
import threading
import time
import zoneinfo
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from conftest import wait_until

from syncctl import SyncdUnreachable
from syncd.calendar import TradingCalendar
from syncd.config import ConfigError, DemoConfig, parse_config
from syncd.sources.base import DayFailure, EncodedRows
from syncd.sources.demo import DemoSource

pytestmark = pytest.mark.fault

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
SEED_A, SEED_B = 11, 12
Aggregate = tuple[int, int, int]  # rows, sum(volume), sum(close in cents)


# --- what a day should hold -------------------------------------------------------------------

def expected_aggregates(seed: int, stocks: int, days: list[dt.date]) -> dict[dt.date, Aggregate]:
    source = DemoSource(DemoConfig(stocks=stocks, seed=seed))
    out = {}
    for day in days:
        columns = source.columns(day)
        out[day] = (stocks, int(columns["volume"].sum()), int(np.rint(columns["close"] * 100).sum()))
    return out


def stored_aggregates(dsn: str) -> dict[dt.date, Aggregate]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT trade_date, count(*), sum(volume), sum(round(close * 100)::bigint) "
                            "FROM daily_bars GROUP BY 1").fetchall()
    return {day: (int(count), int(volume), int(cents)) for day, count, volume, cents in rows}


def sync_days(dsn: str) -> dict[dt.date, tuple[str, str | None]]:
    with psycopg.connect(dsn) as conn:
        return {day: (status, run_id) for day, status, run_id in conn.execute("SELECT date, status, run_id FROM sync_days")}


def rolled_back_transactions(dsn: str) -> int:
    """Transactions this database has seen rolled back (a client killed inside one counts one)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(conn.execute("SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()").fetchone()[0])


def trading_days(start: str, end: str) -> list[dt.date]:
    return TradingCalendar().trading_days(dt.date.fromisoformat(start), dt.date.fromisoformat(end))


# --- 1. kill -9 at random instants ----------------------------------------------------------------

KILL_TRIALS = 12
KILL_STOCKS = 3000          # a day's write (~20 ms) is a good share of a day's cycle, so kills land inside writes
KILL_DAY_DELAY_S = 0.03     # with 66 trading days: a run of ~2-3 s
KILL_RANGE = ("2025-07-01", "2025-09-30")


def test_kill_9_at_random_instants_leaves_every_day_exactly_old_or_new(syncd_factory, database):
    days = trading_days(*KILL_RANGE)
    expected = {seed: expected_aggregates(seed, KILL_STOCKS, days) for seed in (SEED_A, SEED_B)}
    assert all(expected[SEED_A][d] != expected[SEED_B][d] for d in days)  # the two seeds are told apart on every day
    daemon = syncd_factory({"source": {"demo": {"stocks": KILL_STOCKS, "seed": SEED_A, "day_delay_s": KILL_DAY_DELAY_S}}})

    started = time.monotonic()
    daemon.client().start(*KILL_RANGE)
    assert daemon.wait_idle().last_run.status == "succeeded"
    run_s = time.monotonic() - started
    assert stored_aggregates(database) == expected[SEED_A]  # every day holds the complete "old" rows

    rng = random.Random(20261129)
    delays = [run_s * (i + rng.random()) / KILL_TRIALS for i in range(KILL_TRIALS)]  # one per slice of the run
    rng.shuffle(delays)
    seed = SEED_B
    daemon.stop()
    daemon.reconfigure({"source": {"demo": {"seed": seed}}})
    daemon.start()
    trials = []
    for delay in delays:
        client = daemon.client()
        rollbacks = rolled_back_transactions(database)
        run = client.start(*KILL_RANGE)
        kill_at = time.monotonic() + delay
        time.sleep(max(0.0, kill_at - time.monotonic()))  # the random instant is the experiment, not a synchronisation
        daemon.kill()
        next_seed = SEED_A if seed == SEED_B else SEED_B  # alternate, so each re-sync really changes every day
        daemon.reconfigure({"source": {"demo": {"seed": next_seed}}})
        daemon.start()
        trials.append(_check_after_kill(daemon, database, run.run_id, seed, days, expected, delay)
                      | {"in_write_txn": rolled_back_transactions(database) - rollbacks > 0})
        seed = next_seed

    client = daemon.client()
    client.start(*KILL_RANGE)  # a following sync completes and leaves every day new
    final = daemon.wait_idle(timeout=60).last_run
    assert final.status == "succeeded" and final.days_failed == 0 and final.days_done == len(days)
    assert stored_aggregates(database) == expected[seed]
    assert {s for s, _ in sync_days(database).values()} <= {"success", "skipped"}

    mid_run = sum(1 for t in trials if 0 < t["days_done"] < len(days))
    summary = {
        "trials": len(trials), "run_s": round(run_s, 2), "trading_days": len(days),
        "before_first_day": sum(1 for t in trials if t["days_done"] == 0),
        "mid_run": mid_run,
        "after_last_day": sum(1 for t in trials if t["days_done"] == len(days)),
        "inside_a_write_transaction": sum(1 for t in trials if t["in_write_txn"]),
        "unrecorded_runs": sum(1 for t in trials if t["status"] is None),
        "kills": [(round(t["delay"], 2), t["days_done"], t["status"], t["in_write_txn"]) for t in sorted(trials, key=lambda t: t["delay"])],
    }
    print(f"\nkill -9 trials: {summary}")
    assert mid_run >= KILL_TRIALS // 2, f"too few kills landed mid-run to prove anything: {summary}"


def _check_after_kill(daemon, database: str, run_id: str, seed: int, days: list[dt.date],
                      expected: dict[int, dict[dt.date, Aggregate]], delay: float) -> dict[str, Any]:
    """After the restart: the killed run is interrupted, no day is syncing, and every day is one seed's whole day."""
    client = daemon.client()
    runs = {r.run_id: r for r in client.history(limit=5)}
    run = runs.get(run_id)
    # A run accepted but killed before its worker recorded it leaves no row; anything else must be accounted for.
    status = run.status if run is not None else None
    days_done = run.days_done if run is not None else 0
    if run is None:  # see test_a_run_killed_right_after_its_start_reply_is_recorded_interrupted
        assert not [d for d, (_, r) in sync_days(database).items() if r == run_id]
    assert status in ("interrupted", "succeeded", None), f"killed run {run_id} recorded as {status}"
    if status == "interrupted":
        assert [e["run_id"] for e in daemon.events("run_interrupted")][-1] == run_id
    if status == "succeeded":
        assert days_done == len(days)  # the kill landed after the run had finished

    stored = stored_aggregates(database)
    bookkeeping = sync_days(database)
    assert set(stored) == set(days), "a day lost its rows"
    for day in days:
        assert stored[day] in (expected[SEED_A][day], expected[SEED_B][day]), f"{day} holds a mix: {stored[day]}"
    written = [d for d, (s, r) in bookkeeping.items() if r == run_id and s == "success"]
    assert len(written) == days_done, f"sync_days says {len(written)} days written by {run_id}, sync_runs says {days_done}"
    assert all(stored[d] == expected[seed][d] for d in written), "a day recorded as written holds other rows"
    assert not [d for d, (s, _) in bookkeeping.items() if s == "syncing"]
    assert not [d for d in client.days(*KILL_RANGE) if d.status == "syncing"]
    return {"delay": delay, "days_done": days_done, "status": status}


def test_a_run_killed_right_after_its_start_reply_is_recorded_interrupted(syncd_factory):
    daemon = syncd_factory({"source": {"demo": {"stocks": KILL_STOCKS, "day_delay_s": KILL_DAY_DELAY_S}}})
    run = daemon.client().start(*KILL_RANGE)
    daemon.kill()
    daemon.start()
    runs = daemon.client().history(limit=5)
    assert [(r.run_id, r.status) for r in runs[:1]] == [(run.run_id, "interrupted")]


# --- 2. SIGTERM mid-run -----------------------------------------------------------------------------

def test_sigterm_mid_run_exits_within_10s_cancelled_with_no_half_day(syncd_factory, database):
    stocks, start, end = 2000, "2025-09-01", "2025-10-31"
    days = trading_days(start, end)
    expected = expected_aggregates(SEED_A, stocks, days)
    daemon = syncd_factory({"source": {"demo": {"stocks": stocks, "seed": SEED_A, "day_delay_s": 0.05}}})
    client = daemon.client()
    run = client.start(start, end)
    wait_until(lambda: client.status().current_task.days_done >= 3, what="three days synced")
    stopping = time.monotonic()
    code = daemon.stop(timeout=20)
    took = time.monotonic() - stopping
    assert code == 0 and took < 10, f"exit code {code} after {took:.1f} s"
    assert any(e.get("signal") == "SIGTERM" for e in daemon.events("daemon_stopping"))

    with psycopg.connect(database) as conn:
        status, days_done, days_failed = conn.execute(
            "SELECT status, days_done, days_failed FROM sync_runs WHERE run_id = %s", (run.run_id,)).fetchone()
    assert status == "cancelled" and days_failed == 0
    stored = stored_aggregates(database)
    assert 3 <= len(stored) < len(days)
    assert all(stored[d] == expected[d] for d in stored), "a day holds other than its complete rows"
    bookkeeping = sync_days(database)
    assert not [d for d, (s, _) in bookkeeping.items() if s == "syncing"]
    assert sorted(d for d, (s, _) in bookkeeping.items() if s == "success") == sorted(stored)
    assert days_done == len(stored)
    print(f"\nSIGTERM: exit {took:.2f} s after the signal, {len(stored)} of {len(days)} days complete, the rest empty")


# --- 3. flaky and timing-out source days -----------------------------------------------------------

def test_demo_fault_keys_are_deterministic_and_do_not_change_rows():
    day, other = dt.date(2025, 10, 9), dt.date(2025, 10, 10)
    clean = DemoSource(DemoConfig(stocks=50, seed=5))
    flaky = DemoSource(DemoConfig(stocks=50, seed=5, fail_dates=[day.isoformat()], timeout_dates=[other.isoformat()], fail_times=2))
    for _ in range(2):
        results: list = []
        with pytest.raises(TimeoutError, match="2025-10-10"):
            results.extend(flaky.fetch_days([day, other], lambda: False))
        assert [(d, type(r)) for d, r in results] == [(day, DayFailure)]
    third = dict(flaky.fetch_days([day, other], lambda: False))
    assert {d: batch.rows for d, batch in third.items()} == {day: clean.encoded(day), other: clean.encoded(other)}  # same config, same rows, faults or not
    assert all(isinstance(batch.rows, EncodedRows) and batch.expected == 50 and not batch.missing for batch in third.values())
    always = DemoSource(DemoConfig(stocks=5, fail_dates=[day.isoformat()]))  # fail_times = 0: today's "always fails"
    assert all(isinstance(dict(always.fetch_days([day], lambda: False))[day], DayFailure) for _ in range(4))
    with pytest.raises(ConfigError, match="source.demo.timeout_dates"):
        parse_config(b'[source.demo]\ntimeout_dates = ["9 Oct"]\n')
    with pytest.raises(ConfigError, match="source.demo.fail_times"):
        parse_config(b"[source.demo]\nfail_times = -1\n")


def test_flaky_and_timing_out_days_succeed_within_the_runs_retries(syncd_factory, database):
    stocks, start, end = 300, "2025-10-09", "2025-10-24"
    days = trading_days(start, end)
    flaky, slow = "2025-10-10", "2025-10-14"
    daemon = syncd_factory({
        "source": {"demo": {"stocks": stocks, "seed": SEED_A, "fail_dates": [flaky], "timeout_dates": [slow], "fail_times": 2}},
        "sync": {"retries": 2, "retry_backoff_s": 0.1}})
    daemon.client().start(start, end)
    run = daemon.wait_idle().last_run
    assert (run.status, run.days_failed, run.days_done) == ("succeeded", 0, len(days))
    assert stored_aggregates(database) == expected_aggregates(SEED_A, stocks, days)
    assert {s for s, _ in sync_days(database).values()} <= {"success", "skipped"}
    retried = {d for e in daemon.events("fetch_retry") for d in e["days"]}
    assert {flaky, slow} <= retried
    assert any(slow in e["error"] and "timed out" in e["error"] for e in daemon.events("fetch_failed"))
    assert not daemon.events("day_failed")


def test_days_failing_past_the_retries_end_partial_then_the_missing_data_run_heals_exactly_them(syncd_factory, database):
    lookback, stocks = 14, 300
    missing_at = (dt.datetime.now(SHANGHAI) + dt.timedelta(seconds=8)).replace(microsecond=0)
    today = missing_at.date()
    if (missing_at + dt.timedelta(seconds=60)).date() != today:
        pytest.skip("too close to midnight in Shanghai for a same-day missing-data job")
    start = today - dt.timedelta(days=lookback - 1)
    days = TradingCalendar(confirms=lambda day: day.weekday() < 5).trading_days(start, today)  # the demo's calendar
    if len(days) < 6:
        pytest.skip(f"only {len(days)} trading days in the last {lookback} days")
    flaky, slow = days[1], days[2]
    # A timeout is charged to the day being fetched; the fetch goes on after it (syncd/run/byday.py).
    failed = {flaky, slow}
    daemon = syncd_factory({
        "source": {"demo": {"stocks": stocks, "seed": SEED_B, "fail_dates": [flaky.isoformat()],
                            "timeout_dates": [slow.isoformat()], "fail_times": 3}},
        "sync": {"retries": 1, "retry_backoff_s": 0.1},
        "schedule": {"enabled": True, "catch_up_on_start": False, "missing_lookback_days": lookback,
                     "missing_at": missing_at.strftime("%H:%M:%S"),
                     "daily_at": (missing_at - dt.timedelta(hours=1)).strftime("%H:%M:%S")}})
    client = daemon.client()
    assert {j.job: j.next_run for j in client.status().schedule}["scheduler_missing"] == missing_at.isoformat()

    first = client.start(start.isoformat(), today.isoformat())
    run = daemon.wait_idle().last_run
    assert run.run_id == first.run_id and run.status == "partial", "the first run must end before the missing-data job fires"
    assert run.days_failed == len(failed) and run.days_done == len(days)
    assert {dt.date.fromisoformat(e["date"]) for e in daemon.events("day_failed")} == failed
    recorded = {dt.date.fromisoformat(d.date): d for d in client.days(start.isoformat(), today.isoformat())}
    assert {d for d, day in recorded.items() if day.status == "failed"} == failed
    assert flaky.isoformat() in recorded[flaky].error and "timed out" in recorded[slow].error
    assert set(stored_aggregates(database)) == set(days) - failed

    healed = wait_until(lambda: (s := client.status()).state == "idle" and s.last_run.task_type == "scheduler_missing" and s.last_run,
                        timeout=40, interval=0.1, what="the scheduled missing-data run to finish")
    assert healed.status == "succeeded" and healed.trading_days == len(failed) and healed.days_failed == 0
    assert {dt.date.fromisoformat(e["date"]) for e in daemon.events("day_synced") if e["run_id"] == healed.run_id} == failed
    assert any(e["run_id"] == healed.run_id for e in daemon.events("fetch_retry"))
    assert stored_aggregates(database) == expected_aggregates(SEED_B, stocks, days)  # full rows, the same as never-failed ones
    statuses = {dt.date.fromisoformat(d.date): d.status for d in client.days(start.isoformat(), today.isoformat())}
    assert all(statuses[d] == "success" for d in days)
    print(f"\nmissing-data heal: {len(failed)} days failed in run 1 ({sorted(d.isoformat() for d in failed)}), "
          f"all healed by {healed.run_id}")


# --- 4. PostgreSQL restarted in the middle of a run ------------------------------------------------

class PrivatePostgres:
    """A PostgreSQL of this test's own (pgserver), so restarting it disturbs no other test."""

    def __init__(self, folder: Path) -> None:
        import pgserver
        from pgserver._commands import pg_ctl

        self._pg_ctl = pg_ctl
        self.server = pgserver.get_server(folder, cleanup_mode="delete")
        self.dsn = self.server.get_uri()
        self.socket_dir = self.server.get_postmaster_info().socket_dir

    def ctl(self, *args: str) -> None:
        self._pg_ctl(list(args), pgdata=self.server.pgdata, user=self.server.system_user, timeout=60)

    def stop(self) -> None:
        self.ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        # pgserver's own start options: unix socket only, in the same folder, so the DSN stays valid
        self.ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start")


@pytest.fixture
def private_pg():
    if importlib.util.find_spec("pgserver") is None:
        pytest.skip("pgserver is not installed: no private PostgreSQL to restart (the session one is shared)")
    folder = Path(tempfile.mkdtemp(prefix="sdpg-", dir="/tmp"))
    try:
        pg = PrivatePostgres(folder)
    except (OSError, subprocess.SubprocessError, AssertionError) as exc:  # what pgserver raises when it cannot
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"cannot start a private PostgreSQL to restart: {type(exc).__name__}: {exc}")
    yield pg
    try:  # pgserver only stops the postmaster it started itself; the restarted one is stopped here
        pg.stop()
    except subprocess.CalledProcessError:
        pass
    pg.server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


class StatusPoller(threading.Thread):
    """Asks `status` back to back from its own thread; records every answer's latency and state."""

    def __init__(self, daemon) -> None:
        super().__init__(daemon=True)
        self.client = daemon.client(timeout=3.0)
        self.halt = threading.Event()
        self.answers: list[tuple[float, str]] = []
        self.unanswered = 0

    def run(self) -> None:
        while not self.halt.is_set():
            asked = time.monotonic()
            try:
                state = self.client.status().state
            except SyncdUnreachable:
                self.unanswered += 1
                continue
            self.answers.append((time.monotonic() - asked, state))
            self.halt.wait(0.01)  # pacing between requests (and a prompt stop), not a wait for a condition


def test_postgres_restart_mid_run_is_survived_and_status_always_answers(syncd_factory, private_pg):
    stocks, start, end = 2000, "2025-09-01", "2025-10-31"
    days = trading_days(start, end)
    daemon = syncd_factory({"database": {"dsn": private_pg.dsn},
                            "source": {"demo": {"stocks": stocks, "seed": SEED_A, "day_delay_s": 0.05}},
                            "sync": {"retries": 4, "retry_backoff_s": 0.3}})
    client = daemon.client()
    run = client.start(start, end)
    wait_until(lambda: client.status().current_task.days_done >= 5, what="five days synced")
    poller = StatusPoller(daemon)
    poller.start()
    try:
        down = time.monotonic()
        private_pg.stop()
        # Held down until a reconnect has been refused by the stopped server, not just noticed.
        wait_until(lambda: any(e["attempt"] >= 2 for e in daemon.events("db_reconnect")), timeout=15,
                   what="the worker to fail a reconnect while PostgreSQL is down")
        during = client.request({"op": "history"})  # a request that needs the database is answered, not stuck
        private_pg.start()
        outage_s = time.monotonic() - down
        final = daemon.wait_idle(timeout=60).last_run
    finally:
        poller.halt.set()
        poller.join(5)
    assert during["status"] == "error" and during["code"] == "database_unavailable", during
    assert poller.unanswered == 0 and poller.answers, f"{poller.unanswered} status requests unanswered"
    assert "running" in {state for _, state in poller.answers}
    assert final.run_id == run.run_id and final.status in ("succeeded", "partial"), final

    stored = stored_aggregates(private_pg.dsn)
    expected = expected_aggregates(SEED_A, stocks, days)
    assert all(stored[d] == expected[d] for d in stored), "a day holds other than its complete rows"
    failed = {dt.date.fromisoformat(e["date"]) for e in daemon.events("day_failed")}
    assert set(stored) == set(days) - failed and final.days_failed == len(failed)
    assert not [d for d in client.days(start, end) if d.status == "syncing"]
    synced = [e["date"] for e in daemon.events("day_synced")]
    assert len(synced) == len(set(synced))  # the day in flight was written once, after the reconnect
    # the restart ended the run lock's session too: the run took the lock back before writing on
    assert daemon.events("run_lock_retaken") and not daemon.events("run_lock_lost")
    again = client.start(start, start)  # never wedged: the next run is admitted and succeeds
    assert again.run_id != run.run_id and daemon.wait_idle().last_run.status == "succeeded"
    latencies = sorted(latency for latency, _ in poller.answers)
    print(f"\npostgres restart: outage {outage_s:.2f} s, run {final.status} ({final.days_done}/{final.trading_days} days, "
          f"{final.days_failed} failed), db_reconnect x{len(daemon.events('db_reconnect'))}, "
          f"status answered {len(latencies)}/{len(latencies) + poller.unanswered}, "
          f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
