"""Partitions between hosts: two real syncd daemons, each in its own network namespace and with its
own hostname, each reaching PostgreSQL (in a namespace of its own) over its own veth link (netlab.py).

Each case is a repeated trial on a fresh database:
- the holder's link is cut mid-run and left cut: the standby's `start` is accepted within the bound
  the lock session's keepalives set (docs/operations.md, "Active/standby"), no write of the cut-off
  run commits after the standby's run began, and once its link is back the cut-off daemon ends its
  run recorded `interrupted`, having recorded nothing false;
- the holder's link is cut and healed within a second: the holder keeps its lock, or loses it
  cleanly to the standby; never two writers;
- the standby's link is cut: nothing changes for the run.
After every trial: no two runs overlap in sync_runs, every write of a run committed before any later
run began (commit timestamps, from triggers the test adds), every day holds exactly the complete
rows of the run its record names (each daemon has its own demo seed), each run's recorded rows are
what it committed, and both daemons answer `status`.

Trials per case: $SYNCD_PARTITION_TRIALS, else 10 when the marked suite runs alone
(`pytest -m partition`), else 2. The takeover times (min / median / max) are printed at the end.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import BASE_CONFIG, merge, query, wait_until
from netlab import NamespacedSyncd, NetLab, unavailable_reason
from test_fault_data import expected_aggregates, stored_aggregates, trading_days

from syncctl import SyncdUnreachable
from syncd.db import migrations

pytestmark = pytest.mark.partition

STOCKS = 2000
DAY_DELAY_S = 0.05
LONG = ("2025-06-02", "2025-09-30")   # the holder's run: ~80 trading days, several seconds
SHORT = ("2025-06-02", "2025-07-04")  # the standby's run: rewrites the holder's first days
SEEDS = {"a": 11, "b": 12}            # the seed tells whose rows a day holds
TAKEOVER_LIMIT_S = 15.0               # the designed bound is ~6 s (connection.SESSION_KEEPALIVES); this leaves room for a loaded machine


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "trial" in metafunc.fixturenames:
        alone = "partition" in (metafunc.config.option.markexpr or "")
        count = int(os.environ.get("SYNCD_PARTITION_TRIALS") or (10 if alone else 2))
        metafunc.parametrize("trial", range(count))


# --- the lab and each trial -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def figures(pytestconfig: pytest.Config) -> Any:
    """Takeover times and counts per case, written to the terminal when the module ends."""
    found: dict[str, dict[str, Any]] = {}
    yield found
    for case, entry in found.items():
        times = sorted(entry.pop("takeover_s", []))
        spread = (f", takeover min {times[0]:.2f} s / median {statistics.median(times):.2f} s / max {times[-1]:.2f} s"
                  if times else "")
        _say(pytestconfig, f"partition {case}: {entry}{spread}")


def _say(pytestconfig: pytest.Config, line: str, **markup: bool) -> None:
    """A line on the terminal itself, past output capture (figures and skips must be seen)."""
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line, **markup)


@pytest.fixture(scope="module")
def lab(pytestconfig: pytest.Config) -> Any:
    reason = unavailable_reason()
    if reason is not None:
        _say(pytestconfig, f"SKIPPING the partition tests: {reason}", yellow=True, bold=True)
        pytest.skip(f"partition lab unavailable: {reason}")
    made = NetLab(tuple(SEEDS))
    yield made
    made.close()


@pytest.fixture(scope="module")
def expected() -> dict[int, dict[dt.date, tuple[int, int, int]]]:
    days = trading_days(*LONG)
    return {seed: expected_aggregates(seed, STOCKS, days) for seed in SEEDS.values()}


AUDIT = """
    CREATE TABLE lab_bar_writes (trade_date date, rows bigint);
    CREATE TABLE lab_day_marks (date date, run_id text, status text);
    CREATE FUNCTION lab_bar_writes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
        INSERT INTO lab_bar_writes SELECT trade_date, count(*) FROM new_rows GROUP BY trade_date; RETURN NULL; END $$;
    CREATE TRIGGER lab_bar_writes AFTER INSERT ON daily_bars REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION lab_bar_writes();
    CREATE FUNCTION lab_day_marks() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
        INSERT INTO lab_day_marks VALUES (NEW.date, NEW.run_id, NEW.status); RETURN NULL; END $$;
    CREATE TRIGGER lab_day_marks AFTER INSERT OR UPDATE ON sync_days FOR EACH ROW EXECUTE FUNCTION lab_day_marks();
"""
# Every day write that committed: its rows, its run (the sync_days change of the same transaction), its commit time.
WRITES = """
    SELECT w.trade_date, w.rows, m.run_id, pg_xact_commit_timestamp(w.xmin) AS committed
    FROM lab_bar_writes w JOIN LATERAL (SELECT run_id FROM lab_day_marks m WHERE m.xmin = w.xmin
                                        AND m.date = w.trade_date AND m.status = 'success' LIMIT 1) m ON true
"""


class Trial:
    """A fresh database with the audit triggers, and daemons a and b on it, each on its own link."""

    def __init__(self, lab: NetLab, folder: Path) -> None:
        self.lab = lab
        self.dbname = lab.pg.create_database()
        self.dsn = lab.pg.local_dsn(self.dbname)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            migrations.migrate(conn)
            conn.execute(AUDIT)
        self.daemons: dict[str, NamespacedSyncd] = {}
        for name, seed in SEEDS.items():
            config = merge(BASE_CONFIG, {
                "database": {"dsn": lab.daemon_dsn(name, self.dbname), "connect_timeout_s": 2},
                "source": {"demo": {"stocks": STOCKS, "seed": seed, "day_delay_s": DAY_DELAY_S}},
                "sync": {"retries": 1, "retry_backoff_s": 0.2}})
            (folder / name).mkdir()
            self.daemons[name] = NamespacedSyncd(folder / name, config, lab.netns(name), f"host-{name}")
            self.daemons[name].spawn()
        for daemon in self.daemons.values():
            daemon.wait_ready()

    def close(self) -> None:
        for name in self.daemons:
            self.lab.heal(name)
        for daemon in self.daemons.values():
            daemon.stop()
        self.lab.pg.drop_database(self.dbname)

    # --- what every trial must leave ----------------------------------------------------------
    def check(self, expected: dict[int, dict[dt.date, tuple[int, int, int]]]) -> dict[str, int]:
        runs = {run_id: (host, status, seq, started, rows) for run_id, host, status, seq, started, rows in query(
            self.dsn, "SELECT run_id, host, status, seq, started_at, rows FROM sync_runs")}
        assert not [r for r, (_, status, *_) in runs.items() if status == "running"], f"a run left running: {runs}"
        overlaps = query(self.dsn, "SELECT a.run_id, b.run_id FROM sync_runs a JOIN sync_runs b ON a.run_id < b.run_id "
                                   "AND tstzrange(a.started_at, coalesce(a.finished_at, 'infinity')) "
                                   "&& tstzrange(b.started_at, coalesce(b.finished_at, 'infinity'))")
        assert overlaps == [], f"runs overlap: {overlaps}"
        assert query(self.dsn, "SELECT date FROM sync_days WHERE status = 'syncing'") == []

        writes = query(self.dsn, WRITES)
        assert len(writes) == query(self.dsn, "SELECT count(*) FROM lab_bar_writes")[0][0], "a bar write without its day record"
        late = [(day, run_id, committed, later, runs[later][3]) for day, _, run_id, committed in writes
                for later, (_, _, seq, started, _) in runs.items() if seq > runs[run_id][2] and committed >= started]
        assert late == [], f"a run committed a day after a later run began: {late}"
        for run_id, (_, _, _, _, rows) in runs.items():
            assert rows == sum(n for _, n, r, _ in writes if r == run_id), f"run {run_id} records other rows than it wrote"

        seed_of = {run_id: SEEDS[host.removeprefix("host-")] for run_id, (host, *_) in runs.items()}
        stored = stored_aggregates(self.dsn)
        recorded = {day: (status, run_id, rows) for day, status, run_id, rows in query(
            self.dsn, "SELECT date, status, run_id, rows FROM sync_days")}
        for day, held in stored.items():
            status, run_id, rows = recorded[day]
            assert status == "success" and held == expected[seed_of[run_id]][day] and rows == held[0], \
                f"{day} holds {held}, recorded {status} by {run_id} ({rows} rows)"
        assert not [d for d, (s, *_) in recorded.items() if s == "success" and d not in stored], "a day recorded written is empty"
        for daemon in self.daemons.values():
            daemon.client().status()  # answers (raises SyncdUnreachable otherwise)
        return {"days_checked": sum(1 for s, *_ in recorded.values() if s != "skipped"), "writes": len(writes)}


@pytest.fixture
def trial_env(lab: NetLab) -> Any:
    folder = Path(tempfile.mkdtemp(prefix="sdp-", dir="/tmp"))
    made: list[Trial] = []

    def make() -> Trial:
        made.append(Trial(lab, folder))
        return made[-1]

    yield make
    for each in made:
        each.close()
    shutil.rmtree(folder, ignore_errors=True)


def _wait_inside_a_write(env: Trial, name: str) -> None:
    """Until daemon `name`'s write session has a transaction open on the server (a day's write under way)."""
    address = f"10.200.{env.lab.links[name]}.2"
    wait_until(lambda: query(env.dsn, "SELECT count(*) FROM pg_stat_activity WHERE client_addr = %s AND "
                                      "application_name = 'syncd' AND xact_start IS NOT NULL", address)[0][0],
               interval=0.002, what=f"a day write of daemon {name}")


def _start_under_way(daemon: NamespacedSyncd, rng: random.Random) -> Any:
    run = daemon.client().start(*LONG)
    days = 2 + rng.randrange(6)
    wait_until(lambda: (t := daemon.client().status().current_task) is not None and t.days_done >= days,
               what=f"{days} days of the holder's run")
    return run


def _tally(figures: dict[str, dict[str, Any]], case: str, checked: dict[str, int], **extra: Any) -> None:
    entry = figures.setdefault(case, {"trials": 0, "days_checked": 0, "overlaps": 0})
    entry["trials"] += 1
    entry["days_checked"] += checked["days_checked"]
    for key, value in extra.items():
        if isinstance(value, float):
            entry.setdefault(key, []).append(value)
        else:
            entry[key] = entry.get(key, 0) + value


# --- the cases --------------------------------------------------------------------------------------

def test_cut_holder_the_standby_takes_over_and_the_cut_off_run_ends_interrupted(trial, trial_env, expected, figures):
    """Variants by trial: the cut lands anywhere in the run or inside a day's write; the link comes
    back while the standby's run writes, or only once the cut-off daemon has given its run up."""
    rng = random.Random(1000 + trial)
    inside_a_write, heal_late = trial % 2 == 1, trial % 4 in (0, 3)
    holder, standby = ("a", "b") if (trial // 2) % 2 == 0 else ("b", "a")
    env = trial_env()
    first, second = env.daemons[holder], env.daemons[standby]
    run = _start_under_way(first, rng)

    if inside_a_write:
        _wait_inside_a_write(env, holder)
    cut_at = env.lab.cut(holder)
    assert first.client().status().state == "running"  # the cut-off daemon still answers
    took = wait_until(lambda: (r := second.client().request({"op": "start", "start_date": SHORT[0], "end_date": SHORT[1]}))
                      ["status"] == "ok" and r, timeout=TAKEOVER_LIMIT_S, interval=0.1, what="the standby's start to be accepted")
    takeover_s = time.monotonic() - cut_at
    if heal_late:  # still cut off, the daemon gives its run up and says so
        gave_up = first.wait_idle(timeout=60).last_run
        assert (gave_up.run_id, gave_up.status) == (run.run_id, "interrupted") and "could not be recorded" in gave_up.error
    else:
        time.sleep(rng.uniform(0, 1.5))  # the cut's length is the experiment: heal while the standby's run writes
    env.lab.heal(holder)

    assert second.wait_idle(timeout=60).last_run.status == "succeeded"
    ended = first.wait_idle(timeout=60).last_run
    assert (ended.run_id, ended.status) == (run.run_id, "interrupted"), ended
    assert [(r.run_id, r.status) for r in first.client().history(limit=2)] == [(took["run_id"], "succeeded"),
                                                                                (run.run_id, "interrupted")]
    checked = env.check(expected)
    _tally(figures, "cut the holder", checked, takeover_s=takeover_s,
           stray_writes_ended=len(second.events("stray_write_ended")),
           healed_after_giving_up=int(heal_late),
           noticed_lock_lost=int(bool(first.events("run_lock_lost"))))


def test_cut_and_heal_within_a_second_the_holder_keeps_its_lock_or_loses_it_cleanly(trial, trial_env, expected, figures):
    rng = random.Random(2000 + trial)
    env = trial_env()
    holder, standby = ("a", "b") if trial % 2 == 0 else ("b", "a")
    first, second = env.daemons[holder], env.daemons[standby]
    run = _start_under_way(first, rng)

    accepted: list[dict[str, Any]] = []
    halt = threading.Event()

    def keep_starting() -> None:  # the standby asks throughout: any moment the lock is free, it takes it
        client = second.client(timeout=10)
        while not halt.is_set() and not accepted:
            try:
                reply = client.request({"op": "start", "start_date": SHORT[0], "end_date": SHORT[1]})
            except SyncdUnreachable:
                continue
            if reply["status"] == "ok":
                accepted.append(reply)
            halt.wait(0.05)

    starter = threading.Thread(target=keep_starting, daemon=True)
    starter.start()
    try:
        env.lab.cut(holder)
        time.sleep(rng.uniform(0.2, 0.9))  # the cut's length is the experiment
        env.lab.heal(holder)
        ended = first.wait_idle(timeout=90).last_run
    finally:
        halt.set()
        starter.join(15)
    assert ended.run_id == run.run_id
    kept = ended.status == "succeeded"
    if kept:  # a standby run, if any, was admitted once the holder's run had ended (check: no overlap)
        assert ended.days_done == ended.trading_days and not first.events("run_lock_lost"), ended
    else:  # lost cleanly: the standby took over, the holder stopped before writing again
        assert ended.status == "interrupted" and accepted, ended
    if accepted:
        assert second.wait_idle(timeout=60).last_run.status == "succeeded"
    checked = env.check(expected)
    _tally(figures, "cut and heal within a second", checked, kept=int(kept), lost_cleanly=int(not kept))


def test_cut_standby_nothing_changes_for_the_run(trial, trial_env, expected, figures):
    rng = random.Random(3000 + trial)
    env = trial_env()
    holder, standby = ("a", "b") if trial % 2 == 0 else ("b", "a")
    first, second = env.daemons[holder], env.daemons[standby]
    run = _start_under_way(first, rng)

    env.lab.cut(standby)
    assert second.client().status().state == "idle"
    cut_s = rng.uniform(1.0, 4.0)
    deadline = time.monotonic() + cut_s
    while time.monotonic() < deadline:  # both keep answering while the standby is cut off
        assert first.client().status().state == "running" or first.client().status().last_run.run_id == run.run_id
        assert second.client().status().state == "idle"
        time.sleep(0.2)
    env.lab.heal(standby)

    ended = first.wait_idle(timeout=60).last_run
    assert (ended.run_id, ended.status, ended.days_failed) == (run.run_id, "succeeded", 0)
    assert ended.days_done == ended.trading_days == len(trading_days(*LONG))
    assert not first.events("run_lock_retaken") and not first.events("run_lock_lost")
    assert [r.run_id for r in second.client().history(limit=5)] == [run.run_id]
    checked = env.check(expected)
    _tally(figures, "cut the standby", checked)
