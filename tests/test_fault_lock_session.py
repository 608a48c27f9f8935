"""Fault suite, the run lock's session: it dies (pg_terminate_backend) at the two moments that matter.

- while the worker is between days (no write transaction open: checked in the same statement
  that ends the session), and before its first day: the run takes the lock back at its next
  write and finishes; a start meanwhile is busy; exactly one run, nothing left `running`;
- while the control loop admits a start: a trigger the test adds holds the new run's INSERT on an
  advisory lock the test holds, so the session dies exactly inside admission. The start is
  answered `database_unavailable`, nothing of it is recorded, the other daemon's start is
  admitted meanwhile: exactly one run, no orphan `running` row.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import psycopg
import pytest
from conftest import query, wait_until

from syncd.db.runlock import LockHolder

pytestmark = pytest.mark.fault

SLOW = {"source": {"demo": {"stocks": 200, "day_delay_s": 1.0}}}
RANGE = ("2025-10-09", "2025-10-16")  # 6 trading days
HOLD_KEY = 4242

# Ends daemon `pid`'s lock session only if no write transaction of any syncd session is open at that
# instant (one statement: the check and the end are not separated by a day's write).
END_LOCK_SESSION_BETWEEN_DAYS = """
    SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a
    WHERE a.datname = current_database() AND a.application_name = %s
      AND NOT EXISTS (SELECT 1 FROM pg_stat_activity w WHERE w.datname = current_database()
                      AND w.application_name = 'syncd' AND w.xact_start IS NOT NULL)
"""


def _lock_session_name(daemon) -> str:
    return LockHolder(pid=daemon.proc.pid, host=socket.gethostname()).application_name()


def _one_run_and_nothing_left_running(database: str, run_id: str) -> None:
    assert query(database, "SELECT run_id, status FROM sync_runs") == [(run_id, "succeeded")]
    assert query(database, "SELECT count(*) FROM sync_days WHERE status = 'syncing'") == [(0,)]


@pytest.mark.parametrize("moment", ["before the first day", "between days"])
def test_the_lock_session_dying_between_days_is_taken_back_and_the_run_finishes(syncd_factory, database, moment):
    daemon = syncd_factory(SLOW)
    client = daemon.client()
    run = client.start(*RANGE)
    name = _lock_session_name(daemon)
    after_days = 0 if moment == "before the first day" else 2
    ended = wait_until(lambda: (client.status().current_task.days_done >= after_days
                                and query(database, END_LOCK_SESSION_BETWEEN_DAYS, name)),
                       what=f"the lock session ended {moment}")
    assert ended == [(True,)]
    done_then = client.status().current_task.days_done
    assert done_then == after_days, "the session was ended after another day had been written"
    busy = client.request({"op": "start", "start_date": RANGE[0], "end_date": RANGE[0]})
    assert busy["status"] == "rejected" and busy["current_task"]["run_id"] == run.run_id
    last = daemon.wait_idle().last_run
    assert (last.run_id, last.status, last.days_done, last.days_failed) == (run.run_id, "succeeded", 6, 0)
    assert len(daemon.events("run_lock_retaken")) == 1 and not daemon.events("run_lock_lost")
    _one_run_and_nothing_left_running(database, run.run_id)


@pytest.fixture
def held_admission(database: str) -> Any:
    """A trigger that makes the INSERT of a run requested_by 'held' wait for an advisory lock the test
    holds: admission then sits inside its INSERT, on its lock session, until the test lets go."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"""
            CREATE FUNCTION hold_admission() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                IF NEW.requested_by = 'held' THEN PERFORM pg_advisory_xact_lock_shared({HOLD_KEY}); END IF;
                RETURN NEW; END $$
        """)
    holder = psycopg.connect(database, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (HOLD_KEY,))
    yield holder
    holder.close()


def test_the_lock_session_dying_while_admitting_a_start_makes_exactly_one_run(syncd_factory, database, held_admission):
    a = syncd_factory(SLOW, name="a")
    b = syncd_factory(SLOW, name="b")
    held_admission.execute("CREATE TRIGGER hold_admission BEFORE INSERT ON sync_runs FOR EACH ROW EXECUTE FUNCTION hold_admission()")
    replies: list[dict[str, Any]] = []
    asking = threading.Thread(target=lambda: replies.append(a.client(timeout=30).request(
        {"op": "start", "start_date": RANGE[0], "end_date": RANGE[1], "requested_by": "held"})))
    asking.start()
    name = _lock_session_name(a)
    [(session,)] = wait_until(lambda: query(database, "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                                                      "AND wait_event_type = 'Lock'", name),
                              what="admission to wait inside its INSERT")
    assert b.client().request({"op": "start", "start_date": RANGE[0], "end_date": RANGE[1]})["code"] == "busy"
    query(database, "SELECT pg_terminate_backend(%s)", session)
    asking.join(30)
    [reply] = replies
    assert reply["status"] == "error" and reply["code"] == "database_unavailable", reply
    assert a.client().status().state == "idle"

    accepted = b.client().start(*RANGE)  # the lock is free again: the other daemon's start is admitted
    refused = a.client().request({"op": "start", "start_date": RANGE[0], "end_date": RANGE[1]})
    assert refused["status"] == "rejected" and refused["current_task"]["run_id"] == accepted.run_id
    assert b.wait_idle().last_run.status == "succeeded"
    _one_run_and_nothing_left_running(database, accepted.run_id)
    assert a.client().status().state == "idle" and not a.events("sync_lock_acquired")
