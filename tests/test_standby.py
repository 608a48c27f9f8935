"""Active/standby: several real syncd processes on one database, PostgreSQL's advisory lock the arbiter.

Each daemon has its own state dir and endpoint; they share only the database. The run lock
lives on a dedicated session per run, so a holder that dies frees it, and the next daemon to
take it marks the orphaned run interrupted.
"""

import secrets
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from conftest import query, wait_until

from syncd.db.runlock import LockHolder

SLOW = {"source": {"demo": {"day_delay_s": 0.15}}}
LONG_RANGE = ("2025-08-01", "2025-10-31")
SHORT_START = {"op": "start", "start_date": "2025-10-09", "end_date": "2025-10-10"}


def _assert_no_overlapping_runs(dsn: str) -> None:
    overlaps = query(dsn, "SELECT a.run_id, b.run_id FROM sync_runs a JOIN sync_runs b ON a.run_id < b.run_id "
                           "AND tstzrange(a.started_at, coalesce(a.finished_at, 'infinity')) "
                           "&& tstzrange(b.started_at, coalesce(b.finished_at, 'infinity'))")
    assert overlaps == []


def _lock_sessions(dsn: str, daemon_pid: int) -> list[int]:
    sessions = query(dsn, "SELECT pid, application_name FROM pg_stat_activity")
    return [pid for pid, name in sessions if name and name.startswith(LockHolder.PREFIX) and LockHolder.parse(name).pid == daemon_pid]


def _start_under_way(daemon, days_done: int = 1, dates: tuple[str, str] = LONG_RANGE):
    """Start a run on `daemon` and return it once `days_done` days are synced."""
    run = daemon.client().start(*dates)
    wait_until(lambda: daemon.client().status().current_task.days_done >= days_done, what="the run under way")
    return run


def _start_once_free(daemon, what: str, interval: float) -> dict:
    """Ask `daemon` for a short run until it accepts one (the run lock freed); its reply."""
    return wait_until(lambda: (r := daemon.client().request(SHORT_START))["status"] == "ok" and r,
                      timeout=10, interval=interval, what=what)


@pytest.fixture
def pair(syncd_factory):
    return syncd_factory(SLOW, name="a"), syncd_factory(SLOW, name="b")


def test_concurrent_starts_on_two_daemons_make_exactly_one_run(pair, database):
    a, b = pair
    replies: list[dict] = []
    barrier = threading.Barrier(10)

    def start(daemon) -> None:
        client = daemon.client()
        barrier.wait()
        replies.append(client.request({"op": "start", "start_date": LONG_RANGE[0], "end_date": LONG_RANGE[1]}))

    threads = [threading.Thread(target=start, args=(d,)) for d in (a, b) * 5]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = [r for r in replies if r["status"] == "ok"]
    assert len(accepted) == 1, replies
    run_id = accepted[0]["run_id"]
    holder = a if a.client().status().current_task else b
    assert holder.client().status().current_task.run_id == run_id
    for reply in replies:
        if reply["status"] != "ok":
            assert reply["code"] == "busy" and reply["current_task"]["run_id"] == run_id
            assert reply["current_task"]["pid"] == holder.proc.pid and reply["current_task"]["host"]
    assert query(database, "SELECT count(*) FROM sync_runs") == [(1,)]


def test_the_standby_rejects_with_the_holders_task_host_and_pid(pair):
    a, b = pair
    run = _start_under_way(a)
    reply = b.client().request(SHORT_START)
    assert reply["status"] == "rejected" and reply["code"] == "busy"
    task = reply["current_task"]
    assert (task["run_id"], task["task_type"], task["pid"]) == (run.run_id, "manual", a.proc.pid)
    assert task["start_date"] == LONG_RANGE[0] and task["trading_days"] > 0
    assert f"pid {a.proc.pid}" in reply["message"] and task["host"] in reply["message"]
    assert b.events("sync_rejected")[0]["current_run_id"] == run.run_id
    assert b.client().status().state == "idle"  # the standby's own state: it runs nothing
    refused = b.client().request({"op": "cancel"})
    assert refused["code"] == "not_running" and f"{run.run_id} is running on {task['host']} (pid {a.proc.pid})" in refused["message"]
    cli = subprocess.run([sys.executable, "-m", "syncctl.cli", "--config", str(b.config_path), "start",
                          "--from", "2025-10-09", "--to", "2025-10-10"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 3 and f"on {task['host']} pid {a.proc.pid}" in cli.stderr


def test_the_standbys_scheduled_job_skips_while_another_daemon_runs(syncd_factory):
    a = syncd_factory(SLOW, name="a")
    run = a.client().start(*LONG_RANGE)
    b = syncd_factory({"schedule": {"enabled": True, "catch_up_on_start": True, "missing_lookback_days": 5}}, name="b")
    skipped = wait_until(lambda: b.events("schedule_skipped_busy"), what="schedule_skipped_busy on the standby")[0]
    assert skipped["current_task"]["run_id"] == run.run_id
    assert b.client().status().state == "idle"


def test_kill_9_of_the_holder_frees_the_lock_and_the_standby_takes_over(pair, database):
    a, b = pair
    run = _start_under_way(a, days_done=2)
    a.kill()
    killed_at = time.monotonic()
    took_over = _start_once_free(b, "the standby to take the run lock", interval=0.1)
    print(f"standby took over {time.monotonic() - killed_at:.2f} s after kill -9 of the holder")
    assert b.wait_idle().last_run.status == "succeeded"
    runs = dict(query(database, "SELECT run_id, status FROM sync_runs"))
    assert runs == {run.run_id: "interrupted", took_over["run_id"]: "succeeded"}
    assert [e["run_id"] for e in b.events("run_interrupted")] == [run.run_id]
    assert query(database, "SELECT count(*) FROM sync_days WHERE status = 'syncing'") == [(0,)]
    _assert_no_overlapping_runs(database)


def test_a_restarting_standby_leaves_the_live_holders_run_alone(pair, database):
    a, b = pair
    run = a.client().start(*LONG_RANGE)
    b.stop()
    b.start()  # start-up recovery must not take a live run on another daemon for an orphan
    assert b.events("recovery_deferred")
    assert query(database, "SELECT status FROM sync_runs WHERE run_id = %s", run.run_id) == [("running",)]
    a.client().cancel()
    assert a.wait_idle().last_run.status == "cancelled"


def test_a_run_whose_lock_session_is_cut_takes_the_lock_back_and_finishes(syncd_factory, database):
    daemon = syncd_factory(SLOW)
    _start_under_way(daemon, dates=("2025-09-01", "2025-09-30"))
    [session] = _lock_sessions(database, daemon.proc.pid)
    query(database, "SELECT pg_terminate_backend(%s)", session)
    last = daemon.wait_idle().last_run
    assert last.status == "succeeded" and last.days_done == last.trading_days == 22
    assert daemon.events("run_lock_retaken")


def test_a_run_that_lost_its_lock_to_another_daemon_stops_before_writing(pair, database):
    a, b = pair
    run = _start_under_way(a)
    [session] = _lock_sessions(database, a.proc.pid)
    query(database, "SELECT pg_terminate_backend(%s)", session)
    took_over = _start_once_free(b, "the other daemon to take the free lock", interval=0.05)
    lost = a.wait_idle().last_run
    assert lost.run_id == run.run_id and lost.status == "interrupted"
    assert a.events("run_lock_lost")
    assert b.wait_idle().last_run.status == "succeeded"
    written_by_a_after = query(database, "SELECT count(*) FROM sync_days d JOIN sync_runs b ON b.run_id = %s "
                                          "WHERE d.run_id = %s AND d.updated_at > b.started_at + interval '1 second'",
                                took_over["run_id"], run.run_id)
    assert written_by_a_after == [(0,)]
    _assert_no_overlapping_runs(database)


def test_a_new_run_ends_a_write_still_open_from_an_earlier_run(syncd_factory, database):
    """A day's write transaction of a run whose lock session was cut (a host cut off mid-write) may
    still be open when the next run is admitted; admission ends it (pg_terminate_backend) before
    recording the new run, so it can never commit after the new run began."""
    from syncd.db.runlock import hold_write_fence

    daemon = syncd_factory()
    straggler = psycopg.connect(database)  # stands in for the earlier run's open write
    try:
        hold_write_fence(straggler)
        run = daemon.client().start("2025-10-09", "2025-10-10")
        with pytest.raises(psycopg.OperationalError, match="terminat"):
            straggler.execute("SELECT 1")
    finally:
        straggler.close()
    assert [e["reason"] for e in daemon.events("stray_write_ended")] == ["a day write of a run that lost the run lock was still open"]
    last = daemon.wait_idle().last_run
    assert (last.run_id, last.status, last.days_done) == (run.run_id, "succeeded", 2)


@pytest.fixture
def plain_role(database):
    """A role without the privilege to end a superuser's sessions, owning the test's database."""
    role = f"syncd_{secrets.token_hex(4)}"
    dbname = psycopg.conninfo.conninfo_to_dict(database)["dbname"]
    with psycopg.connect(database, autocommit=True) as conn:
        for sql in (f"CREATE ROLE {role} LOGIN", f"ALTER DATABASE {dbname} OWNER TO {role}", f"ALTER SCHEMA public OWNER TO {role}"):
            conn.execute(sql)
    yield psycopg.conninfo.make_conninfo(database, user=role)
    with psycopg.connect(database, autocommit=True) as conn:
        for sql in (f"REASSIGN OWNED BY {role} TO CURRENT_USER", f"DROP OWNED BY {role}", f"DROP ROLE {role}"):
            conn.execute(sql)


def test_a_new_run_that_may_not_end_an_open_write_waits_for_it(plain_role, syncd_factory, database):  # role first: dropped last
    """The write fence: without the privilege to end an earlier run's write still open, the next run
    writes nothing until that transaction has ended (each day's write first takes a
    transaction-scoped advisory lock)."""
    from syncd.db.runlock import hold_write_fence

    daemon = syncd_factory({"database": {"dsn": plain_role}})
    with psycopg.connect(database) as straggler:  # a superuser's session: the daemon's role may not end it
        hold_write_fence(straggler)
        run = daemon.client().start("2025-10-09", "2025-10-10")
        wait_until(lambda: query(database, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                            "AND wait_event = 'advisory' AND datname = current_database()") == [(1,)],
                   what="the new run to wait at the write fence")
        assert query(database, "SELECT count(*) FROM daily_bars") == [(0,)]
        assert daemon.client().status().current_task.days_done == 0
        assert daemon.events("stray_write_not_ended")
    last = daemon.wait_idle().last_run  # the straggler committed: the run goes on
    assert (last.run_id, last.status, last.days_done) == (run.run_id, "succeeded", 2)


def test_the_standby_marks_a_dead_holders_run_when_it_looks_at_history(pair, database):
    a, b = pair
    run = _start_under_way(a)
    a.kill()
    wait_until(lambda: not _lock_sessions(database, a.proc.pid), what="the dead holder's lock session to end")
    [first] = b.client().history(limit=1)
    assert (first.run_id, first.status) == (run.run_id, "interrupted")
    assert not [d for d in b.client().days(*LONG_RANGE) if d.status == "syncing"]


def test_an_idle_standby_marks_a_dead_holders_run_unasked(pair, database):
    a, b = pair
    run = _start_under_way(a)
    a.kill()
    started = time.monotonic()
    wait_until(lambda: query(database, "SELECT status FROM sync_runs WHERE run_id = %s", run.run_id) == [("interrupted",)],
               timeout=20, interval=0.2, what="the standby's orphan sweep")
    print(f"idle standby marked the dead run interrupted {time.monotonic() - started:.1f} s after kill -9")
    assert [e["found_by"] for e in b.events("run_interrupted")] == ["idle check"]
    assert query(database, "SELECT count(*) FROM sync_days WHERE status = 'syncing'") == [(0,)]


def test_daemons_writing_different_schemas_do_not_exclude_each_other(syncd_factory, database):
    """The run lock's key is derived from the target daily_bars table (its oid), not fixed."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA other")
    info = psycopg.conninfo.conninfo_to_dict(database)
    other_dsn = psycopg.conninfo.make_conninfo(**info, options="-c search_path=other")
    a = syncd_factory(SLOW, name="a")
    b = syncd_factory({**SLOW, "database": {"dsn": other_dsn}}, name="b")
    a.client().start(*LONG_RANGE)
    run_b = b.client().start("2025-10-09", "2025-10-10")  # not busy: another table
    assert b.wait_idle().last_run.run_id == run_b.run_id
    assert query(database, "SELECT count(*) FROM other.daily_bars") == [(2 * 200,)]
    assert query(database, "SELECT count(*) FROM other.sync_runs") == [(1,)]
    same = syncd_factory(name="c").client().request(SHORT_START)
    assert same["status"] == "rejected" and same["code"] == "busy"  # a's table: busy
    a.client().cancel()
